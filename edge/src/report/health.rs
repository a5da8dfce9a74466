//! The agent's own footprint, for the summaries' health: CPU time per window and resident
//! memory, read from /proc/self.

/// Resident set size of this process in KiB (`/proc/self/statm`, second field, in pages).
pub fn rss_kib() -> u32 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    parse_statm_resident(&statm)
        .map(|pages| (pages * page / 1024) as u32)
        .unwrap_or(0)
}

fn parse_statm_resident(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of the whole process (all threads) so far, in microseconds.
/// `/proc/self/stat` counts in clock ticks (10 ms); getrusage gives microseconds for the same
/// numbers, which a 10 ms-scale per-window figure needs.
pub fn cpu_us() -> u64 {
    // SAFETY: all-zero is a valid rusage; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// CPU time used between two calls to [`CpuMeter::lap`].
pub struct CpuMeter {
    last_us: u64,
}

impl CpuMeter {
    pub fn start() -> CpuMeter {
        CpuMeter { last_us: cpu_us() }
    }

    /// Milliseconds of CPU since the last lap (or start).
    pub fn lap_ms(&mut self) -> u32 {
        let now = cpu_us();
        let d = now.saturating_sub(self.last_us);
        self.last_us = now;
        (d / 1000) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_second_field_is_resident_pages() {
        assert_eq!(parse_statm_resident("2048 512 100 1 0 300 0\n"), Some(512));
        assert_eq!(parse_statm_resident(""), None);
    }

    #[test]
    fn this_process_has_memory_and_burns_cpu() {
        assert!(rss_kib() > 100);
        let mut m = CpuMeter::start();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(1);
            std::hint::black_box(x);
        }
        assert!(m.lap_ms() >= 10);
    }
}
