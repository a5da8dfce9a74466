//! Builds frames byte by byte, for tests and fuzzers: the well-formed ones traffic would carry
//! and the broken ones an attacker or a bad driver might.

use alloc::vec::Vec;

pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

/// Network layer of a crafted frame.
#[derive(Clone, Debug)]
pub enum Ip {
    V4 {
        src: [u8; 4],
        dst: [u8; 4],
        /// Raw option bytes; padded to a multiple of 4.
        options: Vec<u8>,
        /// Flags and fragment offset field as on the wire (0x2000 = MF).
        frag: u16,
    },
    V6 {
        src: [u8; 16],
        dst: [u8; 16],
        /// Extension headers in order: (header type, body bytes after the 2-byte header).
        /// For a fragment header (44) the body is 6 bytes: offset/flags (2) and id (4).
        ext: Vec<(u8, Vec<u8>)>,
    },
    /// Any other ethertype, with raw bytes.
    Other { ethertype: u16 },
}

/// Transport layer of a crafted frame.
#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        /// Sequence and acknowledgement numbers (`tcp4`: 1 and 0).
        seq: u32,
        ack: u32,
        /// Raw option bytes; padded to a multiple of 4.
        options: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmp {
        ty: u8,
        code: u8,
    },
    /// A protocol without ports, with this protocol number.
    Raw(u8),
}

/// A frame to build.
#[derive(Clone, Debug)]
pub struct Packet {
    /// VLAN tags outermost first: (TPID, VLAN id).
    pub vlans: Vec<(u16, u16)>,
    pub ip: Ip,
    pub l4: L4,
    pub payload: usize,
}

impl Packet {
    pub fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: usize) -> Packet {
        Packet {
            vlans: Vec::new(),
            ip: Ip::V4 {
                src,
                dst,
                options: Vec::new(),
                frag: 0,
            },
            l4: L4::Udp { sport, dport },
            payload,
        }
    }

    pub fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Packet {
        Packet {
            l4: L4::Tcp {
                sport,
                dport,
                flags,
                seq: 1,
                ack: 0,
                options: Vec::new(),
            },
            ..Packet::udp4(src, dst, sport, dport, 0)
        }
    }

    pub fn udp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, payload: usize) -> Packet {
        Packet {
            vlans: Vec::new(),
            ip: Ip::V6 {
                src,
                dst,
                ext: Vec::new(),
            },
            l4: L4::Udp { sport, dport },
            payload,
        }
    }

    /// The protocol number the L4 part stands for.
    pub fn proto(&self) -> u8 {
        match (&self.l4, &self.ip) {
            (L4::Tcp { .. }, _) => 6,
            (L4::Udp { .. }, _) => 17,
            (L4::Icmp { .. }, Ip::V6 { .. }) => 58,
            (L4::Icmp { .. }, _) => 1,
            (L4::Raw(p), _) => *p,
        }
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
                seq,
                ack,
                options,
            } => {
                let opts = pad4(options);
                v.extend_from_slice(&sport.to_be_bytes());
                v.extend_from_slice(&dport.to_be_bytes());
                v.extend_from_slice(&seq.to_be_bytes());
                v.extend_from_slice(&ack.to_be_bytes());
                v.push((((20 + opts.len()) / 4) as u8) << 4);
                v.push(*flags);
                v.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, csum, urg
                v.extend_from_slice(&opts);
            }
            L4::Udp { sport, dport } => {
                v.extend_from_slice(&sport.to_be_bytes());
                v.extend_from_slice(&dport.to_be_bytes());
                v.extend_from_slice(&((8 + self.payload) as u16).to_be_bytes());
                v.extend_from_slice(&[0, 0]);
            }
            L4::Icmp { ty, code } => {
                v.extend_from_slice(&[*ty, *code, 0, 0, 0, 1, 0, 1]);
            }
            L4::Raw(_) => {}
        }
        v.resize(v.len() + self.payload, 0xab);
        v
    }

    /// The frame's bytes, with consistent length fields.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]); // dst MAC
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]); // src MAC
        for (tpid, vid) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        let l4 = self.l4_bytes();
        match &self.ip {
            Ip::V4 {
                src,
                dst,
                options,
                frag,
            } => {
                let opts = pad4(options);
                let ihl = 20 + opts.len();
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                f.push(0x40 | (ihl / 4) as u8);
                f.push(0);
                f.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
                f.extend_from_slice(&[0, 1]);
                f.extend_from_slice(&frag.to_be_bytes());
                f.push(64);
                f.push(self.proto());
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(src);
                f.extend_from_slice(dst);
                f.extend_from_slice(&opts);
            }
            Ip::V6 { src, dst, ext } => {
                let mut exts = Vec::new();
                for (i, (_, body)) in ext.iter().enumerate() {
                    let next = ext.get(i + 1).map(|e| e.0).unwrap_or(self.proto());
                    let ty = ext[i].0;
                    exts.push(next);
                    if ty == 51 {
                        // AH: length in 4-byte units minus 2
                        exts.push(((body.len() + 2) / 4).saturating_sub(2) as u8);
                    } else if ty == 44 {
                        exts.push(0);
                    } else {
                        exts.push(((body.len() + 2) / 8).saturating_sub(1) as u8);
                    }
                    exts.extend_from_slice(body);
                }
                let first = ext.first().map(|e| e.0).unwrap_or(self.proto());
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&((exts.len() + l4.len()) as u16).to_be_bytes());
                f.push(first);
                f.push(64);
                f.extend_from_slice(src);
                f.extend_from_slice(dst);
                f.extend_from_slice(&exts);
            }
            Ip::Other { ethertype } => {
                f.extend_from_slice(&ethertype.to_be_bytes());
            }
        }
        f.extend_from_slice(&l4);
        f
    }
}

/// An IPv6 extension header body of `units` 8-byte units (the 2-byte header excluded).
pub fn ext_body(units: usize) -> Vec<u8> {
    let mut v = alloc::vec![0u8; units * 8 + 6];
    // PadN option so a real stack would accept it too.
    v[0] = 1;
    v[1] = (units * 8 + 4) as u8;
    v
}

/// A fragment header body: offset in 8-byte units, more-fragments flag.
pub fn frag_body(offset: u16, more: bool) -> Vec<u8> {
    let field = (offset << 3) | more as u16;
    let mut v = Vec::new();
    v.extend_from_slice(&field.to_be_bytes());
    v.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    v
}

fn pad4(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    while !v.len().is_multiple_of(4) {
        v.push(0); // EOL / NOP padding
    }
    v
}
