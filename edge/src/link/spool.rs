//! Encoded summaries waiting for the broker's PUBACK, oldest first, bounded in bytes.
//!
//! A summary enters when it is made and leaves only when the broker acknowledged it (or when
//! the spool is full and it is the oldest: then it is dropped and counted). In memory by
//! default; with a file, what is waiting survives an agent restart.
//!
//! File format: records appended one after another, each `magic (4) | len u32 LE | crc32 u32 LE
//! | payload`. Magic `EFS1` is a waiting record, `EFS0` one that was acknowledged or dropped
//! (overwritten in place, 4 bytes; its CRC stays valid). On open the file is read front to
//! back as a stream (one 64 KiB buffer; payloads are CRC-checked in chunks and not kept), and
//! every record, waiting or done, must pass its CRC: a done record is trusted no more than a
//! waiting one, so after a torn write the resync cannot latch onto payload bytes that happen
//! to look like a header. Bytes that are not a whole record with a good CRC (a torn tail: the
//! agent died mid-write; or a corrupted record) are skipped up to the next good record, set
//! aside into `<file>.corrupt-<secs>` for a human to look at, and the file is rewritten with
//! the good records only, so one bad byte costs one summary, not the rest of the spool. The
//! file is truncated to zero whenever the spool empties, and rewritten with only the waiting
//! records when it grows past twice the spool size. No fsync: the spool is meant to survive
//! the agent, not a power cut.
//!
//! The file is created 0600 (summaries name hosts and ports) and opened with O_NOFOLLOW, so a
//! symlink planted at its path is refused, not followed. `<file>.lock` holds an exclusive
//! `flock` and the holder's pid for the whole run: a second agent on the same spool would
//! interleave records and acknowledge the other's, so it is refused ([`OpenError::Locked`]).
//!
//! A disk that fails (ENOSPC, EIO on an SD card, a filesystem remounted read-only) does not
//! stop the agent: on the first failed write every waiting record is read back into memory,
//! the file is closed and the spool runs in memory, bounded by the same size ([`Mode::Fallback`],
//! logged and reported in the summaries' health). Each later push first tries to write the
//! whole spool to the file again (a new file renamed over the old one); when that works the
//! spool is back on the file. While in memory, a killed agent loses what only memory held and
//! may resend, on its next start, records the stale file still lists as waiting (at least
//! once, never fewer).

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{FileExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
};

const LIVE: [u8; 4] = *b"EFS1";
const DONE: [u8; 4] = *b"EFS0";
const HEADER: u64 = 12;
/// What the reader holds at once: the scan window and the CRC chunk.
const CHUNK: usize = 64 * 1024;

/// Identifies a spooled summary within this agent run (increasing in spool order).
pub type Id = u64;

/// Where the waiting summaries are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// In memory, as configured (no spool file).
    #[default]
    Memory,
    /// In the spool file.
    File,
    /// In memory because writing the spool file failed; the file is tried again each push.
    Fallback,
}

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
    /// `None` while on the in-memory fallback: closed, so a failing disk is not held open
    /// and a read-only remount can go ahead.
    file: Option<File>,
    /// Where the next record goes.
    end: u64,
    /// The `flock` on `<path>.lock`, held for the whole run.
    _lock: File,
}

