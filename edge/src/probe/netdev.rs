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

/// Runs `f` on a thread that has entered the named network namespace (`/var/run/netns/NAME`),
/// or on the calling thread when `netns` is `None`. Interface lookups and attach calls made
/// by `f` happen in that namespace; links and map fds stay valid after the thread returns, so
/// the agent can watch a namespace's interfaces while its own sockets stay where it runs.
///
/// A namespace that cannot be opened or entered is a [`UsageError`]; a thread that cannot be
/// started (out of tasks or memory) is a runtime error, returned rather than panicking: this
/// also runs while detaching, where a panic during an unwind would abort the agent with its
/// programs still attached. `f` is then dropped without running.
pub fn in_netns<T: Send>(netns: Option<&str>, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let Some(name) = netns else {
        return Ok(f());
    };
    let path = if name.contains('/') {
        name.to_string()
    } else {
        format!("/var/run/netns/{name}")
    };
    let file = std::fs::File::open(&path)
        .map_err(|e| UsageError::Invalid(format!("network namespace {name:?} ({path}): {e}")))?;
    std::thread::scope(|s| {
        let thread = std::thread::Builder::new()
            .spawn_scoped(s, || {
                use std::os::fd::AsRawFd;
                // SAFETY: a namespace fd; setns affects only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(UsageError::Invalid(format!(
                        "entering network namespace {name:?}: {}",
                        std::io::Error::last_os_error()
                    ))
                    .into());
                }
                Ok(f())
            })
            .with_context(|| format!("starting a thread to enter network namespace {name:?}"))?;
        thread.join().expect("namespace thread panicked")
    })
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
