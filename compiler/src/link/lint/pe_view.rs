//! The lint's own view of a PE32+ image: the header fields the rules read (from the one PE header reader,
//! `bpf2sys_signing::pe`) and bounds-checked reads by RVA. Every read returns `None` instead of panicking, so a
//! broken image fails the rule it breaks.

use bpf2sys_signing::pe::{PeHeaders, SectionHeader};

// Section characteristics, DllCharacteristics, file characteristics, machines and data-directory indexes
// (PE format specification; driver-image-and-signing.md §5.2 quotes the ones the rules test).
pub(super) const IMAGE_SCN_CNT_CODE: u32 = 0x20;
pub(super) const IMAGE_SCN_CNT_INITIALIZED_DATA: u32 = 0x40;
pub(super) const IMAGE_SCN_CNT_UNINITIALIZED_DATA: u32 = 0x80;
pub(super) const IMAGE_SCN_MEM_DISCARDABLE: u32 = 0x0200_0000;
pub(super) const IMAGE_SCN_MEM_NOT_PAGED: u32 = 0x0800_0000;
pub(super) const IMAGE_SCN_MEM_EXECUTE: u32 = 0x2000_0000;
pub(super) const IMAGE_SCN_MEM_READ: u32 = 0x4000_0000;
pub(super) const IMAGE_SCN_MEM_WRITE: u32 = 0x8000_0000;

pub(super) const DLL_HIGH_ENTROPY_VA: u16 = 0x0020;
pub(super) const DLL_DYNAMIC_BASE: u16 = 0x0040;
pub(super) const DLL_FORCE_INTEGRITY: u16 = 0x0080;
pub(super) const DLL_NX_COMPAT: u16 = 0x0100;
pub(super) const DLL_GUARD_CF: u16 = 0x4000;
pub(super) const DLL_TERMINAL_SERVER_AWARE: u16 = 0x8000;
const _: u16 = DLL_HIGH_ENTROPY_VA;

pub(super) const FILE_RELOCS_STRIPPED: u16 = 0x0001;
pub(super) const FILE_EXECUTABLE_IMAGE: u16 = 0x0002;
pub(super) const FILE_32BIT_MACHINE: u16 = 0x0100;
pub(super) const FILE_DLL: u16 = 0x2000;
pub(super) const FILE_UP_SYSTEM_ONLY: u16 = 0x4000;

pub(super) const MACHINE_AMD64: u16 = 0x8664;
pub(super) const MACHINE_ARM64: u16 = 0xAA64;

pub(super) const DIR_IMPORT: usize = 1;
pub(super) const DIR_EXCEPTION: usize = 3;
pub(super) const DIR_BASERELOC: usize = 5;
pub(super) const DIR_TLS: usize = 9;
pub(super) const DIR_LOAD_CONFIG: usize = 10;
pub(super) const DIR_IAT: usize = 12;
pub(super) const DIR_DELAY_IMPORT: usize = 13;

/// The parsed headers.
pub(super) struct Image<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) machine: u16,
    pub(super) number_of_sections: u16,
    pub(super) characteristics: u16,
    pub(super) magic: u16,
    pub(super) major_linker_version: u8,
    pub(super) address_of_entry_point: u32,
    pub(super) section_alignment: u32,
    pub(super) file_alignment: u32,
    pub(super) size_of_image: u32,
    pub(super) size_of_headers: u32,
    pub(super) check_sum: u32,
    pub(super) checksum_offset: usize,
    pub(super) subsystem: u16,
    pub(super) dll_characteristics: u16,
    pub(super) directories: Vec<(u32, u32)>,
    pub(super) sections: Vec<SectionHeader>,
    /// File offset just past the section table.
    pub(super) headers_end: usize,
}

