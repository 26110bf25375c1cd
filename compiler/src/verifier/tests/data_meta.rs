//! Packet metadata before `data` (docs/verifier.md §3, `data_meta`): on Linux a `data_meta + n <= data` check
//! proves `n` bytes of metadata, readable through `data_meta` or below `data`; on Windows `data_meta` is never
//! dereferenceable (contract §7.2 does not say what EbpfCore stores in it).

use super::*;
use crate::platform::linux::LINUX;
use crate::platform::Platform;

const R5: Reg = Reg::R5;

fn verify_on(platform: &'static Platform, instructions: Vec<I>) -> Result<VerificationReport, Rejection> {
    verify_xdp_on(platform, vec![], instructions)
}

/// Linux `xdp_md`: r2 = data_meta, r3 = data (4-byte fields at 8 and 0), `r4 = r2 + n; if r4 > r3 goto exit`
/// (`check`), then `body`, r0 = 0.
fn linux_meta(n: i32, check: bool, body: Vec<I>) -> Vec<I> {
    let mut p = vec![ldx(MemSize::W, R2, R1, 8), ldx(MemSize::W, R3, R1, 0), movr(R4, R2), add(R4, n)];
    if check {
        p.push(jif(JumpCond::Gt, R4, Operand::Reg(R3), body.len() as i16));
    }
    p.extend(body);
    p.extend([mov(R0, 0), I::Exit]);
    p
}

#[test]
fn metadata_proven_by_a_check_against_data_is_accessible() {
    verify_on(&LINUX, linux_meta(8, true, vec![ldx(MemSize::DW, R0, R2, 0)])).expect("8 bytes through data_meta");
    verify_on(&LINUX, linux_meta(8, true, vec![ldx(MemSize::W, R0, R2, 4), st(MemSize::W, R2, 0, 1)]))
        .expect("reads and writes inside the room");
    verify_on(&LINUX, linux_meta(8, true, vec![ldx(MemSize::DW, R0, R3, -8)])).expect("8 bytes below data");
    // `data >= meta + n` written the other way round, and `<` proving one byte more.
    let mut p = linux_meta(8, true, vec![ldx(MemSize::DW, R0, R2, 0)]);
    p[4] = jif(JumpCond::Lt, R3, Operand::Reg(R4), 1);
    verify_on(&LINUX, p).expect("data < meta + 8 exits");
    let mut p = linux_meta(8, true, vec![ldx(MemSize::DW, R5, R2, 1)]);
    p[4] = jif(JumpCond::Ge, R4, Operand::Reg(R3), 1);
    verify_on(&LINUX, p).expect("meta + 8 < data: 9 bytes");
}

#[test]
fn metadata_outside_the_proven_room_or_on_windows_is_rejected() {
    let oob = |r: Result<VerificationReport, Rejection>| assert_eq!(r.unwrap_err().property, Property::OutOfBounds);
    oob(verify_on(&LINUX, linux_meta(8, false, vec![ldx(MemSize::B, R0, R2, 0)])));
    oob(verify_on(&LINUX, linux_meta(8, true, vec![ldx(MemSize::DW, R0, R2, 1)])));
    oob(verify_on(&LINUX, linux_meta(8, true, vec![ldx(MemSize::B, R0, R2, -1)])));
    oob(verify_on(&LINUX, linux_meta(8, true, vec![ldx(MemSize::B, R0, R3, -9)])));
    oob(verify_on(&LINUX, linux_meta(8, true, vec![ldx(MemSize::B, R0, R3, 0)])));
    // Signed comparisons of addresses prove nothing.
    let mut p = linux_meta(8, true, vec![ldx(MemSize::DW, R0, R2, 0)]);
    p[4] = jif(JumpCond::Sgt, R4, Operand::Reg(R3), 1);
    oob(verify_on(&LINUX, p));
    // bpf_xdp_adjust_meta moves the metadata: every packet pointer and the room are gone.
    let adjust = vec![
        movr(R6, R1),
        mov(R2, -8),
        I::CallHelper { id: 54 },
        ldx(MemSize::W, R3, R6, 0),
        ldx(MemSize::B, R0, R3, -1),
    ];
    oob(verify_on(&LINUX, linux_meta(8, true, adjust)));
    // Windows: data_meta (8 bytes at 16) is not trusted to point at metadata.
    let windows = vec![
        ldx(MemSize::DW, R2, R1, 16),
        ldx(MemSize::DW, R3, R1, 0),
        movr(R4, R2),
        add(R4, 8),
        jif(JumpCond::Gt, R4, Operand::Reg(R3), 1),
        ldx(MemSize::DW, R0, R2, 0),
        mov(R0, 0),
        I::Exit,
    ];
    oob(verify_on(&WINDOWS, windows));
}
