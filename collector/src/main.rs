//! `edgeflow-collector`: wires the collector's modules to the command line.

use anyhow::Context;
use collector::{
    broker,
    config::{Cli, Config},
    http,
    ingest::{Ingest, IngestStats},
    mqtt,
    rate::RateTracker,
    server, store, UsageError,
};
use std::{process::ExitCode, sync::Arc, time::Duration};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli: Cli = argh::from_env();
    if cli.version {
        println!("edgeflow-collector {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let result = Config::resolve(cli, |k| std::env::var(k).ok())
        .map_err(anyhow::Error::from)
        .and_then(run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgeflow-collector: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn run(cfg: Config) -> anyhow::Result<()> {
    // rustls needs one crypto provider for the process; ring, as in the agent.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(cfg))
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    // The PostgreSQL client runs a runtime of its own: not on a tokio worker.
    let db = cfg.db.clone();
    let store = tokio::task::spawn_blocking(move || store::open(&db))
        .await
        .context("opening the store")?
        .with_context(|| format!("opening {}", cfg.db))?;
    let stats = Arc::new(IngestStats::default());
    let rates = Arc::new(RateTracker::default());
    if let Some(addr) = cfg.embedded_broker {
        let b = &cfg.mqtt.broker;
        let auth = b
            .username
            .clone()
            .map(|u| (u, b.password.clone().unwrap_or_default()));
        broker::start(addr, auth).map_err(|e| UsageError(e.to_string()))?;
        println!("edgeflow-collector: embedded MQTT broker on mqtt://{addr}");
        log::warn!(
            "the embedded broker (rumqttd) acknowledges a publish once it is in its memory: a \
             collector crash loses what it acknowledged and had not stored yet, and it has no \
             per-device ACL. Use Mosquitto (configs/mosquitto.conf, as scripts/demo.sh does) \
             where that matters."
        );
    }
    let opts = mqtt::options(&cfg.mqtt)?;
    let filters = mqtt::filters(&cfg.mqtt);
    let listener = tokio::net::TcpListener::bind(cfg.http)
        .await
        .map_err(|e| UsageError(format!("cannot listen on {}: {e}", cfg.http)))?;
    let local = listener.local_addr()?;
    println!(
        "edgeflow-collector: storing in {}, reading {} as {}{}",
        cfg.db,
        cfg.mqtt.broker.url,
        cfg.mqtt.client_id,
        cfg.mqtt
            .share_group
            .as_ref()
            .map_or(String::new(), |g| format!(" in share group {g}"))
    );
    println!("edgeflow-collector: dashboard http://{local}/");

    let sampler = {
        let (stats, rates) = (stats.clone(), rates.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                rates.sample(&stats);
            }
        })
    };
    let mut ingest = Ingest::new(store, stats.clone(), cfg.retention);
    if let Some(s) = &cfg.ipfix {
        let e = shared::ipfix::export::Exporter::new(s.clone())
            .map_err(|e| UsageError(format!("--ipfix-export: {e}")))?;
        println!(
            "edgeflow-collector: re-exporting stored flows as IPFIX to {}",
            e.collector()
        );
        ingest = ingest.export_ipfix(e);
    }
    let subscriber = tokio::spawn(mqtt::run(
        opts,
        filters,
        ingest,
        cfg.limits.ingest_queue_bytes,
    ));
    let app = Arc::new(http::App::new(
        cfg.db.clone(),
        stats.clone(),
        rates,
        cfg.token.clone(),
        &cfg.limits,
    ));
    server::run(listener, http::router(app), &cfg.limits, shutdown()).await;
    // Unacknowledged messages stay with the broker (persistent session) for the next start.
    subscriber.abort();
    sampler.abort();
    println!(
        "edgeflow-collector: stopped; stored {} summaries ({} duplicates dropped) since the start",
        stats.summaries.load(std::sync::atomic::Ordering::Relaxed),
        stats.duplicates.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
