//! The interpreter's address space: a set of disjoint regions the host and the interpreter map.
//!
//! eBPF programs compute with real 64-bit addresses (a pointer in r1, `r10 - 8`, a map value returned by a
//! helper), so the interpreter gives every region a base address and checks each access against the region map:
//! an access must lie entirely inside one region, writes need a writable region, and regions that track
//! initialisation (stack frames) refuse reads of bytes never written. Nothing here can touch host memory.
//!
//! Layout: regions are placed from [`FIRST_BASE`] upwards, page-aligned, with an unmapped guard page after each
//! one and addresses never reused after removal, so an off-by-one, a stale pointer to a returned frame or a
//! pointer truncated to 32 bits (always below [`FIRST_BASE`]) is reported rather than landing in another region.

use std::collections::BTreeMap;
use std::fmt;

use crate::isa::MemSize;

/// Lowest address the allocator hands out: above 4 GiB, so no zero-extended 32-bit value is a valid pointer.
pub const FIRST_BASE: u64 = 0x1_0000_0000;
const PAGE: u64 = 0x1000;

/// Whether the program may write a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// Read or write, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    Read,
    Write,
}

impl fmt::Display for AccessKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccessKind::Read => "read",
            AccessKind::Write => "write",
        })
    }
}

/// Names a region; stable for the region's lifetime (it is the region's base address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(u64);

impl RegionId {
    /// The region's first address.
    pub fn base(self) -> u64 {
        self.0
    }
}

/// One mapped region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// What the region is ("stack frame 0", "context", "map `counters` value"), for error messages.
    pub name: String,
    pub base: u64,
    pub data: Vec<u8>,
    pub access: Access,
    /// Per-byte "has been written" flags, for regions whose initial contents are undefined (stack frames).
    initialized: Option<Vec<bool>>,
}

impl Region {
    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.base + self.data.len() as u64
    }

    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.base && addr.checked_add(len).is_some_and(|e| e <= self.end())
    }
}

/// Why an access failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    #[error("{kind} of {len} byte(s) at {addr:#x} is outside every mapped region")]
    Unmapped { kind: AccessKind, addr: u64, len: u64 },
    #[error("{kind} of {len} byte(s) at {addr:#x} is not inside {region} ({base:#x}..{end:#x})")]
    OutOfBounds { kind: AccessKind, addr: u64, len: u64, region: String, base: u64, end: u64 },
    #[error("write of {len} byte(s) at {addr:#x} to read-only {region}")]
    ReadOnly { addr: u64, len: u64, region: String },
    #[error("read of {len} byte(s) at {addr:#x} from uninitialised bytes of {region} (offset {offset})")]
    Uninitialized { addr: u64, len: u64, region: String, offset: u64 },
    #[error("store of an undefined value ({len} byte(s) at {addr:#x}) to {region}, which cannot hold undefined bytes")]
    UndefinedStore { addr: u64, len: u64, region: String },
    #[error("cannot map {len} byte(s) at {addr:#x}: overlaps {region}")]
    Overlap { addr: u64, len: u64, region: String },
    #[error("address space exhausted")]
    Exhausted,
}

/// The set of mapped regions.
#[derive(Clone, Debug)]
pub struct Memory {
    regions: BTreeMap<u64, Region>,
    next_base: u64,
}

impl Default for Memory {
    fn default() -> Self {
        Memory::new()
    }
}

impl Memory {
    pub fn new() -> Memory {
        Memory { regions: BTreeMap::new(), next_base: FIRST_BASE }
    }

    /// Maps `data` at a fresh address.
    pub fn add_region(&mut self, name: impl Into<String>, data: Vec<u8>, access: Access) -> RegionId {
        self.try_add(name.into(), data, access, None).expect("the 64-bit address space does not run out in practice")
    }

    /// Maps `size` bytes whose contents are undefined until written: reading a byte before it is written is an
    /// error (used for stack frames; RFC 9669 leaves their initial contents unspecified).
    pub fn add_uninitialized_region(&mut self, name: impl Into<String>, size: usize, access: Access) -> RegionId {
        self.try_add(name.into(), vec![0; size], access, Some(vec![false; size]))
            .expect("the 64-bit address space does not run out in practice")
    }

