//! Unit tests' store: summaries written by the real store into a temporary SQLite file, and
//! a reader on it.

use super::{sqlite::Sqlite, Reader};
use crate::store::Store;
use shared::wire::{Addr, Count, FlowRecord, Health, Summary};
use std::{path::PathBuf, time::Duration};

pub struct TestDb {
    reader: Sqlite,
    dir: PathBuf,
}

impl TestDb {
    pub fn new(summaries: &[Summary]) -> TestDb {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "efc-api-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("q.db");
        let mut store = Store::open(&path).unwrap();
        let mut b = store.batch().unwrap();
        for s in summaries {
            assert!(b.insert_summary(s, 0).unwrap());
        }
        b.commit().unwrap();
        let reader = Sqlite::open(&path, Duration::from_secs(10)).unwrap();
        TestDb { reader, dir }
    }

    pub fn db(&mut self) -> &mut dyn Reader {
        &mut self.reader
    }

    pub fn sqlite(&self) -> &Sqlite {
        &self.reader
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One window of device `device` in site `s`: `bytes` (and bytes / 100 packets) from
/// `start` for `len` ms.
pub fn summary(
    device: &str,
    seq: u64,
    start: u64,
    len: u32,
    bytes: u64,
    flows: Vec<FlowRecord>,
) -> Summary {
    Summary {
        device: device.try_into().unwrap(),
        site: "s".try_into().unwrap(),
        boot_id: 1,
        seq,
        part: 0,
        parts: 1,
        window_start_ms: start,
        window_len_ms: len,
        sample_every: 1,
        totals: Count {
            packets: bytes / 100,
            bytes,
        },
        overflow: Count::default(),
        other: Count::default(),
        other_flows: 0,
        health: Health::default(),
        addrs: vec![
            Addr::V4([10, 0, 0, 1]),
            Addr::V4([10, 0, 0, 2]),
            Addr::V6([0xfd; 16]),
        ],
        flows,
        rtt_hist: heapless::Vec::new(),
        tcp_health: false,
        dns_hist: Default::default(),
        dns: false,
    }
}

/// A TCP flow from address index `src` to `dst` (port 1000 + src → 80), a packet each way.
pub fn flow(src: u32, dst: u32, fwd: u64, rev: u64) -> FlowRecord {
    FlowRecord {
        proto: 6,
        src,
        dst,
        src_port: 1000 + src as u16,
        dst_port: 80,
        fwd: Count {
            packets: 1,
            bytes: fwd,
        },
        rev: Count {
            packets: 1,
            bytes: rev,
        },
        ..Default::default()
    }
}
