//! Program pass: relocations applied to each executable section, then every entry program laid out with the
//! subprograms it reaches (native-module-contract.md §6; libbpf's `bpf_object__reloc_code` for the call
//! arithmetic) and decoded.
//!
//! - Programs are the function symbols of executable sections (`SHT_PROGBITS`, `SHF_ALLOC|SHF_EXECINSTR`);
//!   `.text` functions are programs only when no other executable section has any (contract §6).
//! - `lddw` + `R_BPF_64_64` against a map symbol becomes `map_by_idx` ([`Imm64Kind::MapIndex`]); against a
//!   `.data`/`.rodata`/`.bss` symbol it becomes `map_val(map_by_idx)` with the byte offset in `next_imm`
//!   ([`Imm64Kind::MapIndexValue`]); the instruction's own immediate is the addend (section symbols).
//! - `call src=1`: with an `R_BPF_64_32` relocation the callee is slot `sym.value / 8 + imm + 1` of the
//!   symbol's section; without one, `pc + imm + 1` of the same section. The callee's function is appended
//!   once per program and the call's `imm` rewritten to the new relative offset.
//!
//! Output is bounded: one program holds at most [`MAX_PROGRAM_SLOTS`] slots and the module at most
//! [`MAX_MODULE_SLOTS`] or 64 × the object's code, whichever is larger, so a small object cannot expand into a
//! huge module by sharing subprograms among many programs.
//!
//! [`Imm64Kind::MapIndex`]: crate::isa::Imm64Kind::MapIndex
//! [`Imm64Kind::MapIndexValue`]: crate::isa::Imm64Kind::MapIndexValue

use std::collections::{BTreeMap, HashMap};

use object::elf;

use super::kfuncs::DeclaredKfunc;
use super::maps::{MapLayout, MapReference};
use super::{ElfError, Object, Symbol, R_BPF_64_32, R_BPF_64_64, R_BPF_64_ABS32, R_BPF_64_ABS64, R_BPF_NONE};
use crate::isa::{self, RawSlot, SLOT_SIZE};
use crate::program::{CoreRelocations, Function, LineInfo, Program, RefusedProgram};

/// Largest program (entry function plus subprograms), in slots: Linux's `BPF_COMPLEXITY_LIMIT_INSNS`.
pub const MAX_PROGRAM_SLOTS: usize = 1_000_000;
/// Module-wide slot budget floor (see the module doc).
pub const MAX_MODULE_SLOTS: usize = 4_000_000;

const OPCODE_LDDW: u8 = 0x18;
const OPCODE_CALL: u8 = 0x85;
const CALL_SRC_LOCAL: u8 = 1;
/// `BPF_PSEUDO_KFUNC_CALL`: `imm` is the kfunc's id in [`Module::kfuncs`](crate::program::Module::kfuncs).
const CALL_SRC_KFUNC: u8 = 2;
const MAP_INDEX_SRC: u8 = 5;
const MAP_INDEX_VALUE_SRC: u8 = 6;

/// A function symbol's slot range inside its section.
#[derive(Clone, Debug)]
struct FunctionRange<'a> {
    name: &'a str,
    start: usize,
    end: usize,
}

/// An executable section with relocations applied to its raw slots.
struct CodeSection<'a> {
    index: usize,
    name: &'a str,
    slots: Vec<RawSlot>,
    functions: Vec<FunctionRange<'a>>,
    /// Call slot → (callee section index, callee slot), from `R_BPF_64_32` relocations.
    call_targets: HashMap<usize, (usize, i64)>,
    /// Slot → why it cannot be built (a reference to an undefined symbol); only programs reaching the slot fail.
    unresolved: BTreeMap<usize, String>,
}

fn section_error(section: &str, what: String) -> ElfError {
    ElfError::Section { section: section.to_string(), what }
}

fn reloc_error(section: &str, offset: u64, what: String) -> ElfError {
    ElfError::Relocation { section: section.to_string(), offset, what }
}

