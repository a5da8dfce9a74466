//! `edgeflow run`: the daemon. Every interval: drain the table, build the summary, spool it and
//! let the MQTT link publish it, and/or send its flows as IPFIX (`[ipfix]`, docs/ipfix.md).
//! SIGTERM/SIGINT: one last window, flush (bounded), detach, exit.
//!
//! smol drives this loop (the interval timer, the signals, the link's wake-ups); the MQTT
//! connection is polled on its own thread (see [`crate::link::mqtt`]).

use crate::{
    cmd::config::Config,
    link::{
        mqtt::{self, LinkEvent, Publisher},
        spool::{self, OpenError, Spool},
    },
    probe::{self, caps, Session},
    report::{
        health::{AgentState, HealthMeter},
        summary::{self, Identity},
    },
    UsageError,
};
use anyhow::Context;
use shared::ipfix::export::Exporter;
use smol::{future::FutureExt, Async, Timer};
use std::{
    os::unix::net::UnixStream,
    time::{Duration, Instant},
};

/// How long a stopping agent waits for the broker to acknowledge what is spooled.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Run-time options that are not configuration.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Stop after this many windows (tests, benchmarks).
    pub count: Option<u64>,
}

enum Wake {
    Tick,
    Signal,
    Link(LinkEvent),
}

/// The spool the configuration asks for, with what a previous run left in it.
pub fn open_spool(cfg: &Config) -> anyhow::Result<Spool> {
    match &cfg.spool_file {
        None => Ok(Spool::memory(cfg.spool_max_bytes)),
        Some(p) => {
            let (s, rec) = match Spool::open(p, cfg.spool_max_bytes) {
                Ok(r) => r,
                // Another agent has it: the operator's to sort out (exit 2).
                Err(e @ OpenError::Locked { .. }) => {
                    return Err(UsageError::Invalid(e.to_string()).into())
                }
                // Its disk is failing: count on, in memory, rather than fail at every restart.
                Err(OpenError::Io(e)) if spool::is_disk_error(&e) => {
                    log::warn!(
                        "spool {}: cannot be opened ({e}); keeping the spool in memory for \
                         this run (up to {} bytes, not kept across a restart)",
                        p.display(),
                        cfg.spool_max_bytes
                    );
                    return Ok(Spool::unopened(cfg.spool_max_bytes));
                }
                Err(OpenError::Io(e)) => {
                    return Err(e).with_context(|| format!("spool file {}", p.display()))
                }
            };
            if rec.records > 0 {
                eprintln!(
                    "edgeflow: spool {}: {} summaries from the last run to send",
                    p.display(),
                    rec.records
                );
            }
            // Corruption is reported and survived: the good records are kept, the rest is
            // set aside for a post-mortem.
            match &rec.set_aside {
                None => {}
                Some(Ok(aside)) => eprintln!(
                    "edgeflow: spool {}: {} bytes were not whole records (torn or corrupted); \
                     set aside in {}",
                    p.display(),
                    rec.torn_bytes,
                    aside.display()
                ),
                Some(Err(e)) => eprintln!(
                    "edgeflow: spool {}: {} bytes were not whole records (torn or corrupted); \
                     dropped, could not set them aside ({e})",
                    p.display(),
                    rec.torn_bytes
                ),
            }
            Ok(s)
        }
    }
}

pub fn run(cfg: &Config, opts: RunOptions) -> anyhow::Result<()> {
    let probe_opts = cfg.probe();
    let checked = probe::check(&probe_opts)?;
    let mqtt_opts = cfg
        .broker
        .as_ref()
        .map(|b| mqtt::options(cfg, b))
        .transpose()?;
    let ident = Identity {
        device: cfg.id.device_id().clone(),
        site: cfg.id.site_id().clone(),
        boot_id: summary::boot_id().context("reading /dev/urandom")?,
        sample_every: cfg.sample_every,
    };
    let spool = open_spool(cfg)?;
    // Signals go to a socket smol can wait on (installed before anything needs cleaning up).
    let (sig_rx, sig_tx) = UnixStream::pair()?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::low_level::pipe::register(sig, sig_tx.try_clone()?)?;
    }

    // Detached when dropped: on return, also with an error.
    let mut session = checked.start()?;
    session.set_reattach(cfg.reattach);
    // Before any other thread starts (the reactor's, the MQTT one): they inherit these sets.
    let kept = session
        .drop_privileges()
        .context("giving up capabilities after attaching")?;
    eprintln!(
        "edgeflow: attached; capabilities kept: {}",
        match caps::names(kept) {
            n if n.is_empty() => "none".to_string(),
            n => format!("{} (attaching again, detaching)", n.join(", ")),
        }
    );
    let sig_rx = start_reactor(sig_rx)?;
    let publisher = match mqtt_opts {
        Some(o) => Some(Publisher::start(cfg, o, spool).context("spawning the MQTT thread")?),
        None => None,
    };
    let exporter = match &cfg.ipfix {
        Some(s) => Some(Exporter::new(s.clone()).context("IPFIX")?),
        None => None,
    };
    let mut to = Vec::new();
    if let Some(b) = &cfg.broker {
        to.push(format!("{} ({})", b.url, cfg.id.flows_topic()));
    }
    if let Some(e) = &exporter {
        to.push(format!(
            "IPFIX {} (observation domain {})",
            e.collector(),
            shared::ipfix::domain_id(cfg.id.site(), cfg.id.device())
        ));
    }
    eprintln!(
        "edgeflow: ready: device {} site {} boot {:016x}, a window every {:?} to {}",
        cfg.id.device(),
        cfg.id.site(),
        ident.boot_id,
        cfg.interval,
        to.join(" and ")
    );
    smol::block_on(agent_loop(
        cfg,
        opts,
        &ident,
        &mut session,
        Links {
            publisher,
            exporter,
        },
        sig_rx,
    ))
}

