//! The program's functions as the front end delimited them (ELF symbols, contract §1.2) against its control
//! flow: every jump stays inside the function it is in, every local call lands on a function's first slot, and
//! no function runs off its end into the next.
//!
//! The abstract interpretation follows edges without regard to function boundaries, while lowering compiles
//! each function separately and must refuse such a program as malformed; checking it here keeps the verdicts of
//! `verify` and `build` the same (issue 17 #3).

use crate::isa::Instruction;
use crate::program::Function;

use super::{Failure, Property};

/// Checks the functions' boundaries. Targets outside the program are left to the CFG builder, which reports
/// them with the whole program's bounds.
pub(super) fn check_function_boundaries(program: &[Instruction], functions: &[Function]) -> Result<(), Failure> {
    let cf = |pc: usize, message: String| Failure { pc, property: Property::ControlFlow, message, values: vec![] };
    let n = program.len();
    for function in functions {
        let name = if function.name.is_empty() { "<entry>" } else { function.name.as_str() };
        let (start, end) = (function.start, function.end.min(n));
        let mut last = None;
        for (pc, insn) in program.iter().enumerate().take(end).skip(start) {
            if matches!(insn, Instruction::LoadImm64Continuation) {
                continue;
            }
            last = Some(pc);
            let Some(target) = insn.jump_target(pc) else { continue };
            if target < 0 || target as usize >= n {
                continue;
            }
            let target = target as usize;
            if matches!(insn, Instruction::CallLocal { .. }) {
                if !functions.iter().any(|f| f.start == target) {
                    return Err(cf(pc, format!("local call target {target} is not the first slot of a function")));
                }
            } else if !(start..end).contains(&target) {
                return Err(cf(pc, format!("jump target {target} leaves function `{name}` (slots {start}..{end})")));
            }
        }
        if let Some(pc) = last {
            if program[pc].falls_through() && pc + program[pc].slots().max(1) >= end && end < n {
                return Err(cf(pc, format!("control falls off the end of function `{name}` into the next function")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{AluOp, Operand, Reg, Width};

    fn mov0() -> Instruction {
        Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::new(0).unwrap(), src: Operand::Imm(0) }
    }

    fn functions(bounds: &[(usize, usize)]) -> Vec<Function> {
        bounds.iter().enumerate().map(|(i, &(start, end))| Function { name: format!("f{i}"), start, end }).collect()
    }

    #[test]
    fn a_jump_into_another_function_is_rejected() {
        // f0: goto +2 (into f1's body); exit | f1: r0 = 0; r0 = 0; exit
        let program =
            vec![Instruction::Jump { offset: 2, long: false }, Instruction::Exit, mov0(), mov0(), Instruction::Exit];
        let f = check_function_boundaries(&program, &functions(&[(0, 2), (2, 5)])).unwrap_err();
        assert_eq!((f.pc, f.property), (0, Property::ControlFlow));
        assert!(f.message.contains("jump target 3 leaves function `f0` (slots 0..2)"), "{}", f.message);
    }

    #[test]
    fn a_call_into_the_middle_of_a_function_is_rejected() {
        let program = vec![Instruction::CallLocal { offset: 2 }, Instruction::Exit, mov0(), mov0(), Instruction::Exit];
        let f = check_function_boundaries(&program, &functions(&[(0, 2), (2, 5)])).unwrap_err();
        assert!(f.message.contains("local call target 3 is not the first slot"), "{}", f.message);
        let program = vec![Instruction::CallLocal { offset: 1 }, Instruction::Exit, mov0(), mov0(), Instruction::Exit];
        check_function_boundaries(&program, &functions(&[(0, 2), (2, 5)])).expect("call to f1's first slot");
    }

    #[test]
    fn falling_off_a_function_into_the_next_is_rejected() {
        let program = vec![mov0(), mov0(), mov0(), Instruction::Exit];
        let f = check_function_boundaries(&program, &functions(&[(0, 2), (2, 4)])).unwrap_err();
        assert_eq!(f.pc, 1);
        assert!(f.message.contains("falls off the end of function `f0`"), "{}", f.message);
        check_function_boundaries(&program, &functions(&[(0, 4)])).expect("one function");
    }
}
