//! Every committed sample object loads, and `bpf2sys inspect --format json` reports what its C source declares.
//!
//! Two independent checks per sample:
//! - a table transcribed from each `samples/*.c` (programs and their sections, program types, maps with type and
//!   key/value/max_entries, helper ids), compared with inspect's report;
//! - a scan of the C source itself: every `SEC("...")` program section, every map symbol and every helper the
//!   source calls (resolved to an id through `samples/include/bpf2sys.h`) must appear in the report.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples")
}

fn inspect(object: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_bpf2sys"))
        .args(["inspect", "--format", "json"])
        .arg(object)
        .output()
        .expect("run bpf2sys");
    assert!(out.status.success(), "inspect {} failed: {}", object.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("inspect prints JSON")
}

/// A map as the source declares it: name, type name, key size, value size, max_entries.
type MapFact = (&'static str, &'static str, u64, u64, u64);

struct Expected {
    sample: &'static str,
    /// (program, section, program type)
    programs: &'static [(&'static str, &'static str, &'static str)],
    maps: &'static [MapFact],
    /// Helper ids called anywhere in the object.
    helpers: &'static [u64],
}

const EXPECTED: &[Expected] = &[
    Expected {
        sample: "core_reloc",
        programs: &[("count_bytes_core", "xdp", "xdp")],
        maps: &[("bytes_seen", "array", 4, 8, 1)],
        helpers: &[1],
    },
    Expected {
        sample: "droppacket",
        programs: &[("drop_empty_udp", "xdp", "xdp")],
        maps: &[("dropped_packet_map", "array", 4, 8, 256)],
        helpers: &[1],
    },
    Expected {
        sample: "map_types",
        programs: &[("count_by_map_type", "xdp", "xdp")],
        maps: &[
            ("packet_counts", "array", 4, 8, 16),
            ("interface_policy", "hash", 4, 4, 1024),
            ("cpu_bytes", "percpu_array", 4, 8, 1),
            ("cpu_interface_bytes", "percpu_hash", 4, 8, 64),
            ("recent_flows", "lru_hash", 8, 8, 4096),
        ],
        helpers: &[1, 2, 3, 9],
    },
    Expected {
        sample: "map_in_map",
        programs: &[("lookup_nested", "xdp", "xdp")],
        maps: &[
            ("default_ports", "hash", 2, 1, 128),
            ("ports_by_interface", "array_of_maps", 4, 4, 4),
            ("counters_by_tenant", "hash_of_maps", 4, 4, 16),
            ("counters_by_tenant.inner", "array", 4, 8, 8),
        ],
        helpers: &[1],
    },
    Expected {
        sample: "tail_call",
        programs: &[
            ("dispatch", "xdp/dispatch", "xdp"),
            ("stage_ipv4", "xdp/ipv4", "xdp"),
            ("stage_ipv6", "xdp/ipv6", "xdp"),
        ],
        maps: &[("stages", "prog_array", 4, 4, 8), ("stage_hits", "array", 4, 8, 8)],
        helpers: &[1, 5],
    },
    Expected {
        sample: "bpf_calls",
        programs: &[("measure", "xdp", "xdp"), ("drop_large", "xdp/small_only", "xdp")],
        maps: &[("length_histogram", "array", 4, 8, 2)],
        helpers: &[1],
    },
    Expected {
        sample: "globals",
        programs: &[("threshold_filter", "xdp", "xdp")],
        maps: &[
            ("globals.data", "array", 4, 4, 1),
            ("globals.rodata", "array", 4, 8, 1),
            ("globals.bss", "array", 4, 16, 1),
        ],
        helpers: &[],
    },
    Expected {
        sample: "atomics",
        programs: &[("update_counters", "xdp", "xdp")],
        maps: &[("shared_counters", "array", 4, 40, 1)],
        helpers: &[1],
    },
    Expected {
        sample: "bounded_loop",
        programs: &[("sum_prefix", "xdp", "xdp")],
        maps: &[("checksum_counts", "hash", 4, 8, 256)],
        helpers: &[1, 2],
    },
    Expected {
        sample: "bind_policy",
        programs: &[("authorize_bind", "bind", "bind")],
        maps: &[("denied_processes", "hash", 8, 4, 1024), ("bind_counts", "lru_hash", 8, 8, 1024)],
        helpers: &[1, 2],
    },
    Expected {
        sample: "connect_filter",
        programs: &[
            ("filter_connect4", "cgroup/connect4", "sock_addr"),
            ("filter_connect6", "cgroup/connect6", "sock_addr"),
        ],
        maps: &[("blocked_ports", "hash", 2, 4, 64), ("last_connector", "lru_hash", 8, 8, 512)],
        helpers: &[1, 2, 65536],
    },
    Expected {
        sample: "sockops_flows",
        programs: &[("track_flows", "sockops", "sockops")],
        maps: &[("active_flows", "hash", 8, 16, 8192)],
        helpers: &[2, 3, 9, 65536],
    },
    Expected {
        sample: "legacy_maps",
        programs: &[("count_legacy", "xdp", "xdp")],
        maps: &[("port_counts", "hash", 2, 8, 1024), ("interface_totals", "percpu_array", 4, 8, 32)],
        helpers: &[1, 2],
    },
    Expected {
        sample: "packet_length",
        programs: &[("log_packet_prefix", "xdp", "xdp")],
        maps: &[("logged_bytes", "array", 4, 8, 2)],
        helpers: &[1, 12],
    },
    Expected {
        sample: "spilled_lookup",
        programs: &[("count_by_first_byte", "xdp", "xdp")],
        maps: &[("port_hits", "hash", 4, 8, 64)],
        helpers: &[1, 2],
    },
    Expected {
        sample: "stack_counter",
        programs: &[("sum_with_stack_counter", "xdp", "xdp")],
        maps: &[("byte_sums", "array", 4, 8, 1)],
        helpers: &[1],
    },
    Expected {
        sample: "map_choice",
        programs: &[("count_per_interface_parity", "xdp", "xdp")],
        maps: &[("even_ifindex", "array", 4, 8, 4), ("odd_ifindex", "array", 4, 8, 4)],
        helpers: &[1],
    },
    Expected {
        sample: "mixed_pointer",
        programs: &[("log_interface_label", "xdp", "xdp")],
        maps: &[("interface_labels", "array", 4, 16, 4)],
        helpers: &[1, 12],
    },
    Expected {
        sample: "correlated_bounds",
        programs: &[("sum_packet_bytes", "xdp", "xdp")],
        maps: &[("byte_totals", "array", 4, 8, 2)],
        helpers: &[1],
    },
    Expected {
        sample: "stack_extent",
        programs: &[("log_packet_header", "xdp", "xdp")],
        maps: &[("logged", "array", 4, 8, 2)],
        helpers: &[1, 12],
    },
    Expected {
        sample: "kfunc",
        programs: &[("lookup_through_kfunc", "sample_ext", "sample")],
        maps: &[("lookup_results", "array", 4, 8, 2)],
        helpers: &[1],
    },
    Expected {
        sample: "named_globals",
        programs: &[("count_short_packets", "xdp", "xdp")],
        maps: &[
            (".rodata.config", "array", 4, 4, 1),
            (".data.custom", "array", 4, 8, 1),
            (".bss.counters", "array", 4, 8, 1),
            (".rodata.str1.1", "array", 4, 23, 1),
        ],
        helpers: &[13],
    },
    Expected {
        sample: "legacy_inner_maps",
        programs: &[("filter_by_port_table", "xdp", "xdp")],
        maps: &[
            ("port_tables", "array_of_maps", 4, 4, 4),
            ("port_template", "hash", 2, 4, 64),
            ("misses", "array", 4, 8, 1),
        ],
        helpers: &[1],
    },
    Expected {
        sample: "unresolved_call",
        // `pass_checked` (section xdp/checked) calls an undefined function: refused, reported apart.
        programs: &[("pass_plain", "xdp/plain", "xdp")],
        maps: &[],
        helpers: &[],
    },
];

