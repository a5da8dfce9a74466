//! The summaries' `Health`, assembled here and only here: the window's own counters (packets
//! seen, parse errors, table use) beside the agent's footprint (CPU time per window, resident
//! memory from /proc/self) and its spool.

use crate::{
    link::{mqtt::SpoolStats, spool::Mode},
    report::window::Window,
};
use shared::{wire::Health, Stat};

/// Assembles each window's [`Health`]; keeps the CPU clock between windows and counts the
/// wall-clock steps.
pub struct HealthMeter {
    table_capacity: u32,
    cpu: CpuMeter,
    clock_steps: u32,
}

/// What the agent's other parts say about themselves when a window closes.
#[derive(Clone, Copy, Debug, Default)]
pub struct AgentState {
    pub spool: SpoolStats,
    /// Re-attachments to re-created interfaces since start.
    pub reattached: u64,
}

impl HealthMeter {
    /// Starts the CPU clock of the first window.
    pub fn start(table_capacity: u32) -> HealthMeter {
        HealthMeter {
            table_capacity,
            cpu: CpuMeter::start(),
            clock_steps: 0,
        }
    }

    /// The health of the window just drained, with the spool and interfaces as they are now;
    /// starts the next window's CPU clock.
    pub fn window(&mut self, w: &Window, now: AgentState) -> Health {
        if w.clock_step_ms != 0 {
            self.clock_steps = self.clock_steps.saturating_add(1);
        }
        let sat = |v: u64| v.min(u32::MAX as u64) as u32;
        Health {
            cpu_ms: self.cpu.lap_ms(),
            rss_kib: rss_kib(),
            spool_depth: sat(now.spool.depth as u64),
            spool_dropped: now.spool.dropped,
            spool_fallback: now.spool.mode == Mode::Fallback,
            spool_write_errors: sat(now.spool.write_errors),
            clock_step_ms: w.clock_step_ms,
            clock_steps: self.clock_steps,
            reattached: sat(now.reattached),
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
        owner_sockets_full: owner_stat(w, "owner_sockets_full") + owner_stat(w, "owner_ports_full"),
        owner_devices_full: owner_stat(w, "dhcp_names_full"),
        header_excess: stat(Stat::HeaderExcess),
        reclaimed: stat(Stat::Reclaimed),
        ..Health::default()
    }
}

/// One of the window's owner counters (0 with owners off).
fn owner_stat(w: &Window, label: &str) -> u64 {
    w.owner_stats
        .as_ref()
        .and_then(|m| m.get(label).copied())
        .unwrap_or(0)
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
        set(Stat::HeaderExcess, 6);
        set(Stat::Reclaimed, 3);
        w.overflow.packets = 5;
        w.clock_step_ms = -30_000;
        let now = AgentState {
            spool: SpoolStats {
                depth: 2,
                dropped: 9,
                mode: Mode::Fallback,
                write_errors: 4,
            },
            reattached: 3,
        };
        let mut meter = HealthMeter::start(1024);
        let h = meter.window(&w, now);
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
        assert_eq!((h.spool_fallback, h.spool_write_errors), (true, 4));
        assert_eq!((h.header_excess, h.reclaimed), (6, 3));
        assert_eq!(
            (h.clock_step_ms, h.clock_steps, h.reattached),
            (-30_000, 1, 3)
        );
        // Steps are counted since start; a window without one reports 0 for itself.
        w.clock_step_ms = 0;
        let h = meter.window(&w, now);
        assert_eq!((h.clock_step_ms, h.clock_steps), (0, 1));
        w.clock_step_ms = 3_600_000;
        assert_eq!(meter.window(&w, now).clock_steps, 2);
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
