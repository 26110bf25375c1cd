//! rbpf 0.4.1 as a peer: its interpreter, its x86-64 JIT and its Cranelift JIT, on the raw bytecode with
//! r1 = the input buffer (rbpf does not set r2; no benchmark program reads it).

use anyhow::anyhow;
use bpf2sys_tests::bench::input;
use bpf2sys_tests::bench::timing::{self, Mode};

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