/// Why a spool file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process (another agent) holds the spool's lock.
    #[error(
        "spool file {} is in use by another edgeflow ({}; lock {}): one spool per agent",
        spool.display(),
        holder.map_or("pid unknown".to_string(), |p| format!("pid {p}")),
        lock.display()
    )]
    Locked {
        spool: PathBuf,
        lock: PathBuf,
        holder: Option<u32>,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
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
    /// Spool file writes that failed, since it was made.
    write_errors: u64,
    /// A spool file was configured but could not even be opened (its disk failing at start):
    /// this spool is in memory for the whole run.
    unopened: bool,
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
            write_errors: 0,
            unopened: false,
        }
    }

    /// The spool for a run whose spool file could not be opened because its disk fails
    /// (`open_error` tells): in memory, reported as [`Mode::Fallback`] for the whole run, so
    /// the agent counts on instead of failing at every restart.
    pub fn unopened(max_bytes: u64) -> Spool {
        Spool {
            unopened: true,
            write_errors: 1,
            ..Spool::memory(max_bytes)
        }
    }

    /// A spool in `path` (created 0600 if missing, locked for this process), with what an
    /// earlier run left waiting. A file that can be read but not written (full or read-only
    /// disk) opens on the in-memory fallback.
    pub fn open(path: &Path, max_bytes: u64) -> Result<(Spool, Recovered), OpenError> {
        let lock = lock(path)?;
        let (file, writable) = match open_private(path, true) {
            Ok(f) => (f, true),
            // A read-only filesystem: read what is there, run in memory.
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => (open_private(path, false)?, false),
            Err(e) => return Err(e.into()),
        };
        let mut s = Spool::memory(max_bytes);
        let scan = scan(&file)?;
        for (at, len) in &scan.live {
            s.entries.push_back(Entry {
                id: s.next_id,
                len: *len,
                body: Body::File(*at),
            });
            s.next_id += 1;
            s.bytes += *len as u64;
        }
        let mut rec = Recovered {
            records: s.entries.len(),
            torn_bytes: scan.bad.iter().map(|(a, b)| b - a).sum(),
            set_aside: None,
        };
        if !scan.bad.is_empty() {
            rec.set_aside = Some(set_aside(path, &file, &scan.bad));
        }
        s.file = Some(FileStore {
            path: path.to_path_buf(),
            file: Some(file),
            end: scan.end,
            _lock: lock,
        });
        if !writable {
            s.fall_back(io::Error::from_raw_os_error(libc::EROFS));
        } else if !scan.bad.is_empty() {
            s.rewrite();
        }
        // An earlier run may have had a bigger spool.
        while s.bytes > s.max_bytes {
            s.drop_oldest();
        }
        s.truncate_if_empty();
        Ok((s, rec))
    }

    /// Adds a payload at the back, dropping the oldest ones while it would not fit. A failing
    /// spool file is no error: the spool falls back to memory ([`Mode::Fallback`]).
    pub fn push(&mut self, payload: &[u8]) -> io::Result<Id> {
        let len = payload.len() as u64;
        if len > self.max_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "summary larger than the whole spool",
            ));
        }
        while self.bytes + len > self.max_bytes {
            self.drop_oldest();
        }
        if self.mode() == Mode::Fallback {
            self.rewrite();
        }
        let id = self.next_id;
        let body = match self.append(payload) {
            Ok(Some(at)) => Body::File(at),
            Ok(None) => Body::Memory(payload.to_vec()),
            Err(e) => {
                self.fall_back(e);
                Body::Memory(payload.to_vec())
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

    /// Writes a record at the end of the file: its offset, or `None` when not on the file.
    fn append(&mut self, payload: &[u8]) -> io::Result<Option<u64>> {
        let Some(end) = self
            .file
            .as_ref()
            .and_then(|f| f.file.as_ref().map(|_| f.end))
        else {
            return Ok(None);
        };
        if end + HEADER + payload.len() as u64 > 2 * self.max_bytes + HEADER * 64 {
            self.rewrite();
        }
        let Some(f) = self.file.as_mut() else {
            return Ok(None);
        };
        let Some(file) = &f.file else {
            return Ok(None);
        };
        let at = f.end;
        let rec = record(LIVE, payload);
        // Whatever part was written before a failure is a torn record the next open skips.
        file.write_all_at(&rec, at)?;
        f.end += rec.len() as u64;
        Ok(Some(at))
    }

    /// The payload of a waiting summary.
    pub fn get(&self, id: Id) -> io::Result<Option<Vec<u8>>> {
        let Some(e) = self.find(id).map(|i| &self.entries[i]) else {
            return Ok(None);
        };
        match &e.body {
            Body::Memory(v) => Ok(Some(v.clone())),
            Body::File(at) => {
                let file = self
                    .file
                    .as_ref()
                    .and_then(|f| f.file.as_ref())
                    .expect("file records only while on the file");
                let mut v = vec![0u8; e.len as usize];
                file.read_exact_at(&mut v, at + HEADER)?;
                Ok(Some(v))
            }
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
        self.forget(&e);
        self.truncate_if_empty();
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

    /// Summaries dropped because the spool was full (or, on a failing disk, unreadable),
    /// since it was made.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Spool file writes that failed, since it was made.
    pub fn write_errors(&self) -> u64 {
        self.write_errors
    }

    pub fn is_file(&self) -> bool {
        self.file.is_some()
    }

    /// Where the waiting summaries are now.
    pub fn mode(&self) -> Mode {
        match &self.file {
            None if self.unopened => Mode::Fallback,
            None => Mode::Memory,
            Some(f) if f.file.is_some() => Mode::File,
            Some(_) => Mode::Fallback,
        }
    }

    fn find(&self, id: Id) -> Option<usize> {
        self.entries.binary_search_by_key(&id, |e| e.id).ok()
    }

    fn drop_oldest(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.forget(&e);
            self.dropped += 1;
        }
    }

    fn forget(&mut self, e: &Entry) {
        self.bytes -= e.len as u64;
        let Body::File(at) = e.body else {
            return;
        };
        let written = match self.file.as_ref().and_then(|f| f.file.as_ref()) {
            Some(file) => file.write_all_at(&DONE, at),
            None => Ok(()),
        };
        if let Err(err) = written {
            self.fall_back(err);
        }
    }

    fn truncate_if_empty(&mut self) {
        if !self.entries.is_empty() {
            return;
        }
        let Some(f) = self.file.as_mut() else {
            return;
        };
        let Some(file) = &f.file else {
            return;
        };
        if f.end == 0 {
            return;
        }
        match file.set_len(0) {
            Ok(()) => f.end = 0,
            Err(e) => self.fall_back(e),
        }
    }

    /// A spool file write failed: every waiting record comes into memory (one that cannot
    /// be read back either is dropped and counted), the file is closed, and the spool runs
    /// in memory until [`Spool::rewrite`] works.
    fn fall_back(&mut self, err: io::Error) {
        self.write_errors += 1;
        let Some(f) = self.file.as_mut() else {
            return;
        };
        let Some(file) = f.file.take() else {
            return;
        };
        let path = f.path.clone();
        let mut lost = 0u64;
        self.entries.retain_mut(|e| {
            let Body::File(at) = e.body else {
                return true;
            };
            let mut v = vec![0u8; e.len as usize];
            match file.read_exact_at(&mut v, at + HEADER) {
                Ok(()) => {
                    e.body = Body::Memory(v);
                    true
                }
                Err(_) => {
                    lost += 1;
                    self.bytes -= e.len as u64;
                    false
                }
            }
        });
        self.dropped += lost;
        log::warn!(
            "spool {}: writing failed ({err}); keeping the {} waiting summaries in memory \
             (up to {} bytes) and trying the file again each window{}",
            path.display(),
            self.entries.len(),
            self.max_bytes,
            if lost > 0 {
                format!("; {lost} could not be read back and are lost")
            } else {
                String::new()
            }
        );
    }

    /// Writes every waiting record to a new file renamed over the spool file (compacting it,
    /// and ending the in-memory fallback when that worked). A failure leaves (or puts) the
    /// spool on the fallback.
    fn rewrite(&mut self) {
        let Some(f) = self.file.as_mut() else {
            return;
        };
        let was_fallback = f.file.is_none();
        match write_records(&f.path, f.file.as_ref(), &self.entries) {
            Ok((new, offsets, end)) => {
                for (e, at) in self.entries.iter_mut().zip(offsets) {
                    e.body = Body::File(at);
                }
                f.file = Some(new);
                f.end = end;
                if was_fallback {
                    log::info!(
                        "spool {}: writing works again; the {} waiting summaries are back in \
                         the file",
                        f.path.display(),
                        self.entries.len()
                    );
                }
            }
            Err(e) if was_fallback => {
                self.write_errors += 1;
                log::debug!("spool {}: still not writable: {e}", f.path.display());
            }
            Err(e) => self.fall_back(e),
        }
    }
}

/// Whether `e` is the disk failing (full, read-only, I/O error), as opposed to a mistake in
/// the configuration (no such directory, no permission, a symlink).
pub fn is_disk_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EROFS | libc::EIO | libc::EDQUOT)
    )
}

