//! The array-lookup fact (`AnalysisFacts::array_map_lookups`, contract §5.2): a `bpf_map_lookup_elem` whose `r1`
//! is one plain `ARRAY` map of the module in every execution, which lowering indexes inline. Each way the handle
//! may be another map at run time — a map chosen on a branch, a function called with two maps, a handle a
//! map-in-map lookup returned — and each map the runtime gives no `array_data` for gets no fact.

use super::*;

const R5: Reg = Reg::R5;
const R7: Reg = Reg::R7;

fn array(name: &str) -> MapDefinition {
    map(name, MapType::ARRAY, 8)
}

/// Verifies `instructions` (Windows XDP) with `maps`; the proven slot -> map index pairs.
fn facts(instructions: Vec<I>, maps: Vec<MapDefinition>) -> Vec<(usize, usize)> {
    let mut m = module(instructions);
    m.maps = maps;
    let xdp = WINDOWS.program_type_by_name("xdp").unwrap();
    let v = verify_program(&m, 0, &WINDOWS, xdp, &VerifierOptions::default()).expect("verifies");
    (0..m.programs[0].instructions.len()).filter_map(|pc| v.array_map_lookup(pc).map(|map| (pc, map))).collect()
}

/// `key = 0` at fp-4; `r0 = bpf_map_lookup_elem(map m, fp-4)` at slot 5; a null-checked 8-byte read.
fn lookup_in(m: i32) -> Vec<I> {
    let mut p = vec![st(MemSize::W, FP, -4, 0), movr(R2, FP), add(R2, -4)];
    p.extend(map_fd(R1, m));
    p.push(I::CallHelper { id: 1 });
    p.extend([jif(JumpCond::Eq, R0, Operand::Imm(0), 1), ldx(MemSize::DW, R3, R0, 0), mov(R0, 0), I::Exit]);
    p
}

#[test]
fn a_lookup_in_one_array_map_is_proven_to_be_that_map() {
    assert_eq!(facts(lookup_in(1), vec![map("h", MapType::HASH, 8), array("a")]), [(5, 1)]);
    // Through a spill and a copy: still the same map.
    let mut p = vec![st(MemSize::W, FP, -4, 0)];
    p.extend(map_fd(R6, 0));
    p.extend([stx(MemSize::DW, FP, -16, R6), ldx(MemSize::DW, R7, FP, -16), movr(R1, R7), movr(R2, FP)]);
    p.extend([add(R2, -4), I::CallHelper { id: 1 }, mov(R0, 0), I::Exit]);
    assert_eq!(facts(p, vec![array("a")]), [(8, 0)]);
}

#[test]
fn maps_without_array_data_get_no_fact() {
    // The runtime fills `array_data` for ARRAY maps only (contract §3.3); the helper handles the rest.
    for t in [MapType::HASH, MapType::PERCPU_ARRAY, MapType::LRU_HASH, MapType::PERCPU_HASH] {
        assert_eq!(facts(lookup_in(0), vec![map("m", t, 8)]), [], "{}", t.name());
    }
    // The inline code reads a 4-byte key; an array map declared with other key sizes goes through the helper.
    let wide_key = MapDefinition { key_size: 8, ..array("a") };
    let mut p = vec![st(MemSize::DW, FP, -8, 0), movr(R2, FP), add(R2, -8)];
    p.extend(map_fd(R1, 0));
    p.extend([I::CallHelper { id: 1 }, mov(R0, 0), I::Exit]);
    assert_eq!(facts(p, vec![wide_key]), []);
}

#[test]
fn a_map_chosen_on_a_branch_is_not_one_map() {
    // r1 is map 0 or map 1 (both arrays of the same shape): the lookup must go through the helper.
    let mut p = vec![st(MemSize::W, FP, -4, 0), ldx(MemSize::W, R5, R1, 24)];
    p.push(jif(JumpCond::Eq, R5, Operand::Imm(0), 3));
    p.extend(map_fd(R1, 0));
    p.push(I::Jump { offset: 2, long: false });
    p.extend(map_fd(R1, 1));
    p.extend([movr(R2, FP), add(R2, -4), I::CallHelper { id: 1 }, mov(R0, 0), I::Exit]);
    assert_eq!(facts(p, vec![array("a"), array("b")]), []);
}

/// A function `f(r1 = map)` that looks up key 0 in its argument, called with map `first` and then map `second`.
fn function_called_with(first: i32, second: i32) -> (Vec<I>, usize) {
    let mut p = Vec::new();
    p.extend(map_fd(R1, first));
    p.push(I::CallLocal { offset: 0 }); // patched below
    p.extend(map_fd(R1, second));
    p.push(I::CallLocal { offset: 0 });
    p.extend([mov(R0, 0), I::Exit]);
    let callee = p.len();
    p.extend([st(MemSize::W, FP, -4, 0), movr(R2, FP), add(R2, -4), I::CallHelper { id: 1 }, mov(R0, 0), I::Exit]);
    for call in [2, 5] {
        p[call] = I::CallLocal { offset: (callee - call - 1) as i32 };
    }
    (p, callee + 3)
}

#[test]
fn a_function_called_with_two_maps_is_not_one_map() {
    let (p, call) = function_called_with(0, 0);
    assert_eq!(facts(p, vec![array("a"), array("b")]), [(call, 0)], "the same map from both call sites");
    let (p, _) = function_called_with(0, 1);
    assert_eq!(facts(p, vec![array("a"), array("b")]), [], "map 0 from one site, map 1 from the other");
}

#[test]
fn an_inner_map_from_a_map_in_map_is_not_its_template() {
    // Map 0: an array of maps whose inner template is map 1, an ARRAY. The handle the outer lookup returns is an
    // inner map the runtime created, which the analysis names by the template's index: inlining it as map 1
    // would read the template's values, not the inner map's.
    let outer = MapDefinition { inner_map_index: Some(1), ..map("outer", MapType::ARRAY_OF_MAPS, 4) };
    let maps = vec![outer, array("template")];
    let mut p = vec![st(MemSize::W, FP, -4, 0), movr(R2, FP), add(R2, -4)];
    p.extend(map_fd(R1, 0));
    p.extend([I::CallHelper { id: 1 }, jif(JumpCond::Eq, R0, Operand::Imm(0), 4), movr(R1, R0)]);
    p.extend([movr(R2, FP), add(R2, -4), I::CallHelper { id: 1 }, mov(R0, 0), I::Exit]);
    assert_eq!(facts(p, maps.clone()), [], "neither the outer lookup nor the inner one");
    // The template named directly by a `lddw` is left to the helper too (the fact cannot tell the two apart).
    assert_eq!(facts(lookup_in(1), maps), []);
    // Templates found by `inner_id` count as well (contract §3.3: the map whose `id` is the outer's `inner_id`).
    let outer = MapDefinition { inner_id: 7, ..map("outer", MapType::HASH_OF_MAPS, 4) };
    let template = MapDefinition { id: 7, ..array("template") };
    assert_eq!(facts(lookup_in(1), vec![outer, template]), []);
}

#[test]
fn a_lookup_no_execution_reaches_has_no_fact() {
    // r5 is 1: the verifier proves the jump always taken, so the lookup is unreachable.
    let mut p = vec![mov(R5, 1), jif(JumpCond::Eq, R5, Operand::Imm(1), 6)];
    p.extend(lookup_in(0)[..6].iter().copied());
    p.extend([mov(R0, 0), I::Exit]);
    assert_eq!(facts(p, vec![array("a")]), []);
}
