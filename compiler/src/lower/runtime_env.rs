//! Everything generated code knows about the eBPF for Windows runtime (contract §2.2, §5.1–5.4): the function
//! shapes, the program's helper table, and the loads through `program_runtime_context_t` — whose layout comes from
//! the shim's [`bpf2sys_runtime_shim::abi`], its one definition.

use std::collections::{BTreeMap, BTreeSet};

use cranelift_codegen::ir::{self, types, AbiParam, InstBuilder, MemFlagsData, Value};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;

use crate::verifier::Verified;

// `program_runtime_context_t` and the runtime-owned arrays it points to (contract §2.2), defined once in the shim.
use bpf2sys_runtime_shim::abi::offsets::{
    GLOBAL_SECTION_DATA_ADDRESS, GLOBAL_SECTION_DATA_STRIDE, HELPER_DATA_ADDRESS, HELPER_DATA_STRIDE, MAP_DATA_ADDRESS,
    MAP_DATA_ARRAY_DATA, RUNTIME_CONTEXT_GLOBAL_VARIABLE_SECTION_DATA as RC_GLOBAL_VARIABLE_SECTION_DATA,
    RUNTIME_CONTEXT_HELPER_DATA as RC_HELPER_DATA, RUNTIME_CONTEXT_MAP_DATA as RC_MAP_DATA,
};
pub use bpf2sys_runtime_shim::abi::MapDataLayout;

/// `program_runtime_context_t.btf_resolved_function_data` and its `btf_resolved_function_data_t` elements
/// (contract §2.2: stride 32, `address` @24).
const RC_BTF_RESOLVED_FUNCTION_DATA: i32 =
    std::mem::offset_of!(bpf2sys_runtime_shim::abi::ProgramRuntimeContext, btf_resolved_function_data) as i32;
const BTF_FUNCTION_DATA_STRIDE: i64 = std::mem::size_of::<bpf2sys_runtime_shim::abi::BtfResolvedFunctionData>() as i64;
const BTF_FUNCTION_DATA_ADDRESS: i32 =
    std::mem::offset_of!(bpf2sys_runtime_shim::abi::BtfResolvedFunctionData, address) as i32;

/// Everything the generated code knows about the eBPF for Windows runtime: the helper table of this program,
/// the `map_data` stride, which global section a map index is, and the function shapes of contract §5.1.
#[derive(Clone, Debug)]
pub struct RuntimeEnvironment {
    /// Helper id → index into `runtime_context->helper_data`.
    helper_index: BTreeMap<u32, u32>,
    /// The program's helper table in index order; 0 marks a sentinel slot (contract §5.2).
    pub helper_ids: Vec<u32>,
    /// Module map index → global-variable section index, for `lddw` map-value references.
    global_section_of_map: BTreeMap<usize, usize>,
    map_data: MapDataLayout,
    /// kfunc id → slot in `runtime_context->btf_resolved_function_data` (`Module::kfunc_table` order).
    kfunc_slot: BTreeMap<u32, u32>,
}

impl RuntimeEnvironment {
    /// The helper table for `program` (contract §5.2): first-appearance order when the module has no
    /// subprograms, otherwise the module-wide list over `programs` (every program of the module) sorted by id
    /// with sentinels for helpers this program does not use.
    pub fn new(program: &Verified, programs: &[Verified], map_data: MapDataLayout) -> Self {
        let module = program.module();
        let used = program.helper_ids();
        let module_has_subprograms = module.programs.iter().any(|p| p.functions.len() > 1);
        let helper_ids: Vec<u32> = if module_has_subprograms {
            let all: BTreeSet<u32> = programs.iter().flat_map(Verified::helper_ids).collect();
            all.into_iter().map(|id| if used.contains(&id) { id } else { 0 }).collect()
        } else {
            used
        };
        let helper_index =
            helper_ids.iter().enumerate().filter(|(_, &id)| id != 0).map(|(i, &id)| (id, i as u32)).collect();
        let global_section_of_map = module.global_sections.iter().enumerate().map(|(g, s)| (s.map_index, g)).collect();
        let kfunc_slot = module.kfunc_table().iter().enumerate().map(|(slot, k)| (k.id, slot as u32)).collect();
        RuntimeEnvironment { helper_index, helper_ids, global_section_of_map, map_data, kfunc_slot }
    }

