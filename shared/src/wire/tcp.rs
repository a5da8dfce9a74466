//! What a TCP connection did: retransmissions, resets and FINs each way, and how its
//! handshake ended. A flow record of a [`super::Message::V2`] summary carries it for TCP flows
//! when the agent measures it ([`super::Summary::tcp_health`]); docs/tcp.md says how each
//! field is measured and where it can be wrong.
//!
//! On the wire the block costs 1 byte for a flow without one, and 1 byte plus one varint per
//! non-zero count for a TCP flow: one header varint holds the outcome, the `decided` bit and
//! which counts follow (a closed connection with no retransmission: 3 bytes). Issue 21 asks
//! for at most 32 bytes per flow record with the new fields; records were 21.8 bytes.

use super::Count;
use serde::{Deserialize, Serialize};

/// How a connection's handshake and end went, as far as the agent's interface saw it.
#[repr(u8)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// No handshake seen (the flow began before the agent, or mid-stream on this path).
    #[default]
    Unknown = 0,
    /// SYN seen, no SYN-ACK yet.
    Connecting = 1,
    /// SYN, SYN-ACK and the initiator's ACK seen.
    Established = 2,
    /// The SYN was answered by a RST (closed port, or a firewall's reject).
    Refused = 3,
    /// SYN (and its retries) with no SYN-ACK before the flow expired from the table.
    Unanswered = 4,
    /// A RST after the SYN-ACK, or on a flow whose handshake was not seen, before FIN both ways.
    Reset = 5,
    /// FIN seen in both directions with no RST before.
    Closed = 6,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Unknown,
        Outcome::Connecting,
        Outcome::Established,
        Outcome::Refused,
        Outcome::Unanswered,
        Outcome::Reset,
        Outcome::Closed,
    ];

    /// The value as the wire and the kernel state hold it; `None` beyond the last.
    pub fn from_u8(v: u8) -> Option<Outcome> {
        Outcome::ALL.get(v as usize).copied()
    }

    /// Lowercase name, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Unknown => "unknown",
            Outcome::Connecting => "connecting",
            Outcome::Established => "established",
            Outcome::Refused => "refused",
            Outcome::Unanswered => "unanswered",
            Outcome::Reset => "reset",
            Outcome::Closed => "closed",
        }
    }

    /// Refused or unanswered: the connection never came up.
    pub fn is_failed_connect(self) -> bool {
        matches!(self, Outcome::Refused | Outcome::Unanswered)
    }
}

impl core::fmt::Display for Outcome {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.pad(self.name())
    }
}

/// One direction of a connection in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpDir {
    /// Retransmitted data segments (`packets`; a GSO aggregate by its segments) and their
    /// payload bytes (`bytes`, TCP payload only) in the window.
    pub retrans: Count,
    /// RST segments in the window.
    pub rst: u32,
    /// FIN segments in the window (a retransmitted FIN counts again).
    pub fin: u32,
}

impl TcpDir {
    pub fn is_zero(&self) -> bool {
        *self == TcpDir::default()
    }
}

/// What a TCP connection did in a window, oriented as its flow (fwd: initiator → responder).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tcp {
    /// The connection's state at the end of the window.
    pub outcome: Outcome,
    /// True in the one window in which the connection reached `outcome`: adding up records
    /// with `decided` set counts each connection once per outcome it reached (a connection
    /// established in one window and closed in a later one counts once for each).
    pub decided: bool,
    /// SYNs the initiator sent beyond the first, since the flow began (not a delta: a
    /// handshake's retries are one number).
    pub syn_retries: u32,
    /// Initiator → responder.
    pub fwd: TcpDir,
    /// Responder → initiator.
    pub rev: TcpDir,
}

impl Tcp {
    /// Retransmitted segments and bytes both ways.
    pub fn retrans(&self) -> Count {
        self.fwd.retrans.plus(&self.rev.retrans)
    }
}

