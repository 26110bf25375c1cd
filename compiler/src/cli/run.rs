//! `bpf2sys run X.sys --program NAME (--packet FILE | --pcap FILE | --context FILE.json) [--maps FILE.json]`:
//! load a driver into the emulated eBPF for Windows runtime (`bpf2sys_emulator`) and run one of its programs on
//! each input, then report r0 (with the hook's verdict name), every map's contents and the helpers' side
//! effects (trace output, ring-buffer and perf-event records).
//!
//! The driver's code runs natively in a child process, so a program that faults (which for verified code is a
//! bug worth reporting) ends the child, not the command: exit 0 clean run, 1 a program faulted, 2 unusable
//! input (not a driver, an ARM64 driver, a host that is not x86-64 Linux, bad input files). The input and output
//! formats are documented in docs/run.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::common::{InputLimit, OutputFormat};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The driver image (.sys) bpf2sys built for x64.
    pub driver: PathBuf,
    /// The program to run (its function name, as `inspect` lists it).
    #[arg(long)]
    pub program: String,
    /// One input: the packet's raw bytes (for program types whose context points at data: xdp, bind's app id).
    #[arg(long, conflicts_with = "pcap")]
    pub packet: Option<PathBuf>,
    /// Every packet of a pcap or pcapng capture, one run each, in capture order.
    #[arg(long)]
    pub pcap: Option<PathBuf>,
    /// Context fields by name (JSON object), for every run; alone, one run with this context.
    #[arg(long)]
    pub context: Option<PathBuf>,
    /// Map entries to store before the first run (JSON object: map name → list of {key, value}).
    #[arg(long)]
    pub maps: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    #[command(flatten)]
    pub input: InputLimit,
}

/// The inputs of one `run`: packets (none for a context-only run) and the context fields.
pub struct RunInputs {
    pub packets: Vec<Vec<u8>>,
    pub context: serde_json::Map<String, Value>,
    pub maps: serde_json::Map<String, Value>,
}

fn read_json(input: &InputLimit, path: &std::path::Path, what: &str) -> Result<serde_json::Map<String, Value>> {
    let bytes = input.read(path)?;
    let value: Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: not JSON ({what})", path.display()))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => bail!("{}: {what} must be a JSON object", path.display()),
    }
}

/// Every packet of a pcap (any byte order, micro- or nanosecond) or pcapng capture.
pub fn read_capture(bytes: &[u8], path: &std::path::Path) -> Result<Vec<Vec<u8>>> {
    let bad = |e: pcap_file::PcapError| anyhow::anyhow!("{}: {e}", path.display());
    let mut packets = Vec::new();
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut reader = pcap_file::pcapng::PcapNgReader::new(bytes).map_err(bad)?;
        while let Some(block) = reader.next_block() {
            match block.map_err(bad)? {
                pcap_file::pcapng::Block::EnhancedPacket(p) => packets.push(p.data.into_owned()),
                pcap_file::pcapng::Block::SimplePacket(p) => packets.push(p.data.into_owned()),
                pcap_file::pcapng::Block::Packet(p) => packets.push(p.data.into_owned()),
                _ => {}
            }
        }
    } else {
        let mut reader = pcap_file::pcap::PcapReader::new(bytes).map_err(bad)?;
        while let Some(packet) = reader.next_packet() {
            packets.push(packet.map_err(bad)?.data.into_owned());
        }
    }
    Ok(packets)
}

fn gather_inputs(args: &RunArgs) -> Result<RunInputs> {
    let context = match &args.context {
        Some(path) => read_json(&args.input, path, "context fields")?,
        None => serde_json::Map::new(),
    };
    let maps = match &args.maps {
        Some(path) => read_json(&args.input, path, "map contents")?,
        None => serde_json::Map::new(),
    };
    let packets = if let Some(path) = &args.packet {
        vec![args.input.read(path)?]
    } else if let Some(path) = &args.pcap {
        let packets = read_capture(&args.input.read(path)?, path)?;
        if packets.is_empty() {
            bail!("{}: the capture holds no packets", path.display());
        }
        packets
    } else if args.context.is_none() {
        bail!("give the input: --packet FILE, --pcap FILE or --context FILE.json");
    } else {
        Vec::new()
    };
    Ok(RunInputs { packets, context, maps })
}

pub fn run(args: &RunArgs) -> Result<ExitCode> {
    let driver = args.input.read(&args.driver)?;
    let inputs = gather_inputs(args)?;
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let outcome = super::run_exec::run_in_child(&driver, &args.program, &inputs)
            .with_context(|| args.driver.display().to_string())?;
        match args.format {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&outcome.report)?),
            OutputFormat::Text => print!("{}", super::run_exec::render_text(&outcome.report)),
        }
        if let Some(fault) = outcome.fault {
            eprintln!("error: {}: {fault}", args.driver.display());
            return Ok(ExitCode::from(1));
        }
        Ok(ExitCode::SUCCESS)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = (driver, inputs);
        bail!("`run` executes x64 driver code natively and needs an x86-64 Linux host; this host is not one")
    }
}
