//! What a DNS conversation did: queries, responses by response code, unanswered queries,
//! latency query → response, and the latest query's type and name. A flow record of a
//! [`super::Message::V3`] summary carries it for UDP flows to or from port 53 when the
//! agent measures DNS ([`super::Summary::dns`]); docs/dns.md says how each field is measured
//! and where it can be wrong.
//!
//! On the wire the block costs 1 byte for a flow without one. A flow with one: a header varint
//! saying which non-zero values follow (1 byte for a query answered NOERROR), the counts, the
//! latency as min, samples, max − min and avg − min (one sample: 2 bytes after the min), and
//! the name as a length-prefixed string. A one-query flow "www.example.com A NOERROR 20 ms" is
//! 27 bytes of block.

use serde::{Deserialize, Serialize};

/// Longest name kept, in bytes of its wire form (issue 21: "first 64 bytes"); the dotted form
/// of 64 wire bytes is at most 63 characters.
pub const DNS_NAME_MAX: usize = 64;

/// What a DNS conversation (one flow: client address and port ↔ server port 53) did in a
/// window. Counts are the window's; `qtype`, `name` and `name_truncated` describe the flow's
/// latest query.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// DNS messages with QR = 0 (queries), a retransmission with the same id included.
    pub queries: u32,
    /// DNS messages with QR = 1 (responses), matched or not.
    pub responses: u32,
    /// Responses by RCODE: 0 NOERROR, 3 NXDOMAIN, 2 SERVFAIL, 5 REFUSED, anything else.
    pub noerror: u32,
    pub nxdomain: u32,
    pub servfail: u32,
    pub refused: u32,
    pub other_rcode: u32,
    /// Queries whose transaction id no response matched before the flow left the table or
    /// before newer queries pushed it out of the flow's bounded set of pending ids.
    pub unanswered: u32,
    /// QTYPE of the flow's latest query (1 A, 28 AAAA, ...); 0 before the flow's first query.
    pub qtype: u16,
    /// Query → response times of the responses matched by transaction id; `None` without any
    /// in the window.
    pub latency: Option<Latency>,
    /// The latest query's first question name, dotted; empty before the first query, "." for
    /// the root.
    pub name: DnsName,
    /// The name was longer than [`DNS_NAME_MAX`] bytes in its wire form: `name` is its start.
    pub name_truncated: bool,
}

/// DNS latency of a flow, microseconds: `avg_us` and `samples` over the window's matched
/// responses, `min_us` and `max_us` since the flow began (the kernel keeps no per-window
/// extremes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    pub min_us: u32,
    pub avg_us: u32,
    pub max_us: u32,
    pub samples: u32,
}

/// A query name in dotted form, at most [`DNS_NAME_MAX`] bytes, printable ASCII only: a byte
/// outside `!`..`~` inside a label, and a `.` inside a label, reads as `?` (a name with such
/// bytes is rare and usually hostile; the bound keeps the record small).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DnsName {
    len: u8,
    bytes: [u8; DNS_NAME_MAX],
}

impl Default for DnsName {
    fn default() -> DnsName {
        DnsName {
            len: 0,
            bytes: [0; DNS_NAME_MAX],
        }
    }
}

impl DnsName {
    /// From text, if it is at most [`DNS_NAME_MAX`] bytes of printable ASCII.
    pub fn new(s: &str) -> Option<DnsName> {
        let b = s.as_bytes();
        if b.len() > DNS_NAME_MAX || !b.iter().all(|c| c.is_ascii_graphic()) {
            return None;
        }
        let mut n = DnsName {
            len: b.len() as u8,
            ..DnsName::default()
        };
        n.bytes[..b.len()].copy_from_slice(b);
        Some(n)
    }

