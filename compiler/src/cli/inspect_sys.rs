//! `bpf2sys inspect X.sys [--format text|json]`: what a driver image contains, read back through the
//! native-module contract without loading or running it.
//!
//! The metadata comes from the emulated runtime's reader (`bpf2sys_emulator::read_driver_file`: the same checks
//! the runtime makes at load, contract §2.3, and user mode's view, §4.3); the PE facts from the workspace's PE
//! reader (`signing::pe`); the signature from the Authenticode verifier (`signing::verify_pe`, with no trust
//! anchors: it reports who signed and whether the signature is intact, not whether the signer is trusted). The
//! program and map facts use the same keys as `inspect X.o`, so the two reports can be compared field by field.

use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result};
use bpf2sys::platform::windows::WINDOWS;
use bpf2sys::platform::Guid;
use bpf2sys_emulator::{read_driver_file, DriverMetadata, MapEntry, ProgramInfo, UserModeView};
use bpf2sys_signing::pe::PeHeaders;
use bpf2sys_signing::{verify_pe, VerifyOptions};
use serde_json::{json, Value};

use super::common::{report_items as arr, report_text as s};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn machine_name(machine: u16) -> String {
    match machine {
        object::pe::IMAGE_FILE_MACHINE_AMD64 => "x64".into(),
        object::pe::IMAGE_FILE_MACHINE_ARM64 => "arm64".into(),
        other => format!("{other:#06x}"),
    }
}

fn guid(g: &bpf2sys_emulator::Guid) -> Guid {
    Guid::from_bytes(&g.to_bytes())
}

/// `{name, guid}` of a program type, named from the platform when it knows the GUID.
fn program_type(g: &bpf2sys_emulator::Guid) -> Value {
    let name = WINDOWS.program_types.iter().find(|t| t.guid == guid(g)).map(|t| t.name);
    json!({"name": name, "guid": g.to_string()})
}

/// `{name, guid}` of an attach type, named from the platform's section table when it knows the GUID.
fn attach_type(g: &bpf2sys_emulator::Guid) -> Value {
    let name = WINDOWS
        .program_types
        .iter()
        .flat_map(|t| t.section_prefixes.iter())
        .find(|p| p.attach_type.guid == guid(g))
        .map(|p| p.attach_type.name);
    json!({"name": name, "guid": g.to_string()})
}

fn describe_program(p: &ProgramInfo, user: &UserModeView, image_base: u64) -> Value {
    let pt = WINDOWS.program_types.iter().find(|t| t.guid == guid(&p.program_type));
    let helpers: Vec<Value> = p
        .helper_ids
        .iter()
        .zip(&p.helper_names)
        .enumerate()
        .filter(|(_, (id, _))| **id != 0)
        .map(|(slot, (&id, entry_name))| {
            let name = pt.and_then(|pt| WINDOWS.helper(pt, id)).map(|h| h.name);
            json!({"id": id, "name": name, "slot": slot, "entry_name": entry_name})
        })
        .collect();
    let kfuncs: Vec<Value> = p
        .btf_functions
        .iter()
        .enumerate()
        .map(|(slot, (name, module))| {
            let used = !name.is_empty();
            json!({"slot": slot, "name": used.then_some(name), "module_guid": used.then(|| module.to_string())})
        })
        .collect();
    let code_size = user.programs.iter().find(|u| u.program_name == p.program_name).map(|u| u.code_size);
    json!({
        "name": p.program_name,
        "section": p.section_name,
        "pe_section": p.pe_section_name,
        "program_type": program_type(&p.program_type),
        "attach_type": attach_type(&p.expected_attach_type),
        // `bpf_instruction_count`: the entry function's own instructions (contract §2.2).
        "entry_instruction_count": p.instruction_count,
        "helpers": helpers,
        "kfuncs": kfuncs,
        "maps_referenced": p.referenced_maps,
        "program_info_hash": p.program_info_hash.as_deref().map(hex),
        "program_info_hash_type": p.hash_type,
        "function_rva": (p.function as u64).wrapping_sub(image_base),
        "code_size": code_size,
    })
}

fn describe_map(index: usize, m: &MapEntry, maps: &[MapEntry]) -> Value {
    // The inner template: `inner_map_idx` if set, else the map whose `id` is `inner_id` (contract §2.2).
    let inner = if m.inner_map_idx != 0 {
        maps.get(m.inner_map_idx as usize)
    } else if m.inner_id != 0 {
        maps.iter().find(|x| x.id == m.inner_id)
    } else {
        None
    };
    let pinning = match m.pinning {
        0 => "none".to_string(),
        1 => "by_name".to_string(),
        other => format!("unknown ({other})"),
    };
    json!({
        "index": index,
        "name": m.name,
        "type": WINDOWS.map_type_name(m.map_type),
        "type_id": m.map_type,
        "key_size": m.key_size,
        "value_size": m.value_size,
        "max_entries": m.max_entries,
        "inner_map": inner.map(|x| x.name.as_str()),
        "pinning": pinning,
        "id": m.id,
        "inner_id": m.inner_id,
    })
}

