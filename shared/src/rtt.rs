//! TCP round-trip times, measured passively at the monitored interface.
//!
//! Two sources, both "a packet leaves, the packet that answers it comes back":
//! - **Handshake**: our SYN (outbound connection) or SYN-ACK (inbound one) leaves at egress;
//!   the segment acknowledging it (SYN-ACK, or the client's ACK) arrives at ingress. On a
//!   gateway each interface has its own flow entry (the key holds the ifindex), so each
//!   measures its own half of the path.
//! - **Timestamps** (RFC 7323, as pping/ePPing): a segment leaves with a new TSval; the first
//!   arriving segment whose TSecr echoes it ends the sample. The pending (flow, TSval) pairs
//!   live in a bounded map ([`PENDING_MAP`]) whose full inserts are counted
//!   (`Stat::RttPendingFull`); a flow arms at most one TSval per interval, so it yields at
//!   most one sample per interval.
//!
//! The per-flow state ([`FlowRtt`]) sits in the flow table entry; the logic is plain methods
//! on it so the programs and host tests run the same code.

use crate::flow::FlowKey;

/// Map name of the pending-timestamp hash map in the eBPF object.
pub const PENDING_MAP: &str = "RTT_PENDING";
/// Map name of the per-CPU RTT histogram (one `u64` per bucket).
pub const HIST_MAP: &str = "RTT_HIST";
/// Default interval between two timestamp samples of one flow.
pub const DEFAULT_INTERVAL_NS: u64 = 100_000_000;
/// RTT histogram buckets: bucket i counts samples in [2^i, 2^(i+1)) microseconds
/// (bucket 0 also takes < 1 µs), the last one everything above.
pub const RTT_BUCKETS: usize = 24;
/// `hs_sent_us` of a SYN or SYN-ACK that was sent twice: its answer is ambiguous (Karn).
pub const HS_AMBIGUOUS: u32 = u32::MAX;

/// The log2 bucket of an RTT sample in microseconds.
#[inline(always)]
pub fn rtt_bucket(us: u32) -> usize {
    let b = (32 - us.leading_zeros()).saturating_sub(1) as usize;
    if b < RTT_BUCKETS {
        b
    } else {
        RTT_BUCKETS - 1
    }
}

/// Key of a pending timestamp: the TSval that left, in which flow and direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TsKey {
    pub flow: FlowKey,
    pub tsval: u32,
    /// The [`crate::Direction`] the TSval went, as u8.
    pub dir: u8,
    pub _pad: [u8; 3],
}

/// RTT state and statistics of one flow, part of its table entry. All samples (handshake
/// and timestamp) feed `samples`, `min_us`, `max_us` and the smoothed RTT.
///
/// Written once per sample, not per segment: it shares its line of [`crate::FlowCounters`]
/// with the key, which both directions read. What changes per segment (the last TSval and
/// TSecr seen) is in each direction's [`crate::flow::DirCounters`]. All fields are u32: send
/// times are microseconds of CLOCK_MONOTONIC modulo 2^32 ([`stamp_us`]), which wraps every
/// 71 minutes: a handshake's answer or the rate limit's interval is far shorter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowRtt {
    /// When our SYN or SYN-ACK left ([`stamp_us`]; 0: nothing pending; [`HS_AMBIGUOUS`]:
    /// sent twice).
    pub hs_sent_us: u32,
    /// The acknowledgement number that answers the pending SYN or SYN-ACK.
    pub hs_ack: u32,
    /// When a TSval of this flow was last put in the pending map ([`stamp_us`]): the rate
    /// limit.
    pub ts_armed_us: u32,
    /// That TSval: only its echo is looked up in the pending map.
    pub ts_armed_val: u32,
    /// The handshake RTT in µs (at least 1); 0 while not measured.
    pub handshake_us: u32,
    pub samples: u32,
    pub min_us: u32,
    pub max_us: u32,
    /// Smoothed RTT × 8: an EWMA with gain 1/8, kept scaled as TCP keeps `srtt_us`.
    pub srtt_us8: u32,
}

/// A send time as [`FlowRtt`] keeps it: microseconds of `now_ns` modulo 2^32, never 0
/// ("nothing pending") nor [`HS_AMBIGUOUS`].
#[inline(always)]
pub fn stamp_us(now_ns: u64) -> u32 {
    let s = (now_ns / 1000) as u32;
    if s == 0 {
        1
    } else if s == HS_AMBIGUOUS {
        HS_AMBIGUOUS - 1
    } else {
        s
    }
}

