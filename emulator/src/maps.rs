//! Emulated maps: the storage behind `map_data[i].address` (an `ebpf_map_t*` in the real runtime).
//!
//! Value storage is 8-byte aligned and never moves while an entry exists, so pointers handed to programs by
//! `bpf_map_lookup_elem` stay valid as they do in the kernel. Per-CPU maps model one CPU.
//!
//! Semantics follow eBPF for Windows' map implementation (`libs/execution_context/ebpf_maps.c`) where it
//! documents them, and Linux's where Windows defers to it: arrays are preallocated and cannot be deleted from;
//! hash maps are bounded by `max_entries` (LRU variants evict the least recently used entry instead of failing);
//! an LPM trie's key is `{u32 prefix_len; u8 data[]}` and a lookup finds the longest stored prefix of the key;
//! queues and stacks have no key and are used through push/pop/peek; a ring buffer and a perf event array
//! collect the records programs output, `max_entries` bytes of them (8-byte record headers included).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

pub const MAP_HASH: u32 = 1;
pub const MAP_ARRAY: u32 = 2;
pub const MAP_PROG_ARRAY: u32 = 3;
pub const MAP_PERCPU_HASH: u32 = 4;
pub const MAP_PERCPU_ARRAY: u32 = 5;
pub const MAP_HASH_OF_MAPS: u32 = 6;
pub const MAP_ARRAY_OF_MAPS: u32 = 7;
pub const MAP_LRU_HASH: u32 = 8;
pub const MAP_LPM_TRIE: u32 = 9;
pub const MAP_QUEUE: u32 = 10;
pub const MAP_LRU_PERCPU_HASH: u32 = 11;
pub const MAP_STACK: u32 = 12;
pub const MAP_RINGBUF: u32 = 13;
pub const MAP_PERF_EVENT_ARRAY: u32 = 14;
/// The sample extension's custom map (`BPF_MAP_TYPE_SAMPLE_HASH_MAP`, coverage §1).
pub const MAP_SAMPLE_HASH: u32 = 15;
/// XDP for Windows' AF_XDP socket map; its provider is not part of eBPF for Windows (contract §7.3).
pub const MAP_XSKMAP: u32 = 16;

pub const ENOENT: i64 = -2;
pub const E2BIG: i64 = -7;
pub const EEXIST: i64 = -17;
pub const EINVAL: i64 = -22;
pub const ENOSPC: i64 = -28;

pub const BPF_ANY: u64 = 0;
pub const BPF_NOEXIST: u64 = 1;
pub const BPF_EXIST: u64 = 2;

/// Bytes of the header in front of each ring-buffer or perf-event record (length and flags).
const RECORD_HEADER: usize = 8;

/// A map's definition as the runtime creates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDefinition {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

fn zeroed(bytes: usize) -> Box<[u64]> {
    vec![0u64; bytes.div_ceil(8).max(1)].into_boxed_slice()
}

fn boxed(value: &[u8]) -> Box<[u64]> {
    let mut storage = zeroed(value.len());
    // SAFETY: `storage` has at least `value.len()` bytes.
    unsafe { std::slice::from_raw_parts_mut(storage.as_mut_ptr() as *mut u8, value.len()) }.copy_from_slice(value);
    storage
}

fn bytes_of(storage: &[u64], len: usize) -> Vec<u8> {
    // SAFETY: every storage box holds at least the map's value size.
    unsafe { std::slice::from_raw_parts(storage.as_ptr() as *const u8, len) }.to_vec()
}

enum Storage {
    Array(Box<[u64]>),
    Hash {
        entries: BTreeMap<Vec<u8>, Box<[u64]>>,
        recency: Vec<Vec<u8>>,
        lru: bool,
        /// Longest-prefix-match lookups (LPM trie).
        lpm: bool,
    },
    /// Program array: slot → program index in the module.
    Programs(Vec<Option<usize>>),
    /// Map-in-map: key → inner map address.
    Maps(BTreeMap<Vec<u8>, usize>),
    /// Queue (FIFO) or stack (LIFO) of values.
    Values {
        items: VecDeque<Vec<u8>>,
        lifo: bool,
    },
    /// Ring buffer or perf event array: the records output so far and the bytes they take.
    Records {
        records: Vec<Vec<u8>>,
        used: usize,
    },
}

/// One map.
pub struct EmulatedMap {
    pub name: String,
    pub definition: MapDefinition,
    storage: RefCell<Storage>,
}

