//! A fleet in one process: N simulated devices, each with its own MQTT connection and
//! login (`site/device`), its own random boot id and a gapless `seq`, publishing real
//! [`Message::V3`] summaries with QoS 1 the way the agent does: a window leaves a device only
//! once the broker acknowledged every part of it, and after a lost connection the unacked
//! window is sent again (the collector drops the duplicate).
//!
//! Summaries look like an edge box's: 50..2,000 flows a window (configurable), IPv4 and IPv6,
//! the top K as records and the rest folded into `other`, split into parts below the
//! message limit like the agent splits them. What was acknowledged is counted per device, so a
//! test can compare it with what the collector's API reports.

use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use serde::Serialize;
use shared::{
    broker::Broker,
    identity::DeviceId,
    wire::{self, Addr, Count, FlowRecord, Health, Message, Owner, Summary},
};
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

/// One simulated device: who it is and how it logs in.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: DeviceId,
    pub password: Option<String>,
}

/// What the fleet does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub broker: Broker,
    pub devices: Vec<Device>,
    /// Windows per device.
    pub windows: u64,
    /// Time between a device's windows (also the windows' stamped length).
    pub interval: Duration,
    /// Flows per window, drawn uniformly from this range.
    pub flows: (u32, u32),
    /// Records per window at most; the rest are folded into `other`.
    pub top_k: u32,
    /// Largest encoded part, as the agent's `max_message_bytes`.
    pub max_message: usize,
    /// Seed for the flows (each device derives its own).
    pub seed: u64,
    /// TCP flows carry a TCP block (summary `tcp_health`): outcomes, retransmissions, RSTs.
    pub tcp_health: bool,
    /// UDP flows to port 53 carry a DNS block (summary `dns`, and the window's `dns_hist`):
    /// queries, response codes, unanswered queries, latency, names.
    pub dns: bool,
    /// Flows carry owners: the box's own outbound TCP flows a process and its service, its
    /// outbound UDP flows one of four LAN devices (MAC, vendor, DHCP name).
    pub owners: bool,
}

/// What one device got acknowledged.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Acked {
    pub id: String,
    pub boot_id: String,
    pub windows: u64,
    pub parts: u64,
    pub packets: u64,
    pub bytes: u64,
    pub flow_records: u64,
    /// Connections lost and made again.
    pub reconnects: u64,
}

/// A small, fast PRNG (xorshift64*): realistic shapes, not secrets.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A random boot id: from the clock and the device, different on every run.
fn boot_id(dev: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Rng::new(t ^ dev.rotate_left(32) ^ u64::from(std::process::id())).next()
}

