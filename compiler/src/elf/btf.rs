//! A bounded reader for `.BTF` (type information) and `.BTF.ext` (line info) as clang emits them for
//! `-target bpf -g`.
//!
//! Format: the Linux kernel's `Documentation/bpf/btf.rst` (§2 type encoding, §4.2 `.BTF.ext`). Only what the
//! front end needs is decoded: types (to read BTF map definitions and DATASECs) and line info (to point
//! diagnostics at source). Every count and offset is checked against the section length, so hostile input can
//! neither read out of bounds nor make us allocate more than a small multiple of its own size; every walk over
//! type chains is depth-limited so a cyclic chain is an error, not a hang.

use thiserror::Error;

/// `BTF_MAGIC` (btf.rst §2.1).
const BTF_MAGIC: u16 = 0xeb9f;
/// Longest chain of typedef/const/volatile/pointer links we follow before declaring the chain cyclic.
const MAX_TYPE_DEPTH: usize = 32;

/// A malformed `.BTF` or `.BTF.ext` section. Offsets are relative to the start of the section.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BtfError {
    #[error("{section}: {what} (at byte offset {offset:#x})")]
    Malformed { section: &'static str, offset: usize, what: String },
    #[error(".BTF: type id {id} {what}")]
    BadType { id: u32, what: String },
}

fn malformed(section: &'static str, offset: usize, what: impl Into<String>) -> BtfError {
    BtfError::Malformed { section, offset, what: what.into() }
}

/// BTF kinds (btf.rst §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BtfKind {
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    DataSec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl BtfKind {
    fn from_raw(kind: u32) -> Option<BtfKind> {
        use BtfKind::*;
        Some(match kind {
            1 => Int,
            2 => Ptr,
            3 => Array,
            4 => Struct,
            5 => Union,
            6 => Enum,
            7 => Fwd,
            8 => Typedef,
            9 => Volatile,
            10 => Const,
            11 => Restrict,
            12 => Func,
            13 => FuncProto,
            14 => Var,
            15 => DataSec,
            16 => Float,
            17 => DeclTag,
            18 => TypeTag,
            19 => Enum64,
            _ => return None,
        })
    }
}

/// A struct/union member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BtfMember {
    /// Offset of the name in the string table (see [`Btf::name`]).
    pub name_offset: u32,
    pub type_id: u32,
    /// Offset in bits from the start of the struct.
    pub bit_offset: u32,
}

/// A DATASEC entry: a variable (or function) placed in a section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BtfVarSecInfo {
    pub type_id: u32,
    pub offset: u32,
    pub size: u32,
}

/// One decoded type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BtfType {
    pub kind: BtfKind,
    /// Offset of the name in the string table (see [`Btf::name`]). Names stay offsets so that many types
    /// sharing one long name cost nothing.
    pub name_offset: u32,
    /// `size` for INT, STRUCT, UNION, ENUM, DATASEC, FLOAT, ENUM64; the referenced type for the others.
    pub size_or_type: u32,
    /// ARRAY: (element type, element count).
    pub array: Option<(u32, u32)>,
    /// STRUCT/UNION members.
    pub members: Vec<BtfMember>,
    /// DATASEC entries.
    pub sec_infos: Vec<BtfVarSecInfo>,
    /// The `vlen` field of `info`: FUNC linkage (0 static, 1 global, 2 extern) for FUNC, else the entry count.
    pub vlen: u16,
    /// The u32 that follows INT, VAR and DECL_TAG: INT encoding, VAR linkage, DECL_TAG `component_idx` (-1 =
    /// the tag applies to the type itself).
    pub extra: u32,
}

/// `BTF_FUNC_EXTERN`: FUNC linkage of a function defined outside the object (btf.rst §2.2.12).
pub const FUNC_LINKAGE_EXTERN: u16 = 2;

/// The parsed `.BTF` section.
#[derive(Clone, Debug, Default)]
pub struct Btf {
    /// Types by id; index 0 is `void` and is `None`.
    types: Vec<Option<BtfType>>,
    strings: Vec<u8>,
}

struct Reader<'a> {
    section: &'static str,
    data: &'a [u8],
    base: usize,
}

impl Reader<'_> {
    fn u32_at(&self, at: usize) -> Result<u32, BtfError> {
        at.checked_add(4)
            .and_then(|end| self.data.get(at..end))
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| malformed(self.section, self.base + at, "truncated"))
    }
    fn u16_at(&self, at: usize) -> Result<u16, BtfError> {
        at.checked_add(2)
            .and_then(|end| self.data.get(at..end))
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| malformed(self.section, self.base + at, "truncated"))
    }
}

