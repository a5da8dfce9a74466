//! `/api/conversations`: address pairs (initiator → responder) over all their flows.

use super::{flows::flows_in_range, Count, Range, Reader, Result};
use serde::Serialize;

/// Two addresses, initiator → responder, over all their flows.
#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    pub src: String,
    pub dst: String,
    pub fwd: Count,
    pub rev: Count,
    pub bytes: u64,
    /// Distinct (protocol, ports, VLAN, interface, device) flows between them.
    pub flows: u64,
}

pub fn top_conversations(
    db: &mut dyn Reader,
    range: Range,
    device: Option<&str>,
    limit: u32,
) -> Result<Vec<Conversation>> {
    let sql = format!(
        "SELECT f.src AS src, f.dst AS dst,
                SUM(CAST(f.fwd_packets AS DOUBLE PRECISION) * s.sample_every) AS fwd_p,
                SUM(CAST(f.fwd_bytes AS DOUBLE PRECISION) * s.sample_every) AS fwd_b,
                SUM(CAST(f.rev_packets AS DOUBLE PRECISION) * s.sample_every) AS rev_p,
                SUM(CAST(f.rev_bytes AS DOUBLE PRECISION) * s.sample_every) AS rev_b,
                COUNT(DISTINCT f.proto || ' ' || f.src_port || ' ' || f.dst_port || ' '
                      || f.vlan || ' ' || f.vlan_inner || ' ' || f.ifindex || ' ' || s.site
                      || '/' || s.device) AS flows
         FROM {}
         GROUP BY f.src, f.dst
         ORDER BY SUM((CAST(f.fwd_bytes AS DOUBLE PRECISION) + f.rev_bytes) * s.sample_every)
                  DESC, f.src, f.dst
         LIMIT $4",
        flows_in_range(db.dialect())
    );
    let params = [
        range.from.into(),
        range.to.into(),
        device.into(),
        i64::from(limit).into(),
    ];
    db.rows(&sql, &params, |r| {
        let fwd = r.count("fwd_p", "fwd_b")?;
        let rev = r.count("rev_p", "rev_b")?;
        Ok(Conversation {
            src: r.text("src")?,
            dst: r.text("dst")?,
            bytes: fwd.bytes + rev.bytes,
            fwd,
            rev,
            flows: r.u64("flows")?,
        })
    })
}