fn str_set<'a>(values: impl Iterator<Item = &'a Value>, key: &str) -> BTreeSet<String> {
    values.filter_map(|v| v[key].as_str().map(str::to_string)).collect()
}

fn helper_ids(report: &Value) -> BTreeSet<u64> {
    report["programs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["helpers"].as_array().unwrap().iter().map(|h| h["id"].as_u64().unwrap()))
        .collect()
}

#[test]
fn every_sample_is_described_and_loads() {
    let mut on_disk: BTreeSet<String> = std::fs::read_dir(samples_dir())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "c").then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    for e in EXPECTED {
        assert!(on_disk.remove(e.sample), "samples/{}.c is missing", e.sample);
        let object = samples_dir().join(format!("{}.o", e.sample));
        let bytes = std::fs::read(&object).unwrap();
        bpf2sys::elf::load(&bytes, &format!("{}.o", e.sample)).unwrap_or_else(|err| panic!("{}: {err}", e.sample));
    }
    assert!(on_disk.is_empty(), "samples without expectations in this test: {on_disk:?}");
}

#[test]
fn inspect_reports_what_each_source_declares() {
    for e in EXPECTED {
        let report = inspect(&samples_dir().join(format!("{}.o", e.sample)));
        assert_eq!(report["module"], e.sample);
        let programs = report["programs"].as_array().unwrap();
        let got: BTreeSet<(String, String, String)> = programs
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["section"].as_str().unwrap().to_string(),
                    p["program_type"]["name"].as_str().unwrap_or("none").to_string(),
                )
            })
            .collect();
        let want: BTreeSet<(String, String, String)> =
            e.programs.iter().map(|(n, s, t)| (n.to_string(), s.to_string(), t.to_string())).collect();
        assert_eq!(got, want, "{}: programs", e.sample);
        for p in programs {
            assert!(p["instruction_count"].as_u64().unwrap() > 0, "{}: empty program", e.sample);
            assert!(p["line_info_count"].as_u64().unwrap() > 0, "{}: built with -g but no line info", e.sample);
        }

        let maps = report["maps"].as_array().unwrap();
        let got: BTreeSet<(String, String, u64, u64, u64)> = maps
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_string(),
                    m["type"].as_str().unwrap().to_string(),
                    m["key_size"].as_u64().unwrap(),
                    m["value_size"].as_u64().unwrap(),
                    m["max_entries"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: BTreeSet<(String, String, u64, u64, u64)> =
            e.maps.iter().map(|&(n, t, k, v, m)| (n.to_string(), t.to_string(), k, v, m)).collect();
        assert_eq!(got, want, "{}: maps", e.sample);

        let want_helpers: BTreeSet<u64> = e.helpers.iter().copied().collect();
        assert_eq!(helper_ids(&report), want_helpers, "{}: helpers", e.sample);
    }
}

