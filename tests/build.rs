//! Builds the C benchmark host that the engines running machine code call (`src/bench/host_engines.c`, which
//! includes the native baseline's `host_maps.h`; see `bench::host_c`) with the native baseline's compiler and
//! optimisation level, clang -O2, so that their helpers are the baseline's machine code.

use std::process::Command;

fn main() {
    for file in ["host_engines.c", "host_maps.h", "host_common.h"] {
        println!("cargo:rerun-if-changed=src/bench/{file}");
    }
    let mut build = cc::Build::new();
    if Command::new("clang").arg("--version").output().is_ok_and(|o| o.status.success()) {
        build.compiler("clang");
    } else {
        // The bench refuses to run without clang (its limit); the tests still need the host, so build it anyway.
        println!("cargo:warning=clang not found: the C benchmark host is built with the default C compiler");
    }
    build
        .file("src/bench/host_engines.c")
        .opt_level(2)
        // Hidden: the helpers are called directly, never through the PLT, like the native baseline's.
        .flag("-fvisibility=hidden")
        .flag_if_supported("-Wno-unused-function")
        .compile("bench_host");
}
