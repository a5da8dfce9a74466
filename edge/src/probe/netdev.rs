//! Network interfaces: name → index, and the driver behind one (for the attach choice).

use crate::UsageError;
use anyhow::Context;
use std::ffi::CString;

/// The index of interface `name` in this network namespace.
pub fn ifindex(name: &str) -> Result<u32, UsageError> {
    let c = CString::new(name).map_err(|_| UsageError::UnknownInterface(name.into()))?;
    // SAFETY: valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(UsageError::UnknownInterface(name.into())),
        i => Ok(i),
    }
}

/// The name of interface `index`, if it still exists.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buffer of IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(s.to_string_lossy().into_owned())
}

/// The kernel driver of interface `name` ("veth", "virtio_net", "mlx5_core", ...), from
/// ETHTOOL_GDRVINFO.
pub fn driver(name: &str) -> std::io::Result<String> {
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IF_NAMESIZE],
        data: *mut DrvInfo,
        _pad: [u8; 16],
    }
    let name = ifr_name(name)?;
    // SAFETY: all-zero is a valid DrvInfo.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut req = IfReq {
        name,
        data: &mut info,
        _pad: [0; 16],
    };
    // SAFETY: an ifreq whose data points at a live ethtool_drvinfo, as SIOCETHTOOL wants.
    unsafe { interface_ioctl(libc::SIOCETHTOOL, &mut req) }?;
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// The MTU of interface `name` (SIOCGIFMTU, in the calling thread's network namespace).
pub fn mtu(name: &str) -> std::io::Result<u32> {
    #[repr(C)]
    struct IfReqMtu {
        name: [u8; libc::IF_NAMESIZE],
        mtu: libc::c_int,
        _pad: [u8; 20],
    }
    let mut req = IfReqMtu {
        name: ifr_name(name)?,
        mtu: 0,
        _pad: [0; 20],
    };
    // SAFETY: an ifreq-sized buffer holding the name, as SIOCGIFMTU wants.
    unsafe { interface_ioctl(libc::SIOCGIFMTU, &mut req) }?;
    Ok(req.mtu as u32)
}

/// `name` as an `ifreq`'s NUL-padded name field; too long a name is no such device.
fn ifr_name(name: &str) -> std::io::Result<[u8; libc::IF_NAMESIZE]> {
    if name.len() >= libc::IF_NAMESIZE {
        return Err(std::io::Error::from_raw_os_error(libc::ENODEV));
    }
    let mut field = [0; libc::IF_NAMESIZE];
    field[..name.len()].copy_from_slice(name.as_bytes());
    Ok(field)
}

/// An interface ioctl on a throwaway datagram socket.
///
/// # Safety
/// `req` must be the structure `request` expects (an `ifreq` layout).
unsafe fn interface_ioctl<R>(request: libc::c_ulong, req: &mut R) -> std::io::Result<()> {
    // SAFETY: plain socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // `as _`: the request parameter is c_ulong on glibc but c_int on musl (cross builds).
    // SAFETY: the caller vouches for `req`.
    let rc = unsafe { libc::ioctl(fd, request as _, req as *mut R) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if rc < 0 {
        Err(err)
    } else {
        Ok(())
    }
}

/// Whether interface `name` is administratively up and has a carrier (SIOCGIFFLAGS: IFF_UP
/// and IFF_RUNNING), in the calling thread's network namespace.
pub fn is_up(name: &str) -> std::io::Result<bool> {
    #[repr(C)]
    struct IfReqFlags {
        name: [u8; libc::IF_NAMESIZE],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReqFlags {
        name: ifr_name(name)?,
        flags: 0,
        _pad: [0; 22],
    };
    // SAFETY: an ifreq-sized buffer holding the name, as SIOCGIFFLAGS wants.
    unsafe { interface_ioctl(libc::SIOCGIFFLAGS, &mut req) }?;
    let want = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    Ok(req.flags & want == want)
}

/// Runs `f` on a thread that is in the named network namespace (`/var/run/netns/NAME`, or a
/// path), or on the calling thread when `netns` is `None`. Interface lookups and attach calls
/// made by `f` happen in that namespace; links and map fds stay valid afterwards, so the agent
/// can watch a namespace's interfaces while its own sockets stay where it runs.
///
/// One thread per namespace enters it (setns, which needs CAP_SYS_ADMIN) the first time and
/// stays there for the rest of the process, running every later call: after that no call
/// needs CAP_SYS_ADMIN, so the agent can drop it once attached (`caps::drop_to`, run on that
/// thread too, as capabilities are per thread) and still look at and re-attach to the
/// namespace's interfaces every window.
///
/// A namespace that cannot be opened or entered, or whose name no longer names the namespace
/// the thread is in (deleted), is a [`UsageError`]; a thread that cannot be started (out of
/// tasks or memory) is a runtime error, returned rather than panicking: this also runs while
/// detaching, where a panic during an unwind would abort the agent with its programs still
/// attached. `f` is then dropped without running; a panic in `f` is an error as well.
pub fn in_netns<T: Send>(netns: Option<&str>, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let Some(name) = netns else {
        return Ok(f());
    };
    let jobs = ns_thread(name)?;
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<T>(1);
    let job: Box<dyn FnOnce() + Send + '_> = Box::new(move || {
        let _ = done_tx.send(f());
    });
    // SAFETY: only the lifetime is changed. This function does not return before the job has
    // run or has been dropped (the receive below ends only when its sender, owned by the job,
    // sent or was dropped), so nothing the job borrows is used after it is gone.
    let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(job) };
    if let Err(unsent) = jobs.send(job) {
        drop(unsent);
        anyhow::bail!("the thread in network namespace {name:?} is gone");
    }
    done_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("a call in network namespace {name:?} panicked"))
}

