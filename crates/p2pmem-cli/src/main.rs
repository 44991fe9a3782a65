//! `p2pmem`: predict, explain, use and prove Linux PCI peer-to-peer DMA.
//!
//! Exit status: 0 yes (allowed, found, healthy), 1 no, 2 error or an answer that depends
//! on registers this user cannot read. Human output goes to stdout, diagnostics to
//! stderr; `--json` prints JSON Lines on stdout (one document per line, each with
//! `"schema": 1` and `"document": KIND`; docs/json.md describes every field).

mod agent;
mod cmd_bench;
mod cmd_capture;
mod cmd_check;
mod cmd_copy;
mod cmd_docs;
mod cmd_doctor;
mod cmd_fio_job;
mod cmd_import;
mod cmd_nvmet;
mod cmd_plan;
mod cmd_probe;
mod cmd_provider;
mod cmd_topo;
mod lab_cmd;
mod lab_dma;
mod lab_kernel;
mod output;
mod render;
mod topo_dot;
mod topo_matrix;
mod whatif;

use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Options every subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Read the system below DIR instead of `/` (a capture made by `p2pmem capture`).
    #[arg(long, value_name = "DIR", default_value = "/", global = true)]
    pub root: PathBuf,
    /// Print JSON Lines on stdout instead of text (one document per line, each with
    /// `"schema": 1`; every document and field is described in docs/json.md).
    #[arg(long, global = true)]
    pub json: bool,
    /// Take vendor and device names from FILE (a pci.ids, as `lspci -i`) instead of the
    /// system's (usr/share/misc/pci.ids, usr/share/hwdata/pci.ids) or the bundled one.
    #[arg(long, value_name = "FILE", global = true)]
    pub pci_ids: Option<PathBuf>,
}

