//! bpf_conformance plugin: runs a test program through bpf2sys's native x64 code (test-corpora.md §1.4).
//!
//! Protocol of the upstream runner: the program's bytecode as whitespace-separated hex bytes on stdin, the
//! test's memory as one hex string in argv[1] (absent or empty for none); r0 is printed in hex on stdout. Any
//! failure (malformed input, undecodable or uncompilable program) is reported on stderr with a non-zero exit.
//!
//! Usage with the upstream runner:
//! `bpf_conformance_runner --test_file_directory tests --plugin_path target/debug/bpf2sys-conformance-plugin`

use std::io::Read;
use std::process::ExitCode;

fn parse_hex_bytes(text: &str, what: &str) -> Result<Vec<u8>, String> {
    let digits: String = text.split_whitespace().collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("{what}: odd number of hex digits ({})", digits.len()));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .map_err(|_| format!("{what}: `{}` at digit {i} is not a hex byte", &digits[i..i + 2]))
        })
        .collect()
}

fn run() -> Result<u64, String> {
    let mut memory = match std::env::args().nth(1) {
        Some(arg) => parse_hex_bytes(&arg, "memory (argv[1])")?,
        None => Vec::new(),
    };
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).map_err(|e| format!("reading stdin: {e}"))?;
    let bytecode = parse_hex_bytes(&input, "bytecode (stdin)")?;
    let instructions = bpf2sys::isa::decode(&bytecode).map_err(|e| format!("invalid program: {e}"))?;
    bpf2sys_tests::native::run_conformance(&instructions, &mut memory).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match run() {
        Ok(r0) => {
            println!("{r0:x}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("bpf2sys-conformance-plugin: {message}");
            ExitCode::FAILURE
        }
    }
}
