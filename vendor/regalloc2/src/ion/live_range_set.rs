//! bpf2sys (BPF2SYS-PATCH.md, change 5): the live ranges allocated to one
//! physical register, as sorted chunks instead of a `BTreeMap`.
//!
//! Upstream keeps `PRegData::allocations` in a
//! `BTreeMap<LiveRangeKey, LiveRangeIndex>` whose key order treats
//! overlapping ranges as equal. The ranges of one register never overlap
//! (the allocator inserts a bundle's ranges only after checking that none
//! overlaps what is there), so the map is a list of disjoint ranges sorted by
//! position. Every operation the allocator performs is either "insert a
//! range", "remove the range that overlaps this one", "is there a range that
//! overlaps this one" or "the ranges from the first one not entirely before
//! this one, in order". In a sorted list each of these is one binary search
//! for the first entry not entirely before the probe; a `BTreeMap` insert
//! costs ~400 instructions (node search, splits, allocation) where the same
//! binary search and a short `memmove` cost a fraction of that.
//!
//! A single sorted `Vec` would make an insert in the middle move every later
//! entry: quadratic on very long functions (a 100k-slot program keeps tens of
//! thousands of ranges on some registers). The entries are therefore kept in
//! chunks of at most `CHUNK_MAX` entries, each sorted, every entry of a chunk
//! before every entry of the next, and no chunk empty: an insert or removal
//! moves at most one chunk's entries (plus, on a split or when a chunk empties,
//! the chunk list's headers), and a search is a binary search over the chunks'
//! last entries and then within one chunk.
//!
//! The entries found, and the order in which ranges are visited, are those of
//! the `BTreeMap` (same sort order over disjoint keys), so the allocation is
//! unchanged.

use super::data_structures::{LiveRangeIndex, LiveRangeKey};
use alloc::vec::Vec;

/// A chunk reaching this many entries is split into two halves.
const CHUNK_MAX: usize = 64;

type Entry = (LiveRangeKey, LiveRangeIndex);

/// Disjoint live ranges sorted by position (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct LiveRangeSet {
    /// Non-empty sorted chunks; every entry of a chunk is before every entry
    /// of the next.
    chunks: Vec<Vec<Entry>>,
}

impl LiveRangeSet {
    pub(crate) fn new() -> Self {
        Self { chunks: Vec::new() }
    }

    /// Removes every range (the allocator's context is reused across functions).
    pub fn clear(&mut self) {
        self.chunks.clear();
    }

    /// The position (chunk, index in the chunk) of the first entry that is
    /// not entirely before `key` (`entry.to > key.from`); `(chunks.len(), 0)`
    /// when there is none. `LiveRangeKey`'s order says "entirely before" with
    /// `<`, and over disjoint sorted entries it is monotone, so both binary
    /// searches are exact.
    #[inline]
    fn seek(&self, key: &LiveRangeKey) -> (usize, usize) {
        let chunk = self.chunks.partition_point(|c| c[c.len() - 1].0 < *key);
        match self.chunks.get(chunk) {
            Some(c) => (chunk, c.partition_point(|e| e.0 < *key)),
            None => (chunk, 0),
        }
    }

    /// The entry at `(chunk, index)` if it overlaps `key`.
    #[inline]
    fn overlapping(&self, (chunk, index): (usize, usize), key: &LiveRangeKey) -> Option<&Entry> {
        self.chunks
            .get(chunk)
            .and_then(|c| c.get(index))
            .filter(|e| e.0 == *key)
    }

    /// Adds the range `key`. As `BTreeMap::insert`: when a range overlapping
    /// `key` is already there, its value is replaced and the old one returned
    /// (the allocator never does this; it asserts `None`).
    pub fn insert(&mut self, key: LiveRangeKey, value: LiveRangeIndex) -> Option<LiveRangeIndex> {
        let (chunk, index) = self.seek(&key);
        if self.overlapping((chunk, index), &key).is_some() {
            let entry = &mut self.chunks[chunk][index];
            return Some(core::mem::replace(&mut entry.1, value));
        }
        // Past every entry: append to the last chunk (or start the first).
        let (chunk, index) = if chunk == self.chunks.len() {
            match self.chunks.last() {
                Some(last) => (chunk - 1, last.len()),
                None => {
                    self.chunks.push(Vec::with_capacity(CHUNK_MAX));
                    (0, 0)
                }
            }
        } else {
            (chunk, index)
        };
        let c = &mut self.chunks[chunk];
        c.insert(index, (key, value));
        if c.len() >= CHUNK_MAX {
            let mut tail = Vec::with_capacity(CHUNK_MAX);
            tail.extend_from_slice(&c[CHUNK_MAX / 2..]);
            c.truncate(CHUNK_MAX / 2);
            self.chunks.insert(chunk + 1, tail);
        }
        None
    }

