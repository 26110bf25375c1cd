//! The execution half of `bpf2sys run` (x86-64 Linux hosts): inputs checked against the driver's metadata in
//! this process (read without running anything), then the driver loaded and run in a forked child that reports
//! each result over a pipe, so a faulting program ends the child and is reported, not the command.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::FromRawFd;
use std::rc::Rc;

use anyhow::{anyhow, bail, Context, Result};
use bpf2sys::platform::emulated::PlatformExtensions;
use bpf2sys::platform::windows::{verdict_name, WINDOWS};
use bpf2sys::platform::{Guid, ProgramType};
use bpf2sys_emulator::maps::{
    MAP_ARRAY_OF_MAPS, MAP_HASH_OF_MAPS, MAP_PERF_EVENT_ARRAY, MAP_PROG_ARRAY, MAP_QUEUE, MAP_RINGBUF, MAP_STACK,
};
use bpf2sys_emulator::{read_driver_file, Emulator, LoadedModule, MapEntry};
use serde_json::{json, Value};

use super::run::RunInputs;

/// What the run produced: the report, and why it stopped early if a program faulted.
pub struct Outcome {
    pub report: Value,
    pub fault: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `value` as exactly `size` bytes: a number (stored little-endian, as a program's plain load reads it), an
/// IPv4/IPv6 address (network byte order, zero-padded to `size`), `"0x…"` hex bytes in memory order, or an array
/// of byte values.
pub fn encode(value: &Value, size: usize, what: &str) -> Result<Vec<u8>> {
    let bytes = match value {
        Value::Number(n) => {
            let v = n
                .as_u64()
                .or_else(|| n.as_i64().map(|i| i as u64))
                .ok_or_else(|| anyhow!("{what}: {n} is not an integer"))?;
            if size > 8 || (size < 8 && n.as_u64().is_some_and(|u| u >> (8 * size) != 0)) {
                bail!("{what}: {n} does not fit {size} bytes (give larger values as \"0x…\" bytes)");
            }
            v.to_le_bytes()[..size].to_vec()
        }
        Value::String(s) if s.starts_with("0x") => {
            let digits: String = s[2..].chars().filter(|c| !c.is_whitespace() && *c != '_').collect();
            if !digits.len().is_multiple_of(2) || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!("{what}: `{s}` is not an even number of hex digits");
            }
            (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex")).collect()
        }
        Value::String(s) => {
            let ip: IpAddr =
                s.parse().map_err(|_| anyhow!("{what}: `{s}` is neither \"0x…\" bytes nor an IP address"))?;
            let mut b = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            if b.len() > size {
                bail!("{what}: address `{s}` does not fit {size} bytes");
            }
            b.resize(size, 0);
            b
        }
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_u64().filter(|b| *b < 256).map(|b| b as u8))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| anyhow!("{what}: a byte array holds numbers 0..=255"))?,
        other => bail!("{what}: {other} is not a number, \"0x…\" bytes, an address or a byte array"),
    };
    if bytes.len() != size {
        bail!("{what}: {} bytes given, the field holds {size}", bytes.len());
    }
    Ok(bytes)
}

/// The context bytes (without the packet pointers, which the child sets) from the named fields.
fn context_bytes(pt: &ProgramType, fields: &serde_json::Map<String, Value>) -> Result<Vec<u8>> {
    let mut ctx = vec![0u8; pt.context.size.max(0) as usize];
    let pointers = [pt.context.data, pt.context.end, pt.context.meta];
    for (name, value) in fields {
        let Some(f) = pt.context_fields.iter().find(|f| f.name == name) else {
            let names: Vec<&str> = pt.context_fields.iter().map(|f| f.name).collect();
            bail!("`{name}` is not a field of the `{}` context (fields: {})", pt.name, names.join(", "));
        };
        if pointers.contains(&(f.offset as i32)) {
            bail!("context field `{name}` points at the packet: the packet comes from --packet or --pcap");
        }
        let bytes = encode(value, f.size as usize, &format!("context field `{name}`"))?;
        ctx[f.offset as usize..(f.offset + f.size) as usize].copy_from_slice(&bytes);
    }
    Ok(ctx)
}