    /// The dotted form of a name's wire form (length-prefixed labels, as a query carries it),
    /// cut at [`DNS_NAME_MAX`] bytes: "\x03www\x07example\x03com\x00" is "www.example.com",
    /// "\x00" is ".". Stops at a zero length, at a byte that cannot be a label length
    /// (compression pointer or reserved), or at the end.
    pub fn from_wire(wire: &[u8]) -> DnsName {
        let wire = &wire[..wire.len().min(DNS_NAME_MAX)];
        let mut n = DnsName::default();
        let mut out = 0usize;
        let mut i = 0usize;
        while i < wire.len() {
            let l = wire[i] as usize;
            if l == 0 || l > 63 {
                break;
            }
            if out > 0 {
                n.bytes[out] = b'.';
                out += 1;
            }
            for &c in wire[i + 1..].iter().take(l) {
                n.bytes[out] = if c.is_ascii_graphic() && c != b'.' {
                    c
                } else {
                    b'?'
                };
                out += 1;
            }
            i += 1 + l;
        }
        if out == 0 && wire.first() == Some(&0) {
            n.bytes[0] = b'.';
            out = 1;
        }
        n.len = out as u8;
        n
    }

    pub fn as_str(&self) -> &str {
        // Only printable ASCII is ever stored (new, from_wire, deserialize check it).
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl core::fmt::Debug for DnsName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl core::fmt::Display for DnsName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for DnsName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DnsName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DnsName, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DnsName;
            fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
                write!(
                    f,
                    "a DNS name of at most {DNS_NAME_MAX} printable ASCII bytes"
                )
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<DnsName, E> {
                DnsName::new(s).ok_or_else(|| E::custom("bad DNS name"))
            }
        }
        d.deserialize_str(V)
    }
}

/// The compact wire form of `Option<Dns>` (`#[serde(with = "...")]` on
/// [`super::FlowRecord::dns`]): one varint `h`, 0 for none, else 1 + a header whose bits say
/// which non-zero values follow, in this order: (0) queries, (1) responses, (2) noerror,
/// (3) qtype, (4) latency (min, samples, max − min, avg − min), (5) name, (6) nxdomain,
/// (7) servfail, (8) refused, (9) other_rcode, (10) unanswered; bit (11) is `name_truncated`.
/// The most common come first so that `h` stays one byte for an answered query.
pub(super) mod compact {
    use super::{Dns, DnsName, Latency};
    use core::fmt;
    use serde::{
        de::{self, SeqAccess, Visitor},
        ser::SerializeTuple,
        Deserializer, Serializer,
    };

    const QUERIES: u32 = 1 << 0;
    const RESPONSES: u32 = 1 << 1;
    const NOERROR: u32 = 1 << 2;
    const QTYPE: u32 = 1 << 3;
    const LATENCY: u32 = 1 << 4;
    const NAME: u32 = 1 << 5;
    const NXDOMAIN: u32 = 1 << 6;
    const SERVFAIL: u32 = 1 << 7;
    const REFUSED: u32 = 1 << 8;
    const OTHER: u32 = 1 << 9;
    const UNANSWERED: u32 = 1 << 10;
    const TRUNCATED: u32 = 1 << 11;
    const BITS: u32 = 12;
    /// The header, 9 counts, 4 latency values and the name.
    const MAX_ELEMENTS: usize = 15;

    /// The u32 counts in header-bit order, before the latency and the name.
    fn head(d: &Dns) -> [(u32, u32); 3] {
        [
            (QUERIES, d.queries),
            (RESPONSES, d.responses),
            (NOERROR, d.noerror),
        ]
    }

    /// The u32 counts after the name.
    fn tail(d: &Dns) -> [(u32, u32); 5] {
        [
            (NXDOMAIN, d.nxdomain),
            (SERVFAIL, d.servfail),
            (REFUSED, d.refused),
            (OTHER, d.other_rcode),
            (UNANSWERED, d.unanswered),
        ]
    }

