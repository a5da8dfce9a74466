//! What each entry's counters were at the last drain, found again in the next walk by
//! position rather than by hashing.
//!
//! A hash map from 64k keys to their last counters is ~11 MB, and a drain's lookups into it
//! miss the caches one by one: most of a large drain's own CPU time (bench/RESULTS.md,
//! session 6). But the kernel's walk gives entries in nearly the same order every time: by
//! bucket, and a key stays in its bucket while it is in the table (the kernel's hash tables
//! never resize; new entries enter at the head of their bucket). So each walk's entries are
//! kept in the order they came, with the bucket range ([`Span`]) of the read that held them.
//! The next walk's entry is first compared with the one after the last match; failing that,
//! it is looked up among the entries of the spans that overlap its own — the only ones that
//! can hold its key — in a small map built for that span.

use crate::{table::Span, window::Counts};
use shared::FlowKey;
use std::collections::HashMap;

/// foldhash instead of SipHash: the keys are our own table's.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One walk's entries in the order they came, and the spans that held them.
#[derive(Default)]
struct Walk {
    keys: Vec<FlowKey>,
    counts: Vec<Counts>,
    /// Each read's span and its entries' range in `keys`.
    spans: Vec<(Span, std::ops::Range<usize>)>,
}

impl Walk {
    fn clear(&mut self) {
        self.keys.clear();
        self.counts.clear();
        self.spans.clear();
    }

    fn push(&mut self, span: Span, key: &FlowKey, counts: Counts) {
        let at = self.keys.len();
        match self.spans.last_mut() {
            Some((s, r)) if *s == span => r.end = at + 1,
            _ => self.spans.push((span, at..at + 1)),
        }
        self.keys.push(*key);
        self.counts.push(counts);
    }
}

/// The last walk's counters, and the walk being made.
#[derive(Default)]
pub struct Baseline {
    last: Walk,
    next: Walk,
    /// The current span's candidates: positions in `last` of the entries of last walk's
    /// spans that overlap it, in walk order.
    candidates: Vec<usize>,
    /// Where the next match is expected in `candidates`.
    cursor: usize,
    /// Key → position in `candidates`, built at the span's first entry out of order.
    index: FastMap<FlowKey, usize>,
    indexed: bool,
}

impl Baseline {
    /// Begins a walk (what an unfinished one recorded is dropped).
    pub fn start(&mut self) {
        self.next.clear();
    }

    /// Records the entry `key` read in `span` with counts `now`, and returns what it had at
    /// the last walk (zero for an entry new since).
    pub fn step(&mut self, span: Span, key: &FlowKey, now: Counts) -> Counts {
        // A new read: the walk's record has no span yet or another one last.
        if self.next.spans.last().is_none_or(|(s, _)| *s != span) {
            self.enter(span);
        }
        let before = self.find(key);
        self.next.push(span, key, now);
        before
    }

    /// The walk is complete: it becomes the baseline of the next one. Entries of the last
    /// walk not seen again are forgotten.
    pub fn finish(&mut self) {
        std::mem::swap(&mut self.last, &mut self.next);
        self.start();
    }

    /// How many entries the walk being made has recorded: the position the next step's
    /// entry will have in it.
    pub fn recorded(&self) -> usize {
        self.next.keys.len()
    }

    /// Forgets the counters of the entry at `position` of the finished walk, removed from
    /// the table since: if its key comes back, it is a new entry counting from zero.
    pub fn forget(&mut self, position: usize) {
        if let Some(p) = self.last.counts.get_mut(position) {
            *p = Counts::default();
        }
    }

    /// Entries the last finished walk recorded.
    pub fn entries(&self) -> usize {
        self.last.keys.len()
    }

    fn enter(&mut self, span: Span) {
        self.candidates.clear();
        for (s, r) in &self.last.spans {
            if s.overlaps(&span) {
                self.candidates.extend(r.clone());
            }
        }
        self.cursor = 0;
        self.indexed = false;
    }