/// The compact wire form of `Option<Tcp>` (`#[serde(with = "...")]` on
/// [`super::FlowRecord::tcp`]): one varint `h`, 0 for none, else 1 + a header whose bits say
/// (0..3) the outcome, (3) `decided`, and which non-zero values follow, in this order:
/// (4) fwd FIN, (5) rev FIN, (6) rev RST, (7) fwd RST, (8) SYN retries, (9) fwd retransmitted
/// segments and bytes, (10) rev retransmitted segments and bytes. The most common come first so
/// that `h` stays one byte (below 128) for closed, refused and quiet connections.
pub(super) mod compact {
    use super::{Count, Outcome, Tcp};
    use core::fmt;
    use serde::{
        de::{self, SeqAccess, Visitor},
        ser::SerializeTuple,
        Deserializer, Serializer,
    };

    const DECIDED: u32 = 1 << 3;
    const FWD_FIN: u32 = 1 << 4;
    const REV_FIN: u32 = 1 << 5;
    const REV_RST: u32 = 1 << 6;
    const FWD_RST: u32 = 1 << 7;
    const SYN_RETRIES: u32 = 1 << 8;
    const FWD_RETRANS: u32 = 1 << 9;
    const REV_RETRANS: u32 = 1 << 10;
    /// The header plus at most 6 u32 and 4 u64 values.
    const MAX_ELEMENTS: usize = 11;

    /// The u32 values in header-bit order (the retransmission pairs apart).
    fn small(t: &Tcp) -> [(u32, u32); 5] {
        [
            (FWD_FIN, t.fwd.fin),
            (REV_FIN, t.rev.fin),
            (REV_RST, t.rev.rst),
            (FWD_RST, t.fwd.rst),
            (SYN_RETRIES, t.syn_retries),
        ]
    }

    fn retrans_nonzero(c: &Count) -> bool {
        c.packets != 0 || c.bytes != 0
    }

    pub fn serialize<S: Serializer>(tcp: &Option<Tcp>, s: S) -> Result<S::Ok, S::Error> {
        // postcard writes a tuple's elements and no length, so the tuple can be as long as
        // the header says.
        let mut t = s.serialize_tuple(MAX_ELEMENTS)?;
        let Some(tcp) = tcp else {
            t.serialize_element(&0u32)?;
            return t.end();
        };
        let mut header = tcp.outcome as u32;
        if tcp.decided {
            header |= DECIDED;
        }
        for (bit, v) in small(tcp) {
            if v != 0 {
                header |= bit;
            }
        }
        if retrans_nonzero(&tcp.fwd.retrans) {
            header |= FWD_RETRANS;
        }
        if retrans_nonzero(&tcp.rev.retrans) {
            header |= REV_RETRANS;
        }
        t.serialize_element(&(header + 1))?;
        for (_, v) in small(tcp) {
            if v != 0 {
                t.serialize_element(&v)?;
            }
        }
        for c in [&tcp.fwd.retrans, &tcp.rev.retrans] {
            if retrans_nonzero(c) {
                t.serialize_element(&c.packets)?;
                t.serialize_element(&c.bytes)?;
            }
        }
        t.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Tcp>, D::Error> {
        d.deserialize_tuple(MAX_ELEMENTS, Block)
    }

    struct Block;

    fn next<'de, T: de::Deserialize<'de>, A: SeqAccess<'de>>(seq: &mut A) -> Result<T, A::Error> {
        seq.next_element()?
            .ok_or_else(|| de::Error::custom("truncated TCP block"))
    }

