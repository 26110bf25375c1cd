//! The benchmark programs that are real eBPF for Windows programs (issue 16: `flowtrack`, `tailchain`,
//! `bindpolicy`): a program type and section, maps, helpers by id and a context, built as a user's build does
//! (`driver::Session`: load, verify, lower). Their input buffer holds the context's data, and the host sets up what
//! user mode would before the first run (map contents, program arrays), as described per program in
//! [`RUNTIME_PROGRAMS`].
//!
//! Two engines run them: the generated x64 code with the native baseline's own C maps, helpers and tail-call loop
//! ([`super::host_c`]), and the reference interpreter with their Rust port ([`super::maps`]). Both follow tail
//! calls as `ebpf_program_invoke` does (contract §3.4): a tail call records the next program, which runs when the
//! current one returns.

use std::ffi::c_void;
use std::path::Path;

use bpf2sys::compiled::CompiledProgram;
use bpf2sys::driver::{Session, SessionOptions};
use bpf2sys::interp::memory::{Access, Memory, RegionId};
use bpf2sys::interp::{HelperArgs, HelperOutcome, Host, HostError, Interpreter};
use bpf2sys::isa::{Imm64Kind, Instruction};
use bpf2sys::program::{MapType, Module};
use bpf2sys_runtime_shim::RuntimeVersion;

use super::host_c::{self, CMaps, NativeEntry};
use super::maps::{BenchMap, TailCallState};
use crate::native::{HostRuntime, NativeProgram};

/// The context a program runs on, built from the benchmark input's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextKind {
    /// `xdp_md_t` whose packet is the whole data (`data`, `data_end`; contract §7.2).
    XdpOverData,
    /// `bind_md_t`: the first 64 bytes of the data.
    BindAtDataStart,
}

/// What the host does for one program before its first run, and how it calls it.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeProgram {
    pub name: &'static str,
    pub context: ContextKind,
    /// Maps user mode fills from the input: (map name, offset in the data of `max_entries` values).
    pub map_contents: &'static [(&'static str, usize)],
    /// Program arrays user mode fills: (map name, [(slot, program name)]).
    pub program_arrays: &'static [(&'static str, &'static [(usize, &'static str)])],
}

/// The size of the context `BindAtDataStart` copies (`bind_md_t` padded to 8 bytes).
const BIND_CONTEXT_SIZE: usize = 64;

/// The programs; each runs its object's first program (ELF order) as the entry.
pub const RUNTIME_PROGRAMS: &[RuntimeProgram] = &[
    RuntimeProgram { name: "flowtrack", context: ContextKind::XdpOverData, map_contents: &[], program_arrays: &[] },
    RuntimeProgram {
        name: "tailchain",
        context: ContextKind::XdpOverData,
        map_contents: &[],
        program_arrays: &[("chain_programs", &[(1, "chain_l3"), (2, "chain_l4")])],
    },
    RuntimeProgram {
        name: "bindpolicy",
        context: ContextKind::BindAtDataStart,
        map_contents: &[("port_rules", 64), ("process_rules", 64 + 8 * 1024)],
        program_arrays: &[],
    },
];

/// The entry of [`RUNTIME_PROGRAMS`] named `name`.
pub fn runtime_program(name: &str) -> Option<&'static RuntimeProgram> {
    RUNTIME_PROGRAMS.iter().find(|p| p.name == name)
}