/// Where windows go: MQTT, IPFIX or both (the configuration has at least one).
struct Links {
    publisher: Option<Publisher>,
    exporter: Option<Exporter>,
}

async fn agent_loop(
    cfg: &Config,
    opts: RunOptions,
    ident: &Identity,
    session: &mut Session,
    links: Links,
    mut signals: Async<UnixStream>,
) -> anyhow::Result<()> {
    let Links {
        publisher,
        mut exporter,
    } = links;
    let mut meter = HealthMeter::start(session.maps().table.capacity);
    let mut seq = 0u64;
    let mut next = Instant::now() + cfg.interval;
    let none_left = loop {
        let wake = async {
            Timer::at(next).await;
            Wake::Tick
        }
        .or(async {
            let mut b = [0u8; 16];
            let _ = smol::io::AsyncReadExt::read(&mut signals, &mut b).await;
            Wake::Signal
        })
        .or(async {
            match publisher.as_ref().map(|p| &p.events) {
                Some(events) => match events.recv().await {
                    Ok(e) => Wake::Link(e),
                    // The link thread is gone; keep ticking.
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        })
        .await;
        let last = match wake {
            Wake::Link(LinkEvent::Disconnected(why)) => {
                log::debug!("link down: {why}");
                continue;
            }
            Wake::Link(_) => continue,
            Wake::Tick => false,
            Wake::Signal => true,
        };
        let w = session.next_window()?;
        if w.clock_step_ms != 0 {
            log::warn!(
                "the wall clock was stepped by {:+} ms during window {seq}; its length is \
                 measured on CLOCK_BOOTTIME and stays {} ms",
                w.clock_step_ms,
                w.window_end_ms - w.window_start_ms
            );
        }
        let health = meter.window(
            &w,
            AgentState {
                spool: publisher
                    .as_ref()
                    .map(|p| p.spool_stats())
                    .unwrap_or_default(),
                reattached: session.reattached(),
            },
        );
        let s = summary::summarize(ident, seq, &w, health, cfg.top_k as usize);
        drop(w);
        if let Some(e) = &mut exporter {
            // The summary's own records: IPFIX carries what MQTT carries (docs/ipfix.md).
            let flows: Vec<_> = s.to_flows().collect();
            let before = e.lost_records();
            if let Err(err) =
                e.export_device(cfg.id.site(), cfg.id.device(), s.sample_every, &flows)
            {
                log::warn!(
                    "{err}: {} flow records lost ({} since start)",
                    e.lost_records() - before,
                    e.lost_records()
                );
            }
        }
        if let Some(publisher) = &publisher {
            let parts = summary::encode_parts(s, cfg.max_message_bytes)?;
            for p in &parts {
                let lost = publisher.push(p).context("spooling a summary")?;
                if lost > 0 {
                    log::warn!("spool full: dropped the {lost} oldest summaries");
                }
            }
        }
        release_free_memory();
        seq += 1;
        // The next window ends one interval after this one was due (no drift); if draining
        // fell behind, the next one is due an interval from now.
        next += cfg.interval;
        if next < Instant::now() {
            next = Instant::now() + cfg.interval;
        }
        // With no interface left, this was the last window: it is still sent.
        let none_left = session.check_ifaces().err();
        if last || none_left.is_some() || opts.count.is_some_and(|c| seq >= c) {
            break none_left;
        }
    };
    if let Some(publisher) = publisher {
        flush(&publisher, SHUTDOWN_GRACE).await;
        let file = publisher.spool_is_file();
        let waiting = publisher.shutdown(Duration::from_secs(2)).await;
        if waiting > 0 {
            if file {
                eprintln!(
                    "edgeflow: {waiting} summaries stay in the spool file for the next start"
                );
            } else {
                eprintln!(
                    "edgeflow: {waiting} summaries were not acknowledged and are lost (no spool file)"
                );
            }
        }
    }
    match none_left {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Registers the signal socket with smol's reactor, which starts the reactor's thread on
/// first use: started after the capabilities were given up, so it inherits the reduced sets.
/// async-io panics when it cannot start that thread (out of tasks); that is a runtime failure
/// here (exit 1, programs detached), not a panic.
fn start_reactor(sig_rx: UnixStream) -> anyhow::Result<Async<UnixStream>> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(move || Async::new(sig_rx));
    std::panic::set_hook(hook);
    match r {
        Ok(a) => Ok(a?),
        Err(p) => {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            anyhow::bail!("starting the event reactor: {why}")
        }
    }
}

/// Gives the window's transient buffers (the drained flows, the summary, its encoding) back to
/// the kernel. glibc keeps freed heap memory for reuse, so without this the RSS stays at the
/// high-water mark of the busiest window; returning it costs well under a millisecond.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Waits until the spool is empty, the link is down, or `grace` has passed.
async fn flush(publisher: &Publisher, grace: Duration) {
    let deadline = Instant::now() + grace;
    while publisher.spool_stats().depth > 0 && publisher.is_connected() && Instant::now() < deadline
    {
        let _ = async {
            let _ = publisher.events.recv().await;
        }
        .or(async {
            Timer::after(Duration::from_millis(50)).await;
        })
        .await;
    }
}
