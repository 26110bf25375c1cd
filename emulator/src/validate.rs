//! `_ebpf_native_validate_native_module` (contract §2.3): the metadata table's callbacks called and every
//! array they return checked and normalised as EbpfCore does; then user mode's view compared with the kernel's.
//!
//! One reader for two address spaces ([`MetadataSource`]): a loaded image, whose callbacks run (the emulated
//! runtime), and the driver file, whose callbacks are evaluated from their code ([`crate::image`], for
//! `bpf2sys inspect`). Every pointer is bounds-checked against the image before it is followed.

use crate::platform::Guid;
use crate::{EmulatorError, MapEntry, UserModeView};

/// The address space the metadata is read from.
pub trait MetadataSource {
    /// Copies the bytes at `[addr, addr + out.len())` into `out`; false if they are not all inside the image.
    fn read_bytes(&self, addr: usize, out: &mut [u8]) -> bool;
    /// Whether `addr` lies in an executable section of the image.
    fn is_code(&self, addr: usize) -> bool;
    /// Calls `void f(T** out, size_t* count)` and returns `(*out, *count)`.
    fn array_callback(&self, f: usize) -> Result<(usize, u64), String>;
    /// Calls `void f(bpf2c_version_t* out)` and returns the three numbers.
    fn version_callback(&self, f: usize) -> Result<[u32; 3], String>;
}

/// A program entry as the kernel normalised it.
#[derive(Clone, Debug)]
pub struct ProgramInfo {
    pub program_name: String,
    pub section_name: String,
    pub pe_section_name: String,
    /// Address of the program's function (a virtual address when read from the file).
    pub function: usize,
    pub program_type: Guid,
    pub expected_attach_type: Guid,
    pub helper_ids: Vec<u32>,
    /// The `name` of each helper entry (the runtime ignores it; bpf2c writes `helper_id_<n>` or the symbol).
    pub helper_names: Vec<String>,
    /// `btf_resolved_functions` as `(name, module GUID)`; `("", GUID_NULL)` marks an unused slot.
    pub btf_functions: Vec<(String, Guid)>,
    pub referenced_maps: Vec<u16>,
    pub instruction_count: u64,
    pub program_info_hash: Option<Vec<u8>>,
    pub hash_type: Option<String>,
}

/// What the metadata table describes (after validation).
#[derive(Clone, Debug)]
pub struct ModuleMetadata {
    pub version: [u32; 3],
    pub programs: Vec<ProgramInfo>,
    pub maps: Vec<MapEntry>,
    /// `(map name, values)`.
    pub initial_values: Vec<(String, Vec<Option<String>>)>,
    /// `(map name, initial data)`.
    pub global_sections: Vec<(String, Vec<u8>)>,
    /// Whether the `hash` callback returned a 32-byte ELF hash.
    pub elf_hash: Option<Vec<u8>>,
}

/// `_ebpf_minimum_version` (contract §2.3).
const MINIMUM_VERSION: [u32; 3] = [0, 21, 0];

/// Reads a `T` at `addr` after checking it lies inside the image.
///
/// Only for plain-data `T` (integers and byte arrays), for which every bit pattern is a value.
pub(crate) fn read<T: Copy>(image: &dyn MetadataSource, addr: usize, what: &str) -> Result<T, EmulatorError> {
    let mut bytes = vec![0u8; std::mem::size_of::<T>()];
    if !image.read_bytes(addr, &mut bytes) {
        return Err(EmulatorError::Metadata(format!("{what}: pointer {addr:#x} is outside the driver image")));
    }
    // SAFETY: `bytes` holds size_of::<T>() bytes and T is plain data; unaligned reads are fine.
    Ok(unsafe { (bytes.as_ptr() as *const T).read_unaligned() })
}

