//! Issue 16's done-when figures, computed from the tables of one `cargo xtask bench` run: generated code against
//! the limit (geometric mean and worst program), against rbpf's JIT, `unrolled_xdp` to a signed driver (end to
//! end, signing, lower+codegen per 1k slots), batch scaling and byte-identity, peak RSS of a 100k-slot program.

use bpf2sys_tests::bench::programs::PROGRAMS;
use bpf2sys_tests::bench::report::{Cell, SpeedRow};
use bpf2sys_tests::bench::timing;

use super::batch::BatchFigures;
use super::latency::LatencyFigures;
use super::Engine;

/// Goals (issue 16): generated code geomean ≤ 1.00x of clang -O2 with no program above 1.15x; faster than rbpf's
/// JIT wherever it runs; `unrolled_xdp` ≤ 5 ms end to end, signing ≤ 1 ms, lower+codegen ≤ 1 ms per 1k slots;
/// batch scaling ≥ 1.8x from 1 to 2 cores with byte-identical outputs; peak RSS ≤ 128 MiB at 100k slots.
pub fn goals_section(
    rows: &[SpeedRow],
    limit: usize,
    latency: Option<&LatencyFigures>,
    batch: Option<&BatchFigures>,
) -> String {
    let verdict = |met: bool| if met { "met" } else { "not met" };
    let find = |engine: Engine| rows.iter().find(|r| r.engine == engine.label());
    let mut out = String::new();
    if let (Some(ours), Some(limit_row)) = (find(Engine::Bpf2sysNative), rows.get(limit)) {
        let ratios: Vec<(&str, f64)> = PROGRAMS
            .iter()
            .zip(ours.cells.iter().zip(&limit_row.cells))
            .filter_map(|(p, (a, b))| Some((*p, a.time()? / b.time()?)))
            .collect();
        let values: Vec<f64> = ratios.iter().map(|(_, r)| *r).collect();
        if let (Some(g), Some((worst, max))) =
            (timing::geometric_mean(&values), ratios.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)))
        {
            let all = ratios.len() == PROGRAMS.len();
            out.push_str(&format!(
                "- bpf2sys native code vs {}: geometric mean **{g:.2}x** over {} of {} programs, worst {worst} \
                 **{max:.2}x** (goal ≤ 1.00x and none above 1.15x: {})\n",
                limit_row.engine,
                ratios.len(),
                PROGRAMS.len(),
                verdict(all && g <= 1.00 && max <= 1.15)
            ));
        }
        if let Some(jit) = find(Engine::RbpfJit) {
            let mut faster = Vec::new();
            let mut slower = Vec::new();
            let mut not_run = Vec::new();
            for (i, p) in PROGRAMS.iter().enumerate() {
                match (ours.cells[i].time(), jit.cells.get(i).and_then(Cell::time)) {
                    (Some(a), Some(b)) if a < b => faster.push(format!("{p} ({:.2}x of rbpf)", a / b)),
                    (Some(a), Some(b)) => slower.push(format!("{p} ({:.2}x of rbpf)", a / b)),
                    _ => not_run.push(p.to_string()),
                }
            }
            let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
            out.push_str(&format!(
                "- vs rbpf JIT: faster on {}; slower on {}; not compared (rbpf cannot run it) on {} (goal: faster on \
                 every program rbpf runs: {})\n",
                list(&faster),
                list(&slower),
                list(&not_run),
                verdict(slower.is_empty())
            ));
        }
    }
    let ms = |us: Option<f64>| us.map_or("not measured".to_string(), |us| format!("**{:.2} ms**", us / 1000.0));
    match latency {
        Some(l) => {
            out.push_str(&format!(
                "- `unrolled_xdp.o` (2,316 slots) to a signed `.sys`: end to end {} median (goal ≤ 5 ms: {}); \
                 signing {} (RSA-2048; goal ≤ 1 ms: {}); lower+codegen {} per 1k slots (goal ≤ 1 ms: {})\n",
                ms(l.unrolled_end_to_end_us),
                verdict(l.unrolled_end_to_end_us.is_some_and(|us| us <= 5_000.0)),
                ms(l.unrolled_sign_us),
                verdict(l.unrolled_sign_us.is_some_and(|us| us <= 1_000.0)),
                ms(l.unrolled_lower_us_per_1k),
                verdict(l.unrolled_lower_us_per_1k.is_some_and(|us| us <= 1_000.0)),
            ));
            match l.generated_100k_peak_rss_mib {
                Some(mib) => out.push_str(&format!(
                    "- peak RSS building the generated 100k-slot program: **{mib:.1} MiB** (goal ≤ 128 MiB: {})\n",
                    verdict(mib <= 128.0)
                )),
                None => out.push_str("- peak RSS of the generated 100k-slot program: not measured\n"),
            }
        }
        None => out.push_str("- compile latency: not measured in this run (--no-compile)\n"),
    }
    match batch {
        Some(b) => {
            let scaling = b.scaling();
            out.push_str(&format!(
                "- batch build: {:.1} objects/s on 1 core, {} on all cores; scaling {} (goal ≥ 1.8x from 1 to 2 \
                 cores: {}); outputs byte-identical to the one-thread build: {}\n",
                b.one_core.objects_per_second,
                b.all_cores.as_ref().map_or("–".to_string(), |a| format!("{:.1} objects/s", a.objects_per_second)),
                scaling.map_or("–".to_string(), |s| format!("**{s:.2}x**")),
                verdict(scaling.is_some_and(|s| s >= 1.8)),
                if b.identical() { "yes" } else { "**NO**" }
            ));
        }
        None => out.push_str("- batch build: not measured in this run (--no-batch)\n"),
    }
    out
}
