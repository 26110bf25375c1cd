use super::*;

/// Every single-slot encoding that decodes must re-encode to the same bytes: the decoder drops no field.
#[test]
fn every_decodable_opcode_round_trips_exactly() {
    let fields: [(u8, u8, i16, i32); 8] = [
        (0, 0, 0, 0),
        (1, 2, -8, 16),
        (10, 1, 1, 32),
        (3, 0, 8, 64),
        (2, 5, 16, 0x01),
        (0, 1, 0, 0xe1),
        (4, 4, 0, 0xf1),
        (9, 0, 32, -1),
    ];
    let mut decoded = 0;
    for opcode in 0..=255u8 {
        for &(dst, src, offset, imm) in &fields {
            let raw = RawSlot { opcode, dst, src, offset, imm };
            let slots = if opcode == 0x18 { vec![raw, RawSlot { imm: 7, ..Default::default() }] } else { vec![raw] };
            if let Ok(program) = decode_slots(&slots) {
                decoded += 1;
                assert_eq!(encode(&program), slots, "round trip of {raw:?} via {program:?}");
            }
        }
    }
    assert!(decoded > 150, "too few encodings decoded: {decoded}");
}

#[test]
fn nonzero_unused_field_is_named_with_its_slot() {
    // add64 r0, 1 with offset 1 (the conformance suite's negative/unused-add64-imm-offset case).
    let bytes = [0x95, 0, 0, 0, 0, 0, 0, 0, 0x07, 0x00, 0x01, 0x00, 0x01, 0, 0, 0];
    let err = decode(&bytes).unwrap_err();
    assert_eq!(err, DecodeError::NonZeroField { pc: 1, opcode: 0x07, field: "offset", value: 1 });
    assert!(err.to_string().contains("slot 1"));
}

#[test]
fn lddw_occupies_two_slots_and_needs_its_tail() {
    let program = decode(&[0x18, 0x01, 0, 0, 0x44, 0x33, 0x22, 0x11, 0, 0, 0, 0, 0x88, 0x77, 0x66, 0x55]).unwrap();
    assert_eq!(program.len(), 2);
    match program[0] {
        Instruction::LoadImm64 { dst, kind: Imm64Kind::Imm, imm, next_imm } => {
            assert_eq!(dst, Reg::R1);
            assert_eq!(Instruction::imm64(imm, next_imm), 0x5566778811223344);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(program[1], Instruction::LoadImm64Continuation);
    assert_eq!(decode(&[0x18, 0x01, 0, 0, 0, 0, 0, 0]), Err(DecodeError::MissingLddwTail { pc: 0 }));
}

#[test]
fn truncated_bytecode_is_rejected() {
    assert_eq!(decode(&[0x95, 0, 0]), Err(DecodeError::Truncated { len: 3 }));
}

#[test]
fn register_eleven_is_rejected() {
    assert!(matches!(
        decode(&[0xbf, 0x0b, 0, 0, 0, 0, 0, 0]),
        Err(DecodeError::BadRegister { pc: 0, field: "dst", reg: 11 })
    ));
}
