//! User mode's view of a `.sys`: the three section-table passes of `_ebpf_enumerate_native_programs`
//! (native-module-contract.md §4.3), done on the file bytes without loading anything.

use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile64};
use object::LittleEndian as LE;

use crate::EmulatorError;

/// A map as user mode records it from the `maps` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserModeMap {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub inner_map_idx: u32,
    pub pinning: u32,
    pub inner_id: u32,
}

/// A program as user mode records it from the `programs` section and the code sections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserModeProgram {
    pub pe_section_name: String,
    pub section_name: String,
    pub program_name: String,
    pub program_type: [u8; 16],
    pub expected_attach_type: [u8; 16],
    /// Size of the raw data of the program's code section.
    pub code_size: usize,
}

#[derive(Clone, Debug, Default)]
pub struct UserModeView {
    pub maps: Vec<UserModeMap>,
    /// Sorted by program name, as user mode sorts them before pairing kernel handles (§4.2).
    pub programs: Vec<UserModeProgram>,
}

struct Sec<'a> {
    name: String,
    va: u64,
    vsize: u64,
    characteristics: u32,
    data: &'a [u8],
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4).map(|s| u32::from_le_bytes(s.try_into().expect("4")))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    b.get(o..o + 8).map(|s| u64::from_le_bytes(s.try_into().expect("8")))
}

/// Parses `bytes` as user mode does.
pub fn parse_native_file(bytes: &[u8]) -> Result<UserModeView, EmulatorError> {
    let err = |m: String| EmulatorError::UserMode(m);
    let file = PeFile64::parse(bytes).map_err(|e| err(format!("pe-parse failed: {e}")))?;
    let image_base = file.nt_headers().optional_header().image_base();
    let mut sections = Vec::new();
    for s in file.section_table().iter() {
        sections.push(Sec {
            name: String::from_utf8_lossy(s.raw_name()).into_owned(),
            va: s.virtual_address.get(LE) as u64,
            vsize: s.virtual_size.get(LE) as u64,
            characteristics: s.characteristics.get(LE),
            data: s.pe_data(bytes).map_err(|e| err(e.to_string()))?,
        });
    }

    // Pass 1: `.rdata`/`.data` positions, map definitions.
    let mut view = UserModeView::default();
    let mut rdata: Option<&Sec> = None;
    let mut data: Option<&Sec> = None;
    for s in &sections {
        match s.name.as_str() {
            ".rdata" => rdata = Some(s),
            ".data" => data = Some(s),
            "maps" => view.maps.extend(maps_in(image_base, rdata, s)?),
            _ => {}
        }
    }

    // Pass 2: program entries.
    let mut programs = Vec::new();
    for s in sections.iter().filter(|s| s.name == "programs") {
        programs.extend(programs_in(image_base, rdata, data, s)?);
    }

    // Pass 3: code sections named by a program's pe_section_name; programs without one are dropped.
    for s in sections.iter().filter(|s| s.characteristics & pe::IMAGE_SCN_CNT_CODE != 0) {
        for p in programs.iter_mut().filter(|p| p.pe_section_name == s.name) {
            p.code_size = s.data.len();
        }
    }
    programs.retain(|p| p.code_size > 0);
    programs.sort_by(|a, b| a.program_name.cmp(&b.program_name));
    view.programs = programs;
    Ok(view)
}

/// A string pointer (VA) resolved in `.rdata` if it is known and contains it, else inside `own`.
fn string_at(image_base: u64, rdata: Option<&Sec>, own: &Sec, va: u64) -> Result<String, EmulatorError> {
    let rva = va.wrapping_sub(image_base);
    for s in rdata.into_iter().chain(std::iter::once(own)) {
        if rva >= s.va && rva < s.va + s.vsize {
            let start = (rva - s.va) as usize;
            let tail = s.data.get(start..).unwrap_or(&[]);
            let len = tail
                .iter()
                .position(|&c| c == 0)
                .ok_or_else(|| EmulatorError::UserMode(format!("unterminated string at {va:#x}")))?;
            return Ok(String::from_utf8_lossy(&tail[..len]).into_owned());
        }
    }
    Err(EmulatorError::UserMode(format!(
        "string pointer {va:#x} is neither in .rdata (as seen so far) nor in section `{}`",
        own.name
    )))
}

