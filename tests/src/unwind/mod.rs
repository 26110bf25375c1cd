//! A Windows virtual unwinder for driver images, and a checker that unwinds every function at every instruction
//! offset and compares the result with the caller's machine state.
//!
//! In: a PE32+ driver image (x64 or ARM64) as bytes. Out: an [`UnwindReport`] — how many functions and
//! instruction offsets were checked, and every offset where a virtual unwind (`RtlVirtualUnwind` semantics:
//! Microsoft, "x64 exception handling" and "ARM64 exception handling") does not give back the stack pointer, the
//! return address and every callee-saved register as the caller had them.
//!
//! The unwinders ([`x64`], [`arm64`]) read only `.pdata`/`.xdata` and, for the x64 epilogue rule, the code bytes
//! at the PC, as the kernel's unwinder does. The machine state at each offset comes from executing the real
//! instructions ([`arm64`] in Unicorn; [`x64`] by emulating the prologue and epilogue instructions): the prologue
//! from the entry, every epilogue from the body state, and every body offset from the state the prologue leaves
//! with each saved register overwritten (the body may use it). Which instructions form the prologue and the
//! epilogues is decided from the code alone, never from the unwind data under test.

pub mod arm64;
pub mod x64;

/// The result of checking every function of an image at every instruction offset.
#[derive(Clone, Debug, Default)]
pub struct UnwindReport {
    /// Functions checked (a function split into several `.pdata` fragments counts once).
    pub functions: usize,
    /// Instruction offsets checked over all functions.
    pub offsets: usize,
    /// One line per offset where the virtual unwind disagrees with the caller's state.
    pub mismatches: Vec<String>,
}

impl UnwindReport {
    pub fn merge(&mut self, other: UnwindReport) {
        self.functions += other.functions;
        self.offsets += other.offsets;
        self.mismatches.extend(other.mismatches);
    }
}

/// Why an image cannot be checked.
#[derive(Debug, thiserror::Error)]
pub enum UnwindError {
    #[error("not a PE32+ image: {0}")]
    NotAnImage(String),
    #[error("unsupported machine {0:#x}")]
    Machine(u16),
    #[error("malformed unwind data for the function at rva {rva:#x}: {what}")]
    Malformed { rva: u32, what: String },
    #[error("emulator: {0}")]
    Emulator(String),
}

/// A PE32+ image mapped at its relative virtual addresses (sections at their `VirtualAddress`).
pub struct MappedImage {
    pub machine: u16,
    /// `SizeOfImage` bytes; unmapped gaps are zero.
    pub bytes: Vec<u8>,
    /// The exception directory (`.pdata`): RVA and size.
    pub pdata: (u32, u32),
    /// Executable sections: (RVA, virtual size).
    pub code: Vec<(u32, u32)>,
}

pub const MACHINE_AMD64: u16 = 0x8664;
pub const MACHINE_ARM64: u16 = 0xaa64;

