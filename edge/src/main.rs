//! The `edgeflow` command: wires the agent's modules to the command line.

use anyhow::Context;
use argh::FromArgs;
use edge::{
    cmd::{
        config::{self, Config},
        run::{self, RunOptions},
        watch::{self, WatchOptions},
    },
    probe::{attach::AttachMode, drain::Expiry, ProbeOptions},
    report::decode,
    UsageError,
};
use std::{io::Read, path::PathBuf, process::ExitCode};

/// edgeflow: counts every packet into a kernel flow table and reports the flows.
#[derive(FromArgs)]
struct Cli {
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    cmd: Option<Cmd>,
}

// Built once from the command line: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Watch(WatchCmd),
    Run(RunCmd),
    Decode(DecodeCmd),
}

/// Run the agent: a summary of the flows every interval, published over MQTT.
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
struct RunCmd {
    /// configuration file (TOML, see configs/edgeflow.toml); the flags below override it
    #[argh(option)]
    config: Option<PathBuf>,
    /// interface to attach to (repeat for several; replaces the file's list)
    #[argh(option)]
    iface: Vec<String>,
    /// network namespace the interfaces live in (name under /var/run/netns, or a path)
    #[argh(option)]
    netns: Option<String>,
    /// device id (default: the host name)
    #[argh(option)]
    device: Option<String>,
    /// site name (default "default")
    #[argh(option)]
    site: Option<String>,
    /// seconds per window (default 10; fractions allowed)
    #[argh(option)]
    interval: Option<f64>,
    /// flows the table is sized for, IPv4 and IPv6 together: twice as many slots (default 16384)
    #[argh(option)]
    max_flows: Option<u32>,
    /// flow records per summary, largest first; the rest is folded into "other" (default 1024)
    #[argh(option)]
    top_k: Option<u32>,
    /// seconds without a packet before a flow leaves the table (default 60)
    #[argh(option)]
    inactive_timeout: Option<f64>,
    /// count 1 in N packets (default 1: every packet)
    #[argh(option)]
    sample: Option<u32>,
    /// ingress hook: auto, xdp or tc
    #[argh(option)]
    attach: Option<String>,
    /// broker URL, mqtt://HOST[:PORT] or mqtts://HOST[:PORT]
    #[argh(option)]
    broker: Option<String>,
    /// also export IPFIX to udp://HOST[:PORT] or tcp://HOST[:PORT] (the file's [ipfix]
    /// collector); without a broker in the file or flags, IPFIX only
    #[argh(option)]
    ipfix: Option<String>,
    /// IPFIX: two uniflow records per flow instead of one RFC 5103 biflow (the file's
    /// [ipfix] biflow = false), for collectors without biflow support (pmacct)
    #[argh(switch)]
    ipfix_uniflow: bool,
    /// keep the spool in this file (survives a restart)
    #[argh(option)]
    spool_file: Option<PathBuf>,
    /// spool size in bytes (default 4 MiB)
    #[argh(option)]
    spool_bytes: Option<u64>,
    /// largest message in bytes; bigger windows are split into parts (default 65536)
    #[argh(option)]
    max_message: Option<usize>,
    /// stop after this many windows
    #[argh(option)]
    count: Option<u64>,
    /// milliseconds between two TCP timestamp RTT samples of one flow (default 100)
    #[argh(option)]
    rtt_interval: Option<f64>,
    /// do not measure TCP round-trip times
    #[argh(switch)]
    no_rtt: bool,
    /// do not count TCP retransmissions, resets and connection outcomes
    #[argh(switch)]
    no_tcp_health: bool,
    /// do not attach again to an interface made under a watched name after it was deleted
    #[argh(switch)]
    no_reattach: bool,
    /// seconds to wait for a deleted interface to come back when none is left (default 60)
    #[argh(option)]
    gone_wait: Option<f64>,
    /// do not record who is behind the flows (processes, services, LAN devices)
    #[argh(switch)]
    no_owner: bool,
    /// do not read DNS (queries, response codes, latency, names of UDP port-53 flows)
    #[argh(switch)]
    no_dns: bool,
}

/// Print summary payloads as JSON: one raw payload, or hex lines as
/// `mosquitto_sub -F '%t %x'` (or `-F %x`) prints them.
#[derive(FromArgs)]
#[argh(subcommand, name = "decode")]
struct DecodeCmd {
    /// file to read, or - (the default) for standard input
    #[argh(positional)]
    file: Option<String>,
}

