"""A cpuacct cgroup per role (generator, sink, monitor, collector, and this harness), so each
run's CPU is exact scheduler runtime per role, and everything else that ran — other tenants'
builds, kworkers — is foreign load: root cpuacct minus ours minus ksoftirqd."""
import os
import signal
import subprocess
import time

from counters import CPUACCT, read

ROLES = ("gen", "sink", "mon", "coll", "ctl")


class Groups:
    def __init__(self):
        self.root = os.path.join(CPUACCT, f"edgeflow-bench-{os.getpid()}")

    def path(self, role):
        return os.path.join(self.root, role)

    def setup(self):
        for r in ROLES:
            os.makedirs(self.path(r), exist_ok=True)
        # The harness itself: so its own bookkeeping never counts as foreign load.
        with open(os.path.join(self.path("ctl"), "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    def usage_ns(self, role):
        return int(read(os.path.join(self.path(role), "cpuacct.usage")))

    def pids(self, role):
        try:
            return [int(x) for x in read(os.path.join(self.path(role), "cgroup.procs")).split()]
        except FileNotFoundError:
            return []

    def spawn(self, role, argv, cpu, out, err=None):
        """Starts argv in `role`'s group (joined before exec: every descendant counts),
        pinned to `cpu` unless it is 'all', in its own session."""
        if cpu != "all":
            argv = ["taskset", "-c", str(cpu), *argv]
        procs = os.path.join(self.path(role), "cgroup.procs")

        def join():
            os.setsid()
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        return subprocess.Popen(argv, stdout=out, stderr=err if err is not None else subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=join)

    def stop(self, role, sig=signal.SIGTERM, wait=5.0):
        """Signals what is left in a group, waits, then SIGKILLs stragglers."""
        for p in self.pids(role):
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while self.pids(role) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in self.pids(role):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while self.pids(role) and time.monotonic() < deadline + 2:
            time.sleep(0.05)

    def teardown(self):
        # The harness leaves its group first: a group with a live process cannot go.
        with open(os.path.join(CPUACCT, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        for r in ROLES:
            if r != "ctl":
                self.stop(r, signal.SIGKILL, wait=2)
            try:
                os.rmdir(self.path(r))
            except OSError:
                pass
        try:
            os.rmdir(self.root)
        except OSError:
            pass
