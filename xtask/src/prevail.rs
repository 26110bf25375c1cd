//! `cargo xtask prevail [DIR] [--verbose]`: runs PREVAIL's YAML suites through our verifier and prints a
//! per-file table, then `N passed, M failed, K skipped`. Exit status 1 on any unsound accept.

use std::path::PathBuf;

use bpf2sys_tests::prevail::{run_dir, Outcome};

pub fn run(dir: Option<PathBuf>, verbose: bool) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(|| PathBuf::from("../shared/corpora/prevail-test-data"));
    let results = run_dir(&dir).map_err(anyhow::Error::msg)?;
    println!("{:<16} {:>6} {:>6} {:>6} {:>8}", "file", "pass", "fail", "skip", "unsound");
    let (mut p, mut f, mut s, mut u) = (0, 0, 0, 0);
    for r in &results {
        let pass = r.count(|o| *o == Outcome::Pass);
        let fail = r.count(|o| matches!(o, Outcome::Fail { .. }));
        let skip = r.count(|o| matches!(o, Outcome::Skip(_)));
        let unsound = r.count(|o| matches!(o, Outcome::Fail { unsound: true, .. }));
        println!("{:<16} {:>6} {:>6} {:>6} {:>8}", r.file.trim_end_matches(".yaml"), pass, fail, skip, unsound);
        for (name, o) in &r.cases {
            match o {
                Outcome::Fail { unsound, detail } if verbose || *unsound => {
                    println!("  FAIL{} {}: {name}: {detail}", if *unsound { " (UNSOUND)" } else { "" }, r.file)
                }
                Outcome::Skip(reason) => println!("  skip {}: {name}: {reason}", r.file),
                _ => {}
            }
        }
        (p, f, s, u) = (p + pass, f + fail, s + skip, u + unsound);
    }
    let agreement = 100.0 * p as f64 / (p + f).max(1) as f64;
    println!("unsound accepts: {u}; agreement on run cases: {agreement:.1}%");
    println!("{p} passed, {f} failed, {s} skipped");
    if u > 0 {
        anyhow::bail!("{u} unsound accepts");
    }
    Ok(())
}
