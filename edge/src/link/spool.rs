//! Encoded summaries waiting for the broker's PUBACK, oldest first, bounded in bytes.
//!
//! A summary enters when it is made and leaves only when the broker acknowledged it (or when
//! the spool is full and it is the oldest: then it is dropped and counted). In memory by
//! default; with a file, what is waiting survives an agent restart.
//!
//! File format: records appended one after another, each `magic (4) | len u32 LE | crc32 u32 LE
//! | payload`. Magic `EFS1` is a waiting record, `EFS0` one that was acknowledged or dropped
//! (overwritten in place, 4 bytes). On open the file is read front to back. Bytes that are
//! not a whole record with a good CRC (a torn tail: the agent died mid-write; or a corrupted
//! record) are skipped up to the next good record, set aside into `<file>.corrupt-<secs>` for
//! a human to look at, and the file is rewritten with the good records only, so one bad byte
//! costs one summary, not the rest of the spool. The file is truncated to zero whenever the spool empties,
//! and rewritten with only the waiting records when it grows past twice the spool size. No
//! fsync: the spool is meant to survive the agent, not a power cut.

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{self, Read},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

const LIVE: [u8; 4] = *b"EFS1";
const DONE: [u8; 4] = *b"EFS0";
const HEADER: u64 = 12;

/// Identifies a spooled summary within this agent run (increasing in spool order).
pub type Id = u64;

struct Entry {
    id: Id,
    len: u32,
    body: Body,
}

enum Body {
    Memory(Vec<u8>),
    /// Offset of the record's header in the file.
    File(u64),
}

struct FileStore {
    path: PathBuf,
    file: File,
    /// Where the next record goes.
    end: u64,
}

/// What opening a spool file found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Waiting records carried over from the previous run.
    pub records: usize,
    /// Bytes that were not part of a good record (torn tail, corruption), removed.
    pub torn_bytes: u64,
    /// Where those bytes were set aside, or why they could not be.
    pub set_aside: Option<Result<PathBuf, String>>,
}

pub struct Spool {
    max_bytes: u64,
    entries: VecDeque<Entry>,
    /// Sum of the waiting payloads' lengths.
    bytes: u64,
    next_id: Id,
    dropped: u64,
    file: Option<FileStore>,
}

impl Spool {
    /// A spool in memory holding at most `max_bytes` of payload.
    pub fn memory(max_bytes: u64) -> Spool {
        Spool {
            max_bytes,
            entries: VecDeque::new(),
            bytes: 0,
            next_id: 0,
            dropped: 0,
            file: None,
        }
    }

