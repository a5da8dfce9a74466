//! IPFIX (RFC 7011) messages from [`Flow`]s: the one encoder the agent (`[ipfix]`) and the
//! collector (`--ipfix-export`) both use, so a site's nfdump, pmacct or Wireshark reads
//! edgeflow's flows in the field's own language. docs/ipfix.md has the element table.
//!
//! - A flow is one RFC 5103 biflow record: the initiator's direction in the ordinary elements,
//!   the responder's in the reverse elements (enterprise 29305), as edgeflow's records are
//!   initiator-aware. [`Mode::Uniflow`] writes two plain records instead (the reverse one
//!   with addresses and ports swapped, only when the responder sent anything), for collectors
//!   without RFC 5103 (pmacct's nfacctd).
//! - Four templates per mode: IPv4 and IPv6, each with ports or with ICMP type/code. Counters
//!   are 64-bit deltas of the window (`octetDeltaCount`, `packetDeltaCount`).
//! - Sampling travels in an options template scoped to the observation domain.
//! - The sequence number counts data records (options records included) sent from the
//!   observation domain, modulo 2^32 (RFC 7011 §3.1); templates do not count.
//! - Every message fits in `max_message` bytes (a UDP payload below the path MTU).
//!
//! RTT, TCP health and DNS have no IANA element and edgeflow has no enterprise number of its
//! own, so they are left out (docs/ipfix.md).

use crate::wire::{Addr, Flow};
use alloc::vec::Vec;

#[cfg(feature = "ipfix")]
pub mod export;

/// IANA's port for IPFIX over UDP and TCP.
pub const PORT: u16 = 4739;
/// RFC 5103's private enterprise number for reverse information elements.
pub const REVERSE_PEN: u32 = 29305;
/// Default largest path MTU assumed; messages stay [`HEADROOM`] below it.
pub const DEFAULT_MTU: usize = 1400;
/// IPv6 (40) and UDP (8) headers: a message of `mtu - HEADROOM` bytes fits in one packet.
pub const HEADROOM: usize = 48;
/// Smallest MTU accepted: the templates (the largest message) must fit in one message.
pub const MIN_MTU: usize = 576;

const VERSION: u16 = 10;
const HEADER: usize = 16;
const SET_HEADER: usize = 4;
const TEMPLATE_SET: u16 = 2;
const OPTIONS_TEMPLATE_SET: u16 = 3;
/// Template ids: data sets from 256. Biflow 256..=259, uniflow 260..=263, sampling 264.
const FIRST_TEMPLATE: u16 = 256;
const SAMPLING_TEMPLATE: u16 = 264;

/// Biflow (RFC 5103 reverse elements) or two uniflow records per flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Biflow,
    Uniflow,
}

/// An information element: IANA id, length, and whether it is RFC 5103's reverse of it.
#[derive(Clone, Copy)]
struct Ie(u16, u16, bool);

const fn ie(id: u16, len: u16) -> Ie {
    Ie(id, len, false)
}
const fn rev(id: u16, len: u16) -> Ie {
    Ie(id, len, true)
}

// IANA "IPFIX Information Elements".
const OCTET_DELTA: u16 = 1;
const PACKET_DELTA: u16 = 2;
const PROTOCOL: u16 = 4;
const TCP_FLAGS: u16 = 6;
const SRC_PORT: u16 = 7;
const SRC_V4: u16 = 8;
const INGRESS_IF: u16 = 10;
const DST_PORT: u16 = 11;
const DST_V4: u16 = 12;
const SRC_V6: u16 = 27;
const DST_V6: u16 = 28;
const ICMP_V4: u16 = 32;
const VLAN: u16 = 58;
const ICMP_V6: u16 = 139;
const DOMAIN_ID: u16 = 149;
const START_MS: u16 = 152;
const END_MS: u16 = 153;
const CUSTOMER_VLAN: u16 = 245;
const SELECTOR_ALGORITHM: u16 = 304;
const SAMPLING_INTERVAL: u16 = 305;
const SAMPLING_SPACE: u16 = 306;
const SAMPLING_PROBABILITY: u16 = 311;

/// Address family and port/ICMP variant of a template.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shape {
    V4,
    V4Icmp,
    V6,
    V6Icmp,
}

const SHAPES: [Shape; 4] = [Shape::V4, Shape::V4Icmp, Shape::V6, Shape::V6Icmp];

impl Shape {
    fn of(f: &Flow) -> Shape {
        match (f.src, f.proto) {
            (Addr::V4(_), 1) => Shape::V4Icmp,
            (Addr::V4(_), _) => Shape::V4,
            (Addr::V6(_), 58) => Shape::V6Icmp,
            (Addr::V6(_), _) => Shape::V6,
        }
    }

    fn template_id(self, mode: Mode) -> u16 {
        let base = match mode {
            Mode::Biflow => FIRST_TEMPLATE,
            Mode::Uniflow => FIRST_TEMPLATE + 4,
        };
        base + SHAPES.iter().position(|s| *s == self).unwrap() as u16
    }