/// The map entries of a `maps` section: found after a zero header-less gap, 80 bytes each.
fn maps_in(image_base: u64, rdata: Option<&Sec>, s: &Sec) -> Result<Vec<UserModeMap>, EmulatorError> {
    let b = s.data;
    let mut off = 0usize;
    let found = loop {
        if off + 24 > b.len() {
            break None;
        }
        let zeros = b[off..off + 16].iter().all(|&c| c == 0);
        let prev_ok = off == 0 || b[off - 1] == 0;
        let header = b[off + 16..off + 24].iter().any(|&c| c != 0);
        if zeros && prev_ok && header {
            break Some(off);
        }
        off += 8;
    };
    let mut maps = Vec::new();
    let Some(mut off) = found else { return Ok(maps) };
    while (off + 80) as u64 <= s.vsize && off + 80 <= b.len() {
        if b[off..off + 16].iter().any(|&c| c != 0) {
            break;
        }
        let g = |o: usize| u32_at(b, off + o).expect("in bounds");
        let name_va = u64_at(b, off + 72).expect("in bounds");
        maps.push(UserModeMap {
            name: string_at(image_base, rdata, s, name_va)?,
            map_type: g(40),
            key_size: g(44),
            value_size: g(48),
            max_entries: g(52),
            inner_map_idx: g(56),
            pinning: g(60),
            inner_id: g(68),
        });
        off += 80;
    }
    Ok(maps)
}

/// The program entries of a `programs` section (their code size is filled in by pass 3).
fn programs_in(
    image_base: u64,
    rdata: Option<&Sec>,
    data: Option<&Sec>,
    s: &Sec,
) -> Result<Vec<UserModeProgram>, EmulatorError> {
    let err = |m: String| EmulatorError::UserMode(m);
    let b = s.data;
    let mut off = 0usize;
    let start = loop {
        if off + 8 > b.len() {
            break None;
        }
        if b[off..off + 8].iter().all(|&c| c == 0) && (off == 0 || b[off - 1] == 0) {
            break Some(off);
        }
        off += 16;
    };
    let mut programs = Vec::new();
    let Some(start) = start else { return Ok(programs) };
    let version = b
        .get(start + 8..start + 10)
        .map(|v| u16::from_le_bytes([v[0], v[1]]))
        .ok_or_else(|| err("truncated program header".into()))?;
    let size = u64_at(b, start + 16).ok_or_else(|| err("truncated program header".into()))?;
    let total = u64_at(b, start + 24).ok_or_else(|| err("truncated program header".into()))?;
    if version != 1 || !(size == 144 || size == 154) || total < 144 {
        return Err(err(format!("program header {{{version}, {size}, {total}}} is invalid")));
    }
    // Corrupted headers may claim a VirtualSize smaller than the scan position: no entries, not a panic.
    let count = s.vsize.saturating_sub(start as u64) / total;
    let data = data.ok_or_else(|| err("`programs` found but no `.data` section".into()))?;
    for i in 0..count as usize {
        let e = (i as u64)
            .checked_mul(total)
            .and_then(|o| o.checked_add(start as u64))
            .and_then(|o| usize::try_from(o).ok())
            .ok_or_else(|| err(format!("program entry {i} lies beyond the address space")))?;
        let ptr = |o: usize| u64_at(b, e + o).ok_or_else(|| err(format!("program entry {i} truncated")));
        let guid = |va: u64| -> Result<[u8; 16], EmulatorError> {
            let rva = va.wrapping_sub(image_base);
            let outside = || err(format!("program entry {i}: GUID pointer {va:#x} is not inside .data"));
            if rva < data.va || rva.checked_add(16).is_none_or(|end| end > data.va + data.vsize) {
                return Err(outside());
            }
            // VirtualSize may exceed the raw data; bytes past it are not in the file user mode reads.
            let o = (rva - data.va) as usize;
            let bytes = data.data.get(o..o + 16).ok_or_else(outside)?;
            Ok(bytes.try_into().expect("16 bytes"))
        };
        programs.push(UserModeProgram {
            pe_section_name: string_at(image_base, rdata, s, ptr(40)?)?,
            section_name: string_at(image_base, rdata, s, ptr(48)?)?,
            program_name: string_at(image_base, rdata, s, ptr(56)?)?,
            program_type: guid(ptr(104)?)?,
            expected_attach_type: guid(ptr(112)?)?,
            code_size: 0,
        });
    }
    Ok(programs)
}
