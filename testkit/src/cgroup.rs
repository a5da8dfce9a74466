//! Cgroups and processes for the owner tests: a cgroup made by the test under the cgroup v2
//! hierarchy (its name carries the pid and a counter; removed on drop, also when the test
//! panics), and child processes forked into one, under a command name of the test's
//! choosing, that open a flow from inside a test namespace.
//!
//! The children are forked, not executed: the kernel names a process after what it
//! executes, and `prctl(PR_SET_NAME)` after a fork gives each child its own name without a
//! binary per name. A forked child of a threaded test process may only make system calls
//! (another thread may have held the allocator's lock): everything it needs is prepared
//! before the fork, and it ends with `_exit`.

use crate::unique;
use std::{
    ffi::CString,
    net::SocketAddrV4,
    os::fd::{AsRawFd, OwnedFd},
    path::PathBuf,
};

/// The cgroup v2 mount point (`cgroup2` in /proc/self/mountinfo).
pub fn unified_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| PathBuf::from(left.split_whitespace().nth(4).expect("mount point")))
        })
        .expect("a cgroup v2 hierarchy is mounted")
}

/// A cgroup this test made; removed on drop (its processes have exited by then: the
/// children below always end).
pub struct TestCgroup {
    pub path: PathBuf,
    /// Its path as the agent names it (relative to the mount, `/efcg…`).
    pub rel: String,
    procs: CString,
}

impl TestCgroup {
    pub fn new(label: &str) -> TestCgroup {
        let name = unique(&format!("efcg-{label}-"));
        let path = unified_root().join(&name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let procs = CString::new(path.join("cgroup.procs").to_str().unwrap()).unwrap();
        TestCgroup {
            path,
            rel: format!("/{name}"),
            procs,
        }
    }

    /// Its id, as the kernel gives it to programs: the directory's inode number.
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).unwrap().ino()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // A cgroup whose last process exited a moment ago may still be busy briefly.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("could not remove {}", self.path.display());
    }
}

/// What a forked sender does.
#[derive(Clone, Copy, Debug)]
pub enum Send {
    /// `count` datagrams from `from` to `to`.
    Udp {
        from: SocketAddrV4,
        to: SocketAddrV4,
        count: u32,
    },
    /// A TCP connection from `from` to `to` with one write of `bytes`, then close.
    Tcp {
        from: SocketAddrV4,
        to: SocketAddrV4,
        bytes: u32,
    },
}

/// How the socket is used once made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hand {
    /// The process that made it sends.
    Own,
    /// It forks a child (named `comm` + "-kid") that sends on the inherited socket while the
    /// maker waits for it.
    ToChild,
}

/// Ends a forked child.
fn fail(code: i32) -> ! {
    // SAFETY: ends this process at once, running nothing of the parent's.
    unsafe { libc::_exit(code) }
}

