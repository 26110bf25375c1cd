//! What the subcommands share: typed option values, reading inputs under the size cap, and writing outputs
//! through the one [`bpf2sys_files::write_atomically_with`].

use std::path::{Path, PathBuf};

use anyhow::Result;
use bpf2sys::compiled::Target;
use bpf2sys_files::{WriteOptions, DEFAULT_MAX_INPUT_SIZE};

/// `--target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetArg {
    /// x86-64 Windows.
    X64,
    /// ARM64 Windows.
    Arm64,
}

impl TargetArg {
    pub fn target(self) -> Target {
        match self {
            TargetArg::X64 => Target::X64,
            TargetArg::Arm64 => Target::Arm64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TargetArg::X64 => "x64",
            TargetArg::Arm64 => "arm64",
        }
    }
}

/// `--platform`: whose program types and helpers apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlatformArg {
    Windows,
    Linux,
}

impl PlatformArg {
    pub fn platform(self) -> &'static bpf2sys::platform::Platform {
        match self {
            PlatformArg::Windows => &bpf2sys::platform::windows::WINDOWS,
            PlatformArg::Linux => &bpf2sys::platform::linux::LINUX,
        }
    }
}

/// `--format` of reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// One JSON document.
    Json,
}

/// `--max-input-size`, taken by every subcommand that reads an object or an image.
#[derive(clap::Args, Debug, Clone)]
pub struct InputLimit {
    /// Refuse input objects and images larger than this (bytes, or with a K/M/G suffix).
    #[arg(long, value_name = "SIZE", default_value_t = DEFAULT_MAX_INPUT_SIZE, value_parser = bpf2sys_files::parse_size)]
    pub max_input_size: u64,
}

impl InputLimit {
    /// The bytes of an input file: a regular file within the limit. The error names the file.
    pub fn read(&self, path: &Path) -> Result<Vec<u8>> {
        Ok(bpf2sys_files::read_input(path, self.max_input_size)?)
    }
}

/// `--force`, taken by every subcommand that writes a file.
#[derive(clap::Args, Debug, Clone)]
pub struct OutputReplace {
    /// Replace a symbolic link at the output path with the output (device nodes, FIFOs and directories are
    /// never replaced).
    #[arg(long)]
    pub force: bool,
}

impl OutputReplace {
    /// Writes `bytes` to `path` atomically; `path` may not be any of `inputs`.
    pub fn write(&self, path: &Path, bytes: &[u8], inputs: &[&Path]) -> Result<()> {
        let options = WriteOptions {
            replace_symlink: self.force,
            inputs: inputs.iter().map(|p| p.to_path_buf()).collect::<Vec<PathBuf>>(),
            mode: None,
        };
        Ok(bpf2sys_files::write_atomically_with(path, bytes, &options)?)
    }
}

/// A field of an `inspect` JSON report as the text renderings print it: strings bare, null as `-`.
pub fn report_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The items of an `inspect` JSON report's list field; a missing field renders as an empty list.
pub fn report_items(v: &serde_json::Value) -> &[serde_json::Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The file name the front end records for an object (the driver's C name, contract §1.1).
pub fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// One line for an error and its causes: each cause is added unless an earlier message already says it (error
/// types that embed their source's text would otherwise repeat it), and line breaks become "; ".
pub fn one_line(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        let message = message.trim();
        if message.is_empty() || text.contains(message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(message);
    }
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}