/// Reads a NUL-terminated string at `offset` in a string table.
fn string_at(strings: &[u8], offset: u32, section: &'static str) -> Result<String, BtfError> {
    let start = offset as usize;
    let tail = strings
        .get(start..)
        .ok_or_else(|| malformed(section, start, format!("string offset {offset} is past the string table")))?;
    let end =
        tail.iter().position(|&b| b == 0).ok_or_else(|| malformed(section, start, "string is not NUL-terminated"))?;
    Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
}

/// Checks a common `{magic, version, flags, hdr_len}` prefix and returns `hdr_len`.
fn check_preamble(r: &Reader, section: &'static str) -> Result<usize, BtfError> {
    let magic = r.u16_at(0)?;
    if magic != BTF_MAGIC {
        return Err(malformed(section, 0, format!("bad magic {magic:#06x} (expected {BTF_MAGIC:#06x})")));
    }
    let version = *r.data.get(2).ok_or_else(|| malformed(section, 2, "truncated"))?;
    if version != 1 {
        return Err(malformed(section, 2, format!("unsupported version {version}")));
    }
    let hdr_len = r.u32_at(4)? as usize;
    if hdr_len < 8 || hdr_len > r.data.len() {
        return Err(malformed(section, 4, format!("header length {hdr_len} is out of range")));
    }
    Ok(hdr_len)
}

/// `data[start .. start+len]` relative to `base`, or an error naming `what`.
fn subslice<'a>(
    data: &'a [u8],
    base: usize,
    off: u32,
    len: u32,
    section: &'static str,
    what: &str,
) -> Result<&'a [u8], BtfError> {
    let start = base.checked_add(off as usize);
    let end = start.and_then(|s| s.checked_add(len as usize));
    match (start, end) {
        (Some(s), Some(e)) if e <= data.len() => Ok(&data[s..e]),
        _ => Err(malformed(section, base, format!("{what} (offset {off}, length {len}) lies outside the section"))),
    }
}