    pub fn serialize<S: Serializer>(dns: &Option<Dns>, s: S) -> Result<S::Ok, S::Error> {
        // postcard writes a tuple's elements and no length, so the tuple can be as long as
        // the header says.
        let mut t = s.serialize_tuple(MAX_ELEMENTS)?;
        let Some(d) = dns else {
            t.serialize_element(&0u32)?;
            return t.end();
        };
        let mut header = 0u32;
        for (bit, v) in head(d).into_iter().chain(tail(d)) {
            if v != 0 {
                header |= bit;
            }
        }
        if d.qtype != 0 {
            header |= QTYPE;
        }
        if d.latency.is_some() {
            header |= LATENCY;
        }
        if !d.name.is_empty() {
            header |= NAME;
        }
        if d.name_truncated {
            header |= TRUNCATED;
        }
        t.serialize_element(&(header + 1))?;
        for (_, v) in head(d) {
            if v != 0 {
                t.serialize_element(&v)?;
            }
        }
        if d.qtype != 0 {
            t.serialize_element(&d.qtype)?;
        }
        if let Some(l) = d.latency {
            // A sender's latency always has min <= avg <= max; clamp rather than fail.
            let max = l.max_us.max(l.min_us);
            let avg = l.avg_us.clamp(l.min_us, max);
            t.serialize_element(&l.min_us)?;
            t.serialize_element(&l.samples)?;
            t.serialize_element(&(max - l.min_us))?;
            t.serialize_element(&(avg - l.min_us))?;
        }
        if !d.name.is_empty() {
            t.serialize_element(&d.name)?;
        }
        for (_, v) in tail(d) {
            if v != 0 {
                t.serialize_element(&v)?;
            }
        }
        t.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Dns>, D::Error> {
        d.deserialize_tuple(MAX_ELEMENTS, Block)
    }

    struct Block;

    fn next<'de, T: de::Deserialize<'de>, A: SeqAccess<'de>>(seq: &mut A) -> Result<T, A::Error> {
        seq.next_element()?
            .ok_or_else(|| de::Error::custom("truncated DNS block"))
    }

    fn nonzero<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<u32, A::Error> {
        let v: u32 = next(seq)?;
        if v == 0 {
            return Err(de::Error::custom("a zero the DNS header says is not"));
        }
        Ok(v)
    }

