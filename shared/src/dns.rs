//! DNS over UDP port 53, as the programs see it: a bounded parser of a message's header and
//! first question, and the per-flow state ([`DnsState`], in its own hash map [`DNS_MAP`],
//! touched only by port-53 packets) that counts queries, responses by RCODE, and matches a
//! response to its query by transaction id for the latency.
//!
//! Bounds (docs/dns.md): a name is walked label by label for at most 255 bytes (RFC 1035's
//! limit) and [`MAX_LABELS`] labels; a compression pointer in a question's name is not
//! followed (a question names itself in full; a pointer there, and so every pointer loop, is
//! malformed); the first [`NAME_KEPT`] bytes of the name's wire form are kept. A flow keeps
//! at most [`PENDING`] unanswered transaction ids: a newer query pushes the oldest out, which
//! then counts as unanswered. Everything is plain code over [`Frame`] so host tests run it.

use crate::parse::Frame;

/// Map name of the per-flow DNS state (hash map `FlowKey` → [`DnsState`]).
pub const DNS_MAP: &str = "DNS_FLOWS";
/// Map name of the per-CPU DNS latency histogram (one `u64` per `rtt_bucket`).
pub const DNS_HIST_MAP: &str = "DNS_HIST";
/// Entries of [`DNS_MAP`] (the loader keeps it): DNS flows alive at once.
pub const DEFAULT_DNS_FLOWS: u32 = 4096;
/// The DNS port.
pub const PORT: u16 = 53;
/// Transaction ids a flow remembers while their responses are outstanding.
pub const PENDING: usize = 4;
/// Bytes of a name's wire form kept (the wire's `DNS_NAME_MAX`).
pub const NAME_KEPT: usize = 64;
/// Longest name (RFC 1035 2.3.4), and the most labels it can have.
pub const MAX_NAME: usize = 255;
pub const MAX_LABELS: usize = 128;
/// The DNS header.
pub const HEADER_LEN: usize = 12;

/// Why a port-53 payload is not a DNS message we read (each is a program stat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than the 12-byte header.
    Header,
    /// A label, the name's end or the question's type and class lie past the packet, or a
    /// label length uses the reserved 0x40/0x80 forms.
    Label,
    /// A compression pointer in the question's name (never followed: no pointer loop).
    Pointer,
    /// QDCOUNT 0: nothing to key a query on.
    NoQuestion,
    /// A name longer than 255 bytes or 128 labels.
    LongName,
}

/// What the parser read of one message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    /// QR: a response.
    pub response: bool,
    pub rcode: u8,
    pub qtype: u16,
    /// Bytes of the name's wire form (with its final zero), at most 255.
    pub name_len: u16,
}

/// Reads the header and first question of the DNS message in `[off, end)` (the UDP payload:
/// a frame's padding after it is not read); the question's name's first [`NAME_KEPT`] wire
/// bytes go to `name` (the rest of `name` is left as it was).
#[inline(always)]
pub fn parse<F: Frame + ?Sized>(
    f: &F,
    off: usize,
    end: usize,
    name: &mut [u8; NAME_KEPT],
) -> Result<Message, Malformed> {
    let mut m = Message::default();
    parse_into(f, off, end, name, &mut m)?;
    Ok(m)
}

/// `f.load` of `[at, at + N)`, if that ends by `end`.
#[inline(always)]
fn load<F: Frame + ?Sized, const N: usize>(f: &F, at: usize, end: usize) -> Option<[u8; N]> {
    if at + N > end {
        return None;
    }
    f.load::<N>(at).map(|b| b.0)
}