impl Btf {
    /// Parses a `.BTF` section.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        const S: &str = ".BTF";
        let r = Reader { section: S, data, base: 0 };
        let hdr_len = check_preamble(&r, S)?;
        if hdr_len < 24 {
            return Err(malformed(S, 4, format!("header length {hdr_len} is shorter than 24")));
        }
        let type_off = r.u32_at(8)?;
        let type_len = r.u32_at(12)?;
        let str_off = r.u32_at(16)?;
        let str_len = r.u32_at(20)?;
        let types_bytes = subslice(data, hdr_len, type_off, type_len, S, "type section")?;
        let strings = subslice(data, hdr_len, str_off, str_len, S, "string section")?.to_vec();
        if strings.first().is_some_and(|&b| b != 0) {
            return Err(malformed(S, hdr_len + str_off as usize, "string section does not start with NUL"));
        }
        let type_base = hdr_len + type_off as usize;
        let tr = Reader { section: S, data: types_bytes, base: type_base };
        // Every type takes at least 12 bytes, which bounds the vector by the input length.
        let mut types: Vec<Option<BtfType>> = Vec::with_capacity(types_bytes.len() / 12 + 1);
        types.push(None);
        let mut at = 0usize;
        while at < types_bytes.len() {
            let (ty, next) = Btf::read_type(&tr, &strings, at, types.len() as u32)?;
            types.push(Some(ty));
            at = next;
        }
        Ok(Btf { types, strings })
    }

    /// Reads the type with id `id` at offset `start` of the type section (its 12-byte `btf_type` and the kind's
    /// trailing data, btf.rst §2.2); returns it and the offset of the next type.
    fn read_type(tr: &Reader, strings: &[u8], start: usize, id: u32) -> Result<(BtfType, usize), BtfError> {
        const S: &str = ".BTF";
        let mut at = start;
        let name_off = tr.u32_at(at)?;
        let info = tr.u32_at(at + 4)?;
        let size_or_type = tr.u32_at(at + 8)?;
        let vlen = (info & 0xffff) as usize;
        let raw_kind = (info >> 24) & 0x1f;
        let kind_flag = info >> 31 != 0;
        let kind = BtfKind::from_raw(raw_kind)
            .ok_or_else(|| malformed(S, tr.base + at, format!("type id {id} has unknown kind {raw_kind}")))?;
        string_at(strings, name_off, S)?;
        at += 12;
        let mut ty = BtfType {
            kind,
            name_offset: name_off,
            size_or_type,
            array: None,
            members: Vec::new(),
            sec_infos: Vec::new(),
            vlen: vlen as u16,
            extra: 0,
        };
        // Each vlen record has a known size; check the whole run fits before reserving anything.
        let record = |size: usize| -> Result<(), BtfError> {
            let need = vlen.checked_mul(size).and_then(|n| n.checked_add(at));
            match need {
                Some(end) if end <= tr.data.len() => Ok(()),
                _ => Err(malformed(S, tr.base + at, format!("type id {id}: {vlen} entries overrun the type section"))),
            }
        };
        match kind {
            BtfKind::Int | BtfKind::Var | BtfKind::DeclTag => {
                ty.extra = tr.u32_at(at)?;
                at += 4;
            }
            BtfKind::Array => {
                let elem = tr.u32_at(at)?;
                let nelems = tr.u32_at(at + 8)?;
                ty.array = Some((elem, nelems));
                at += 12;
            }
            BtfKind::Struct | BtfKind::Union => {
                record(12)?;
                ty.members.reserve(vlen);
                for _ in 0..vlen {
                    let m_name = tr.u32_at(at)?;
                    string_at(strings, m_name, S)?;
                    let m_type = tr.u32_at(at + 4)?;
                    let m_off = tr.u32_at(at + 8)?;
                    // With kind_flag set the top 8 bits hold the bitfield size (btf.rst §2.2.4).
                    let bit_offset = if kind_flag { m_off & 0x00ff_ffff } else { m_off };
                    ty.members.push(BtfMember { name_offset: m_name, type_id: m_type, bit_offset });
                    at += 12;
                }
            }
            BtfKind::Enum => {
                record(8)?;
                at += 8 * vlen;
            }
            BtfKind::Enum64 => {
                record(12)?;
                at += 12 * vlen;
            }
            BtfKind::FuncProto => {
                record(8)?;
                at += 8 * vlen;
            }
            BtfKind::DataSec => {
                record(12)?;
                ty.sec_infos.reserve(vlen);
                for _ in 0..vlen {
                    ty.sec_infos.push(BtfVarSecInfo {
                        type_id: tr.u32_at(at)?,
                        offset: tr.u32_at(at + 4)?,
                        size: tr.u32_at(at + 8)?,
                    });
                    at += 12;
                }
            }
            BtfKind::Ptr
            | BtfKind::Fwd
            | BtfKind::Typedef
            | BtfKind::Volatile
            | BtfKind::Const
            | BtfKind::Restrict
            | BtfKind::Func
            | BtfKind::Float
            | BtfKind::TypeTag => {}
        }
        Ok((ty, at))
    }

    /// Number of type ids, including `void` (id 0).
    pub fn type_count(&self) -> usize {
        self.types.len()
    }

    /// The type with `id`; `void` (0) and unknown ids are errors.
    pub fn get(&self, id: u32) -> Result<&BtfType, BtfError> {
        match self.types.get(id as usize) {
            Some(Some(t)) => Ok(t),
            Some(None) => Err(BtfError::BadType { id, what: "is void where a type is required".into() }),
            None => Err(BtfError::BadType { id, what: format!("does not exist ({} types)", self.types.len()) }),
        }
    }

    /// A string from the `.BTF` string table (used by `.BTF.ext`).
    pub fn string(&self, offset: u32) -> Result<String, BtfError> {
        string_at(&self.strings, offset, ".BTF")
    }

    /// The bytes of a string in the `.BTF` string table, without its NUL.
    pub fn str_bytes(&self, offset: u32) -> Result<&[u8], BtfError> {
        let start = offset as usize;
        let tail = self
            .strings
            .get(start..)
            .ok_or_else(|| malformed(".BTF", start, format!("string offset {offset} is past the string table")))?;
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed(".BTF", start, "string is not NUL-terminated"))?;
        Ok(&tail[..end])
    }

    /// The name at a string-table offset (lossy UTF-8; an invalid offset gives `"<bad name>"`, which the
    /// parser has already ruled out for every name it stored).
    pub fn name(&self, offset: u32) -> std::borrow::Cow<'_, str> {
        match self.str_bytes(offset) {
            Ok(b) => String::from_utf8_lossy(b),
            Err(_) => "<bad name>".into(),
        }
    }

    /// The first DATASEC named `name` (e.g. `.maps`, `.data`).
    pub fn datasec(&self, name: &str) -> Option<(u32, &BtfType)> {
        self.types.iter().enumerate().find_map(|(id, t)| match t {
            Some(t) if t.kind == BtfKind::DataSec && self.str_bytes(t.name_offset).ok() == Some(name.as_bytes()) => {
                Some((id as u32, t))
            }
            _ => None,
        })
    }

    /// Every type with its id, in id order.
    pub fn types(&self) -> impl Iterator<Item = (u32, &BtfType)> {
        self.types.iter().enumerate().filter_map(|(id, t)| t.as_ref().map(|t| (id as u32, t)))
    }

    /// Follows typedef / const / volatile / restrict / type-tag links to the underlying type id.
    pub fn skip_modifiers(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..MAX_TYPE_DEPTH {
            let t = self.get(id)?;
            match t.kind {
                BtfKind::Typedef | BtfKind::Volatile | BtfKind::Const | BtfKind::Restrict | BtfKind::TypeTag => {
                    id = t.size_or_type
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::BadType { id, what: "starts a modifier chain that is too deep or cyclic".into() })
    }

    /// Size in bytes of a type (btf.rst §2.2), following modifiers and arrays with bounded depth.
    pub fn size_of(&self, id: u32) -> Result<u64, BtfError> {
        self.size_of_depth(id, 0)
    }

    fn size_of_depth(&self, id: u32, depth: usize) -> Result<u64, BtfError> {
        if depth > MAX_TYPE_DEPTH {
            return Err(BtfError::BadType { id, what: "has a size that depends on a too deep or cyclic chain".into() });
        }
        let t = self.get(id)?;
        Ok(match t.kind {
            BtfKind::Int
            | BtfKind::Struct
            | BtfKind::Union
            | BtfKind::Enum
            | BtfKind::Enum64
            | BtfKind::Float
            | BtfKind::DataSec => t.size_or_type as u64,
            BtfKind::Ptr => 8,
            BtfKind::Array => {
                let (elem, n) = t.array.unwrap_or((0, 0));
                self.size_of_depth(elem, depth + 1)?.saturating_mul(n as u64)
            }
            BtfKind::Typedef
            | BtfKind::Volatile
            | BtfKind::Const
            | BtfKind::Restrict
            | BtfKind::TypeTag
            | BtfKind::Var => self.size_of_depth(t.size_or_type, depth + 1)?,
            BtfKind::Fwd | BtfKind::Func | BtfKind::FuncProto | BtfKind::DeclTag => {
                return Err(BtfError::BadType {
                    id,
                    what: format!("({:?} '{}') has no size", t.kind, self.name(t.name_offset)),
                })
            }
        })
    }
}

/// One `.BTF.ext` line-info record. Strings stay offsets into the `.BTF` string table: many records share one
/// file name, and resolving them eagerly would let a small hostile input expand into a huge allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineRecord {
    /// Byte offset of the instruction in its ELF section.
    pub insn_offset: u32,
    pub file_name_offset: u32,
    pub source_line_offset: u32,
    pub line: u32,
    pub column: u32,
}