impl FlowRtt {
    /// Adds one sample.
    #[inline(always)]
    pub fn add_sample(&mut self, us: u32) {
        if self.samples == 0 {
            self.min_us = us;
            self.max_us = us;
            self.srtt_us8 = us.saturating_mul(8);
        } else {
            if us < self.min_us {
                self.min_us = us;
            }
            if us > self.max_us {
                self.max_us = us;
            }
            // srtt += (sample - srtt) / 8, in units of 1/8 µs.
            self.srtt_us8 = (self.srtt_us8 - (self.srtt_us8 >> 3)).saturating_add(us);
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// The smoothed RTT in µs (0 without samples).
    pub fn srtt_us(&self) -> u32 {
        self.srtt_us8 >> 3
    }

    /// A SYN (or SYN-ACK) with sequence number `seq` left at `now`.
    #[inline(always)]
    pub fn syn_sent(&mut self, seq: u32, now: u64) {
        if self.handshake_us != 0 {
            return;
        }
        let ack = seq.wrapping_add(1);
        if self.hs_sent_us != 0 && self.hs_ack == ack {
            // A retransmission: the answer could be to either copy.
            self.hs_sent_us = HS_AMBIGUOUS;
        } else {
            self.hs_sent_us = stamp_us(now);
            self.hs_ack = ack;
        }
    }

    /// A segment with the ACK flag and acknowledgement number `ack` arrived at `now`:
    /// the handshake RTT in µs if it answers the pending SYN or SYN-ACK.
    #[inline(always)]
    pub fn ack_received(&mut self, ack: u32, now: u64) -> Option<u32> {
        let sent = self.hs_sent_us;
        if sent == 0 || ack != self.hs_ack {
            return None;
        }
        self.hs_sent_us = 0;
        if sent == HS_AMBIGUOUS {
            return None;
        }
        // Modulo 2^32 µs, as the stamps; stamps are nudged off 0 and the sentinel by 1 µs.
        let us = stamp_us(now).wrapping_sub(sent).max(1);
        self.handshake_us = us;
        Some(us)
    }

    /// A segment with TSval `tsval` left at `now`, its direction's last TSval being
    /// `last_val`: whether to remember it in the pending map. Only the first segment carrying
    /// a TSval counts (later ones with the same value left later than what the echo
    /// answers), and at most one per `interval_us`.
    #[inline(always)]
    pub fn arm_tsval(
        &mut self,
        last_val: &mut u32,
        tsval: u32,
        now: u64,
        interval_us: u32,
    ) -> bool {
        if tsval == *last_val {
            return false;
        }
        *last_val = tsval;
        let now = stamp_us(now);
        if now.wrapping_sub(self.ts_armed_us) < interval_us {
            return false;
        }
        self.ts_armed_us = now;
        self.ts_armed_val = tsval;
        true
    }

    /// A segment with TSecr `tsecr` arrived, its direction's last TSecr being `last_ecr`:
    /// whether to look it up in the pending map.
    /// The first echo of a TSval is the one that answers it, and only the TSval this flow
    /// armed last can be pending (an older one's echo cannot come after a newer one's): a
    /// peer echoes a new TSecr about every millisecond, a flow arms one TSval per interval,
    /// and the other echoes need no lookup. 0 echoes nothing (a SYN).
    #[inline(always)]
    pub fn new_echo(&self, last_ecr: &mut u32, tsecr: u32) -> bool {
        if tsecr == 0 || tsecr == *last_ecr {
            return false;
        }
        *last_ecr = tsecr;
        tsecr == self.ts_armed_val
    }
}

/// Nanoseconds to whole microseconds, at least 1 (0 means "no sample" in [`FlowRtt`]).
#[inline(always)]
pub fn ns_to_us(ns: u64) -> u32 {
    let us = ns / 1000;
    if us == 0 {
        1
    } else if us > u32::MAX as u64 {
        u32::MAX
    } else {
        us as u32
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, explicit padding, no pointers.
    unsafe impl aya::Pod for super::TsKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<FlowRtt>(), 9 * 4);
        assert_eq!(size_of::<TsKey>(), size_of::<FlowKey>() + 4 + 1 + 3);
    }

    #[test]
    fn buckets_are_log2_and_clamped() {
        assert_eq!(rtt_bucket(0), 0);
        assert_eq!(rtt_bucket(1), 0);
        assert_eq!(rtt_bucket(2), 1);
        assert_eq!(rtt_bucket(3), 1);
        assert_eq!(rtt_bucket(1000), 9);
        assert_eq!(rtt_bucket(1024), 10);
        assert_eq!(rtt_bucket(20_000), 14);
        assert_eq!(rtt_bucket(u32::MAX), RTT_BUCKETS - 1);
    }

    #[test]
    fn min_max_and_smoothed() {
        let mut r = FlowRtt::default();
        assert_eq!(r.srtt_us(), 0);
        r.add_sample(1000);
        assert_eq!(
            (r.min_us, r.max_us, r.srtt_us(), r.samples),
            (1000, 1000, 1000, 1)
        );
        r.add_sample(1800);
        // 1000 + (1800 - 1000) / 8
        assert_eq!(
            (r.min_us, r.max_us, r.srtt_us(), r.samples),
            (1000, 1800, 1100, 2)
        );
        r.add_sample(200);
        assert_eq!((r.min_us, r.max_us, r.samples), (200, 1800, 3));
        // Converges on a steady value without drifting below it.
        for _ in 0..200 {
            r.add_sample(5000);
        }
        assert_eq!(r.srtt_us(), 5000);
    }

    #[test]
    fn handshake_is_timed_from_syn_to_its_ack() {
        let mut r = FlowRtt::default();
        r.syn_sent(100, 1_000_000);
        assert_eq!(r.ack_received(5, 1_500_000), None, "acks something else");
        assert_eq!(r.ack_received(101, 21_000_000), Some(20_000));
        assert_eq!(r.handshake_us, 20_000);
        assert_eq!(r.ack_received(101, 30_000_000), None, "only once");
        r.syn_sent(500, 40_000_000);
        assert_eq!(r.hs_sent_us, 0, "measured already: not armed again");
    }

    #[test]
    fn handshake_is_timed_across_the_stamps_wrap() {
        let mut r = FlowRtt::default();
        r.syn_sent(100, (u32::MAX as u64 - 5) * 1000);
        assert_eq!(r.ack_received(101, (1 << 32) * 1000 + 15_000), Some(21));
        // Stamps never take the two values that mean something else.
        assert_eq!(stamp_us((1 << 32) * 1000), 1);
        assert_eq!(stamp_us((u32::MAX as u64) * 1000), HS_AMBIGUOUS - 1);
    }

    #[test]
    fn a_retransmitted_syn_gives_no_sample() {
        let mut r = FlowRtt::default();
        r.syn_sent(100, 1_000_000);
        r.syn_sent(100, 1_001_000_000);
        assert_eq!(r.ack_received(101, 1_001_500_000), None);
        assert_eq!(r.handshake_us, 0);
    }

    #[test]
    fn sub_microsecond_handshake_still_counts() {
        let mut r = FlowRtt::default();
        r.syn_sent(0, 1000);
        assert_eq!(r.ack_received(1, 1500), Some(1));
    }

    #[test]
    fn tsvals_are_armed_once_and_rate_limited() {
        let (mut r, mut last) = (FlowRtt::default(), 0);
        let ms = 1_000_000;
        let interval = 100_000;
        assert!(r.arm_tsval(&mut last, 10, 1000 * ms, interval));
        assert!(
            !r.arm_tsval(&mut last, 10, 1200 * ms, interval),
            "same TSval again"
        );
        assert!(
            !r.arm_tsval(&mut last, 11, 1050 * ms, interval),
            "within the interval"
        );
        assert!(
            !r.arm_tsval(&mut last, 11, 1150 * ms, interval),
            "not new any more"
        );
        assert!(r.arm_tsval(&mut last, 12, 1150 * ms, interval));
    }

    #[test]
    fn only_the_first_echo_of_the_armed_tsval_is_looked_up() {
        let (mut r, mut val, mut ecr) = (FlowRtt::default(), 0, 0);
        let ms = 1_000_000;
        let interval = 100_000;
        assert!(r.arm_tsval(&mut val, 7, 1000 * ms, interval));
        assert!(!r.new_echo(&mut ecr, 0), "a SYN echoes nothing");
        assert!(!r.new_echo(&mut ecr, 6), "not armed");
        assert!(r.new_echo(&mut ecr, 7));
        assert!(!r.new_echo(&mut ecr, 7), "not the first echo");
        assert!(!r.new_echo(&mut ecr, 8), "not armed");
        assert!(
            !r.arm_tsval(&mut val, 9, 1050 * ms, interval),
            "within the interval"
        );
        assert!(!r.new_echo(&mut ecr, 9), "seen leaving, not armed");
        assert!(r.arm_tsval(&mut val, 10, 1100 * ms, interval));
        assert!(r.new_echo(&mut ecr, 10));
    }
}