/// [`parse`] into `out` (the programs' form: each field stored once, as it is read, so no
/// copy of a byte array is re-read unaligned, which the verifier refuses).
#[inline(always)]
pub fn parse_into<F: Frame + ?Sized>(
    f: &F,
    off: usize,
    end: usize,
    name: &mut [u8; NAME_KEPT],
    out: &mut Message,
) -> Result<(), Malformed> {
    let h = load::<F, HEADER_LEN>(f, off, end).ok_or(Malformed::Header)?;
    // Each value taken from its bytes at once, one byte at a time: the byte arrays live on
    // the stack unaligned, where the verifier refuses a two-byte read.
    // SAFETY (here and below): writes to fields of a valid `&mut Message`.
    unsafe {
        core::ptr::write_volatile(&raw mut out.id, (h[0] as u16) << 8 | h[1] as u16);
        core::ptr::write_volatile(&raw mut out.response, h[2] & 0x80 != 0);
        core::ptr::write_volatile(&raw mut out.rcode, h[3] & 0x0f);
    }
    let qdcount = (h[4] as u16) << 8 | h[5] as u16;
    if qdcount == 0 {
        return Err(Malformed::NoQuestion);
    }
    let start = off + HEADER_LEN;
    // Label by label: one load per label, at most MAX_LABELS of them. Two bytes per load
    // (a length byte is always followed by more: a label, or the type after the end): a
    // one-byte bounds check compiles to a form the verifier does not follow.
    let mut len = 0usize;
    let mut ended = false;
    for _ in 0..MAX_LABELS {
        let l = load::<F, 2>(f, start + len, end).ok_or(Malformed::Label)?[0] as usize;
        if l == 0 {
            len += 1;
            ended = true;
            break;
        }
        match l & 0xc0 {
            0xc0 => return Err(Malformed::Pointer),
            0 => {}
            _ => return Err(Malformed::Label),
        }
        len += 1 + l;
        if len >= MAX_NAME {
            return Err(Malformed::LongName);
        }
    }
    if !ended {
        return Err(Malformed::LongName);
    }
    // Type and class after the name; the label walk did not read the labels' bytes.
    let tc = load::<F, 4>(f, start + len, end).ok_or(Malformed::Label)?;
    unsafe {
        core::ptr::write_volatile(&raw mut out.qtype, (tc[0] as u16) << 8 | tc[1] as u16);
        core::ptr::write_volatile(&raw mut out.name_len, len as u16);
    }
    for (i, b) in name.iter_mut().enumerate() {
        if i >= len {
            break;
        }
        // Within the name, before the type just read: two bytes are there. The offset is
        // read back through memory so the compiler keeps the load's bounds check, which it
        // could prove from the type's and the verifier could not.
        let at = start + i;
        // SAFETY: reading a local.
        let at = unsafe { core::ptr::read_volatile(&at) };
        *b = load::<F, 2>(f, at, end).ok_or(Malformed::Label)?[0];
    }
    Ok(())
}

/// RCODE classes counted apart, as indexes of [`DnsState::rcodes`].
pub const NOERROR: usize = 0;
pub const NXDOMAIN: usize = 1;
pub const SERVFAIL: usize = 2;
pub const REFUSED: usize = 3;
pub const OTHER: usize = 4;

/// The [`DnsState::rcodes`] index of an RCODE.
#[inline(always)]
pub fn rcode_class(rcode: u8) -> usize {
    match rcode {
        0 => NOERROR,
        3 => NXDOMAIN,
        2 => SERVFAIL,
        5 => REFUSED,
        _ => OTHER,
    }
}

/// One DNS flow's state, cumulative since the flow's first port-53 message (the agent takes
/// deltas). 160 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsState {
    pub queries: u32,
    pub responses: u32,
    /// Responses by [`rcode_class`].
    pub rcodes: [u32; 5],
    /// Pending ids pushed out by newer queries: unanswered.
    pub evicted: u32,
    /// Matched responses: their count, smallest and largest latency, sum (µs).
    pub samples: u32,
    pub min_us: u32,
    pub max_us: u32,
    /// QTYPE of the latest query.
    pub qtype: u16,
    /// Wire bytes of the latest query's name (up to 255: more than `name` holds).
    pub name_len: u16,
    pub sum_us: u64,
    /// Outstanding queries: id and when they left (fine clock, ns; 0: free).
    pub pending_at: [u64; PENDING],
    pub pending_id: [u16; PENDING],
    /// The latest query's name, first [`NAME_KEPT`] wire bytes.
    pub name: [u8; NAME_KEPT],
}

impl Default for DnsState {
    fn default() -> DnsState {
        DnsState {
            queries: 0,
            responses: 0,
            rcodes: [0; 5],
            evicted: 0,
            samples: 0,
            min_us: 0,
            max_us: 0,
            qtype: 0,
            name_len: 0,
            sum_us: 0,
            pending_at: [0; PENDING],
            pending_id: [0; PENDING],
            name: [0; NAME_KEPT],
        }
    }
}

