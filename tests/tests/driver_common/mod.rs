//! A hand-built module for driver tests that do not depend on the eBPF front end: programs written directly
//! as Cranelift IR with the native-program ABI (contract §5.1: `uint64_t f(void* ctx, const
//! program_runtime_context_t* rc)`, helpers through `rc->helper_data[i].address`, maps through
//! `rc->map_data[m].address`, globals through `rc->global_variable_section_data[g].address_of_map_value`).

#![allow(dead_code)]

use bpf2sys::compiled::{CompiledFunction, CompiledProgram, Target};
use bpf2sys::lower::codegen::{build_isa, compile_ir_function, SymbolTable};
use bpf2sys::program::{
    Function, GlobalSection, GlobalSectionKind, MapDefinition, MapInitialValues, MapType, Module, Pinning, Program,
};
use cranelift_codegen::ir::{
    self, condcodes::IntCC, types, AbiParam, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind,
    UserFuncName,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

const I64: ir::Type = types::I64;

/// XDP actions (eBPF for Windows values, samples/include/bpf2sys.h).
pub const XDP_PASS: u32 = 1;
pub const XDP_DROP: u32 = 2;
pub const XDP_TX: u32 = 3;

/// What a test program does.
#[derive(Clone, Copy)]
pub enum Body {
    /// Counts every packet in `map` (array, key 0, u64) and drops packets longer than `limit`, else passes.
    CountAndDrop { map: u16, limit: i64 },
    /// Tail-calls slot 0 of `prog_array`; returns `XDP_PASS` if the tail call fails.
    TailCall { prog_array: u16 },
    /// Returns a constant.
    Return(i64),
    /// Returns the u32 at `offset` in global section `section`.
    ReadGlobal { section: usize, offset: i32 },
}

fn program_function(name: &str, body: Body, map_stride: i64, target: Target) -> CompiledFunction {
    let isa = build_isa(target).expect("isa");
    let mut sig = Signature::new(CallConv::WindowsFastcall);
    sig.params.push(AbiParam::new(I64));
    sig.params.push(AbiParam::new(I64));
    sig.returns.push(AbiParam::new(I64));
    let mut func = ir::Function::with_name_signature(UserFuncName::testcase(name), sig);
    let mut fctx = FunctionBuilderContext::new();
    let symbols = SymbolTable::new();
    {
        let mut b = FunctionBuilder::new(&mut func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let (ctx, rc) = (b.block_params(entry)[0], b.block_params(entry)[1]);
        let flags = MemFlagsData::trusted();
        let helper = |b: &mut FunctionBuilder, index: i32, args: &[ir::Value]| -> ir::Value {
            let helper_data = b.ins().load(I64, flags, rc, 24);
            let address = b.ins().load(I64, flags, helper_data, 40 * index + 24);
            let mut hsig = Signature::new(CallConv::WindowsFastcall);
            for _ in 0..6 {
                hsig.params.push(AbiParam::new(I64));
            }
            hsig.returns.push(AbiParam::new(I64));
            let sref = b.import_signature(hsig);
            let call = b.ins().call_indirect(sref, address, args);
            b.inst_results(call)[0]
        };
        let map_address = |b: &mut FunctionBuilder, m: u16| -> ir::Value {
            let map_data = b.ins().load(I64, flags, rc, 32);
            b.ins().load(I64, flags, map_data, (map_stride * m as i64 + 24) as i32)
        };
        match body {
            Body::CountAndDrop { map, limit } => {
                let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 8, 3));
                let zero = b.ins().iconst(I64, 0);
                b.ins().stack_store(I64, zero, slot, 0);
                let key = b.ins().stack_addr(I64, slot, 0);
                let m = map_address(&mut b, map);
                let value = helper(&mut b, 0, &[m, key, zero, zero, zero, ctx]);
                let found = b.create_block();
                let decide = b.create_block();
                b.ins().brif(value, found, &[], decide, &[]);
                b.switch_to_block(found);
                let old = b.ins().load(I64, flags, value, 0);
                let new = b.ins().iadd_imm_s(old, 1);
                b.ins().store(flags, new, value, 0);
                b.ins().jump(decide, &[]);
                b.switch_to_block(decide);
                let data = b.ins().load(I64, flags, ctx, 0);
                let end = b.ins().load(I64, flags, ctx, 8);
                let len = b.ins().isub(end, data);
                let long = b.ins().icmp_imm_s(IntCC::SignedGreaterThan, len, limit);
                let drop = b.ins().iconst(I64, XDP_DROP as i64);
                let pass = b.ins().iconst(I64, XDP_PASS as i64);
                let r = b.ins().select(long, drop, pass);
                b.ins().return_(&[r]);
            }
            Body::TailCall { prog_array } => {
                let m = map_address(&mut b, prog_array);
                let zero = b.ins().iconst(I64, 0);
                let r = helper(&mut b, 0, &[ctx, m, zero, zero, zero, ctx]);
                // Contract §5.2: `if (r0 == 0) return 0;` after bpf_tail_call.
                let ok = b.create_block();
                let failed = b.create_block();
                b.ins().brif(r, failed, &[], ok, &[]);
                b.switch_to_block(ok);
                b.ins().return_(&[zero]);
                b.switch_to_block(failed);
                let pass = b.ins().iconst(I64, XDP_PASS as i64);
                b.ins().return_(&[pass]);
            }
            Body::Return(v) => {
                let v = b.ins().iconst(I64, v);
                b.ins().return_(&[v]);
            }
            Body::ReadGlobal { section, offset } => {
                let globals = b.ins().load(I64, flags, rc, 40);
                let base = b.ins().load(I64, flags, globals, 32 * section as i32 + 24);
                let v = b.ins().uload32(flags, base, offset);
                b.ins().return_(&[v]);
            }
        }
        b.seal_all_blocks();
        b.finalize(isa.frontend_config());
    }
    compile_ir_function(&*isa, name, func, &symbols).expect("compiles")
}

