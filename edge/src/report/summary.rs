//! A drained window → the wire's `Summary`: top-K flows by bytes, the rest folded into
//! `other`, addresses in a per-message table, and a split into numbered parts when the
//! encoding exceeds the maximum message size.
//!
//! Conservation: `totals == sum(flow records of all parts) + other + overflow`, in packets and
//! bytes, exactly as the drained window had `totals == sum(flows) + overflow`.

use crate::report::window::Window;
use shared::wire::{
    self, Addr, Count, Device, Flow, FlowRecord, Health, Id, Message, Owner, Process, Summary,
    RTT_BUCKETS,
};
use std::collections::HashMap;

/// What stays the same for every summary of one agent run.
#[derive(Clone, Debug)]
pub struct Identity {
    pub device: Id,
    pub site: Id,
    /// Random per start (see [`boot_id`]).
    pub boot_id: u64,
    pub sample_every: u32,
}

/// A fresh random boot id from the kernel's CSPRNG.
pub fn boot_id() -> std::io::Result<u64> {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

#[derive(Debug, thiserror::Error)]
#[error("a single flow record does not fit in {0} bytes")]
pub struct TooSmall(pub usize);

/// One whole window as a single (unsplit) summary: the `top_k` largest flows by bytes as
/// records, the others folded into `other`.
pub fn summarize(id: &Identity, seq: u64, w: &Window, health: Health, top_k: usize) -> Summary {
    let mut order: Vec<&Flow> = w.flows.iter().collect();
    // Largest first: by bytes, then by packets.
    let by_size = |a: &&Flow, b: &&Flow| {
        let (a, b) = (a.total(), b.total());
        b.bytes.cmp(&a.bytes).then(b.packets.cmp(&a.packets))
    };
    if order.len() > top_k {
        order.select_nth_unstable_by(top_k, by_size);
    }
    let (top, rest) = order.split_at_mut(top_k.min(w.flows.len()));
    top.sort_by(by_size);
    let mut other = Count::default();
    for f in rest.iter() {
        other.add(&f.total());
    }
    let mut addrs = AddrTable::default();
    let mut owners = OwnerTables::default();
    let flows = top
        .iter()
        .map(|f| FlowRecord {
            owner: f.owner.map(|o| owners.owner(&o, &w.names, &w.devices)),
            ..f.to_record(w.window_start_ms, |a| addrs.index(a))
        })
        .collect();
    let rtt_hist = w
        .rtt_hist
        .iter()
        .take(RTT_BUCKETS)
        .map(|&n| n.min(u32::MAX as u64) as u32)
        .collect();
    Summary {
        device: id.device.clone(),
        site: id.site.clone(),
        boot_id: id.boot_id,
        seq,
        part: 0,
        parts: 1,
        window_start_ms: w.window_start_ms,
        // Saturated, never wrapped (u32 ms is 49 days).
        window_len_ms: w
            .window_end_ms
            .saturating_sub(w.window_start_ms)
            .min(u32::MAX as u64) as u32,
        sample_every: id.sample_every,
        totals: w.totals,
        overflow: w.overflow,
        other,
        other_flows: rest.len() as u32,
        health,
        addrs: addrs.list,
        flows,
        rtt_hist,
        tcp_health: w.tcp_health,
        dns_hist: w
            .dns_hist
            .iter()
            .take(RTT_BUCKETS)
            .map(|&n| n.min(u32::MAX as u64) as u32)
            .collect(),
        dns: w.dns,
        names: owners.names,
        devices: owners.devices,
    }
}

/// A message's names and devices, each once, built from another table's as records refer to
/// them (so a message carries only what its records use).
#[derive(Default)]
struct OwnerTables {
    names: Vec<String>,
    name_at: HashMap<String, u32>,
    devices: Vec<Device>,
    device_at: HashMap<[u8; 6], u32>,
}

impl OwnerTables {
    fn name(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.name_at.get(s) {
            return i;
        }
        self.names.push(s.to_string());
        self.name_at
            .insert(s.to_string(), self.names.len() as u32 - 1);
        self.names.len() as u32 - 1
    }

    fn device(&mut self, d: &Device, names: &[String]) -> u32 {
        if let Some(&i) = self.device_at.get(&d.mac) {
            return i;
        }
        let mut name = |i: Option<u32>| i.map(|i| self.name(&names[i as usize]));
        let d = Device {
            mac: d.mac,
            vendor: name(d.vendor),
            host_name: name(d.host_name),
            client_id: name(d.client_id),
        };
        self.devices.push(d);
        self.device_at.insert(d.mac, self.devices.len() as u32 - 1);
        self.devices.len() as u32 - 1
    }

    /// `o`, whose indices point into `names` and `devices`, with indices into these tables.
    fn owner(&mut self, o: &Owner, names: &[String], devices: &[Device]) -> Owner {
        Owner {
            process: o.process.map(|p| Process {
                pid: p.pid,
                comm: self.name(&names[p.comm as usize]),
            }),
            service: o.service.map(|i| self.name(&names[i as usize])),
            initiator: o
                .initiator
                .map(|i| self.device(&devices[i as usize], names)),
            responder: o
                .responder
                .map(|i| self.device(&devices[i as usize], names)),
        }
    }
}

#[derive(Default)]
struct AddrTable {
    list: Vec<Addr>,
    at: HashMap<Addr, u32>,
}

impl AddrTable {
    fn index(&mut self, a: Addr) -> u32 {
        *self.at.entry(a).or_insert_with(|| {
            self.list.push(a);
            (self.list.len() - 1) as u32
        })
    }
}

/// Encodes a summary into one or more messages of at most `max_bytes` each. Flow records are
/// dealt out in order (largest first) over `n` parts; part 0 keeps totals, overflow, other,
/// health and the RTT histogram, later parts carry zeros there (see [`Summary::totals`]).
/// Parts are built one at a time, so beyond the summary itself at most one part's records are
/// held at once.
pub fn encode_parts(s: Summary, max_bytes: usize) -> Result<Vec<Vec<u8>>, TooSmall> {
    let whole = Message::V3(s);
    let len = wire::encoded_len(&whole);
    if len <= max_bytes {
        return Ok(vec![wire::encode_vec(&whole)]);
    }
    let Message::V3(s) = whole else {
        unreachable!("made as V3 above")
    };
    let s = &s;
    let mut n = len.div_ceil(max_bytes).max(2);
    let mut buf = vec![0u8; max_bytes];
    'grow: while n <= s.flows.len().max(1) {
        let chunk = s.flows.len().div_ceil(n);
        let parts = s.flows.len().div_ceil(chunk);
        let mut out = Vec::with_capacity(parts);
        for (i, flows) in s.flows.chunks(chunk).enumerate() {
            let m = Message::V3(part(s, i as u16, parts as u16, flows));
            match wire::encode(&m, &mut buf) {
                Some(b) => out.push(b.to_vec()),
                None => {
                    n = parts + 1;
                    continue 'grow;
                }
            }
        }
        return Ok(out);
    }
    Err(TooSmall(max_bytes))
}

