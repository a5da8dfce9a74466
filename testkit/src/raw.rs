//! Frames sent as they are, through an AF_PACKET socket: for traffic the kernel's own stack
//! cannot make here (VLAN-tagged frames on a kernel without 802.1Q support).

use std::{ffi::CString, io};

/// Sends each frame (Ethernet header first) out of `iface` in namespace `ns`. The frames go
/// through the device's egress path (TC egress included) and across to its veth peer.
pub fn send(ns: &str, iface: &str, frames: &[Vec<u8>]) {
    crate::in_netns(ns, || {
        let name = CString::new(iface).unwrap();
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "{iface}: {}", io::Error::last_os_error());
        // Protocol 0: this socket sends only, it receives nothing.
        // SAFETY: plain socket call; the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
        // SAFETY: all-zero is a valid sockaddr_ll; the fields that matter are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        let mut failed = None;
        for f in frames {
            addr.sll_addr[..6].copy_from_slice(&f[..6]);
            // SAFETY: `f` is a live buffer of f.len() bytes; `addr` a sockaddr_ll of its size.
            let n = unsafe {
                libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if n != f.len() as isize {
                failed = Some(io::Error::last_os_error());
                break;
            }
        }
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
        if let Some(e) = failed {
            panic!("sending a raw frame on {iface}: {e}");
        }
    })
}
