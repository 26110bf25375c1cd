//! The PE-structure rules P1–P11 (driver-image-and-signing.md §5.2): what the kernel loader and the driver
//! signing tools expect of a driver image. Each rule returns its findings; an empty list is a pass.

use super::pe_view::*;
use super::ALLOWED_IMPORT_MODULES;
use bpf2sys_signing::pe::pe_checksum;

pub(super) fn p1(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    if img.machine != MACHINE_AMD64 && img.machine != MACHINE_ARM64 {
        f.push(format!("Machine {:#06x} is neither AMD64 (0x8664) nor ARM64 (0xaa64)", img.machine));
    }
    if img.magic != 0x20b {
        f.push(format!("magic {:#x} is not PE32+", img.magic));
    }
    if img.characteristics & FILE_EXECUTABLE_IMAGE == 0 {
        f.push("Characteristics lacks EXECUTABLE_IMAGE".into());
    }
    for (bit, name) in [
        (FILE_DLL, "DLL"),
        (FILE_RELOCS_STRIPPED, "RELOCS_STRIPPED"),
        (FILE_UP_SYSTEM_ONLY, "UP_SYSTEM_ONLY"),
        (FILE_32BIT_MACHINE, "32BIT_MACHINE"),
    ] {
        if img.characteristics & bit != 0 {
            f.push(format!("Characteristics has {name}"));
        }
    }
    f
}

pub(super) fn p2(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    if img.subsystem != 1 {
        f.push(format!("Subsystem {} is not NATIVE (1)", img.subsystem));
    }
    if img.dll_characteristics & DLL_DYNAMIC_BASE == 0 {
        f.push("DllCharacteristics lacks DYNAMIC_BASE".into());
    }
    if !img.sections.iter().any(|s| s.name == ".reloc") {
        f.push("no .reloc section".into());
    }
    match base_relocations(img) {
        Ok(relocs) => {
            for (page, ty, off) in relocs {
                if ty != 0 && ty != 10 {
                    f.push(format!(
                        "base relocation type {ty} at RVA {:#x} (only ABSOLUTE and DIR64 allowed)",
                        page.wrapping_add(off as u32)
                    ));
                }
            }
        }
        Err(e) => f.push(e),
    }
    f
}

pub(super) fn p3(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    if img.number_of_sections > 96 {
        f.push(format!("{} sections (the loader allows 96)", img.number_of_sections));
    }
    let fa = img.file_alignment;
    if !fa.is_power_of_two() || !(512..=65536).contains(&fa) || fa > img.section_alignment {
        f.push(format!("FileAlignment {fa:#x} is not a power of two in 512..65536 and ≤ SectionAlignment"));
        return f;
    }
    let sa = img.section_alignment.max(1);
    let mut expected_va = None;
    for s in &img.sections {
        if let Some(e) = expected_va {
            if s.virtual_address as u64 != e {
                f.push(format!(
                    "section `{}` at RVA {:#x}, expected {e:#x} (ascending and adjacent)",
                    s.name, s.virtual_address
                ));
            }
        }
        // In u64: a corrupted header may place a section so that the next page-aligned RVA passes 4 GiB.
        expected_va = Some(
            (s.virtual_address as u64 + s.virtual_size.max(s.size_of_raw_data) as u64).div_ceil(sa as u64) * sa as u64,
        );
        if s.pointer_to_raw_data % fa != 0 || s.size_of_raw_data % fa != 0 {
            f.push(format!(
                "section `{}`: raw pointer/size {:#x}/{:#x} are not FileAlignment multiples",
                s.name, s.pointer_to_raw_data, s.size_of_raw_data
            ));
        }
        if s.pointer_to_raw_data as u64 + s.size_of_raw_data as u64 > img.bytes.len() as u64 {
            f.push(format!("section `{}`: raw data runs past the end of the file", s.name));
        }
    }
    if let Some(e) = expected_va {
        if img.size_of_image as u64 != e {
            f.push(format!("SizeOfImage {:#x}, expected {e:#x}", img.size_of_image));
        }
    }
    let headers = (img.headers_end as u64).div_ceil(fa as u64) * fa as u64;
    if img.size_of_headers as u64 != headers {
        f.push(format!("SizeOfHeaders {:#x}, expected {headers:#x}", img.size_of_headers));
    }
    f
}