/// The window `seq` of a device, as encoded parts, and what it adds up to.
pub fn window(
    id: &DeviceId,
    dev: u64,
    boot: u64,
    seq: u64,
    start_ms: u64,
    plan: &Plan,
) -> (Vec<Vec<u8>>, Count, u64) {
    let mut rng = Rng::new(plan.seed ^ dev.wrapping_mul(0x1000_0001) ^ seq.rotate_left(17));
    let (lo, hi) = plan.flows;
    let n = lo + rng.below(u64::from(hi.saturating_sub(lo)) + 1) as u32;
    let me4 = Addr::V4([10, (dev >> 8) as u8, dev as u8, 1]);
    let mut me6 = [0u8; 16];
    me6[..2].copy_from_slice(&[0xfd, 0x42]);
    me6[8..16].copy_from_slice(&dev.to_be_bytes());
    let me6 = Addr::V6(me6);
    // Records sorted by bytes, descending, as the agent's top-K.
    let mut flows: Vec<(Addr, Addr, FlowRecord)> = (0..n)
        .map(|i| {
            let v6 = rng.below(4) == 0;
            let remote = if v6 {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                a[8..].copy_from_slice(&rng.next().to_be_bytes());
                Addr::V6(a)
            } else {
                let r = rng.next();
                Addr::V4([198, 18 + (r & 1) as u8, (r >> 8) as u8, (r >> 16) as u8])
            };
            let me = if v6 { me6 } else { me4 };
            // Heavy-tailed sizes: most flows a few packets, a few up to tens of thousands.
            let scale = 1u64 << rng.below(13);
            let fwd_p = 1 + rng.below(4 * scale);
            let rev_p = rng.below(4 * scale);
            let proto = [6u8, 6, 6, 17, 17, 1][rng.below(6) as usize];
            let outbound = rng.below(3) != 0;
            let (src, dst) = if outbound { (me, remote) } else { (remote, me) };
            let rec = FlowRecord {
                proto,
                src: 0,
                dst: 0,
                src_port: if proto == 1 {
                    8 << 8
                } else {
                    32_768 + (i % 28_000) as u16
                },
                dst_port: if proto == 1 {
                    0
                } else {
                    [443, 80, 53, 123, 22, 8883][rng.below(6) as usize]
                },
                vlan: 0,
                vlan_inner: 0,
                ifindex: 2,
                fwd: Count {
                    packets: fwd_p,
                    bytes: fwd_p * (60 + rng.below(1400)),
                },
                rev: Count {
                    packets: rev_p,
                    bytes: rev_p * (60 + rng.below(1400)),
                },
                tcp_flags: if proto == 6 { 0x1b } else { 0 },
                first_seen_ms: -(rng.below(60_000) as i64),
                last_seen_ms: rng.below(plan.interval.as_millis() as u64) as i64,
                rtt: None,
                tcp: None,
                dns: None,
                owner: None,
            };
            let rec = if plan.tcp_health && proto == 6 {
                FlowRecord {
                    tcp: Some(tcp_block(&mut rng, rec.fwd)),
                    ..rec
                }
            } else if plan.dns && proto == 17 && rec.dst_port == 53 {
                FlowRecord {
                    dns: Some(dns_block(&mut rng, rec.fwd.packets, rec.rev.packets)),
                    ..rec
                }
            } else {
                rec
            };
            let rec = FlowRecord {
                owner: owner(plan.owners && outbound, proto, i),
                ..rec
            };
            (src, dst, rec)
        })
        .collect();
    flows.sort_by_key(|f| std::cmp::Reverse(f.2.fwd.bytes + f.2.rev.bytes));
    let k = (plan.top_k as usize).min(flows.len());
    let mut other = Count::default();
    for f in &flows[k..] {
        other.add(&f.2.fwd);
        other.add(&f.2.rev);
    }
    let mut totals = other;
    for f in &flows[..k] {
        totals.add(&f.2.fwd);
        totals.add(&f.2.rev);
    }
    let top = &flows[..k];
    // The window's DNS latency histogram: each record's samples in the bucket of its average.
    let mut dns_hist = [0u32; wire::RTT_BUCKETS];
    for (_, _, r) in top {
        if let Some(l) = r.dns.and_then(|d| d.latency) {
            dns_hist[wire::rtt_bucket(l.avg_us)] += l.samples;
        }
    }
    let used = dns_hist.iter().rposition(|&c| c > 0).map_or(0, |i| i + 1);
    // Parts below the message limit: about 40 bytes a record with its addresses.
    let per_part = (plan.max_message / 48).max(1);
    let chunks: Vec<&[(Addr, Addr, FlowRecord)]> = if top.is_empty() {
        vec![&[]]
    } else {
        top.chunks(per_part).collect()
    };
    let parts = chunks.len() as u16;
    let mut encoded = Vec::with_capacity(chunks.len());
    for (p, chunk) in chunks.iter().enumerate() {
        let mut addrs: Vec<Addr> = Vec::new();
        let mut index: BTreeMap<Addr, u32> = BTreeMap::new();
        let mut at = |a: Addr, addrs: &mut Vec<Addr>| -> u32 {
            *index.entry(a).or_insert_with(|| {
                addrs.push(a);
                addrs.len() as u32 - 1
            })
        };
        // Owners' names and devices, each once per part (indices into this part's tables).
        let mut names: Vec<String> = Vec::new();
        let mut name_at: BTreeMap<u32, u32> = BTreeMap::new();
        let mut name = |i: u32, names: &mut Vec<String>| -> u32 {
            *name_at.entry(i).or_insert_with(|| {
                names.push(OWNER_NAMES[i as usize].to_string());
                names.len() as u32 - 1
            })
        };
        let mut devices: Vec<wire::Device> = Vec::new();
        let mut device_at: BTreeMap<u32, u32> = BTreeMap::new();
        let records: Vec<FlowRecord> = chunk
            .iter()
            .map(|(s, d, r)| FlowRecord {
                src: at(*s, &mut addrs),
                dst: at(*d, &mut addrs),
                owner: r.owner.map(|o| {
                    let o = o.map(|i| name(i, &mut names), |k| k);
                    Owner {
                        initiator: o.initiator.map(|k| {
                            *device_at.entry(k).or_insert_with(|| {
                                devices.push(wire::Device {
                                    mac: [0x02, 0x5e, (dev >> 8) as u8, dev as u8, 0, k as u8],
                                    vendor: Some(name(LAN_VENDOR, &mut names)),
                                    host_name: Some(name(LAN_NAMES + k, &mut names)),
                                    client_id: None,
                                });
                                devices.len() as u32 - 1
                            })
                        }),
                        ..o
                    }
                }),
                ..*r
            })
            .collect();
        let first = p == 0;
        let s = Summary {
            device: id.device().try_into().expect("a valid id fits"),
            site: id.site().try_into().expect("a valid id fits"),
            boot_id: boot,
            seq,
            part: p as u16,
            parts,
            window_start_ms: start_ms,
            window_len_ms: plan.interval.as_millis() as u32,
            sample_every: 1,
            totals: if first { totals } else { Count::default() },
            overflow: Count::default(),
            other: if first { other } else { Count::default() },
            other_flows: if first { (flows.len() - k) as u32 } else { 0 },
            health: if first {
                Health {
                    packets_seen: totals.packets,
                    active_flows: n,
                    table_capacity: 16_384,
                    cpu_ms: 5,
                    rss_kib: 6_000,
                    ..Health::default()
                }
            } else {
                Health::default()
            },
            addrs,
            flows: records,
            rtt_hist: heapless::Vec::new(),
            tcp_health: plan.tcp_health,
            dns_hist: if first {
                dns_hist[..used].iter().copied().collect()
            } else {
                heapless::Vec::new()
            },
            dns: plan.dns,
            names,
            devices,
        };
        encoded.push(wire::encode_vec(&Message::V3(s)));
    }
    (encoded, totals, k as u64)
}

