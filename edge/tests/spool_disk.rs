//! The spool file on a bad disk, with `edgeflow run`, a real Mosquitto and UDP traffic between
//! two test namespaces: the agent runs on when its disk turns read-only or fills up, keeps the
//! summaries in memory meanwhile, goes back to the file when it can write again, and loses
//! nothing. And one spool, one agent: a second on the same file exits 2 naming the first.
//!
//! The disks are mounts in the agent's own mount namespace (`unshare --mount`), so they go
//! away with it, also when the test fails; the test reaches them through
//! `/proc/PID/root` and `nsenter`.

use shared::wire::{Count, Summary};
use std::{
    collections::BTreeSet,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};
use testkit::{agent::Agent, mosquitto::Mosquitto, subscriber::Subscriber, TestNet, A4, B4};

const BIN: &str = env!("CARGO_BIN_EXE_edgeflow");
const FLOWS: &str = "edgeflow/v1/+/+/flows";
/// UDP + IPv4 headers.
const HDR: u64 = 28;

/// `n` UDP flows from A to B, and what was sent on them.
struct Flows {
    tx: Vec<UdpSocket>,
    to: Vec<SocketAddr>,
    _rx: Vec<UdpSocket>,
    sent: Count,
}

impl Flows {
    fn new(net: &TestNet, n: usize) -> Flows {
        let rx = net.udp_sockets(&net.ns_b, B4.into(), n);
        let tx = net.udp_sockets(&net.ns_a, A4.into(), n);
        Flows {
            tx,
            to: rx.iter().map(|r| r.local_addr().unwrap()).collect(),
            _rx: rx,
            sent: Count::default(),
        }
    }

    /// One datagram on every flow.
    fn round(&mut self, len: usize) {
        for (t, to) in self.tx.iter().zip(&self.to) {
            t.send_to(&vec![0x5a; len], to).unwrap();
            self.sent.add(&Count {
                packets: 1,
                bytes: len as u64 + HDR,
            });
        }
    }

    /// Rounds every 50 ms for `d`.
    fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        let mut i = 0;
        while Instant::now() < end {
            self.round(40 + i % 300);
            i += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Removes the test's files when it ends, also on failure (the mounts go with the agent's
/// mount namespace).
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
    }
}

fn sh(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `script` with `sh` in the mount namespace of process `pid`.
fn in_mounts(pid: i32, script: &str) -> std::process::Output {
    Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "sh", "-c", script])
        .output()
        .unwrap()
}

/// Whether process `pid` has `file` open (a descriptor whose target is that path).
fn has_open(pid: i32, file: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .any(|t| t == file)
        })
        .unwrap_or(false)
}

