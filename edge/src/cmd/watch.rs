//! `edgeflow watch`: attach, and every interval print the flows active in it.

use crate::probe::{self, ProbeOptions};
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
    pub probe: ProbeOptions,
    pub interval: Duration,
    /// Stop after this many windows.
    pub count: Option<u64>,
    pub json: bool,
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
    let checked = probe::check(&opts.probe)?;
    let stop = stop_flag()?;
    let mut session = checked.start()?;
    eprintln!("edgeflow: ready, a window every {:?}", opts.interval);
    let mut windows = 0u64;
    loop {
        let deadline = Instant::now() + opts.interval;
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20).min(deadline - Instant::now()));
            session.flush_log();
        }
        let w = session.next_window()?;
        if opts.json {
            writeln!(out, "{}", w.to_json())?;
        } else {
            writeln!(out, "{}", w.render_table(50))?;
        }
        out.flush()?;
        session.check_ifaces()?;
        windows += 1;
        if stop.load(Ordering::Relaxed) || opts.count.is_some_and(|c| windows >= c) {
            return Ok(());
        }
    }
}