pub(super) fn rd16(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}
pub(super) fn rd32(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
pub(super) fn rd64(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8).map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

impl<'a> Image<'a> {
    pub(super) fn parse(bytes: &'a [u8]) -> Result<Image<'a>, String> {
        let h = PeHeaders::parse(bytes).map_err(|e| e.to_string())?;
        let number_of_rva = h.number_of_rva_and_sizes as usize;
        if number_of_rva > 16 || 112 + 8 * number_of_rva > h.size_of_optional_header as usize {
            return Err(format!("{number_of_rva} data directories do not fit the optional header"));
        }
        Ok(Image {
            bytes,
            machine: h.machine,
            number_of_sections: h.number_of_sections,
            characteristics: h.characteristics,
            magic: h.magic,
            major_linker_version: h.major_linker_version,
            address_of_entry_point: h.address_of_entry_point,
            section_alignment: h.section_alignment,
            file_alignment: h.file_alignment,
            size_of_image: h.size_of_image,
            size_of_headers: h.size_of_headers,
            check_sum: h.check_sum,
            checksum_offset: h.checksum_offset,
            subsystem: h.subsystem,
            dll_characteristics: h.dll_characteristics,
            directories: h.data_directories.to_vec(),
            sections: h.sections,
            headers_end: h.section_table_end,
        })
    }

    /// The section holding `rva`, if any. Every RVA sum below wraps instead of overflowing: the fields come from
    /// the file, and a wrapped RVA simply lies in no section.
    pub(super) fn section_of(&self, rva: u32) -> Option<&SectionHeader> {
        self.sections.iter().find(|s| rva >= s.virtual_address && u64::from(rva) < section_end(s))
    }

    /// File offset of an RVA with `len` bytes of raw data behind it.
    pub(super) fn offset_of(&self, rva: u32, len: u32) -> Option<usize> {
        let s = self.section_of(rva)?;
        let delta = rva - s.virtual_address;
        if delta.checked_add(len)? > s.size_of_raw_data {
            return None;
        }
        let off = s.pointer_to_raw_data as usize + delta as usize;
        (off + len as usize <= self.bytes.len()).then_some(off)
    }

    pub(super) fn read32(&self, rva: u32) -> Option<u32> {
        self.offset_of(rva, 4).and_then(|o| rd32(self.bytes, o))
    }
    pub(super) fn read64(&self, rva: u32) -> Option<u64> {
        self.offset_of(rva, 8).and_then(|o| rd64(self.bytes, o))
    }
    pub(super) fn c_string(&self, rva: u32) -> Option<String> {
        let start = self.offset_of(rva, 1)?;
        let len = self.bytes[start..].iter().take(256).position(|&c| c == 0)?;
        Some(String::from_utf8_lossy(&self.bytes[start..start + len]).into_owned())
    }

    pub(super) fn is_exec(s: &SectionHeader) -> bool {
        s.characteristics & IMAGE_SCN_MEM_EXECUTE != 0
    }

    /// `(dll, FirstThunk rva, [function names])` for each import descriptor; errors as findings.
    pub(super) fn imports(&self) -> Result<Vec<(String, u32, Vec<String>)>, String> {
        let (rva, size) = self.directories[DIR_IMPORT];
        if rva == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for i in 0..(size / 20).max(1) + 64 {
            let d = rva.wrapping_add(i.wrapping_mul(20));
            let ilt = self.read32(d).ok_or(format!("import descriptor {i} at RVA {d:#x} is outside the image"))?;
            let name = self.read32(d.wrapping_add(12)).ok_or("truncated import descriptor")?;
            let iat = self.read32(d.wrapping_add(16)).ok_or("truncated import descriptor")?;
            if ilt == 0 && name == 0 && iat == 0 {
                return Ok(out);
            }
            let dll = self.c_string(name).ok_or(format!("import descriptor {i}: DLL name RVA {name:#x} is invalid"))?;
            let mut names = Vec::new();
            let lookup = if ilt != 0 { ilt } else { iat };
            for k in 0..4096u32 {
                let thunk =
                    self.read64(lookup.wrapping_add(8 * k)).ok_or(format!("{dll}: thunk {k} is outside the image"))?;
                if thunk == 0 {
                    break;
                }
                if thunk & (1 << 63) != 0 {
                    names.push(format!("#{}", thunk & 0xffff));
                } else {
                    names.push(
                        self.c_string((thunk as u32).wrapping_add(2))
                            .ok_or(format!("{dll}: hint/name {k} is invalid"))?,
                    );
                }
            }
            out.push((dll, iat, names));
        }
        Err("import descriptor list has no terminator".into())
    }
}

/// One past the section's last RVA, without overflow.
pub(super) fn section_end(s: &SectionHeader) -> u64 {
    u64::from(s.virtual_address) + u64::from(s.virtual_size.max(s.size_of_raw_data))
}

/// Base relocation entries `(page rva, type, offset)`, or a structural error.
pub(super) fn base_relocations(img: &Image) -> Result<Vec<(u32, u16, u16)>, String> {
    let (rva, size) = img.directories[DIR_BASERELOC];
    if rva == 0 || size == 0 {
        return Err("no base relocation directory".into());
    }
    let mut out = Vec::new();
    let mut at = 0u32;
    while at < size {
        if !at.is_multiple_of(4) {
            return Err(format!("relocation block at +{at:#x} is not 32-bit aligned"));
        }
        let page =
            img.read32(rva.wrapping_add(at)).ok_or(format!("relocation block at +{at:#x} is outside the image"))?;
        let block = img
            .read32(rva.wrapping_add(at).wrapping_add(4))
            .ok_or(format!("relocation block at +{at:#x} is truncated"))?;
        if block < 8 || block % 2 != 0 || u64::from(at) + u64::from(block) > u64::from(size) {
            return Err(format!("relocation block at +{at:#x} has an inconsistent BlockSize {block}"));
        }
        let off = img
            .offset_of(rva.wrapping_add(at), block)
            .ok_or(format!("relocation block at +{at:#x} is outside the image"))?;
        for k in 0..(block - 8) / 2 {
            let e = rd16(img.bytes, off + 8 + 2 * k as usize).expect("checked");
            out.push((page, e >> 12, e & 0xfff));
        }
        at += block;
    }
    Ok(out)
}