/// A plausible TCP block: most connections established or closed, a few refused,
/// unanswered or reset, one in eight retransmitting about 2 % of what it sent.
fn tcp_block(rng: &mut Rng, fwd: Count) -> wire::Tcp {
    use wire::Outcome::*;
    let outcome = match rng.below(100) {
        0..=4 => Refused,
        5..=7 => Unanswered,
        8..=9 => Reset,
        10..=39 => Closed,
        40..=44 => Unknown,
        _ => Established,
    };
    let mut t = wire::Tcp {
        outcome,
        decided: outcome != Unknown && rng.below(2) == 0,
        syn_retries: if outcome == Unanswered { 3 } else { 0 },
        ..wire::Tcp::default()
    };
    match outcome {
        Refused => t.rev.rst = 1,
        Reset => t.fwd.rst = 1,
        Closed => (t.fwd.fin, t.rev.fin) = (1, 1),
        _ => {}
    }
    if rng.below(8) == 0 && fwd.packets >= 50 {
        t.fwd.retrans = Count {
            packets: fwd.packets / 50,
            bytes: fwd.bytes / 50,
        };
    }
    t
}

/// The owners' names: processes, their services (same order), a vendor, LAN device names.
const OWNER_NAMES: [&str; 15] = [
    "curl",
    "mosquitto_pub",
    "apt",
    "telegraf",
    "sshd",
    "backup.service",
    "mqtt-bridge.service",
    "apt-daily.service",
    "telegraf.service",
    "ssh.service",
    "Raspberry Pi Trading Ltd",
    "sensor-0",
    "sensor-1",
    "sensor-2",
    "sensor-3",
];
const LAN_VENDOR: u32 = 10;
const LAN_NAMES: u32 = 11;