impl DnsState {
    /// A query left at `now_ns` (never 0): remembers its id, unless it is already pending (a
    /// retransmission: latency from the first), in a free place or the oldest one's, which
    /// is then unanswered (returned true). The caller copies the name.
    #[inline(always)]
    pub fn query(&mut self, m: &Message, now_ns: u64) -> bool {
        self.queries = self.queries.wrapping_add(1);
        self.qtype = m.qtype;
        self.name_len = m.name_len;
        let mut oldest = 0usize;
        let mut free = PENDING;
        for i in 0..PENDING {
            let at = self.pending_at[i];
            if at != 0 && self.pending_id[i] == m.id {
                return false;
            }
            if at == 0 {
                if free == PENDING {
                    free = i;
                }
            } else if at < self.pending_at[oldest] || self.pending_at[oldest] == 0 {
                oldest = i;
            }
        }
        let (i, evicted) = if free < PENDING {
            (free, false)
        } else {
            (oldest, true)
        };
        if evicted {
            self.evicted = self.evicted.wrapping_add(1);
        }
        if i < PENDING {
            self.pending_at[i] = now_ns;
            self.pending_id[i] = m.id;
        }
        evicted
    }

    /// A response came at `now_ns`: counted by RCODE; if its id is pending, the latency in µs
    /// (at least 1), and the id is freed.
    #[inline(always)]
    pub fn response(&mut self, m: &Message, now_ns: u64) -> Option<u32> {
        self.responses = self.responses.wrapping_add(1);
        let c = rcode_class(m.rcode);
        if c < 5 {
            self.rcodes[c] = self.rcodes[c].wrapping_add(1);
        }
        for i in 0..PENDING {
            let at = self.pending_at[i];
            if at != 0 && self.pending_id[i] == m.id {
                self.pending_at[i] = 0;
                let us = (now_ns.saturating_sub(at) / 1000).clamp(1, u32::MAX as u64) as u32;
                if self.samples == 0 || us < self.min_us {
                    self.min_us = us;
                }
                if us > self.max_us {
                    self.max_us = us;
                }
                self.samples = self.samples.wrapping_add(1);
                self.sum_us = self.sum_us.wrapping_add(us as u64);
                return Some(us);
            }
        }
        None
    }