    /// A spool in `path` (created if missing), with what an earlier run left waiting.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<(Spool, Recovered)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut s = Spool::memory(max_bytes);
        let mut data = Vec::new();
        (&file).read_to_end(&mut data)?;
        let mut at = 0usize;
        let mut bad = Vec::new();
        while at < data.len() {
            let Some((live, len)) = record_at(&data, at) else {
                // Resynchronise on the next good record: a live one must pass its CRC.
                let next = (at + 1..data.len())
                    .find(|&i| record_at(&data, i).is_some())
                    .unwrap_or(data.len());
                bad.extend_from_slice(&data[at..next]);
                at = next;
                continue;
            };
            if live {
                s.entries.push_back(Entry {
                    id: s.next_id,
                    len,
                    body: Body::File(at as u64),
                });
                s.next_id += 1;
                s.bytes += len as u64;
            }
            at += HEADER as usize + len as usize;
        }
        let mut rec = Recovered {
            records: s.entries.len(),
            torn_bytes: bad.len() as u64,
            set_aside: None,
        };
        let mut f = FileStore {
            path: path.to_path_buf(),
            file,
            end: at as u64,
        };
        if !bad.is_empty() {
            rec.set_aside = Some(set_aside(path, &bad));
            Spool::compact(&mut f, &mut s.entries)?;
        }
        s.file = Some(f);
        // An earlier run may have had a bigger spool.
        while s.bytes > s.max_bytes {
            s.drop_oldest()?;
        }
        s.truncate_if_empty()?;
        Ok((s, rec))
    }

    /// Adds a payload at the back, dropping the oldest ones while it would not fit.
    pub fn push(&mut self, payload: &[u8]) -> io::Result<Id> {
        let len = payload.len() as u64;
        if len > self.max_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "summary larger than the whole spool",
            ));
        }
        while self.bytes + len > self.max_bytes {
            self.drop_oldest()?;
        }
        let id = self.next_id;
        let body = match &mut self.file {
            None => Body::Memory(payload.to_vec()),
            Some(f) => {
                if f.end + HEADER + len > 2 * self.max_bytes + HEADER * 64 {
                    Self::compact(f, &mut self.entries)?;
                }
                let at = f.end;
                let mut rec = Vec::with_capacity(HEADER as usize + payload.len());
                rec.extend_from_slice(&LIVE);
                rec.extend_from_slice(&(len as u32).to_le_bytes());
                rec.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
                rec.extend_from_slice(payload);
                f.file.write_all_at(&rec, at)?;
                f.end += rec.len() as u64;
                Body::File(at)
            }
        };
        self.entries.push_back(Entry {
            id,
            len: len as u32,
            body,
        });
        self.next_id += 1;
        self.bytes += len;
        Ok(id)
    }

    /// The payload of a waiting summary.
    pub fn get(&self, id: Id) -> io::Result<Option<Vec<u8>>> {
        let Some(e) = self.find(id).map(|i| &self.entries[i]) else {
            return Ok(None);
        };
        match (&e.body, &self.file) {
            (Body::Memory(v), _) => Ok(Some(v.clone())),
            (Body::File(at), Some(f)) => {
                let mut v = vec![0u8; e.len as usize];
                f.file.read_exact_at(&mut v, at + HEADER)?;
                Ok(Some(v))
            }
            (Body::File(_), None) => unreachable!("file records only in a file spool"),
        }
    }

    /// The oldest waiting id after `after` (or the oldest of all when `None`).
    pub fn next_after(&self, after: Option<Id>) -> Option<Id> {
        let i = match after {
            None => 0,
            Some(a) => self.entries.partition_point(|e| e.id <= a),
        };
        self.entries.get(i).map(|e| e.id)
    }

    /// The broker has it: it leaves the spool. `false` if it was no longer there (dropped).
    pub fn ack(&mut self, id: Id) -> io::Result<bool> {
        let Some(i) = self.find(id) else {
            return Ok(false);
        };
        let e = self.entries.remove(i).expect("found above");
        self.forget(&e)?;
        self.truncate_if_empty()?;
        Ok(true)
    }

    /// Summaries waiting.
    pub fn depth(&self) -> usize {
        self.entries.len()
    }

    /// Payload bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Summaries dropped because the spool was full, since it was made.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn is_file(&self) -> bool {
        self.file.is_some()
    }

    fn find(&self, id: Id) -> Option<usize> {
        self.entries.binary_search_by_key(&id, |e| e.id).ok()
    }

    fn drop_oldest(&mut self) -> io::Result<()> {
        if let Some(e) = self.entries.pop_front() {
            self.forget(&e)?;
            self.dropped += 1;
        }
        Ok(())
    }

    fn forget(&mut self, e: &Entry) -> io::Result<()> {
        self.bytes -= e.len as u64;
        if let (Body::File(at), Some(f)) = (&e.body, &self.file) {
            f.file.write_all_at(&DONE, *at)?;
        }
        Ok(())
    }

    fn truncate_if_empty(&mut self) -> io::Result<()> {
        if let (true, Some(f)) = (self.entries.is_empty(), &mut self.file) {
            if f.end > 0 {
                f.file.set_len(0)?;
                f.end = 0;
            }
        }
        Ok(())
    }

    /// Rewrites the file with only the waiting records (via a new file and a rename).
    fn compact(f: &mut FileStore, entries: &mut VecDeque<Entry>) -> io::Result<()> {
        let tmp = f.path.with_extension("compact");
        let new = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut end = 0u64;
        for e in entries.iter_mut() {
            let Body::File(at) = &mut e.body else {
                continue;
            };
            let mut rec = vec![0u8; (HEADER + e.len as u64) as usize];
            f.file.read_exact_at(&mut rec, *at)?;
            new.write_all_at(&rec, end)?;
            *at = end;
            end += rec.len() as u64;
        }
        std::fs::rename(&tmp, &f.path)?;
        f.file = new;
        f.end = end;
        Ok(())
    }
}