impl RunCmd {
    fn config(self) -> Result<(Config, RunOptions), UsageError> {
        let mut f = match &self.config {
            Some(p) => config::File::load(p)?,
            None => config::File::default(),
        };
        if !self.iface.is_empty() {
            f.interfaces = Some(self.iface);
        }
        macro_rules! over {
            ($($flag:ident => $($field:ident).+),* $(,)?) => {
                $(if let Some(v) = self.$flag { f.$($field).+ = Some(v); })*
            };
        }
        over!(
            netns => netns,
            device => device,
            site => site,
            interval => interval_secs,
            max_flows => max_flows,
            top_k => top_k,
            inactive_timeout => inactive_timeout_secs,
            sample => sample_every,
            attach => attach,
            spool_file => spool.file,
            spool_bytes => spool.max_bytes,
            max_message => max_message_bytes,
            rtt_interval => rtt_interval_ms,
            gone_wait => gone_wait_secs,
        );
        if let Some(b) = self.broker {
            f.mqtt.get_or_insert_default().url = Some(b);
        }
        if let Some(c) = self.ipfix {
            f.ipfix.get_or_insert_default().collector = Some(c);
        }
        if self.ipfix_uniflow {
            f.ipfix.get_or_insert_default().biflow = Some(false);
        }
        if self.no_reattach {
            f.reattach = Some(false);
        }
        if self.no_rtt {
            f.rtt = Some(false);
        }
        if self.no_tcp_health {
            f.tcp.health = Some(false);
        }
        if self.no_owner {
            f.owner.enabled = Some(false);
        }
        if self.no_dns {
            f.dns.enabled = Some(false);
        }
        Ok((Config::resolve(f)?, RunOptions { count: self.count }))
    }
}

fn decode_cmd(d: DecodeCmd) -> anyhow::Result<()> {
    let mut input = Vec::new();
    match d.file.as_deref() {
        None | Some("-") => std::io::stdin().lock().read_to_end(&mut input).map(|_| ()),
        Some(path) => std::fs::read(path).map(|b| input = b),
    }
    .map_err(|e| {
        UsageError::Invalid(format!("reading {}: {e}", d.file.as_deref().unwrap_or("-")))
    })?;
    let mut failed = 0usize;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (at, r) in decode::decode_input(&input) {
        match r {
            Ok(m) => {
                use std::io::Write;
                serde_json::to_writer(&mut out, &m)?;
                writeln!(out)?;
            }
            Err(e) => {
                eprintln!("edgeflow: decode: {at}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} payload(s) did not decode");
    }
    Ok(())
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
    /// flows the table is sized for, IPv4 and IPv6 together: twice as many slots (default 16384)
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
    /// do not count TCP retransmissions, resets and connection outcomes
    #[argh(switch)]
    no_tcp_health: bool,
    /// do not record who is behind the flows (processes, services, LAN devices)
    #[argh(switch)]
    no_owner: bool,
    /// do not read DNS (queries, response codes, latency, names of UDP port-53 flows)
    #[argh(switch)]
    no_dns: bool,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.version {
        println!("edgeflow {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    match cli.cmd {
        None => Err(UsageError::Invalid("no command given; see --help".into()).into()),
        Some(Cmd::Watch(w)) => {
            let opts = WatchOptions {
                probe: ProbeOptions {
                    ifaces: w.iface,
                    netns: w.netns,
                    max_flows: config::max_flows(w.max_flows)?,
                    attach: w.attach,
                    sample_every: config::sample_every(w.sample, "--sample")?,
                    rtt: config::rtt_options(!w.no_rtt, Some(w.rtt_interval))?,
                    tcp_health: !w.no_tcp_health,
                    dns: !w.no_dns,
                    expiry: Expiry {
                        inactive: config::positive_secs("--inactive-timeout", w.inactive_timeout)?,
                        ..Expiry::default()
                    },
                    owner: config::owner_config(config::OwnerFile {
                        enabled: Some(!w.no_owner),
                        ..Default::default()
                    })?,
                },
                interval: config::positive_secs("--interval", w.interval)?,
                count: w.count,
                json: w.json,
            };
            let stdout = std::io::stdout();
            watch::run(&opts, &mut stdout.lock()).context("watch")
        }
        Some(Cmd::Run(r)) => {
            let (cfg, opts) = r.config()?;
            run::run(&cfg, opts).context("run")
        }
        Some(Cmd::Decode(d)) => decode_cmd(d),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().collect();
    let mut strs: Vec<&str> = args.iter().map(String::as_str).collect();
    // argh takes a lone "-" for a flag; for `decode` it means standard input, the default.
    if strs.get(1) == Some(&"decode") {
        strs.retain(|a| *a != "-");
    }
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