    fn v6(self) -> bool {
        matches!(self, Shape::V6 | Shape::V6Icmp)
    }

    /// The fields in the order records write them.
    fn fields(self, mode: Mode) -> Vec<Ie> {
        let mut v = Vec::with_capacity(16);
        if self.v6() {
            v.extend([ie(SRC_V6, 16), ie(DST_V6, 16)]);
        } else {
            v.extend([ie(SRC_V4, 4), ie(DST_V4, 4)]);
        }
        match self {
            Shape::V4 | Shape::V6 => v.extend([ie(SRC_PORT, 2), ie(DST_PORT, 2)]),
            Shape::V4Icmp => v.push(ie(ICMP_V4, 2)),
            Shape::V6Icmp => v.push(ie(ICMP_V6, 2)),
        }
        v.extend([
            ie(PROTOCOL, 1),
            ie(TCP_FLAGS, 2),
            ie(INGRESS_IF, 4),
            ie(VLAN, 2),
            ie(CUSTOMER_VLAN, 2),
            ie(START_MS, 8),
            ie(END_MS, 8),
            ie(OCTET_DELTA, 8),
            ie(PACKET_DELTA, 8),
        ]);
        if mode == Mode::Biflow {
            v.extend([rev(OCTET_DELTA, 8), rev(PACKET_DELTA, 8)]);
        }
        v
    }

    fn record_len(self, mode: Mode) -> usize {
        self.fields(mode).iter().map(|f| f.1 as usize).sum()
    }
}

/// One exporter's state for one observation domain: its sequence number and settings.
#[derive(Clone, Debug)]
pub struct Encoder {
    domain: u32,
    mode: Mode,
    max_message: usize,
    sample_every: u32,
    /// Data records sent so far (RFC 7011 §3.1), modulo 2^32.
    seq: u32,
}