/// One record's bytes: header and payload.
fn record(magic: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(HEADER as usize + payload.len());
    rec.extend_from_slice(&magic);
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    rec.extend_from_slice(payload);
    rec
}

/// Writes `entries` into `<path>.compact` (their bodies from memory or from `old`) and renames
/// it over `path`: the new file, each entry's new offset, and its end. On failure the
/// temporary file is removed and `path` is untouched.
fn write_records(
    path: &Path,
    old: Option<&File>,
    entries: &VecDeque<Entry>,
) -> io::Result<(File, Vec<u64>, u64)> {
    let tmp = path.with_extension("compact");
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let new = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        let mut offsets = Vec::with_capacity(entries.len());
        let mut end = 0u64;
        for e in entries {
            let rec = match (&e.body, old) {
                (Body::Memory(v), _) => record(LIVE, v),
                (Body::File(at), Some(old)) => {
                    let mut rec = vec![0u8; (HEADER + e.len as u64) as usize];
                    old.read_exact_at(&mut rec, *at)?;
                    rec
                }
                (Body::File(_), None) => unreachable!("file records only while on the file"),
            };
            new.write_all_at(&rec, end)?;
            offsets.push(end);
            end += rec.len() as u64;
        }
        std::fs::rename(&tmp, path)?;
        Ok((new, offsets, end))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Opens `path` (creating it 0600) without following a symlink, and makes it 0600 if an
/// older version left it readable by others. `write`: read-write, else read-only.
fn open_private(path: &Path, write: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .create(write)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    if write && file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Takes the exclusive lock `<path>.lock` (non-blocking) and writes our pid into it. The
/// lock is held on a read-only descriptor, so holding it does not keep a read-only remount
/// of the disk from going ahead.
fn lock(path: &Path) -> Result<File, OpenError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o600)
        .open(&lock_path)?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(e.into());
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(OpenError::Locked {
            spool: path.to_path_buf(),
            lock: lock_path,
            holder: text.trim().parse().ok(),
        });
    }
    // Best effort (a full disk may refuse it): the lock is what matters, the pid only names
    // the holder.
    let _ = OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .and_then(|mut w| writeln!(w, "{}", std::process::id()));
    Ok(file)
}

