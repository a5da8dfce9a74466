//! The summaries' `Health`, assembled here and only here: the window's own counters (packets
//! seen, parse errors, table use) beside the agent's footprint (CPU time per window, resident
//! memory from /proc/self) and its spool.

use crate::report::window::Window;
use shared::{wire::Health, Stat};

/// Assembles each window's [`Health`]; keeps the CPU clock between windows.
pub struct HealthMeter {
    table_capacity: u32,
    cpu: CpuMeter,
}

impl HealthMeter {
    /// Starts the CPU clock of the first window.
    pub fn start(table_capacity: u32) -> HealthMeter {
        HealthMeter {
            table_capacity,
            cpu: CpuMeter::start(),
        }
    }

    /// The health of the window just drained, with the spool's depth and drops now; starts
    /// the next window's CPU clock.
    pub fn window(&mut self, w: &Window, spool_depth: u32, spool_dropped: u64) -> Health {
        Health {
            cpu_ms: self.cpu.lap_ms(),
            rss_kib: rss_kib(),
            spool_depth,
            spool_dropped,
            ..window_health(w, self.table_capacity)
        }
    }
}

/// What the window's own counters say; CPU, memory and spool are zero.
fn window_health(w: &Window, table_capacity: u32) -> Health {
    let stat = |s: Stat| w.stats[s as usize].packets;
    Health {
        packets_seen: stat(Stat::Seen),
        active_flows: w.active_flows,
        table_capacity,
        table_full: w.overflow.packets,
        parse_errors: Stat::PARSE_ERRORS.iter().map(|s| stat(*s)).sum(),
        fragments: stat(Stat::Fragment),
        non_ip: stat(Stat::NonIp),
        dns_malformed: Stat::DNS_MALFORMED.iter().map(|s| stat(*s)).sum(),
        dns_evicted: stat(Stat::DnsEvicted),
        ..Health::default()
    }
}

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
    fn window_counters_become_health() {
        let mut w = Window {
            active_flows: 7,
            ..Window::default()
        };
        let mut set = |s: Stat, packets: u64| w.stats[s as usize].packets = packets;
        set(Stat::Seen, 100);
        set(Stat::Parsed, 90);
        set(Stat::Fragment, 2);
        set(Stat::NonIp, 3);
        set(Stat::ErrEthernet, 1);
        set(Stat::ErrL4, 4);
        set(Stat::Unsampled, 50);
        w.overflow.packets = 5;
        let h = HealthMeter::start(1024).window(&w, 2, 9);
        assert_eq!(
            (
                h.packets_seen,
                h.active_flows,
                h.table_capacity,
                h.table_full
            ),
            (100, 7, 1024, 5)
        );
        assert_eq!((h.parse_errors, h.fragments, h.non_ip), (5, 2, 3));
        assert_eq!((h.spool_depth, h.spool_dropped), (2, 9));
        assert!(h.rss_kib > 100);
    }

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
