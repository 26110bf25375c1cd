//! Maps a PE32+ driver image into this process the way the Windows kernel loader does: sections at their RVAs,
//! DIR64 base relocations applied for the actual base, imports bound to host functions, then page protections
//! from the section flags (code RX, read-only data R, writable data RW).

use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile64};
use object::LittleEndian as LE;

use crate::EmulatorError;

/// An image mapped into memory.
pub struct LoadedImage {
    base: *mut u8,
    size: usize,
    pub entry_rva: u32,
    /// `(name, rva, virtual size, characteristics)` per section.
    pub sections: Vec<(String, u32, u32, u32)>,
}

impl Drop for LoadedImage {
    fn drop(&mut self) {
        // SAFETY: base/size came from our own mmap and nothing references the mapping any more (the runtime
        // drops programs and maps before the image).
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.size);
        }
    }
}

impl LoadedImage {
    pub fn base(&self) -> usize {
        self.base as usize
    }

    /// The address of `rva`, if it lies inside the image.
    pub fn address(&self, rva: u64) -> Option<usize> {
        (rva < self.size as u64).then(|| self.base as usize + rva as usize)
    }

    /// Whether `[addr, addr+len)` lies inside the image.
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        addr >= self.base as usize && addr.saturating_add(len) <= self.base as usize + self.size
    }

    /// The section containing `addr`.
    pub fn section_of(&self, addr: usize) -> Option<&(String, u32, u32, u32)> {
        let rva = addr.checked_sub(self.base as usize)? as u32;
        self.sections.iter().find(|(_, va, vs, _)| rva >= *va && rva < va + vs)
    }
}

/// The PE machine type of `bytes` (`IMAGE_FILE_MACHINE_*`).
pub fn image_machine(bytes: &[u8]) -> Result<u16, EmulatorError> {
    let file = PeFile64::parse(bytes).map_err(|e| EmulatorError::Image(format!("not a PE32+ image: {e}")))?;
    Ok(file.nt_headers().file_header().machine.get(LE))
}

