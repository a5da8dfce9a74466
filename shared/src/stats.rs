//! The programs' own counters: one block of [`Count`]s per CPU, indexed by [`Stat`], in
//! each CPU's slot ([`crate::cpu::CpuSlot`]); and [`Count`] itself, the one packets+bytes
//! pair from the kernel's counters to the wire (`wire::Count` is this type).
//!
//! Conservation holds per window: `Seen = Parsed + NonIp + Fragment + every Err*`, and
//! `Parsed = sum(flow deltas) + Overflow + Reclaimed` (packets and bytes alike for the second).

/// Packets and bytes. `#[repr(C)]` for the kernel's stats block; on the wire two varints.
///
/// Arithmetic wraps, as the kernel's counters do: sums and differences are then exact modulo
/// 2^64, so conservation (`totals == sum(flows) + overflow`) holds across a counter's wrap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

impl Count {
    pub fn add(&mut self, other: &Count) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }

    /// `self + other`.
    pub fn plus(mut self, other: &Count) -> Count {
        self.add(other);
        self
    }

    pub fn delta_since(&self, earlier: &Count) -> Count {
        Count {
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
            /// The parser's rejections (`Err*`), summed into the summaries' `parse_errors`.
            pub const PARSE_ERRORS: &'static [Stat] = &[
                Stat::ErrEthernet, Stat::ErrVlan, Stat::ErrIpv4, Stat::ErrIpv6, Stat::ErrIpv6Ext,
                Stat::ErrL4,
            ];
            /// The DNS parser's rejections, summed into the summaries' `dns_malformed`.
            pub const DNS_MALFORMED: &'static [Stat] = &[
                Stat::DnsBadHeader, Stat::DnsBadLabel, Stat::DnsPointer, Stat::DnsNoQuestion,
                Stat::DnsLongName,
            ];
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
    /// Bytes: IP total length per wire packet, at most what the frame holds.
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
    /// Parsed packets whose IP header claimed more than the frame holds (a lying or broken
    /// header): packets, and the bytes claimed beyond the frame, which no flow counts (its
    /// bytes are what the frame holds). Not part of the sums above.
    HeaderExcess = 13, "header_excess";
    /// Packets and bytes of flows a program reclaimed under pressure to make room for a new
    /// one (`crate::table::reclaimable`; never read by the agent): moved out of the table, so
    /// `Parsed = sum(flow deltas) + Overflow + Reclaimed`. Reported in the overflow record.
    Reclaimed = 14, "reclaimed";
    /// UDP port-53 payloads read as DNS messages (`shared::dns`), and below those that were
    /// not, by reason: they pass and count as traffic as any packet (not part of the sums
    /// above). Bytes: IP total length.
    DnsMessages = 15, "dns_messages";
    /// Shorter than the DNS header.
    DnsBadHeader = 16, "dns_bad_header";
    /// A label or the question past the packet, or a reserved label form.
    DnsBadLabel = 17, "dns_bad_label";
    /// A compression pointer in the question's name (never followed: no pointer loop).
    DnsPointer = 18, "dns_pointer";
    /// No question (QDCOUNT 0).
    DnsNoQuestion = 19, "dns_no_question";
    /// A name longer than 255 bytes.
    DnsLongName = 20, "dns_long_name";
    /// A pending query pushed out of its flow's bounded set by a newer one (unanswered).
    DnsEvicted = 21, "dns_evicted";
    /// A DNS message whose flow could not get DNS state: the DNS map was full (the message
    /// is in `dns_messages` and its flow's counts, without DNS fields).
    DnsStateFull = 22, "dns_state_full";
}

/// Number of counters in a [`Stats`] block.
pub const STATS_LEN: u32 = 23;

/// Every counter, indexed by [`Stat`]: one CPU's block in its [`crate::cpu::CpuSlot`].
pub type Stats = [Count; STATS_LEN as usize];

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), two u64, any bit pattern valid.
    unsafe impl aya::Pod for super::Count {}
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

    #[test]
    fn parse_errors_are_the_err_stats() {
        let by_label: alloc::vec::Vec<Stat> = Stat::ALL
            .iter()
            .copied()
            .filter(|s| s.label().starts_with("err_"))
            .collect();
        assert_eq!(Stat::PARSE_ERRORS, &by_label[..]);
    }

    #[test]
    fn counts_wrap_so_sums_and_differences_stay_exact() {
        let near = Count {
            packets: u64::MAX,
            bytes: u64::MAX - 1,
        };
        let two = Count {
            packets: 2,
            bytes: 3,
        };
        let sum = near.plus(&two);
        assert_eq!((sum.packets, sum.bytes), (1, 1));
        assert_eq!(sum.delta_since(&near), two);
    }
}
