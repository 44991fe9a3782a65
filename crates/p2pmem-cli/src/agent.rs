//! `p2pmem agent`: commands that run inside a lab guest (as root) and answer in JSON.
//!
//! `p2pmem agent dma-probe --provider BDF --client DEV [--client-bdf BDF] [--root DIR] [--json]`
//! runs the ground-truth method (map p2pmem, O_DIRECT read and write through it, record
//! the kernel's answers and log) and prints one JSON object on stdout, shaped like a
//! `truth.json` pair. Exit status: 0 when the probe produced a record, whatever the
//! kernel answered; 2 when it could not run (not root, no such device or provider, a
//! captured tree instead of a live sysfs), with the reason on stderr.

mod fabrics;
mod hold;
mod plan;

use anyhow::Context;
use p2pmem_linux::dma_probe::dma_probe;
use p2pmem_linux::resolve::resolve_client;
use p2pmem_linux::system::read_system;
use p2pmem_model::Bdf;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `p2pmem agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// What to run.
    #[command(subcommand)]
    pub command: AgentCommand,
}

/// The agent's commands.
#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Map 1 MiB of a provider's p2pmem, O_DIRECT-read 64 KiB of a block device into it
    /// and write it back at 1 MiB, and print the kernel's answers and log as JSON.
    DmaProbe(DmaProbeArgs),
    /// Map a provider's p2pmem, wait until a file exists, then touch the mapping again
    /// (the lab tears the provider down in between).
    HoldP2pmem(hold::HoldArgs),
    /// Run a lab plan (JSON) and answer each step with a typed result frame on stdout.
    Plan(plan::PlanArgs),
}

/// Arguments of `p2pmem agent dma-probe`.
#[derive(Debug, clap::Args)]
pub struct DmaProbeArgs {
    /// The p2pmem provider (a PCI function with `p2pmem/`), e.g. 0000:03:00.0.
    #[arg(long, value_name = "BDF")]
    pub provider: Bdf,
    /// The client block device, e.g. /dev/nvme1n1 (not looked up under --root). Its
    /// 64 KiB at 1 MiB are overwritten.
    #[arg(long, value_name = "DEV")]
    pub client: PathBuf,
    /// The client's PCI function, recorded in the output as `client`. Without it, the
    /// function is looked up from the block device in sysfs (null when that fails).
    #[arg(long, value_name = "BDF")]
    pub client_bdf: Option<Bdf>,
    /// Root directory that holds `sys/` (the live system is `/`).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Accepted for symmetry with other commands: the output is always JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs an agent command; returns the process exit status.
pub fn run(args: AgentArgs) -> anyhow::Result<i32> {
    match args.command {
        AgentCommand::DmaProbe(a) => run_dma_probe(&a),
        AgentCommand::HoldP2pmem(a) => hold::run(&a),
        AgentCommand::Plan(a) => plan::run(&a),
    }
}

/// The client's PCI function: as given, or resolved from the block device in sysfs.
fn client_bdf(a: &DmaProbeArgs) -> Option<Bdf> {
    if a.client_bdf.is_some() {
        return a.client_bdf;
    }
    let name = a.client.to_string_lossy();
    let resolved = read_system(&a.root)
        .map_err(anyhow::Error::new)
        .and_then(|sys| resolve_client(&sys, &name).map_err(anyhow::Error::new));
    match resolved {
        Ok(client) => Some(client.bdf),
        Err(e) => {
            eprintln!(
                "p2pmem agent dma-probe: note: client PCI function unknown ({e:#}); recording null"
            );
            None
        }
    }
}

fn run_dma_probe(a: &DmaProbeArgs) -> anyhow::Result<i32> {
    let client = client_bdf(a);
    let rec = match dma_probe(&a.root, a.provider, client, &a.client) {
        Ok(rec) => rec,
        Err(e) => {
            eprintln!("p2pmem agent dma-probe: {:#}", anyhow::Error::new(e));
            return Ok(2);
        }
    };
    for note in &rec.notes {
        eprintln!("p2pmem agent dma-probe: note: {note}");
    }
    let json =
        p2pmem_wire::doc::line("dma_probe", &rec).context("serialising the dma-probe result")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}").context("writing the dma-probe result to stdout")?;
    out.flush()
        .context("writing the dma-probe result to stdout")?;
    Ok(0)
}
