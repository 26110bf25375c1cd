//! rbpf 0.4.1 as a peer: its interpreter, its x86-64 JIT and its Cranelift JIT, on the raw bytecode with
//! r1 = the input buffer (rbpf does not set r2; no benchmark program reads it).

use anyhow::anyhow;
use bpf2sys_tests::bench::timing::{self, Mode};
use bpf2sys_tests::bench::{host_c, input, runtime_programs};

use super::{compile_times, CellOutcome};

/// Which of rbpf's three execution engines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RbpfEngine {
    Jit,
    Cranelift,
    Interpreter,
}

/// Helper #1 in rbpf's helper signature, for its interpreter. rbpf passes the eBPF registers r1..r5.
fn lookup(_map: u64, key: u64, _r3: u64, _r4: u64, _r5: u64) -> u64 {
    // SAFETY: the benchmark program passes a pointer to a 4-byte key on its stack.
    unsafe { input::lookup_helper(key) }
}

/// Helper #1 for rbpf's JITs: the same fixed machine code bpf2sys's engine calls (`input::machine_code`), so
/// `maplookup` compares the generated code, not where the linker happened to put each engine's helper.
fn jit_lookup() -> rbpf::ebpf::Helper {
    let helper: extern "C" fn(u64, u64, u64, u64, u64) -> u64 = input::machine_code::bpf2sys_bench_lookup_sysv;
    // SAFETY: rbpf's JITs call a helper from generated code with the System V convention, which is exactly how
    // this one is written; only rbpf's interpreter calls it as a Rust function, and it gets `lookup` instead.
    unsafe { std::mem::transmute::<extern "C" fn(u64, u64, u64, u64, u64) -> u64, rbpf::ebpf::Helper>(helper) }
}

fn new_vm(code: &[u8], engine: RbpfEngine) -> anyhow::Result<rbpf::EbpfVmRaw<'_>> {
    let mut vm = rbpf::EbpfVmRaw::new(Some(code)).map_err(|e| anyhow!("rbpf rejected the program: {e}"))?;
    let helper = if engine == RbpfEngine::Interpreter { lookup } else { jit_lookup() };
    vm.register_helper(1, helper).map_err(|e| anyhow!("registering helper 1: {e}"))?;
    // The interpreter checks every access; the helper hands out pointers into the host's table.
    vm.register_allowed_memory(input::helper_table().value_range());
    Ok(vm)
}

pub(super) fn measure(
    engine: RbpfEngine,
    code: &[u8],
    buffer: &mut [u8],
    expected: u64,
    mode: Mode,
) -> anyhow::Result<CellOutcome> {
    let compile_runs = if mode == Mode::Quick { 3 } else { 11 };
    let mut outcome = CellOutcome::default();
    let mut vm = new_vm(code, engine)?;
    match engine {
        RbpfEngine::Jit => {
            let (cold, median) = compile_times(compile_runs, || {
                new_vm(code, engine)?.jit_compile().map_err(|e| anyhow!("jit_compile: {e}"))
            })?;
            (outcome.compile_cold_us, outcome.compile_median_us) = (Some(cold), Some(median));
            vm.jit_compile().map_err(|e| anyhow!("jit_compile: {e}"))?;
        }
        RbpfEngine::Cranelift => {
            let (cold, median) = compile_times(compile_runs, || {
                new_vm(code, engine)?.cranelift_compile().map_err(|e| anyhow!("cranelift_compile: {e}"))
            })?;
            (outcome.compile_cold_us, outcome.compile_median_us) = (Some(cold), Some(median));
            vm.cranelift_compile().map_err(|e| anyhow!("cranelift_compile: {e}"))?;
        }
        RbpfEngine::Interpreter => {}
    }
    let ptr = buffer.as_mut_ptr();
    let len = buffer.len();
    let result = timing::measure(mode, expected, || {
        // rbpf ties the memory borrow to the VM's lifetime; each call gets its own view of the one buffer, and no
        // other reference to it is alive while the program runs.
        let mem = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        let r = match engine {
            RbpfEngine::Jit => unsafe { vm.execute_program_jit(mem) },
            RbpfEngine::Cranelift => vm.execute_program_cranelift(mem),
            RbpfEngine::Interpreter => vm.execute_program(mem),
        };
        r.map_err(|e| e.to_string())
    });
    match result {
        Ok(m) => outcome.measurement = Some(m),
        Err(e) => outcome.error = Some(e.to_string()),
    }
    Ok(outcome)
}

