//! Maps, helpers and the tail-call runtime for the benchmark programs that are real eBPF for Windows programs
//! (`samples/bench/bench_maps.h`: `flowtrack`, `tailchain`, `bindpolicy`), as the reference interpreter runs them.
//! The engines that run machine code call the native baseline's C host itself ([`super::host_c`]); the interpreter
//! cannot (its memory is regions it checks, not host memory), so it gets this port.
//!
//! The semantics are the emulated runtime's (`bpf2sys_emulator::EmulatedMap`, its `map_*_elem` and `tail_call`
//! helpers): `update` with `BPF_NOEXIST`/`BPF_EXIST` fails with `EEXIST`/`ENOENT`, a full hash map with `E2BIG`, a
//! value keeps its address until its entry is deleted, an array index past `max_entries` finds nothing, and a tail
//! call records the next program, which the caller runs after the current one returns (contract §3.4, at most
//! `MAX_TAIL_CALL_CNT` = 33). The structures are the native baseline's (`host_maps.h` next to this file) line for
//! line — a chained hash table over a preallocated node pool, hashed four key bytes at a time with `map_hash`.

use super::input::map_hash;

const EEXIST: i64 = -17;
const ENOENT: i64 = -2;
const E2BIG: i64 = -7;
const EINVAL: i64 = -22;
/// `tail_call` past the limit (the emulator's `TAIL_CALL_LIMIT`).
const TAIL_CALL_LIMIT: i64 = -31;
const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;
/// Contract §3.4: the runtime stops following tail calls after this many.
pub const MAX_TAIL_CALL_CNT: u32 = 33;

/// `bpf_map_type` values of the maps the benchmark programs declare (contract §7.3).
pub const MAP_HASH: u32 = 1;
pub const MAP_ARRAY: u32 = 2;
pub const MAP_PROG_ARRAY: u32 = 3;

