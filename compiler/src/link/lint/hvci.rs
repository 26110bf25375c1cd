//! The HVCI rules H1–H7 (driver-image-and-signing.md §5.2): what Hypervisor-protected Code Integrity refuses to
//! load. Each rule returns its findings; an empty list is a pass.

use super::pe_view::*;
use super::ALLOWED_IMPORTS;

pub(super) fn h1(img: &Image) -> Vec<String> {
    img.sections
        .iter()
        .filter(|s| s.characteristics & IMAGE_SCN_MEM_WRITE != 0 && s.characteristics & IMAGE_SCN_MEM_EXECUTE != 0)
        .map(|s| format!("section `{}` ({:#010x}) is writable and executable", s.name, s.characteristics))
        .collect()
}

pub(super) fn h2(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    if img.section_alignment == 0 || !img.section_alignment.is_multiple_of(0x1000) {
        f.push(format!("SectionAlignment {:#x} is not a multiple of 0x1000", img.section_alignment));
    }
    for s in &img.sections {
        if s.virtual_address % 0x1000 != 0 {
            f.push(format!("section `{}` starts at RVA {:#x}, not page-aligned", s.name, s.virtual_address));
        }
    }
    f
}

pub(super) fn h3(img: &Image) -> Vec<String> {
    let mut ranges = Vec::new();
    let (iat, size) = img.directories[DIR_IAT];
    if iat != 0 {
        ranges.push((iat, size.max(1)));
    } else {
        match img.imports() {
            Ok(list) => {
                ranges.extend(list.iter().map(|(_, first_thunk, names)| (*first_thunk, 8 * (names.len() as u32 + 1))))
            }
            Err(e) => return vec![e],
        }
    }
    let mut f = Vec::new();
    for (start, len) in ranges {
        let end = u64::from(start) + u64::from(len);
        match (img.section_of(start), img.section_of(start.wrapping_add(len - 1))) {
            (Some(a), Some(b)) if a.name == b.name && end <= section_end(a) && !Image::is_exec(a) => {}
            (Some(a), Some(b)) if a.name == b.name && end <= section_end(a) => {
                f.push(format!("IAT {start:#x}..{end:#x} is in executable section `{}`", a.name))
            }
            _ => f.push(format!("IAT {start:#x}..{end:#x} is not inside one section")),
        }
    }
    f
}

pub(super) fn h4(img: &Image) -> Vec<String> {
    let Ok(relocs) = base_relocations(img) else { return Vec::new() }; // P2 reports structure problems.
    relocs
        .iter()
        .filter_map(|&(page, ty, off)| match ty {
            10 if off > 0xff8 => {
                Some(format!("DIR64 at RVA {:#x} crosses a page boundary", page.wrapping_add(off as u32)))
            }
            3 if off > 0xffc => {
                Some(format!("HIGHLOW at RVA {:#x} crosses a page boundary", page.wrapping_add(off as u32)))
            }
            _ => None,
        })
        .collect()
}

pub(super) fn h5(img: &Image) -> Vec<String> {
    if img.dll_characteristics & DLL_NX_COMPAT == 0 {
        vec![format!("DllCharacteristics {:#06x} lacks NX_COMPAT (0x0100)", img.dll_characteristics)]
    } else {
        Vec::new()
    }
}

pub(super) fn h6(img: &Image) -> Vec<String> {
    img.sections
        .iter()
        .filter(|s| {
            let code = s.characteristics & (IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_EXECUTE) != 0;
            let discardable = s.characteristics & IMAGE_SCN_MEM_DISCARDABLE != 0 || s.name == "INIT";
            code && discardable && s.characteristics & IMAGE_SCN_MEM_WRITE != 0
        })
        .map(|s| format!("discardable code section `{}` ({:#010x}) is writable", s.name, s.characteristics))
        .collect()
}

pub(super) fn h7(img: &Image) -> Vec<String> {
    match img.imports() {
        Ok(list) => list
            .iter()
            .flat_map(|(dll, _, names)| {
                names.iter().filter(|n| !ALLOWED_IMPORTS.contains(&n.as_str())).map(move |n| {
                    format!("import {dll}!{n} is not on the allow-list of kernel functions a bpf2sys driver may call")
                })
            })
            .collect(),
        Err(e) => vec![e],
    }
}
