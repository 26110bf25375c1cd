//! Inline array lookups (contract §5.2, issue 16 item 2): a `bpf_map_lookup_elem` on the one `ARRAY` map the
//! verifier proved `r1` is becomes `key < max_entries ? map_data[m].array_data + key * value_size : 0` in drivers
//! for runtime 1.4.0 and later. Whole drivers run in the emulated runtime, x64 and ARM64: built for 1.3.0 (the
//! helper call) and for 1.4.0 (inline), they return what the reference interpreter returns for keys in range, at
//! `max_entries - 1`, at `max_entries` and past it, and write the same map slots.

use bpf2sys::compiled::Target;
use bpf2sys::driver::{Session, SessionOptions};
use bpf2sys::interp::memory::{Access, Memory, RegionId};
use bpf2sys::interp::{HelperArgs, HelperOutcome, Host, HostError, Interpreter};
use bpf2sys::isa::{AluOp, Imm64Kind, Instruction as I, JumpCond, MemSize, Operand, Reg, Width};
use bpf2sys::program::{MapDefinition, MapType, Module, Pinning};
use bpf2sys_runtime_shim::RuntimeVersion;
use bpf2sys_tests::emulator;
use bpf2sys_tests::native::module_from_instructions;

const NULL_RESULT: u32 = 0xdead;
const SHORT_PACKET: u32 = 2;

fn alu(op: AluOp, dst: Reg, src: Operand) -> I {
    I::Alu { width: Width::W64, op, dst, src }
}
fn ldx(size: MemSize, dst: Reg, src: Reg, offset: i16) -> I {
    I::Load { size, sign_extend: false, dst, src, offset }
}
fn jif(cond: JumpCond, dst: Reg, src: Operand, offset: i16) -> I {
    I::JumpIf { width: Width::W64, cond, dst, src, offset }
}

/// XDP: the key is the packet's first 4 bytes (or `constant_key`, stored as a constant right before the lookup:
/// lowering then indexes with the constant); `v = lookup(map 0, &key)`; null → `NULL_RESULT`; else `*v += 1` and
/// r0 = the new value (so the result and the map say which slot the pointer addressed).
fn program(constant_key: Option<u32>) -> Vec<I> {
    let (r0, r1, r2, r3, r4, r5) = (Reg::R0, Reg::R1, Reg::R2, Reg::R3, Reg::R4, Reg::R5);
    let mut p = vec![
        ldx(MemSize::DW, r2, r1, 0),
        ldx(MemSize::DW, r3, r1, 8),
        alu(AluOp::Mov, r4, Operand::Reg(r2)),
        alu(AluOp::Add, r4, Operand::Imm(4)),
        jif(JumpCond::Gt, r4, Operand::Reg(r3), 15),
        match constant_key {
            None => ldx(MemSize::W, r5, r2, 0),
            Some(k) => alu(AluOp::Mov, r5, Operand::Imm(k as i32)),
        },
        I::Store { size: MemSize::W, dst: Reg::FP, offset: -4, src: Operand::Reg(r5) },
        I::LoadImm64 { dst: r1, kind: Imm64Kind::MapIndex, imm: 0, next_imm: 0 },
        I::LoadImm64Continuation,
        alu(AluOp::Mov, r2, Operand::Reg(Reg::FP)),
        alu(AluOp::Add, r2, Operand::Imm(-4)),
        I::CallHelper { id: 1 },
        jif(JumpCond::Eq, r0, Operand::Imm(0), 5),
        ldx(MemSize::DW, r3, r0, 0),
        alu(AluOp::Add, r3, Operand::Imm(1)),
        I::Store { size: MemSize::DW, dst: r0, offset: 0, src: Operand::Reg(r3) },
        alu(AluOp::Mov, r0, Operand::Reg(r3)),
        I::Exit,
    ];
    p.extend([alu(AluOp::Mov, r0, Operand::Imm(NULL_RESULT as i32)), I::Exit]);
    p.extend([alu(AluOp::Mov, r0, Operand::Imm(SHORT_PACKET as i32)), I::Exit]);
    p
}