    /// Queries still waiting for their response.
    pub fn outstanding(&self) -> u32 {
        self.pending_at.iter().filter(|&&t| t != 0).count() as u32
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integers only, no padding (asserted by the size test).
    unsafe impl aya::Pod for super::DnsState {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// A DNS message: header then one question.
    fn msg(id: u16, flags: u16, qd: u16, name: &[u8], qtype: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(id.to_be_bytes());
        b.extend(flags.to_be_bytes());
        b.extend(qd.to_be_bytes());
        b.extend([0u8; 6]);
        b.extend(name);
        b.extend(qtype.to_be_bytes());
        b.extend(1u16.to_be_bytes());
        b
    }

    fn p(b: &[u8]) -> Result<(Message, [u8; NAME_KEPT]), Malformed> {
        let mut n = [0u8; NAME_KEPT];
        parse(b, 0, b.len(), &mut n).map(|m| (m, n))
    }

    #[test]
    fn the_state_has_no_padding() {
        assert_eq!(
            core::mem::size_of::<DnsState>(),
            11 * 4 + 2 * 2 + 8 + 4 * 8 + 4 * 2 + 64
        );
        assert_eq!(core::mem::size_of::<DnsState>(), 160);
    }

    #[test]
    fn queries_and_responses_read() {
        let q = msg(0xbeef, 0x0100, 1, b"\x03www\x07example\x03com\x00", 28);
        let (m, n) = p(&q).unwrap();
        assert_eq!(
            m,
            Message {
                id: 0xbeef,
                response: false,
                rcode: 0,
                qtype: 28,
                name_len: 17
            }
        );
        assert_eq!(&n[..17], b"\x03www\x07example\x03com\x00");
        let r = msg(7, 0x8183, 1, b"\x01x\x00", 1);
        let (m, _) = p(&r).unwrap();
        assert!(m.response && m.rcode == 3 && m.id == 7 && m.name_len == 3);
        // At an offset, with bytes after it (answers).
        let mut framed = alloc::vec![0u8; 42];
        framed.extend(&r);
        framed.extend([0xc0, 0x0c, 0, 1]);
        let mut nb = [0u8; NAME_KEPT];
        let end = framed.len();
        assert_eq!(parse(&framed[..], 42, end, &mut nb).unwrap(), m);
        // Bytes past `end` (a frame's padding) are not read.
        framed.extend([0u8; 20]);
        assert_eq!(
            parse(&framed[..], 42, 42 + 5, &mut nb),
            Err(Malformed::Header)
        );
        assert_eq!(
            parse(&framed[..], 42, end - 6, &mut nb),
            Err(Malformed::Label)
        );
        // The root name.
        assert_eq!(p(&msg(1, 0, 1, b"\x00", 2)).unwrap().0.name_len, 1);
    }

    #[test]
    fn malformed_messages_are_named() {
        let good = msg(1, 0, 1, b"\x01a\x00", 1);
        for cut in 0..HEADER_LEN {
            assert_eq!(p(&good[..cut]), Err(Malformed::Header), "cut {cut}");
        }
        for cut in HEADER_LEN..good.len() {
            assert_eq!(p(&good[..cut]), Err(Malformed::Label), "cut {cut}");
        }
        assert_eq!(
            p(&msg(1, 0, 0, b"\x01a\x00", 1)),
            Err(Malformed::NoQuestion)
        );
        // A label longer than the packet.
        assert_eq!(p(&msg(1, 0, 1, b"\x3fabc", 1)), Err(Malformed::Label));
        // A pointer, to itself (a loop) or anywhere.
        assert_eq!(p(&msg(1, 0, 1, b"\xc0\x0c", 1)), Err(Malformed::Pointer));
        assert_eq!(
            p(&msg(1, 0, 1, b"\x01a\xc0\x0c", 1)),
            Err(Malformed::Pointer)
        );
        // Reserved label forms.
        assert_eq!(p(&msg(1, 0, 1, b"\x41a\x00", 1)), Err(Malformed::Label));
        // 256 bytes of name; 128 empty-ish labels never ending.
        let mut long = Vec::new();
        for _ in 0..5 {
            long.push(60);
            long.extend([b'a'; 60]);
        }
        long.push(0);
        assert_eq!(p(&msg(1, 0, 1, &long, 1)), Err(Malformed::LongName));
        // 127 one-byte labels and the root: 255 bytes, the longest legal name.
        let mut many = Vec::new();
        for _ in 0..127 {
            many.extend(b"\x01a");
        }
        many.push(0);
        let (m, n) = p(&msg(1, 0, 1, &many, 1)).unwrap();
        assert_eq!(m.name_len, 255);
        assert_eq!(&n[..], &many[..NAME_KEPT]);
        // One more byte is too long.
        let mut more = alloc::vec![2u8, b'a', b'a'];
        more.extend(&many[2..]);
        assert_eq!(p(&msg(1, 0, 1, &more, 1)), Err(Malformed::LongName));
    }

    #[test]
    fn responses_match_their_query_by_id() {
        let q = |id| Message {
            id,
            qtype: 1,
            ..Message::default()
        };
        let r = |id, rcode| Message {
            id,
            response: true,
            rcode,
            ..Message::default()
        };
        let mut s = DnsState::default();
        assert!(!s.query(&q(1), 1_000_000));
        assert!(!s.query(&q(2), 2_000_000));
        // A retransmission keeps the first time.
        assert!(!s.query(&q(1), 3_000_000));
        assert_eq!(s.outstanding(), 2);
        assert_eq!(s.response(&r(2, 3), 12_000_000), Some(10_000));
        assert_eq!(s.response(&r(1, 0), 21_000_000), Some(20_000));
        // Unmatched: counted, no sample.
        assert_eq!(s.response(&r(1, 2), 30_000_000), None);
        assert_eq!(s.response(&r(9, 5), 30_000_000), None);
        assert_eq!(s.response(&r(9, 4), 30_000_000), None);
        assert_eq!((s.queries, s.responses, s.rcodes), (3, 5, [1, 1, 1, 1, 1]));
        assert_eq!(
            (s.samples, s.min_us, s.max_us, s.sum_us),
            (2, 10_000, 20_000, 30_000)
        );
        // Full: the oldest is pushed out, unanswered.
        for id in 10..14 {
            assert!(!s.query(&q(id), 100 + id as u64));
        }
        assert!(s.query(&q(20), 200));
        assert_eq!((s.evicted, s.outstanding()), (1, 4));
        assert_eq!(s.response(&r(10, 0), 300), None, "10 was pushed out");
        assert!(s.response(&r(11, 0), 300).is_some());
    }
}
