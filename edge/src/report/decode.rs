//! `edgeflow decode`: summary payloads → one JSON object per message, in the schema of
//! `watch --json` (the same flow type) plus the summary's header fields.
//!
//! Input: either one raw payload (a file holding exactly the bytes of one message), or lines
//! of hex, one payload per line, as `mosquitto_sub -F %x` prints them. A line may start with
//! the topic (`mosquitto_sub -F '%t %x'`); then lines of other topics than `.../flows` (the
//! retained status) are skipped and the topic is copied into the output. A payload starts with
//! its version, byte 0 (V1), 1 (V2) or 2 (V3), never a hex digit, so the two forms cannot be
//! confused. Every version prints alike; a summary with TCP health adds `tcp_health` and the
//! flows' `tcp` blocks, one with DNS (V3) `dns`, `dns_hist` and the flows' `dns` blocks.

use serde::Serialize;
use shared::wire::{self, Count, DecodeError, Flow, Health, Summary};

/// One decoded message, as printed.
#[derive(Debug, Serialize)]
pub struct Decoded {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    pub device: String,
    pub site: String,
    /// Hex, so JSON readers without 64-bit integers keep it exact.
    pub boot_id: String,
    pub seq: u64,
    pub part: u16,
    pub parts: u16,
    pub sample_every: u32,
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    pub totals: Count,
    pub overflow: Count,
    pub other: Count,
    pub other_flows: u32,
    pub health: Health,
    pub flows: Vec<Flow>,
    pub rtt_hist: Vec<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tcp_health: bool,
    /// DNS latency per log2 µs bucket, like `rtt_hist`; only with DNS on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_hist: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dns: bool,
}

impl Decoded {
    pub fn new(s: Summary, topic: Option<String>) -> Decoded {
        let flows = s.to_flows().collect();
        Decoded {
            topic,
            device: s.device.to_string(),
            site: s.site.to_string(),
            boot_id: format!("{:016x}", s.boot_id),
            seq: s.seq,
            part: s.part,
            parts: s.parts,
            sample_every: s.sample_every,
            window_start_ms: s.window_start_ms,
            window_end_ms: s.window_start_ms + s.window_len_ms as u64,
            totals: s.totals,
            overflow: s.overflow,
            other: s.other,
            other_flows: s.other_flows,
            health: s.health,
            flows,
            rtt_hist: s.rtt_hist.to_vec(),
            tcp_health: s.tcp_health,
            dns_hist: s.dns.then(|| s.dns_hist.to_vec()),
            dns: s.dns,
        }
    }
}

