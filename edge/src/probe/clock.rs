//! The agent's two clocks, read together: CLOCK_MONOTONIC and wall-clock time.
//!
//! Flow entries are stamped in kernel ticks, not with a clock helper ([`crate::probe::ticks`] turns
//! ticks into monotonic nanoseconds); [`ClockPair`] then turns monotonic time into wall-clock
//! milliseconds for the windows. CLOCK_MONOTONIC is also what the programs' RTT timestamps
//! (`bpf_ktime_get_ns`) are in, so the pending-timestamp sweep compares against it directly.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds on CLOCK_MONOTONIC (what `bpf_ktime_get_ns` reads in the programs).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The two clocks read at one moment, to turn monotonic times into wall-clock ones.
#[derive(Clone, Copy, Debug)]
pub struct ClockPair {
    pub mono_ns: u64,
    pub unix_ms: u64,
}

impl ClockPair {
    pub fn now() -> ClockPair {
        ClockPair {
            mono_ns: monotonic_ns(),
            unix_ms: unix_ms_now(),
        }
    }

    /// Wall-clock milliseconds of a monotonic timestamp.
    pub fn to_unix_ms(&self, mono_ns: u64) -> u64 {
        if mono_ns >= self.mono_ns {
            self.unix_ms + (mono_ns - self.mono_ns) / 1_000_000
        } else {
            self.unix_ms
                .saturating_sub((self.mono_ns - mono_ns).div_ceil(1_000_000))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways_around_the_pairing() {
        let c = ClockPair {
            mono_ns: 5_000_000_000,
            unix_ms: 1_700_000_000_000,
        };
        assert_eq!(c.to_unix_ms(5_000_000_000), 1_700_000_000_000);
        assert_eq!(c.to_unix_ms(6_500_000_000), 1_700_000_001_500);
        assert_eq!(c.to_unix_ms(4_000_000_000), 1_699_999_999_000);
    }

    #[test]
    fn monotonic_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a && a > 0);
    }
}
