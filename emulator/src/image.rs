//! A driver file read without loading or running it: the metadata the runtime would see, for `bpf2sys inspect`.
//!
//! In: the bytes of a `.sys` (possibly hostile). Out: a [`DriverMetadata`] — the module's metadata exactly as
//! [`validate_metadata`] reads and checks it for the emulated runtime (the same reader, over the file instead of a
//! loaded image), and user mode's view of the file (contract §4.3). Pointers are virtual addresses at the
//! preferred image base, resolved through the section table; the metadata-table callbacks are evaluated from
//! their machine code ([`crate::callbacks`]), so x64 and ARM64 drivers read the same on any host.

use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile64};
use object::LittleEndian as LE;

use crate::callbacks::{self, stored, Code};
use crate::validate::{compare_views, validate_metadata, MetadataSource, ModuleMetadata};
use crate::{parse_native_file, EmulatorError, UserModeView};

/// One section of the file: `[rva, rva + virtual_size)` holds `data` then zeros.
struct FileSection<'a> {
    rva: u64,
    virtual_size: u64,
    characteristics: u32,
    data: &'a [u8],
}

/// A driver file as an address space.
pub struct DriverFile<'a> {
    pub machine: u16,
    pub image_base: u64,
    sections: Vec<FileSection<'a>>,
}

/// What [`read_driver_file`] found.
#[derive(Clone, Debug)]
pub struct DriverMetadata {
    /// `IMAGE_FILE_MACHINE_*`.
    pub machine: u16,
    /// The preferred image base; every address in `metadata` is relative to it.
    pub image_base: u64,
    /// The virtual address of the metadata table (`metadata_table_t`).
    pub table: u64,
    pub metadata: ModuleMetadata,
    pub user_mode: UserModeView,
}

impl<'a> DriverFile<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<DriverFile<'a>, EmulatorError> {
        let bad = |m: String| EmulatorError::Image(m);
        let file = PeFile64::parse(bytes).map_err(|e| bad(format!("not a PE32+ image: {e}")))?;
        let machine = file.nt_headers().file_header().machine.get(LE);
        if machine != pe::IMAGE_FILE_MACHINE_AMD64 && machine != pe::IMAGE_FILE_MACHINE_ARM64 {
            return Err(bad(format!("machine {machine:#x}: a driver is x64 or ARM64")));
        }
        let mut sections = Vec::new();
        for s in file.section_table().iter() {
            sections.push(FileSection {
                rva: u64::from(s.virtual_address.get(LE)),
                virtual_size: u64::from(s.virtual_size.get(LE)),
                characteristics: s.characteristics.get(LE),
                data: s.pe_data(bytes).map_err(|e| bad(format!("section data: {e}")))?,
            });
        }
        Ok(DriverFile { machine, image_base: file.nt_headers().optional_header().image_base(), sections })
    }

    /// The section holding virtual address `va`, and the offset of `va` in it.
    fn section(&self, va: u64) -> Option<(&FileSection<'a>, u64)> {
        let rva = va.checked_sub(self.image_base)?;
        self.sections.iter().find(|s| rva >= s.rva && rva - s.rva < s.virtual_size).map(|s| (s, rva - s.rva))
    }

    /// The metadata table: the one 8-aligned `{56, six pointers to code}` in a data section (contract §2.2). The
    /// runtime receives it through NMR; a reader that runs nothing finds it by its shape.
    pub fn find_metadata_table(&self) -> Result<u64, EmulatorError> {
        let mut found = Vec::new();
        for s in self.sections.iter().filter(|s| s.characteristics & pe::IMAGE_SCN_MEM_EXECUTE == 0) {
            for off in (0..s.data.len().saturating_sub(55)).step_by(8) {
                let word = |k: usize| u64::from_le_bytes(s.data[off + 8 * k..off + 8 * k + 8].try_into().expect("8"));
                if word(0) == 56 && (1..7).all(|k| self.is_code(word(k) as usize)) {
                    found.push(self.image_base.wrapping_add(s.rva).wrapping_add(off as u64));
                }
            }
        }
        match found.as_slice() {
            [table] => Ok(*table),
            [] => Err(EmulatorError::Metadata(
                "no metadata table (size 56 and six pointers to code, contract §2.2) in any data section".into(),
            )),
            more => Err(EmulatorError::Metadata(format!("{} candidate metadata tables; expected one", more.len()))),
        }
    }

    fn evaluate(&self, f: usize) -> Result<Vec<callbacks::Store>, String> {
        let (section, offset) = self.section(f as u64).ok_or_else(|| format!("{f:#x} is outside the image"))?;
        let code = section.data.get(offset as usize..).ok_or_else(|| format!("{f:#x} has no bytes in the file"))?;
        let load64 = |va: u64| {
            let mut b = [0u8; 8];
            self.read_bytes(va as usize, &mut b).then(|| u64::from_le_bytes(b))
        };
        callbacks::evaluate(self.machine, &Code { va: f as u64, code, load64: &load64 })
    }
}

impl MetadataSource for DriverFile<'_> {
    fn read_bytes(&self, addr: usize, out: &mut [u8]) -> bool {
        let Some((s, offset)) = self.section(addr as u64) else { return false };
        if offset.checked_add(out.len() as u64).is_none_or(|end| end > s.virtual_size) {
            return false;
        }
        // Past the raw data, the section is zero-filled (as the loader maps it).
        for (i, b) in out.iter_mut().enumerate() {
            *b = s.data.get(offset as usize + i).copied().unwrap_or(0);
        }
        true
    }

    fn is_code(&self, addr: usize) -> bool {
        self.section(addr as u64).is_some_and(|(s, _)| s.characteristics & pe::IMAGE_SCN_MEM_EXECUTE != 0)
    }

    fn array_callback(&self, f: usize) -> Result<(usize, u64), String> {
        let stores = self.evaluate(f)?;
        let pointer = stored(&stores, 0, 0, 8).ok_or("it does not store a pointer through its first argument")?;
        let count = stored(&stores, 1, 0, 8).ok_or("it does not store a count through its second argument")?;
        Ok((pointer as usize, count))
    }

    fn version_callback(&self, f: usize) -> Result<[u32; 3], String> {
        let stores = self.evaluate(f)?;
        let field = |o: i64| {
            stored(&stores, 0, o, 4).map(|v| v as u32).ok_or(format!("it does not store the version field at +{o}"))
        };
        Ok([field(0)?, field(4)?, field(8)?])
    }
}

/// Reads a driver file's metadata as the runtime would validate it, and user mode's view, without running it.
pub fn read_driver_file(bytes: &[u8]) -> Result<DriverMetadata, EmulatorError> {
    let file = DriverFile::parse(bytes)?;
    let user_mode = parse_native_file(bytes)?;
    let table = file.find_metadata_table()?;
    let metadata = validate_metadata(&file, table as usize)?;
    compare_views(&metadata, &user_mode)?;
    Ok(DriverMetadata { machine: file.machine, image_base: file.image_base, table, metadata, user_mode })
}
