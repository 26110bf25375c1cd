//! Emulated maps: the storage behind `map_data[i].address` (an `ebpf_map_t*` in the real runtime).
//!
//! Value storage is 8-byte aligned and never moves while an entry exists, so pointers handed to programs by
//! `bpf_map_lookup_elem` stay valid as they do in the kernel. Per-CPU maps model one CPU.

use std::cell::RefCell;
use std::collections::BTreeMap;

pub const MAP_HASH: u32 = 1;
pub const MAP_ARRAY: u32 = 2;
pub const MAP_PROG_ARRAY: u32 = 3;
pub const MAP_PERCPU_HASH: u32 = 4;
pub const MAP_PERCPU_ARRAY: u32 = 5;
pub const MAP_HASH_OF_MAPS: u32 = 6;
pub const MAP_ARRAY_OF_MAPS: u32 = 7;
pub const MAP_LRU_HASH: u32 = 8;
pub const MAP_LRU_PERCPU_HASH: u32 = 11;

const ENOENT: i64 = -2;
const E2BIG: i64 = -7;
const EEXIST: i64 = -17;
const EINVAL: i64 = -22;

const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;

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

enum Storage {
    Array(Box<[u64]>),
    Hash {
        entries: BTreeMap<Vec<u8>, Box<[u64]>>,
        recency: Vec<Vec<u8>>,
        lru: bool,
    },
    /// Program array: slot → program index in the module.
    Programs(Vec<Option<usize>>),
    /// Map-in-map: key → inner map address.
    Maps(BTreeMap<Vec<u8>, usize>),
}

/// One map.
pub struct EmulatedMap {
    pub name: String,
    pub definition: MapDefinition,
    storage: RefCell<Storage>,
}

/// Map types the emulator implements.
pub fn is_supported(map_type: u32) -> bool {
    matches!(
        map_type,
        MAP_HASH
            | MAP_ARRAY
            | MAP_PROG_ARRAY
            | MAP_PERCPU_HASH
            | MAP_PERCPU_ARRAY
            | MAP_HASH_OF_MAPS
            | MAP_ARRAY_OF_MAPS
            | MAP_LRU_HASH
            | MAP_LRU_PERCPU_HASH
    )
}

impl EmulatedMap {
    pub fn new(name: &str, definition: MapDefinition) -> EmulatedMap {
        let storage = match definition.map_type {
            MAP_ARRAY | MAP_PERCPU_ARRAY => {
                Storage::Array(zeroed(definition.value_size as usize * definition.max_entries as usize))
            }
            MAP_PROG_ARRAY => Storage::Programs(vec![None; definition.max_entries as usize]),
            MAP_HASH_OF_MAPS | MAP_ARRAY_OF_MAPS => Storage::Maps(BTreeMap::new()),
            t => Storage::Hash {
                entries: BTreeMap::new(),
                recency: Vec::new(),
                lru: t == MAP_LRU_HASH || t == MAP_LRU_PERCPU_HASH,
            },
        };
        EmulatedMap { name: name.to_string(), definition, storage: RefCell::new(storage) }
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
                Some(i) => unsafe { (v.as_mut_ptr() as *mut u8).add(i * vs) },
                None => std::ptr::null_mut(),
            },
            Storage::Hash { entries, recency, lru } => match entries.get_mut(key) {
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
            // Programs cannot read a program array.
            Storage::Programs(_) => std::ptr::null_mut(),
        }
    }

    /// `bpf_map_update_elem`.
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> i64 {
        let vs = self.definition.value_size as usize;
        let max = self.definition.max_entries as usize;
        let index = self.array_index(key);
        match &mut *self.storage.borrow_mut() {
            Storage::Array(v) => {
                let Some(i) = index else { return E2BIG };
                if flags == BPF_NOEXIST {
                    return EEXIST;
                }
                let bytes = unsafe { std::slice::from_raw_parts_mut((v.as_mut_ptr() as *mut u8).add(i * vs), vs) };
                bytes.copy_from_slice(&value[..vs]);
                0
            }
            Storage::Hash { entries, recency, lru } => {
                let exists = entries.contains_key(key);
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
                match entries.get_mut(key) {
                    // Update in place: the value keeps its address.
                    Some(existing) => unsafe {
                        std::slice::from_raw_parts_mut(existing.as_mut_ptr() as *mut u8, vs)
                            .copy_from_slice(&value[..vs])
                    },
                    None => {
                        let mut storage = zeroed(vs);
                        unsafe { std::slice::from_raw_parts_mut(storage.as_mut_ptr() as *mut u8, vs) }
                            .copy_from_slice(&value[..vs]);
                        entries.insert(key.to_vec(), storage);
                    }
                }
                if *lru {
                    recency.retain(|k| k != key);
                    recency.push(key.to_vec());
                }
                0
            }
            Storage::Programs(_) | Storage::Maps(_) => EINVAL,
        }
    }

    /// `bpf_map_delete_elem`.
    pub fn delete(&self, key: &[u8]) -> i64 {
        match &mut *self.storage.borrow_mut() {
            Storage::Array(_) => EINVAL,
            Storage::Hash { entries, recency, .. } => {
                recency.retain(|k| k != key);
                if entries.remove(key).is_some() {
                    0
                } else {
                    ENOENT
                }
            }
            Storage::Programs(_) | Storage::Maps(_) => EINVAL,
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
}
