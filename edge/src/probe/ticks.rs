//! The programs stamp a flow's first and last packet with the kernel's tick counter
//! (`bpf_jiffies64`): the verifier turns that helper into a plain load, where a clock helper
//! costs 20–30 ns per packet (bench/RESULTS.md). Userspace cannot read the tick counter, so
//! the `edgeflow_clock` program, run with BPF_PROG_TEST_RUN, reads it together with
//! CLOCK_MONOTONIC; [`TickClock`] turns ticks into monotonic nanoseconds from such pairs.

use std::os::fd::{AsFd, AsRawFd};

use aya::{
    maps::{Array, MapData},
    programs::{Program, ProgramFd},
    Ebpf,
};
use shared::flow::TICK_CLOCK_MAP;

use crate::probe::bpf::{sys_bpf, CLOCK_PROG};

/// Kernel tick rates Linux is built with (CONFIG_HZ).
const KNOWN_HZ: [u64; 4] = [100, 250, 300, 1000];
/// How far apart the two readings that tell the tick rate are: long enough that ±1 tick
/// cannot make 250 look like 300.
const CALIBRATION: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum TickError {
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("reading {TICK_CLOCK_MAP}: {0}")]
    Map(#[from] aya::maps::MapError),
}

/// One reading: the tick counter and CLOCK_MONOTONIC at the same moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickNow {
    pub ticks: u64,
    pub mono_ns: u64,
    /// Nanoseconds per tick (1e9 / HZ).
    pub tick_ns: u64,
}

impl TickNow {
    /// Monotonic nanoseconds of a tick stamp, to within one tick.
    pub fn to_mono_ns(&self, ticks: u64) -> u64 {
        if ticks <= self.ticks {
            self.mono_ns
                .saturating_sub((self.ticks - ticks).saturating_mul(self.tick_ns))
        } else {
            // Stamped after this reading was taken.
            self.mono_ns
                .saturating_add((ticks - self.ticks).saturating_mul(self.tick_ns))
        }
    }
}

pub struct TickClock {
    prog: ProgramFd,
    map: Array<MapData, u64>,
    tick_ns: u64,
}

impl TickClock {
    /// Takes the clock map and a handle on the clock program from a loaded object, and
    /// measures the tick rate (takes [`CALIBRATION`]).
    pub fn take(ebpf: &mut Ebpf) -> Result<TickClock, TickError> {
        let prog = match ebpf.program(CLOCK_PROG) {
            Some(Program::Xdp(p)) => p
                .fd()
                .map_err(|_| TickError::Missing(CLOCK_PROG))?
                .try_clone()
                .map_err(|source| TickError::Io {
                    what: "duplicating the clock program's fd",
                    source,
                })?,
            _ => return Err(TickError::Missing(CLOCK_PROG)),
        };
        let map = ebpf
            .take_map(TICK_CLOCK_MAP)
            .ok_or(TickError::Missing(TICK_CLOCK_MAP))?;
        let mut clock = TickClock {
            prog,
            map: Array::try_from(map)?,
            tick_ns: 0,
        };
        let a = clock.read()?;
        std::thread::sleep(CALIBRATION);
        let b = clock.read()?;
        clock.tick_ns = tick_ns(b.0 - a.0, b.1 - a.1);
        Ok(clock)
    }

    /// The tick counter and the monotonic clock now.
    pub fn now(&self) -> Result<TickNow, TickError> {
        let (ticks, mono_ns) = self.read()?;
        Ok(TickNow {
            ticks,
            mono_ns,
            tick_ns: self.tick_ns,
        })
    }

    pub fn tick_ns(&self) -> u64 {
        self.tick_ns
    }

    fn read(&self) -> Result<(u64, u64), TickError> {
        test_run(&self.prog).map_err(|source| TickError::Io {
            what: "running the clock program (BPF_PROG_TEST_RUN)",
            source,
        })?;
        Ok((self.map.get(&0, 0)?, self.map.get(&1, 0)?))
    }
}

/// Nanoseconds per tick from `ticks` counted in `ns`: the nearest rate Linux is built with.
fn tick_ns(ticks: u64, ns: u64) -> u64 {
    let hz = ticks as f64 * 1e9 / ns.max(1) as f64;
    let nearest = KNOWN_HZ
        .iter()
        .copied()
        .min_by(|a, b| (*a as f64 - hz).abs().total_cmp(&(*b as f64 - hz).abs()))
        .unwrap_or(250);
    1_000_000_000 / nearest
}

/// BPF_PROG_TEST_RUN of an XDP program on a minimal frame (aya offers test runs only through
/// the `Ebpf` that owns the program; the agent keeps just a duplicate of its fd).
fn test_run(prog: &ProgramFd) -> std::io::Result<()> {
    // The test-run part of `union bpf_attr` (include/uapi/linux/bpf.h).
    #[repr(C)]
    #[derive(Default)]
    struct TestRunAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    // XDP test runs want at least an Ethernet header.
    let frame = [0u8; 14];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_fd().as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: the test-run attr layout, pointing at a buffer live for the call.
    unsafe { sys_bpf(BPF_PROG_TEST_RUN, &mut attr) }.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_rate_snaps_to_a_known_hz() {
        assert_eq!(tick_ns(25, 100_000_000), 4_000_000);
        assert_eq!(tick_ns(26, 100_000_000), 4_000_000);
        assert_eq!(tick_ns(30, 100_000_000), 3_333_333);
        assert_eq!(tick_ns(100, 100_000_000), 1_000_000);
        assert_eq!(tick_ns(11, 100_000_000), 10_000_000);
    }

    #[test]
    fn ticks_convert_both_sides_of_the_reading() {
        let now = TickNow {
            ticks: 1_000,
            mono_ns: 50_000_000_000,
            tick_ns: 4_000_000,
        };
        assert_eq!(now.to_mono_ns(1_000), 50_000_000_000);
        assert_eq!(now.to_mono_ns(750), 49_000_000_000);
        assert_eq!(now.to_mono_ns(1_001), 50_004_000_000);
        assert_eq!(now.to_mono_ns(0), 46_000_000_000);
    }
}