/// Why one payload (or line) did not decode.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("not hex: {0}")]
    Hex(&'static str),
    #[error("{0}")]
    Wire(#[from] DecodeError),
}

/// Decodes one payload.
pub fn decode_payload(bytes: &[u8], topic: Option<String>) -> Result<Decoded, LineError> {
    let s = wire::decode_summary(bytes)?;
    Ok(Decoded::new(s, topic))
}

fn unhex(s: &str) -> Result<Vec<u8>, LineError> {
    if !s.len().is_multiple_of(2) {
        return Err(LineError::Hex("odd number of digits"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| LineError::Hex("bad digit")))
        .collect()
}

/// True when `input` is lines of hex (optionally each after a topic), not one raw payload.
pub fn is_hex_lines(input: &[u8]) -> bool {
    !input.is_empty()
        && input.first() != Some(&0)
        && std::str::from_utf8(input).is_ok_and(|s| {
            s.lines().all(|l| {
                let hex = l.split_whitespace().last().unwrap_or("");
                hex.bytes().all(|b| b.is_ascii_hexdigit())
            })
        })
}

/// One result per payload in the input, in order: `(where, result)`, where `where` names the
/// line for hex input. Lines of other topics than `.../flows` are skipped.
pub fn decode_input(input: &[u8]) -> Vec<(String, Result<Decoded, LineError>)> {
    if !is_hex_lines(input) {
        return vec![("input".into(), decode_payload(input, None))];
    }
    let text = std::str::from_utf8(input).expect("checked by is_hex_lines");
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let (topic, hex) = match (fields.next(), fields.next(), fields.next()) {
            (None, _, _) => continue,
            (Some(hex), None, _) => (None, hex),
            (Some(topic), Some(hex), None) => (Some(topic.to_string()), hex),
            _ => {
                out.push((
                    format!("line {}", n + 1),
                    Err(LineError::Hex("expected [TOPIC] HEX")),
                ));
                continue;
            }
        };
        if topic.as_deref().is_some_and(|t| !t.ends_with("/flows")) {
            continue;
        }
        let r = unhex(hex).and_then(|b| decode_payload(&b, topic));
        out.push((format!("line {}", n + 1), r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::wire::{Addr, FlowRecord, Id};

    fn sample() -> Vec<u8> {
        wire::encode_vec(&wire::Message::V3(Summary {
            device: Id::try_from("d1").unwrap(),
            site: Id::try_from("lab").unwrap(),
            boot_id: 0xabc,
            seq: 9,
            part: 0,
            parts: 1,
            window_start_ms: 1_000_000,
            window_len_ms: 2000,
            sample_every: 1,
            totals: Count {
                packets: 3,
                bytes: 300,
            },
            overflow: Count::default(),
            other: Count::default(),
            other_flows: 0,
            health: Health::default(),
            addrs: vec![Addr::V4([10, 0, 0, 1]), Addr::V6([0xfd; 16])],
            flows: vec![FlowRecord {
                proto: 17,
                src: 0,
                dst: 1,
                src_port: 5,
                dst_port: 6,
                fwd: Count {
                    packets: 2,
                    bytes: 200,
                },
                rev: Count {
                    packets: 1,
                    bytes: 100,
                },
                first_seen_ms: -10,
                last_seen_ms: 1500,
                ..Default::default()
            }],
            rtt_hist: heapless::Vec::new(),
            tcp_health: false,
            dns_hist: Default::default(),
            dns: false,
        }))
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn raw_payload_becomes_watch_shaped_json() {
        let out = decode_input(&sample());
        assert_eq!(out.len(), 1);
        let d = out[0].1.as_ref().unwrap();
        let v = serde_json::to_value(d).unwrap();
        assert_eq!(v["device"], "d1");
        assert_eq!(v["boot_id"], "0000000000000abc");
        assert_eq!(v["window_end_ms"], 1_002_000);
        let f = &v["flows"][0];
        assert_eq!(f["src"], "10.0.0.1");
        assert_eq!(f["dst"], "fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd");
        assert_eq!(
            (f["packets_fwd"].as_u64(), f["bytes_rev"].as_u64()),
            (Some(2), Some(100))
        );
        assert_eq!(f["first_seen_ms"], 999_990);
        assert!(f.get("rtt_us").is_none());
    }

    #[test]
    fn hex_lines_with_and_without_topics() {
        let h = hex(&sample());
        let input = format!(
            "{h}\nedgeflow/v1/lab/d1/status 6f6e6c696e65\nedgeflow/v1/lab/d1/flows {h}\n\n"
        );
        assert!(is_hex_lines(input.as_bytes()));
        let out = decode_input(input.as_bytes());
        assert_eq!(out.len(), 2, "the status line is skipped");
        assert!(out[0].1.as_ref().unwrap().topic.is_none());
        assert_eq!(
            out[1].1.as_ref().unwrap().topic.as_deref(),
            Some("edgeflow/v1/lab/d1/flows")
        );
    }

    #[test]
    fn bad_input_names_the_reason() {
        let mut v = sample();
        v[0] = 3;
        let e = decode_input(&v).remove(0).1.unwrap_err();
        assert!(e.to_string().contains("unknown message version 4"), "{e}");
        let s = sample();
        let e = decode_input(&s[..s.len() / 2]).remove(0).1.unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = decode_input(b"abc\n").remove(0).1.unwrap_err();
        assert!(e.to_string().contains("odd number"), "{e}");
    }
}
