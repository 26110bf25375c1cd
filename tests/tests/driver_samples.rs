//! Every sample builds (verify → compile → link) for x64 and ARM64, passes the driver lint, is byte-identical
//! across builds, and runs in the emulated eBPF for Windows runtime with the behaviour its source defines — as an
//! x64 image on this host and as an ARM64 image in the AArch64 emulator, built for runtime 1.3.0 (every map lookup
//! calls the helper) and 1.4.0 (lookups in one proven ARRAY map are inlined through `map_data.array_data`).

use std::path::{Path, PathBuf};

use bpf2sys::compiled::Target;
use bpf2sys::driver::{build_driver, DriverError, SessionOptions};
use bpf2sys::link::lint::lint_image;
use bpf2sys_runtime_shim::RuntimeVersion;
use bpf2sys_tests::emulator::{self, Emulator, LoadedModule};

const XDP_PASS: u32 = 1;
const XDP_DROP: u32 = 2;

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("samples")
}

fn sample_objects() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(samples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    v.sort();
    assert!(v.len() >= 16, "samples/*.o present");
    v
}

/// Samples that call BTF-resolved functions need the 160-byte program entry of runtime 1.5.0 (contract §2.2).
fn needs_runtime_1_5(name: &str) -> bool {
    name == "kfunc"
}

/// The runtime version a sample is built for by default.
fn default_version(name: &str) -> RuntimeVersion {
    if needs_runtime_1_5(name) {
        RuntimeVersion::parse("1.5.0").unwrap()
    } else {
        RuntimeVersion::PORTABLE
    }
}

fn build(name: &str, target: Target, version: RuntimeVersion) -> Vec<u8> {
    let path = samples_dir().join(format!("{name}.o"));
    let bytes = std::fs::read(&path).unwrap();
    let options = SessionOptions { target, runtime_version: version, ..SessionOptions::default() };
    build_driver(&bytes, &format!("{name}.o"), &options).unwrap_or_else(|e| panic!("{name}: {e}"))
}

const TARGETS: [Target; 2] = [Target::X64, Target::Arm64];

/// How a behaviour test builds its sample: the target, and whether for the portable runtime (1.3.0, whose
/// `map_data` has no `array_data`: every map lookup calls the helper) or for 1.4.0, where a lookup in one proven
/// `ARRAY` map is inlined (contract §5.2). Every behaviour must be the same in all four builds.
#[derive(Clone, Copy, Debug)]
struct Build {
    target: Target,
    array_data: bool,
}

const BUILDS: [Build; 4] = [
    Build { target: Target::X64, array_data: false },
    Build { target: Target::Arm64, array_data: false },
    Build { target: Target::X64, array_data: true },
    Build { target: Target::Arm64, array_data: true },
];

fn load(name: &str, b: Build) -> (Emulator, LoadedModule) {
    let version = match default_version(name) {
        v if b.array_data && !v.has_array_data() => RuntimeVersion::MAP_DATA_V2,
        v => v,
    };
    let image = build(name, b.target, version);
    let mut emulator = emulator::emulator();
    let module = emulator.load(&image).unwrap_or_else(|e| panic!("{name} {b:?}: {e}"));
    (emulator, module)
}

fn u64_value(module: &LoadedModule, map: &str, key: &[u8]) -> Option<u64> {
    module
        .map(map)
        .unwrap_or_else(|| panic!("map {map}"))
        .get(key)
        .map(|v| u64::from_le_bytes(v[..8].try_into().unwrap()))
}

#[test]
fn every_sample_builds_for_both_targets_passes_the_lint_and_is_deterministic() {
    for object in sample_objects() {
        let name = object.file_stem().unwrap().to_string_lossy().into_owned();
        let version = default_version(&name);
        for target in [Target::X64, Target::Arm64] {
            let image = build(&name, target, version);
            let report = lint_image(&image);
            assert!(report.passed(), "{name} {target:?}:\n{report}");
            assert_eq!(image, build(&name, target, version), "{name} {target:?} is not deterministic");
            let pe = goblin::pe::PE::parse(&image).unwrap_or_else(|e| panic!("{name}: goblin: {e}"));
            assert!(pe.exception_data.is_some() || target == Target::Arm64);
            object::read::pe::PeFile64::parse(&*image).unwrap_or_else(|e| panic!("{name}: object: {e}"));
        }
    }
}