/// What a scan of the file found.
struct Scan {
    /// Waiting records: (offset, payload length).
    live: Vec<(u64, u32)>,
    /// Byte ranges that are not part of a good record.
    bad: Vec<(u64, u64)>,
    /// The end of the last good record.
    end: u64,
}

/// Reads the file front to back as a stream: a record where one is expected, else the next
/// offset where a good one starts.
fn scan(file: &File) -> io::Result<Scan> {
    let size = file.metadata()?.len();
    let mut buf = vec![0u8; CHUNK];
    let mut s = Scan {
        live: Vec::new(),
        bad: Vec::new(),
        end: 0,
    };
    let mut at = 0u64;
    while at < size {
        if let Some((live, len)) = record_at(file, at, size, &mut buf)? {
            if live {
                s.live.push((at, len));
            }
            at += HEADER + len as u64;
            s.end = at;
            continue;
        }
        // Resynchronise on the next good record.
        let mut next = at + 1;
        loop {
            next = next_magic(file, next, size, &mut buf)?;
            if next >= size || record_at(file, next, size, &mut buf)?.is_some() {
                break;
            }
            next += 1;
        }
        let next = next.min(size);
        s.bad.push((at, next));
        at = next;
    }
    Ok(s)
}

/// The record at `at`: (waiting?, payload length), or `None` when what is there is not a
/// whole record with a good CRC. The payload is checked in chunks, not held.
fn record_at(file: &File, at: u64, size: u64, buf: &mut [u8]) -> io::Result<Option<(bool, u32)>> {
    if at + HEADER > size {
        return Ok(None);
    }
    let mut h = [0u8; HEADER as usize];
    file.read_exact_at(&mut h, at)?;
    let live = match h[..4].try_into().unwrap() {
        LIVE => true,
        DONE => false,
        _ => return Ok(None),
    };
    let len = u32::from_le_bytes(h[4..8].try_into().unwrap());
    let crc = u32::from_le_bytes(h[8..12].try_into().unwrap());
    let end = at + HEADER + len as u64;
    if end > size {
        return Ok(None);
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut off = at + HEADER;
    while off < end {
        let n = ((end - off) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], off)?;
        hasher.update(&buf[..n]);
        off += n as u64;
    }
    Ok((hasher.finalize() == crc).then_some((live, len)))
}