/// The helpers of the real benchmark programs for `engine`: the C host's (`host_c`), the native baseline's own
/// code. rbpf's JITs call them in the System V convention they are written in; its interpreter calls helpers as
/// Rust functions, so it gets Rust wrappers around the same functions.
fn runtime_helpers(engine: RbpfEngine) -> [(u32, rbpf::ebpf::Helper); 4] {
    use host_c::sysv::*;
    if engine == RbpfEngine::Interpreter {
        fn lookup(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
            bench_sysv_map_lookup_elem(a, b, c, d, e)
        }
        fn update(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
            bench_sysv_map_update_elem(a, b, c, d, e)
        }
        fn delete(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
            bench_sysv_map_delete_elem(a, b, c, d, e)
        }
        fn tail(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
            bench_sysv_tail_call(a, b, c, d, e)
        }
        return [(1, lookup), (2, update), (3, delete), (5, tail)];
    }
    type SysV = extern "C" fn(u64, u64, u64, u64, u64) -> u64;
    // SAFETY: rbpf's JITs call helpers with the System V convention these are written in (see `jit_lookup`).
    HELPERS.map(|(id, f)| (id, unsafe { std::mem::transmute::<SysV, rbpf::ebpf::Helper>(f) }))
}

fn runtime_vm<'a>(
    code: &'a [u8],
    engine: RbpfEngine,
    allowed: &[std::ops::Range<u64>],
) -> anyhow::Result<rbpf::EbpfVmRaw<'a>> {
    let mut vm = rbpf::EbpfVmRaw::new(Some(code)).map_err(|e| anyhow!("rbpf rejected the program: {e}"))?;
    for (id, helper) in runtime_helpers(engine) {
        vm.register_helper(id, helper).map_err(|e| anyhow!("registering helper {id}: {e}"))?;
    }
    for range in allowed {
        vm.register_allowed_memory(range.clone());
    }
    Ok(vm)
}

/// A real benchmark program (maps, tail calls; `runtime_programs`) on rbpf: its map references relocated to the
/// harness's maps (rbpf has no map relocations), the C host's maps and helpers as for bpf2sys's engine and the
/// native baseline, and the runtime's tail-call loop around rbpf's single-program VMs (program arrays hold
/// `host_c::program_token`s).
pub(super) fn measure_runtime(
    engine: RbpfEngine,
    spec: &runtime_programs::RuntimeProgram,
    object_path: &std::path::Path,
    input: &mut [u8],
    expected: u64,
    mode: Mode,
) -> anyhow::Result<CellOutcome> {
    let (_, module) = runtime_programs::load_verified(object_path)?;
    let data_start = input[8..].as_mut_ptr() as u64;
    let data_len = input.len() as u64 - 8;
    let mut maps = runtime_programs::c_maps(spec, &module, &input[8..])?;
    for (m, slot, program) in runtime_programs::program_array_entries(spec, &module)? {
        maps.set_program(m, slot as u32, host_c::program_token(program));
    }
    let addresses: Vec<u64> = (0..module.maps.len()).map(|m| maps.address(m)).collect();
    let codes = (0..module.programs.len())
        .map(|i| runtime_programs::relocated_bytecode(&module, i, &addresses))
        .collect::<Result<Vec<_>, _>>()?;
    // The interpreter checks every access: allow the packet and every map's values.
    let allowed: Vec<std::ops::Range<u64>> = std::iter::once(data_start..data_start + data_len)
        .chain((0..module.maps.len()).map(|m| maps.value_range(m)))
        .collect();
    let new_vm = |code| runtime_vm(code, engine, &allowed);
    let compile_runs = if mode == Mode::Quick { 3 } else { 11 };
    let mut outcome = CellOutcome::default();
    let compile = |vm: &mut rbpf::EbpfVmRaw<'_>| match engine {
        RbpfEngine::Jit => vm.jit_compile().map_err(|e| anyhow!("jit_compile: {e}")),
        RbpfEngine::Cranelift => vm.cranelift_compile().map_err(|e| anyhow!("cranelift_compile: {e}")),
        RbpfEngine::Interpreter => Ok(()),
    };
    if engine != RbpfEngine::Interpreter {
        let (cold, median) = compile_times(compile_runs, || {
            for code in &codes {
                compile(&mut new_vm(code)?)?;
            }
            Ok(())
        })?;
        (outcome.compile_cold_us, outcome.compile_median_us) = (Some(cold), Some(median));
    }
    let mut vms = Vec::new();
    for code in &codes {
        let mut vm = new_vm(code)?;
        compile(&mut vm)?;
        vms.push(vm);
    }
    let mut context = runtime_programs::context_bytes(spec.context, &input[8..], data_start);
    let (ptr, len) = (context.as_mut_ptr(), context.len());
    let result = timing::measure(mode, expected, || {
        host_c::tail_call_reset();
        let mut index = 0;
        loop {
            // rbpf ties the memory borrow to the VM's lifetime; each call gets its own view of the one context.
            let mem = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
            let vm = &vms[index];
            let r = match engine {
                RbpfEngine::Jit => unsafe { vm.execute_program_jit(mem) },
                RbpfEngine::Cranelift => vm.execute_program_cranelift(mem),
                RbpfEngine::Interpreter => vm.execute_program(mem),
            }
            .map_err(|e| e.to_string())?;
            match host_c::tail_call_take() {
                Some(n) => index = n,
                None => return Ok(r),
            }
        }
    });
    match result {
        Ok(m) => outcome.measurement = Some(m),
        Err(e) => outcome.error = Some(e.to_string()),
    }
    drop(vms);
    drop(maps);
    Ok(outcome)
}