pub(super) fn p4(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    for s in &img.sections {
        let c = s.characteristics;
        if c & IMAGE_SCN_MEM_READ == 0 {
            f.push(format!("section `{}` ({c:#010x}) is not readable", s.name));
        }
        if c & (IMAGE_SCN_CNT_CODE | IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_CNT_UNINITIALIZED_DATA) == 0 {
            f.push(format!("section `{}` ({c:#010x}) has no content type", s.name));
        }
        let pageable = s.name.starts_with("PAGE");
        if pageable && c & IMAGE_SCN_MEM_EXECUTE != 0 {
            f.push(format!("code section `{}` is pageable (PAGE*) but eBPF code runs at DISPATCH_LEVEL", s.name));
        }
        if !pageable && c & IMAGE_SCN_MEM_DISCARDABLE == 0 && c & IMAGE_SCN_MEM_NOT_PAGED == 0 {
            f.push(format!("section `{}` ({c:#010x}) lacks NOT_PAGED", s.name));
        }
    }
    f
}

pub(super) fn p5(img: &Image) -> Vec<String> {
    if img.dll_characteristics & DLL_FORCE_INTEGRITY == 0 {
        return Vec::new();
    }
    img.sections
        .iter()
        .filter(|s| {
            s.characteristics & IMAGE_SCN_CNT_UNINITIALIZED_DATA != 0
                && s.characteristics & (IMAGE_SCN_CNT_CODE | IMAGE_SCN_CNT_INITIALIZED_DATA) == 0
                && s.pointer_to_raw_data != 0
        })
        .map(|s| {
            format!(
                "uninitialized section `{}` has PointerToRawData {:#x} under FORCE_INTEGRITY",
                s.name, s.pointer_to_raw_data
            )
        })
        .collect()
}

pub(super) fn p6(img: &Image) -> Vec<String> {
    match img.section_of(img.address_of_entry_point) {
        Some(s) if Image::is_exec(s) => Vec::new(),
        Some(s) => {
            vec![format!("entry point {:#x} is in non-executable section `{}`", img.address_of_entry_point, s.name)]
        }
        None => vec![format!("entry point {:#x} is outside every section", img.address_of_entry_point)],
    }
}

pub(super) fn p7(img: &Image) -> Vec<String> {
    let (rva, size) = img.directories[DIR_EXCEPTION];
    if rva == 0 {
        return vec!["no exception directory (.pdata)".into()];
    }
    let mut f = Vec::new();
    let arm = img.machine == MACHINE_ARM64;
    let entry = if arm { 8 } else { 12 };
    if size % entry != 0 {
        f.push(format!("exception directory size {size} is not a multiple of {entry}"));
    }
    let mut previous_end = 0u32;
    for i in 0..size / entry {
        let at = rva.wrapping_add(i * entry);
        let (Some(begin), Some(second)) = (img.read32(at), img.read32(at.wrapping_add(4))) else {
            f.push(format!("RUNTIME_FUNCTION {i} is outside the image"));
            break;
        };
        match img.section_of(begin) {
            Some(s) if Image::is_exec(s) => {}
            _ => f.push(format!("RUNTIME_FUNCTION {i}: begin {begin:#x} is not in an executable section")),
        }
        if begin < previous_end {
            f.push(format!("RUNTIME_FUNCTION {i}: begin {begin:#x} overlaps or precedes the previous entry"));
        }
        if arm {
            // Flag bits 0 mean `second` is the RVA of a 4-byte-aligned .xdata record; otherwise packed data.
            previous_end = begin.saturating_add(if second & 3 == 0 { 4 } else { 4 * ((second >> 2) & 0x7ff) });
            if second & 3 == 0 {
                match arm64_xdata_extent(img, second) {
                    Ok(length) => previous_end = begin.saturating_add(length),
                    Err(why) => f.push(format!("RUNTIME_FUNCTION {i}: .xdata at {second:#x}: {why}")),
                }
            }
        } else {
            let end = second;
            let unwind = img.read32(at.wrapping_add(8)).unwrap_or(0);
            if end <= begin {
                f.push(format!("RUNTIME_FUNCTION {i}: end {end:#x} ≤ begin {begin:#x}"));
            }
            previous_end = end;
            if !unwind.is_multiple_of(4) {
                f.push(format!("RUNTIME_FUNCTION {i}: UNWIND_INFO {unwind:#x} is not DWORD-aligned"));
            }
            match img.offset_of(unwind, 4) {
                Some(o) => {
                    let version = img.bytes[o] & 7;
                    let count = img.bytes[o + 2] as u32;
                    if version != 1 {
                        f.push(format!("RUNTIME_FUNCTION {i}: UNWIND_INFO version {version}, expected 1"));
                    }
                    if img.offset_of(unwind, 4 + 2 * count).is_none() {
                        f.push(format!("RUNTIME_FUNCTION {i}: {count} unwind codes run past their section"));
                    }
                }
                None => f.push(format!("RUNTIME_FUNCTION {i}: UNWIND_INFO {unwind:#x} is outside the image")),
            }
        }
    }
    f
}

