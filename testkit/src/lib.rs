//! Test harness for tests that need real networking.
//!
//! Network safety: everything here happens inside network namespaces the test creates. Names
//! carry the pid and a counter so tests run in parallel; [`TestNet`] deletes its namespaces by
//! name on drop (also when the test panics), which removes their veths too. Addresses are the
//! same in every pair: they only exist inside that pair's namespaces.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

pub mod agent;
pub mod bpfobj;
pub mod browser;
pub mod capture;
pub mod cgroup;
pub mod collector;
pub mod daemon;
pub mod delay;
pub mod foreign;
pub mod mosquitto;
pub mod postgres;
pub mod provision;
pub mod publisher;
pub mod raw;
pub mod ready;
pub mod rng;
pub mod subscriber;
pub mod summary;
pub mod traffic;
pub mod verdict;
pub mod watch;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const A4: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 1);
pub const B4: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 2);
pub const A6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1);
pub const B6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 2);

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A unique short tag for names: pid and a per-process counter.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// The folder cargo builds this profile into (`target/debug`): a test binary runs from its
/// `deps/` folder.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("a test binary under target/<profile>/deps")
        .to_path_buf()
}

/// A binary of the package under test: cargo builds a package's binaries before its
/// integration tests, into the profile folder.
pub fn cargo_bin(name: &str) -> PathBuf {
    let bin = profile_dir().join(name);
    assert!(
        bin.exists(),
        "{} missing (built by cargo test)",
        bin.display()
    );
    bin
}

/// `<target>/test-output/`, for what a test leaves to look at (screenshots); made if missing.
pub fn output_dir() -> PathBuf {
    let dir = profile_dir()
        .parent()
        .expect("target dir")
        .join("test-output");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Two namespaces joined by a veth pair: `ns_a`/`veth_a` (10.199.0.1, fd99::1) and
/// `ns_b`/`veth_b` (10.199.0.2, fd99::2). Removed on drop.
pub struct TestNet {
    pub ns_a: String,
    pub ns_b: String,
    pub veth_a: String,
    pub veth_b: String,
}

impl TestNet {
    pub fn new() -> TestNet {
        let tag = unique("ef");
        // Interface names must fit in 15 bytes.
        let net = TestNet {
            ns_a: format!("{tag}-a"),
            ns_b: format!("{tag}-b"),
            veth_a: format!("{tag}a"),
            veth_b: format!("{tag}b"),
        };
        assert!(
            net.veth_a.len() <= 15,
            "interface name too long: {}",
            net.veth_a
        );
        sh(&["ip", "netns", "add", &net.ns_a]);
        // From here on, Drop cleans up whatever was made.
        let net = net;
        sh(&["ip", "netns", "add", &net.ns_b]);
        sh(&[
            "ip",
            "link",
            "add",
            &net.veth_a,
            "netns",
            &net.ns_a,
            "type",
            "veth",
            "peer",
            "name",
            &net.veth_b,
            "netns",
            &net.ns_b,
        ]);
        for (ns, dev, v4, v6) in [
            (&net.ns_a, &net.veth_a, A4, A6),
            (&net.ns_b, &net.veth_b, B4, B6),
        ] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                dev,
            ]);
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        for (ns, dev) in [(&net.ns_a, &net.veth_a), (&net.ns_b, &net.veth_b)] {
            wait_oper_up(ns, dev);
        }
        net
    }

    /// Runs a command inside namespace `ns` (panics if it fails).
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Fills the neighbour tables both ways so no ARP/ND happens during a measured run.
    pub fn static_neighbours(&self) {
        let mac = |ns: &str, dev: &str| -> String {
            let o = self.exec(ns, &["cat", &format!("/sys/class/net/{dev}/address")]);
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        let (ma, mb) = (mac(&self.ns_a, &self.veth_a), mac(&self.ns_b, &self.veth_b));
        for (ns, dev, peer4, peer6, m) in [
            (&self.ns_a, &self.veth_a, B4, B6, &mb),
            (&self.ns_b, &self.veth_b, A4, A6, &ma),
        ] {
            for ip in [peer4.to_string(), peer6.to_string()] {
                sh(&[
                    "ip",
                    "-n",
                    ns,
                    "neigh",
                    "replace",
                    &ip,
                    "lladdr",
                    m,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ]);
            }
        }
    }

    /// Turns segmentation and receive offloads (TSO, GSO, GRO) on or off on both veth ends.
    /// Off, every skb is one wire packet at every hook.
    pub fn set_offloads(&self, on: bool) {
        let v = if on { "on" } else { "off" };
        for (ns, dev) in [(&self.ns_a, &self.veth_a), (&self.ns_b, &self.veth_b)] {
            self.exec(ns, &["ethtool", "-K", dev, "tso", v, "gso", v, "gro", v]);
        }
    }

    /// Turns IPv6 off on both veths, so no router solicitation or MLD report shows up
    /// while a test counts everything that crossed (with [`TestNet::static_neighbours`],
    /// no ARP either).
    pub fn ipv4_only(&self) {
        for (ns, dev) in [(&self.ns_a, &self.veth_a), (&self.ns_b, &self.veth_b)] {
            // /proc/sys/net is the namespace of whoever opens it.
            let path = format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6");
            self.in_ns(ns, || std::fs::write(&path, "1"))
                .unwrap_or_else(|e| panic!("{ns}: {path}: {e}"));
        }
    }

    /// A test network with only the test's traffic on it: static neighbours, IPv6 off (no
    /// ARP, ND or MLD), and a moment for what the links sent on coming up to pass.
    pub fn quiet() -> TestNet {
        let net = TestNet::new();
        net.static_neighbours();
        net.ipv4_only();
        std::thread::sleep(std::time::Duration::from_millis(200));
        net
    }

    /// `n` UDP sockets in namespace `ns`, each bound to `ip` on a port of the kernel's choice.
    pub fn udp_sockets(
        &self,
        ns: &str,
        ip: std::net::IpAddr,
        n: usize,
    ) -> Vec<std::net::UdpSocket> {
        self.in_ns(ns, || {
            (0..n)
                .map(|_| std::net::UdpSocket::bind((ip, 0)).unwrap())
                .collect()
        })
    }

    /// Runs `f` on a thread that has entered namespace `ns`: sockets it opens live there.
    pub fn in_ns<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        in_netns(ns, f)
    }
}