    impl<'de> Visitor<'de> for Block {
        type Value = Option<Tcp>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a TCP block")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Tcp>, A::Error> {
            let h: u32 = next(&mut seq)?;
            if h == 0 {
                return Ok(None);
            }
            let header = h - 1;
            if header >> 11 != 0 {
                return Err(de::Error::custom("unknown bits in a TCP block"));
            }
            let outcome = Outcome::from_u8((header & 7) as u8)
                .ok_or_else(|| de::Error::custom("unknown TCP outcome"))?;
            let mut tcp = Tcp {
                outcome,
                decided: header & DECIDED != 0,
                ..Tcp::default()
            };
            let mut vals = [0u32; 5];
            for (i, (bit, _)) in small(&tcp).iter().enumerate() {
                if header & bit != 0 {
                    vals[i] = next(&mut seq)?;
                    if vals[i] == 0 {
                        return Err(de::Error::custom("a zero the TCP header says is not"));
                    }
                }
            }
            [
                tcp.fwd.fin,
                tcp.rev.fin,
                tcp.rev.rst,
                tcp.fwd.rst,
                tcp.syn_retries,
            ] = vals;
            for (bit, dir) in [(FWD_RETRANS, &mut tcp.fwd), (REV_RETRANS, &mut tcp.rev)] {
                if header & bit != 0 {
                    dir.retrans = Count {
                        packets: next(&mut seq)?,
                        bytes: next(&mut seq)?,
                    };
                    if !retrans_nonzero(&dir.retrans) {
                        return Err(de::Error::custom("a zero the TCP header says is not"));
                    }
                }
            }
            Ok(Some(tcp))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct R(#[serde(with = "compact")] Option<Tcp>);

    fn bytes(t: Option<Tcp>) -> Vec<u8> {
        postcard::to_allocvec(&R(t)).unwrap()
    }

    fn back(b: &[u8]) -> Result<Option<Tcp>, postcard::Error> {
        postcard::from_bytes::<R>(b).map(|r| r.0)
    }

    #[test]
    fn none_is_one_byte_and_common_blocks_are_small() {
        assert_eq!(bytes(None), [0]);
        let quiet = Tcp {
            outcome: Outcome::Established,
            ..Tcp::default()
        };
        assert_eq!(bytes(Some(quiet)), [3]);
        let closed = Tcp {
            outcome: Outcome::Closed,
            decided: true,
            fwd: TcpDir {
                fin: 1,
                ..TcpDir::default()
            },
            rev: TcpDir {
                fin: 1,
                ..TcpDir::default()
            },
            ..Tcp::default()
        };
        assert_eq!(bytes(Some(closed)).len(), 3);
        let refused = Tcp {
            outcome: Outcome::Refused,
            decided: true,
            rev: TcpDir {
                rst: 1,
                ..TcpDir::default()
            },
            ..Tcp::default()
        };
        assert_eq!(bytes(Some(refused)).len(), 2);
    }

    #[test]
    fn every_field_round_trips_alone_and_together() {
        let full = Tcp {
            outcome: Outcome::Reset,
            decided: true,
            syn_retries: 3,
            fwd: TcpDir {
                retrans: Count {
                    packets: 2,
                    bytes: 2896,
                },
                rst: 4,
                fin: 5,
            },
            rev: TcpDir {
                retrans: Count {
                    packets: 6,
                    bytes: 70_000_000_000,
                },
                rst: 7,
                fin: 8,
            },
        };
        assert_eq!(back(&bytes(Some(full))), Ok(Some(full)));
        let fields: [fn(&mut Tcp); 9] = [
            |t| t.syn_retries = 9,
            |t| t.fwd.retrans.packets = 1,
            |t| t.fwd.retrans.bytes = 1,
            |t| t.fwd.rst = 1,
            |t| t.fwd.fin = 1,
            |t| t.rev.retrans.packets = 1,
            |t| t.rev.retrans.bytes = 1,
            |t| t.rev.rst = 1,
            |t| t.rev.fin = 1,
        ];
        for (i, set) in fields.iter().enumerate() {
            for o in Outcome::ALL {
                let mut t = Tcp {
                    outcome: o,
                    decided: i % 2 == 0,
                    ..Tcp::default()
                };
                set(&mut t);
                assert_eq!(back(&bytes(Some(t))), Ok(Some(t)), "field {i}, {o}");
            }
        }
        assert_eq!(back(&bytes(None)), Ok(None));
    }

    #[test]
    fn bad_blocks_do_not_decode() {
        // Outcome 7, an unknown header bit, a value the header announces but is missing or 0.
        for bad in [&[8u8][..], &[0x81, 0x10], &[0x11], &[0x11, 0]] {
            assert!(back(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn outcomes_read_back_from_their_number_and_print_their_name() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_u8(o as u8), Some(o));
        }
        assert_eq!(Outcome::from_u8(7), None);
        assert_eq!(alloc::format!("{:>8}", Outcome::Reset), "   reset");
    }
}
