//! The benchmark programs that are real eBPF for Windows programs (`flowtrack`, `tailchain`, `bindpolicy`) give
//! the same result as a signed-off driver in the emulated eBPF for Windows runtime as they do on the bench's host
//! maps: the bench host behaves like the runtime (maps, helpers, tail calls), for x64 and ARM64 code, with array
//! lookups through the helper (runtime 1.3.0) and inline (1.4.0, the bench's build).

use bpf2sys::compiled::Target;
use bpf2sys::driver::{build_driver, SessionOptions};
use bpf2sys_runtime_shim::RuntimeVersion;
use bpf2sys_tests::bench::runtime_programs::{
    context_bytes, initial_updates, load_verified, program_array_entries, ContextKind, BENCH_RUNTIME_VERSION,
    RUNTIME_PROGRAMS,
};
use bpf2sys_tests::bench::{input, programs};
use bpf2sys_tests::emulator;

#[test]
fn runtime_bench_programs_return_the_expected_r0_in_the_emulated_runtime() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let expected = programs::expected_values(root).unwrap();
    for spec in RUNTIME_PROGRAMS {
        let path = programs::bench_dir(root).join(format!("{}.o", spec.name));
        let (_, module) = load_verified(&path).unwrap();
        let object = std::fs::read(&path).unwrap();
        let buffer = input::make_input(spec.name).unwrap();
        let data = &buffer[8..];
        let want = expected.iter().find(|(n, _)| n == spec.name).unwrap().1;
        // 1.3.0: every map lookup calls the runtime's helper; 1.4.0 (the bench's): lookups in one proven ARRAY map
        // index `map_data.array_data` inline (contract §5.2). Both must give the bench's r0.
        let builds = [RuntimeVersion::PORTABLE, BENCH_RUNTIME_VERSION].map(|v| [(Target::X64, v), (Target::Arm64, v)]);
        for (target, runtime_version) in builds.into_iter().flatten() {
            let options = SessionOptions { target, runtime_version, ..SessionOptions::default() };
            let image = build_driver(&object, &format!("{}.o", spec.name), &options).unwrap();
            let mut emulator = emulator::emulator();
            let loaded =
                emulator.load(&image).unwrap_or_else(|e| panic!("{} {target:?} {runtime_version}: {e}", spec.name));
            for (m, slot, program) in program_array_entries(spec, &module).unwrap() {
                loaded.map(&module.maps[m].name).unwrap().set_program(slot as u32, program).unwrap();
            }
            for (m, key, value) in initial_updates(spec, &module, data).unwrap() {
                assert_eq!(loaded.map(&module.maps[m].name).unwrap().update(&key, &value, 0), 0);
            }
            let entry = &module.programs[0].name;
            for run in 0..2 {
                // The runtime returns the program's r0 as 32 bits (contract §3.4).
                let r0 = match spec.context {
                    ContextKind::XdpOverData => loaded.invoke_xdp(entry, data, 0).unwrap().0,
                    ContextKind::BindAtDataStart => {
                        let mut ctx = context_bytes(spec.context, data, 0);
                        loaded.invoke(entry, &mut ctx).unwrap().0
                    }
                };
                assert_eq!(r0, want as u32, "{} {target:?} {runtime_version} run {run}", spec.name);
            }
        }
    }
}