/// Map types the emulator implements: every type of contract §7.3 but XSKMAP, whose provider (XDP for Windows)
/// documents no behaviour for it in the references the emulator follows.
pub fn is_supported(map_type: u32) -> bool {
    (MAP_HASH..=MAP_SAMPLE_HASH).contains(&map_type)
}

/// Why a map of `definition` cannot be created, as the runtime or the map's provider refuses it.
pub fn creation_error(definition: &MapDefinition) -> Option<String> {
    match definition.map_type {
        t if is_supported(t) && t != MAP_SAMPLE_HASH => None,
        // coverage §1: an object map whose provider refuses any key or value size but 4.
        MAP_SAMPLE_HASH if definition.key_size == 4 && definition.value_size == 4 => None,
        MAP_SAMPLE_HASH => Some(format!(
            "the sample extension's map provider refuses a sample_hash_map with key size {} / value size {} (both \
             must be 4)",
            definition.key_size, definition.value_size
        )),
        MAP_XSKMAP => Some(
            "type 16 (xskmap) is provided by XDP for Windows, not by eBPF for Windows, and the emulator does not \
             implement it"
                .into(),
        ),
        t => Some(format!("type {t}, which the emulator does not implement")),
    }
}

/// The `prefix_len` leading bits of `key`'s data, the rest zeroed: an LPM trie entry's identity.
fn lpm_normalise(key: &[u8]) -> Option<(u32, Vec<u8>)> {
    let prefix = u32::from_le_bytes(key.get(..4)?.try_into().ok()?);
    let data = &key[4..];
    if prefix as usize > data.len() * 8 {
        return None;
    }
    let mut out = data.to_vec();
    for (i, b) in out.iter_mut().enumerate() {
        let keep = (prefix as usize).saturating_sub(i * 8).min(8);
        *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    let mut normalised = prefix.to_le_bytes().to_vec();
    normalised.extend(out);
    Some((prefix, normalised))
}

/// Whether the first `prefix` bits of `a` and `b` agree.
fn prefix_matches(a: &[u8], b: &[u8], prefix: u32) -> bool {
    (0..prefix as usize).all(|bit| (a[bit / 8] ^ b[bit / 8]) & (0x80 >> (bit % 8)) == 0)
}

impl EmulatedMap {
    pub fn new(name: &str, definition: MapDefinition) -> EmulatedMap {
        let storage = match definition.map_type {
            MAP_ARRAY | MAP_PERCPU_ARRAY => {
                Storage::Array(zeroed(definition.value_size as usize * definition.max_entries as usize))
            }
            MAP_PROG_ARRAY => Storage::Programs(vec![None; definition.max_entries as usize]),
            MAP_HASH_OF_MAPS | MAP_ARRAY_OF_MAPS => Storage::Maps(BTreeMap::new()),
            MAP_QUEUE | MAP_STACK => Storage::Values { items: VecDeque::new(), lifo: definition.map_type == MAP_STACK },
            MAP_RINGBUF | MAP_PERF_EVENT_ARRAY => Storage::Records { records: Vec::new(), used: 0 },
            t => Storage::Hash {
                entries: BTreeMap::new(),
                recency: Vec::new(),
                lru: t == MAP_LRU_HASH || t == MAP_LRU_PERCPU_HASH,
                lpm: t == MAP_LPM_TRIE,
            },
        };
        EmulatedMap { name: name.to_string(), definition, storage: RefCell::new(storage) }
    }

    /// Whether programs are refused `find`/`update` on this map: the sample extension's custom map serves them
    /// to user mode only (`EBPF_OPERATION_NOT_SUPPORTED`, so `bpf_map_lookup_elem` yields NULL; coverage §1).
    pub fn refuses_program_find_and_update(&self) -> bool {
        self.definition.map_type == MAP_SAMPLE_HASH
    }

    /// Base of the value storage of an array map (`map_data.array_data`), else null.
    pub fn array_data(&self) -> *mut u8 {
        match &mut *self.storage.borrow_mut() {
            Storage::Array(v) => v.as_mut_ptr() as *mut u8,
            _ => std::ptr::null_mut(),
        }
    }

    fn array_index(&self, key: &[u8]) -> Option<usize> {
        let k = u32::from_le_bytes(key.get(..4)?.try_into().ok()?) as usize;
        (k < self.definition.max_entries as usize).then_some(k)
    }

    /// `bpf_map_lookup_elem`: a pointer to the value, or null. For map-in-map, the inner map's address.
    pub fn lookup(&self, key: &[u8]) -> *mut u8 {
        let vs = self.definition.value_size as usize;
        let index = self.array_index(key);
        match &mut *self.storage.borrow_mut() {
            Storage::Array(v) => match index {
                // SAFETY: index < max_entries, so the value lies inside the preallocated storage.
                Some(i) => unsafe { (v.as_mut_ptr() as *mut u8).add(i * vs) },
                None => std::ptr::null_mut(),
            },
            Storage::Hash { entries, lpm: true, .. } => {
                let Some((prefix, _)) = lpm_normalise(key) else { return std::ptr::null_mut() };
                let best = entries
                    .iter_mut()
                    .filter(|(k, _)| {
                        let p = u32::from_le_bytes(k[..4].try_into().expect("4 bytes"));
                        p <= prefix && prefix_matches(&k[4..], &key[4..], p)
                    })
                    .max_by_key(|(k, _)| u32::from_le_bytes(k[..4].try_into().expect("4 bytes")));
                best.map_or(std::ptr::null_mut(), |(_, v)| v.as_mut_ptr() as *mut u8)
            }
            Storage::Hash { entries, recency, lru, .. } => match entries.get_mut(key) {
                Some(v) => {
                    if *lru {
                        recency.retain(|k| k != key);
                        recency.push(key.to_vec());
                    }
                    v.as_mut_ptr() as *mut u8
                }
                None => std::ptr::null_mut(),
            },
            Storage::Maps(m) => m.get(key).map(|a| *a as *mut u8).unwrap_or(std::ptr::null_mut()),
            // Programs cannot read a program array; queues, stacks and record maps have no keyed values.
            Storage::Programs(_) | Storage::Values { .. } | Storage::Records { .. } => std::ptr::null_mut(),
        }
    }

    /// `bpf_map_update_elem`. On a queue or stack it pushes (the key is empty).
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> i64 {
        let vs = self.definition.value_size as usize;
        let max = self.definition.max_entries as usize;
        let index = self.array_index(key);
        if value.len() < vs {
            return EINVAL;
        }
        if matches!(self.definition.map_type, MAP_QUEUE | MAP_STACK) {
            return self.push(value, flags);
        }
        match &mut *self.storage.borrow_mut() {
            Storage::Array(v) => {
                let Some(i) = index else { return E2BIG };
                if flags == BPF_NOEXIST {
                    return EEXIST;
                }
                // SAFETY: index < max_entries.
                let bytes = unsafe { std::slice::from_raw_parts_mut((v.as_mut_ptr() as *mut u8).add(i * vs), vs) };
                bytes.copy_from_slice(&value[..vs]);
                0
            }
            Storage::Hash { entries, recency, lru, lpm } => {
                let key = if *lpm {
                    match lpm_normalise(key) {
                        Some((_, k)) => k,
                        None => return EINVAL,
                    }
                } else {
                    key.to_vec()
                };
                let exists = entries.contains_key(&key);
                if flags == BPF_NOEXIST && exists {
                    return EEXIST;
                }
                if flags == BPF_EXIST && !exists {
                    return ENOENT;
                }
                if !exists && entries.len() >= max {
                    if !*lru || recency.is_empty() {
                        return E2BIG;
                    }
                    let victim = recency.remove(0);
                    entries.remove(&victim);
                }
                match entries.get_mut(&key) {
                    // Update in place: the value keeps its address.
                    // SAFETY: every entry's storage holds `vs` bytes.
                    Some(existing) => unsafe {
                        std::slice::from_raw_parts_mut(existing.as_mut_ptr() as *mut u8, vs)
                            .copy_from_slice(&value[..vs])
                    },
                    None => {
                        entries.insert(key.clone(), boxed(&value[..vs]));
                    }
                }
                if *lru {
                    recency.retain(|k| *k != key);
                    recency.push(key);
                }
                0
            }
            Storage::Programs(_) | Storage::Maps(_) | Storage::Values { .. } | Storage::Records { .. } => EINVAL,
        }
    }

    /// `bpf_map_delete_elem`.
    pub fn delete(&self, key: &[u8]) -> i64 {
        match &mut *self.storage.borrow_mut() {
            Storage::Hash { entries, recency, lpm, .. } => {
                let key = if *lpm {
                    match lpm_normalise(key) {
                        Some((_, k)) => k,
                        None => return EINVAL,
                    }
                } else {
                    key.to_vec()
                };
                recency.retain(|k| *k != key);
                if entries.remove(&key).is_some() {
                    0
                } else {
                    ENOENT
                }
            }
            _ => EINVAL,
        }
    }

    /// `bpf_map_lookup_and_delete_elem` on a hash-like map: the value, removed. Queues and stacks pop.
    pub fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let vs = self.definition.value_size as usize;
        if matches!(self.definition.map_type, MAP_QUEUE | MAP_STACK) {
            return self.pop();
        }
        match &mut *self.storage.borrow_mut() {
            Storage::Hash { entries, recency, lpm: false, .. } => {
                recency.retain(|k| k != key);
                entries.remove(key).map(|v| bytes_of(&v, vs))
            }
            _ => None,
        }
    }

    /// `bpf_map_push_elem`: a full queue or stack refuses unless `BPF_EXIST`, which drops the oldest value.
    pub fn push(&self, value: &[u8], flags: u64) -> i64 {
        let vs = self.definition.value_size as usize;
        if value.len() < vs || flags & !BPF_EXIST != 0 {
            return EINVAL;
        }
        match &mut *self.storage.borrow_mut() {
            Storage::Values { items, .. } => {
                if items.len() >= self.definition.max_entries as usize {
                    if flags != BPF_EXIST || items.is_empty() {
                        return E2BIG;
                    }
                    items.pop_front();
                }
                items.push_back(value[..vs].to_vec());
                0
            }
            _ => EINVAL,
        }
    }

    /// `bpf_map_pop_elem`: the front of a queue or the top of a stack, removed.
    pub fn pop(&self) -> Option<Vec<u8>> {
        match &mut *self.storage.borrow_mut() {
            Storage::Values { items, lifo: true } => items.pop_back(),
            Storage::Values { items, lifo: false } => items.pop_front(),
            _ => None,
        }
    }

    /// `bpf_map_peek_elem`: what `pop` would return, left in place.
    pub fn peek(&self) -> Option<Vec<u8>> {
        match &*self.storage.borrow() {
            Storage::Values { items, lifo: true } => items.back().cloned(),
            Storage::Values { items, lifo: false } => items.front().cloned(),
            _ => None,
        }
    }

    /// `bpf_ringbuf_output` / `bpf_perf_event_output`: appends a record if it fits in `max_entries` bytes.
    pub fn output(&self, data: &[u8]) -> i64 {
        let capacity = self.definition.max_entries as usize;
        match &mut *self.storage.borrow_mut() {
            Storage::Records { records, used } => {
                let size = RECORD_HEADER + data.len().next_multiple_of(8);
                if *used + size > capacity {
                    return ENOSPC;
                }
                *used += size;
                records.push(data.to_vec());
                0
            }
            _ => EINVAL,
        }
    }

    /// The records output to a ring buffer or perf event array, oldest first.
    pub fn records(&self) -> Vec<Vec<u8>> {
        match &*self.storage.borrow() {
            Storage::Records { records, .. } => records.clone(),
            Storage::Values { items, .. } => items.iter().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Every `(key, value)` the map holds, in key order: each slot of an array, each entry of a hash map or LPM
    /// trie, `(slot, program index as u32)` of a program array, `(key, [])` of a map-in-map. Queues, stacks and
    /// record maps have no keys: see [`EmulatedMap::records`].
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let vs = self.definition.value_size as usize;
        match &*self.storage.borrow() {
            Storage::Array(v) => (0..self.definition.max_entries as usize)
                .map(|i| {
                    let all = bytes_of(v, vs * self.definition.max_entries as usize);
                    ((i as u32).to_le_bytes().to_vec(), all[i * vs..(i + 1) * vs].to_vec())
                })
                .collect(),
            Storage::Hash { entries, .. } => entries.iter().map(|(k, v)| (k.clone(), bytes_of(v, vs))).collect(),
            Storage::Programs(p) => p
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.map(|p| ((i as u32).to_le_bytes().to_vec(), (p as u32).to_le_bytes().to_vec())))
                .collect(),
            Storage::Maps(m) => m.keys().map(|k| (k.clone(), Vec::new())).collect(),
            Storage::Values { .. } | Storage::Records { .. } => Vec::new(),
        }
    }

    /// Stores program `program` at `slot` of a program array (user-mode `bpf_map_update_elem` with a program fd).
    pub fn set_program(&self, slot: u32, program: usize) -> Result<(), String> {
        match &mut *self.storage.borrow_mut() {
            Storage::Programs(p) => {
                let s = p.get_mut(slot as usize).ok_or_else(|| format!("{}: slot {slot} out of range", self.name))?;
                *s = Some(program);
                Ok(())
            }
            _ => Err(format!("{} is not a program array", self.name)),
        }
    }

    /// The program at `slot` of a program array.
    pub fn program(&self, slot: u32) -> Option<usize> {
        match &*self.storage.borrow() {
            Storage::Programs(p) => p.get(slot as usize).copied().flatten(),
            _ => None,
        }
    }

    /// Stores the inner map at `inner` under key `slot` of a map-in-map.
    pub fn set_inner_map(&self, slot: u32, inner: usize) -> Result<(), String> {
        if self.definition.map_type == MAP_ARRAY_OF_MAPS && slot >= self.definition.max_entries {
            return Err(format!("{}: slot {slot} out of range", self.name));
        }
        match &mut *self.storage.borrow_mut() {
            Storage::Maps(m) => {
                m.insert(slot.to_le_bytes()[..self.definition.key_size.min(4) as usize].to_vec(), inner);
                Ok(())
            }
            _ => Err(format!("{} is not a map-in-map", self.name)),
        }
    }

    /// Number of entries present (hash-like maps) or slots (arrays).
    pub fn len(&self) -> usize {
        match &*self.storage.borrow() {
            Storage::Array(_) => self.definition.max_entries as usize,
            Storage::Hash { entries, .. } => entries.len(),
            Storage::Values { items, .. } => items.len(),
            Storage::Records { records, .. } => records.len(),
            Storage::Programs(p) => p.iter().flatten().count(),
            Storage::Maps(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value bytes under `key`, copied (for test assertions).
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let p = self.lookup(key);
        if p.is_null() || matches!(self.definition.map_type, MAP_HASH_OF_MAPS | MAP_ARRAY_OF_MAPS) {
            return None;
        }
        Some(unsafe { std::slice::from_raw_parts(p, self.definition.value_size as usize) }.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(map_type: u32, max_entries: u32) -> MapDefinition {
        MapDefinition { map_type, key_size: 4, value_size: 8, max_entries }
    }

    #[test]
    fn lru_hash_evicts_the_least_recently_used_entry() {
        let m = EmulatedMap::new("lru", def(MAP_LRU_HASH, 2));
        m.update(&1u32.to_le_bytes(), &[1; 8], 0);
        m.update(&2u32.to_le_bytes(), &[2; 8], 0);
        assert!(!m.lookup(&1u32.to_le_bytes()).is_null()); // 1 is now more recent than 2
        m.update(&3u32.to_le_bytes(), &[3; 8], 0);
        assert!(m.get(&2u32.to_le_bytes()).is_none(), "2 was evicted");
        assert_eq!(m.get(&1u32.to_le_bytes()), Some(vec![1; 8]));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn hash_is_bounded_and_honours_update_flags() {
        let m = EmulatedMap::new("h", def(MAP_HASH, 1));
        assert_eq!(m.update(&1u32.to_le_bytes(), &[1; 8], BPF_EXIST), ENOENT);
        assert_eq!(m.update(&1u32.to_le_bytes(), &[1; 8], BPF_NOEXIST), 0);
        assert_eq!(m.update(&1u32.to_le_bytes(), &[2; 8], BPF_NOEXIST), EEXIST);
        assert_eq!(m.update(&2u32.to_le_bytes(), &[2; 8], 0), E2BIG);
        let before = m.lookup(&1u32.to_le_bytes());
        assert_eq!(m.update(&1u32.to_le_bytes(), &[3; 8], 0), 0);
        assert_eq!(m.lookup(&1u32.to_le_bytes()), before, "values keep their address across updates");
        assert_eq!(m.delete(&1u32.to_le_bytes()), 0);
        assert_eq!(m.delete(&1u32.to_le_bytes()), ENOENT);
    }

    #[test]
    fn arrays_are_preallocated_and_bounded() {
        let m = EmulatedMap::new("a", def(MAP_PERCPU_ARRAY, 4));
        assert_eq!(m.get(&3u32.to_le_bytes()), Some(vec![0; 8]));
        assert!(m.lookup(&4u32.to_le_bytes()).is_null());
        assert_eq!(m.update(&4u32.to_le_bytes(), &[1; 8], 0), E2BIG);
        assert_eq!(m.delete(&0u32.to_le_bytes()), EINVAL);
        assert_eq!(m.array_data() as usize % 8, 0);
    }

    fn lpm_key(prefix: u32, address: [u8; 4]) -> Vec<u8> {
        let mut k = prefix.to_le_bytes().to_vec();
        k.extend(address);
        k
    }

    #[test]
    fn lpm_trie_lookups_find_the_longest_stored_prefix() {
        let m = EmulatedMap::new(
            "lpm",
            MapDefinition { map_type: MAP_LPM_TRIE, key_size: 8, value_size: 8, max_entries: 8 },
        );
        assert_eq!(m.update(&lpm_key(8, [10, 9, 9, 9]), &[8; 8], BPF_ANY), 0, "stored as 10.0.0.0/8");
        assert_eq!(m.update(&lpm_key(24, [10, 1, 2, 0]), &[24; 8], BPF_ANY), 0);
        assert_eq!(m.update(&lpm_key(33, [10, 1, 2, 0]), &[0; 8], BPF_ANY), EINVAL, "prefix longer than the key");
        assert_eq!(m.get(&lpm_key(32, [10, 1, 2, 3])), Some(vec![24; 8]));
        assert_eq!(m.get(&lpm_key(32, [10, 7, 2, 3])), Some(vec![8; 8]));
        assert_eq!(m.get(&lpm_key(32, [11, 1, 2, 3])), None);
        assert_eq!(m.get(&lpm_key(16, [10, 1, 2, 3])), Some(vec![8; 8]), "a /24 does not match a /16 query");
        assert_eq!(m.delete(&lpm_key(8, [10, 0, 0, 0])), 0);
        assert_eq!(m.get(&lpm_key(32, [10, 7, 2, 3])), None);
        assert_eq!(m.entries().len(), 1);
    }

    #[test]
    fn queues_take_pushes_through_update_and_every_front_end_map_type_is_implemented() {
        let q =
            EmulatedMap::new("q", MapDefinition { map_type: MAP_QUEUE, key_size: 0, value_size: 4, max_entries: 2 });
        assert_eq!(q.update(&[], &[1, 0, 0, 0], BPF_ANY), 0);
        assert!(q.lookup(&[]).is_null() && q.delete(&[]) == EINVAL);
        assert_eq!(q.records(), vec![vec![1, 0, 0, 0]]);
        assert!((1..=15).all(is_supported) && !is_supported(16) && !is_supported(17));
    }

    #[test]
    fn sample_hash_maps_need_4_byte_keys_and_values_and_xskmaps_are_refused() {
        let sample =
            |key_size, value_size| MapDefinition { map_type: MAP_SAMPLE_HASH, key_size, value_size, max_entries: 4 };
        assert_eq!(creation_error(&sample(4, 4)), None);
        assert!(creation_error(&sample(4, 8)).unwrap().contains("both must be 4"));
        assert!(creation_error(&def(MAP_XSKMAP, 4)).unwrap().contains("XDP for Windows"));
        assert!(creation_error(&def(17, 4)).unwrap().contains("type 17"));
        assert_eq!(creation_error(&def(MAP_LPM_TRIE, 4)), None);
        let m = EmulatedMap::new("objects", sample(4, 4));
        assert_eq!(m.update(&1u32.to_le_bytes(), &7u32.to_le_bytes(), BPF_ANY), 0, "user mode may store objects");
        assert_eq!(m.get(&1u32.to_le_bytes()), Some(7u32.to_le_bytes().to_vec()));
        assert!(
            m.refuses_program_find_and_update()
                && !EmulatedMap::new("h", def(MAP_HASH, 1)).refuses_program_find_and_update()
        );
    }

    #[test]
    fn per_cpu_and_lru_per_cpu_hashes_behave_as_one_cpu_hashes() {
        for t in [MAP_PERCPU_HASH, MAP_LRU_PERCPU_HASH] {
            let m = EmulatedMap::new("h", def(t, 1));
            assert_eq!(m.update(&1u32.to_le_bytes(), &[1; 8], BPF_ANY), 0);
            let second = m.update(&2u32.to_le_bytes(), &[2; 8], BPF_ANY);
            assert_eq!(second, if t == MAP_LRU_PERCPU_HASH { 0 } else { E2BIG });
        }
    }
}