/// Writes `bad` next to the spool file, for a post-mortem; the path, or why not.
fn set_aside(path: &Path, bad: &[u8]) -> Result<PathBuf, String> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{secs}"));
    let aside = PathBuf::from(name);
    std::fs::write(&aside, bad)
        .map(|()| aside.clone())
        .map_err(|e| format!("{}: {e}", aside.display()))
}

/// The record at `at`: (waiting?, payload length), or `None` at the end or a torn record.
fn record_at(data: &[u8], at: usize) -> Option<(bool, u32)> {
    let h = data.get(at..at + HEADER as usize)?;
    let magic: [u8; 4] = h[..4].try_into().unwrap();
    let len = u32::from_le_bytes(h[4..8].try_into().unwrap());
    let crc = u32::from_le_bytes(h[8..12].try_into().unwrap());
    let start = at + HEADER as usize;
    let payload = data.get(start..start.checked_add(len as usize)?)?;
    match magic {
        LIVE if crc32fast::hash(payload) == crc => Some((true, len)),
        // Acknowledged records keep their bytes; the CRC was checked when they were written.
        DONE => Some((false, len)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("efspool-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    fn drain_all(s: &Spool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = None;
        while let Some(id) = s.next_after(at) {
            out.push(s.get(id).unwrap().unwrap());
            at = Some(id);
        }
        out
    }

    #[test]
    fn memory_spool_keeps_order_and_drops_the_oldest_when_full() {
        let mut s = Spool::memory(100);
        for i in 0..5u8 {
            s.push(&[i; 30]).unwrap();
        }
        // 5 x 30 bytes into 100: the two oldest went.
        assert_eq!((s.depth(), s.dropped(), s.bytes()), (3, 2, 90));
        let all = drain_all(&s);
        assert_eq!(all.iter().map(|v| v[0]).collect::<Vec<_>>(), [2, 3, 4]);
        assert!(s.push(&[0; 101]).is_err());
    }

    #[test]
    fn ack_removes_only_that_summary() {
        let mut s = Spool::memory(1000);
        let a = s.push(b"a").unwrap();
        let b = s.push(b"b").unwrap();
        let c = s.push(b"c").unwrap();
        assert!(s.ack(b).unwrap());
        assert!(!s.ack(b).unwrap());
        assert_eq!(s.next_after(None), Some(a));
        assert_eq!(s.next_after(Some(a)), Some(c));
        assert_eq!(s.next_after(Some(c)), None);
        assert_eq!(drain_all(&s), [b"a".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn file_spool_survives_a_restart_without_what_was_acknowledged() {
        let p = tmp("restart");
        {
            let (mut s, rec) = Spool::open(&p, 10_000).unwrap();
            assert_eq!(rec, Recovered::default());
            let a = s.push(b"first").unwrap();
            s.push(b"second").unwrap();
            s.push(b"third").unwrap();
            s.ack(a).unwrap();
        }
        let (s, rec) = Spool::open(&p, 10_000).unwrap();
        assert_eq!((rec.records, rec.torn_bytes), (2, 0));
        assert_eq!(drain_all(&s), [b"second".to_vec(), b"third".to_vec()]);
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn torn_tail_is_detected_and_cut() {
        let p = tmp("torn");
        {
            let (mut s, _) = Spool::open(&p, 10_000).unwrap();
            s.push(b"whole one").unwrap();
            s.push(b"whole two").unwrap();
        }
        let whole = std::fs::metadata(&p).unwrap().len();
        // A record cut in the middle of its payload, as a crash mid-write leaves it.
        let mut rec = LIVE.to_vec();
        rec.extend_from_slice(&100u32.to_le_bytes());
        rec.extend_from_slice(&0u32.to_le_bytes());
        rec.extend_from_slice(b"only part");
        let f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all_at(&rec, whole).unwrap();
        drop(f);
        let (mut s, r) = Spool::open(&p, 10_000).unwrap();
        assert_eq!((r.records, r.torn_bytes), (2, rec.len() as u64));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), whole);
        let _ = std::fs::remove_file(r.set_aside.unwrap().unwrap());
        // New records go where the torn one was.
        s.push(b"three").unwrap();
        drop(s);
        let (s, r) = Spool::open(&p, 10_000).unwrap();
        assert_eq!(r.records, 3);
        assert_eq!(drain_all(&s)[2], b"three");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn corrupted_record_is_a_torn_tail_too() {
        let p = tmp("crc");
        {
            let (mut s, _) = Spool::open(&p, 10_000).unwrap();
            s.push(b"good").unwrap();
            s.push(b"flipped").unwrap();
        }
        let mut data = std::fs::read(&p).unwrap();
        let n = data.len();
        data[n - 1] ^= 0xff;
        std::fs::write(&p, &data).unwrap();
        let (s, r) = Spool::open(&p, 10_000).unwrap();
        assert_eq!((r.records, r.torn_bytes), (1, HEADER + 7));
        assert_eq!(drain_all(&s), [b"good".to_vec()]);
        let aside = r.set_aside.unwrap().unwrap();
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            data[n - 7 - HEADER as usize..]
        );
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_file(&aside);
    }

    /// A bad record in the middle costs that record: the ones after it are found again, the
    /// bad bytes are set aside, and the file holds only good records afterwards.
    #[test]
    fn corruption_in_the_middle_is_set_aside_and_the_rest_kept() {
        let p = tmp("middle");
        {
            let (mut s, _) = Spool::open(&p, 10_000).unwrap();
            for r in [&b"one"[..], b"two", b"three", b"four"] {
                s.push(r).unwrap();
            }
        }
        let mut data = std::fs::read(&p).unwrap();
        let second = (HEADER + 3) as usize;
        data[second + HEADER as usize] ^= 0x20; // "two" fails its CRC
                                                // Garbage between the third and fourth records, and a torn record at the end.
        let fourth = second + 2 * HEADER as usize + 3 + 5;
        data.splice(fourth..fourth, *b"garbage!");
        data.extend_from_slice(&LIVE);
        data.extend_from_slice(&[9, 0]);
        std::fs::write(&p, &data).unwrap();
        let (s, r) = Spool::open(&p, 10_000).unwrap();
        assert_eq!(
            drain_all(&s),
            [b"one".to_vec(), b"three".to_vec(), b"four".to_vec()]
        );
        assert_eq!((r.records, r.torn_bytes), (3, HEADER + 3 + 8 + 6));
        let aside = r.set_aside.unwrap().unwrap();
        assert_eq!(
            std::fs::read(&aside).unwrap().len() as u64,
            HEADER + 3 + 8 + 6
        );
        drop(s);
        let (s, r) = Spool::open(&p, 10_000).unwrap();
        assert_eq!((r.records, r.torn_bytes, r.set_aside), (3, 0, None));
        assert_eq!(drain_all(&s).len(), 3);
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_file(&aside);
    }

    #[test]
    fn file_empties_to_zero_and_compacts_when_long() {
        let p = tmp("compact");
        let (mut s, _) = Spool::open(&p, 1000).unwrap();
        let a = s.push(&[1; 100]).unwrap();
        s.ack(a).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        // Keep one record waiting while many others come and go: the file must not grow
        // without bound.
        s.push(&[7; 100]).unwrap();
        let mut last = None;
        for i in 0..100u8 {
            let id = s.push(&[i; 100]).unwrap();
            if let Some(l) = last {
                s.ack(l).unwrap();
            }
            last = Some(id);
        }
        assert!(std::fs::metadata(&p).unwrap().len() <= 2 * 1000 + HEADER * 64 + 112);
        assert_eq!(s.depth(), 2);
        drop(s);
        let (s, r) = Spool::open(&p, 1000).unwrap();
        assert_eq!(r.records, 2);
        let all = drain_all(&s);
        assert_eq!((all[0][0], all[1][0]), (7, 99));
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn reopening_with_a_smaller_spool_drops_the_oldest() {
        let p = tmp("shrink");
        {
            let (mut s, _) = Spool::open(&p, 1000).unwrap();
            for i in 0..5u8 {
                s.push(&[i; 100]).unwrap();
            }
        }
        let (s, _) = Spool::open(&p, 250).unwrap();
        assert_eq!((s.depth(), s.dropped()), (2, 3));
        let _ = std::fs::remove_file(&p);
    }
}