impl MappedImage {
    pub fn parse(image: &[u8]) -> Result<MappedImage, UnwindError> {
        let bad = |what: &str| UnwindError::NotAnImage(what.to_string());
        let u16_at =
            |o: usize| image.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]])).ok_or_else(|| bad("short"));
        let u32_at = |o: usize| {
            image.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).ok_or_else(|| bad("short"))
        };
        let pe = u32_at(0x3c)? as usize;
        if image.get(pe..pe + 4) != Some(b"PE\0\0") {
            return Err(bad("no PE signature"));
        }
        let machine = u16_at(pe + 4)?;
        let sections = u16_at(pe + 6)? as usize;
        let optional_size = u16_at(pe + 20)? as usize;
        let optional = pe + 24;
        if u16_at(optional)? != 0x20b {
            return Err(bad("not PE32+"));
        }
        let size_of_image = u32_at(optional + 56)? as usize;
        // Data directory 3: the exception table (PE32+ directories start at optional header offset 112).
        let pdata = (u32_at(optional + 112 + 3 * 8)?, u32_at(optional + 112 + 3 * 8 + 4)?);
        let mut bytes = vec![0u8; size_of_image];
        let mut code = Vec::new();
        for s in 0..sections {
            let h = optional + optional_size + 40 * s;
            let (vsize, rva) = (u32_at(h + 8)?, u32_at(h + 12)?);
            let (raw_size, raw_ptr) = (u32_at(h + 16)? as usize, u32_at(h + 20)? as usize);
            let characteristics = u32_at(h + 36)?;
            let n = raw_size.min(vsize as usize);
            let src = image.get(raw_ptr..raw_ptr + n).ok_or_else(|| bad("section data outside the file"))?;
            bytes
                .get_mut(rva as usize..rva as usize + n)
                .ok_or_else(|| bad("section outside SizeOfImage"))?
                .copy_from_slice(src);
            if characteristics & 0x2000_0000 != 0 {
                code.push((rva, vsize));
            }
        }
        Ok(MappedImage { machine, bytes, pdata, code })
    }

    /// Lays out compiled functions as an image would (code, then the unwind records, then `.pdata`), for code that
    /// is not linked into a driver (the conformance programs, generated functions). Relocations are not applied:
    /// prologues and epilogues do not contain any.
    pub fn from_functions(
        target: bpf2sys::compiled::Target,
        functions: &[bpf2sys::compiled::CompiledFunction],
    ) -> Self {
        let align = |v: usize, a: usize| v.div_ceil(a) * a;
        let mut bytes = vec![0u8; 0x1000];
        let mut starts = Vec::new();
        for f in functions {
            let at = align(bytes.len(), f.alignment.max(4) as usize);
            bytes.resize(at, 0);
            bytes.extend_from_slice(&f.code);
            starts.push(at as u32);
        }
        let code = (0x1000, bytes.len() as u32 - 0x1000);
        let mut entries = Vec::new();
        for (f, &start) in functions.iter().zip(&starts) {
            for u in f.unwind.fragments() {
                let at = align(bytes.len(), 4);
                bytes.resize(at, 0);
                bytes.extend_from_slice(&u.record);
                entries.push((start + u.start, start + u.end, at as u32));
            }
        }
        let pdata_at = align(bytes.len(), 4);
        bytes.resize(pdata_at, 0);
        let x64 = target == bpf2sys::compiled::Target::X64;
        for (begin, end, record) in &entries {
            bytes.extend_from_slice(&begin.to_le_bytes());
            if x64 {
                bytes.extend_from_slice(&end.to_le_bytes());
            }
            bytes.extend_from_slice(&record.to_le_bytes());
        }
        let pdata = (pdata_at as u32, (bytes.len() - pdata_at) as u32);
        let machine = if x64 { MACHINE_AMD64 } else { MACHINE_ARM64 };
        MappedImage { machine, bytes, pdata, code: vec![code] }
    }

    pub fn read_u32(&self, rva: u32) -> Option<u32> {
        let o = rva as usize;
        self.bytes.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }

    pub fn read_u8(&self, rva: u32) -> Option<u8> {
        self.bytes.get(rva as usize).copied()
    }
}

/// Checks every function of `image` at every instruction offset (see the module doc).
pub fn check_image(image: &[u8]) -> Result<UnwindReport, UnwindError> {
    check_mapped(&MappedImage::parse(image)?)
}

/// Checks compiled functions that are not linked into an image (see [`MappedImage::from_functions`]).
pub fn check_functions(
    target: bpf2sys::compiled::Target,
    functions: &[bpf2sys::compiled::CompiledFunction],
) -> Result<UnwindReport, UnwindError> {
    check_mapped(&MappedImage::from_functions(target, functions))
}

pub fn check_mapped(mapped: &MappedImage) -> Result<UnwindReport, UnwindError> {
    match mapped.machine {
        MACHINE_ARM64 => arm64::check_image(mapped),
        MACHINE_AMD64 => x64::check_image(mapped),
        other => Err(UnwindError::Machine(other)),
    }
}

/// A value no register holds by accident, distinct per register number.
pub(crate) fn sentinel(register: u64) -> u64 {
    0x5a5a_0000_1234_0000 ^ (register << 40) ^ (register << 8)
}

/// The value a body instruction may leave in a saved register: distinct from its sentinel.
pub(crate) fn clobbered(register: u64) -> u64 {
    sentinel(register) ^ 0x00ff_00ff_00ff_00ff
}

/// The return address every checked function is called with: inside no image.
pub(crate) const RETURN_ADDRESS: u64 = 0x0000_7ffe_dead_beec;
