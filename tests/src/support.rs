//! Small pieces the integration tests share: a seeded generator, an interpreter host without helpers, and
//! lowering of one verified program. One definition each, so the differential tests draw the same sequences
//! and lower the same way.

use bpf2sys::compiled::Target;
use bpf2sys::interp::{HelperArgs, HelperOutcome, Host, HostError, Memory};
use bpf2sys::lower::{self, LowerOptions, LoweredProgram};
use bpf2sys::verifier::Verified;

/// SplitMix64: tiny and well mixed, so every generated case is reproducible from its seed.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// An interpreter host for programs that call no helper: any call is an unknown helper.
pub struct NoHelpers;

impl Host for NoHelpers {
    fn call_helper(&mut self, id: i32, _: HelperArgs, _: &mut Memory) -> Result<HelperOutcome, HostError> {
        Err(HostError::UnknownHelper { id })
    }
}

/// The shipped code of one verified program for `target` (panics with the lowering error: a test helper).
pub fn lowered(verified: &Verified, target: Target) -> LoweredProgram {
    let isa = lower::build_isa(target).unwrap();
    lower::lower_program(&*isa, std::slice::from_ref(verified), 0, &LowerOptions::new(target), true)
        .unwrap_or_else(|e| panic!("{e}"))
}