/// One map store before the run: `(map, key, value)`; queues and stacks take no key.
type MapStore = (String, Vec<u8>, Vec<u8>);

fn map_stores(maps: &[MapEntry], spec: &serde_json::Map<String, Value>) -> Result<Vec<MapStore>> {
    let mut stores = Vec::new();
    for (name, entries) in spec {
        let Some(m) = maps.iter().find(|m| m.name == *name) else {
            let names: Vec<&str> = maps.iter().map(|m| m.name.as_str()).collect();
            bail!("--maps: the driver has no map `{name}` (maps: {})", names.join(", "));
        };
        if matches!(
            m.map_type,
            MAP_PROG_ARRAY | MAP_HASH_OF_MAPS | MAP_ARRAY_OF_MAPS | MAP_RINGBUF | MAP_PERF_EVENT_ARRAY
        ) {
            bail!("--maps: map `{name}` holds programs, maps or records, which the driver's own initial values set");
        }
        let list = entries.as_array().ok_or_else(|| anyhow!("--maps: `{name}` must be a list of {{key, value}}"))?;
        for (i, e) in list.iter().enumerate() {
            let what = format!("--maps: `{name}`[{i}]");
            let keyless = matches!(m.map_type, MAP_QUEUE | MAP_STACK);
            let key = match (keyless, e.get("key")) {
                (true, None) => Vec::new(),
                (true, Some(_)) => bail!("{what}: a queue or stack has no keys; give only `value`"),
                (false, Some(k)) => encode(k, m.key_size as usize, &format!("{what} key"))?,
                (false, None) => bail!("{what}: `key` is missing"),
            };
            let value = e.get("value").ok_or_else(|| anyhow!("{what}: `value` is missing"))?;
            stores.push((name.clone(), key, encode(value, m.value_size as usize, &format!("{what} value"))?));
        }
    }
    Ok(stores)
}

/// Everything the child needs, checked in the parent.
struct Plan {
    program: String,
    program_type: &'static ProgramType,
    context: Vec<u8>,
    packets: Option<Vec<Vec<u8>>>,
    stores: Vec<MapStore>,
}

fn plan(driver: &[u8], program: &str, inputs: &RunInputs) -> Result<Plan> {
    let meta = read_driver_file(driver).context("native-module metadata")?;
    if meta.machine != object::pe::IMAGE_FILE_MACHINE_AMD64 {
        bail!("an ARM64 driver: `run` executes x64 drivers only (ARM64 code needs an instruction emulator, which the CLI does not link)");
    }
    let programs = &meta.metadata.programs;
    let info = programs.iter().find(|p| p.program_name == program).ok_or_else(|| {
        let names: Vec<&str> = programs.iter().map(|p| p.program_name.as_str()).collect();
        anyhow!("the driver has no program `{program}` (programs: {})", names.join(", "))
    })?;
    let guid = Guid::from_bytes(&info.program_type.to_bytes());
    let program_type = WINDOWS
        .program_types
        .iter()
        .find(|t| t.guid == guid)
        .ok_or_else(|| anyhow!("program `{program}` has program type {guid}, which the platform does not know"))?;
    let has_packet = program_type.context.data >= 0;
    if !has_packet && !inputs.packets.is_empty() {
        bail!("`{}` programs have no packet; give their context with --context", program_type.name);
    }
    Ok(Plan {
        program: program.to_string(),
        program_type,
        context: context_bytes(program_type, &inputs.context)?,
        packets: has_packet.then(|| if inputs.packets.is_empty() { vec![Vec::new()] } else { inputs.packets.clone() }),
        stores: map_stores(&meta.metadata.maps, &inputs.maps)?,
    })
}