    impl<'de> Visitor<'de> for Block {
        type Value = Option<Dns>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a DNS block")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Dns>, A::Error> {
            let h: u32 = next(&mut seq)?;
            if h == 0 {
                return Ok(None);
            }
            let header = h - 1;
            if header >> BITS != 0 {
                return Err(de::Error::custom("unknown bits in a DNS block"));
            }
            let mut d = Dns {
                name_truncated: header & TRUNCATED != 0,
                ..Dns::default()
            };
            let mut head_vals = [0u32; 3];
            for (i, (bit, _)) in head(&d).iter().enumerate() {
                if header & bit != 0 {
                    head_vals[i] = nonzero(&mut seq)?;
                }
            }
            [d.queries, d.responses, d.noerror] = head_vals;
            if header & QTYPE != 0 {
                d.qtype = next(&mut seq)?;
                if d.qtype == 0 {
                    return Err(de::Error::custom("a zero the DNS header says is not"));
                }
            }
            if header & LATENCY != 0 {
                let min_us: u32 = next(&mut seq)?;
                let samples: u32 = nonzero(&mut seq)?;
                let span: u32 = next(&mut seq)?;
                let above: u32 = next(&mut seq)?;
                let max_us = min_us
                    .checked_add(span)
                    .ok_or_else(|| de::Error::custom("DNS latency out of range"))?;
                if above > span {
                    return Err(de::Error::custom("DNS latency average above its maximum"));
                }
                d.latency = Some(Latency {
                    min_us,
                    avg_us: min_us + above,
                    max_us,
                    samples,
                });
            }
            if header & NAME != 0 {
                let name: DnsName = next(&mut seq)?;
                if name.is_empty() {
                    return Err(de::Error::custom(
                        "an empty name the DNS header says is not",
                    ));
                }
                d.name = name;
            }
            let mut tail_vals = [0u32; 5];
            for (i, (bit, _)) in tail(&d).iter().enumerate() {
                if header & bit != 0 {
                    tail_vals[i] = nonzero(&mut seq)?;
                }
            }
            [
                d.nxdomain,
                d.servfail,
                d.refused,
                d.other_rcode,
                d.unanswered,
            ] = tail_vals;
            Ok(Some(d))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct R(#[serde(with = "compact")] Option<Dns>);

    fn bytes(d: Option<Dns>) -> Vec<u8> {
        postcard::to_allocvec(&R(d)).unwrap()
    }

    fn back(b: &[u8]) -> Result<Option<Dns>, postcard::Error> {
        postcard::from_bytes::<R>(b).map(|r| r.0)
    }

    fn answered() -> Dns {
        Dns {
            queries: 1,
            responses: 1,
            noerror: 1,
            qtype: 1,
            latency: Some(Latency {
                min_us: 20_000,
                avg_us: 20_000,
                max_us: 20_000,
                samples: 1,
            }),
            name: DnsName::new("www.example.com").unwrap(),
            ..Dns::default()
        }
    }

    #[test]
    fn none_is_one_byte_and_an_answered_query_is_small() {
        assert_eq!(bytes(None), [0]);
        // header 1 + 3 counts + qtype 1 + latency 3+1+1+1 + name 1+15.
        assert_eq!(bytes(Some(answered())).len(), 27);
        assert_eq!(bytes(Some(answered()))[0], 0x3f + 1);
        assert_eq!(bytes(Some(Dns::default())), [1]);
    }

    #[test]
    fn every_field_round_trips_alone_and_together() {
        let full = Dns {
            queries: 9,
            responses: 8,
            noerror: 1,
            nxdomain: 2,
            servfail: 3,
            refused: 1,
            other_rcode: 1,
            unanswered: 1,
            qtype: 28,
            latency: Some(Latency {
                min_us: 900,
                avg_us: 1_500,
                max_us: 70_000,
                samples: 8,
            }),
            name: DnsName::new("a-very-long-label-for-a-name.example.org").unwrap(),
            name_truncated: true,
        };
        assert_eq!(back(&bytes(Some(full))), Ok(Some(full)));
        let fields: [fn(&mut Dns); 12] = [
            |d| d.queries = 1,
            |d| d.responses = 1,
            |d| d.noerror = 1,
            |d| d.nxdomain = 1,
            |d| d.servfail = 1,
            |d| d.refused = 1,
            |d| d.other_rcode = 1,
            |d| d.unanswered = u32::MAX,
            |d| d.qtype = 65535,
            |d| {
                d.latency = Some(Latency {
                    min_us: u32::MAX,
                    avg_us: u32::MAX,
                    max_us: u32::MAX,
                    samples: 1,
                })
            },
            |d| d.name = DnsName::new(".").unwrap(),
            |d| d.name_truncated = true,
        ];
        for (i, set) in fields.iter().enumerate() {
            let mut d = Dns::default();
            set(&mut d);
            assert_eq!(back(&bytes(Some(d))), Ok(Some(d)), "field {i}");
        }
        assert_eq!(back(&bytes(None)), Ok(None));
    }

    #[test]
    fn bad_blocks_do_not_decode() {
        for bad in [
            // An unknown header bit; a count announced but 0 or missing.
            &[0x81, 0x20][..],
            &[0x02, 0],
            &[0x02],
            // Latency: 0 samples; average above the maximum.
            &[0x11, 5, 0, 0, 0],
            &[0x11, 5, 1, 2, 3],
            // A name: empty, not printable, too long.
            &[0x21, 0],
            &[0x21, 1, b' '],
        ] {
            assert!(back(bad).is_err(), "{bad:?}");
        }
        let mut long = alloc::vec![0x21u8, 65];
        long.extend([b'a'; 65]);
        assert!(back(&long).is_err());
    }

    #[test]
    fn names_read_from_their_wire_form() {
        let n = |w: &[u8]| alloc::string::String::from(DnsName::from_wire(w).as_str());
        assert_eq!(n(b"\x03www\x07example\x03com\x00"), "www.example.com");
        assert_eq!(n(b"\x00"), ".");
        assert_eq!(n(b""), "");
        // Odd bytes and a dot inside a label; a cut label; a pointer stops the name.
        assert_eq!(n(b"\x03a.b\x02\x01z\x00"), "a?b.?z");
        assert_eq!(n(b"\x05abc"), "abc");
        assert_eq!(n(b"\x01a\xc0\x0c"), "a");
        // 64 wire bytes at most: 63 one-byte labels would be 125 characters.
        let mut w = Vec::new();
        for _ in 0..40 {
            w.extend(b"\x01x");
        }
        let s = n(&w);
        assert_eq!(s.len(), 63);
        assert!(DnsName::new(&s).is_some());
        assert!(DnsName::new("a b").is_none());
    }
}