/// A flow's owner, with indices into [`OWNER_NAMES`] and (initiator) LAN device numbers 0..4:
/// outbound TCP is one of five processes, outbound UDP one of four LAN devices.
fn owner(on: bool, proto: u8, i: u32) -> Option<Owner> {
    match (on, proto) {
        (true, 6) => Some(Owner {
            process: Some(wire::Process {
                pid: 1_000 + i % 5,
                comm: i % 5,
            }),
            service: Some(5 + i % 5),
            ..Owner::default()
        }),
        (true, 17) => Some(Owner {
            initiator: Some(i % 4),
            ..Owner::default()
        }),
        _ => None,
    }
}

/// Names the simulated devices look up; the last one does not exist.
const DNS_NAMES: [&str; 8] = [
    "time.example.com",
    "api.example.net",
    "updates.vendor.example",
    "cdn.example.org",
    "mqtt.example.com",
    "ntp.example.org",
    "telemetry.vendor.example",
    "gone.example.invalid",
];

/// A plausible DNS conversation: one query a packet each way, most answered NOERROR in a few
/// milliseconds, the missing name NXDOMAIN, a few SERVFAIL or unanswered.
fn dns_block(rng: &mut Rng, queries: u64, answers: u64) -> wire::Dns {
    let i = rng.below(DNS_NAMES.len() as u64) as usize;
    let queries = queries.clamp(1, 1_000) as u32;
    let mut responses = (answers as u32).min(queries);
    if rng.below(20) == 0 {
        responses = responses.saturating_sub(1);
    }
    let mut d = wire::Dns {
        queries,
        responses,
        unanswered: queries - responses,
        qtype: if rng.below(3) == 0 { 28 } else { 1 },
        name: wire::DnsName::new(DNS_NAMES[i]).expect("a printable name"),
        ..wire::Dns::default()
    };
    if i == DNS_NAMES.len() - 1 {
        d.nxdomain = responses;
    } else if rng.below(25) == 0 {
        d.servfail = responses;
    } else {
        d.noerror = responses;
    }
    if responses > 0 {
        let min_us = 500 + rng.below(20_000) as u32;
        let max_us = min_us + rng.below(50_000) as u32;
        d.latency = Some(wire::Latency {
            min_us,
            avg_us: min_us + (max_us - min_us) / 3,
            max_us,
            samples: responses,
        });
    }
    d
}

/// Runs one device to the end of its plan; returns what the broker acknowledged.
async fn run_device(plan: Arc<Plan>, dev: u64, me: Device, start_ms: u64) -> Acked {
    let boot = boot_id(dev);
    let principal = me.id.principal();
    let mut acked = Acked {
        id: principal.clone(),
        boot_id: format!("{boot:016x}"),
        ..Acked::default()
    };
    let mut broker = plan.broker.clone();
    broker.username = Some(principal.clone());
    broker.password = me.password.clone();
    let mut opts = match broker.options(&me.id.client_id()) {
        Ok(o) => o,
        Err(e) => {
            log::error!("{principal}: {e}");
            return acked;
        }
    };
    opts.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(64 * 1024, plan.max_message + 1024);
    let (client, mut el) = AsyncClient::new(opts, 64);
    let flows_topic = me.id.flows_topic();
    let started = Instant::now();
    let mut connected = false;
    for seq in 0..plan.windows {
        // Pace: window `seq` is due at start + seq * interval.
        let due = started + plan.interval * seq as u32;
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        let (parts, totals, records) = window(
            &me.id,
            dev,
            boot,
            seq,
            start_ms + seq * plan.interval.as_millis() as u64,
            &plan,
        );
        // Until every part is acknowledged on one connection.
        'send: loop {
            if !connected {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => connected = true,
                    Ok(_) => {}
                    Err(e) => {
                        log::debug!("{principal}: {e}");
                        el.clean();
                        el.pending.clear();
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                continue;
            }
            for p in &parts {
                if client
                    .publish(flows_topic.clone(), QoS::AtLeastOnce, false, p.clone())
                    .await
                    .is_err()
                {
                    return acked;
                }
            }
            let mut acks = 0;
            while acks < parts.len() {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => acks += 1,
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return acked,
                    Ok(_) => {}
                    Err(e) => {
                        log::debug!("{principal}: {e}; sending window {seq} again");
                        el.clean();
                        el.pending.clear();
                        connected = false;
                        acked.reconnects += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'send;
                    }
                }
            }
            break;
        }
        acked.windows += 1;
        acked.parts += parts.len() as u64;
        acked.packets += totals.packets;
        acked.bytes += totals.bytes;
        acked.flow_records += records;
    }
    let _ = client.disconnect().await;
    // Let the DISCONNECT go out.
    let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
    acked
}

