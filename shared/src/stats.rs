//! The programs' own counters: one block of [`Counter`]s per CPU, indexed by [`Stat`], in
//! each CPU's slot ([`crate::cpu::CpuSlot`]).
//!
//! Conservation holds per window: `Seen = Parsed + NonIp + Fragment + every Err*`, and
//! `Parsed = sum(flow deltas) + Overflow` (packets and bytes alike for the second).

/// One counter: packets and bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    pub fn add(&mut self, other: &Counter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }

    pub fn delta_since(&self, earlier: &Counter) -> Counter {
        Counter {
            packets: self.packets.wrapping_sub(earlier.packets),
            bytes: self.bytes.wrapping_sub(earlier.bytes),
        }
    }
}

macro_rules! stats {
    ($($(#[$doc:meta])* $name:ident = $idx:literal, $label:literal;)*) => {
        /// Index into the stats array.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Stat { $($(#[$doc])* $name = $idx,)* }

        impl Stat {
            pub const ALL: &'static [Stat] = &[$(Stat::$name,)*];
            /// Name used in JSON output and metrics.
            pub const fn label(self) -> &'static str {
                match self { $(Stat::$name => $label,)* }
            }
        }
    };
}

stats! {
    /// Every packet either program saw. Bytes: frame length (L2), for reference only.
    Seen = 0, "seen";
    /// Packets attributed to a conversation (a flow record or the overflow record).
    /// Bytes: IP total length per wire packet.
    Parsed = 1, "parsed";
    /// Parsed packets whose flow could not be inserted because the table was full.
    Overflow = 2, "overflow";
    /// Frames that are not IPv4 or IPv6 (ARP, LLDP, ...).
    NonIp = 3, "non_ip";
    /// Non-first IPv4/IPv6 fragments: no L4 header, so no ports to key on.
    Fragment = 4, "fragment";
    /// Frame shorter than an Ethernet header.
    ErrEthernet = 5, "err_ethernet";
    /// VLAN tag truncated, or more than two stacked tags.
    ErrVlan = 6, "err_vlan";
    /// IPv4 header truncated, IHL < 5, or total length shorter than the header.
    ErrIpv4 = 7, "err_ipv4";
    /// IPv6 header truncated, or version field not 6.
    ErrIpv6 = 8, "err_ipv6";
    /// IPv6 extension header truncated, or a chain longer than the walk limit.
    ErrIpv6Ext = 9, "err_ipv6_ext";
    /// TCP/UDP/ICMP header truncated, or TCP data offset < 5.
    ErrL4 = 10, "err_l4";
    /// Packets skipped by 1-in-N sampling (counted, not keyed).
    Unsampled = 11, "unsampled";
    /// TCP segments whose TSval was to be remembered for an RTT sample but the pending map
    /// was full (not part of the sums above: these packets are counted in flows as usual).
    RttPendingFull = 12, "rtt_pending_full";
}

/// Number of counters in a [`Stats`] block.
pub const STATS_LEN: u32 = 13;

/// Every counter, indexed by [`Stat`]: one CPU's block in its [`crate::cpu::CpuSlot`].
pub type Stats = [Counter; STATS_LEN as usize];

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), two u64, any bit pattern valid.
    unsafe impl aya::Pod for super::Counter {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_indexes_are_dense() {
        assert_eq!(Stat::ALL.len() as u32, STATS_LEN);
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as u32, i as u32, "{}", s.label());
        }
    }
}
