//! `p2pmem probe PROVIDER CLIENT`: does the path between a provider's p2pmem and a
//! client move the right bytes? The kernel allowing a pair is not proof: behind some
//! switches, on some hosts and under some IOMMUs a P2P transfer completes without an
//! error and returns wrong data. Read-only unless `--scratch` names a range to write.
//!
//! Exit status: 0 the path moves correct data; 1 it moves wrong data or the kernel
//! refused; 2 error, or the data could not be checked.

use crate::cmd_copy::parse_size;
use crate::output::{print_json, size};
use crate::Common;
use anyhow::Context;
use clap::Args;
use p2pmem_linux::klog::Syslog;
use p2pmem_linux::path_probe::{probe, PathProbe, PathVerdict, ProbeRequest, DEFAULT_LEN};
use p2pmem_model::Bdf;
use std::path::PathBuf;

/// Arguments of `probe`.
#[derive(Debug, Args)]
#[command(
    after_help = "Reads LENGTH bytes at OFFSET of CLIENT with O_DIRECT into PROVIDER's \
p2pmem (p2pmem/allocate, kernel 6.2+, root) and again into host memory, and compares them \
through a guarded CPU read of the p2pmem. The p2pmem buffer is filled with a pattern first, \
so a DMA that never landed is told from one that moved wrong bytes or all-ones. With \
--scratch OFFSET:LENGTH it also writes a fresh pattern from p2pmem to that range of CLIENT \
(overwriting it) and reads it back through host memory. The kernel log is read, never \
cleared; the lines logged while the probe ran are shown, IOMMU faults (DMAR, AMD-Vi, SMMU) \
and AER errors marked.\n\n\
Exit status: 0 correct data; 1 wrong data or refused by the kernel; 2 error or cannot tell.\n\n\
Examples:\n  p2pmem probe 0000:03:00.0 /dev/nvme1n1\n  \
p2pmem probe 0000:03:00.0 nvme1n1 --length 4M --scratch 1G:1M --json"
)]
pub struct ProbeArgs {
    /// The provider: the PCI address of a function with p2pmem.
    pub provider: Bdf,
    /// The client: a block device (`/dev/nvme1n1` or `nvme1n1`) or a file.
    pub client: String,
    /// First byte read (block-aligned).
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size)]
    pub offset: u64,
    /// Bytes read (block-aligned, at most 64M).
    #[arg(long, value_name = "SIZE", default_value_t = DEFAULT_LEN, value_parser = parse_size)]
    pub length: u64,
    /// A range of CLIENT that may be overwritten, `OFFSET:LENGTH` (e.g. `1G:1M`): also
    /// probe the write direction there.
    #[arg(long, value_name = "OFFSET:LENGTH", value_parser = parse_scratch)]
    pub scratch: Option<(u64, u64)>,
}

fn parse_scratch(s: &str) -> Result<(u64, u64), String> {
    let (o, l) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}': expected OFFSET:LENGTH, e.g. 1G:1M"))?;
    Ok((parse_size(o)?, parse_size(l)?))
}

/// The client's path: a path as given, a bare name under `/dev` of the root.
fn client_path(common: &Common, name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        common.root.join("dev").join(name)
    }
}

/// Run `probe`.
pub fn run(common: &Common, args: &ProbeArgs) -> anyhow::Result<i32> {
    let path = client_path(common, &args.client);
    let client = crate::output::load(common).ok().and_then(|sys| {
        p2pmem_linux::resolve::resolve_client(&sys, &args.client)
            .ok()
            .map(|c| c.bdf)
    });
    let req = ProbeRequest {
        root: common.root.clone(),
        provider: args.provider,
        client,
        client_path: path,
        offset: args.offset,
        len: args.length,
        scratch: args.scratch,
    };
    let p = probe(&req, &mut Syslog).with_context(|| {
        format!(
            "probe of {} -> {}",
            args.provider,
            req.client_path.display()
        )
    })?;
    if common.json {
        print_json("probe", &p)?;
    } else {
        print_text(&p);
    }
    Ok(match p.verdict {
        PathVerdict::Correct => 0,
        PathVerdict::Wrong | PathVerdict::Refused => 1,
        PathVerdict::Inconclusive => 2,
    })
}

fn print_text(p: &PathProbe) {
    println!("{}", p.summary);
    let client = p.client.map_or(String::new(), |b| format!(" ({b})"));
    println!(
        "  read {} at {} of {}{client} into p2pmem of {}: {}",
        size(p.len),
        p.offset,
        p.client_path,
        p.provider,
        p.read
            .as_ref()
            .map_or(format!("not run (mmap {})", p.mmap), |l| l.transfer.clone())
    );
    if let Some(w) = &p.write {
        println!("  write to the scratch range: {}", w.transfer);
    }
    if let Some(e) = &p.kernel_log_error {
        println!("  the kernel log could not be read: {e}");
    } else if p.kernel_log.is_empty() {
        println!("  the kernel logged nothing while the probe ran");
    } else {
        println!("  the kernel logged while the probe ran:");
        for l in &p.kernel_log {
            let mark = if p.faults.iter().any(|f| f.line == *l) {
                "FAULT "
            } else {
                ""
            };
            println!("    {mark}{l}");
        }
    }
    if p.verdict == PathVerdict::Wrong {
        println!("  do not use P2P on this path: the kernel allows it but the bytes are wrong (an IOMMU translating peer traffic, a switch or root complex that does not route it, or a BAR the device does not back); `p2pmem copy --via host` moves the data through host memory instead");
    }
}