    /// `fn(context, runtime_context) -> u64` (contract §5.1).
    pub fn entry_signature() -> ir::Signature {
        let mut sig = ir::Signature::new(CallConv::WindowsFastcall);
        sig.params.extend([AbiParam::new(types::I64); 2]);
        sig.returns.push(AbiParam::new(types::I64));
        sig
    }

    /// `fn(r1, r2, r3, r4, r5, r10, context, runtime_context) -> u64` (contract §5.1).
    pub fn local_function_signature() -> ir::Signature {
        let mut sig = ir::Signature::new(CallConv::WindowsFastcall);
        sig.params.extend([AbiParam::new(types::I64); 8]);
        sig.returns.push(AbiParam::new(types::I64));
        sig
    }

    /// `helper_function_t`: `fn(r1, r2, r3, r4, r5, context) -> u64`.
    pub fn helper_signature() -> ir::Signature {
        let mut sig = ir::Signature::new(CallConv::WindowsFastcall);
        sig.params.extend([AbiParam::new(types::I64); 6]);
        sig.returns.push(AbiParam::new(types::I64));
        sig
    }

    fn flags() -> MemFlagsData {
        // Runtime-owned tables are valid, aligned and not modified while the program runs. Their validity does not
        // depend on any check in the program (the runtime context is valid for the whole call and every table entry
        // the code indexes exists), so the loads may move: `can_move` lets Cranelift share them and hoist them out
        // of loops — e.g. a helper's address is loaded once, not on every call in a loop.
        MemFlagsData::trusted().with_readonly().with_can_move()
    }

    /// `runtime_context->helper_data[i].address`.
    /// `runtime_context->btf_resolved_function_data[k].address` (contract §5.3).
    pub(super) fn kfunc_address(&self, b: &mut FunctionBuilder, rc: Value, id: u32) -> Option<Value> {
        let slot = *self.kfunc_slot.get(&id)?;
        let table = b.ins().load(types::I64, Self::flags(), rc, RC_BTF_RESOLVED_FUNCTION_DATA);
        let offset = BTF_FUNCTION_DATA_STRIDE * slot as i64 + BTF_FUNCTION_DATA_ADDRESS as i64;
        Some(b.ins().load(types::I64, Self::flags(), table, offset as i32))
    }

    pub(super) fn helper_address(&self, b: &mut FunctionBuilder, rc: Value, id: u32) -> Option<Value> {
        let index = *self.helper_index.get(&id)?;
        let table = b.ins().load(types::I64, Self::flags(), rc, RC_HELPER_DATA);
        let offset = HELPER_DATA_STRIDE as i64 * index as i64 + HELPER_DATA_ADDRESS as i64;
        Some(b.ins().load(types::I64, Self::flags(), table, offset as i32))
    }

    /// `runtime_context->map_data[m].address`.
    pub(super) fn map_address(&self, b: &mut FunctionBuilder, rc: Value, map: usize) -> Value {
        let table = b.ins().load(types::I64, Self::flags(), rc, RC_MAP_DATA);
        let offset = self.map_data.stride() as i64 * map as i64 + MAP_DATA_ADDRESS as i64;
        b.ins().load(types::I64, Self::flags(), table, offset as i32)
    }

    /// `runtime_context->map_data[m].array_data` (contract §2.2: the value storage of an `ARRAY` map, filled only
    /// for modules reporting 1.4.0 or later); `None` when this runtime's layout has no `array_data`.
    pub(super) fn array_data(&self, b: &mut FunctionBuilder, rc: Value, map: usize) -> Option<Value> {
        if !self.map_data.has_array_data() {
            return None;
        }
        let table = b.ins().load(types::I64, Self::flags(), rc, RC_MAP_DATA);
        let offset = self.map_data.stride() as i64 * map as i64 + MAP_DATA_ARRAY_DATA as i64;
        Some(b.ins().load(types::I64, Self::flags(), table, offset as i32))
    }

    /// `runtime_context->global_variable_section_data[g].address_of_map_value + offset`.
    pub(super) fn global_address(&self, b: &mut FunctionBuilder, rc: Value, map: usize, offset: u32) -> Option<Value> {
        let section = *self.global_section_of_map.get(&map)?;
        let table = b.ins().load(types::I64, Self::flags(), rc, RC_GLOBAL_VARIABLE_SECTION_DATA);
        let entry = GLOBAL_SECTION_DATA_STRIDE as i64 * section as i64 + GLOBAL_SECTION_DATA_ADDRESS as i64;
        let base = b.ins().load(types::I64, Self::flags(), table, entry as i32);
        Some(b.ins().iadd_imm_s(base, offset as i64))
    }
}