/// Line info from `.BTF.ext`, grouped by the string-table offset of the ELF section name (see
/// [`Btf::str_bytes`]); several groups may name the same section.
pub type LineInfoBySection = Vec<(u32, Vec<LineRecord>)>;

/// One CO-RE relocation record of `.BTF.ext` (`struct bpf_core_relo`, btf.rst §4.2): the instruction whose
/// immediate or offset a loader would rewrite for the running kernel's BTF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreRelocation {
    /// Byte offset of the instruction in its ELF section.
    pub insn_offset: u32,
    /// The root type in the object's own `.BTF`.
    pub type_id: u32,
    /// Offset of the access string (`"0:1:2"`) in the `.BTF` string table.
    pub access_string_offset: u32,
    /// `enum bpf_core_relo_kind` (0 field byte offset … 12 type matches).
    pub kind: u32,
}

/// CO-RE relocations from `.BTF.ext`, grouped by the string-table offset of the ELF section name.
pub type CoreRelocationsBySection = Vec<(u32, Vec<CoreRelocation>)>;

/// Per ELF section group: the section name's string offset and the byte offsets of its records.
type RecordGroups = Vec<(u32, Vec<usize>)>;

/// One subsection of `.BTF.ext` (btf.rst §4.2): a record size, then per ELF section its name offset, a count and
/// that many records. Returns, per section group, the name offset and the byte offsets of its records in `data`.
fn record_groups(r: &Reader, btf: &Btf, min_record: usize, what: &str) -> Result<RecordGroups, BtfError> {
    let rec_size = r.u32_at(0)? as usize;
    if rec_size < min_record {
        return Err(malformed(
            r.section,
            r.base,
            format!("{what} record size {rec_size} is smaller than {min_record}"),
        ));
    }
    let mut groups = Vec::new();
    let mut at = 4usize;
    while at < r.data.len() {
        let sec_name_offset = r.u32_at(at)?;
        btf.str_bytes(sec_name_offset)?;
        let count = r.u32_at(at + 4)? as usize;
        at += 8;
        let end = count.checked_mul(rec_size).and_then(|n| n.checked_add(at)).filter(|&e| e <= r.data.len());
        let Some(end) = end else {
            let sec_name = String::from_utf8_lossy(btf.str_bytes(sec_name_offset)?).into_owned();
            return Err(malformed(
                r.section,
                r.base + at,
                format!("{count} {what} records for '{sec_name}' overrun the subsection"),
            ));
        };
        groups.push((sec_name_offset, (at..end).step_by(rec_size).collect()));
        at = end;
    }
    Ok(groups)
}