fn wait_until(what: &str, max: Duration, flows: &mut Flows, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + max;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        flows.round(100);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `script` in the agent's mount namespace (it must succeed), then sends until `what`
/// holds, for at most `max`.
fn change_disk(
    pid: i32,
    script: &str,
    (what, max): (&str, Duration),
    flows: &mut Flows,
    done: impl FnMut() -> bool,
) {
    let o = in_mounts(pid, script);
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    wait_until(what, max, flows, done);
}

/// The spool's disk goes read-only under the agent (ext4 with `errors=remount-ro`, an error
/// forced through its sysfs trigger, as an SD card's I/O errors do it), is replaced by a
/// small tmpfs, which then fills up and is freed again; the broker is away all along. The
/// agent never stops, says each change, and once the broker is back every window of the run
/// arrives, adding up exactly to what was sent.
#[test]
fn a_read_only_or_full_disk_does_not_stop_the_agent_and_loses_nothing() {
    let net = TestNet::quiet();
    let mut broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, FLOWS);
    let url = broker.url();
    broker.stop();
    let dir = std::env::temp_dir().join(testkit::unique("efdisk"));
    let img = dir.with_extension("img");
    let _scratch = Scratch(vec![dir.clone(), img.clone()]);
    std::fs::create_dir_all(&dir).unwrap();
    sh(&["truncate", "-s", "4M", img.to_str().unwrap()]);
    sh(&[
        "mkfs.ext4",
        "-q",
        "-F",
        "-O",
        "^has_journal",
        img.to_str().unwrap(),
    ]);
    let d = dir.to_str().unwrap();
    let spool = dir.join("spool");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount -o loop,errors=remount-ro "$1" "$2" && shift 2 && exec "$@""#)
        .args(["sh", img.to_str().unwrap(), d, BIN, "run"])
        .args([
            "--iface",
            &net.veth_b,
            "--netns",
            &net.ns_b,
            "--broker",
            &url,
            "--device",
            "disk1",
            "--site",
            "lab",
            "--interval",
            "0.25",
            "--spool-file",
            spool.to_str().unwrap(),
        ]);
    let agent = Agent::start_command(cmd);
    let pid = agent.pid();
    let mut flows = Flows::new(&net, 8);
    // On the file: the agent holds it open, and it grows.
    let seen = PathBuf::from(format!("/proc/{pid}/root")).join(spool.strip_prefix("/").unwrap());
    let on_file = || has_open(pid, &spool) && std::fs::metadata(&seen).is_ok_and(|m| m.len() > 0);
    let off_file = || !has_open(pid, &spool);
    wait_until(
        "the spool file holds records",
        Duration::from_secs(10),
        &mut flows,
        on_file,
    );

    // The disk turns read-only: the agent closes the file and runs on in memory.
    change_disk(
        pid,
        &format!("echo 1 > /sys/fs/ext4/$(basename $(findmnt -no SOURCE {d}))/trigger_fs_error"),
        (
            "the agent leaves the read-only file",
            Duration::from_secs(10),
        ),
        &mut flows,
        off_file,
    );
    flows.run_for(Duration::from_millis(800));
    assert!(!has_open(pid, &spool), "back on a read-only disk?");

    // A new disk (a small tmpfs) where the old one was: the spool goes back to a file.
    change_disk(
        pid,
        &format!("umount -l {d} && mount -t tmpfs -o size=256k tmpfs {d}"),
        ("the spool is on the new disk", Duration::from_secs(10)),
        &mut flows,
        on_file,
    );

    // The new disk fills up.
    change_disk(
        pid,
        &format!("dd if=/dev/zero of={d}/filler bs=4k 2>/dev/null; test -s {d}/filler"),
        ("the agent leaves the full disk", Duration::from_secs(20)),
        &mut flows,
        off_file,
    );
    flows.run_for(Duration::from_millis(800));
    // Freed: back to the file.
    change_disk(
        pid,
        &format!("rm {d}/filler"),
        ("the spool is back on the file", Duration::from_secs(10)),
        &mut flows,
        || has_open(pid, &spool),
    );
    flows.run_for(Duration::from_millis(500));

    // The broker comes back: everything spooled through all of it arrives.
    let subs = sub.subacks();
    agent.signal(libc::SIGSTOP);
    broker.resume();
    sub.wait_subscribed(subs);
    agent.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_millis(1500));
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    sub.wait_quiet(Duration::from_millis(500), Duration::from_secs(15));
    let err = &exit.stderr;
    assert!(
        err.contains("writing failed (Read-only file system"),
        "{err}"
    );
    assert!(
        err.contains("writing failed (No space left on device"),
        "{err}"
    );
    assert_eq!(err.matches("writing works again").count(), 2, "{err}");

    let all = sub.summaries();
    let seqs: BTreeSet<u64> = all.iter().map(|s| s.seq).collect();
    let max = *seqs.last().unwrap();
    assert_eq!(
        seqs.len() as u64,
        max + 1,
        "windows missing: {seqs:?}\n{err}"
    );
    assert!(max >= 15, "{max} windows\n{err}");
    let mut totals = Count::default();
    for s in all.iter().filter(|s| s.part == 0) {
        totals.add(&s.totals);
    }
    assert_eq!(totals, flows.sent, "{err}");
    assert!(all.iter().all(|s| s.health.spool_dropped == 0));
    // The health said so: some windows were made on the fallback, with the failed writes
    // counted (two failures at least: one per disk), and the last ones back on the file.
    let mut parts0: Vec<&Summary> = all.iter().filter(|s| s.part == 0).collect();
    parts0.sort_by_key(|s| s.seq);
    assert!(parts0.iter().any(|s| s.health.spool_fallback), "{err}");
    assert!(!parts0.last().unwrap().health.spool_fallback, "{err}");
    let errors = parts0.last().unwrap().health.spool_write_errors;
    assert!(errors >= 2, "{errors} failed writes\n{err}");
    assert!(parts0
        .windows(2)
        .all(|w| w[1].health.spool_write_errors >= w[0].health.spool_write_errors));
}

/// A spool file on a disk that is read-only from the start (a tmpfs mounted so, no lock
/// file there to open): the agent says so and runs on memory, instead of failing at every
/// restart.
#[test]
fn a_spool_on_a_read_only_disk_at_start_runs_on_memory() {
    let net = TestNet::quiet();
    let dir = std::env::temp_dir().join(testkit::unique("efrodisk"));
    let _scratch = Scratch(vec![dir.clone()]);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let spool = format!("{d}/spool");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o ro,size=64k tmpfs "$1" && shift && exec "$@""#)
        .args([
            "sh",
            d,
            BIN,
            "run",
            "--iface",
            &net.veth_b,
            "--netns",
            &net.ns_b,
        ])
        .args([
            "--broker",
            "mqtt://127.0.0.1:9",
            "--interval",
            "0.2",
            "--count",
            "2",
        ])
        .args(["--spool-file", &spool])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "spool {spool}: cannot be opened (Read-only file system"
        )),
        "{err}"
    );
    assert!(err.contains("edgeflow: detached"), "{err}");
}

/// Two agents on one spool file would acknowledge each other's records: the second is refused
/// with exit 2, naming the file and the first one's pid; the first runs on.
#[test]
fn a_second_agent_on_the_same_spool_exits_2_naming_the_holder() {
    let net = TestNet::quiet();
    let broker = Mosquitto::start();
    let url = broker.url();
    let spool = std::env::temp_dir().join(testkit::unique("efspool-lock"));
    let lock = PathBuf::from(format!("{}.lock", spool.display()));
    let _scratch = Scratch(vec![spool.clone(), lock.clone()]);
    let args = [
        "--iface",
        &net.veth_b,
        "--netns",
        &net.ns_b,
        "--broker",
        &url,
        "--interval",
        "0.5",
        "--spool-file",
        spool.to_str().unwrap(),
    ];
    let first = Agent::start(BIN, &args);
    let second = Command::new(BIN).arg("run").args(args).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "spool file {} is in use by another edgeflow (pid {}",
            spool.display(),
            first.pid()
        )),
        "{err}"
    );
    let exit = first.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
}
