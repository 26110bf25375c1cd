//! `bpf2sys inspect <obj> [--format text|json]`: what an eBPF object contains, as the front end reads it (a
//! driver image goes to [`super::inspect_sys`]).
//!
//! Programs with their ELF section, program and attach type (from the platform's section table, contract
//! §7.1), instruction counts, functions, helpers used, the relocations the loader applied (map and global
//! references, subprogram calls), and the disassembly interleaved with source lines from BTF line info; then the
//! module's maps, global-variable sections and map initial values.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use bpf2sys::elf;
use bpf2sys::isa::{disasm, Imm64Kind, Instruction};
use bpf2sys::platform::Platform;
use bpf2sys::program::{MapDefinition, Module, Pinning, Program};
use serde_json::{json, Value};

use super::common::{file_name, report_items as arr, report_text as s, InputLimit, OutputFormat, PlatformArg};

#[derive(clap::Args)]
pub struct Args {
    /// The eBPF ELF object (clang -target bpf), or a driver image (.sys) bpf2sys built.
    object: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
    /// Platform whose conventions (map-type numbering, legacy map records) and program types apply.
    #[arg(long, value_enum, default_value_t = PlatformArg::Windows)]
    platform: PlatformArg,
    #[command(flatten)]
    input: InputLimit,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let bytes = args.input.read(&args.object)?;
    // A driver image (PE, `MZ`) is read back through the native-module contract instead.
    if bytes.starts_with(b"MZ") {
        let report = super::inspect_sys::describe_driver(&file_name(&args.object), &bytes)
            .with_context(|| args.object.display().to_string())?;
        match args.format {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            OutputFormat::Text => print!("{}", super::inspect_sys::render_text(&report)),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let platform = args.platform.platform();
    let module = elf::load_with(&bytes, &file_name(&args.object), platform.conventions)
        .with_context(|| args.object.display().to_string())?;
    for c in &module.core_relocations {
        eprintln!("warning: {}: {}", args.object.display(), c.warning());
    }
    let report = describe_for(&module, platform);
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print!("{}", render_text(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

/// A relocation the loader applied, recovered from the instruction it rewrote.
fn relocations(module: &Module, program: &Program) -> Vec<Value> {
    let map_name = |i: i32| module.maps.get(i as usize).map_or("<invalid>", |m| m.name.as_str());
    let mut out = Vec::new();
    for (slot, insn) in program.instructions.iter().enumerate() {
        match *insn {
            Instruction::LoadImm64 { kind: Imm64Kind::MapIndex, imm, .. } => {
                out.push(json!({"slot": slot, "kind": "map", "map": imm, "map_name": map_name(imm)}))
            }
            Instruction::LoadImm64 { kind: Imm64Kind::MapIndexValue, imm, next_imm, .. } => out.push(json!({
                "slot": slot, "kind": "global", "map": imm, "map_name": map_name(imm), "offset": next_imm
            })),
            Instruction::CallBtf { btf_id, .. } => {
                let name = module.kfuncs.iter().find(|k| i64::from(k.id) == i64::from(btf_id)).map(|k| k.name.as_str());
                out.push(json!({"slot": slot, "kind": "kfunc", "kfunc": btf_id, "function": name}))
            }
            Instruction::CallLocal { offset } => {
                let target = slot as i64 + 1 + i64::from(offset);
                let function = program
                    .functions
                    .iter()
                    .find(|f| target >= f.start as i64 && target < f.end as i64)
                    .map_or("<none>", |f| f.name.as_str());
                out.push(json!({"slot": slot, "kind": "call", "target": target, "function": function}));
            }
            _ => {}
        }
    }
    out
}

fn helper_ids(program: &Program) -> Vec<u32> {
    let mut ids: Vec<u32> = program
        .instructions
        .iter()
        .filter_map(|i| match *i {
            Instruction::CallHelper { id } => Some(id as u32),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn describe_program(module: &Module, program: &Program, platform: &'static Platform) -> Value {
    let types = platform.program_type_for_section(&program.section_name);
    let helpers: Vec<Value> = helper_ids(program)
        .into_iter()
        .map(|id| {
            let proto = match types {
                Some((pt, _)) => platform.helper(pt, id),
                None => platform.global_helpers.iter().find(|h| h.id == id),
            };
            json!({"id": id, "name": proto.map(|p| p.name)})
        })
        .collect();
    let relocations = relocations(module, program);
    let mut maps_referenced: Vec<i64> = relocations.iter().filter_map(|r| r["map"].as_i64()).collect();
    maps_referenced.sort_unstable();
    maps_referenced.dedup();
    let mut lines = program.line_info.iter().peekable();
    let mut disassembly = Vec::new();
    for (slot, insn) in program.instructions.iter().enumerate() {
        let mut source = Value::Null;
        while let Some(l) = lines.next_if(|l| l.slot <= slot) {
            if l.slot == slot {
                source = json!({"file": l.file, "line": l.line, "column": l.column, "text": l.source_line});
            }
        }
        if let Some(text) = disasm::format_instruction(insn) {
            let function = program.functions.iter().find(|f| f.start == slot).map(|f| f.name.as_str());
            // Absolute slot of a jump or local-call target, to read control flow without counting.
            let target = insn.jump_target(slot);
            disassembly.push(json!({
                "slot": slot, "text": text, "source": source, "function_start": function, "target": target
            }));
        }
    }
    let entry_len = program.functions.first().map_or(program.instructions.len(), |f| f.end - f.start);
    json!({
        "name": program.name,
        "section": program.section_name,
        "program_type": types.map(|(pt, _)| json!({"name": pt.name, "guid": pt.guid.to_string()})),
        "attach_type": types.map(|(_, at)| json!({"name": at.name, "guid": at.guid.to_string()})),
        "instruction_count": program.instructions.len(),
        "entry_instruction_count": entry_len,
        "functions": program.functions.iter().map(|f| json!({"name": f.name, "start": f.start, "end": f.end})).collect::<Vec<_>>(),
        "helpers": helpers,
        "kfuncs": program.kfunc_ids().into_iter().collect::<Vec<_>>(),
        "maps_referenced": maps_referenced,
        "relocations": relocations,
        "line_info_count": program.line_info.len(),
        // CO-RE relocations are reported, not applied (bpf2sys::program::CoreRelocations).
        "core_relocation_count": module.core_relocations.iter().find(|c| c.program == program.name).map_or(0, |c| c.count),
        "disassembly": disassembly,
    })
}

fn describe_map(module: &Module, index: usize, map: &MapDefinition, platform: &Platform) -> Value {
    json!({
        "index": index,
        "name": map.name,
        "type": platform.map_type_name(map.map_type.0),
        "type_id": map.map_type.0,
        "key_size": map.key_size,
        "value_size": map.value_size,
        "max_entries": map.max_entries,
        "inner_map": map.inner_map_index.and_then(|i| module.maps.get(i)).map(|m| m.name.as_str()),
        "pinning": match map.pinning { Pinning::None => "none", Pinning::ByName => "by_name" },
        "id": map.id,
        "inner_id": map.inner_id,
    })
}

/// The whole report as JSON (the text form is rendered from it, so both always agree).
pub fn describe_for(module: &Module, platform: &'static Platform) -> Value {
    let mut sections: Vec<Value> = Vec::new();
    for p in &module.programs {
        match sections.iter_mut().find(|s| s["name"] == p.section_name.as_str()) {
            Some(s) => s["programs"].as_array_mut().expect("programs is an array").push(json!(p.name)),
            None => sections.push(json!({"name": p.section_name, "programs": [p.name]})),
        }
    }
    let map_name = |i: usize| module.maps.get(i).map_or("<invalid>", |m| m.name.as_str());
    json!({
        "module": module.name,
        "sections": sections,
        "programs": module.programs.iter().map(|p| describe_program(module, p, platform)).collect::<Vec<_>>(),
        "refused_programs": module.refused_programs.iter().map(|r| json!({
            "name": r.name, "section": r.section_name, "reason": r.reason
        })).collect::<Vec<_>>(),
        "maps": module.maps.iter().enumerate().map(|(i, m)| describe_map(module, i, m, platform)).collect::<Vec<_>>(),
        "legacy_map_records": module.legacy_map_records.iter().map(|r| json!({
            "map": map_name(r.map_index), "section": r.section, "offset": r.offset, "record_size": r.record_size,
            "layout": r.layout.name(), "inner_slot": r.inner_slot
        })).collect::<Vec<_>>(),
        // The btf_resolved_functions table in slot order (contract §5.3).
        "kfuncs": module.kfunc_table().iter().enumerate().map(|(slot, k)| json!({
            "slot": slot, "id": k.id, "name": k.name, "module_guid": k.module_guid.map(|g| g.to_string()),
            "weak": k.weak
        })).collect::<Vec<_>>(),
        "global_sections": module.global_sections.iter().map(|g| json!({
            "section": g.section_name, "kind": format!("{:?}", g.kind).to_lowercase(), "map": map_name(g.map_index),
            "size": g.initial_data.len()
        })).collect::<Vec<_>>(),
        "map_initial_values": module.map_initial_values.iter().map(|v| json!({
            "map": map_name(v.map_index), "values": v.values
        })).collect::<Vec<_>>(),
    })
}

/// Human-readable rendering of [`describe_for`]'s report.
pub fn render_text(r: &Value) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "module {}", s(&r["module"]));
    let maps = arr(&r["maps"]);
    let _ = writeln!(o, "\nmaps ({}):", maps.len());
    for m in maps {
        let _ = writeln!(
            o,
            "  [{}] {} {} key {} value {} max_entries {} pinning {} id {}{}",
            m["index"],
            s(&m["name"]),
            s(&m["type"]),
            m["key_size"],
            m["value_size"],
            m["max_entries"],
            s(&m["pinning"]),
            m["id"],
            if m["inner_map"].is_null() { String::new() } else { format!(" inner {}", s(&m["inner_map"])) }
        );
    }
    for g in arr(&r["global_sections"]) {
        let _ = writeln!(o, "  global section {} -> map {} ({} bytes)", s(&g["section"]), s(&g["map"]), g["size"]);
    }
    for l in arr(&r["legacy_map_records"]) {
        let _ = writeln!(
            o,
            "  legacy record {} at {}+{} ({} bytes, {})",
            s(&l["map"]),
            s(&l["section"]),
            l["offset"],
            l["record_size"],
            s(&l["layout"])
        );
    }
    for k in arr(&r["kfuncs"]) {
        let _ = writeln!(
            o,
            "  kfunc slot {}: {} (module {}, id {})",
            k["slot"],
            s(&k["name"]),
            s(&k["module_guid"]),
            k["id"]
        );
    }
    for p in arr(&r["refused_programs"]) {
        let _ = writeln!(o, "  refused program {} (section {}): {}", s(&p["name"]), s(&p["section"]), s(&p["reason"]));
    }
    for v in arr(&r["map_initial_values"]) {
        let values: Vec<String> = arr(&v["values"]).iter().map(s).collect();
        let _ = writeln!(o, "  initial values of {}: [{}]", s(&v["map"]), values.join(", "));
    }
    let sections = arr(&r["sections"]);
    let _ = writeln!(o, "\nsections ({}):", sections.len());
    for sec in sections {
        let progs: Vec<String> = arr(&sec["programs"]).iter().map(s).collect();
        let _ = writeln!(o, "  {}: {}", s(&sec["name"]), progs.join(", "));
    }
    for p in arr(&r["programs"]) {
        render_program(&mut o, p);
    }
    o
}

/// One program of [`render_text`]: types, sizes, functions, helpers, relocations and the disassembly with source.
fn render_program(o: &mut String, p: &Value) {
    let _ = writeln!(o, "\nprogram {} (section {})", s(&p["name"]), s(&p["section"]));
    let ty = |v: &Value| {
        if v.is_null() {
            "unknown".to_string()
        } else {
            format!("{} {}", s(&v["name"]), s(&v["guid"]))
        }
    };
    let _ = writeln!(o, "  program type: {}", ty(&p["program_type"]));
    let _ = writeln!(o, "  attach type:  {}", ty(&p["attach_type"]));
    let _ = writeln!(
        o,
        "  instructions: {} slots ({} in the entry function)",
        p["instruction_count"], p["entry_instruction_count"]
    );
    let functions: Vec<String> =
        arr(&p["functions"]).iter().map(|f| format!("{} [{}..{})", s(&f["name"]), f["start"], f["end"])).collect();
    let _ = writeln!(o, "  functions: {}", functions.join(", "));
    let helpers: Vec<String> = arr(&p["helpers"]).iter().map(|h| format!("{} {}", h["id"], s(&h["name"]))).collect();
    let _ = writeln!(o, "  helpers: {}", if helpers.is_empty() { "none".into() } else { helpers.join(", ") });
    if p["core_relocation_count"].as_u64().is_some_and(|n| n > 0) {
        let _ = writeln!(o, "  CO-RE relocations: {} (not applied)", p["core_relocation_count"]);
    }
    let relocs = arr(&p["relocations"]);
    let _ = writeln!(o, "  relocations ({}):", relocs.len());
    for rel in relocs {
        let _ = match rel["kind"].as_str() {
            Some("map") => writeln!(o, "    slot {}: map {} ({})", rel["slot"], rel["map"], s(&rel["map_name"])),
            Some("global") => writeln!(
                o,
                "    slot {}: global data {} + {} (map {})",
                rel["slot"],
                s(&rel["map_name"]),
                rel["offset"],
                rel["map"]
            ),
            Some("kfunc") => {
                writeln!(o, "    slot {}: kfunc {} (id {})", rel["slot"], s(&rel["function"]), rel["kfunc"])
            }
            _ => writeln!(o, "    slot {}: call {} at slot {}", rel["slot"], s(&rel["function"]), rel["target"]),
        };
    }
    let _ = writeln!(o, "  disassembly:");
    let mut last_line: Option<(String, u64)> = None;
    for d in arr(&p["disassembly"]) {
        if let Some(f) = d["function_start"].as_str() {
            let _ = writeln!(o, "  <{f}>:");
        }
        let src = &d["source"];
        // Line 0 marks compiler-generated code with no source line (DWARF convention).
        if !src.is_null() && src["line"].as_u64() != Some(0) {
            let key = (s(&src["file"]), src["line"].as_u64().unwrap_or(0));
            if last_line.as_ref() != Some(&key) {
                let _ = writeln!(o, "    ; {}:{}:{}", key.0, key.1, src["column"]);
                let text = s(&src["text"]);
                if !text.trim().is_empty() {
                    let _ = writeln!(o, "    ;   {}", text.trim_end());
                }
                last_line = Some(key);
            }
        }
        let target = d["target"].as_i64().map_or(String::new(), |t| format!("  ; -> {t}"));
        let _ = writeln!(o, "    {:>5}: {}{target}", s(&d["slot"]), s(&d["text"]));
    }
}