fn module(value_size: u32, max_entries: u32, constant_key: Option<u32>) -> Module {
    let mut m = module_from_instructions("lookup", program(constant_key));
    m.maps = vec![MapDefinition {
        name: "values".into(),
        map_type: MapType::ARRAY,
        key_size: 4,
        value_size,
        max_entries,
        inner_map_index: None,
        pinning: Pinning::None,
        id: 0,
        inner_id: 0,
    }];
    m
}

/// The initial value of slot `i`: distinct per slot, so a result names the slot it came from.
fn initial(i: u32, value_size: u32) -> Vec<u8> {
    let mut v = vec![0u8; value_size as usize];
    v[..8].copy_from_slice(&(1000 * u64::from(i) + 7).to_le_bytes());
    v
}

/// The keys every shape is run with: in range, the last index, `max_entries`, past it, and the top of u32.
fn keys(max_entries: u32) -> Vec<u32> {
    vec![0, max_entries / 2, max_entries - 1, max_entries, max_entries + 1, 0x8000_0000, u32::MAX, 1]
}

/// The reference interpreter with the runtime's array-map semantics: `key < max_entries` finds slot `key`.
struct ArrayHost {
    values: RegionId,
    value_size: u32,
    max_entries: u32,
}

const MAP_HANDLE: u64 = 0x4d41_5000_0000_0000;

impl Host for ArrayHost {
    fn call_helper(&mut self, id: i32, args: HelperArgs, memory: &mut Memory) -> Result<HelperOutcome, HostError> {
        if id != 1 || args.arg(1)? != MAP_HANDLE {
            return Err(HostError::UnknownHelper { id });
        }
        let key = u32::from_le_bytes(memory.read(args.arg(2)?, 4)?.try_into().unwrap());
        let found = key < self.max_entries;
        let address = self.values.base() + u64::from(key) * u64::from(self.value_size);
        Ok(HelperOutcome::Return(if found { address } else { 0 }))
    }

    fn resolve_load_imm64(
        &mut self,
        kind: Imm64Kind,
        imm: i32,
        next_imm: i32,
        _: &mut Memory,
    ) -> Result<u64, HostError> {
        match (kind, imm) {
            (Imm64Kind::MapIndex, 0) => Ok(MAP_HANDLE),
            _ => Err(HostError::UnresolvedLoad { kind: kind.name(), imm, next_imm, reason: "one map".into() }),
        }
    }
}

/// The interpreter's r0 for each key in turn (one map for the whole sequence) and the map's values afterwards.
fn interpreted(module: &Module, keys: &[u32]) -> (Vec<u32>, Vec<Vec<u8>>) {
    let (value_size, max_entries) = (module.maps[0].value_size, module.maps[0].max_entries);
    let mut memory = Memory::new();
    let storage: Vec<u8> = (0..max_entries).flat_map(|i| initial(i, value_size)).collect();
    let values = memory.add_region("values", storage, Access::ReadWrite);
    let mut host = ArrayHost { values, value_size, max_entries };
    let program = &module.programs[0].instructions;
    let mut results = Vec::new();
    for &key in keys {
        let packet = memory.add_region("packet", key.to_le_bytes().to_vec(), Access::ReadOnly);
        let mut ctx = vec![0u8; 32];
        ctx[0..8].copy_from_slice(&packet.base().to_le_bytes());
        ctx[8..16].copy_from_slice(&(packet.base() + 4).to_le_bytes());
        let ctx = memory.add_region("context", ctx, Access::ReadOnly);
        let r0 = Interpreter::new(program).run(&[ctx.base()], &mut memory, &mut host).unwrap();
        results.push(r0 as u32);
    }
    let vs = value_size as usize;
    let contents =
        (0..max_entries as usize).map(|i| memory.read(values.base() + (i * vs) as u64, vs).unwrap().to_vec()).collect();
    (results, contents)
}