#[test]
fn every_sample_loads_in_the_emulated_runtime_with_every_runtime_version_on_both_targets() {
    for object in sample_objects() {
        let name = object.file_stem().unwrap().to_string_lossy().into_owned();
        for (version, target) in ["1.3.0", "1.4.0", "1.5.0"].into_iter().flat_map(|v| TARGETS.map(|t| (v, t))) {
            if needs_runtime_1_5(&name) && version != "1.5.0" {
                continue;
            }
            let image = build(&name, target, RuntimeVersion::parse(version).unwrap());
            let mut emulator = emulator::emulator();
            let module = emulator.load(&image).unwrap_or_else(|e| panic!("{name} {target:?} @ {version}: {e}"));
            assert!(!module.programs.is_empty());
            module.unload(&mut emulator).unwrap_or_else(|e| panic!("{name} {target:?} @ {version}: {e}"));
        }
    }
}

fn ipv4_udp(payload: usize, udp_length: u16, dst_port: u16) -> Vec<u8> {
    let mut p = vec![0u8; 14 + 20 + 8 + payload];
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    p[14] = 0x45;
    p[23] = 17; // UDP
    p[34 + 2..34 + 4].copy_from_slice(&dst_port.to_be_bytes());
    p[34 + 4..34 + 6].copy_from_slice(&udp_length.to_be_bytes());
    p
}

#[test]
fn droppacket_drops_empty_udp_and_counts_it() {
    for build in BUILDS {
        droppacket_drops_empty_udp_and_counts_it_on(build);
    }
}

fn droppacket_drops_empty_udp_and_counts_it_on(build: Build) {
    let (_e, m) = load("droppacket", build);
    let (a, _) = m.invoke_xdp("drop_empty_udp", &ipv4_udp(0, 8, 53), 1).unwrap();
    assert_eq!(a, XDP_DROP);
    let (a, _) = m.invoke_xdp("drop_empty_udp", &ipv4_udp(4, 12, 53), 1).unwrap();
    assert_eq!(a, XDP_PASS);
    let mut tcp = ipv4_udp(0, 8, 53);
    tcp[23] = 6;
    assert_eq!(m.invoke_xdp("drop_empty_udp", &tcp, 1).unwrap().0, XDP_PASS);
    assert_eq!(m.invoke_xdp("drop_empty_udp", &[0u8; 10], 1).unwrap().0, XDP_PASS);
    assert_eq!(m.invoke_xdp("drop_empty_udp", &ipv4_udp(0, 8, 53), 1).unwrap().0, XDP_DROP);
    assert_eq!(u64_value(&m, "dropped_packet_map", &17u32.to_le_bytes()), Some(2));
    assert_eq!(u64_value(&m, "dropped_packet_map", &6u32.to_le_bytes()), Some(0));
}

#[test]
fn tail_call_reaches_the_stage_for_the_ethertype() {
    for build in BUILDS {
        tail_call_reaches_the_stage_for_the_ethertype_on(build);
    }
}

