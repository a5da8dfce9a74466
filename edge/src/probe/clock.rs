//! The agent's clocks, read together: CLOCK_MONOTONIC, CLOCK_BOOTTIME and wall-clock time.
//!
//! Flow entries are stamped in kernel ticks, not with a clock helper ([`crate::probe::ticks`] turns
//! ticks into monotonic nanoseconds); [`ClockPair`] then turns monotonic time into wall-clock
//! milliseconds for the windows. CLOCK_MONOTONIC is also what the programs' RTT timestamps
//! (`bpf_ktime_get_ns`) are in, so the pending-timestamp sweep compares against it directly.
//!
//! Window lengths come from CLOCK_BOOTTIME, never from the wall clock: an NTP step (or an
//! operator's `date -s`) moves CLOCK_REALTIME but neither of the other two, so a step cannot
//! stretch, shrink or wrap a window. BOOTTIME rather than MONOTONIC because it also counts
//! time suspended: a window across a suspend is as long as the time that really passed, and
//! a resume is not mistaken for a clock step. A step is what is left of the wall clock's
//! advance once BOOTTIME's is taken out ([`ClockPair::step_ms_since`]), reported per window.

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

/// Nanoseconds on CLOCK_BOOTTIME (monotonic, and counting time suspended).
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_BOOTTIME exists since Linux 2.6.39.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A wall-clock jump smaller than this is reading jitter or slewing, not a step (ntpd and
/// chrony step at 128 ms and above by default).
pub const STEP_MS: i64 = 100;

/// The clocks read at one moment, to turn monotonic times into wall-clock ones and to
/// measure windows.
#[derive(Clone, Copy, Debug)]
pub struct ClockPair {
    pub mono_ns: u64,
    pub unix_ms: u64,
    pub boot_ns: u64,
}

impl ClockPair {
    pub fn now() -> ClockPair {
        ClockPair {
            mono_ns: monotonic_ns(),
            unix_ms: unix_ms_now(),
            boot_ns: boottime_ns(),
        }
    }

    /// Milliseconds that passed since `earlier`, by CLOCK_BOOTTIME.
    pub fn ms_since(&self, earlier: &ClockPair) -> u64 {
        self.boot_ns.saturating_sub(earlier.boot_ns) / 1_000_000
    }

    /// How far the wall clock was stepped since `earlier` (its advance less the time that
    /// passed; negative: set back), or 0 when that is below [`STEP_MS`].
    pub fn step_ms_since(&self, earlier: &ClockPair) -> i64 {
        let wall = self.unix_ms as i64 - earlier.unix_ms as i64;
        let step = wall - self.ms_since(earlier) as i64;
        if step.abs() >= STEP_MS {
            step
        } else {
            0
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
            boot_ns: 6_000_000_000,
        };
        assert_eq!(c.to_unix_ms(5_000_000_000), 1_700_000_000_000);
        assert_eq!(c.to_unix_ms(6_500_000_000), 1_700_000_001_500);
        assert_eq!(c.to_unix_ms(4_000_000_000), 1_699_999_999_000);
    }

    #[test]
    fn steps_are_the_wall_clock_less_the_time_that_passed() {
        let at = |boot_s: u64, unix_ms: u64| ClockPair {
            mono_ns: boot_s * 1_000_000_000,
            boot_ns: boot_s * 1_000_000_000,
            unix_ms,
        };
        let a = at(100, 1_700_000_000_000);
        // 10 s passed, the wall clock agrees (to 40 ms of jitter): no step.
        assert_eq!(at(110, 1_700_000_010_040).step_ms_since(&a), 0);
        assert_eq!(at(110, 1_700_000_010_040).ms_since(&a), 10_000);
        // Stepped an hour forward, or 30 s back, within the 10 s.
        assert_eq!(at(110, 1_700_003_610_000).step_ms_since(&a), 3_600_000);
        assert_eq!(at(110, 1_699_999_980_000).step_ms_since(&a), -30_000);
    }

    #[test]
    fn monotonic_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a && a > 0);
    }
}