/// Loads `bytes`, resolving each import `dll!name` through `resolve`.
pub fn load_image(bytes: &[u8], resolve: &dyn Fn(&str, &str) -> Option<usize>) -> Result<LoadedImage, EmulatorError> {
    let bad = |m: String| EmulatorError::Image(m);
    let file = PeFile64::parse(bytes).map_err(|e| bad(format!("not a PE32+ image: {e}")))?;
    let nt = file.nt_headers();
    let machine = nt.file_header().machine.get(LE);
    if machine != pe::IMAGE_FILE_MACHINE_AMD64 && machine != pe::IMAGE_FILE_MACHINE_ARM64 {
        return Err(bad(format!("machine {machine:#x}: only x64 and ARM64 images run here")));
    }
    let opt = nt.optional_header();
    let size = opt.size_of_image() as usize;
    let image_base = opt.image_base();
    // SAFETY: an anonymous private mapping; we own it until Drop.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(bad(format!("mmap of {size} bytes failed")));
    }
    let mut image =
        LoadedImage { base: base as *mut u8, size, entry_rva: opt.address_of_entry_point(), sections: Vec::new() };
    // SAFETY: the mapping is `size` bytes long and writable.
    let mem = unsafe { std::slice::from_raw_parts_mut(image.base, size) };
    let headers = (opt.size_of_headers() as usize).min(bytes.len()).min(size);
    mem[..headers].copy_from_slice(&bytes[..headers]);
    let sections = file.section_table();
    for s in sections.iter() {
        let va = s.virtual_address.get(LE) as usize;
        let vs = s.virtual_size.get(LE) as usize;
        let data = s.pe_data(bytes).map_err(|e| bad(format!("section data: {e}")))?;
        let n = data.len().min(vs);
        if va + vs.max(n) > size {
            return Err(bad(format!("section at {va:#x} extends past SizeOfImage")));
        }
        mem[va..va + n].copy_from_slice(&data[..n]);
        let name = String::from_utf8_lossy(s.raw_name()).into_owned();
        image.sections.push((name, va as u32, vs as u32, s.characteristics.get(LE)));
    }
    // Base relocations: the image is never at its preferred base here, exactly as in the kernel.
    let delta = (image.base as u64).wrapping_sub(image_base);
    if let Some(mut blocks) =
        file.data_directories().relocation_blocks(bytes, &sections).map_err(|e| bad(format!("relocations: {e}")))?
    {
        while let Some(block) = blocks.next().map_err(|e| bad(format!("relocation block: {e}")))? {
            for r in block {
                match r.typ {
                    pe::IMAGE_REL_BASED_ABSOLUTE => {}
                    pe::IMAGE_REL_BASED_DIR64 => {
                        let at = r.virtual_address as usize;
                        if at + 8 > size {
                            return Err(bad(format!("DIR64 at {at:#x} is outside the image")));
                        }
                        let v = u64::from_le_bytes(mem[at..at + 8].try_into().expect("8 bytes")).wrapping_add(delta);
                        mem[at..at + 8].copy_from_slice(&v.to_le_bytes());
                    }
                    t => return Err(bad(format!("unsupported base relocation type {t}"))),
                }
            }
        }
    }
    // Imports.
    if let Some(table) = file.import_table().map_err(|e| bad(format!("import table: {e}")))? {
        let mut descriptors = table.descriptors().map_err(|e| bad(format!("import descriptors: {e}")))?;
        while let Some(d) = descriptors.next().map_err(|e| bad(format!("import descriptor: {e}")))? {
            let dll = String::from_utf8_lossy(table.name(d.name.get(LE)).map_err(|e| bad(e.to_string()))?).into_owned();
            let lookup = if d.original_first_thunk.get(LE) != 0 {
                d.original_first_thunk.get(LE)
            } else {
                d.first_thunk.get(LE)
            };
            let mut thunks = table.thunks(lookup).map_err(|e| bad(e.to_string()))?;
            let mut slot = d.first_thunk.get(LE) as usize;
            while let Some(thunk) = thunks.next::<pe::ImageNtHeaders64>().map_err(|e| bad(e.to_string()))? {
                let name = match table.import::<pe::ImageNtHeaders64>(thunk).map_err(|e| bad(e.to_string()))? {
                    object::read::pe::Import::Name(_, name) => String::from_utf8_lossy(name).into_owned(),
                    object::read::pe::Import::Ordinal(o) => return Err(bad(format!("{dll}: import by ordinal {o}"))),
                };
                let addr =
                    resolve(&dll, &name).ok_or_else(|| EmulatorError::UnresolvedImport(format!("{dll}!{name}")))?;
                if slot + 8 > size {
                    return Err(bad(format!("IAT slot {slot:#x} is outside the image")));
                }
                mem[slot..slot + 8].copy_from_slice(&(addr as u64).to_le_bytes());
                slot += 8;
            }
        }
    }
    // Page protections from section flags.
    for (name, va, vs, flags) in &image.sections {
        let mut prot = 0;
        if flags & pe::IMAGE_SCN_MEM_READ != 0 {
            prot |= libc::PROT_READ;
        }
        if flags & pe::IMAGE_SCN_MEM_WRITE != 0 {
            prot |= libc::PROT_WRITE;
        }
        if flags & pe::IMAGE_SCN_MEM_EXECUTE != 0 {
            prot |= libc::PROT_EXEC;
        }
        let len = (*vs as usize).div_ceil(4096) * 4096;
        // SAFETY: page-aligned range inside our mapping.
        let rc = unsafe { libc::mprotect(image.base.add(*va as usize) as *mut libc::c_void, len, prot) };
        if rc != 0 {
            return Err(bad(format!("mprotect of section `{name}` failed")));
        }
    }
    Ok(image)
}