    /// Maps `data` at a caller-chosen address (e.g. to mirror a native run's layout). Fails if it overlaps.
    pub fn add_region_at(
        &mut self,
        base: u64,
        name: impl Into<String>,
        data: Vec<u8>,
        access: Access,
    ) -> Result<RegionId, MemoryError> {
        let len = data.len() as u64;
        let end = base.checked_add(len).ok_or(MemoryError::Exhausted)?;
        if let Some(r) = self.regions.values().find(|r| base < r.end().max(r.base + 1) && r.base < end.max(base + 1)) {
            return Err(MemoryError::Overlap { addr: base, len, region: r.name.clone() });
        }
        let region = Region { name: name.into(), base, data, access, initialized: None };
        self.regions.insert(base, region);
        if base >= self.next_base {
            self.next_base = next_page(end).and_then(|e| e.checked_add(PAGE)).unwrap_or(u64::MAX);
        }
        Ok(RegionId(base))
    }

    fn try_add(
        &mut self,
        name: String,
        data: Vec<u8>,
        access: Access,
        initialized: Option<Vec<bool>>,
    ) -> Result<RegionId, MemoryError> {
        let base = self.next_base;
        let end = base.checked_add(data.len() as u64).ok_or(MemoryError::Exhausted)?;
        // One unmapped guard page after every region.
        self.next_base = next_page(end).and_then(|e| e.checked_add(PAGE)).ok_or(MemoryError::Exhausted)?;
        self.regions.insert(base, Region { name, base, data, access, initialized });
        Ok(RegionId(base))
    }

    /// Unmaps a region and returns it. Its addresses are never handed out again.
    pub fn remove_region(&mut self, id: RegionId) -> Option<Region> {
        self.regions.remove(&id.0)
    }

    pub fn region(&self, id: RegionId) -> Option<&Region> {
        self.regions.get(&id.0)
    }

    /// The region's bytes, for a host that updates them (e.g. a map updated from outside the program).
    pub fn region_data_mut(&mut self, id: RegionId) -> Option<&mut [u8]> {
        self.regions.get_mut(&id.0).map(|r| r.data.as_mut_slice())
    }

    /// The region containing `addr`, if any.
    pub fn region_at(&self, addr: u64) -> Option<&Region> {
        self.regions.range(..=addr).next_back().map(|(_, r)| r).filter(|r| r.contains(addr, 1))
    }

    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.values()
    }

    fn find(&self, kind: AccessKind, addr: u64, len: u64) -> Result<&Region, MemoryError> {
        let below = self.regions.range(..=addr).next_back().map(|(_, r)| r);
        if let Some(region) = below.filter(|r| r.contains(addr, len)) {
            return Ok(region);
        }
        // Name the region the access was meant for: the one it starts in, or one whose guard page it hit.
        let near_end = below.filter(|r| addr - r.end().min(addr) < PAGE);
        let near_start = self.regions.range(addr..).next().map(|(_, r)| r).filter(|r| r.base - addr <= PAGE);
        match near_end.or(near_start) {
            Some(region) => Err(MemoryError::OutOfBounds {
                kind,
                addr,
                len,
                region: region.name.clone(),
                base: region.base,
                end: region.end(),
            }),
            None => Err(MemoryError::Unmapped { kind, addr, len }),
        }
    }

    /// The `len` bytes at `addr`. A zero-length read succeeds anywhere.
    pub fn read(&self, addr: u64, len: usize) -> Result<&[u8], MemoryError> {
        if len == 0 {
            return Ok(&[]);
        }
        let region = self.find(AccessKind::Read, addr, len as u64)?;
        let start = (addr - region.base) as usize;
        if let Some(init) = &region.initialized {
            if let Some(i) = init[start..start + len].iter().position(|b| !b) {
                return Err(MemoryError::Uninitialized {
                    addr,
                    len: len as u64,
                    region: region.name.clone(),
                    offset: (start + i) as u64,
                });
            }
        }
        Ok(&region.data[start..start + len])
    }

    /// Writes `bytes` at `addr`. A zero-length write succeeds anywhere.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let len = bytes.len() as u64;
        let base = self.find(AccessKind::Write, addr, len)?.base;
        let region = self.regions.get_mut(&base).expect("found above");
        if region.access == Access::ReadOnly {
            return Err(MemoryError::ReadOnly { addr, len, region: region.name.clone() });
        }
        let start = (addr - base) as usize;
        region.data[start..start + bytes.len()].copy_from_slice(bytes);
        if let Some(init) = &mut region.initialized {
            init[start..start + bytes.len()].fill(true);
        }
        Ok(())
    }

    /// Makes the `len` bytes at `addr` undefined again (the store of an undefined value). Only regions that track
    /// initialisation (stack frames) can hold undefined bytes; anywhere else this is an error.
    pub fn write_undefined(&mut self, addr: u64, len: usize) -> Result<(), MemoryError> {
        if len == 0 {
            return Ok(());
        }
        let base = self.find(AccessKind::Write, addr, len as u64)?.base;
        let region = self.regions.get_mut(&base).expect("found above");
        if region.access == Access::ReadOnly {
            return Err(MemoryError::ReadOnly { addr, len: len as u64, region: region.name.clone() });
        }
        let start = (addr - base) as usize;
        match &mut region.initialized {
            Some(init) => {
                init[start..start + len].fill(false);
                Ok(())
            }
            None => Err(MemoryError::UndefinedStore { addr, len: len as u64, region: region.name.clone() }),
        }
    }

    /// Reads a little-endian unsigned integer of `size` bytes, zero-extended.
    pub fn read_uint(&self, addr: u64, size: MemSize) -> Result<u64, MemoryError> {
        let bytes = self.read(addr, size.bytes() as usize)?;
        let mut buf = [0u8; 8];
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(u64::from_le_bytes(buf))
    }

    /// Writes the low `size` bytes of `value`, little-endian.
    pub fn write_uint(&mut self, addr: u64, size: MemSize, value: u64) -> Result<(), MemoryError> {
        self.write(addr, &value.to_le_bytes()[..size.bytes() as usize])
    }
}

