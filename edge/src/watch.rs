//! `edgeflow watch`: attach, and every interval print the flows active in it.

use crate::{
    attach::{self, AttachMode, Attachment},
    bpf::{self, LoadOptions, RttOptions},
    caps,
    drain::{Drainer, Expiry},
    ifstate::IfaceStates,
    kernel::{self, Kernel},
    table::FlowTable,
    UsageError,
};
use shared::flow::{MAX_MAX_FLOWS, MIN_MAX_FLOWS};
use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

#[derive(Clone, Debug)]
pub struct WatchOptions {
    pub ifaces: Vec<String>,
    /// Network namespace the interfaces are in (`ip netns` name or a path); `None`: ours.
    pub netns: Option<String>,
    pub interval: Duration,
    /// Stop after this many windows.
    pub count: Option<u64>,
    pub json: bool,
    pub max_flows: u32,
    pub attach: AttachMode,
    pub sample_every: u32,
    /// TCP RTT tracking; `None`: off.
    pub rtt: Option<RttOptions>,
    pub expiry: Expiry,
}

/// Checks what the user can fix before anything is loaded, the kernel last: what it offers.
pub fn validate(
    max_flows: u32,
    ifaces: &[String],
    netns: Option<&str>,
) -> Result<Kernel, UsageError> {
    if !(MIN_MAX_FLOWS..=MAX_MAX_FLOWS).contains(&max_flows) {
        return Err(UsageError::TableSize {
            got: max_flows,
            min: MIN_MAX_FLOWS,
            max: MAX_MAX_FLOWS,
        });
    }
    crate::netdev::in_netns(netns, || attach::check_interfaces(ifaces))??;
    caps::check()?;
    let k = kernel::check()?;
    if let Some(f) = k.fallbacks() {
        eprintln!("edgeflow: kernel {}: {f}", kernel::release());
    }
    Ok(k)
}

/// A flag raised by SIGINT or SIGTERM.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

/// Loads, attaches, and prints windows until `count` or a signal; detaches before returning.
pub fn run(opts: &WatchOptions, out: &mut impl Write) -> anyhow::Result<()> {
    let kernel = validate(opts.max_flows, &opts.ifaces, opts.netns.as_deref())?;
    let stop = stop_flag()?;
    let mut loaded = bpf::load(LoadOptions {
        max_flows: opts.max_flows,
        sample_every: opts.sample_every,
        rtt: opts.rtt,
    })?;
    eprintln!("edgeflow: {}", loaded.report);
    let table = FlowTable::take(&mut loaded.ebpf)?;
    eprintln!("edgeflow: {}", table.describe());
    let mut attached: Vec<Attachment> = Vec::new();
    let result = (|| {
        // Before attaching: the baseline is then the empty table and zeroed counters. Taken
        // while packets flow, a packet counted between its two reads (flows, then counters)
        // would be in the flows' deltas and not in the counters', for good.
        let mut drainer = Drainer::new(table, opts.expiry)?;
        attach::attach_all(
            &mut loaded.ebpf,
            &opts.ifaces,
            opts.netns.as_deref(),
            opts.attach,
            attach::Hooks::new(kernel.tcx, kernel.xdp_link),
            &mut attached,
        )?;
        let mut ifaces = IfaceStates::new(&attached, opts.netns.as_deref());
        eprintln!("edgeflow: ready, a window every {:?}", opts.interval);
        let mut windows = 0u64;
        loop {
            let deadline = Instant::now() + opts.interval;
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20).min(deadline - Instant::now()));
                loaded.flush_log();
            }
            let w = drainer.drain()?;
            if opts.json {
                writeln!(out, "{}", w.to_json())?;
            } else {
                writeln!(out, "{}", w.render_table(50))?;
            }
            out.flush()?;
            ifaces.check()?;
            windows += 1;
            if stop.load(Ordering::Relaxed) || opts.count.is_some_and(|c| windows >= c) {
                return Ok(());
            }
        }
    })();
    loaded.flush_log();
    attach::detach_all(loaded, &attached, opts.netns.as_deref());
    eprintln!("edgeflow: detached");
    result
}
