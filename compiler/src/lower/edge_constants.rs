//! Constants a conditional branch passes to a block parameter, materialized on the branch's own edge.
//!
//! `branchy`'s `if (st != 2) { st = 2; words++; }`, with the loop's latch copied into the path (`latch_copy`), ends
//! in `brif i < n, head(2, …), exit(…)` after `icmp ne st, 2`, where `st` is `head`'s parameter. Cranelift's e-graph
//! gives both 2s one value and elaborates it where the block first needs it, before the compare, while `st`'s
//! register still holds the old value: the constant takes another register and the back edge moves it
//! (`mov $2,%eax` … `cmp $2,%r13` … `mov %rax,%r13`), where clang writes `movl $2,%ebx` on the way back. The edge
//! is critical (a two-way branch into a block with other predecessors), so Cranelift splits it for its moves
//! anyway; [`constants_on_edges`] makes that split explicit in the IR and defines the constants there. Cranelift
//! rematerializes constants in every block that uses them (`remat.isle`), so the branch's block keeps its copy for
//! the compare (an immediate on x64) and the edge block writes the parameter's register directly, after the old
//! value's last use.
//!
//! Only edges whose target parameter the branch's block reads are split: that read is what keeps the parameter's
//! register busy when the constant is made. Semantics are unchanged: the edge block only re-creates constants and
//! jumps on with the same arguments.

use cranelift_codegen::cursor::{Cursor, FuncCursor};
use cranelift_codegen::entity::SecondaryMap;
use cranelift_codegen::ir::{
    Block, BlockArg, BlockCall, Function, Inst, InstBuilder, InstBuilderBase, InstructionData, Opcode, Value, ValueDef,
};

/// Splits each edge of a `brif` into a block with more than one predecessor that passes a constant to a parameter
/// the branching block also reads, defining the edge's constant arguments in the new block; returns how many edges
/// it split.
pub fn constants_on_edges(func: &mut Function) -> usize {
    let predecessors = predecessor_counts(func);
    let mut edges = Vec::new();
    for block in func.layout.blocks() {
        let Some(branch) = func.layout.last_inst(block) else { continue };
        let InstructionData::Brif { blocks, .. } = func.dfg.insts[branch] else { continue };
        for (side, call) in blocks.iter().enumerate() {
            let target = call.block(&func.dfg.value_lists);
            if predecessors[target] > 1 && passes_read_parameter_a_constant(func, block, *call) {
                edges.push((block, branch, side));
            }
        }
    }
    for &(block, branch, side) in &edges {
        let dfg = &func.dfg;
        let call = dfg.insts[branch].branch_destination(&dfg.jump_tables, &dfg.exception_tables)[side];
        split_edge(func, block, branch, side, call);
    }
    edges.len()
}

/// How many branch edges enter each block (a `brif` with both ways to one block counts twice).
fn predecessor_counts(func: &Function) -> SecondaryMap<Block, u32> {
    let mut counts = SecondaryMap::new();
    for block in func.layout.blocks() {
        let Some(last) = func.layout.last_inst(block) else { continue };
        let dfg = &func.dfg;
        for call in dfg.insts[last].branch_destination(&dfg.jump_tables, &dfg.exception_tables) {
            counts[call.block(&dfg.value_lists)] += 1;
        }
    }
    counts
}

/// The `iconst` that defines `arg`, if one does.
fn constant_arg(func: &Function, arg: BlockArg) -> Option<Inst> {
    let v = func.dfg.resolve_aliases(arg.as_value()?);
    let ValueDef::Result(inst, 0) = func.dfg.value_def(v) else { return None };
    matches!(func.dfg.insts[inst], InstructionData::UnaryImm { opcode: Opcode::Iconst, .. }).then_some(inst)
}

/// Whether `call` passes a constant to a parameter of its target that an instruction of `block` other than its
/// terminator reads.
fn passes_read_parameter_a_constant(func: &Function, block: Block, call: BlockCall) -> bool {
    let target = call.block(&func.dfg.value_lists);
    let params = func.dfg.block_params(target);
    let read: Vec<Value> = call
        .args(&func.dfg.value_lists)
        .zip(params)
        .filter(|&(arg, _)| constant_arg(func, arg).is_some())
        .map(|(_, &param)| param)
        .collect();
    if read.is_empty() {
        return false;
    }
    let terminator = func.layout.last_inst(block);
    func.layout
        .block_insts(block)
        .filter(|&inst| Some(inst) != terminator)
        .any(|inst| func.dfg.inst_values(inst).any(|v| read.contains(&func.dfg.resolve_aliases(v))))
}