/// Helper name → id, from the `BPF2SYS_HELPER(ret, name, id, ...)` lines of our header.
fn header_helpers() -> Vec<(String, u64)> {
    let header = std::fs::read_to_string(samples_dir().join("include/bpf2sys.h")).unwrap();
    header
        .lines()
        .filter_map(|l| l.trim().strip_prefix("BPF2SYS_HELPER("))
        .map(|rest| {
            let fields: Vec<&str> = rest.split(',').map(str::trim).collect();
            (fields[1].to_string(), fields[2].parse().unwrap())
        })
        .collect()
}

#[test]
fn inspect_agrees_with_a_scan_of_each_source() {
    let helpers = header_helpers();
    assert!(helpers.len() >= 35, "the header declares every general helper");
    for e in EXPECTED {
        let source = std::fs::read_to_string(samples_dir().join(format!("{}.c", e.sample))).unwrap();
        let report = inspect(&samples_dir().join(format!("{}.o", e.sample)));

        // Program sections: every SEC("...") other than .maps / maps.
        let sections: BTreeSet<String> = source
            .match_indices("SEC(\"")
            .map(|(i, m)| {
                let rest = &source[i + m.len()..];
                rest[..rest.find('"').unwrap()].to_string()
            })
            .filter(|s| s != ".maps" && s != "maps" && !s.starts_with("maps/") && !s.starts_with(".rodata"))
            .filter(|s| !s.starts_with(".data") && !s.starts_with(".bss"))
            .collect();
        let mut reported = str_set(report["programs"].as_array().unwrap().iter(), "section");
        reported.extend(str_set(report["refused_programs"].as_array().unwrap().iter(), "section"));
        assert_eq!(sections, reported, "{}: program sections", e.sample);

        // Map symbols: `} name SEC(".maps")` and legacy `struct bpf_map_def name`.
        let map_names = str_set(report["maps"].as_array().unwrap().iter(), "name");
        for (i, _) in source.match_indices(" SEC(\".maps\")") {
            let name = source[..i].rsplit(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap();
            assert!(map_names.contains(name), "{}: map {name} missing from {map_names:?}", e.sample);
        }
        for (i, m) in source.match_indices("struct bpf_map_def ") {
            let rest = &source[i + m.len()..];
            let name = &rest[..rest.find(|c: char| !c.is_alphanumeric() && c != '_').unwrap()];
            assert!(map_names.contains(name), "{}: legacy map {name} missing", e.sample);
        }

        // Helpers: every header helper the source calls, by id.
        let called: BTreeSet<u64> =
            helpers.iter().filter(|(name, _)| source.contains(&format!("{name}("))).map(|(_, id)| *id).collect();
        assert_eq!(called, helper_ids(&report), "{}: helpers called in the source", e.sample);
    }
}

#[test]
fn inspect_json_shows_kfuncs_global_sections_legacy_records_and_refusals() {
    let kfunc = inspect(&samples_dir().join("kfunc.o"));
    assert_eq!(
        kfunc["kfuncs"],
        serde_json::json!([{
            "slot": 0, "id": 1, "name": "sample_ebpf_extension_btf_lookup",
            "module_guid": "8f6c1f83-ce4c-4b58-8b91-654a29e23b7c", "weak": false
        }])
    );
    let relocs = kfunc["programs"][0]["relocations"].as_array().unwrap();
    assert!(relocs.iter().any(|r| r["kind"] == "kfunc" && r["function"] == "sample_ebpf_extension_btf_lookup"));

    let globals = inspect(&samples_dir().join("named_globals.o"));
    let sections: Vec<(String, String)> = globals["global_sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["section"].as_str().unwrap().to_string(), g["kind"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        sections,
        [
            (".rodata.config", "rodata"),
            (".data.custom", "data"),
            (".bss.counters", "bss"),
            (".rodata.str1.1", "rodata")
        ]
        .map(|(s, k)| (s.to_string(), k.to_string()))
    );

    let legacy = inspect(&samples_dir().join("legacy_inner_maps.o"));
    let records = legacy["legacy_map_records"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[2]["section"], "maps/inner");
    assert_eq!(records[2]["offset"], 32);
    assert_eq!(records[2]["layout"], "ebpf_map_definition_in_file_t");
    assert_eq!(legacy["maps"][0]["inner_map"], "port_template");

    let refused = inspect(&samples_dir().join("unresolved_call.o"));
    assert_eq!(refused["refused_programs"][0]["name"], "pass_checked");
    assert!(refused["refused_programs"][0]["reason"].as_str().unwrap().contains("'checksum_from_elsewhere'"));
}

#[test]
fn variants_built_with_other_cpus_and_without_debug_info_load() {
    let dir = samples_dir().join("variants");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let module =
            bpf2sys::elf::load(&std::fs::read(&path).unwrap(), &name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let base = name.rsplit_once('-').map_or(name.as_str(), |(b, _)| b);
        let base = base.strip_suffix("-v1").or(base.strip_suffix("-v2")).or(base.strip_suffix("-v3")).unwrap_or(base);
        let reference_path = samples_dir().join(format!("{base}.o"));
        let reference = bpf2sys::elf::load(&std::fs::read(&reference_path).unwrap(), &name).unwrap();
        // Same programs and maps whatever the CPU level or debug info.
        let names = |m: &bpf2sys::program::Module| m.programs.iter().map(|p| p.name.clone()).collect::<BTreeSet<_>>();
        assert_eq!(names(&module), names(&reference), "{name}");
        assert_eq!(
            module.maps,
            reference
                .maps
                .iter()
                .map(|m| {
                    // Without BTF there are no type ids.
                    let mut m = m.clone();
                    if name.contains("nodebug") {
                        m.id = 0;
                    }
                    m
                })
                .collect::<Vec<_>>(),
            "{name}"
        );
        if name.contains("nodebug") {
            assert!(module.programs.iter().all(|p| p.line_info.is_empty()), "{name}: no -g, no line info");
        } else {
            assert!(module.programs.iter().all(|p| !p.line_info.is_empty()), "{name}: -g gives line info");
        }
        count += 1;
    }
    assert!(count >= 8, "expected the committed variants, found {count}");
}

#[test]
fn inspect_rejects_a_corrupt_object_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.o");
    let mut bytes = std::fs::read(samples_dir().join("droppacket.o")).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&path, &bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bpf2sys")).arg("inspect").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.o") && stderr.starts_with("error:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
