//! An endpoint address, from the kernel table's 16 bytes to the dashboard's text.
//!
//! The table keys both families as 16 bytes (IPv4 mapped, `::ffff:a.b.c.d`); on the wire an
//! IPv4 address takes 4 bytes, so [`Addr`] keeps the family. `core::net` (no std needed) gives
//! the conversions to and from `IpAddr` and the text form.

use core::net::{IpAddr, Ipv6Addr};
use serde::{Deserialize, Serialize};

/// An endpoint address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Addr {
    /// From the table's 16-byte form (IPv4 mapped).
    pub fn from_mapped(a: &[u8; 16]) -> Addr {
        if a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff {
            Addr::V4([a[12], a[13], a[14], a[15]])
        } else {
            Addr::V6(*a)
        }
    }
}

impl From<[u8; 16]> for Addr {
    /// The table's 16-byte form: IPv4-mapped addresses become [`Addr::V4`].
    fn from(a: [u8; 16]) -> Addr {
        Addr::from_mapped(&a)
    }
}

impl From<IpAddr> for Addr {
    fn from(a: IpAddr) -> Addr {
        match a {
            IpAddr::V4(v4) => Addr::V4(v4.octets()),
            IpAddr::V6(v6) => Addr::V6(v6.octets()),
        }
    }
}

impl From<Addr> for IpAddr {
    /// The same family and bytes (`std::net::IpAddr` is this type).
    fn from(a: Addr) -> IpAddr {
        match a {
            Addr::V4(b) => IpAddr::from(b),
            Addr::V6(b) => IpAddr::V6(Ipv6Addr::from(b)),
        }
    }
}

impl core::fmt::Display for Addr {
    /// As people write it: an IPv4-mapped IPv6 address (which our agents never send, but a
    /// summary may carry) shows as the IPv4 address it stands for.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        IpAddr::from(*self).to_canonical().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use core::net::Ipv4Addr;

    fn mapped(v4: [u8; 4]) -> [u8; 16] {
        let mut m = [0u8; 16];
        m[10] = 0xff;
        m[11] = 0xff;
        m[12..].copy_from_slice(&v4);
        m
    }

    #[test]
    fn table_bytes_become_the_family_they_stand_for() {
        assert_eq!(Addr::from(mapped([10, 1, 2, 3])), Addr::V4([10, 1, 2, 3]));
        let mut v6 = mapped([10, 1, 2, 3]);
        v6[0] = 0xfd;
        assert_eq!(Addr::from(v6), Addr::V6(v6));
        // Not mapped: ::a01:203 (IPv4-compatible, deprecated) stays IPv6.
        let mut compat = [0u8; 16];
        compat[12..].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(Addr::from(compat), Addr::V6(compat));
    }

    #[test]
    fn ip_addr_round_trip() {
        for ip in [
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
            IpAddr::V6("fd00::1".parse().unwrap()),
            IpAddr::V6("::ffff:10.0.0.1".parse().unwrap()),
        ] {
            let a = Addr::from(ip);
            assert_eq!(IpAddr::from(a), ip);
        }
        assert_eq!(
            IpAddr::from(Addr::V4([10, 0, 0, 1])),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
        );
    }

    #[test]
    fn display_is_the_usual_text_with_mapped_as_ipv4() {
        assert_eq!(Addr::V4([10, 0, 0, 1]).to_string(), "10.0.0.1");
        let mut fd = [0u8; 16];
        fd[0] = 0xfd;
        fd[15] = 1;
        assert_eq!(Addr::V6(fd).to_string(), "fd00::1");
        assert_eq!(
            Addr::V6([0xfd; 16]).to_string(),
            "fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd"
        );
        assert_eq!(Addr::V6(mapped([10, 0, 0, 9])).to_string(), "10.0.0.9");
        assert_eq!(Addr::from(mapped([10, 0, 0, 9])).to_string(), "10.0.0.9");
        // Padding and alignment pass through, as for IpAddr.
        assert_eq!(alloc::format!("{:>9}", Addr::V4([1, 2, 3, 4])), "  1.2.3.4");
    }
}