/// The first offset at or after `from` where a magic starts (`size` if none).
fn next_magic(file: &File, from: u64, size: u64, buf: &mut [u8]) -> io::Result<u64> {
    let mut at = from;
    while at + 4 <= size {
        let n = ((size - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        if let Some(i) = buf[..n].windows(4).position(|w| w == LIVE || w == DONE) {
            return Ok(at + i as u64);
        }
        if at + n as u64 >= size {
            break;
        }
        // Overlap by three bytes: a magic may straddle two chunks.
        at += n as u64 - 3;
    }
    Ok(size)
}

/// Copies the `bad` ranges of `file` next to the spool file, for a post-mortem; the path, or
/// why not.
fn set_aside(path: &Path, file: &File, bad: &[(u64, u64)]) -> Result<PathBuf, String> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{secs}"));
    let aside = PathBuf::from(name);
    let copied = (|| {
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&aside)?;
        let mut buf = vec![0u8; CHUNK];
        for &(mut a, b) in bad {
            while a < b {
                let n = ((b - a) as usize).min(buf.len());
                file.read_exact_at(&mut buf[..n], a)?;
                out.write_all(&buf[..n])?;
                a += n as u64;
            }
        }
        io::Result::Ok(())
    })();
    copied
        .map(|()| aside.clone())
        .map_err(|e| format!("{}: {e}", aside.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("efspool-{}-{name}", std::process::id()));
        remove(&p);
        let _ = std::fs::remove_file(lock_of(&p));
        p
    }

    fn lock_of(p: &Path) -> PathBuf {
        let mut n = p.as_os_str().to_owned();
        n.push(".lock");
        PathBuf::from(n)
    }

    fn remove(p: &Path) {
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_file(lock_of(p));
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
        remove(&p);
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
        remove(&p);
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
        remove(&p);
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
        remove(&p);
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
        remove(&p);
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
        remove(&p);
    }

    /// A torn record whose payload holds bytes that look like a done record's header, with a
    /// length reaching over the good record behind it: the resync must not take them for a
    /// record (done records pass the same CRC check), or the good record would be lost.
    #[test]
    fn resync_does_not_latch_onto_a_fake_done_header_in_payload_bytes() {
        let p = tmp("fakedone");
        let good = record(LIVE, b"precious");
        // Record A: 40 payload bytes, a fake "EFS0" header 2 bytes in.
        let a_len = 40usize;
        let size = HEADER as usize + a_len + good.len();
        let fake_at = HEADER as usize + 2;
        let fake_len = (size - fake_at - HEADER as usize) as u32;
        let mut payload = vec![0x11u8; a_len];
        payload[2..6].copy_from_slice(&DONE);
        payload[6..10].copy_from_slice(&fake_len.to_le_bytes());
        payload[10..14].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        let mut data = record(LIVE, &payload);
        data[8] ^= 0xff; // A's own CRC is torn
        data.extend_from_slice(&good);
        std::fs::write(&p, &data).unwrap();
        let (s, r) = Spool::open(&p, 10_000).unwrap();
        assert_eq!(drain_all(&s), [b"precious".to_vec()]);
        assert_eq!((r.records, r.torn_bytes), (1, HEADER + a_len as u64));
        let _ = std::fs::remove_file(r.set_aside.unwrap().unwrap());
        drop(s);
        remove(&p);
    }

    #[test]
    fn files_are_private_and_a_symlink_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let p = tmp("mode");
        let (s, _) = Spool::open(&p, 1000).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(&lock_of(&p)), 0o600);
        drop(s);
        // An older agent's 0644 file is made private.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Spool::open(&p, 1000).unwrap());
        assert_eq!(mode(&p), 0o600);
        remove(&p);
        // A symlink planted at the path is not followed.
        let target = tmp("mode-target");
        std::fs::write(&target, b"not a spool").unwrap();
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let e = Spool::open(&p, 1000)
            .err()
            .expect("a symlink must be refused");
        assert!(
            matches!(&e, OpenError::Io(io) if io.raw_os_error() == Some(libc::ELOOP)),
            "{e}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"not a spool");
        remove(&p);
        remove(&target);
    }

    #[test]
    fn a_second_spool_on_the_same_file_is_refused_naming_the_holder() {
        let p = tmp("lock");
        let (mut first, _) = Spool::open(&p, 1000).unwrap();
        first.push(b"mine").unwrap();
        let e = Spool::open(&p, 1000).err().expect("the file is taken");
        let OpenError::Locked { holder, lock, .. } = &e else {
            panic!("{e}");
        };
        assert_eq!(*holder, Some(std::process::id()));
        assert_eq!(*lock, lock_of(&p));
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())) && msg.contains("in use"),
            "{msg}"
        );
        drop(first);
        let (s, r) = Spool::open(&p, 1000).unwrap();
        assert_eq!((r.records, drain_all(&s)), (1, vec![b"mine".to_vec()]));
        drop(s);
        remove(&p);
    }

    fn status_kib(field: &str) -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        let l = s.lines().find(|l| l.starts_with(field)).unwrap();
        l[field.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap()
    }

    /// A 256 MiB spool file (a done record over a hole, then one waiting record) is read as
    /// a stream: the peak resident memory of opening it stays far below its size.
    #[test]
    fn opening_reads_the_file_as_a_stream() {
        let p = tmp("stream");
        let big: u64 = 256 << 20;
        let mut h = crc32fast::Hasher::new();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..big >> 20 {
            h.update(&zeros);
        }
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        let mut head = DONE.to_vec();
        head.extend_from_slice(&(big as u32).to_le_bytes());
        head.extend_from_slice(&h.finalize().to_le_bytes());
        f.write_all_at(&head, 0).unwrap();
        f.write_all_at(&record(LIVE, b"last"), HEADER + big)
            .unwrap();
        drop(f);
        // Reset the peak (VmHWM) to the current resident size, then open.
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let before = status_kib("VmRSS:");
        let (s, r) = Spool::open(&p, 10_000).unwrap();
        let peak = status_kib("VmHWM:");
        assert_eq!((r.records, r.torn_bytes), (1, 0));
        assert_eq!(drain_all(&s), [b"last".to_vec()]);
        assert!(
            peak.saturating_sub(before) < 32 * 1024,
            "opening a 256 MiB spool raised the peak RSS by {} KiB",
            peak.saturating_sub(before)
        );
        drop(s);
        remove(&p);
    }
}