fn program(name: &str, section: &str) -> Program {
    Program {
        name: name.into(),
        section_name: section.into(),
        instructions: Vec::new(),
        functions: vec![Function { name: name.into(), start: 0, end: 12 }],
        line_info: Vec::new(),
    }
}

fn map(name: &str, map_type: MapType, key: u32, value: u32, max: u32) -> MapDefinition {
    MapDefinition {
        name: name.into(),
        map_type,
        key_size: key,
        value_size: value,
        max_entries: max,
        inner_map_index: None,
        pinning: Pinning::None,
        id: 0,
        inner_id: 0,
    }
}

/// A module with four programs (deliberately not in name order), four maps and a `.data` section:
/// - `xdp_count` (section `xdp`): counts packets in `packet_count`, drops those longer than 64 bytes;
/// - `xdp_entry` (section `xdp/entry`, shortened to `xdp/en~1`): tail-calls `jump_table[0]`;
/// - `xdp_target` (section `xdp/target`): returns `XDP_TX`;
/// - `global_reader` (section `xdp/global`): returns the second u32 of `.data` (initial value 7).
pub fn test_module(target: Target, map_stride: i64) -> (Module, Vec<CompiledProgram>) {
    let maps = vec![
        map("packet_count", MapType::ARRAY, 4, 8, 1),
        map("jump_table", MapType::PROG_ARRAY, 4, 4, 2),
        MapDefinition { pinning: Pinning::ByName, ..map("pinned_hash", MapType::HASH, 4, 8, 16) },
        map("driver_.data", MapType::ARRAY, 4, 8, 1),
    ];
    let module = Module {
        name: "driver".into(),
        programs: vec![
            program("xdp_count", "xdp"),
            program("xdp_entry", "xdp/entry"),
            program("xdp_target", "xdp/target"),
            program("global_reader", "xdp/global"),
        ],
        maps,
        global_sections: vec![GlobalSection {
            section_name: ".data".into(),
            kind: GlobalSectionKind::Data,
            map_index: 3,
            initial_data: vec![42, 0, 0, 0, 7, 0, 0, 0],
        }],
        map_initial_values: vec![MapInitialValues { map_index: 1, values: vec![Some("xdp_target".into()), None] }],
        ..Module::default()
    };
    let compiled = vec![
        CompiledProgram {
            program_name: "xdp_count".into(),
            functions: vec![program_function(
                "xdp_count",
                Body::CountAndDrop { map: 0, limit: 64 },
                map_stride,
                target,
            )],
            helper_ids: vec![1],
            referenced_maps: vec![0],
        },
        CompiledProgram {
            program_name: "xdp_entry".into(),
            functions: vec![program_function("xdp_entry", Body::TailCall { prog_array: 1 }, map_stride, target)],
            helper_ids: vec![5],
            referenced_maps: vec![1],
        },
        CompiledProgram {
            program_name: "xdp_target".into(),
            functions: vec![program_function("xdp_target", Body::Return(XDP_TX as i64), map_stride, target)],
            helper_ids: vec![],
            referenced_maps: vec![],
        },
        CompiledProgram {
            program_name: "global_reader".into(),
            functions: vec![program_function(
                "global_reader",
                Body::ReadGlobal { section: 0, offset: 4 },
                map_stride,
                target,
            )],
            helper_ids: vec![],
            referenced_maps: vec![3],
        },
    ];
    (module, compiled)
}

/// An IPv4/UDP-looking packet of `len` bytes.
pub fn packet(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}