#[derive(Debug, Parser)]
#[command(
    name = "p2pmem",
    version,
    about = "Predict, explain, use and prove Linux PCI peer-to-peer DMA (P2PDMA)",
    long_about = "p2pmem reproduces the Linux kernel's P2PDMA rules (common upstream bridge, \
ACS redirect bits, host-bridge whitelist, AMD Zen CPUs) in userspace, so it can say for any \
provider and clients what the kernel will decide and why, in the kernel's own words, with \
the fix.\n\nExit status: 0 yes, 1 no, 2 error (or the answer depends on config space this \
user cannot read: run as root).",
    after_help = "Examples:\n  p2pmem topo\n  p2pmem check 0000:03:00.0 nvme1n1\n  \
p2pmem find nvme0n1 nvme1n1\n  p2pmem doctor\n  p2pmem topo --matrix\n  p2pmem topo --svg topo.svg\n  \
p2pmem fio-job 0000:03:00.0 nvme1n1 > p2p.fio && fio p2p.fio\n  p2pmem capture /tmp/p2p-capture && \
p2pmem --root /tmp/p2p-capture topo"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the PCI tree: host bridges, ports and their ACS state, P2P providers, NVMe
    /// and RDMA clients, named as lspci names them (`--matrix`: providers by clients).
    Topo(cmd_topo::TopoArgs),
    /// Would the kernel allow P2P DMA between PROVIDER's p2pmem and CLIENT(s)? Shows the
    /// map type, distance, the kernel's messages and the fix. Exit 0 yes, 1 no.
    Check(cmd_check::CheckArgs),
    /// Which provider(s) would the kernel choose for CLIENT(s)? (`pci_p2pmem_find_many`;
    /// ties are listed because the kernel picks among them at random.)
    Find(cmd_check::FindArgs),
    /// Is P2PDMA usable here? Kernel support, providers, CMBs that failed to register,
    /// IOMMU and ACS, the CPU/host-bridge rule, caveats; each with what to do.
    Doctor,
    /// Copy what p2pmem reads (sysfs, procfs) into DIR in the same layout, to replay it
    /// with `--root DIR` or attach it to a bug report.
    Capture(cmd_capture::CaptureArgs),
    /// Make a capture directory from another tool's output, to read with `--root DIR`:
    /// `import lspci FILE DIR` from a bug report's `lspci -D -vvv -xxxx`.
    Import(cmd_import::ImportArgs),
    /// Copy SRC to DST (block devices or files) through a provider's p2pmem, so the
    /// payload never crosses host memory; host memory, loudly, when there is no P2P
    /// path. Exit 0 copied, 1 --verify mismatch or --require-p2p without a path, 2 error.
    Copy(cmd_copy::CopyArgs),
    /// Does the path between PROVIDER's p2pmem and CLIENT move the right bytes? Reads a
    /// range of CLIENT into p2pmem and into host memory and compares them, with the
    /// kernel's log lines of that moment (IOMMU faults, AER). Read-only unless
    /// --scratch. Exit 0 correct, 1 wrong or refused, 2 error.
    Probe(cmd_probe::ProbeArgs),
    /// Measure O_DIRECT reads or writes on DEVICE (throughput, IOPS, latency
    /// percentiles) with the buffers in a provider's p2pmem or in host memory. Write
    /// patterns refuse a mounted or in-use device unless --force. Exit 0 measured, 1
    /// measured with failed requests (counted), 2 error.
    Bench(cmd_bench::BenchArgs),
    /// Print a fio job file whose I/O buffers are PROVIDER's p2pmem (iomem=mmapshared on
    /// its p2pmem/allocate), O_DIRECT on DEVICE with io_uring, sized to fit the
    /// provider's available p2pmem, with `check`'s verdict as comments. Refuses (exit 1) a
    /// pair the kernel refuses, and write patterns, unless --force.
    FioJob(cmd_fio_job::FioJobArgs),
    /// The NVMe target (nvmet) through configfs, with P2P memory per namespace:
    /// subsystems, namespaces, ports, hosts, p2pmem (off, auto or a provider) written
    /// before enable, a pre-flight of what the kernel will decide, status, save/restore.
    Nvmet(cmd_nvmet::NvmetArgs),
    /// The virtual P2P lab: build a P2PDMA kernel and boot it under QEMU with emulated
    /// PCIe switches and NVMe CMBs (`lab demo`, `lab run`, `lab capture`, `lab kernel`).
    Lab(lab_cmd::LabArgs),
    /// Publish any PCI device's memory BAR as p2pmem with the p2pmem_pci driver (a Rust
    /// kernel module): `provider bind BDF [--bar N] [--offset .. --size ..]`, `provider
    /// unbind BDF`. Loads the module if needed; shows which clients can use the provider.
    Provider(cmd_provider::ProviderArgs),
    /// Print a shell completion script for bash, zsh or fish on stdout, e.g.
    /// `p2pmem completions bash > /usr/share/bash-completion/completions/p2pmem`
    /// (scripts/install puts them in place).
    Completions(cmd_docs::CompletionsArgs),
    /// Write the man pages (p2pmem.1 and one per subcommand) into DIR, or print p2pmem.1.
    #[command(hide = true)]
    Man(cmd_docs::ManArgs),
    /// Plan flows on a system or a design: each flow's bytes on each link and through
    /// host memory as the kernel would route them, the bottleneck, how far all rates can
    /// scale together, the same with P2P disabled, and suggestions. Exit 0 when the flows
    /// fit at their rates, 1 when they do not.
    Plan(cmd_plan::PlanArgs),
    /// Low-level helpers used inside the lab's guest.
    #[command(hide = true)]
    Agent(agent::AgentArgs),
}

fn main() -> ExitCode {
    p2pmem_linux::sys::restore_default_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Topo(a) => cmd_topo::run(&cli.common, &a),
        Command::Check(a) => cmd_check::run_check(&cli.common, &a),
        Command::Find(a) => cmd_check::run_find(&cli.common, &a),
        Command::Doctor => cmd_doctor::run(&cli.common),
        Command::Capture(a) => cmd_capture::run(&cli.common, &a),
        Command::Import(a) => cmd_import::run(&cli.common, &a),
        Command::Copy(a) => cmd_copy::run(&cli.common, &a),
        Command::Probe(a) => cmd_probe::run(&cli.common, &a),
        Command::Bench(a) => cmd_bench::run(&cli.common, &a),
        Command::FioJob(a) => cmd_fio_job::run(&cli.common, &a),
        Command::Nvmet(a) => cmd_nvmet::run(&cli.common, &a),
        Command::Lab(a) => lab_cmd::run(a.with_json(cli.common.json)),
        Command::Provider(a) => cmd_provider::run(&cli.common, &a),
        Command::Completions(a) => cmd_docs::run_completions(Cli::command(), &a),
        Command::Man(a) => cmd_docs::run_man(Cli::command(), &a),
        Command::Plan(a) => cmd_plan::run(&cli.common, &a),
        Command::Agent(a) => agent::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(2)),
        Err(e) => {
            eprintln!("p2pmem: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