/// Runs the whole fleet on the current tokio runtime; one result per device, in order.
pub async fn run(plan: Plan) -> Vec<Acked> {
    let plan = Arc::new(plan);
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let tasks: Vec<_> = plan
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let (plan, d) = (plan.clone(), d.clone());
            tokio::spawn(async move {
                // Spread the connects and the windows over the interval.
                let n = plan.devices.len().max(1) as u32;
                tokio::time::sleep(plan.interval / n * i as u32).await;
                run_device(plan, i as u64, d, start_ms).await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap_or_default());
    }
    out
}

/// Reads `site/device password` lines (what `scripts/provision.sh bulk` writes).
pub fn read_credentials(text: &str) -> Result<Vec<Device>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (who, pass) = l.split_once(' ').unwrap_or((l, ""));
            let id = DeviceId::from_principal(who).map_err(|e| format!("{who:?}: {e}"))?;
            Ok(Device {
                id,
                password: (!pass.is_empty()).then(|| pass.trim().to_string()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(flows: (u32, u32), top_k: u32) -> Plan {
        Plan {
            broker: Broker::new(
                "mqtt://127.0.0.1".parse().unwrap(),
                None,
                None,
                None,
                None,
                None,
            )
            .unwrap(),
            devices: vec![],
            windows: 1,
            interval: Duration::from_secs(1),
            flows,
            top_k,
            max_message: 64 * 1024,
            seed: 7,
            tcp_health: false,
            dns: false,
            owners: false,
        }
    }

    #[test]
    fn with_owners_local_flows_name_a_process_and_lan_flows_a_device() {
        let id = DeviceId::new("sim", "d0").unwrap();
        let mut p = plan((3000, 3000), 3000);
        p.owners = true;
        let (parts, _, _) = window(&id, 3, 9, 4, 1_000, &p);
        assert!(parts.len() > 1, "several parts, each with its own tables");
        let (mut local, mut lan) = (0, 0);
        for bytes in &parts {
            let s = wire::decode_summary(bytes).expect("the decoder takes it");
            for f in s.to_flows() {
                let Some(o) = f.owner else { continue };
                if let Some(pr) = o.process {
                    assert_eq!(f.proto, 6);
                    let service = &s.names[o.service.unwrap() as usize];
                    assert!(service.ends_with(".service"), "{service}");
                    assert!(!s.names[pr.comm as usize].contains('.'));
                    local += 1;
                } else {
                    let d = &s.devices[o.initiator.unwrap() as usize];
                    assert_eq!(
                        s.names[d.vendor.unwrap() as usize],
                        "Raspberry Pi Trading Ltd"
                    );
                    assert!(s.names[d.host_name.unwrap() as usize].starts_with("sensor-"));
                    lan += 1;
                }
            }
        }
        assert!(
            local > 100 && lan > 100,
            "{local} local, {lan} LAN flows with owners"
        );
    }

    #[test]
    fn with_dns_every_udp_flow_to_port_53_carries_a_block() {
        let id = DeviceId::new("sim", "d0").unwrap();
        let mut p = plan((300, 300), 1024);
        p.dns = true;
        let (parts, _, _) = window(&id, 3, 9, 4, 1_000, &p);
        let (mut blocks, mut samples, mut hist) = (0, 0, 0);
        for bytes in &parts {
            let s = wire::decode_summary(bytes).expect("the decoder takes it");
            assert!(s.dns);
            hist += s.dns_hist.iter().sum::<u32>();
            for f in &s.flows {
                let dns = f.proto == 17 && f.dst_port == 53;
                assert_eq!(f.dns.is_some(), dns, "{f:?}");
                if let Some(d) = f.dns {
                    blocks += 1;
                    assert_eq!(d.queries, d.responses + d.unanswered);
                    assert_eq!(
                        d.responses,
                        d.noerror + d.nxdomain + d.servfail + d.refused + d.other_rcode
                    );
                    assert!(!d.name.is_empty());
                    samples += d.latency.map_or(0, |l| l.samples);
                }
            }
        }
        assert!(blocks > 5, "{blocks} DNS blocks in 300 flows");
        assert_eq!(hist, samples, "the histogram holds every latency sample");
    }

    #[test]
    fn with_tcp_health_every_tcp_flow_carries_a_block() {
        let id = DeviceId::new("sim", "d0").unwrap();
        let mut p = plan((200, 200), 1024);
        p.tcp_health = true;
        let (parts, _, _) = window(&id, 3, 9, 4, 1_000, &p);
        let mut blocks = 0;
        for bytes in &parts {
            let s = wire::decode_summary(bytes).expect("the decoder takes it");
            assert!(s.tcp_health);
            for f in &s.flows {
                assert_eq!(f.tcp.is_some(), f.proto == 6, "{f:?}");
                blocks += usize::from(f.tcp.is_some());
            }
        }
        assert!(blocks > 50, "{blocks} TCP blocks in 200 flows");
    }

    #[test]
    fn windows_decode_and_add_up() {
        let id = DeviceId::new("sim", "d0").unwrap();
        for (flows, top_k) in [((50, 50), 1024), ((2000, 2000), 1024), ((2000, 2000), 4000)] {
            let p = plan(flows, top_k);
            let (parts, totals, records) = window(&id, 3, 9, 4, 1_000, &p);
            let mut sum = Count::default();
            let mut n = 0;
            let (mut v4, mut v6) = (false, false);
            for (i, bytes) in parts.iter().enumerate() {
                assert!(
                    bytes.len() <= p.max_message,
                    "part {i}: {} bytes",
                    bytes.len()
                );
                let s = wire::decode_summary(bytes).unwrap();
                assert_eq!((s.part as usize, s.parts as usize), (i, parts.len()));
                assert_eq!((s.seq, s.boot_id, s.device.as_str()), (4, 9, "d0"));
                for f in &s.flows {
                    sum.add(&f.fwd);
                    sum.add(&f.rev);
                }
                sum.add(&s.other);
                n += s.flows.len() as u64;
                v4 |= s.addrs.iter().any(|a| matches!(a, Addr::V4(_)));
                v6 |= s.addrs.iter().any(|a| matches!(a, Addr::V6(_)));
            }
            assert_eq!(sum, totals, "records + other = totals");
            assert_eq!(n, records);
            assert_eq!(records, u64::from(flows.0.min(top_k)));
            assert!(v4 && v6, "both address families");
        }
    }

    #[test]
    fn credentials() {
        let d = read_credentials("# fleet\nsim/d0 pw0\n\nsim/d1\n").unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].id.principal(), "sim/d0");
        assert_eq!(d[0].password.as_deref(), Some("pw0"));
        assert_eq!(d[1].password, None);
        assert!(read_credentials("nosite pw").is_err());
    }
}