/// Sends side `side` of the `brif` `branch` (in `block`), which is `call`, through a new block that defines the
/// edge's constant arguments again and jumps to the old target with them.
fn split_edge(func: &mut Function, block: Block, branch: Inst, side: usize, call: BlockCall) {
    let target = call.block(&func.dfg.value_lists);
    let args: Vec<BlockArg> = call.args(&func.dfg.value_lists).collect();
    let edge = func.dfg.make_block();
    func.layout.insert_block_after(edge, block);
    // Cranelift gives a split edge its target's temperature; an explicit one must be marked so itself.
    if func.layout.is_cold(target) {
        func.layout.set_cold(edge);
    }
    let mut cursor = FuncCursor::new(func).at_bottom(edge);
    let mut new_args = Vec::with_capacity(args.len());
    for arg in args {
        new_args.push(match constant_arg(cursor.func, arg) {
            Some(constant) => {
                let (data, ty) = (cursor.func.dfg.insts[constant], cursor.func.dfg.ctrl_typevar(constant));
                let (copy, dfg) = cursor.ins().build(data, ty);
                BlockArg::Value(dfg.first_result(copy))
            }
            None => arg,
        });
    }
    cursor.ins().jump(target, &new_args);
    let dfg = &mut func.dfg;
    let call = BlockCall::new(edge, [], &mut dfg.value_lists);
    dfg.insts[branch].branch_destination_mut(&mut dfg.jump_tables, &mut dfg.exception_tables)[side] = call;
}

#[cfg(test)]
mod tests {
    use super::*;
    use cranelift_codegen::ir::condcodes::IntCC;
    use cranelift_codegen::ir::{types, AbiParam, Signature, UserFuncName};
    use cranelift_codegen::isa::CallConv;
    use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

    /// `entry(x): jump head(0); head(st): c = st != 2 (or x != 2 when `read_st` is false); brif c, head(2),
    /// exit(st); exit(r): return r` — `branchy`'s letter path in miniature; `head` is cold when `cold_head`.
    fn state_loop(read_st: bool, cold_head: bool) -> Function {
        let mut signature = Signature::new(CallConv::SystemV);
        signature.params.push(AbiParam::new(types::I64));
        signature.returns.push(AbiParam::new(types::I64));
        let mut func = Function::with_name_signature(UserFuncName::testcase("t"), signature);
        let mut context = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut func, &mut context);
        let (entry, head, exit) = (b.create_block(), b.create_block(), b.create_block());
        b.append_block_params_for_function_params(entry);
        let st = b.append_block_param(head, types::I64);
        let r = b.append_block_param(exit, types::I64);
        b.switch_to_block(entry);
        let x = b.block_params(entry)[0];
        let zero = b.ins().iconst(types::I64, 0);
        b.ins().jump(head, &[BlockArg::Value(zero)]);
        b.switch_to_block(head);
        let two = b.ins().iconst(types::I64, 2);
        let compared = if read_st { st } else { x };
        let c = b.ins().icmp(IntCC::NotEqual, compared, two);
        b.ins().brif(c, head, &[BlockArg::Value(two)], exit, &[BlockArg::Value(st)]);
        b.switch_to_block(exit);
        b.ins().return_(&[r]);
        if cold_head {
            b.set_cold_block(head);
        }
        b.seal_all_blocks();
        b.finalize(crate::lower::build_isa(crate::compiled::Target::X64).unwrap().frontend_config());
        func
    }

    #[test]
    fn a_constant_for_a_parameter_the_block_compares_is_defined_on_the_edge() {
        let mut func = state_loop(true, false);
        assert_eq!(constants_on_edges(&mut func), 1);
        let text = func.display().to_string();
        // The back edge goes through a new block that makes the 2 and jumps to the header with it; the exit edge
        // (no constant) is unchanged.
        assert!(text.contains("brif v5, block3, block2(v1)"), "{text}");
        assert!(text.contains("block3:\n    v6 = iconst.i64 2\n    jump block1(v6)"), "{text}");
        cranelift_codegen::verify_function(
            &func,
            &cranelift_codegen::settings::Flags::new(cranelift_codegen::settings::builder()),
        )
        .unwrap();
    }

    #[test]
    fn edges_whose_parameter_the_block_does_not_read_are_left_alone() {
        let mut func = state_loop(false, false);
        let before = func.display().to_string();
        assert_eq!(constants_on_edges(&mut func), 0);
        assert_eq!(func.display().to_string(), before);
    }

    #[test]
    fn an_edge_block_into_a_cold_block_is_cold() {
        for cold in [false, true] {
            let mut func = state_loop(true, cold);
            assert_eq!(constants_on_edges(&mut func), 1);
            // Laid out right after the branching block.
            let edge = func.layout.blocks().nth(2).unwrap();
            assert!(func.display().to_string().contains(&format!("brif v5, {edge}, block2(v1)")));
            assert_eq!(func.layout.is_cold(edge), cold);
        }
    }
}