/// Checks an ARM64 `.xdata` record (Microsoft, "ARM64 exception handling", .xdata records) and returns the
/// length in bytes of the code it describes: the header (extended when both counts are zero), every epilogue
/// scope inside the function and pointing into the codes, and codes that end with `end` (a function split into
/// fragments has one record per fragment, each describing only its own range).
fn arm64_xdata_extent(img: &Image, rva: u32) -> Result<u32, String> {
    let word = |k: u32| img.read32(rva.wrapping_add(4 * k)).ok_or_else(|| "outside the image".to_string());
    let header = word(0)?;
    let length = (header & 0x3ffff) * 4;
    if length == 0 {
        return Err("FunctionLength is 0".into());
    }
    let (mut epilogues, mut code_words, mut next) = ((header >> 22) & 0x1f, header >> 27, 1);
    if epilogues == 0 && code_words == 0 {
        let ext = word(1)?;
        (epilogues, code_words, next) = (ext & 0xffff, (ext >> 16) & 0xff, 2);
    }
    let packed_epilogue = header & (1 << 21) != 0;
    let scopes = if packed_epilogue { 0 } else { epilogues };
    let code_at = next + scopes;
    let codes: Vec<u8> =
        (0..code_words).map(|k| word(code_at + k).map(u32::to_le_bytes)).collect::<Result<Vec<_>, _>>()?.concat();
    for k in 0..scopes {
        let scope = word(next + k)?;
        if (scope & 0x3ffff) * 4 >= length {
            return Err(format!(
                "epilogue scope {k} starts past the function ({} of {length} bytes)",
                (scope & 0x3ffff) * 4
            ));
        }
        if (scope >> 22) as usize >= codes.len() {
            return Err(format!("epilogue scope {k} starts past the unwind codes"));
        }
    }
    if !codes.contains(&0xe4) {
        return Err("the unwind codes do not end with `end`".into());
    }
    Ok(length)
}

pub(super) fn p8(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    let (lc, lc_size) = img.directories[DIR_LOAD_CONFIG];
    let guard = img.dll_characteristics & DLL_GUARD_CF != 0;
    if lc == 0 {
        if guard {
            f.push("GUARD_CF is set but there is no load-config directory".into());
        }
        return f;
    }
    // IMAGE_LOAD_CONFIG_DIRECTORY64: SecurityCookie @88, GuardCFFunctionTable @128, Count @136, GuardFlags @144.
    if let Some(cookie) = img.read64(lc.wrapping_add(88)).filter(|c| *c != 0) {
        let image_base = rd64(img.bytes, rd32(img.bytes, 0x3c).unwrap_or(0) as usize + 24 + 24).unwrap_or(0);
        let rva = cookie.wrapping_sub(image_base) as u32;
        match img.section_of(rva) {
            Some(s) if s.characteristics & IMAGE_SCN_MEM_WRITE != 0 => {}
            _ => f.push(format!("SecurityCookie {cookie:#x} is not in a writable section")),
        }
    }
    if guard {
        let table = img.read64(lc.wrapping_add(128)).unwrap_or(0);
        let flags = if lc_size >= 148 { img.read32(lc.wrapping_add(144)).unwrap_or(0) } else { 0 };
        if table == 0 || flags == 0 {
            f.push("GUARD_CF is set but the load config has no GuardFlags/function table".into());
        }
    }
    f
}

pub(super) fn p9(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    match img.imports() {
        Ok(list) => {
            for (dll, _, _) in list {
                if !ALLOWED_IMPORT_MODULES.iter().any(|m| m.eq_ignore_ascii_case(&dll)) {
                    f.push(format!(
                        "imports from `{dll}`, which is not a kernel module (allowed: {})",
                        ALLOWED_IMPORT_MODULES.join(", ")
                    ));
                }
            }
        }
        Err(e) => f.push(e),
    }
    if img.directories[DIR_DELAY_IMPORT].0 != 0 {
        f.push("has a delay-load import directory".into());
    }
    if img.directories[DIR_TLS].0 != 0 {
        f.push("has a TLS directory".into());
    }
    f
}

pub(super) fn p10(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    if img.major_linker_version < 14 {
        f.push(format!("MajorLinkerVersion {} < 14", img.major_linker_version));
    }
    if img.dll_characteristics & DLL_TERMINAL_SERVER_AWARE != 0 {
        f.push("DllCharacteristics has TERMINAL_SERVER_AWARE".into());
    }
    f
}

pub(super) fn p11(img: &Image) -> Vec<String> {
    let computed = pe_checksum(img.bytes, img.checksum_offset);
    if computed != img.check_sum {
        vec![format!("CheckSum {:#010x}, computed {computed:#010x}", img.check_sum)]
    } else {
        Vec::new()
    }
}