/// The subsection of `.BTF.ext` whose offset and length are at header offsets `field` and `field + 4`, if the
/// header has them and the subsection is not empty.
fn ext_subsection<'a>(ext: &'a [u8], field: usize, what: &str) -> Result<Option<Reader<'a>>, BtfError> {
    const S: &str = ".BTF.ext";
    let r = Reader { section: S, data: ext, base: 0 };
    let hdr_len = check_preamble(&r, S)?;
    if hdr_len < 24 {
        return Err(malformed(S, 4, format!("header length {hdr_len} is shorter than 24")));
    }
    // Headers written before a subsection existed end before its fields (btf.rst §4.2: 24 bytes without CO-RE).
    if hdr_len < field + 8 {
        return Ok(None);
    }
    let off = r.u32_at(field)?;
    let len = r.u32_at(field + 4)?;
    if len == 0 {
        return Ok(None);
    }
    let data = subslice(ext, hdr_len, off, len, S, what)?;
    Ok(Some(Reader { section: S, data, base: hdr_len + off as usize }))
}

/// Parses the CO-RE relocation subsection of `.BTF.ext` (btf.rst §4.2, `core_relo_off` at header offset 24).
pub fn parse_core_relocations(ext: &[u8], btf: &Btf) -> Result<CoreRelocationsBySection, BtfError> {
    let Some(r) = ext_subsection(ext, 24, "CO-RE relocation subsection")? else { return Ok(Vec::new()) };
    let groups = record_groups(&r, btf, 16, "CO-RE relocation")?;
    let mut out = CoreRelocationsBySection::with_capacity(groups.len());
    for (sec_name_offset, starts) in groups {
        let mut records = Vec::with_capacity(starts.len());
        for at in starts {
            records.push(CoreRelocation {
                insn_offset: r.u32_at(at)?,
                type_id: r.u32_at(at + 4)?,
                access_string_offset: r.u32_at(at + 8)?,
                kind: r.u32_at(at + 12)?,
            });
        }
        out.push((sec_name_offset, records));
    }
    Ok(out)
}

/// Parses the line-info subsection of `.BTF.ext` (btf.rst §4.2, `line_info_off` at header offset 16).
pub fn parse_line_info(ext: &[u8], btf: &Btf) -> Result<LineInfoBySection, BtfError> {
    let Some(lr) = ext_subsection(ext, 16, "line-info subsection")? else { return Ok(Vec::new()) };
    let groups = record_groups(&lr, btf, 16, "line-info")?;
    let mut out = LineInfoBySection::with_capacity(groups.len());
    for (sec_name_offset, starts) in groups {
        let mut records = Vec::with_capacity(starts.len());
        for at in starts {
            let insn_offset = lr.u32_at(at)?;
            let file_name_offset = lr.u32_at(at + 4)?;
            let source_line_offset = lr.u32_at(at + 8)?;
            let line_col = lr.u32_at(at + 12)?;
            // line_col: line number in the upper 22 bits, column in the lower 10 (btf.rst §4.2).
            records.push(LineRecord {
                insn_offset,
                file_name_offset,
                source_line_offset,
                line: line_col >> 10,
                column: line_col & 0x3ff,
            });
        }
        out.push((sec_name_offset, records));
    }
    Ok(out)
}
