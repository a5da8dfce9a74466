//! The embedded eBPF object and loading it with the run's settings.

use aya::{
    maps::{Array, MapData},
    programs::{ProgramError, SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
use aya_log::EbpfLogger;
use shared::{
    cpu::{Settings, SlotBytes, CPU_SLOTS_MAP},
    flow::{FLOWS_MAP, HELD_MAP, HOPS_MAP},
    rtt::PENDING_MAP,
    table::{HashKey, TableShape},
};
use std::time::Duration;

use crate::probe::owner::{self, OwnerOptions};

/// The object built from `edge-ebpf/` by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/edgeflow.bpf.o"));

pub const XDP_PROG: &str = "edgeflow_xdp";
/// The TC program for ingress (where XDP is not used).
pub const TC_PROG: &str = "edgeflow_tc";
/// The TC program for egress: a separate entry point because RTT tracking needs to know
/// which way a packet goes.
pub const TC_EGRESS_PROG: &str = "edgeflow_tc_egress";
/// Never attached: reads the kernel's tick counter for [`crate::probe::ticks::TickClock`].
pub const CLOCK_PROG: &str = "edgeflow_clock";

/// Settings fixed at load time.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Flows the table is sized for (`shared::table::TableShape::for_flows`).
    pub max_flows: u32,
    /// 1-in-N packet sampling (1: every packet).
    pub sample_every: u32,
    /// TCP RTT tracking; `None` turns it off.
    pub rtt: Option<RttOptions>,
    /// TCP health (retransmissions, RST/FIN/SYN counts: `shared::conn`); off costs one test of
    /// a setting per TCP packet.
    pub tcp_health: bool,
    /// Who sent it (`shared::owner`); `None`: off, which the verifier compiles out.
    pub owner: Option<OwnerOptions>,
    /// DNS over UDP port 53 (`shared::dns`); off costs one test of a setting per UDP packet.
    pub dns: bool,
}

/// How TCP round-trip times are sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttOptions {
    /// At most one timestamp sample per flow per this interval.
    pub interval: Duration,
}

impl Default for RttOptions {
    fn default() -> RttOptions {
        RttOptions {
            interval: Duration::from_nanos(shared::rtt::DEFAULT_INTERVAL_NS),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this binary carries no eBPF object (it was built with EDGEFLOW_SKIP_BPF)")]
    NoObject,
    #[error("loading the eBPF object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error(
        "the verifier rejected {program}: {io_error}\n--- verifier log (last lines) ---\n{tail}"
    )]
    Verifier {
        program: &'static str,
        io_error: std::io::Error,
        tail: String,
    },
    #[error("reading the possible CPUs ({path}): {source}")]
    Cpus {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("drawing the flow table's hash key from the OS (getrandom): {0}")]
    Random(std::io::Error),
    #[error("writing the settings into each CPU's slot ({CPU_SLOTS_MAP}): {0}")]
    Settings(#[from] aya::maps::MapError),
    #[error("loading {program}: {source}")]
    Program {
        program: &'static str,
        source: ProgramError,
    },
}

/// Loaded programs and maps, not yet attached anywhere.
pub struct Loaded {
    pub ebpf: Ebpf,
    /// Forwards the programs' aya-log records to the `log` crate; `flush` it now and then.
    pub logger: Option<EbpfLogger<&'static dyn log::Log>>,
    /// What loading took.
    pub report: LoadReport,
}

/// What loading the programs took: time, the verifier's work, JIT or interpreter.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub elapsed: Duration,
    /// Per attachable program: name, instructions the verifier processed (Linux 5.16+),
    /// bytes of JIT-compiled code (0: the interpreter runs it).
    pub programs: Vec<(&'static str, Option<u32>, u32)>,
    /// Owner programs that did not load, and why (owners then come from the packet programs
    /// alone: cgroup ids and MACs).
    pub owner_unavailable: Vec<String>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "programs loaded in {:.1} s", self.elapsed.as_secs_f64())?;
        for (name, verified, jited) in &self.programs {
            let v = verified.map_or("?".to_string(), |v| v.to_string());
            let how = if *jited > 0 { "JIT" } else { "interpreter" };
            write!(f, "; {name}: {v} instructions verified, {how}")?;
        }
        Ok(())
    }
}

impl Loaded {
    /// Moves pending log records from the programs to the log.
    pub fn flush_log(&mut self) {
        if let Some(l) = &mut self.logger {
            l.flush();
        }
    }
}

/// Loads the object and both programs into the kernel (verifier included).
pub fn load(opts: LoadOptions) -> Result<Loaded, LoadError> {
    load_object(OBJECT, opts)
}