/// The records each map holds now, for telling which ones an input added.
fn record_counts(module: &LoadedModule) -> Vec<usize> {
    module.maps.iter().map(|m| m.records().len()).collect()
}

/// Runs one input in the child; returns the JSON result line.
fn run_one(module: &LoadedModule, plan: &Plan, index: usize, packet: Option<&[u8]>) -> Result<Value> {
    let before = record_counts(module);
    let mut ctx = plan.context.clone();
    let mut data = packet.map(|p| p.to_vec()).unwrap_or_default();
    if packet.is_some() {
        let c = plan.program_type.context;
        let start = data.as_mut_ptr() as u64;
        ctx[c.data as usize..c.data as usize + 8].copy_from_slice(&start.to_le_bytes());
        ctx[c.end as usize..c.end as usize + 8].copy_from_slice(&(start + data.len() as u64).to_le_bytes());
        if c.meta >= 0 {
            ctx[c.meta as usize..c.meta as usize + 8].copy_from_slice(&start.to_le_bytes());
        }
    }
    let (r0, state) = module.invoke(&plan.program, &mut ctx).map_err(|e| anyhow!("{e}"))?;
    let after = record_counts(module);
    let mut records = Vec::new();
    for (m, (b, a)) in module.maps.iter().zip(before.iter().zip(&after)) {
        for r in m.records().iter().skip(*b).take(a - b) {
            records.push(json!({"map": m.name, "data": hex(r)}));
        }
    }
    Ok(json!({
        "input": index,
        "r0": r0,
        "verdict": verdict_name(plan.program_type.name, r0),
        "trace": state.trace,
        "records": records,
        "packet_after": packet.map(|_| hex(&data)),
    }))
}

fn describe_maps(module: &LoadedModule) -> Value {
    let name_of = |address: u64| module.maps.iter().find(|m| Rc::as_ptr(m) as u64 == address).map(|m| m.name.clone());
    let program_of = |index: u32| module.programs.get(index as usize).map(|p| p.info.program_name.clone());
    let int = |b: &[u8]| (b.len() <= 8).then(|| b.iter().rev().fold(0u64, |v, x| v << 8 | u64::from(*x)));
    let maps: Vec<Value> = module
        .maps
        .iter()
        .map(|m| {
            let t = m.definition.map_type;
            let entries: Vec<Value> = m
                .entries()
                .into_iter()
                .filter(|(_, v)| !(matches!(t, 2 | 5) && v.iter().all(|b| *b == 0)))
                .map(|(k, v)| match t {
                    MAP_PROG_ARRAY => {
                        json!({"key": hex(&k), "key_int": int(&k), "program": program_of(int(&v).unwrap_or(0) as u32)})
                    }
                    MAP_HASH_OF_MAPS | MAP_ARRAY_OF_MAPS => {
                        json!({"key": hex(&k), "key_int": int(&k), "map": name_of(int(&v).unwrap_or(0))})
                    }
                    _ => json!({"key": hex(&k), "key_int": int(&k), "value": hex(&v), "value_int": int(&v)}),
                })
                .collect();
            json!({
                "name": m.name,
                "type": WINDOWS.map_type_name(t),
                "entries": entries,
                "values": m.records().iter().map(|r| hex(r)).collect::<Vec<_>>(),
            })
        })
        .collect();
    Value::Array(maps)
}

/// The child: load, store the map entries, run every input; one JSON line per event on `out`.
fn child(driver: &[u8], plan: &Plan, out: &mut std::fs::File) -> Result<()> {
    let mut emulator = Emulator::new(Rc::new(PlatformExtensions(&WINDOWS)));
    let module = emulator.load(driver).map_err(|e| anyhow!("the emulated runtime refused the driver: {e}"))?;
    for (name, key, value) in &plan.stores {
        let map = module.map(name).expect("checked against the metadata");
        let status = map.update(key, value, 0);
        if status != 0 {
            bail!("--maps: storing into `{name}` failed with {status}");
        }
    }
    let inputs: Vec<Option<&[u8]>> = match &plan.packets {
        Some(packets) => packets.iter().map(|p| Some(p.as_slice())).collect(),
        None => vec![None],
    };
    for (i, packet) in inputs.into_iter().enumerate() {
        writeln!(out, "{}", json!({"start": i}))?;
        let result = run_one(&module, plan, i, packet)?;
        writeln!(out, "{}", json!({"result": result}))?;
    }
    writeln!(out, "{}", json!({"maps": describe_maps(&module)}))?;
    Ok(())
}