/// In a forked child: joins the cgroup whose `cgroup.procs` is `procs`, takes the name
/// `name` and enters network namespace `ns`; ends the child (10, 11, 12) if one fails.
///
/// # Safety
/// `procs` is a NUL-terminated path; only system calls, so it may run between fork and exit.
unsafe fn enter(procs: *const libc::c_char, name: &CString, ns: i32) {
    // SAFETY: system calls on valid pointers (the caller's path, our name, a stack byte).
    unsafe {
        let fd = libc::open(procs, libc::O_WRONLY);
        if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
            fail(10);
        }
        libc::close(fd);
        if libc::prctl(libc::PR_SET_NAME, name.as_ptr()) != 0 {
            fail(11);
        }
        if libc::setns(ns, libc::CLONE_NEWNET) != 0 {
            fail(12);
        }
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// Forks a process named `comm` (at most 15 bytes) into `cg` and network namespace `netns`
/// (an `ip netns` name) that makes a socket (bound to `from` unless its port is 0) and sends
/// as `what` says, and waits for it (and its child). Returns its pid. Panics if either failed.
pub fn fork_sender(cg: &TestCgroup, netns: &str, comm: &str, what: Send, hand: Hand) -> u32 {
    assert!(comm.len() < 16);
    let name = CString::new(comm).unwrap();
    let kid = CString::new(format!("{}-kid", &comm[..comm.len().min(11)])).unwrap();
    let ns: OwnedFd = std::fs::File::open(format!("/var/run/netns/{netns}"))
        .expect("netns")
        .into();
    let ns = ns.as_raw_fd();
    let (kind, from, to, n) = match what {
        Send::Udp { from, to, count } => (libc::SOCK_DGRAM, from, to, count),
        Send::Tcp { from, to, bytes } => (libc::SOCK_STREAM, from, to, bytes),
    };
    let (from, to) = (sockaddr(from), sockaddr(to));
    let payload = [b'x'; 1400];
    let procs = cg.procs.as_ptr();
    // SAFETY: the child only makes system calls on memory prepared above, then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY (the whole child): system calls on valid pointers; every path _exits.
        unsafe {
            enter(procs, &name, ns);
            let s = libc::socket(libc::AF_INET, kind, 0);
            if s < 0 {
                fail(13);
            }
            let one: i32 = 1;
            libc::setsockopt(
                s,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&raw const one).cast(),
                4,
            );
            let len = size_of::<libc::sockaddr_in>() as u32;
            // Port 0: no bind (the kernel picks a port at the first send, no bind hook runs).
            if from.sin_port != 0 && libc::bind(s, (&raw const from).cast(), len) != 0 {
                fail(14);
            }
            if hand == Hand::ToChild {
                let k = libc::fork();
                if k < 0 {
                    fail(15);
                }
                if k > 0 {
                    // The maker: waits for its child, closes its copy, and is done.
                    let mut st = 0;
                    libc::waitpid(k, &mut st, 0);
                    libc::close(s);
                    let ok = libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0;
                    libc::_exit(if ok { 0 } else { 30 + libc::WEXITSTATUS(st) });
                }
                libc::prctl(libc::PR_SET_NAME, kid.as_ptr());
            }
            if kind == libc::SOCK_DGRAM {
                for _ in 0..n {
                    if libc::sendto(
                        s,
                        payload.as_ptr().cast(),
                        64,
                        0,
                        (&raw const to).cast(),
                        len,
                    ) != 64
                    {
                        fail(16);
                    }
                }
            } else {
                if libc::connect(s, (&raw const to).cast(), len) != 0 {
                    fail(17);
                }
                let mut left = n as usize;
                while left > 0 {
                    let w = libc::write(s, payload.as_ptr().cast(), left.min(payload.len()));
                    if w <= 0 {
                        fail(18);
                    }
                    left -= w as usize;
                }
                libc::shutdown(s, libc::SHUT_WR);
                // Wait for the peer's close so the whole exchange happened before exit.
                let mut buf = [0u8; 64];
                while libc::read(s, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
            }
            libc::close(s);
            libc::_exit(0);
        }
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "sender {comm} failed: status {st:#x} (exit {})",
        libc::WEXITSTATUS(st)
    );
    pid as u32
}

/// A forked TCP server named `comm` in `cg` and namespace `netns`: it listens on `at`,
/// accepts one connection and reads it to its end. Returns once it listens; [`Server::wait`]
/// waits for it to finish.
pub struct Server {
    pub pid: u32,
}

impl Server {
    pub fn fork(cg: &TestCgroup, netns: &str, comm: &str, at: SocketAddrV4) -> Server {
        assert!(comm.len() < 16);
        let name = CString::new(comm).unwrap();
        let ns: OwnedFd = std::fs::File::open(format!("/var/run/netns/{netns}"))
            .expect("netns")
            .into();
        let ns = ns.as_raw_fd();
        let at = sockaddr(at);
        let procs = cg.procs.as_ptr();
        let mut pipe = [0i32; 2];
        // SAFETY: a pipe into our array.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        // SAFETY: the child only makes system calls on memory prepared above, then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY (the whole child): system calls on valid pointers; every path _exits.
            unsafe {
                enter(procs, &name, ns);
                let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                let one: i32 = 1;
                libc::setsockopt(
                    s,
                    libc::SOL_SOCKET,
                    libc::SO_REUSEADDR,
                    (&raw const one).cast(),
                    4,
                );
                let len = size_of::<libc::sockaddr_in>() as u32;
                if s < 0
                    || libc::bind(s, (&raw const at).cast(), len) != 0
                    || libc::listen(s, 4) != 0
                {
                    fail(14);
                }
                libc::write(pipe[1], b"r".as_ptr().cast(), 1);
                let c = libc::accept(s, std::ptr::null_mut(), std::ptr::null_mut());
                if c < 0 {
                    fail(15);
                }
                let mut buf = [0u8; 2048];
                while libc::read(c, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
                libc::write(c, b"bye".as_ptr().cast(), 3);
                libc::close(c);
                libc::close(s);
                libc::_exit(0);
            }
        }
        // SAFETY: our pipe's ends.
        unsafe {
            libc::close(pipe[1]);
            let mut b = [0u8; 1];
            let n = libc::read(pipe[0], b.as_mut_ptr().cast(), 1);
            libc::close(pipe[0]);
            assert_eq!(n, 1, "server {comm} did not come up");
        }
        Server { pid: pid as u32 }
    }

    /// Waits for the server to end; panics if it failed.
    pub fn wait(self) {
        let mut st = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(self.pid as i32, &mut st, 0) };
        assert!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "server failed: status {st:#x}"
        );
    }
}