fn next_page(addr: u64) -> Option<u64> {
    addr.checked_add(PAGE - 1).map(|a| a & !(PAGE - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_separated_by_unmapped_guard_pages() {
        let mut m = Memory::new();
        let a = m.add_region("a", vec![1; 16], Access::ReadWrite);
        let b = m.add_region("b", vec![2; 16], Access::ReadWrite);
        assert!(a.base() >= FIRST_BASE);
        assert!(b.base() >= a.base() + 16 + PAGE);
        // Accesses just outside a region name it; far away ones are plainly unmapped.
        assert!(matches!(m.read(a.base() + 16, 1), Err(MemoryError::OutOfBounds { base, .. }) if base == a.base()));
        assert!(matches!(m.read(a.base() + 12, 8), Err(MemoryError::OutOfBounds { base, .. }) if base == a.base()));
        assert!(matches!(m.read(a.base() - 1, 1), Err(MemoryError::OutOfBounds { base, .. }) if base == a.base()));
        assert!(matches!(m.read(b.base() - 8, 16), Err(MemoryError::OutOfBounds { base, .. }) if base == b.base()));
        assert!(matches!(m.read(0, 1), Err(MemoryError::Unmapped { .. })));
        assert!(matches!(
            m.read(u64::MAX, 1),
            Err(MemoryError::OutOfBounds { .. }) | Err(MemoryError::Unmapped { .. })
        ));
        assert!(matches!(m.read(b.base() + 16 + 2 * PAGE, 1), Err(MemoryError::Unmapped { .. })));
        assert_eq!(m.read(b.base(), 2).unwrap(), &[2, 2]);
    }

    #[test]
    fn read_only_regions_refuse_writes() {
        let mut m = Memory::new();
        let r = m.add_region("context", vec![0; 8], Access::ReadOnly);
        let e = m.write(r.base(), &[1]).unwrap_err();
        assert!(matches!(e, MemoryError::ReadOnly { .. }));
        assert!(e.to_string().contains("context"), "{e}");
    }

    #[test]
    fn uninitialised_bytes_cannot_be_read_until_written() {
        let mut m = Memory::new();
        let s = m.add_uninitialized_region("stack", 8, Access::ReadWrite);
        assert!(matches!(m.read(s.base(), 1), Err(MemoryError::Uninitialized { offset: 0, .. })));
        m.write_uint(s.base(), MemSize::H, 0xbeef).unwrap();
        assert_eq!(m.read_uint(s.base(), MemSize::H).unwrap(), 0xbeef);
        assert!(matches!(m.read_uint(s.base(), MemSize::W), Err(MemoryError::Uninitialized { offset: 2, .. })));
    }

    #[test]
    fn removed_regions_stay_unmapped() {
        let mut m = Memory::new();
        let r = m.add_region("frame", vec![0; 8], Access::ReadWrite);
        m.remove_region(r);
        assert!(matches!(m.read(r.base(), 1), Err(MemoryError::Unmapped { .. })));
        let again = m.add_region("next", vec![0; 8], Access::ReadWrite);
        assert_ne!(again, r);
    }

    #[test]
    fn explicit_placement_rejects_overlap() {
        let mut m = Memory::new();
        let r = m.add_region_at(0x5000, "buffer", vec![0; 0x100], Access::ReadWrite).unwrap();
        assert_eq!(r.base(), 0x5000);
        assert!(matches!(m.add_region_at(0x50ff, "x", vec![0; 1], Access::ReadOnly), Err(MemoryError::Overlap { .. })));
        assert!(m.add_region_at(0x5100, "y", vec![0; 1], Access::ReadOnly).is_ok());
    }
}
