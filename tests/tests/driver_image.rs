//! The linked driver image: parses with two independent PE parsers, passes the lint, is deterministic, and
//! runs in the emulated eBPF for Windows runtime with the behaviour its programs define.

mod driver_common;

use bpf2sys::compiled::Target;
use bpf2sys::link::{link_driver, lint::lint_image, LinkOptions};
use bpf2sys::lower::build_isa;
use bpf2sys_runtime_shim::RuntimeVersion;
use bpf2sys_tests::emulator::{self, kernel};
use driver_common::*;

fn build(target: Target, version: RuntimeVersion) -> Vec<u8> {
    let (module, compiled) = test_module(target, version.map_data_stride() as i64);
    let options = LinkOptions { target, runtime_version: version, elf_hash: None, program_type: None };
    link_driver(&*build_isa(target).unwrap(), &module, &compiled, &options).expect("links")
}

#[test]
fn image_parses_with_object_and_goblin_and_has_the_driver_headers() {
    let image = build(Target::X64, RuntimeVersion::PORTABLE);
    let pe = goblin::pe::PE::parse(&image).expect("goblin parses");
    assert!(pe.is_64);
    let opt = pe.header.optional_header.unwrap();
    assert_eq!(opt.windows_fields.subsystem, 1);
    assert_eq!(opt.windows_fields.dll_characteristics, 0x0160);
    assert_eq!(pe.header.coff_header.machine, 0x8664);
    assert_eq!(pe.header.coff_header.characteristics, 0x22);
    let names: Vec<String> = pe.sections.iter().map(|s| s.name().unwrap().to_string()).collect();
    assert_eq!(
        names,
        [".text", "xdp/gl~3", "xdp", "xdp/en~1", "xdp/ta~2", ".rdata", ".data", "maps", "programs", ".pdata", ".reloc"]
    );
    let mut imports: Vec<String> = pe.imports.iter().map(|i| format!("{}!{}", i.dll, i.name)).collect();
    imports.sort();
    assert_eq!(
        imports,
        [
            "NETIO.SYS!NmrClientAttachProvider",
            "NETIO.SYS!NmrDeregisterClient",
            "NETIO.SYS!NmrRegisterClient",
            "NETIO.SYS!NmrWaitForClientDeregisterComplete",
            "ntoskrnl.exe!RtlQueryRegistryValues"
        ]
    );
    // Every function has .pdata entries with decodable unwind info: eleven shim functions and four programs (a
    // function with a stack probe has three).
    let exceptions = pe.exception_data.as_ref().expect(".pdata");
    let functions: Vec<_> = exceptions.functions().map(|f| f.unwrap()).collect();
    assert!(functions.len() >= 11 + 4, "{} entries", functions.len());
    for f in &functions {
        let info = exceptions.get_unwind_info(*f, &pe.sections).expect("unwind info decodes");
        assert_eq!(info.version, 1);
    }
    // object's reader agrees.
    let file = object::read::pe::PeFile64::parse(&*image).expect("object parses");
    assert_eq!(file.section_table().len(), 11);
    let report = lint_image(&image);
    assert!(report.passed(), "{report}");
}

#[test]
fn arm64_image_links_and_passes_the_lint() {
    let image = build(Target::Arm64, RuntimeVersion::PORTABLE);
    let pe = goblin::pe::PE::parse(&image).expect("goblin parses");
    assert_eq!(pe.header.coff_header.machine, 0xaa64);
    let report = lint_image(&image);
    assert!(report.passed(), "{report}");
}

#[test]
fn two_builds_are_byte_identical() {
    assert_eq!(build(Target::X64, RuntimeVersion::PORTABLE), build(Target::X64, RuntimeVersion::PORTABLE));
    assert_eq!(build(Target::Arm64, RuntimeVersion::PORTABLE), build(Target::Arm64, RuntimeVersion::PORTABLE));
}

