//! `bpf2sys verify <obj> [--program NAME] [--platform windows|linux] [--type TYPE] [--format json] [--show-state]
//! [--max-instructions N]`
//!
//! Exit status: 0 if every selected program verifies, 1 if any is rejected (diagnostics printed), 2 if the
//! input is unusable (unreadable or malformed object, unknown program, platform or program type).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bpf2sys::verifier::{diagnostic, verify_program, VerifierOptions};

use super::common::{file_name, InputLimit, OutputFormat, PlatformArg};

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// eBPF ELF object built by `clang -target bpf`.
    pub object: PathBuf,
    /// Verify only this program (function name); default: all.
    #[arg(long)]
    pub program: Option<String>,
    /// Platform whose program types and helpers apply.
    #[arg(long, value_enum, default_value_t = PlatformArg::Windows)]
    pub platform: PlatformArg,
    /// Program type name (e.g. `xdp`); default: from each program's ELF section name.
    #[arg(long = "type")]
    pub program_type: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Print the proven invariant before every instruction of accepted programs.
    #[arg(long)]
    pub show_state: bool,
    /// Reject divisions whose divisor may be zero (RFC 9669 defines them; allowed by default).
    #[arg(long)]
    pub forbid_division_by_zero: bool,
    #[command(flatten)]
    pub input: InputLimit,
    /// Budget for the proven number of instructions executed per invocation (nested loop bounds multiply).
    #[arg(long, value_name = "N", default_value_t = bpf2sys::verifier::DEFAULT_MAX_INSTRUCTIONS)]
    pub max_instructions: u64,
}

pub fn run(args: &VerifyArgs) -> Result<ExitCode> {
    let platform = args.platform.platform();
    let bytes = args.input.read(&args.object)?;
    let module = bpf2sys::elf::load_with(&bytes, &file_name(&args.object), platform.conventions)
        .with_context(|| args.object.display().to_string())?;
    platform.check_maps(&module.maps).with_context(|| args.object.display().to_string())?;
    for c in module.core_relocations.iter().filter(|c| args.program.as_ref().is_none_or(|n| c.program == *n)) {
        eprintln!("warning: {}: {}", args.object.display(), c.warning());
    }
    let selected: Vec<usize> = (0..module.programs.len())
        .filter(|&i| args.program.as_ref().is_none_or(|n| module.programs[i].name == *n))
        .collect();
    let refused: Vec<_> =
        module.refused_programs.iter().filter(|r| args.program.as_ref().is_none_or(|n| r.name == *n)).collect();
    if selected.is_empty() && refused.is_empty() {
        match &args.program {
            Some(n) => bail!("{}: no program named `{n}`", args.object.display()),
            None => bail!("{}: the object contains no programs", args.object.display()),
        }
    }
    let options = VerifierOptions {
        allow_division_by_zero: !args.forbid_division_by_zero,
        record_invariants: args.show_state,
        max_instructions: args.max_instructions,
        ..VerifierOptions::default()
    };
    let json = args.format == OutputFormat::Json;
    let mut rejected = !refused.is_empty();
    let mut results = Vec::new();
    // Programs the front end could not build (they reach an undefined symbol) are not verified.
    for r in refused {
        if json {
            results.push(serde_json::json!({"program": r.name, "section": r.section_name, "verified": false, "refused": r.reason}));
        } else {
            eprintln!("error: program `{}` (section `{}`) cannot be built: {}", r.name, r.section_name, r.reason);
        }
    }
    for i in selected {
        let program = &module.programs[i];
        let pt = match &args.program_type {
            Some(t) => platform.program_type_by_name(t),
            None => platform.program_type_for_section(&program.section_name).map(|(pt, _)| pt),
        };
        let Some(pt) = pt else {
            bail!(
                "{}: program `{}` (section `{}`): no {} program type {}",
                args.object.display(),
                program.name,
                program.section_name,
                platform.name,
                args.program_type
                    .as_ref()
                    .map_or("matches the section name; pass --type".to_string(), |t| format!("named `{t}`"))
            );
        };
        match verify_program(&module, i, platform, pt, &options).map(|v| v.into_report()) {
            Ok(report) => {
                if json {
                    results.push(serde_json::json!({"program": program.name, "type": pt.name, "verified": true, "report": report}));
                } else {
                    println!(
                        "{}: program `{}` ({}) verified: {} instructions analysed, call depth {}, stack {} bytes, at most {} instructions per run",
                        args.object.display(),
                        program.name,
                        pt.name,
                        report.nodes,
                        report.max_call_depth,
                        report.stack_bytes,
                        report.max_instructions_executed.map_or("?".into(), |n| n.to_string())
                    );
                    for b in &report.loop_bounds {
                        println!(
                            "  loop at {} (counter {}): at most {} iterations",
                            b.head, b.counter, b.max_iterations
                        );
                    }
                    if args.show_state {
                        for bpf2sys::verifier::Invariant { call_path: path, pc, state: inv } in &report.invariants {
                            let insn = program.instructions.get(*pc).map(diagnostic::disassemble).unwrap_or_default();
                            let ctx = if path.is_empty() { String::new() } else { format!("{path:?}/") };
                            println!("  {ctx}{pc:>5}: {insn:<40} {{ {inv}}}");
                        }
                    }
                }
            }
            Err(rejection) => {
                rejected = true;
                if json {
                    results.push(serde_json::json!({"program": program.name, "type": pt.name, "verified": false, "rejection": rejection}));
                } else {
                    eprintln!("{}", diagnostic::render(&rejection, false));
                }
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results).expect("serialisable"));
    }
    Ok(if rejected { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