/// Builds the module for `target` and `version`; the driver and whether its code calls a helper.
fn build(module: &Module, target: Target, version: RuntimeVersion) -> (Vec<u8>, bool) {
    let session =
        Session::new(SessionOptions { target, runtime_version: version, ..SessionOptions::default() }).unwrap();
    let verified = session.verify("lookup", module).unwrap();
    let lowered = session.lower_with_text("lookup", &verified, true).unwrap();
    let calls = lowered[0].clif.iter().any(|f| f.contains("call_indirect"));
    let compiled: Vec<_> = lowered.into_iter().map(|l| l.program).collect();
    assert_eq!(compiled[0].referenced_maps, [0], "the map is referenced, so the runtime fills map_data[0]");
    (session.link("lookup", module, &compiled, None).unwrap(), calls)
}

/// The driver's r0 for each key in turn and the map's values afterwards.
fn in_emulator(image: &[u8], value_size: u32, max_entries: u32, keys: &[u32]) -> (Vec<u32>, Vec<Vec<u8>>) {
    let mut emulator = emulator::emulator();
    let m = emulator.load(image).unwrap();
    let map = m.map("values").unwrap();
    for i in 0..max_entries {
        assert_eq!(map.update(&i.to_le_bytes(), &initial(i, value_size), 0), 0);
    }
    let results = keys.iter().map(|k| m.invoke_xdp("lookup", &k.to_le_bytes(), 1).unwrap().0).collect();
    let contents = (0..max_entries).map(|i| map.get(&i.to_le_bytes()).unwrap()).collect();
    m.unload(&mut emulator).unwrap();
    (results, contents)
}

#[test]
fn inline_lookups_match_the_helper_and_the_interpreter_at_every_bound_on_both_targets() {
    // A power-of-two value size (the index is shifted), others (multiplied), one entry, and a large array.
    for (value_size, max_entries) in [(8, 5), (12, 7), (24, 1), (16, 1 << 16), (40, 3)] {
        let module = module(value_size, max_entries, None);
        let keys = keys(max_entries);
        let (want, _) = interpreted(&module, &keys);
        assert!(want.contains(&NULL_RESULT) && want.iter().any(|&r| r != NULL_RESULT), "both outcomes occur");
        same_as_interpreter(&module, &keys, &format!("value_size {value_size}, max_entries {max_entries}"));
    }
}

#[test]
fn a_constant_key_stored_before_the_lookup_indexes_with_the_constant() {
    // `u32 zero = 0; bpf_map_lookup_elem(&m, &zero)`: lowering knows the key, in range or not.
    for (value_size, max_entries) in [(8, 5), (12, 1)] {
        for key in [0, max_entries - 1, max_entries, u32::MAX] {
            let module = module(value_size, max_entries, Some(key));
            same_as_interpreter(&module, &[0, 1], &format!("max_entries {max_entries}, constant key {key}"));
        }
    }
}

/// Runs `module` (built for 1.3.0 and for 1.4.0, x64 and ARM64) on a packet per key in `keys`; the results and
/// the map contents afterwards must be the interpreter's.
fn same_as_interpreter(module: &Module, keys: &[u32], what: &str) {
    let (value_size, max_entries) = (module.maps[0].value_size, module.maps[0].max_entries);
    let (want, want_contents) = interpreted(module, keys);
    for target in [Target::X64, Target::Arm64] {
        for (version, inline) in [(RuntimeVersion::PORTABLE, false), (RuntimeVersion::MAP_DATA_V2, true)] {
            let what = format!("{what}, {target:?}, {version}");
            let (image, calls) = build(module, target, version);
            assert_eq!(calls, !inline, "{what}: inline exactly when the runtime fills array_data");
            let (got, contents) = in_emulator(&image, value_size, max_entries, keys);
            assert_eq!(got, want, "{what}: results for keys {keys:?}");
            assert_eq!(contents, want_contents, "{what}: map contents");
        }
    }
}

#[test]
fn a_short_packet_never_reaches_the_lookup() {
    let module = module(8, 4, None);
    for version in [RuntimeVersion::PORTABLE, RuntimeVersion::MAP_DATA_V2] {
        let (image, _) = build(&module, Target::X64, version);
        let mut emulator = emulator::emulator();
        let m = emulator.load(&image).unwrap();
        assert_eq!(m.invoke_xdp("lookup", &[1, 0], 1).unwrap().0, SHORT_PACKET, "{version}");
        m.unload(&mut emulator).unwrap();
    }
}