fn read_c_string(image: &dyn MetadataSource, addr: usize, what: &str) -> Result<String, EmulatorError> {
    if addr == 0 {
        return Err(EmulatorError::Metadata(format!("{what} is NULL")));
    }
    let mut bytes = Vec::new();
    loop {
        let b: u8 = read(image, addr.wrapping_add(bytes.len()), what)?;
        if b == 0 {
            break;
        }
        bytes.push(b);
        if bytes.len() > 4096 {
            return Err(EmulatorError::Metadata(format!("{what} is not terminated")));
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `ebpf_extension_header_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    version: u16,
    size: u64,
    total_size: u64,
}

fn header(image: &dyn MetadataSource, addr: usize, what: &str) -> Result<Header, EmulatorError> {
    Ok(Header {
        version: read(image, addr, what)?,
        size: read(image, addr.wrapping_add(8), what)?,
        total_size: read(image, addr.wrapping_add(16), what)?,
    })
}

fn check_header(h: Header, sizes: &[u64], what: &str) -> Result<(), EmulatorError> {
    if h.version != 1 || !sizes.contains(&h.size) {
        return Err(EmulatorError::Metadata(format!(
            "{what}: header {{version {}, size {}}} is not one of version 1 sizes {sizes:?}",
            h.version, h.size
        )));
    }
    Ok(())
}

/// Calls an array callback: `(pointer, count)`, enforcing count > 0 ⇔ pointer non-NULL.
fn array_callback(image: &dyn MetadataSource, f: usize, what: &str) -> Result<(usize, u64), EmulatorError> {
    if !image.is_code(f) {
        return Err(EmulatorError::Metadata(format!("{what} callback {f:#x} is not code in the image")));
    }
    let (ptr, count) = image.array_callback(f).map_err(|e| EmulatorError::Metadata(format!("{what} callback: {e}")))?;
    if (count > 0) != (ptr != 0) {
        return Err(EmulatorError::Metadata(format!("{what}: count {count} with pointer {ptr:#x}")));
    }
    Ok((ptr, count))
}

/// `base + index * stride + offset` in the image's address space; wrapping, so a hostile pointer or count gives
/// an address the bounds check refuses instead of an overflow.
fn at(base: usize, index: usize, stride: usize, offset: usize) -> usize {
    base.wrapping_add(index.wrapping_mul(stride)).wrapping_add(offset)
}

/// Reads `count` items of `T` at `base` with `stride`.
fn read_array<T: Copy>(
    image: &dyn MetadataSource,
    base: usize,
    count: usize,
    stride: usize,
    what: &str,
) -> Result<Vec<T>, EmulatorError> {
    (0..count).map(|k| read::<T>(image, at(base, k, stride, 0), what)).collect()
}

/// The stride an array's entry 0 declares (`header.total_size`); a zero stride would make every entry the first.
fn entry_stride(image: &dyn MetadataSource, header_at: usize, what: &str) -> Result<usize, EmulatorError> {
    let stride = header(image, header_at, what)?.total_size;
    if stride == 0 {
        return Err(EmulatorError::Metadata(format!("{what}: total_size 0 makes every entry the first")));
    }
    usize::try_from(stride).map_err(|_| EmulatorError::Metadata(format!("{what}: total_size {stride}")))
}

/// `_ebpf_native_validate_native_module` and the reads of `ebpf_native_load_programs` (contract §2.3).
pub fn validate_metadata(image: &dyn MetadataSource, table: usize) -> Result<ModuleMetadata, EmulatorError> {
    let meta = |m: String| EmulatorError::Metadata(m);
    if table == 0 {
        return Err(meta("client dispatch (metadata table) is NULL".into()));
    }
    let size: u64 = read(image, table, "metadata table")?;
    if size < 32 {
        return Err(meta(format!("metadata table size {size} < offsetof(version)")));
    }
    let callbacks: [usize; 6] = std::array::from_fn(|i| read(image, at(table, i, 8, 8), "metadata table").unwrap_or(0));
    if size < 56 {
        return Err(meta(format!("metadata table size {size}: the runtime calls all six callbacks, so it must be 56")));
    }
    if callbacks.contains(&0) {
        return Err(meta(format!("metadata table has a NULL callback: {callbacks:x?}")));
    }
    let [get_programs, get_maps, get_hash, get_version, get_initial_values, get_globals] = callbacks;

    if !image.is_code(get_version) {
        return Err(meta("version callback is not code in the image".into()));
    }
    let version = image.version_callback(get_version).map_err(|e| meta(format!("version callback: {e}")))?;
    if version < MINIMUM_VERSION {
        return Err(meta(format!("module version {version:?} < minimum 0.21.0")));
    }

    let (hash_ptr, hash_len) = array_callback(image, get_hash, "hash")?;
    let elf_hash =
        if hash_ptr != 0 { Some(read_array(image, hash_ptr, hash_len as usize, 1, "ELF hash")?) } else { None };

    let (pp, pcount) = array_callback(image, get_programs, "programs")?;
    let mut programs = Vec::new();
    if pcount > 0 {
        let stride = entry_stride(image, at(pp, 0, 0, 8), "program entry 0")?;
        for i in 0..pcount as usize {
            programs.push(read_program_entry(image, at(pp, i, stride, 0), stride, i)?);
        }
    }
    let maps = read_maps(image, get_maps)?;
    for p in &programs {
        if let Some(bad) = p.referenced_maps.iter().find(|m| **m as usize >= maps.len()) {
            return Err(meta(format!("program `{}` references map {bad} of {}", p.program_name, maps.len())));
        }
    }

    // Map initial values: header {1, 48}, values non-NULL.
    let (ip, icount) = array_callback(image, get_initial_values, "map_initial_values")?;
    let mut initial_values = Vec::new();
    for i in 0..icount as usize {
        let e = at(ip, i, 48, 0);
        let what = format!("map_initial_values {i}");
        check_header(header(image, e, &what)?, &[48], &what)?;
        let name = read_c_string(image, read::<usize>(image, at(e, 0, 0, 24), &what)?, &what)?;
        let count: u64 = read(image, at(e, 0, 0, 32), &what)?;
        let values: usize = read(image, at(e, 0, 0, 40), &what)?;
        if values == 0 {
            return Err(meta(format!("{what}: values is NULL")));
        }
        let mut list = Vec::new();
        for p in read_array::<usize>(image, values, count as usize, 8, &what)? {
            list.push(if p == 0 { None } else { Some(read_c_string(image, p, &what)?) });
        }
        initial_values.push((name, list));
    }

    // Global variable sections: header {1, 48}, initial_data non-NULL.
    let (gp, gcount) = array_callback(image, get_globals, "global_variable_sections")?;
    let mut global_sections = Vec::new();
    for i in 0..gcount as usize {
        let e = at(gp, i, 48, 0);
        let what = format!("global_variable_section {i}");
        check_header(header(image, e, &what)?, &[48], &what)?;
        let name = read_c_string(image, read::<usize>(image, at(e, 0, 0, 24), &what)?, &what)?;
        let size: u64 = read(image, at(e, 0, 0, 32), &what)?;
        let data: usize = read(image, at(e, 0, 0, 40), &what)?;
        if data == 0 {
            return Err(meta(format!("{what}: initial_data is NULL")));
        }
        global_sections.push((name, read_array(image, data, size as usize, 1, &what)?));
    }
    Ok(ModuleMetadata { version, programs, maps, initial_values, global_sections, elf_hash })
}

/// Maps: header {1, 80}, stride maps[0].total_size, names non-NULL.
fn read_maps(image: &dyn MetadataSource, get_maps: usize) -> Result<Vec<MapEntry>, EmulatorError> {
    let (mp, mcount) = array_callback(image, get_maps, "maps")?;
    let mut maps = Vec::new();
    if mcount == 0 {
        return Ok(maps);
    }
    let mstride = entry_stride(image, at(mp, 0, 0, 16), "map entry 0")?;
    for i in 0..mcount as usize {
        let e = at(mp, i, mstride, 0);
        let what = format!("map entry {i}");
        check_header(header(image, at(e, 0, 0, 16), &what)?, &[80], &what)?;
        let g = |o: usize| read::<u32>(image, at(e, 0, 0, o), &what);
        maps.push(MapEntry {
            name: read_c_string(image, read::<usize>(image, at(e, 0, 0, 72), &what)?, &format!("{what} name"))?,
            map_type: g(40)?,
            key_size: g(44)?,
            value_size: g(48)?,
            max_entries: g(52)?,
            inner_map_idx: g(56)?,
            pinning: g(60)?,
            id: g(64)?,
            inner_id: g(68)?,
        });
    }
    Ok(maps)
}

/// Program entry `i` at `e` (contract §2.3 item 4), normalised as the runtime does: `min(total_size, 160)` bytes
/// copied into a zeroed entry.
fn read_program_entry(
    image: &dyn MetadataSource,
    e: usize,
    stride: usize,
    i: usize,
) -> Result<ProgramInfo, EmulatorError> {
    let meta = |m: String| EmulatorError::Metadata(m);
    let what = format!("program entry {i}");
    check_header(header(image, at(e, 0, 0, 8), &what)?, &[144, 154], &what)?;
    let mut entry = [0u8; 160];
    if !image.read_bytes(e, &mut entry[..stride.min(160)]) {
        return Err(meta(format!("{what}: pointer {e:#x} is outside the driver image")));
    }
    let u64_at = |o: usize| u64::from_le_bytes(entry[o..o + 8].try_into().expect("8"));
    let u16_at = |o: usize| u16::from_le_bytes([entry[o], entry[o + 1]]);
    let program_name = read_c_string(image, u64_at(56) as usize, &format!("{what} program_name"))?;
    let what = format!("program `{program_name}`");
    let section_name = read_c_string(image, u64_at(48) as usize, &format!("{what} section_name"))?;
    let pe_section_name = read_c_string(image, u64_at(40) as usize, &format!("{what} pe_section_name"))?;
    for (n, s) in [("program_name", &program_name), ("section_name", &section_name)] {
        if s.is_empty() || s.len() > 63 {
            return Err(meta(format!("{what}: {n} length {}", s.len())));
        }
    }
    let function = u64_at(32) as usize;
    if !image.is_code(function) {
        return Err(meta(format!("{what}: function {function:#x} is not code in the image")));
    }
    let map_count = u16_at(72) as usize;
    let maps_ptr = u64_at(64) as usize;
    if (map_count > 0) != (maps_ptr != 0) {
        return Err(meta(format!("{what}: referenced_map_count {map_count} with pointer {maps_ptr:#x}")));
    }
    let referenced_maps = read_array::<u16>(image, maps_ptr, map_count, 2, &what)?;
    let (helper_ids, helper_names) = read_helpers(image, u64_at(80) as usize, u16_at(88) as usize, &what)?;
    // BTF-resolved functions exist in entries of size ≥ 154 only.
    let btf_functions = if stride >= 154 {
        read_btf_functions(image, u64_at(144) as usize, u16_at(152) as usize, &what)?
    } else {
        Vec::new()
    };
    let guid_at =
        |p: usize, w: &str| -> Result<Guid, EmulatorError> { Ok(Guid::from_bytes(&read::<[u8; 16]>(image, p, w)?)) };
    let type_ptr = u64_at(104) as usize;
    if type_ptr == 0 {
        return Err(meta(format!("{what}: program_type is NULL")));
    }
    let program_type = guid_at(type_ptr, "program_type")?;
    if program_type.is_null() {
        return Err(meta(format!("{what}: program_type is GUID_NULL")));
    }
    let attach_ptr = u64_at(112) as usize;
    let expected_attach_type = if attach_ptr == 0 { Guid::NULL } else { guid_at(attach_ptr, "expected_attach_type")? };
    let (hash_ptr, hash_len) = (u64_at(120) as usize, u64_at(128) as usize);
    let program_info_hash = if hash_ptr != 0 && hash_len != 0 {
        Some(read_array(image, hash_ptr, hash_len, 1, "program_info_hash")?)
    } else {
        None
    };
    let hash_type_ptr = u64_at(136) as usize;
    let hash_type =
        if hash_type_ptr != 0 { Some(read_c_string(image, hash_type_ptr, "program_info_hash_type")?) } else { None };
    Ok(ProgramInfo {
        program_name,
        section_name,
        pe_section_name,
        function,
        program_type,
        expected_attach_type,
        helper_ids,
        helper_names,
        btf_functions,
        referenced_maps,
        instruction_count: u64_at(96),
        program_info_hash,
        hash_type,
    })
}

/// A program's helper table: stride from helpers[0], header {1, 40}, names non-NULL, non-zero ids unique.
fn read_helpers(
    image: &dyn MetadataSource,
    helpers_ptr: usize,
    helper_count: usize,
    what: &str,
) -> Result<(Vec<u32>, Vec<String>), EmulatorError> {
    if (helper_count > 0) != (helpers_ptr != 0) {
        return Err(EmulatorError::Metadata(format!(
            "{what}: helper_count {helper_count} with pointer {helpers_ptr:#x}"
        )));
    }
    let (mut ids, mut names) = (Vec::new(), Vec::new());
    if helper_count == 0 {
        return Ok((ids, names));
    }
    let hstride = entry_stride(image, helpers_ptr, what)?;
    for k in 0..helper_count {
        let h = at(helpers_ptr, k, hstride, 0);
        let hw = format!("{what} helper {k}");
        check_header(header(image, h, &hw)?, &[40], &hw)?;
        // The name must be non-NULL (its contents, "" for sentinels, are ignored by the runtime).
        names.push(read_c_string(image, read::<usize>(image, at(h, 0, 0, 32), &hw)?, &format!("{hw} name"))?);
        ids.push(read::<u32>(image, at(h, 0, 0, 24), &hw)?);
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(id) = ids.iter().find(|id| **id != 0 && !seen.insert(**id)) {
        return Err(EmulatorError::Metadata(format!(
            "{what}: helper id {id} appears twice (the runtime's prototype count mismatches)"
        )));
    }
    Ok((ids, names))
}

/// BTF-resolved functions: header exactly {1, 48, 48}; each entry unused ("" and GUID_NULL) or with both a name
/// and a GUID (coverage §2).
fn read_btf_functions(
    image: &dyn MetadataSource,
    btf_ptr: usize,
    btf_count: usize,
    what: &str,
) -> Result<Vec<(String, Guid)>, EmulatorError> {
    let meta = |m: String| EmulatorError::Metadata(m);
    if (btf_count > 0) != (btf_ptr != 0) {
        return Err(meta(format!("{what}: BTF count {btf_count} with pointer {btf_ptr:#x}")));
    }
    let mut btf_functions = Vec::new();
    for k in 0..btf_count {
        let entry = at(btf_ptr, k, 48, 0);
        let h = header(image, entry, what)?;
        if h != (Header { version: 1, size: 48, total_size: 48 }) {
            return Err(meta(format!("{what}: BTF entry {k} header {h:?}")));
        }
        let bw = format!("{what} BTF entry {k}");
        let name_ptr = read::<usize>(image, at(entry, 0, 0, 24), &bw)?;
        let name = if name_ptr == 0 { None } else { Some(read_c_string(image, name_ptr, &bw)?) };
        let guid = Guid::from_bytes(&read::<[u8; 16]>(image, at(entry, 0, 0, 32), &bw)?);
        match name {
            Some(n) if n.is_empty() == guid.is_null() => btf_functions.push((n, guid)),
            _ => return Err(meta(format!("{bw}: neither unused nor a name with a module GUID"))),
        }
    }
    Ok(btf_functions)
}

/// User mode pairs kernel handles positionally with its name-sorted program list and its map list (§4.2).
pub(crate) fn compare_views(metadata: &ModuleMetadata, user: &UserModeView) -> Result<(), EmulatorError> {
    let mismatch = |m: String| EmulatorError::Mismatch(m);
    if metadata.programs.len() != user.programs.len() {
        return Err(mismatch(format!(
            "kernel has {} programs, user mode found {}",
            metadata.programs.len(),
            user.programs.len()
        )));
    }
    for (k, u) in metadata.programs.iter().zip(&user.programs) {
        if k.program_name != u.program_name
            || k.section_name != u.section_name
            || k.pe_section_name != u.pe_section_name
        {
            return Err(mismatch(format!(
                "program order/names differ: kernel `{}` ({}, {}) vs user `{}` ({}, {}) — the program array must be sorted by name",
                k.program_name, k.section_name, k.pe_section_name, u.program_name, u.section_name, u.pe_section_name
            )));
        }
        if k.program_type.to_bytes() != u.program_type || k.expected_attach_type.to_bytes() != u.expected_attach_type {
            return Err(mismatch(format!("program `{}`: GUIDs differ between kernel and user mode", k.program_name)));
        }
    }
    if metadata.maps.len() != user.maps.len() {
        return Err(mismatch(format!("kernel has {} maps, user mode found {}", metadata.maps.len(), user.maps.len())));
    }
    for (k, u) in metadata.maps.iter().zip(&user.maps) {
        if k.name != u.name || k.map_type != u.map_type || k.key_size != u.key_size || k.value_size != u.value_size {
            return Err(mismatch(format!("map `{}` differs from user mode's `{}`", k.name, u.name)));
        }
    }
    Ok(())
}
