//! `edgeflow-loadgen`: simulates a fleet of devices publishing real summaries (see
//! `collector::loadgen`); prints what the broker acknowledged, one JSON line per device.

use argh::FromArgs;
use collector::loadgen::{self, Device, Plan};
use shared::{broker::Broker, identity::DeviceId};
use std::{path::PathBuf, process::ExitCode, time::Duration};

/// edgeflow-loadgen: N simulated devices, each its own MQTT login, boot id and gapless seq,
/// publishing Message::V3 summaries with QoS 1; prints per device what was acknowledged.
#[derive(FromArgs)]
struct Cli {
    /// broker URL, mqtt://HOST[:PORT] or mqtts://HOST[:PORT]
    #[argh(option)]
    broker: String,
    /// CA certificate (PEM) of an mqtts:// broker
    #[argh(option)]
    ca: Option<PathBuf>,
    /// file of "site/device password" lines, one per device (scripts/provision.sh bulk)
    #[argh(option)]
    credentials: Option<PathBuf>,
    /// without --credentials: this many devices SITE/PREFIXn, no password
    #[argh(option, default = "10")]
    devices: u32,
    /// without --credentials: their site (default sim)
    #[argh(option, default = "String::from(\"sim\")")]
    site: String,
    /// without --credentials: device name prefix (default dev)
    #[argh(option, default = "String::from(\"dev\")")]
    prefix: String,
    /// windows per device (default 10)
    #[argh(option, default = "10")]
    windows: u64,
    /// milliseconds between a device's windows (default 1000)
    #[argh(option, default = "1000")]
    interval_ms: u64,
    /// fewest flows in a window (default 50)
    #[argh(option, default = "50")]
    flows_min: u32,
    /// most flows in a window (default 2000)
    #[argh(option, default = "2000")]
    flows_max: u32,
    /// flow records per window at most, the rest folded into "other" (default 1024)
    #[argh(option, default = "1024")]
    top_k: u32,
    /// seed for the flows (default 1)
    #[argh(option, default = "1")]
    seed: u64,
    /// TCP flows carry TCP health blocks (outcomes, retransmissions, resets)
    #[argh(switch)]
    tcp_health: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli: Cli = argh::from_env();
    let usage = |e: String| {
        eprintln!("edgeflow-loadgen: {e}");
        ExitCode::from(2)
    };
    let url = match cli.broker.parse() {
        Ok(u) => u,
        Err(e) => return usage(format!("{e}")),
    };
    let broker = match Broker::new(url, None, None, cli.ca, None, None) {
        Ok(b) => b,
        Err(e) => return usage(e.0),
    };
    let devices = match &cli.credentials {
        Some(p) => match std::fs::read_to_string(p)
            .map_err(|e| format!("{}: {e}", p.display()))
            .and_then(|t| loadgen::read_credentials(&t))
        {
            Ok(d) => d,
            Err(e) => return usage(e),
        },
        None => {
            let mut v = Vec::new();
            for i in 0..cli.devices {
                match DeviceId::new(&cli.site, &format!("{}{i}", cli.prefix)) {
                    Ok(id) => v.push(Device { id, password: None }),
                    Err(e) => return usage(e.to_string()),
                }
            }
            v
        }
    };
    if cli.flows_min > cli.flows_max || cli.interval_ms == 0 {
        return usage("flows_min must not exceed flows_max; interval_ms must be positive".into());
    }
    let plan = Plan {
        broker,
        devices,
        windows: cli.windows,
        interval: Duration::from_millis(cli.interval_ms),
        flows: (cli.flows_min, cli.flows_max),
        top_k: cli.top_k.max(1),
        max_message: shared::wire::DEFAULT_MAX_MESSAGE,
        seed: cli.seed,
        tcp_health: cli.tcp_health,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgeflow-loadgen: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let started = std::time::Instant::now();
    let acked = rt.block_on(loadgen::run(plan));
    let windows: u64 = acked.iter().map(|a| a.windows).sum();
    for a in &acked {
        println!("{}", serde_json::to_string(a).expect("serializable"));
    }
    eprintln!(
        "edgeflow-loadgen: {} devices, {windows} windows acknowledged in {:.1} s",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