/// Why a runtime program could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeProgramError {
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Build(#[from] bpf2sys::driver::DriverError),
    #[error("{0}")]
    Map(#[from] super::maps::UnsupportedMap),
    #[error("loading the machine code: {0}")]
    Native(#[from] crate::native::NativeError),
    #[error("{program}: {message}")]
    Setup { program: String, message: String },
}

fn setup_error(program: &str, message: impl Into<String>) -> RuntimeProgramError {
    RuntimeProgramError::Setup { program: program.to_string(), message: message.into() }
}

/// The runtime the bench builds these programs for, as `bpf2sys build --runtime-version 1.4.0` does: eBPF for
/// Windows v1.4 and later fill `map_data[m].array_data`, so lookups in one proven `ARRAY` map are inlined
/// (contract §2.2, §5.2), as bpf2c does for those runtimes. The portable default (1.3.0) calls the helper instead.
pub const BENCH_RUNTIME_VERSION: RuntimeVersion = RuntimeVersion::MAP_DATA_V2;

/// Loads and verifies the object as `bpf2sys build --runtime-version 1.4.0` does ([`BENCH_RUNTIME_VERSION`]); the
/// module and the session that lowers it.
pub fn load_verified(object_path: &Path) -> Result<(Session, Module), RuntimeProgramError> {
    let bytes =
        std::fs::read(object_path).map_err(|e| RuntimeProgramError::Io(object_path.display().to_string(), e))?;
    let name = object_path.file_name().and_then(|n| n.to_str()).unwrap_or("bench.o").to_string();
    let session = Session::new(SessionOptions { runtime_version: BENCH_RUNTIME_VERSION, ..SessionOptions::default() })?;
    let module = session.load(&bytes, &name)?;
    Ok((session, module))
}

/// Verifies and lowers every program of the module (x64), as a user's build does.
pub fn compile(session: &Session, module: &Module) -> Result<Vec<CompiledProgram>, RuntimeProgramError> {
    let verified = session.verify(&module.name, module)?;
    Ok(session.lower(&module.name, &verified)?)
}

/// The (map index, slot, program index) entries user mode writes into program arrays before the first run.
pub fn program_array_entries(
    spec: &RuntimeProgram,
    module: &Module,
) -> Result<Vec<(usize, usize, usize)>, RuntimeProgramError> {
    let mut entries = Vec::new();
    for &(array, slots) in spec.program_arrays {
        let m = module
            .maps
            .iter()
            .position(|m| m.name == array)
            .ok_or_else(|| setup_error(spec.name, format!("no map `{array}`")))?;
        for &(slot, program) in slots {
            let index = module
                .programs
                .iter()
                .position(|p| p.name == program)
                .ok_or_else(|| setup_error(spec.name, format!("no program `{program}` for `{array}`")))?;
            entries.push((m, slot, index));
        }
    }
    Ok(entries)
}

/// The module's maps, program arrays filled as user mode would.
fn create_maps(spec: &RuntimeProgram, module: &Module) -> Result<Vec<BenchMap>, RuntimeProgramError> {
    let mut maps = module
        .maps
        .iter()
        .map(|m| BenchMap::new(m.map_type.0, m.key_size, m.value_size, m.max_entries))
        .collect::<Result<Vec<_>, _>>()?;
    for (m, slot, program) in program_array_entries(spec, module)? {
        maps[m].set_program(slot, program).map_err(|e| setup_error(spec.name, format!("map {m}[{slot}]: {e}")))?;
    }
    Ok(maps)
}

/// One update user mode makes before the first run: (map index, key, value).
pub type MapUpdate = (usize, Vec<u8>, Vec<u8>);

/// The updates user mode makes from the input before the first run.
pub fn initial_updates(
    spec: &RuntimeProgram,
    module: &Module,
    data: &[u8],
) -> Result<Vec<MapUpdate>, RuntimeProgramError> {
    let mut updates = Vec::new();
    for &(name, offset) in spec.map_contents {
        let m = module
            .maps
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| setup_error(spec.name, format!("no map `{name}`")))?;
        let def = &module.maps[m];
        let vs = def.value_size as usize;
        for i in 0..def.max_entries as usize {
            let value = data
                .get(offset + i * vs..offset + (i + 1) * vs)
                .ok_or_else(|| setup_error(spec.name, format!("the input has no value {i} of `{name}`")))?;
            updates.push((m, (i as u32).to_le_bytes().to_vec(), value.to_vec()));
        }
    }
    Ok(updates)
}

/// The context bytes for `data` (the input after its header) located at address `data_address`.
pub fn context_bytes(kind: ContextKind, data: &[u8], data_address: u64) -> Vec<u8> {
    match kind {
        ContextKind::XdpOverData => {
            let mut ctx = vec![0u8; 32];
            ctx[0..8].copy_from_slice(&data_address.to_le_bytes());
            ctx[8..16].copy_from_slice(&(data_address + data.len() as u64).to_le_bytes());
            ctx
        }
        ContextKind::BindAtDataStart => data[..BIND_CONTEXT_SIZE.min(data.len())].to_vec(),
    }
}

/// The module's maps in the C host, filled as user mode would from `data` (the input after its header); program
/// arrays are left for the engine, whose tail-call loop decides what a slot holds ([`program_array_entries`]).
pub fn c_maps(spec: &RuntimeProgram, module: &Module, data: &[u8]) -> Result<CMaps, RuntimeProgramError> {
    let mut maps = CMaps::new(module.maps.iter().map(|m| (m.map_type.0, m.key_size, m.value_size, m.max_entries)))?;
    for (m, key, value) in initial_updates(spec, module, data)? {
        if maps.update(m, &key, &value, 0) != 0 {
            return Err(setup_error(spec.name, format!("filling map {m} failed")));
        }
    }
    Ok(maps)
}

/// Program `index`'s bytecode with every map reference replaced by the map's host address, as a loader that
/// hands programs map pointers does (for engines without map relocations: rbpf). Only single-function programs.
pub fn relocated_bytecode(module: &Module, index: usize, addresses: &[u64]) -> Result<Vec<u8>, RuntimeProgramError> {
    let program = &module.programs[index];
    if program.functions.len() != 1 {
        return Err(setup_error(&program.name, "bpf-to-bpf calls are not relocated for rbpf"));
    }
    let mut instructions = program.instructions.clone();
    for insn in &mut instructions {
        if let Instruction::LoadImm64 { dst, kind: Imm64Kind::MapIndex | Imm64Kind::MapFd, imm, .. } = *insn {
            let address =
                *addresses.get(imm as usize).ok_or_else(|| setup_error(&program.name, format!("no map {imm}")))?;
            *insn = Instruction::LoadImm64 {
                dst,
                kind: Imm64Kind::Imm,
                imm: address as u32 as i32,
                next_imm: (address >> 32) as u32 as i32,
            };
        } else if let Instruction::LoadImm64 { kind, .. } = insn {
            if *kind != Imm64Kind::Imm {
                return Err(setup_error(&program.name, format!("a `lddw` of kind {} is not relocated", kind.name())));
            }
        }
    }
    Ok(bpf2sys::isa::encode_bytes(&instructions))
}

/// A runtime program as bpf2sys-generated x64 code with the C host's maps and helpers, ready to run.
pub struct NativeRuntimeBench {
    // Referred to by the entries (code and runtime contexts) and the program arrays.
    _programs: Vec<NativeProgram>,
    /// Program `i`'s entry and runtime context; program arrays hold their addresses.
    entries: Box<[NativeEntry]>,
    // Referred to by address from the programs' map_data.
    _maps: CMaps,
    /// The 64-byte context header the runtime keeps in front of every context (contract §3.4), then the context.
    context: Vec<u64>,
}

impl NativeRuntimeBench {
    /// Compiles the object and sets up maps and the context for `input` (`u32 len; u32 pad; data`), which must
    /// outlive every run (an XDP context points into it).
    pub fn load(spec: &RuntimeProgram, object_path: &Path, input: &mut [u8]) -> Result<Self, RuntimeProgramError> {
        let (session, module) = load_verified(object_path)?;
        let compiled = compile(&session, &module)?;
        Self::from_compiled(spec, &module, &compiled, session.lower_options().map_data, input)
    }

    /// [`NativeRuntimeBench::load`] from already compiled programs.
    pub fn from_compiled(
        spec: &RuntimeProgram,
        module: &Module,
        compiled: &[CompiledProgram],
        layout: bpf2sys::lower::MapDataLayout,
        input: &mut [u8],
    ) -> Result<Self, RuntimeProgramError> {
        let data_address = input[8..].as_mut_ptr() as u64;
        let data = &input[8..];
        let mut maps = c_maps(spec, module, data)?;
        let addresses: Vec<u64> = (0..module.maps.len()).map(|m| maps.address(m)).collect();
        let runtimes = compiled
            .iter()
            .map(|c| {
                let mut runtime =
                    HostRuntime::new(&c.helper_ids, &host_c::win64::helper, &addresses, layout, Vec::new());
                // `array_data` of every ARRAY map, as the runtime fills it for modules from 1.4.0 (contract §3.3).
                for (m, def) in module.maps.iter().enumerate() {
                    if def.map_type == MapType::ARRAY {
                        runtime.set_array_data(m, maps.value_range(m).start as *mut u8);
                    }
                }
                runtime
            })
            .collect();
        // One mapping laid out as in the driver image (`NativeProgram::load_module` says why tail calls need it).
        let programs = NativeProgram::load_module(compiled, runtimes)?;
        let entries: Box<[NativeEntry]> =
            programs.iter().map(|p| NativeEntry { entry: p.entry(), runtime_context: p.runtime().context() }).collect();
        for (m, slot, program) in program_array_entries(spec, module)? {
            maps.set_program(m, slot as u32, &entries[program] as *const NativeEntry as usize);
        }
        let ctx = context_bytes(spec.context, data, data_address);
        let mut context = vec![0u64; 8 + ctx.len().div_ceil(8)];
        for (i, chunk) in ctx.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            context[8 + i] = u64::from_le_bytes(word);
        }
        Ok(NativeRuntimeBench { _programs: programs, entries, _maps: maps, context })
    }

    /// Runs the entry program, then every program it tail-calls (the native baseline's loop); r0 of the last.
    ///
    /// # Safety
    /// The input given to `load` must still be alive and unmoved; the programs were verified for the context.
    pub unsafe fn run(&mut self) -> u64 {
        let ctx = self.context[8..].as_mut_ptr() as *mut c_void;
        // SAFETY: guaranteed by the caller; the entries' runtime contexts bind this bench's maps and the C helpers.
        unsafe { host_c::invoke_native(&self.entries[0], ctx) }
    }
}