/// Part `i` of `parts`, holding `flows` (indexes into `s.addrs`) with its own address table.
fn part(s: &Summary, i: u16, parts: u16, flows: &[FlowRecord]) -> Summary {
    let mut addrs = AddrTable::default();
    let mut owners = OwnerTables::default();
    let flows = flows
        .iter()
        .map(|f| FlowRecord {
            src: addrs.index(s.addrs[f.src as usize]),
            dst: addrs.index(s.addrs[f.dst as usize]),
            owner: f.owner.map(|o| owners.owner(&o, &s.names, &s.devices)),
            ..*f
        })
        .collect();
    let first = i == 0;
    let keep = |c: Count| if first { c } else { Count::default() };
    Summary {
        device: s.device.clone(),
        site: s.site.clone(),
        boot_id: s.boot_id,
        seq: s.seq,
        part: i,
        parts,
        window_start_ms: s.window_start_ms,
        window_len_ms: s.window_len_ms,
        sample_every: s.sample_every,
        totals: keep(s.totals),
        overflow: keep(s.overflow),
        other: keep(s.other),
        other_flows: if first { s.other_flows } else { 0 },
        health: if first { s.health } else { Health::default() },
        rtt_hist: if first {
            s.rtt_hist.clone()
        } else {
            heapless::Vec::new()
        },
        addrs: addrs.list,
        flows,
        tcp_health: s.tcp_health,
        dns_hist: if first {
            s.dns_hist.clone()
        } else {
            heapless::Vec::new()
        },
        dns: s.dns,
        names: owners.names,
        devices: owners.devices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(i: u32, bytes: u64) -> Flow {
        Flow {
            proto: 17,
            src: Addr::V4([10, 0, (i >> 8) as u8, i as u8]),
            src_port: 1000 + i as u16,
            dst: Addr::V4([192, 0, 2, 1]),
            dst_port: 53,
            vlan: 0,
            vlan_inner: 0,
            ifindex: 2,
            fwd: Count { packets: 2, bytes },
            rev: Count {
                packets: 1,
                bytes: 7,
            },
            tcp_flags: 0,
            first_seen_ms: 1_000_100,
            last_seen_ms: 1_000_900,
            rtt: None,
            handshake_us: None,
            tcp: None,
            dns: None,
            owner: None,
        }
    }

    fn window(n: u32) -> Window {
        let flows: Vec<Flow> = (0..n).map(|i| flow(i, 100 + i as u64)).collect();
        let mut totals = Count {
            packets: 5,
            bytes: 500,
        };
        for f in &flows {
            totals.add(&f.total());
        }
        Window {
            window_start_ms: 1_000_000,
            window_end_ms: 1_010_000,
            totals,
            overflow: Count {
                packets: 5,
                bytes: 500,
            },
            flows,
            ..Default::default()
        }
    }

    fn ident() -> Identity {
        Identity {
            device: Id::try_from("d").unwrap(),
            site: Id::try_from("s").unwrap(),
            boot_id: 7,
            sample_every: 1,
        }
    }

    fn sum(s: &Summary) -> Count {
        let mut c = s.other;
        c.add(&s.overflow);
        for f in &s.flows {
            c.add(&f.fwd);
            c.add(&f.rev);
        }
        c
    }

    /// TCP health reaches every part of a split window, and the records keep their blocks;
    /// records carrying one stay within issue 21's 32 bytes.
    #[test]
    fn tcp_blocks_travel_in_every_part() {
        let mut w = window(3000);
        w.tcp_health = true;
        for (i, f) in w.flows.iter_mut().enumerate() {
            f.proto = 6;
            f.tcp = Some(shared::wire::Tcp {
                outcome: shared::wire::Outcome::Closed,
                decided: i % 2 == 0,
                fwd: shared::wire::TcpDir {
                    fin: 1,
                    ..Default::default()
                },
                rev: shared::wire::TcpDir {
                    fin: 1,
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        let s = summarize(&ident(), 1, &w, Health::default(), 3000);
        let parts = encode_parts(s.clone(), 8192).unwrap();
        assert!(parts.len() > 1);
        let mut back = Vec::new();
        let mut bytes = 0;
        for p in &parts {
            let m = wire::decode_summary(p).unwrap();
            assert!(m.tcp_health);
            bytes += p.len();
            back.extend(m.to_flows());
        }
        let want: Vec<_> = s.to_flows().map(|f| f.tcp).collect();
        assert_eq!(back.iter().map(|f| f.tcp).collect::<Vec<_>>(), want);
        let per_record = bytes as f64 / back.len() as f64;
        assert!(per_record <= 32.0, "{per_record:.1} bytes per record");
    }

    /// DNS blocks travel with their records into every part; the histogram in part 0 only,
    /// the flag in all.
    #[test]
    fn dns_blocks_travel_in_every_part() {
        let mut w = window(3000);
        w.dns = true;
        w.dns_hist = vec![0, 0, 3, 4];
        for (i, f) in w.flows.iter_mut().enumerate() {
            f.dns = Some(shared::wire::Dns {
                queries: 1,
                responses: 1,
                noerror: 1,
                qtype: 1,
                latency: Some(shared::wire::Latency {
                    min_us: 20_000 + i as u32,
                    avg_us: 20_000 + i as u32,
                    max_us: 20_000 + i as u32,
                    samples: 1,
                }),
                name: shared::wire::DnsName::new("www.example.com").unwrap(),
                ..Default::default()
            });
        }
        let s = summarize(&ident(), 1, &w, Health::default(), 3000);
        assert_eq!(&s.dns_hist[..], &[0, 0, 3, 4]);
        let parts = encode_parts(s.clone(), 8192).unwrap();
        assert!(parts.len() > 1);
        let mut back = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let m = wire::decode_summary(p).unwrap();
            assert!(m.dns);
            assert_eq!(m.dns_hist.is_empty(), i > 0);
            back.extend(m.to_flows());
        }
        let want: Vec<_> = s.to_flows().map(|f| f.dns).collect();
        assert_eq!(back.iter().map(|f| f.dns).collect::<Vec<_>>(), want);
    }

    #[test]
    fn top_k_keeps_the_largest_and_folds_the_rest() {
        let w = window(50);
        let s = summarize(&ident(), 3, &w, Health::default(), 10);
        assert_eq!(s.flows.len(), 10);
        assert_eq!(s.other_flows, 40);
        // Largest first: flow 49 has the most bytes.
        assert_eq!(s.flows[0].src_port, 1049);
        assert_eq!(s.flows[9].src_port, 1040);
        assert_eq!(sum(&s), s.totals);
        assert_eq!(s.addrs.len(), 11);
        assert_eq!(s.flows[0].first_seen_ms, 100);
        assert_eq!((s.seq, s.window_len_ms), (3, 10_000));
    }

    #[test]
    fn fewer_flows_than_k_means_no_other() {
        let s = summarize(&ident(), 0, &window(3), Health::default(), 10);
        assert_eq!(
            (s.flows.len(), s.other_flows, s.other),
            (3, 0, Count::default())
        );
        assert_eq!(sum(&s), s.totals);
    }

    #[test]
    fn big_windows_split_into_parts_that_add_up() {
        let w = window(3000);
        let s = summarize(&ident(), 1, &w, Health::default(), 3000);
        let parts = encode_parts(s.clone(), 4096).unwrap();
        assert!(parts.len() > 1);
        let mut total = Count::default();
        let mut records = 0;
        for (i, p) in parts.iter().enumerate() {
            assert!(p.len() <= 4096, "part {i} has {} bytes", p.len());
            let m = wire::decode_summary(p).unwrap();
            assert_eq!((m.part as usize, m.parts as usize), (i, parts.len()));
            assert_eq!(m.seq, 1);
            if i > 0 {
                assert_eq!((m.totals, m.other, m.overflow), Default::default());
            }
            total.add(&sum(&m));
            records += m.flows.len();
        }
        assert_eq!(records, 3000);
        assert_eq!(total, s.totals);
    }

    /// Owners reach every part of a split window, each part with the names and devices its
    /// own records use; local records with process, service and both MACs stay within 32
    /// bytes.
    #[test]
    fn owners_travel_in_every_part_with_their_names() {
        let mut w = window(3000);
        w.names = ["unused", "curl", "nginx.service", "Cisco Systems, Inc"]
            .map(String::from)
            .to_vec();
        w.devices = (0..40u8)
            .map(|i| Device {
                mac: [0xf4, 0xbd, 0x9e, 0, 0, i],
                vendor: Some(3),
                ..Device::default()
            })
            .collect();
        for (i, f) in w.flows.iter_mut().enumerate() {
            f.owner = Some(Owner {
                process: Some(Process {
                    pid: 30_000 + (i % 7) as u32,
                    comm: 1,
                }),
                service: Some(2),
                initiator: Some((i % 40) as u32),
                responder: Some(((i + 1) % 40) as u32),
            });
        }
        let s = summarize(&ident(), 1, &w, Health::default(), 3000);
        assert!(!s.names.contains(&"unused".to_string()));
        let parts = encode_parts(s, 16_384).unwrap();
        assert!(parts.len() > 1);
        let (mut bytes, mut records) = (0, 0);
        for p in &parts {
            let m = wire::decode_summary(p).unwrap();
            for f in &m.flows {
                let o = f.owner.expect("every record keeps its owner");
                let p = o.process.unwrap();
                let i = (p.pid - 30_000) as usize;
                assert_eq!(m.names[p.comm as usize], "curl");
                assert_eq!(m.names[o.service.unwrap() as usize], "nginx.service");
                let d = m.devices[o.initiator.unwrap() as usize];
                assert_eq!(d.mac[..5], [0xf4, 0xbd, 0x9e, 0, 0]);
                assert_eq!(m.names[d.vendor.unwrap() as usize], "Cisco Systems, Inc");
                assert_eq!(i, (f.src_port as usize - 1000) % 7, "{f:?}");
            }
            bytes += p.len();
            records += m.flows.len();
        }
        assert_eq!(records, 3000);
        // Against the same window without owners: the owner block's share of a record.
        let bare: usize = encode_parts(
            summarize(&ident(), 1, &window(3000), Health::default(), 3000),
            16_384,
        )
        .unwrap()
        .iter()
        .map(Vec::len)
        .sum();
        let added = (bytes - bare) as f64 / records as f64;
        assert!(added <= 9.0, "{added:.1} bytes per record for the owner");
    }

    #[test]
    fn small_windows_are_one_part() {
        let s = summarize(&ident(), 1, &window(5), Health::default(), 10);
        let parts = encode_parts(s.clone(), 65536).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(wire::decode(&parts[0]).unwrap(), Message::V3(s));
    }
}