/// The hash of a key (`key_hash` in `host_maps.h`): `map_hash` over each 4-byte word, FNV-1a over the rest.
fn key_hash(key: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut words = key.chunks_exact(4);
    for w in &mut words {
        h = map_hash(h ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    for &b in words.remainder() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// A hash map's keys: buckets of chains through a pool of `max_entries` nodes. Node `n` (1-based; 0 ends a chain)
/// owns value slot `n - 1`, which never moves while the entry lives.
#[derive(Clone, Debug)]
pub struct HashIndex {
    key_size: usize,
    max_entries: u32,
    mask: u32,
    buckets: Vec<u32>,
    next: Vec<u32>,
    keys: Vec<u8>,
    free_head: u32,
    count: u32,
}

impl HashIndex {
    pub fn new(key_size: u32, max_entries: u32) -> HashIndex {
        let buckets = (2 * max_entries).next_power_of_two().max(1);
        // The free list threads every node in order: 1 → 2 → … → max_entries → 0.
        let next = (0..=max_entries).map(|n| if n == 0 || n == max_entries { 0 } else { n + 1 }).collect();
        HashIndex {
            key_size: key_size as usize,
            max_entries,
            mask: buckets - 1,
            buckets: vec![0; buckets as usize],
            next,
            keys: vec![0; key_size as usize * max_entries as usize],
            free_head: u32::from(max_entries > 0),
            count: 0,
        }
    }

    fn key_of(&self, node: u32) -> &[u8] {
        let start = (node as usize - 1) * self.key_size;
        &self.keys[start..start + self.key_size]
    }

    /// The node holding `key` and its predecessor in the chain (0 = the bucket head).
    fn find_node(&self, key: &[u8]) -> (usize, u32, u32) {
        let bucket = (key_hash(key) & self.mask) as usize;
        let (mut prev, mut node) = (0, self.buckets[bucket]);
        while node != 0 && self.key_of(node) != key {
            prev = node;
            node = self.next[node as usize];
        }
        (bucket, prev, node)
    }

    /// The value slot of `key`.
    pub fn find(&self, key: &[u8]) -> Option<usize> {
        let (_, _, node) = self.find_node(key);
        (node != 0).then(|| node as usize - 1)
    }

    /// The value slot `update` writes: the existing entry's, or a new entry's.
    pub fn entry_for_update(&mut self, key: &[u8], flags: u64) -> Result<usize, i64> {
        let (bucket, _, node) = self.find_node(key);
        if node != 0 {
            return if flags == BPF_NOEXIST { Err(EEXIST) } else { Ok(node as usize - 1) };
        }
        if flags == BPF_EXIST {
            return Err(ENOENT);
        }
        if self.count >= self.max_entries {
            return Err(E2BIG);
        }
        let node = self.free_head;
        self.free_head = self.next[node as usize];
        let start = (node as usize - 1) * self.key_size;
        self.keys[start..start + self.key_size].copy_from_slice(key);
        self.next[node as usize] = self.buckets[bucket];
        self.buckets[bucket] = node;
        self.count += 1;
        Ok(node as usize - 1)
    }

    /// Deletes `key`'s entry.
    pub fn remove(&mut self, key: &[u8]) -> Result<(), i64> {
        let (bucket, prev, node) = self.find_node(key);
        if node == 0 {
            return Err(ENOENT);
        }
        let after = self.next[node as usize];
        if prev == 0 {
            self.buckets[bucket] = after;
        } else {
            self.next[prev as usize] = after;
        }
        self.next[node as usize] = self.free_head;
        self.free_head = node;
        self.count -= 1;
        Ok(())
    }

    /// Entries in the map.
    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// What a map holds besides its values.
#[derive(Clone, Debug)]
pub enum MapKind {
    Hash(HashIndex),
    Array,
    /// Program indices (into the module's programs) by slot.
    Programs(Vec<Option<usize>>),
}

/// One map of a benchmark module: its shape and where its entries are. The values live with the engine (host
/// memory for native code, a region for the interpreter), at `slot * value_size`.
#[derive(Clone, Debug)]
pub struct BenchMap {
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub kind: MapKind,
}

/// Why a map of the benchmark module cannot be created.
#[derive(Debug, thiserror::Error)]
#[error("map type {0} is not one the benchmark host implements (hash, array, program array)")]
pub struct UnsupportedMap(pub u32);

impl BenchMap {
    pub fn new(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> Result<BenchMap, UnsupportedMap> {
        let kind = match map_type {
            MAP_HASH => MapKind::Hash(HashIndex::new(key_size, max_entries)),
            MAP_ARRAY => MapKind::Array,
            MAP_PROG_ARRAY => MapKind::Programs(vec![None; max_entries as usize]),
            other => return Err(UnsupportedMap(other)),
        };
        Ok(BenchMap { key_size, value_size, max_entries, kind })
    }

    /// Bytes of value storage the map needs.
    pub fn value_bytes(&self) -> usize {
        match self.kind {
            MapKind::Programs(_) => 0,
            _ => self.value_size as usize * self.max_entries as usize,
        }
    }

    fn array_index(&self, key: &[u8]) -> Option<usize> {
        let k = u32::from_le_bytes(key.get(..4)?.try_into().ok()?);
        (k < self.max_entries).then_some(k as usize)
    }

    /// `bpf_map_lookup_elem`: the value slot of `key`.
    pub fn lookup(&self, key: &[u8]) -> Option<usize> {
        match &self.kind {
            MapKind::Hash(index) => index.find(key),
            MapKind::Array => self.array_index(key),
            MapKind::Programs(_) => None,
        }
    }

    /// `bpf_map_update_elem`: the slot the value is to be copied into, or the helper's error code.
    pub fn update_slot(&mut self, key: &[u8], flags: u64) -> Result<usize, i64> {
        match &mut self.kind {
            MapKind::Hash(index) => index.entry_for_update(key, flags),
            MapKind::Array => {
                let i = self.array_index(key).ok_or(E2BIG)?;
                if flags == BPF_NOEXIST {
                    return Err(EEXIST);
                }
                Ok(i)
            }
            MapKind::Programs(_) => Err(EINVAL),
        }
    }

    /// `bpf_map_delete_elem`.
    pub fn delete(&mut self, key: &[u8]) -> i64 {
        match &mut self.kind {
            MapKind::Hash(index) => index.remove(key).err().unwrap_or(0),
            MapKind::Array | MapKind::Programs(_) => EINVAL,
        }
    }

    /// The program in slot `index` of a program array.
    pub fn program(&self, index: u64) -> Option<usize> {
        match &self.kind {
            MapKind::Programs(slots) => slots.get(usize::try_from(index).ok()?).copied().flatten(),
            _ => None,
        }
    }

    /// Fills slot `index` of a program array with program `program` (what user mode does before attaching).
    pub fn set_program(&mut self, index: usize, program: usize) -> Result<(), i64> {
        match &mut self.kind {
            MapKind::Programs(slots) => *slots.get_mut(index).ok_or(E2BIG)? = Some(program),
            _ => return Err(EINVAL),
        }
        Ok(())
    }
}

/// The tail-call state of one invocation, which `ebpf_program_invoke` keeps behind the context: the 64-byte
/// header in front of the context points at it (as in the emulated runtime).
#[derive(Clone, Copy, Debug, Default)]
pub struct TailCallState {
    pub next: Option<usize>,
    pub count: u32,
}

impl TailCallState {
    /// `bpf_tail_call`: records program `program` (None: an empty slot) as the next one to run.
    pub fn tail_call(&mut self, program: Option<usize>) -> i64 {
        if self.count >= MAX_TAIL_CALL_CNT {
            return TAIL_CALL_LIMIT;
        }
        match program {
            Some(p) => {
                self.next = Some(p);
                self.count += 1;
                0
            }
            None => EINVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_map_inserts_finds_updates_and_deletes_like_the_emulated_runtime() {
        let mut m = BenchMap::new(MAP_HASH, 8, 8, 3).unwrap();
        let keys: Vec<[u8; 8]> = (0u64..4).map(|k| (k * 0x0101_0101_0101).to_le_bytes()).collect();
        assert_eq!(m.lookup(&keys[0]), None);
        let a = m.update_slot(&keys[0], 0).unwrap();
        assert_eq!(m.lookup(&keys[0]), Some(a));
        assert_eq!(m.update_slot(&keys[0], BPF_NOEXIST), Err(EEXIST));
        assert_eq!(m.update_slot(&keys[1], BPF_EXIST), Err(ENOENT));
        assert_eq!(m.update_slot(&keys[0], BPF_EXIST), Ok(a), "an update keeps the value's slot");
        let b = m.update_slot(&keys[1], 0).unwrap();
        m.update_slot(&keys[2], 0).unwrap();
        assert_eq!(m.update_slot(&keys[3], 0), Err(E2BIG), "full");
        assert_eq!(m.delete(&keys[3]), ENOENT);
        assert_eq!(m.delete(&keys[0]), 0);
        assert_eq!(m.lookup(&keys[0]), None);
        assert_eq!(m.lookup(&keys[1]), Some(b), "deleting one entry moves no other");
        assert!(m.update_slot(&keys[3], 0).is_ok(), "the freed node is reused");
    }

    #[test]
    fn hash_map_survives_many_insert_delete_cycles_without_growing() {
        let mut m = BenchMap::new(MAP_HASH, 4, 8, 16).unwrap();
        for round in 0u32..1000 {
            for k in 0..16u32 {
                m.update_slot(&(round * 16 + k).to_le_bytes(), BPF_NOEXIST).unwrap();
            }
            for k in 0..16u32 {
                assert_eq!(m.delete(&(round * 16 + k).to_le_bytes()), 0);
            }
        }
        let MapKind::Hash(index) = &m.kind else { unreachable!() };
        assert!(index.is_empty());
    }

    #[test]
    fn array_and_program_array_follow_the_emulated_runtime() {
        let mut a = BenchMap::new(MAP_ARRAY, 4, 8, 4).unwrap();
        assert_eq!(a.lookup(&3u32.to_le_bytes()), Some(3));
        assert_eq!(a.lookup(&4u32.to_le_bytes()), None);
        assert_eq!(a.update_slot(&4u32.to_le_bytes(), 0), Err(E2BIG));
        assert_eq!(a.update_slot(&1u32.to_le_bytes(), BPF_NOEXIST), Err(EEXIST));
        assert_eq!(a.delete(&1u32.to_le_bytes()), EINVAL);
        let mut p = BenchMap::new(MAP_PROG_ARRAY, 4, 4, 4).unwrap();
        p.set_program(2, 7).unwrap();
        assert_eq!((p.program(2), p.program(1), p.program(9)), (Some(7), None, None));
        let mut state = TailCallState::default();
        assert_eq!(state.tail_call(p.program(1)), EINVAL);
        for _ in 0..MAX_TAIL_CALL_CNT {
            assert_eq!(state.tail_call(p.program(2)), 0);
        }
        assert_eq!(state.tail_call(p.program(2)), TAIL_CALL_LIMIT);
    }
}