/// Checks the inputs, runs them in a forked child and assembles the report.
pub fn run_in_child(driver: &[u8], program: &str, inputs: &RunInputs) -> Result<Outcome> {
    let plan = plan(driver, program, inputs)?;
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: this process is single-threaded here (the CLI starts no threads), so the child may run Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: the write end, owned by the child from here on.
        let mut out = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        let code = match child(driver, &plan, &mut out) {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(out, "{}", json!({"error": super::common::one_line(&e)}));
                3
            }
        };
        drop(out);
        // SAFETY: leave without running the parent's exit handlers or flushing its buffers twice.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: the parent closes its copy of the write end and owns the read end.
    unsafe { libc::close(fds[1]) };
    let mut text = String::new();
    unsafe { std::fs::File::from_raw_fd(fds[0]) }.read_to_string(&mut text).context("reading the run's results")?;
    let mut status = 0i32;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assemble(&plan, &text, status)
}

fn assemble(plan: &Plan, text: &str, status: i32) -> Result<Outcome> {
    let (mut results, mut maps, mut started) = (Vec::new(), Value::Null, None);
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).context("the run's child wrote a malformed result")?;
        if let Some(e) = event.get("error").and_then(Value::as_str) {
            bail!("{e}");
        }
        if let Some(i) = event.get("start") {
            started = i.as_u64();
        } else if let Some(r) = event.get("result") {
            results.push(r.clone());
        } else if let Some(m) = event.get("maps") {
            maps = m.clone();
        }
    }
    let report =
        json!({"program": plan.program, "program_type": plan.program_type.name, "runs": results, "maps": maps});
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        let input = started.map_or("while loading".to_string(), |i| format!("on input {i}"));
        let fault = format!(
            "program `{}` faulted {input} (signal {signal}); verified code should not fault: please report it",
            plan.program
        );
        return Ok(Outcome { report, fault: Some(fault) });
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("the run's child ended with status {status:#x}");
    }
    Ok(Outcome { report, fault: None })
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Human-readable rendering of the report.
pub fn render_text(r: &Value) -> String {
    let mut o = String::new();
    let empty = Vec::new();
    let arr = |v: &Value| v.as_array().unwrap_or(&empty).clone();
    let _ = writeln!(o, "program {} ({})", s(&r["program"]), s(&r["program_type"]));
    for run in arr(&r["runs"]) {
        let verdict = if run["verdict"].is_null() { String::new() } else { format!(" {}", s(&run["verdict"])) };
        let _ = writeln!(o, "  input {}: r0 = {}{verdict}", run["input"], run["r0"]);
        for t in arr(&run["trace"]) {
            let _ = writeln!(o, "    trace: {}", s(&t));
        }
        for rec in arr(&run["records"]) {
            let _ = writeln!(o, "    record to {}: {}", s(&rec["map"]), s(&rec["data"]));
        }
    }
    for m in arr(&r["maps"]) {
        let _ = writeln!(o, "map {} ({})", s(&m["name"]), s(&m["type"]));
        for e in arr(&m["entries"]) {
            let target =
                ["value", "program", "map"].iter().map(|k| &e[*k]).find(|v| !v.is_null()).map(s).unwrap_or_default();
            let _ = writeln!(o, "  {} = {}", s(&e["key"]), target);
        }
        for v in arr(&m["values"]) {
            let _ = writeln!(o, "  {}", s(&v));
        }
    }
    o
}