    fn find(&mut self, key: &FlowKey) -> Counts {
        if let Some(&i) = self.candidates.get(self.cursor) {
            if self.last.keys[i] == *key {
                self.cursor += 1;
                return self.last.counts[i];
            }
        }
        if !self.indexed {
            self.index.clear();
            for (pos, &i) in self.candidates.iter().enumerate() {
                self.index.insert(self.last.keys[i], pos);
            }
            self.indexed = true;
        }
        match self.index.get(key) {
            Some(&pos) => {
                self.cursor = pos + 1;
                self.last.counts[self.candidates[pos]]
            }
            None => Counts::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u16) -> FlowKey {
        FlowKey {
            port_a: n,
            proto: 17,
            ..FlowKey::default()
        }
    }

    fn counters(n: u64) -> Counts {
        Counts::of(&shared::FlowCounters::counted([n, 1], [100 * n, 10]))
    }

    fn span(table: u8, start: u32, end: u32) -> Span {
        Span { table, start, end }
    }

    /// Walks `entries` (span, key number, packets a→b), returning the a→b packets each had at
    /// the last walk.
    fn walk(b: &mut Baseline, entries: &[(Span, u16, u64)]) -> Vec<u64> {
        b.start();
        let got = entries
            .iter()
            .map(|&(s, k, n)| b.step(s, &key(k), counters(n)).packets[0])
            .collect();
        b.finish();
        got
    }

    #[test]
    fn entries_in_the_same_order_find_their_last_counters() {
        let mut b = Baseline::default();
        let (lo, hi) = (span(0, 0, 8), span(0, 8, u32::MAX));
        assert_eq!(
            walk(&mut b, &[(lo, 1, 5), (lo, 2, 6), (hi, 3, 7)]),
            [0, 0, 0]
        );
        assert_eq!(
            walk(&mut b, &[(lo, 1, 9), (lo, 2, 9), (hi, 3, 9)]),
            [5, 6, 7]
        );
        assert_eq!(b.entries(), 3);
    }

    #[test]
    fn new_reordered_and_gone_entries() {
        let mut b = Baseline::default();
        let s = span(0, 0, 16);
        walk(&mut b, &[(s, 1, 10), (s, 2, 20), (s, 3, 30), (s, 4, 40)]);
        // 5 is new, 2 is gone, 4 and 3 come the other way round.
        assert_eq!(
            walk(&mut b, &[(s, 5, 1), (s, 1, 11), (s, 4, 41), (s, 3, 31)]),
            [0, 10, 40, 30]
        );
        // 2 comes back: new, from zero.
        assert_eq!(walk(&mut b, &[(s, 2, 1), (s, 1, 12)]), [0, 11]);
    }

    #[test]
    fn a_key_is_found_in_any_overlapping_span_of_its_table() {
        let mut b = Baseline::default();
        // The first walk gave key 3 in the high half's first read, the next one in the low
        // half's last read, which reached past the split at bucket 8.
        walk(
            &mut b,
            &[
                (span(0, 0, 6), 1, 10),
                (span(0, 8, 20), 3, 30),
                (span(1, 0, 20), 4, 40),
            ],
        );
        assert_eq!(
            walk(
                &mut b,
                &[
                    (span(0, 4, 12), 3, 31),
                    (span(0, 0, 4), 1, 11),
                    (span(0, 12, 20), 4, 1)
                ]
            ),
            [30, 10, 0],
            "4 was in the other table"
        );
    }

    #[test]
    fn a_removed_entry_counts_from_zero_when_it_returns() {
        let mut b = Baseline::default();
        let s = span(0, 0, 16);
        b.start();
        b.step(s, &key(1), counters(10));
        let at = b.recorded();
        b.step(s, &key(2), counters(20));
        b.finish();
        b.forget(at);
        assert_eq!(walk(&mut b, &[(s, 1, 11), (s, 2, 3)]), [10, 0]);
    }
}