#[test]
fn emulated_runtime_loads_validates_and_runs_every_program() {
    let image = build(Target::X64, RuntimeVersion::PORTABLE);
    let mut emulator = emulator::emulator();
    let module = emulator.load(&image).expect("the runtime accepts the module");
    assert_eq!(module.metadata.version, [1, 3, 0]);
    // Programs come sorted by name (contract §4.2), and user mode sees the same list.
    let names: Vec<&str> = module.metadata.programs.iter().map(|p| p.program_name.as_str()).collect();
    assert_eq!(names, ["global_reader", "xdp_count", "xdp_entry", "xdp_target"]);
    assert_eq!(module.user_mode.programs.len(), 4);
    assert_eq!(module.user_mode.maps.len(), 4);
    assert!(module.metadata.programs.iter().all(|p| p.program_info_hash.as_ref().is_some_and(|h| h.len() == 32)));

    // Packet counting and dropping.
    for (len, expected) in [(60, XDP_PASS), (100, XDP_DROP), (64, XDP_PASS), (1500, XDP_DROP)] {
        let (action, _) = module.invoke_xdp("xdp_count", &packet(len), 1).unwrap();
        assert_eq!(action, expected, "packet of {len} bytes");
    }
    let count = module.map("packet_count").unwrap().get(&0u32.to_le_bytes()).unwrap();
    assert_eq!(u64::from_le_bytes(count.try_into().unwrap()), 4);

    // The tail call reaches its target through the initial values of the program array.
    let (action, _) = module.invoke_xdp("xdp_entry", &packet(10), 1).unwrap();
    assert_eq!(action, XDP_TX);

    // Globals hold their initial values.
    let (value, _) = module.invoke("global_reader", &mut [0u8; 32]).unwrap();
    assert_eq!(value, 7);

    // A second provider is refused; unloading deregisters and waits.
    assert_eq!(module.attach_again().unwrap(), kernel::STATUS_INVALID_PARAMETER);
    module.unload(&mut emulator).expect("unloads");
    assert_eq!(kernel::with_kernel(|k| k.detach_status), Some(kernel::STATUS_SUCCESS), "ClientDetachProvider ran");
    assert!(kernel::with_kernel(|k| k
        .calls
        .ends_with(&["NmrDeregisterClient".into(), "NmrWaitForClientDeregisterComplete".into()])));
}

#[test]
fn runtime_version_1_4_uses_the_40_byte_map_data_stride() {
    let image = build(Target::X64, RuntimeVersion::parse("1.4.0").unwrap());
    let mut emulator = emulator::emulator();
    let module = emulator.load(&image).expect("loads");
    assert_eq!(module.metadata.version, [1, 4, 0]);
    let (action, _) = module.invoke_xdp("xdp_count", &packet(100), 1).unwrap();
    assert_eq!(action, XDP_DROP);
    let count = module.map("packet_count").unwrap().get(&0u32.to_le_bytes()).unwrap();
    assert_eq!(u64::from_le_bytes(count.try_into().unwrap()), 1);
}

#[test]
fn pinned_maps_are_shared_between_loads() {
    let image = build(Target::X64, RuntimeVersion::PORTABLE);
    let mut emulator = emulator::emulator();
    let first = emulator.load(&image).unwrap();
    first.map("pinned_hash").unwrap().update(&1u32.to_le_bytes(), &9u64.to_le_bytes(), 0);
    first.unload(&mut emulator).unwrap();
    let second = emulator.load(&image).unwrap();
    assert_eq!(second.reused_pins, ["pinned_hash"]);
    assert_eq!(second.map("pinned_hash").unwrap().get(&1u32.to_le_bytes()).unwrap(), 9u64.to_le_bytes());
}

#[test]
fn written_output_is_atomic_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.sys");
    let image = build(Target::X64, RuntimeVersion::PORTABLE);
    bpf2sys_files::write_atomically(&path, &image).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), image);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");
}

#[test]
fn a_tail_call_chain_stops_after_33_tail_calls() {
    let image = build(Target::X64, RuntimeVersion::PORTABLE);
    let mut emulator = emulator::emulator();
    let module = emulator.load(&image).unwrap();
    // Point jump_table[0] at xdp_entry itself: every run tail-calls again until the runtime's limit.
    let entry = module.program_index("xdp_entry").unwrap();
    module.map("jump_table").unwrap().set_program(0, entry).unwrap();
    let mut ctx = [0u8; 32];
    let (action, state) = module.invoke("xdp_entry", &mut ctx).unwrap();
    assert_eq!(state.tail_calls, 33, "MAX_TAIL_CALL_CNT");
    assert_eq!(action, XDP_PASS, "the 34th program sees bpf_tail_call fail and returns XDP_PASS");
}
