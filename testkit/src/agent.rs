//! Runs `edgeflow run` as a child process and stops it the way an operator would.

use std::{
    process::{Child, Command, ExitStatus, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// A running `edgeflow run`.
pub struct Agent {
    child: Child,
    err: Option<JoinHandle<String>>,
}

/// How an agent ended.
pub struct Exit {
    pub status: ExitStatus,
    pub stderr: String,
}

impl Agent {
    /// Starts `bin run ARGS` here (the root namespace) and waits until it says it is ready.
    pub fn start(bin: &str, args: &[&str]) -> Agent {
        let mut cmd = Command::new(bin);
        cmd.arg("run").args(args);
        Agent::start_command(cmd)
    }

    /// Starts `bin run ARGS` inside namespace `ns` (its sockets there too) and waits until
    /// it says it is ready.
    pub fn start_in(ns: &str, bin: &str, args: &[&str]) -> Agent {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, bin, "run"]).args(args);
        Agent::start_command(cmd)
    }

    /// Starts `cmd` (an `edgeflow run` command line, perhaps behind a wrapper that `exec`s
    /// it: `unshare`, `setpriv`) and waits until it says it is ready.
    pub fn start_command(mut cmd: Command) -> Agent {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning edgeflow run");
        let stderr = child.stderr.take().unwrap();
        let err = crate::ready::await_ready(&mut child, stderr, "edgeflow run");
        Agent {
            child,
            err: Some(err),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal (SIGSTOP/SIGCONT to pause it, for example).
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub fn stop(mut self) -> Exit {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(30))
    }

    /// Waits for an agent that ends by itself (`--count`), bounded.
    pub fn wait(&mut self, max: Duration) -> Exit {
        let deadline = Instant::now() + max;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "edgeflow run did not exit:\n{}",
                    self.err.take().unwrap().join().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Exit {
            status,
            stderr: self.err.take().unwrap().join().unwrap(),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.err.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
