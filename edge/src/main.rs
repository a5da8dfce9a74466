//! The `edgeflow` command: wires the agent's modules to the command line.

use anyhow::Context;
use argh::FromArgs;
use edge::{
    attach::AttachMode,
    bpf::RttOptions,
    drain::Expiry,
    watch::{self, WatchOptions},
    UsageError,
};
use std::{process::ExitCode, time::Duration};

/// edgeflow: counts every packet into a kernel flow table and reports the flows.
#[derive(FromArgs)]
struct Cli {
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Watch(WatchCmd),
}

/// Attach to interfaces and print the flows of every interval.
#[derive(FromArgs)]
#[argh(subcommand, name = "watch")]
struct WatchCmd {
    /// interface to attach to (repeat for several)
    #[argh(option)]
    iface: Vec<String>,
    /// network namespace the interfaces live in (name under /var/run/netns, or a path)
    #[argh(option)]
    netns: Option<String>,
    /// seconds per window (default 10; fractions allowed)
    #[argh(option, default = "10.0")]
    interval: f64,
    /// stop after this many windows
    #[argh(option)]
    count: Option<u64>,
    /// one JSON object per window on stdout
    #[argh(switch)]
    json: bool,
    /// flow table entries (default 16384)
    #[argh(option, default = "shared::flow::DEFAULT_MAX_FLOWS")]
    max_flows: u32,
    /// ingress hook: auto, xdp or tc (default auto: chosen per interface)
    #[argh(option, default = "AttachMode::Auto")]
    attach: AttachMode,
    /// count 1 in N packets (default 1: every packet)
    #[argh(option, default = "1")]
    sample: u32,
    /// seconds without a packet before a flow leaves the table (default 60)
    #[argh(option, default = "60.0")]
    inactive_timeout: f64,
    /// milliseconds between two TCP timestamp RTT samples of one flow (default 100)
    #[argh(option, default = "100.0")]
    rtt_interval: f64,
    /// do not measure TCP round-trip times
    #[argh(switch)]
    no_rtt: bool,
}

fn secs(name: &str, v: f64) -> Result<Duration, UsageError> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(UsageError::Invalid(format!(
            "--{name} must be a positive number of seconds"
        )))
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.version {
        println!("edgeflow {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    match cli.cmd {
        None => Err(UsageError::Invalid("no command given; see --help".into()).into()),
        Some(Cmd::Watch(w)) => {
            if w.sample == 0 {
                return Err(UsageError::Invalid("--sample must be at least 1".into()).into());
            }
            let opts = WatchOptions {
                ifaces: w.iface,
                netns: w.netns,
                interval: secs("interval", w.interval)?,
                count: w.count,
                json: w.json,
                max_flows: w.max_flows,
                attach: w.attach,
                sample_every: w.sample,
                rtt: if w.no_rtt {
                    None
                } else if w.rtt_interval.is_finite() && w.rtt_interval >= 0.0 {
                    Some(RttOptions {
                        interval: Duration::from_secs_f64(w.rtt_interval / 1000.0),
                    })
                } else {
                    return Err(UsageError::Invalid(
                        "--rtt-interval must be a number of milliseconds, 0 or more".into(),
                    )
                    .into());
                },
                expiry: Expiry {
                    inactive: secs("inactive-timeout", w.inactive_timeout)?,
                    ..Expiry::default()
                },
            };
            let stdout = std::io::stdout();
            watch::run(&opts, &mut stdout.lock()).context("watch")
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().collect();
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let cli = match Cli::from_args(&strs[..1], &strs[1..]) {
        Ok(c) => c,
        Err(early) => {
            return if early.status.is_ok() {
                println!("{}", early.output);
                ExitCode::SUCCESS
            } else {
                eprintln!("{}", early.output);
                ExitCode::from(2)
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgeflow: error: {e:#}");
            if e.chain().any(|c| c.downcast_ref::<UsageError>().is_some()) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