/// [`load`] of another build of the programs (the benchmark compares two builds this way).
pub fn load_object(object: &[u8], opts: LoadOptions) -> Result<Loaded, LoadError> {
    if object.is_empty() {
        return Err(LoadError::NoObject);
    }
    let shape = TableShape::for_flows(opts.max_flows, random_key()?);
    let settings = Settings {
        rtt_interval_us: opts
            .rtt
            .unwrap_or_default()
            .interval
            .as_micros()
            .min(u32::MAX as u128) as u32,
        sample_every: opts.sample_every.max(1),
        rtt_on: opts.rtt.is_some() as u16,
        tcp_health: opts.tcp_health as u8,
        dns: opts.dns as u8,
        slot_mask: shape.mask(),
    };
    let started = std::time::Instant::now();
    let cpus = aya::util::nr_cpus().map_err(|(path, source)| LoadError::Cpus { path, source })?;
    let mut loader = EbpfLoader::new();
    for (map, entries) in owner::map_sizes(opts.owner, shape.slots) {
        loader.map_max_entries(map, entries);
    }
    let owner_on = opts.owner.is_some() as u8;
    let mut ebpf = loader
        .override_global(shared::owner::OWNER_ON_GLOBAL, &owner_on, false)
        .map_max_entries(CPU_SLOTS_MAP, cpus as u32)
        .map_max_entries(FLOWS_MAP, shape.slots)
        .map_max_entries(HELD_MAP, shape.held_words())
        .map_max_entries(HOPS_MAP, shape.slots)
        // One pending timestamp per flow is the common case.
        .map_max_entries(PENDING_MAP, opts.max_flows)
        .load(object)?;
    write_settings(&mut ebpf, settings, shape.key)?;
    let logger = match EbpfLogger::init(&mut ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            log::warn!("program log not available: {e}");
            None
        }
    };
    load_program::<Xdp>(&mut ebpf, XDP_PROG)?;
    load_program::<SchedClassifier>(&mut ebpf, TC_PROG)?;
    load_program::<SchedClassifier>(&mut ebpf, TC_EGRESS_PROG)?;
    // Builds before it (the benchmark's A/B runs load them) lack it; the agent's
    // `TickClock::take` names it when it is missing.
    if ebpf.program(CLOCK_PROG).is_some() {
        load_program::<Xdp>(&mut ebpf, CLOCK_PROG)?;
    }
    let owner_unavailable = if opts.owner.is_some() {
        owner::load_programs(&mut ebpf)
    } else {
        Vec::new()
    };
    let mut report = LoadReport {
        elapsed: started.elapsed(),
        programs: Vec::new(),
        owner_unavailable,
    };
    for name in [XDP_PROG, TC_PROG, TC_EGRESS_PROG] {
        if let Some(info) = ebpf.program(name).and_then(|p| p.info().ok()) {
            report
                .programs
                .push((name, info.verified_instruction_count(), info.size_jitted()));
        }
    }
    Ok(Loaded {
        ebpf,
        logger,
        report,
    })
}

/// A key for the table's hash, 128 bits from the OS's randomness (getrandom(2)), drawn at
/// every load: a key that outlived a restart could be learnt from one run and used on the
/// next.
fn random_key() -> Result<HashKey, LoadError> {
    let mut b = [0u8; 16];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: writes at most the rest of `b`.
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(LoadError::Random(e));
        }
        got += n as usize;
    }
    let (lo, hi) = b.split_at(8);
    Ok([
        u64::from_ne_bytes(lo.try_into().expect("8 bytes")),
        u64::from_ne_bytes(hi.try_into().expect("8 bytes")),
    ])
}

/// Writes `settings` into every CPU's slot, the rest zeroed: before any program is attached,
/// so no packet is counted into a slot this overwrites. Builds before the CPU slots (the
/// benchmark's A/B runs load them) have none and run on their built-in defaults.
fn write_settings(ebpf: &mut Ebpf, settings: Settings, key: HashKey) -> Result<(), LoadError> {
    let Some(map) = ebpf.map_mut(CPU_SLOTS_MAP) else {
        return Ok(());
    };
    let mut slots: Array<&mut MapData, SlotBytes> = Array::try_from(map)?;
    let slot = SlotBytes::with_settings(settings, key);
    for cpu in 0..slots.len() {
        slots.set(cpu, slot, 0)?;
    }
    Ok(())
}

trait Loadable {
    fn load_it(&mut self) -> Result<(), ProgramError>;
}
impl Loadable for Xdp {
    fn load_it(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}
impl Loadable for SchedClassifier {
    fn load_it(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}

fn load_program<P>(ebpf: &mut Ebpf, name: &'static str) -> Result<(), LoadError>
where
    P: Loadable,
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(LoadError::Program {
        program: name,
        source: ProgramError::NotLoaded,
    })?;
    let prog: &mut P = prog.try_into().map_err(|source| LoadError::Program {
        program: name,
        source,
    })?;
    match prog.load_it() {
        Ok(()) => Ok(()),
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => Err(LoadError::Verifier {
            program: name,
            io_error,
            tail: tail(&verifier_log.to_string(), 60),
        }),
        Err(source) => Err(LoadError::Program {
            program: name,
            source,
        }),
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn xdp(ebpf: &mut Ebpf) -> &mut Xdp {
    ebpf.program_mut(XDP_PROG)
        .and_then(|p| p.try_into().ok())
        .expect("XDP program loaded by bpf::load")
}

/// The TC ingress program.
pub fn tc(ebpf: &mut Ebpf) -> &mut SchedClassifier {
    ebpf.program_mut(TC_PROG)
        .and_then(|p| p.try_into().ok())
        .expect("TC program loaded by bpf::load")
}

pub fn tc_egress(ebpf: &mut Ebpf) -> &mut SchedClassifier {
    ebpf.program_mut(TC_EGRESS_PROG)
        .and_then(|p| p.try_into().ok())
        .expect("TC egress program loaded by bpf::load")
}

/// bpf(2) with one of the attribute structs of `union bpf_attr`, for the commands the agent
/// issues itself (the tick clock's test run): aya offers them only on handles it owns.
/// Returns the call's result.
///
/// # Safety
/// `attr` must have the layout `cmd` reads, and every pointer in it must be valid for the call.
pub(crate) unsafe fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: the caller's guarantee; the size passed is the struct's.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\nd", 2), "c\nd");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    fn object_is_embedded() {
        // An ELF file for BPF (e_machine 247), unless the build skipped it on purpose.
        if option_env!("EDGEFLOW_SKIP_BPF").is_none() {
            assert_eq!(&OBJECT[..4], b"\x7fELF");
            assert_eq!(u16::from_le_bytes([OBJECT[18], OBJECT[19]]), 247);
        }
    }
}
