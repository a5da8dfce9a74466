//! `/api/talkers`: addresses by what they sent and received, over every flow in the range.

use super::{flows::flows_in_range, Count, Range, Reader, Result};
use serde::Serialize;

/// An address and what it sent and received.
#[derive(Debug, Clone, Serialize)]
pub struct Talker {
    pub addr: String,
    pub sent: Count,
    pub received: Count,
    pub bytes: u64,
}

pub fn top_talkers(
    db: &mut dyn Reader,
    range: Range,
    device: Option<&str>,
    limit: u32,
) -> Result<Vec<Talker>> {
    let flows = flows_in_range(db.dialect());
    let sql = format!(
        "SELECT addr, SUM(tx_p) AS tx_p, SUM(tx_b) AS tx_b, SUM(rx_p) AS rx_p,
                SUM(rx_b) AS rx_b
         FROM (
            SELECT f.src AS addr,
                   CAST(f.fwd_packets AS DOUBLE PRECISION) * s.sample_every AS tx_p,
                   CAST(f.fwd_bytes AS DOUBLE PRECISION) * s.sample_every AS tx_b,
                   CAST(f.rev_packets AS DOUBLE PRECISION) * s.sample_every AS rx_p,
                   CAST(f.rev_bytes AS DOUBLE PRECISION) * s.sample_every AS rx_b
            FROM {flows}
            UNION ALL
            SELECT f.dst,
                   CAST(f.rev_packets AS DOUBLE PRECISION) * s.sample_every,
                   CAST(f.rev_bytes AS DOUBLE PRECISION) * s.sample_every,
                   CAST(f.fwd_packets AS DOUBLE PRECISION) * s.sample_every,
                   CAST(f.fwd_bytes AS DOUBLE PRECISION) * s.sample_every
            FROM {flows}) AS ends
         GROUP BY addr ORDER BY SUM(tx_b) + SUM(rx_b) DESC, addr LIMIT $4"
    );
    let params = [
        range.from.into(),
        range.to.into(),
        device.into(),
        i64::from(limit).into(),
    ];
    db.rows(&sql, &params, |r| {
        let sent = r.count("tx_p", "tx_b")?;
        let received = r.count("rx_p", "rx_b")?;
        Ok(Talker {
            addr: r.text("addr")?,
            bytes: sent.bytes + received.bytes,
            sent,
            received,
        })
    })
}