/// The interpreter's view of the benchmark host: the same maps, values in memory regions, map handles as opaque
/// numbers.
struct InterpMaps {
    maps: Vec<BenchMap>,
    values: Vec<RegionId>,
    state: TailCallState,
}

/// What a `lddw` of map `m` yields: a number no region covers, which only helpers read.
const MAP_HANDLE_BASE: u64 = 0x4d41_5000_0000_0000;

impl InterpMaps {
    fn map_index(&self, handle: u64) -> Result<usize, HostError> {
        handle
            .checked_sub(MAP_HANDLE_BASE)
            .map(|m| m as usize)
            .filter(|&m| m < self.maps.len())
            .ok_or_else(|| HostError::Failed(format!("{handle:#x} is not a map")))
    }
}

impl Host for InterpMaps {
    fn call_helper(&mut self, id: i32, args: HelperArgs, memory: &mut Memory) -> Result<HelperOutcome, HostError> {
        let m = self.map_index(args.arg(if id == 5 { 2 } else { 1 })?)?;
        let (ks, vs) = (self.maps[m].key_size as usize, self.maps[m].value_size as usize);
        let result = match id {
            1 => {
                let key = memory.read(args.arg(2)?, ks)?.to_vec();
                self.maps[m].lookup(&key).map_or(0, |slot| self.values[m].base() + (slot * vs) as u64)
            }
            2 => {
                let key = memory.read(args.arg(2)?, ks)?.to_vec();
                let value = memory.read(args.arg(3)?, vs)?.to_vec();
                match self.maps[m].update_slot(&key, args.arg(4)?) {
                    Ok(slot) => {
                        memory.write(self.values[m].base() + (slot * vs) as u64, &value)?;
                        0
                    }
                    Err(e) => e as u64,
                }
            }
            3 => {
                let key = memory.read(args.arg(2)?, ks)?.to_vec();
                self.maps[m].delete(&key) as u64
            }
            5 => {
                let program = self.maps[m].program(args.arg(3)?);
                self.state.tail_call(program) as u64
            }
            _ => return Err(HostError::UnknownHelper { id }),
        };
        Ok(HelperOutcome::Return(result))
    }