/// UTC calendar time of `seconds` since the epoch (Howard Hinnant's `civil_from_days`).
fn utc(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rem = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn describe_pe(bytes: &[u8]) -> Result<Value> {
    let h = PeHeaders::parse(bytes).context("PE headers")?;
    let imports = h.imports(bytes).context("import directory")?;
    let layout = bpf2sys_signing::pe::PeLayout::parse(bytes).ok();
    let sections: Vec<Value> = h
        .sections
        .iter()
        .map(|s| {
            let c = s.characteristics;
            let flag = |bit: u32, ch: char| if c & bit != 0 { ch } else { '-' };
            let access: String = [
                flag(object::pe::IMAGE_SCN_MEM_READ, 'r'),
                flag(object::pe::IMAGE_SCN_MEM_WRITE, 'w'),
                flag(object::pe::IMAGE_SCN_MEM_EXECUTE, 'x'),
            ]
            .into_iter()
            .collect();
            json!({
                "name": s.name, "virtual_address": s.virtual_address, "virtual_size": s.virtual_size,
                "raw_size": s.size_of_raw_data, "characteristics": format!("{c:#010x}"), "access": access,
            })
        })
        .collect();
    Ok(json!({
        "machine": machine_name(h.machine),
        "entry_point_rva": h.address_of_entry_point,
        "size_of_image": h.size_of_image,
        "checksum": {
            "recorded": format!("{:#010x}", h.check_sum),
            "computed": format!("{:#010x}", bpf2sys_signing::pe::pe_checksum(bytes, h.checksum_offset)),
        },
        "sections": sections,
        "imports": imports.iter().map(|m| json!({"dll": m.dll, "functions": m.functions})).collect::<Vec<_>>(),
        "signed": layout.is_some_and(|l| l.is_signed()),
    }))
}

/// The embedded signature, or `null` for an unsigned image.
fn describe_signature(bytes: &[u8]) -> Value {
    let report = verify_pe(bytes, &VerifyOptions::default());
    if !report.signed {
        return Value::Null;
    }
    let timestamp = report.timestamp.as_ref().map(|t| {
        let seconds = t.gen_time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        json!({"time": utc(seconds), "authority": t.tsa_subject})
    });
    json!({
        "signer_subject": report.signer_subject,
        "signer_issuer": report.signer_issuer,
        "chain": report.chain,
        "digest_algorithm": report.digest_algorithm,
        "image_digest": report.image_digest.as_ref().map(|d| hex(d)),
        "timestamp": timestamp,
        "page_hashes": report.page_hash_entries,
        // Without trust anchors: the signature is intact and matches the image; chain trust is not judged.
        "intact": report.problems.is_empty(),
        "problems": report.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    })
}

/// The whole report for a driver image as JSON (the text form is rendered from it).
pub fn describe_driver(name: &str, bytes: &[u8]) -> Result<Value> {
    let pe = describe_pe(bytes)?;
    let DriverMetadata { machine, image_base, metadata, user_mode, .. } =
        read_driver_file(bytes).context("native-module metadata")?;
    let m = &metadata;
    let version = format!("{}.{}.{}", m.version[0], m.version[1], m.version[2]);
    Ok(json!({
        "driver": name,
        "machine": machine_name(machine),
        "runtime_version": version,
        "programs": m.programs.iter().map(|p| describe_program(p, &user_mode, image_base)).collect::<Vec<_>>(),
        "maps": m.maps.iter().enumerate().map(|(i, x)| describe_map(i, x, &m.maps)).collect::<Vec<_>>(),
        "global_sections": m.global_sections.iter().map(|(map, data)| json!({
            "map": map, "size": data.len(), "initial_data": hex(data)
        })).collect::<Vec<_>>(),
        "map_initial_values": m.initial_values.iter().map(|(map, values)| json!({"map": map, "values": values}))
            .collect::<Vec<_>>(),
        "elf_hash": m.elf_hash.as_deref().map(hex),
        "pe": pe,
        "signature": describe_signature(bytes),
    }))
}

/// Human-readable rendering of [`describe_driver`]'s report.
pub fn render_text(r: &Value) -> String {
    let mut o = String::new();
    let _ =
        writeln!(o, "driver {} ({}), runtime version {}", s(&r["driver"]), s(&r["machine"]), s(&r["runtime_version"]));
    let _ = writeln!(o, "ELF hash: {}", s(&r["elf_hash"]));
    let maps = arr(&r["maps"]);
    let _ = writeln!(o, "\nmaps ({}):", maps.len());
    for m in maps {
        let inner = if m["inner_map"].is_null() { String::new() } else { format!(" inner {}", s(&m["inner_map"])) };
        let _ = writeln!(
            o,
            "  [{}] {} {} key {} value {} max_entries {} pinning {} id {}{inner}",
            m["index"],
            s(&m["name"]),
            s(&m["type"]),
            m["key_size"],
            m["value_size"],
            m["max_entries"],
            s(&m["pinning"]),
            m["id"]
        );
    }
    for g in arr(&r["global_sections"]) {
        let _ = writeln!(o, "  global section -> map {} ({} bytes)", s(&g["map"]), g["size"]);
    }
    for v in arr(&r["map_initial_values"]) {
        let values: Vec<String> = arr(&v["values"]).iter().map(s).collect();
        let _ = writeln!(o, "  initial values of {}: [{}]", s(&v["map"]), values.join(", "));
    }
    for p in arr(&r["programs"]) {
        let _ = writeln!(
            o,
            "\nprogram {} (section {}, PE section {})",
            s(&p["name"]),
            s(&p["section"]),
            s(&p["pe_section"])
        );
        let ty = |v: &Value| format!("{} {}", s(&v["name"]), s(&v["guid"]));
        let _ = writeln!(o, "  program type: {}", ty(&p["program_type"]));
        let _ = writeln!(o, "  attach type:  {}", ty(&p["attach_type"]));
        let _ = writeln!(o, "  instructions: {} (entry function)", p["entry_instruction_count"]);
        let _ = writeln!(o, "  code: {} bytes at RVA {:#x}", p["code_size"], p["function_rva"].as_u64().unwrap_or(0));
        let helpers: Vec<String> =
            arr(&p["helpers"]).iter().map(|h| format!("{} {}", h["id"], s(&h["name"]))).collect();
        let _ = writeln!(o, "  helpers: {}", if helpers.is_empty() { "none".into() } else { helpers.join(", ") });
        for k in arr(&p["kfuncs"]).iter().filter(|k| !k["name"].is_null()) {
            let _ = writeln!(o, "  kfunc slot {}: {} (module {})", k["slot"], s(&k["name"]), s(&k["module_guid"]));
        }
        let maps: Vec<String> = arr(&p["maps_referenced"]).iter().map(|m| m.to_string()).collect();
        let _ = writeln!(o, "  maps referenced: [{}]", maps.join(", "));
        let _ = writeln!(o, "  program info hash: {} {}", s(&p["program_info_hash_type"]), s(&p["program_info_hash"]));
    }
    let pe = &r["pe"];
    let _ = writeln!(
        o,
        "\nPE: {} entry RVA {:#x}, checksum {} (computed {})",
        s(&pe["machine"]),
        pe["entry_point_rva"].as_u64().unwrap_or(0),
        s(&pe["checksum"]["recorded"]),
        s(&pe["checksum"]["computed"])
    );
    for sec in arr(&pe["sections"]) {
        let _ = writeln!(
            o,
            "  {:<8} {} RVA {:#08x} size {:#x} raw {:#x}",
            s(&sec["name"]),
            s(&sec["access"]),
            sec["virtual_address"].as_u64().unwrap_or(0),
            sec["virtual_size"].as_u64().unwrap_or(0),
            sec["raw_size"].as_u64().unwrap_or(0)
        );
    }
    for m in arr(&pe["imports"]) {
        let functions: Vec<String> = arr(&m["functions"]).iter().map(s).collect();
        let _ = writeln!(o, "  imports {}: {}", s(&m["dll"]), functions.join(", "));
    }
    let sig = &r["signature"];
    if sig.is_null() {
        let _ = writeln!(o, "\nsignature: none (unsigned)");
    } else {
        let _ = writeln!(o, "\nsignature: {}", if sig["intact"] == true { "intact" } else { "BROKEN" });
        let _ = writeln!(o, "  signer: {}", s(&sig["signer_subject"]));
        let _ = writeln!(o, "  issuer: {}", s(&sig["signer_issuer"]));
        let chain: Vec<String> = arr(&sig["chain"]).iter().map(s).collect();
        let _ = writeln!(o, "  chain: {}", chain.join(" <- "));
        let _ = writeln!(o, "  digest: {} {}", s(&sig["digest_algorithm"]), s(&sig["image_digest"]));
        let ts = &sig["timestamp"];
        let _ = writeln!(
            o,
            "  timestamp: {}",
            if ts.is_null() { "none".into() } else { format!("{} by {}", s(&ts["time"]), s(&ts["authority"])) }
        );
        let _ = writeln!(o, "  page hashes: {}", s(&sig["page_hashes"]));
        for p in arr(&sig["problems"]) {
            let _ = writeln!(o, "  problem: {}", s(p));
        }
    }
    o
}