fn code_section<'a>(object: &Object<'a>, index: usize) -> Result<CodeSection<'a>, ElfError> {
    let section = &object.sections[index];
    let name = section.name;
    if section.data.len() as u64 != section.size {
        return Err(section_error(name, "executable section has no file contents".into()));
    }
    if !section.data.len().is_multiple_of(SLOT_SIZE) {
        return Err(section_error(name, format!("size {} is not a multiple of 8 bytes", section.data.len())));
    }
    let slots: Vec<RawSlot> = section
        .data
        .chunks_exact(SLOT_SIZE)
        .map(|c| RawSlot::from_bytes(&[c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();

    // clang never writes `call src=2`: a kfunc call is `call src=1, imm=-1` relocated against the extern, which
    // [`relocate`] rewrites. A raw one would name a BTF id of no known BTF.
    let mut pc = 0;
    while pc < slots.len() {
        if slots[pc].opcode == OPCODE_CALL && slots[pc].src == CALL_SRC_KFUNC {
            return Err(section_error(
                name,
                format!(
                    "call src=2 (kfunc by BTF id {}) at byte {:#x}: kfunc calls must name their extern function \
                     through a relocation",
                    slots[pc].imm,
                    pc * SLOT_SIZE
                ),
            ));
        }
        pc += if slots[pc].opcode == OPCODE_LDDW { 2 } else { 1 };
    }

    // Function symbols, by offset; a size of 0 extends to the next function or the section end.
    let mut syms: Vec<_> = object.section_symbols(index).filter(|s| s.starts_function()).collect();
    // A FUNC sorts before a NOTYPE symbol at the same offset, and the NOTYPE one is dropped: some objects label
    // one entry with both.
    syms.sort_by_key(|s| (s.value, s.kind != elf::STT_FUNC));
    syms.dedup_by(|later, kept| later.value == kept.value && later.kind == elf::STT_NOTYPE);
    let mut functions = Vec::with_capacity(syms.len());
    for (i, sym) in syms.iter().enumerate() {
        let err = |what: String| ElfError::Symbol { symbol: sym.name.to_string(), what };
        if sym.value % SLOT_SIZE as u64 != 0 || sym.size % SLOT_SIZE as u64 != 0 {
            return Err(err(format!("offset {:#x} / size {:#x} in '{name}' is not slot-aligned", sym.value, sym.size)));
        }
        let start = sym.value / SLOT_SIZE as u64;
        let end = if sym.size > 0 {
            start.saturating_add(sym.size / SLOT_SIZE as u64)
        } else {
            syms.get(i + 1).map_or(slots.len() as u64, |next| next.value / SLOT_SIZE as u64)
        };
        if end > slots.len() as u64 || start >= end {
            return Err(err(format!(
                "function range {:#x}..{:#x} lies outside '{name}' ({} bytes) or is empty",
                sym.value,
                end.saturating_mul(SLOT_SIZE as u64),
                section.size
            )));
        }
        let (start, end) = (start as usize, end as usize);
        if let Some(prev) = functions.last() {
            let prev: &FunctionRange = prev;
            if start < prev.end {
                return Err(err(format!("overlaps function '{}' in '{name}'", prev.name)));
            }
        }
        functions.push(FunctionRange { name: sym.name, start, end });
    }
    if functions.is_empty() && !slots.is_empty() {
        return Err(section_error(name, "executable section has code but no function symbol".into()));
    }
    Ok(CodeSection { index, name, slots, functions, call_targets: HashMap::new(), unresolved: BTreeMap::new() })
}

/// Applies the relocations of one executable section to its raw slots.
fn relocate(
    object: &Object,
    layout: &MapLayout,
    kfuncs: &[DeclaredKfunc],
    code: &mut CodeSection,
) -> Result<(), ElfError> {
    let name = code.name;
    for reloc in &object.relocations[code.index] {
        let offset = reloc.offset;
        let err = |what: String| reloc_error(name, offset, what);
        if reloc.kind == R_BPF_NONE {
            continue;
        }
        if offset % SLOT_SIZE as u64 != 0 || offset / SLOT_SIZE as u64 >= code.slots.len() as u64 {
            return Err(err("relocation offset is not an instruction in the section".into()));
        }
        let pc = (offset / SLOT_SIZE as u64) as usize;
        let symbol = object.symbol(reloc.symbol, name, offset)?;
        if !matches!(reloc.kind, R_BPF_64_64 | R_BPF_64_32) {
            let what = match reloc.kind {
                R_BPF_64_ABS64 | R_BPF_64_ABS32 => format!("data relocation against '{}' inside code", symbol.name),
                other => format!("unsupported relocation type {other} against '{}'", symbol.name),
            };
            return Err(err(what));
        }
        // libbpf decides what a code relocation means by the instruction it patches, not by its type: clang
        // emits R_BPF_64_64 for lddw and R_BPF_64_32 for calls, but the kinds are not checked (§4.2).
        let slot = code.slots[pc];
        let is_lddw = slot.opcode == OPCODE_LDDW;
        let is_local_call = slot.opcode == OPCODE_CALL && slot.src == CALL_SRC_LOCAL;
        match (is_lddw, is_local_call) {
            (true, _) => relocate_lddw(object, layout, code, pc, symbol, offset)?,
            (_, true) if symbol.section.is_none() => {
                // An extern: a kfunc if BTF declares it so, else (e.g. `memset` left by clang) only the programs
                // that reach this call fail.
                match kfuncs.iter().find(|k| k.kfunc.name == symbol.name) {
                    Some(k) => {
                        if slot.dst != 0 || slot.offset != 0 {
                            return Err(err(format!(
                                "kfunc call to '{}' has dst {} and offset {} (both must be 0)",
                                symbol.name, slot.dst, slot.offset
                            )));
                        }
                        code.slots[pc].src = CALL_SRC_KFUNC;
                        code.slots[pc].imm = k.kfunc.id as i32;
                    }
                    None => {
                        code.unresolved.insert(
                            pc,
                            format!(
                                "call to undefined symbol '{}' at byte {offset:#x} of '{name}' (not a kfunc: it is \
                                 neither in section .ksyms nor tagged btf_decl_tag(\"module_id:{{GUID}}\"))",
                                symbol.name
                            ),
                        );
                    }
                }
            }
            (_, true) => {
                let target_section = symbol
                    .section
                    .filter(|&s| object.sections.get(s).is_some_and(|s| s.is_executable()))
                    .ok_or_else(|| err(format!("call target '{}' is not in an executable section", symbol.name)))?;
                if symbol.value % SLOT_SIZE as u64 != 0 {
                    return Err(err(format!("call target '{}' is not slot-aligned", symbol.name)));
                }
                // libbpf: callee = sym.st_value / 8 + imm + 1 (imm is -1 for a function symbol).
                let target = (symbol.value / SLOT_SIZE as u64) as i64 + i64::from(slot.imm) + 1;
                code.call_targets.insert(pc, (target_section, target));
            }
            _ => {
                return Err(err(format!(
                    "relocation against '{}' applies to opcode {:#04x}, which is neither lddw nor a local call",
                    symbol.name, slot.opcode
                )))
            }
        }
    }
    Ok(())
}

/// Relocates the `lddw` at `pc` against `symbol`: a map (`map_by_idx`), a global variable (`map_val(map_by_idx)` +
/// offset), or, for an undefined symbol, marks the programs reaching it as refused.
fn relocate_lddw(
    object: &Object,
    layout: &MapLayout,
    code: &mut CodeSection,
    pc: usize,
    symbol: &Symbol,
    offset: u64,
) -> Result<(), ElfError> {
    let name = code.name;
    let err = |what: String| reloc_error(name, offset, what);
    if pc + 1 >= code.slots.len() {
        return Err(err(format!("relocation against '{}' applies to an lddw cut off by the section end", symbol.name)));
    }
    match layout.resolve(object, symbol)? {
        Some(MapReference::Map(index)) => {
            code.slots[pc].src = MAP_INDEX_SRC;
            code.slots[pc].imm = index as i32;
            code.slots[pc + 1].imm = 0;
        }
        Some(MapReference::GlobalValue { map_index, symbol_offset, section_size }) => {
            // The lddw immediate is the addend (non-zero for section-symbol references).
            let value = symbol_offset as i64 + i64::from(code.slots[pc].imm);
            if value < 0 || value as u64 > section_size {
                return Err(err(format!(
                    "reference to '{}' + {} lies outside its section ({section_size} bytes)",
                    symbol.name, code.slots[pc].imm
                )));
            }
            code.slots[pc].src = MAP_INDEX_VALUE_SRC;
            code.slots[pc].imm = map_index as i32;
            code.slots[pc + 1].imm = value as i32;
        }
        None if symbol.section.is_none() => {
            code.unresolved
                .insert(pc, format!("reference to undefined symbol '{}' at byte {offset:#x} of '{name}'", symbol.name));
        }
        None => {
            let what = match symbol.section.and_then(|s| object.sections.get(s)) {
                None => format!(
                    "'{}' names section index {}, which does not exist",
                    symbol.name,
                    symbol.section.unwrap_or_default()
                ),
                Some(s) if s.is_executable() => {
                    format!("loading the address of function '{}' is not supported", symbol.name)
                }
                Some(s) => {
                    let what = if symbol.kind == elf::STT_SECTION {
                        format!("reference into section '{}'", s.name)
                    } else {
                        format!("'{}' is in section '{}'", symbol.name, s.name)
                    };
                    format!("{what}, which is neither a map section nor global data")
                }
            };
            return Err(err(what));
        }
    }
    Ok(())
}

/// `.BTF.ext` records by section name, each as (slot, record), sorted by slot; `what` names the record kind in
/// errors.
type RecordsBySection<'b, R> = HashMap<&'b [u8], Vec<(usize, &'b R)>>;

fn records_by_section<'b, R>(
    object: &'b Object,
    groups: &'b [(u32, Vec<R>)],
    insn_offset: impl Fn(&R) -> u32,
    what: &str,
) -> Result<RecordsBySection<'b, R>, ElfError> {
    let mut out: RecordsBySection<R> = HashMap::new();
    let Some(btf) = &object.btf else { return Ok(out) };
    for (name_offset, records) in groups {
        let name = btf.str_bytes(*name_offset)?;
        let list = out.entry(name).or_default();
        for r in records {
            let offset = insn_offset(r);
            if !offset.is_multiple_of(SLOT_SIZE as u32) {
                return Err(section_error(
                    ".BTF.ext",
                    format!(
                        "{what} for '{}' at byte {offset:#x} is not instruction-aligned",
                        String::from_utf8_lossy(name)
                    ),
                ));
            }
            list.push(((offset / SLOT_SIZE as u32) as usize, r));
        }
    }
    for list in out.values_mut() {
        list.sort_by_key(|(slot, _)| *slot);
    }
    Ok(out)
}

struct Builder<'o, 'a> {
    object: &'o Object<'a>,
    sections: Vec<CodeSection<'a>>,
    /// Line info per code section (same order as `sections`).
    lines: Vec<Vec<(usize, &'o super::btf::LineRecord)>>,
    /// ELF section index → index in `sections`.
    code_index_of: HashMap<usize, usize>,
    budget: usize,
    /// Remaining bytes we may spend on line-info strings.
    string_budget: usize,
    /// Slots with a CO-RE relocation per code section (same order as `sections`), sorted.
    core_slots: Vec<Vec<usize>>,
    /// The CO-RE relocations of each program built so far that has any.
    core_relocations: Vec<CoreRelocations>,
}

impl Builder<'_, '_> {
    /// Index in `sections` of the ELF section `index`.
    fn code_index(&self, index: usize) -> Option<usize> {
        self.code_index_of.get(&index).copied()
    }

    /// Lays out one entry program; `Ok(Err(_))` when it reaches an undefined symbol.
    fn program(&mut self, entry: (usize, usize)) -> Result<Result<Program, RefusedProgram>, ElfError> {
        let (esec, efunc) = entry;
        let entry_name = self.sections[esec].functions[efunc].name;
        let section_name = self.sections[esec].name;
        let perr = |what: String| ElfError::Program {
            program: entry_name.to_string(),
            section: section_name.to_string(),
            what,
        };
        if entry_name.is_empty() {
            // A program is named by its function symbol (contract §4.2: names are what the runtime and users
            // select programs by); an unnamed entry is a malformed object, refused here so that `verify` and
            // `build` (whose metadata needs a 1..63-character name) agree.
            return Err(perr("the entry function's symbol has an empty name".into()));
        }
        let mut order: Vec<(usize, usize)> = vec![entry];
        let mut queued: std::collections::HashSet<(usize, usize)> = std::collections::HashSet::from([entry]);
        let mut bases: HashMap<(usize, usize), usize> = HashMap::new();
        let mut raw: Vec<RawSlot> = Vec::new();
        // (slot of the call in `raw`, callee function, slot offset inside the callee)
        let mut fixups: Vec<(usize, (usize, usize), usize)> = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let (s, f) = order[i];
            i += 1;
            let range = self.sections[s].functions[f].clone();
            let base = raw.len();
            let len = range.end - range.start;
            if base + len > MAX_PROGRAM_SLOTS {
                return Err(perr(format!("more than {MAX_PROGRAM_SLOTS} instructions with its subprograms")));
            }
            if len > self.budget {
                return Err(ElfError::TooLarge(format!(
                    "programs and their subprograms exceed the module budget at '{entry_name}'"
                )));
            }
            self.budget -= len;
            bases.insert((s, f), base);
            raw.extend_from_slice(&self.sections[s].slots[range.start..range.end]);
            if let Some((_, why)) = self.sections[s].unresolved.range(range.start..range.end).next() {
                return Ok(Err(RefusedProgram {
                    name: entry_name.to_string(),
                    section_name: section_name.to_string(),
                    reason: why.clone(),
                }));
            }
            let mut pc = range.start;
            while pc < range.end {
                let slot = self.sections[s].slots[pc];
                if slot.opcode == OPCODE_LDDW {
                    pc += 2;
                    continue;
                }
                if slot.opcode == OPCODE_CALL && slot.src == CALL_SRC_LOCAL {
                    let (tsec_index, target) = self.sections[s]
                        .call_targets
                        .get(&pc)
                        .copied()
                        .unwrap_or((self.sections[s].index, pc as i64 + 1 + i64::from(slot.imm)));
                    let where_ = format!("call at byte {:#x} of '{}'", pc * SLOT_SIZE, self.sections[s].name);
                    let tsec = self
                        .code_index(tsec_index)
                        .ok_or_else(|| perr(format!("{where_} targets a non-executable section")))?;
                    // Functions are sorted and disjoint: the candidate is the last one starting at or before target.
                    let functions = &self.sections[tsec].functions;
                    let callee = functions
                        .partition_point(|g| g.start as i64 <= target)
                        .checked_sub(1)
                        .filter(|&g| target < functions[g].end as i64)
                        .ok_or_else(|| perr(format!("{where_} targets slot {target}, which is in no function")))?;
                    let delta = target as usize - self.sections[tsec].functions[callee].start;
                    if queued.insert((tsec, callee)) {
                        order.push((tsec, callee));
                    }
                    fixups.push((base + pc - range.start, (tsec, callee), delta));
                }
                pc += 1;
            }
        }
        for (at, callee, delta) in fixups {
            let target = bases[&callee] + delta;
            raw[at].imm = (target as i64 - at as i64 - 1) as i32;
        }
        let instructions = isa::decode_slots(&raw).map_err(|source| ElfError::Decode {
            program: entry_name.to_string(),
            section: section_name.to_string(),
            source,
        })?;

        let (functions, line_info) = self.functions_and_lines(&order, &bases, entry_name, section_name)?;
        let core_count = self.core_relocation_count(&order);
        if core_count > 0 {
            self.core_relocations.push(CoreRelocations { program: entry_name.to_string(), count: core_count });
        }
        Ok(Ok(Program {
            name: entry_name.to_string(),
            section_name: section_name.to_string(),
            instructions,
            functions,
            line_info,
        }))
    }
    /// The program's functions at their slots in the laid-out program (`bases`), and their line info.
    fn functions_and_lines(
        &mut self,
        order: &[(usize, usize)],
        bases: &HashMap<(usize, usize), usize>,
        entry_name: &str,
        section_name: &str,
    ) -> Result<(Vec<Function>, Vec<LineInfo>), ElfError> {
        let mut functions = Vec::with_capacity(order.len());
        let mut line_info = Vec::new();
        for &(s, f) in order {
            let range = &self.sections[s].functions[f];
            let base = bases[&(s, f)];
            // Every function becomes a symbol of the driver (contract §5.1), so two of one program's functions may
            // not share a name (a mangled or non-UTF-8 symbol table can make them).
            if functions.iter().any(|g: &Function| g.name == range.name) {
                return Err(ElfError::Program {
                    program: entry_name.to_string(),
                    section: section_name.to_string(),
                    what: format!("two of its functions are named `{}`", range.name),
                });
            }
            functions.push(Function { name: range.name.to_string(), start: base, end: base + range.end - range.start });
            let lines = &self.lines[s];
            let first = lines.partition_point(|(slot, _)| *slot < range.start);
            for (slot, r) in lines[first..].iter().take_while(|(slot, _)| *slot < range.end) {
                let btf = self.object.btf.as_ref().expect("line info implies BTF");
                let file = btf.name(r.file_name_offset).into_owned();
                let source_line = btf.name(r.source_line_offset).into_owned();
                let cost = file.len() + source_line.len() + 64;
                if cost > self.string_budget {
                    return Err(ElfError::TooLarge("line info expands beyond 16 × the object size".into()));
                }
                self.string_budget -= cost;
                line_info.push(LineInfo {
                    slot: base + slot - range.start,
                    file,
                    line: r.line,
                    column: r.column,
                    source_line,
                });
            }
        }
        line_info.sort_by_key(|l| l.slot);
        Ok((functions, line_info))
    }

    /// The number of CO-RE relocations in the functions of one program.
    fn core_relocation_count(&self, order: &[(usize, usize)]) -> usize {
        order
            .iter()
            .map(|&(s, f)| {
                let range = &self.sections[s].functions[f];
                let slots = &self.core_slots[s];
                slots.partition_point(|&slot| slot < range.end) - slots.partition_point(|&slot| slot < range.start)
            })
            .sum()
    }
}

/// The entry programs of an object: those that build, and those that reach an undefined symbol.
pub(crate) struct BuiltPrograms {
    pub programs: Vec<Program>,
    pub refused: Vec<RefusedProgram>,
    pub core_relocations: Vec<CoreRelocations>,
}

/// Builds every entry program of the object.
pub(crate) fn build(object: &Object, layout: &MapLayout, kfuncs: &[DeclaredKfunc]) -> Result<BuiltPrograms, ElfError> {
    let mut sections = Vec::new();
    for s in &object.sections {
        if s.is_executable() {
            let mut code = code_section(object, s.index)?;
            relocate(object, layout, kfuncs, &mut code)?;
            sections.push(code);
        }
    }
    let mut by_section = records_by_section(object, &object.line_info, |r| r.insn_offset, "line info")?;
    let mut lines = Vec::with_capacity(sections.len());
    for s in &sections {
        let l = by_section.remove(s.name.as_bytes()).unwrap_or_default();
        if let Some((slot, _)) = l.last().filter(|(slot, _)| *slot >= s.slots.len()) {
            return Err(section_error(
                ".BTF.ext",
                format!("line info for '{}' names slot {slot}, past its end", s.name),
            ));
        }
        lines.push(l);
    }
    let mut core_by_section =
        records_by_section(object, &object.core_relocations, |r| r.insn_offset, "CO-RE relocation")?;
    let mut core_slots = Vec::with_capacity(sections.len());
    for s in &sections {
        let slots: Vec<usize> =
            core_by_section.remove(s.name.as_bytes()).unwrap_or_default().into_iter().map(|(slot, _)| slot).collect();
        if let Some(slot) = slots.last().filter(|&&slot| slot >= s.slots.len()) {
            return Err(section_error(
                ".BTF.ext",
                format!("CO-RE relocation for '{}' names slot {slot}, past its end", s.name),
            ));
        }
        core_slots.push(slots);
    }
    let code_slots: usize = sections.iter().map(|s| s.slots.len()).sum();
    // Contract §6: `.text` functions are subprograms when any other executable section has a function.
    let has_non_text = sections.iter().any(|s| s.name != ".text" && !s.functions.is_empty());
    let entries: Vec<(usize, usize)> = sections
        .iter()
        .enumerate()
        .filter(|(_, s)| (s.name != ".text") == has_non_text)
        .flat_map(|(i, s)| (0..s.functions.len()).map(move |f| (i, f)))
        .collect();
    let code_index_of = sections.iter().enumerate().map(|(i, s)| (s.index, i)).collect();
    let mut builder = Builder {
        object,
        code_index_of,
        sections,
        lines,
        budget: MAX_MODULE_SLOTS.max(code_slots.saturating_mul(64)),
        string_budget: object.file_len.saturating_mul(16).saturating_add(1 << 20),
        core_slots,
        core_relocations: Vec::new(),
    };
    let mut built = BuiltPrograms { programs: Vec::new(), refused: Vec::new(), core_relocations: Vec::new() };
    for entry in entries {
        match builder.program(entry)? {
            Ok(p) => built.programs.push(p),
            Err(r) => built.refused.push(r),
        }
    }
    built.core_relocations = builder.core_relocations;
    Ok(built)
}