impl Default for TestNet {
    fn default() -> Self {
        TestNet::new()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs `f` on a scoped thread inside network namespace `ns` (setns is per thread).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            use std::os::fd::AsRawFd;
            // SAFETY: a valid namespace fd; affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread panicked")
    })
}

/// Reads one `nstat` counter (absolute, since the namespace was made) in namespace `ns`.
pub fn nstat(ns: &str, name: &str) -> u64 {
    let out = sh(&["ip", "netns", "exec", ns, "nstat", "-a", "-z", "-s", name]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(name)).then(|| it.next().and_then(|v| v.parse().ok()))?
        })
        .unwrap_or(0)
}

/// Waits (at most 3 s) until `dev` in `ns` is operationally up. The carrier of a new veth
/// pair reaches the flags (IFF_RUNNING) through the kernel's linkwatch, up to a second
/// later: an agent started before that would take the link for down.
pub fn wait_oper_up(ns: &str, dev: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let o = sh(&["ip", "-n", ns, "-o", "link", "show", "dev", dev]);
        let line = String::from_utf8_lossy(&o.stdout);
        if line.contains("state UP") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{dev} in {ns} not up after 3 s: {line}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_short() {
        let a = unique("ef");
        let b = unique("ef");
        assert_ne!(a, b);
        assert!(format!("{a}a").len() <= 15);
    }

    #[test]
    fn testnet_connects_and_cleans_up() {
        let (a, b);
        {
            let net = TestNet::new();
            a = net.ns_a.clone();
            b = net.ns_b.clone();
            net.exec(&net.ns_a, &["ping", "-c", "1", "-W", "2", &B4.to_string()]);
            let got = net.in_ns(&net.ns_b, || {
                let s = std::net::UdpSocket::bind((B4, 0)).unwrap();
                s.local_addr().unwrap().ip()
            });
            assert_eq!(got, std::net::IpAddr::V4(B4));
        }
        let list = String::from_utf8_lossy(&sh(&["ip", "netns", "list"]).stdout).into_owned();
        assert!(!list.contains(&a) && !list.contains(&b), "{list}");
    }
}