type Job = Box<dyn FnOnce() + Send + 'static>;

struct NsThread {
    name: String,
    path: String,
    /// The namespace file's (device, inode) when the thread entered it.
    id: (u64, u64),
    jobs: std::sync::mpsc::Sender<Job>,
}

static NS_THREADS: std::sync::Mutex<Vec<NsThread>> = std::sync::Mutex::new(Vec::new());

fn ns_id(path: &str) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// The job queue of the thread in namespace `name`, started (and entered) on first use.
fn ns_thread(name: &str) -> anyhow::Result<std::sync::mpsc::Sender<Job>> {
    let path = if name.contains('/') {
        name.to_string()
    } else {
        format!("/var/run/netns/{name}")
    };
    let gone = |e: std::io::Error| {
        UsageError::Invalid(format!("network namespace {name:?} ({path}): {e}"))
    };
    let mut threads = NS_THREADS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = threads.iter().find(|t| t.name == name) {
        // Still the namespace the thread is in (not deleted, not another one by that name).
        let now = ns_id(&t.path).map_err(gone)?;
        if now != t.id {
            return Err(gone(std::io::Error::other(
                "deleted (the name names another one now)",
            ))
            .into());
        }
        return Ok(t.jobs.clone());
    }
    let file = std::fs::File::open(&path).map_err(gone)?;
    let id = {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().map_err(gone)?;
        (m.dev(), m.ino())
    };
    let (jobs, rx) = std::sync::mpsc::channel::<Job>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let who = name.to_string();
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: a namespace fd; setns affects only this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = std::io::Error::last_os_error();
                let hint = if e.raw_os_error() == Some(libc::EPERM) {
                    " (entering another network namespace needs CAP_SYS_ADMIN, given up \
                     after attaching; see configs/edgeflow.service)"
                } else {
                    ""
                };
                let _ = ready_tx.send(Err(UsageError::Invalid(format!(
                    "entering network namespace {who:?}: {e}{hint}"
                ))));
                return;
            }
            drop(file);
            let _ = ready_tx.send(Ok(()));
            while let Ok(job) = rx.recv() {
                // A panicking call is reported to its caller (its result channel closes);
                // the thread stays for the next one.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        })
        .with_context(|| format!("starting a thread to enter network namespace {name:?}"))?;
    ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the thread for network namespace {name:?} died"))??;
    threads.push(NsThread {
        name: name.to_string(),
        path,
        id,
        jobs: jobs.clone(),
    });
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_exists_and_round_trips() {
        let i = ifindex("lo").unwrap();
        assert_eq!(ifname(i).as_deref(), Some("lo"));
    }

    #[test]
    fn unknown_namespace_is_a_usage_error() {
        let e = in_netns(Some("no-such-ns-x"), || 1).unwrap_err();
        assert!(
            matches!(e.downcast_ref(), Some(UsageError::Invalid(_))),
            "{e:#}"
        );
        assert_eq!(in_netns(None, || 7).unwrap(), 7);
    }

    #[test]
    fn loopback_is_up() {
        assert!(is_up("lo").unwrap());
        assert!(is_up("no-such-if0").is_err());
    }

    #[test]
    fn loopback_mtu() {
        assert_eq!(mtu("lo").unwrap(), 65536);
        assert!(mtu("no-such-if0").is_err());
    }

    #[test]
    fn unknown_interface_is_a_usage_error() {
        assert!(matches!(
            ifindex("no-such-if0"),
            Err(UsageError::UnknownInterface(n)) if n == "no-such-if0"
        ));
        assert!(ifname(u32::MAX).is_none());
    }
}