    fn resolve_load_imm64(
        &mut self,
        kind: Imm64Kind,
        imm: i32,
        next_imm: i32,
        _memory: &mut Memory,
    ) -> Result<u64, HostError> {
        match kind {
            Imm64Kind::MapIndex | Imm64Kind::MapFd if (imm as usize) < self.maps.len() => {
                Ok(MAP_HANDLE_BASE + imm as u64)
            }
            _ => Err(HostError::UnresolvedLoad {
                kind: kind.name(),
                imm,
                next_imm,
                reason: "the benchmark host resolves map references only".into(),
            }),
        }
    }
}

/// A runtime program on the reference interpreter, with the same maps and setup.
pub struct InterpRuntimeBench {
    programs: Vec<Vec<Instruction>>,
    memory: Memory,
    context: RegionId,
    host: InterpMaps,
}

impl InterpRuntimeBench {
    pub fn load(spec: &RuntimeProgram, object_path: &Path, input: &[u8]) -> Result<Self, RuntimeProgramError> {
        let (_, module) = load_verified(object_path)?;
        let data = &input[8..];
        let maps = create_maps(spec, &module)?;
        let mut memory = Memory::new();
        let values: Vec<RegionId> = module
            .maps
            .iter()
            .zip(&maps)
            .map(|(def, map)| {
                memory.add_region(format!("map `{}` values", def.name), vec![0; map.value_bytes()], Access::ReadWrite)
            })
            .collect();
        let mut host = InterpMaps { maps, values, state: TailCallState::default() };
        for (m, key, value) in initial_updates(spec, &module, data)? {
            let vs = value.len();
            let slot =
                host.maps[m].update_slot(&key, 0).map_err(|e| setup_error(spec.name, format!("map {m}: {e}")))?;
            memory
                .write(host.values[m].base() + (slot * vs) as u64, &value)
                .map_err(|e| setup_error(spec.name, e.to_string()))?;
        }
        let packet = memory.add_region("packet", data.to_vec(), Access::ReadWrite);
        let context = memory.add_region("context", context_bytes(spec.context, data, packet.base()), Access::ReadWrite);
        let programs = module.programs.into_iter().map(|p| p.instructions).collect();
        Ok(InterpRuntimeBench { programs, memory, context, host })
    }

    /// Runs the entry program, then every program it tail-calls; r0 of the last.
    pub fn run(&mut self) -> Result<u64, String> {
        self.host.state = TailCallState::default();
        let mut index = 0;
        loop {
            self.host.state.next = None;
            let r = Interpreter::new(&self.programs[index])
                .run(&[self.context.base()], &mut self.memory, &mut self.host)
                .map_err(|e| e.to_string())?;
            match self.host.state.next.take() {
                Some(next) => index = next,
                None => return Ok(r),
            }
        }
    }
}