/// The observation domain id of a device: FNV-1a (32 bit) of `site/device`, stable across
/// restarts and machines; 0 (RFC 7011: "no specific domain") becomes 1.
pub fn domain_id(site: &str, device: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in site
        .bytes()
        .chain(core::iter::once(b'/'))
        .chain(device.bytes())
    {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

impl Encoder {
    /// `mtu` is the path MTU (messages stay [`HEADROOM`] below it), at least [`MIN_MTU`].
    pub fn new(domain: u32, mode: Mode, mtu: usize, sample_every: u32) -> Encoder {
        Encoder {
            domain,
            mode,
            max_message: mtu.max(MIN_MTU) - HEADROOM,
            sample_every: sample_every.max(1),
            seq: 0,
        }
    }

    pub fn domain(&self) -> u32 {
        self.domain
    }

    /// Data records sent so far (the next message's sequence number).
    pub fn sequence(&self) -> u32 {
        self.seq
    }

    /// The sampling rate the next [`Encoder::templates`] announces (a collector re-exporting
    /// several devices learns each one's from its summaries).
    pub fn set_sample_every(&mut self, n: u32) {
        self.sample_every = n.max(1);
    }

    /// One message: the mode's four templates, the sampling options template and its one
    /// record (the observation domain's sampling rate). Sent first on every connection and,
    /// over UDP, again on a timer.
    pub fn templates(&mut self, export_secs: u32) -> Vec<u8> {
        let mut m = Message::start(self, export_secs);
        let set = m.open_set(TEMPLATE_SET);
        for shape in SHAPES {
            let fields = shape.fields(self.mode);
            m.u16(shape.template_id(self.mode));
            m.u16(fields.len() as u16);
            for f in fields {
                m.field_spec(f);
            }
        }
        m.close_set(set);
        let set = m.open_set(OPTIONS_TEMPLATE_SET);
        m.u16(SAMPLING_TEMPLATE);
        m.u16(5); // fields
        m.u16(1); // of which scope
        m.field_spec(ie(DOMAIN_ID, 4));
        m.field_spec(ie(SELECTOR_ALGORITHM, 2));
        m.field_spec(ie(SAMPLING_INTERVAL, 4));
        m.field_spec(ie(SAMPLING_SPACE, 4));
        m.field_spec(ie(SAMPLING_PROBABILITY, 8));
        m.close_set(set);
        let set = m.open_set(SAMPLING_TEMPLATE);
        let n = self.sample_every;
        m.u32(self.domain);
        // 1 "systematic count-based" (every packet) or 5 "uniform probabilistic": the kernel
        // keeps each packet with probability 1/N. Interval/space give the mean 1-in-N ratio,
        // which nfdump and pmacct scale by.
        m.u16(if n == 1 { 1 } else { 5 });
        m.u32(1);
        m.u32(n - 1);
        m.buf.extend_from_slice(&(1.0f64 / n as f64).to_be_bytes());
        m.close_set(set);
        m.records += 1;
        m.finish(self)
    }

    /// The flows as data messages, each within the size limit, sets grouped by template.
    pub fn data(&mut self, flows: &[Flow], export_secs: u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut m: Option<Message> = None;
        let mut open: Option<(u16, usize)> = None;
        for f in flows {
            let shape = Shape::of(f);
            let tid = shape.template_id(self.mode);
            let len = shape.record_len(self.mode);
            let records: &[bool] = match self.mode {
                Mode::Biflow => &[false],
                Mode::Uniflow if f.rev.packets > 0 || f.rev.bytes > 0 => &[false, true],
                Mode::Uniflow => &[false],
            };
            for &reverse in records {
                let fits = |m: &Message, open: &Option<(u16, usize)>| {
                    let set = match open {
                        Some((t, _)) if *t == tid => 0,
                        _ => SET_HEADER,
                    };
                    m.buf.len() + set + len <= self.max_message
                };
                if m.as_ref().is_some_and(|m| !fits(m, &open)) {
                    let mut done = m.take().unwrap();
                    if let Some((_, at)) = open.take() {
                        done.close_set(at);
                    }
                    out.push(done.finish(self));
                }
                let msg = m.get_or_insert_with(|| Message::start(self, export_secs));
                if open.is_none_or(|(t, _)| t != tid) {
                    if let Some((_, at)) = open.take() {
                        msg.close_set(at);
                    }
                    open = Some((tid, msg.open_set(tid)));
                }
                msg.record(f, shape, self.mode, reverse);
            }
        }
        if let Some(mut done) = m {
            if let Some((_, at)) = open {
                done.close_set(at);
            }
            out.push(done.finish(self));
        }
        out
    }
}

/// A message being written; the header is filled in by [`Message::finish`].
struct Message {
    buf: Vec<u8>,
    records: u32,
}

impl Message {
    fn start(e: &Encoder, export_secs: u32) -> Message {
        let mut m = Message {
            buf: Vec::with_capacity(e.max_message),
            records: 0,
        };
        m.u16(VERSION);
        m.u16(0); // length, at finish
        m.u32(export_secs);
        m.u32(e.seq);
        m.u32(e.domain);
        debug_assert_eq!(m.buf.len(), HEADER);
        m
    }

    fn finish(self, e: &mut Encoder) -> Vec<u8> {
        let mut buf = self.buf;
        let len = buf.len() as u16;
        buf[2..4].copy_from_slice(&len.to_be_bytes());
        e.seq = e.seq.wrapping_add(self.records);
        buf
    }

    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn field_spec(&mut self, f: Ie) {
        if f.2 {
            self.u16(f.0 | 0x8000);
            self.u16(f.1);
            self.u32(REVERSE_PEN);
        } else {
            self.u16(f.0);
            self.u16(f.1);
        }
    }

    fn open_set(&mut self, id: u16) -> usize {
        let at = self.buf.len();
        self.u16(id);
        self.u16(0);
        at
    }

    fn close_set(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// One record in `shape`'s field order; `reverse`: the responder's direction as a
    /// uniflow record of its own.
    fn record(&mut self, f: &Flow, shape: Shape, mode: Mode, reverse: bool) {
        let (src, dst, sport, dport, fwd, back) = if reverse {
            (f.dst, f.src, f.dst_port, f.src_port, f.rev, f.fwd)
        } else {
            (f.src, f.dst, f.src_port, f.dst_port, f.fwd, f.rev)
        };
        for a in [src, dst] {
            match a {
                Addr::V4(b) if !shape.v6() => self.buf.extend_from_slice(&b),
                Addr::V6(b) if shape.v6() => self.buf.extend_from_slice(&b),
                // A flow's two ends share a family; a mixed one (only a forged summary) gets
                // the mapped form rather than a malformed record.
                Addr::V4(b) => {
                    let mut m = [0u8; 16];
                    m[10] = 0xff;
                    m[11] = 0xff;
                    m[12..].copy_from_slice(&b);
                    self.buf.extend_from_slice(&m);
                }
                Addr::V6(_) => self.buf.extend_from_slice(&[0; 4]),
            }
        }
        match shape {
            Shape::V4 | Shape::V6 => {
                self.u16(sport);
                self.u16(dport);
            }
            // Flow keeps an ICMP flow's type in src_port and its code in dst_port.
            Shape::V4Icmp | Shape::V6Icmp => self.u16((f.src_port << 8) | (f.dst_port & 0xff)),
        }
        self.buf.push(f.proto);
        self.u16(f.tcp_flags as u16);
        self.u32(f.ifindex);
        self.u16(f.vlan);
        self.u16(f.vlan_inner);
        self.u64(f.first_seen_ms);
        self.u64(f.last_seen_ms);
        self.u64(fwd.bytes);
        self.u64(fwd.packets);
        if mode == Mode::Biflow {
            self.u64(back.bytes);
            self.u64(back.packets);
        }
        self.records += 1;
    }
}

#[cfg(test)]
mod tests;