    /// Removes the range overlapping `key` and returns its value (the
    /// allocator removes exactly the ranges it inserted, each overlapping
    /// only itself).
    pub fn remove(&mut self, key: &LiveRangeKey) -> Option<LiveRangeIndex> {
        let (chunk, index) = self.seek(key);
        self.overlapping((chunk, index), key)?;
        let (_, value) = self.chunks[chunk].remove(index);
        if self.chunks[chunk].is_empty() {
            self.chunks.remove(chunk);
        }
        Some(value)
    }

    /// Whether some range overlaps `key`.
    pub fn contains_key(&self, key: &LiveRangeKey) -> bool {
        self.overlapping(self.seek(key), key).is_some()
    }

    /// The ranges from the first one not entirely before `key`, in order
    /// (`BTreeMap::range(key..)`).
    pub fn range_from(&self, key: LiveRangeKey) -> Range<'_> {
        let (chunk, index) = self.seek(&key);
        Range {
            chunks: &self.chunks,
            chunk,
            index,
        }
    }
}

/// Iterator of [`LiveRangeSet::range_from`].
pub struct Range<'a> {
    chunks: &'a [Vec<Entry>],
    chunk: usize,
    index: usize,
}

impl<'a> Iterator for Range<'a> {
    type Item = (&'a LiveRangeKey, &'a LiveRangeIndex);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let c = self.chunks.get(self.chunk)?;
        let (key, value) = &c[self.index];
        self.index += 1;
        if self.index == c.len() {
            self.chunk += 1;
            self.index = 0;
        }
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ion::data_structures::CodeRange;
    use crate::ProgPoint;
    use alloc::collections::BTreeMap;

    fn key(from: u32, to: u32) -> LiveRangeKey {
        LiveRangeKey::from_range(&CodeRange {
            from: ProgPoint::from_index(from),
            to: ProgPoint::from_index(to),
        })
    }

    /// A deterministic pseudo-random sequence (xorshift), so the test needs no
    /// dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn behaves_as_the_btree_map_it_replaces() {
        // Disjoint ranges [4k, 4k + len) with len 1..=3, inserted and removed
        // in a pseudo-random order, with overlap queries and ordered scans
        // from every position, across enough entries to split and empty chunks.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut set = LiveRangeSet::new();
        let mut map: BTreeMap<LiveRangeKey, LiveRangeIndex> = BTreeMap::new();
        for step in 0..20_000u32 {
            let slot = (next(&mut state) % 1_000) as u32;
            let len = 1 + (slot % 3);
            let k = key(4 * slot, 4 * slot + len);
            let present = map.contains_key(&k);
            assert_eq!(set.contains_key(&k), present);
            if present && next(&mut state) % 3 == 0 {
                assert_eq!(set.remove(&k), map.remove(&k));
            } else if !present {
                let v = LiveRangeIndex::new(step as usize);
                assert_eq!(set.insert(k, v), map.insert(k, v));
            }
            if step % 97 == 0 {
                // The allocator's probes: an empty range at a point (`range`)
                // and one program point (`contains_key`); each overlaps at most
                // one of the disjoint ranges, where the `BTreeMap`'s answers are
                // well defined.
                let probe = (next(&mut state) % 4_010) as u32;
                for (from, to) in [(probe, probe), (probe, probe + 1)] {
                    let q = key(from, to);
                    assert_eq!(set.contains_key(&q), map.contains_key(&q), "{from}..{to}");
                    let ours: Vec<_> = set.range_from(q).map(|(k, v)| (k.to_range(), *v)).collect();
                    let theirs: Vec<_> = map.range(q..).map(|(k, v)| (k.to_range(), *v)).collect();
                    assert_eq!(ours, theirs, "{from}..{to}");
                }
            }
        }
        for c in &set.chunks {
            assert!(!c.is_empty() && c.len() < CHUNK_MAX);
        }
    }
}