fn tail_call_reaches_the_stage_for_the_ethertype_on(build: Build) {
    let (_e, m) = load("tail_call", build);
    let mut v4 = vec![0u8; 64];
    v4[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let mut v6 = vec![0u8; 64];
    v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    assert_eq!(m.invoke_xdp("dispatch", &v4, 1).unwrap().0, XDP_PASS);
    assert_eq!(m.invoke_xdp("dispatch", &v4, 1).unwrap().0, XDP_PASS);
    assert_eq!(m.invoke_xdp("dispatch", &v6, 1).unwrap().0, XDP_PASS);
    assert_eq!(u64_value(&m, "stage_hits", &0u32.to_le_bytes()), Some(2), "ipv4 stage reached twice");
    assert_eq!(u64_value(&m, "stage_hits", &2u32.to_le_bytes()), Some(1), "ipv6 stage reached once");
    assert_eq!(u64_value(&m, "stage_hits", &1u32.to_le_bytes()), Some(0));
}

#[test]
fn globals_hold_their_initial_values_and_drive_the_filter() {
    for build in BUILDS {
        globals_hold_their_initial_values_and_drive_the_filter_on(build);
    }
}

fn globals_hold_their_initial_values_and_drive_the_filter_on(build: Build) {
    let (_e, m) = load("globals", build);
    let data = m.map("globals.data").expect(".data map").get(&0u32.to_le_bytes()).unwrap();
    assert_eq!(u32::from_le_bytes(data[..4].try_into().unwrap()), 1500, "drop_threshold");
    let rodata = m.map("globals.rodata").expect(".rodata map").get(&0u32.to_le_bytes()).unwrap();
    let ports: Vec<u16> = rodata.chunks(2).take(4).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    assert_eq!(ports, [23, 135, 445, 3389]);
    let packet = |len: usize, port: u16| {
        let mut p = vec![0u8; len];
        p[36..38].copy_from_slice(&port.to_be_bytes());
        p
    };
    assert_eq!(m.invoke_xdp("threshold_filter", &packet(100, 80), 1).unwrap().0, XDP_PASS);
    assert_eq!(m.invoke_xdp("threshold_filter", &packet(100, 445), 1).unwrap().0, XDP_DROP);
    assert_eq!(m.invoke_xdp("threshold_filter", &packet(1600, 80), 1).unwrap().0, XDP_DROP);
    assert_eq!(m.invoke_xdp("threshold_filter", &[0u8; 20], 1).unwrap().0, XDP_PASS, "too short to filter");
    let bss = m.map("globals.bss").expect(".bss map").get(&0u32.to_le_bytes()).unwrap();
    let counters: Vec<u64> = bss.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    let mut sorted = counters.clone();
    sorted.sort();
    assert_eq!(sorted, [2, 4], "packets_seen 4, packets_dropped 2 (in some .bss order): {counters:?}");
}

#[test]
fn map_in_map_follows_the_initial_inner_map() {
    for build in BUILDS {
        map_in_map_follows_the_initial_inner_map_on(build);
    }
}

fn map_in_map_follows_the_initial_inner_map_on(build: Build) {
    let (_e, m) = load("map_in_map", build);
    assert_eq!(m.invoke_xdp("lookup_nested", &[0u8; 20], 0).unwrap().0, XDP_PASS);
    m.map("default_ports").unwrap().update(&53u16.to_le_bytes(), &[1], 0);
    assert_eq!(m.invoke_xdp("lookup_nested", &[0u8; 20], 0).unwrap().0, XDP_DROP, "interface 0 uses default_ports");
    assert_eq!(m.invoke_xdp("lookup_nested", &[0u8; 20], 1).unwrap().0, XDP_PASS, "interface 1 has no port set");
}

#[test]
fn bpf_calls_record_lengths_through_subprograms() {
    for build in BUILDS {
        bpf_calls_record_lengths_through_subprograms_on(build);
    }
}

fn bpf_calls_record_lengths_through_subprograms_on(build: Build) {
    let (_e, m) = load("bpf_calls", build);
    assert_eq!(m.invoke_xdp("measure", &[0u8; 100], 1).unwrap().0, XDP_PASS);
    assert_eq!(m.invoke_xdp("drop_large", &[0u8; 600], 1).unwrap().0, XDP_DROP);
    assert_eq!(m.invoke_xdp("drop_large", &[0u8; 60], 1).unwrap().0, XDP_PASS);
    assert_eq!(u64_value(&m, "length_histogram", &0u32.to_le_bytes()), Some(2));
    assert_eq!(u64_value(&m, "length_histogram", &1u32.to_le_bytes()), Some(1));
}

#[test]
fn atomics_update_the_shared_counters() {
    for build in BUILDS {
        atomics_update_the_shared_counters_on(build);
    }
}

fn atomics_update_the_shared_counters_on(build: Build) {
    let (_e, m) = load("atomics", build);
    assert_eq!(m.invoke_xdp("update_counters", &[0u8; 40], 7).unwrap().0, XDP_PASS);
    assert_eq!(m.invoke_xdp("update_counters", &[0u8; 3], 9).unwrap().0, XDP_PASS);
    let v = m.map("shared_counters").unwrap().get(&0u32.to_le_bytes()).unwrap();
    let u64_at = |o: usize| u64::from_le_bytes(v[o..o + 8].try_into().unwrap());
    assert_eq!(u64_at(0), 2, "packets");
    assert_eq!(u64_at(8), (1 << 40) | (1 << 3), "flags_seen");
    assert_eq!(u32::from_le_bytes(v[20..24].try_into().unwrap()), 0, "toggles flipped twice");
    assert_eq!(u64_at(24), 3, "last_length");
    assert_eq!(u64_at(32), 7, "owner set once by compare-and-swap");
}

fn bind_context(pid: u64, operation: u32) -> [u8; 56] {
    let mut c = [0u8; 56];
    c[16..24].copy_from_slice(&pid.to_le_bytes());
    c[44..48].copy_from_slice(&operation.to_le_bytes());
    c
}

#[test]
fn bind_policy_counts_binds_and_denies_listed_processes() {
    for build in BUILDS {
        bind_policy_counts_binds_and_denies_listed_processes_on(build);
    }
}

fn bind_policy_counts_binds_and_denies_listed_processes_on(build: Build) {
    let (_e, m) = load("bind_policy", build);
    assert_eq!(m.invoke("authorize_bind", &mut bind_context(42, 0)).unwrap().0, 0, "permit");
    assert_eq!(m.invoke("authorize_bind", &mut bind_context(42, 0)).unwrap().0, 0);
    assert_eq!(m.invoke("authorize_bind", &mut bind_context(42, 2)).unwrap().0, 0, "unbind is not counted");
    assert_eq!(u64_value(&m, "bind_counts", &42u64.to_le_bytes()), Some(2));
    m.map("denied_processes").unwrap().update(&42u64.to_le_bytes(), &1u32.to_le_bytes(), 0);
    assert_eq!(m.invoke("authorize_bind", &mut bind_context(42, 0)).unwrap().0, 1, "deny");
    assert_eq!(m.invoke("authorize_bind", &mut bind_context(7, 0)).unwrap().0, 0);
}

#[test]
fn bounded_loop_counts_prefix_sums() {
    for build in BUILDS {
        bounded_loop_counts_prefix_sums_on(build);
    }
}

fn bounded_loop_counts_prefix_sums_on(build: Build) {
    let (_e, m) = load("bounded_loop", build);
    let packet: Vec<u8> = (1..=10).collect(); // sum 55
    m.invoke_xdp("sum_prefix", &packet, 1).unwrap();
    m.invoke_xdp("sum_prefix", &packet, 1).unwrap();
    let long = vec![1u8; 200]; // only 64 bytes are summed
    m.invoke_xdp("sum_prefix", &long, 1).unwrap();
    assert_eq!(u64_value(&m, "checksum_counts", &55u32.to_le_bytes()), Some(2));
    assert_eq!(u64_value(&m, "checksum_counts", &64u32.to_le_bytes()), Some(1));
}

/// Runs an XDP program on `packet` and returns its action and the `bpf_trace_printk` messages.
fn xdp_with_trace(m: &LoadedModule, program: &str, packet: &[u8]) -> (u32, Vec<String>) {
    let mut data = packet.to_vec();
    let mut ctx = [0u8; 32];
    let start = data.as_mut_ptr() as u64;
    ctx[0..8].copy_from_slice(&start.to_le_bytes());
    ctx[8..16].copy_from_slice(&(start + data.len() as u64).to_le_bytes());
    let (action, state) = m.invoke(program, &mut ctx).unwrap();
    (action, state.trace)
}

#[test]
fn packet_length_logs_at_most_32_packet_bytes() {
    for build in BUILDS {
        packet_length_logs_at_most_32_packet_bytes_on(build);
    }
}

fn packet_length_logs_at_most_32_packet_bytes_on(build: Build) {
    let (_e, m) = load("packet_length", build);
    let (a, trace) = xdp_with_trace(&m, "log_packet_prefix", b"hello\0world");
    assert_eq!((a, trace.len()), (XDP_PASS, 1));
    assert!(trace[0].starts_with("hello "), "{trace:?}");
    let (a, trace) = xdp_with_trace(&m, "log_packet_prefix", &[b'a'; 40]);
    assert_eq!(a, XDP_PASS);
    assert!(trace[0].starts_with(&"a".repeat(32)) && !trace[0].starts_with(&"a".repeat(33)), "{trace:?}");
    assert_eq!(xdp_with_trace(&m, "log_packet_prefix", &[]).0, XDP_DROP, "empty packet");
    assert_eq!(u64_value(&m, "logged_bytes", &0u32.to_le_bytes()), Some(5 + 32), "characters printed");
    assert_eq!(u64_value(&m, "logged_bytes", &1u32.to_le_bytes()), Some(11 + 32), "bytes passed to the helper");
}

#[test]
fn spilled_lookup_counts_and_drops_from_the_third_packet() {
    for build in BUILDS {
        spilled_lookup_counts_and_drops_from_the_third_packet_on(build);
    }
}

fn spilled_lookup_counts_and_drops_from_the_third_packet_on(build: Build) {
    let (_e, m) = load("spilled_lookup", build);
    let actions: Vec<u32> = (0..4).map(|_| m.invoke_xdp("count_by_first_byte", &[7, 1, 2], 1).unwrap().0).collect();
    assert_eq!(actions, [XDP_PASS, XDP_PASS, XDP_DROP, XDP_DROP]);
    assert_eq!(u64_value(&m, "port_hits", &7u32.to_le_bytes()), Some(4));
    assert_eq!(m.invoke_xdp("count_by_first_byte", &[], 1).unwrap().0, XDP_PASS, "empty packet");
    assert_eq!(u64_value(&m, "port_hits", &9u32.to_le_bytes()), None);
}

#[test]
fn stack_counter_sums_the_first_16_bytes() {
    for build in BUILDS {
        stack_counter_sums_the_first_16_bytes_on(build);
    }
}

fn stack_counter_sums_the_first_16_bytes_on(build: Build) {
    let (_e, m) = load("stack_counter", build);
    assert_eq!(m.invoke_xdp("sum_with_stack_counter", &[1u8; 20], 1).unwrap().0, XDP_PASS, "sum 16");
    assert_eq!(m.invoke_xdp("sum_with_stack_counter", &[200u8; 16], 1).unwrap().0, XDP_DROP, "sum 3200");
    assert_eq!(m.invoke_xdp("sum_with_stack_counter", &[9u8; 15], 1).unwrap().0, XDP_PASS, "too short");
    assert_eq!(u64_value(&m, "byte_sums", &0u32.to_le_bytes()), Some(16 + 3200));
}

/// Runs an XDP program on `packet` arriving on `ifindex`; returns its action and the trace messages.
fn xdp_on_interface(m: &LoadedModule, program: &str, packet: &[u8], ifindex: u32) -> (u32, Vec<String>) {
    let mut data = packet.to_vec();
    let mut ctx = [0u8; 32];
    let start = data.as_mut_ptr() as u64;
    ctx[0..8].copy_from_slice(&start.to_le_bytes());
    ctx[8..16].copy_from_slice(&(start + data.len() as u64).to_le_bytes());
    ctx[24..28].copy_from_slice(&ifindex.to_le_bytes());
    let (action, state) = m.invoke(program, &mut ctx).unwrap();
    (action, state.trace)
}

#[test]
fn mixed_pointer_logs_the_stack_label_then_the_map_label() {
    for build in BUILDS {
        mixed_pointer_logs_the_stack_label_then_the_map_label_on(build);
    }
}

fn mixed_pointer_logs_the_stack_label_then_the_map_label_on(build: Build) {
    let (_e, m) = load("mixed_pointer", build);
    let (a, trace) = xdp_on_interface(&m, "log_interface_label", b"ABCDEFGH", 1);
    assert_eq!(a, XDP_PASS);
    assert!(trace[0].starts_with("if-1"), "stack label: {trace:?}");
    let (a, trace) = xdp_on_interface(&m, "log_interface_label", b"xyz", 1);
    assert_eq!(a, XDP_PASS);
    assert!(trace[0].starts_with("ABCDEFG"), "map label: {trace:?}");
    assert_eq!(xdp_on_interface(&m, "log_interface_label", b"!dropme!", 2).0, XDP_PASS, "named now");
    let (a, trace) = xdp_on_interface(&m, "log_interface_label", b"ABCDEFGH", 2);
    assert_eq!((a, trace[0].starts_with("!dropme")), (XDP_DROP, true), "{trace:?}");
    let entry = m.map("interface_labels").unwrap().get(&1u32.to_le_bytes()).unwrap();
    assert_eq!((&entry[..8], &entry[8..]), (&2u64.to_le_bytes()[..], &b"ABCDEFG\0"[..]));
}

#[test]
fn correlated_bounds_sums_at_most_the_packet_and_64_bytes() {
    for build in BUILDS {
        correlated_bounds_sums_at_most_the_packet_and_64_bytes_on(build);
    }
}

fn correlated_bounds_sums_at_most_the_packet_and_64_bytes_on(build: Build) {
    let (_e, m) = load("correlated_bounds", build);
    assert_eq!(m.invoke_xdp("sum_packet_bytes", &[1, 2, 3], 1).unwrap().0, XDP_PASS);
    assert_eq!(m.invoke_xdp("sum_packet_bytes", &[0x10; 100], 1).unwrap().0, XDP_DROP, "64 * 16 = 1024");
    assert_eq!(m.invoke_xdp("sum_packet_bytes", &[0xff; 3], 1).unwrap().0, XDP_PASS, "765");
    assert_eq!(m.invoke_xdp("sum_packet_bytes", &[], 1).unwrap().0, XDP_PASS, "empty packet");
    assert_eq!(u64_value(&m, "byte_totals", &0u32.to_le_bytes()), Some(6 + 1024 + 765));
    assert_eq!(u64_value(&m, "byte_totals", &1u32.to_le_bytes()), Some(4));
}

#[test]
fn stack_extent_logs_8_or_16_header_bytes() {
    for build in BUILDS {
        stack_extent_logs_8_or_16_header_bytes_on(build);
    }
}

fn stack_extent_logs_8_or_16_header_bytes_on(build: Build) {
    let (_e, m) = load("stack_extent", build);
    let (a, trace) = xdp_with_trace(&m, "log_packet_header", b"ABCDEFGHIJKLMNOPQR");
    assert_eq!(a, XDP_PASS);
    assert!(trace[0].starts_with("ABCDEFGH") && !trace[0].starts_with("ABCDEFGHI"), "odd: 8 bytes {trace:?}");
    let (_, trace) = xdp_with_trace(&m, "log_packet_header", b"BCDEFGHIJKLMNOPQRS");
    assert!(trace[0].starts_with("BCDEFGHIJKLMNOPQ") && !trace[0].starts_with("BCDEFGHIJKLMNOPQR"), "{trace:?}");
    let (a, trace) = xdp_with_trace(&m, "log_packet_header", b"A");
    assert_eq!((a, trace.len()), (XDP_PASS, 0), "too short to log");
    assert_eq!(u64_value(&m, "logged", &0u32.to_le_bytes()), Some(24));
}

#[test]
fn map_choice_counts_in_the_map_of_the_interface_parity() {
    for build in BUILDS {
        map_choice_counts_in_the_map_of_the_interface_parity_on(build);
    }
}

fn map_choice_counts_in_the_map_of_the_interface_parity_on(build: Build) {
    let (_e, m) = load("map_choice", build);
    let packet = [0u8; 14];
    for ifindex in [1, 2, 3] {
        assert_eq!(m.invoke_xdp("count_per_interface_parity", &packet, ifindex).unwrap().0, XDP_PASS);
    }
    let actions: Vec<u32> = (0..3).map(|_| m.invoke_xdp("count_per_interface_parity", &packet, 4).unwrap().0).collect();
    assert_eq!(actions, [XDP_PASS, XDP_PASS, XDP_DROP]);
    assert_eq!(u64_value(&m, "odd_ifindex", &0u32.to_le_bytes()), Some(1), "ifindex 1");
    assert_eq!(u64_value(&m, "odd_ifindex", &1u32.to_le_bytes()), Some(1), "ifindex 3");
    assert_eq!(u64_value(&m, "even_ifindex", &1u32.to_le_bytes()), Some(1), "ifindex 2");
    assert_eq!(u64_value(&m, "even_ifindex", &2u32.to_le_bytes()), Some(3), "ifindex 4");
}

fn sock_addr_context(ip: u32, port: u16) -> [u8; 64] {
    let mut c = [0u8; 64];
    c[0..4].copy_from_slice(&2u32.to_le_bytes());
    c[24..28].copy_from_slice(&ip.to_le_bytes());
    c[40..42].copy_from_slice(&port.to_be_bytes());
    c[44..48].copy_from_slice(&6u32.to_le_bytes());
    c
}

#[test]
fn connect_filter_rejects_blocked_ports_and_records_connectors() {
    for build in BUILDS {
        connect_filter_rejects_blocked_ports_and_records_connectors_on(build);
    }
}

fn connect_filter_rejects_blocked_ports_and_records_connectors_on(build: Build) {
    let (_e, m) = load("connect_filter", build);
    assert_eq!(m.invoke("filter_connect4", &mut sock_addr_context(0x0100007f, 80)).unwrap().0, 1, "proceed");
    m.map("blocked_ports").unwrap().update(&80u16.to_le_bytes(), &1u32.to_le_bytes(), 0);
    assert_eq!(m.invoke("filter_connect4", &mut sock_addr_context(0x0100007f, 80)).unwrap().0, 0, "reject");
    assert_eq!(m.invoke("filter_connect6", &mut sock_addr_context(0, 80)).unwrap().0, 0);
    assert_eq!(m.invoke("filter_connect6", &mut sock_addr_context(0, 443)).unwrap().0, 1);
    assert_eq!(m.map("last_connector").unwrap().len(), 1, "one destination recorded (twice)");
}

#[test]
fn legacy_maps_count_per_interface_and_port() {
    for build in BUILDS {
        legacy_maps_count_per_interface_and_port_on(build);
    }
}

fn legacy_maps_count_per_interface_and_port_on(build: Build) {
    let (_e, m) = load("legacy_maps", build);
    let mut p = vec![0u8; 40];
    p[36..38].copy_from_slice(&8080u16.to_be_bytes());
    m.invoke_xdp("count_legacy", &p, 33).unwrap();
    m.invoke_xdp("count_legacy", &p, 1).unwrap();
    assert_eq!(u64_value(&m, "interface_totals", &1u32.to_le_bytes()), Some(2), "33 & 31 == 1");
    assert_eq!(u64_value(&m, "port_counts", &8080u16.to_le_bytes()), Some(2));
    assert!(m.pinned.contains(&"interface_totals".to_string()), "pinned by name");
}

#[test]
fn map_types_update_every_kind_of_map() {
    for build in BUILDS {
        map_types_update_every_kind_of_map_on(build);
    }
}

fn map_types_update_every_kind_of_map_on(build: Build) {
    let (_e, m) = load("map_types", build);
    assert_eq!(m.invoke_xdp("count_by_map_type", &[0u8; 100], 4).unwrap().0, XDP_PASS);
    assert_eq!(m.invoke_xdp("count_by_map_type", &[0u8; 50], 4).unwrap().0, XDP_PASS);
    assert_eq!(u64_value(&m, "packet_counts", &0u32.to_le_bytes()), Some(2));
    assert_eq!(u64_value(&m, "cpu_bytes", &0u32.to_le_bytes()), Some(150));
    assert_eq!(u64_value(&m, "cpu_interface_bytes", &4u32.to_le_bytes()), Some(150));
    assert_eq!(m.map("recent_flows").unwrap().len(), 1);
    m.map("interface_policy").unwrap().update(&4u32.to_le_bytes(), &XDP_DROP.to_le_bytes(), 0);
    assert_eq!(m.invoke_xdp("count_by_map_type", &[0u8; 10], 4).unwrap().0, XDP_DROP);
    assert_eq!(m.map("recent_flows").unwrap().len(), 0, "the dropped flow is forgotten");
}

#[test]
fn sockops_flows_track_established_and_deleted_connections() {
    for build in BUILDS {
        sockops_flows_track_established_and_deleted_connections_on(build);
    }
}

fn sockops_flows_track_established_and_deleted_connections_on(build: Build) {
    let (_e, m) = load("sockops_flows", build);
    let context = |op: u32| {
        let mut c = [0u8; 64];
        c[0..4].copy_from_slice(&op.to_le_bytes());
        c[28..32].copy_from_slice(&0x0a000001u32.to_le_bytes());
        c[44..48].copy_from_slice(&443u32.to_le_bytes());
        c
    };
    m.invoke("track_flows", &mut context(1)).unwrap();
    let flows = m.map("active_flows").unwrap();
    assert_eq!(flows.len(), 1);
    m.invoke("track_flows", &mut context(0)).unwrap();
    assert_eq!(flows.len(), 1, "TCP_CONNECT is not tracked");
    m.invoke("track_flows", &mut context(3)).unwrap();
    assert_eq!(flows.len(), 0, "deleted");
}

#[test]
fn an_unverifiable_program_is_refused_with_the_verifiers_diagnostics() {
    let unsafe_objects: Vec<PathBuf> = std::fs::read_dir(samples_dir().join("unsafe"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    assert!(unsafe_objects.len() >= 5, "samples/unsafe holds the unsafe variants");
    for object in unsafe_objects {
        let bytes = std::fs::read(&object).unwrap();
        let name = object.file_name().unwrap().to_string_lossy().into_owned();
        match build_driver(&bytes, &name, &SessionOptions::default()) {
            Err(DriverError::Unverified { rejections, .. }) => assert!(!rejections.is_empty()),
            other => panic!("{name}: expected a verification failure, got {:?}", other.map(|b| b.len())),
        }
    }
}

/// A `sample_program_context_t` (contract §7.2) with no packet and `uint32_data` set.
fn sample_context(uint32_data: u32) -> Vec<u8> {
    let mut ctx = vec![0u8; 32];
    ctx[16..20].copy_from_slice(&uint32_data.to_le_bytes());
    ctx
}

#[test]
fn kfunc_calls_reach_the_provider_through_the_btf_resolved_function_table() {
    BUILDS.into_iter().for_each(kfunc_calls_reach_the_provider_on);
}

fn kfunc_calls_reach_the_provider_on(build: Build) {
    let (_e, m) = load("kfunc", build);
    let info = &m.programs[0].info;
    assert_eq!(
        info.btf_functions,
        [(
            "sample_ebpf_extension_btf_lookup".to_string(),
            emulator::Guid(bpf2sys::platform::windows::SAMPLE_BTF_FUNCTION_MODULE.to_bytes())
        )]
    );
    let (ret, _) = m.invoke("lookup_through_kfunc", &mut sample_context(1234)).unwrap();
    assert_eq!(ret, 1234 + 8, "key + value_size");
    assert_eq!(u64_value(&m, "lookup_results", &0u32.to_le_bytes()), Some(1234), "the kfunc stored the key");
    assert_eq!(u64_value(&m, "lookup_results", &1u32.to_le_bytes()), Some(1242));
}

#[test]
fn kfunc_samples_need_runtime_1_5_and_say_so() {
    let bytes = std::fs::read(samples_dir().join("kfunc.o")).unwrap();
    let err = build_driver(&bytes, "kfunc.o", &SessionOptions::default()).unwrap_err().to_string();
    assert!(err.contains("kfuncs") && err.contains("--runtime-version 1.5.0"), "{err}");
}

#[test]
fn named_global_sections_are_separate_maps_with_their_initial_values() {
    BUILDS.into_iter().for_each(named_global_sections_are_separate_maps_on);
}

fn named_global_sections_are_separate_maps_on(build: Build) {
    let (_e, m) = load("named_globals", build);
    let value = |map: &str| m.map(map).unwrap_or_else(|| panic!("map {map}")).get(&0u32.to_le_bytes()).unwrap();
    assert_eq!(value(".rodata.config"), 40u32.to_le_bytes());
    assert_eq!(value(".data.custom"), 1000u64.to_le_bytes());
    assert_eq!(value(".bss.counters"), 0u64.to_le_bytes());
    assert!(String::from_utf8_lossy(&value(".rodata.str1.1")).contains("short packet: %u bytes"));
    assert_eq!(m.invoke_xdp("count_short_packets", &[0u8; 60], 1).unwrap().0, XDP_PASS);
    let (action, _) = m.invoke_xdp("count_short_packets", &[0u8; 20], 1).unwrap();
    assert_eq!(action, XDP_DROP);
    let packet = [0u8; 10];
    let mut ctx = [0u8; 32];
    let start = packet.as_ptr() as u64;
    ctx[0..8].copy_from_slice(&start.to_le_bytes());
    ctx[8..16].copy_from_slice(&(start + packet.len() as u64).to_le_bytes());
    let (action, state) = m.invoke("count_short_packets", &mut ctx).unwrap();
    assert_eq!(action, XDP_DROP);
    assert!(state.trace.iter().any(|t| t.starts_with("short packet: %u bytes")), "{:?}", state.trace);
    assert_eq!(value(".data.custom"), 1003u64.to_le_bytes());
    assert_eq!(value(".bss.counters"), 2u64.to_le_bytes());
}

#[test]
fn legacy_inner_map_index_names_a_map_in_another_section() {
    BUILDS.into_iter().for_each(legacy_inner_map_index_names_a_map_on);
}

fn legacy_inner_map_index_names_a_map_on(build: Build) {
    let (_e, m) = load("legacy_inner_maps", build);
    let outer = m.map("port_tables").unwrap();
    let entry = m.metadata.maps.iter().find(|d| d.name == "port_tables").unwrap();
    assert_eq!(entry.inner_map_idx, 1, "the module-wide index of port_template");
    assert_eq!(m.metadata.maps[1].name, "port_template");
    let mut packet = vec![0u8; 40];
    packet[36..38].copy_from_slice(&8080u16.to_be_bytes());
    assert_eq!(m.invoke_xdp("filter_by_port_table", &packet, 1).unwrap().0, XDP_PASS);
    assert_eq!(u64_value(&m, "misses", &0u32.to_le_bytes()), Some(1), "no table for interface 1 yet");
    let template = m.map("port_template").unwrap();
    outer.set_inner_map(1, std::rc::Rc::as_ptr(&template) as usize).unwrap();
    template.update(&8080u16.to_le_bytes(), &XDP_DROP.to_le_bytes(), 0);
    assert_eq!(m.invoke_xdp("filter_by_port_table", &packet, 1).unwrap().0, XDP_DROP);
    assert_eq!(u64_value(&m, "misses", &0u32.to_le_bytes()), Some(1));
}

#[test]
fn a_call_to_an_undefined_symbol_leaves_out_only_that_program() {
    TARGETS.into_iter().for_each(a_call_to_an_undefined_symbol_leaves_out_only_that_program_on);
}

fn a_call_to_an_undefined_symbol_leaves_out_only_that_program_on(target: Target) {
    use bpf2sys::driver::Session;
    let bytes = std::fs::read(samples_dir().join("unresolved_call.o")).unwrap();
    let options = SessionOptions { target, ..SessionOptions::default() };
    let built = Session::new(options).unwrap().build_report(&bytes, "unresolved_call.o").unwrap();
    assert_eq!(built.left_out.len(), 1);
    assert_eq!(built.left_out[0].name, "pass_checked");
    assert!(built.left_out[0].reason.contains("undefined symbol 'checksum_from_elsewhere'"), "{:?}", built.left_out);
    let mut emulator = emulator::emulator();
    let m = emulator.load(&built.image).unwrap();
    assert!(m.program_index("pass_checked").is_none());
    assert_eq!(m.invoke_xdp("pass_plain", &[0u8; 20], 1).unwrap().0, XDP_PASS);
    assert_eq!(m.invoke_xdp("pass_plain", &[0u8; 10], 1).unwrap().0, XDP_DROP);
}
