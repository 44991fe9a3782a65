//! `p2pmem copy SRC DST`: copy between block devices or files through a provider's
//! p2pmem (or host memory), with a progress bar on a TTY, a final report, and
//! `--verify`.
//!
//! Exit status: 0 copied (and verified, with `--verify`); 1 no: `--verify` found
//! differences, or `--require-p2p` found no P2P path; 2 error (refused by a safety check,
//! I/O error, interrupted: the message says which destination bytes were written).

use crate::output::{print_json, size};
use crate::Common;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use p2pmem_linux::copy::{
    prepare, verify_ranges, ByteRange, CopyError, CopyReport, CopyRequest, EngineChoice, Route,
    VerifyReport, Via,
};
use p2pmem_linux::memctl::{host_memory_measurement, HostMemoryMeasurement};
use p2pmem_wire::copy::CopyDocument;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Arguments of `copy`.
#[derive(Debug, Args)]
#[command(
    after_help = "Sizes take K, M, G (powers of 1024): --chunk 64K, --length 8M.\n\n\
Exit status: 0 copied (and verified); 1 --verify found differences, or --require-p2p found \
no P2P path; 2 error (the message says which destination bytes were written).\n\n\
Examples:\n  p2pmem copy /dev/nvme0n1 /dev/nvme1n1 --via auto --verify --length 8M\n  \
p2pmem copy disk.img /dev/nvme1n1 --via host --chunk 4M --depth 16\n  \
p2pmem copy /dev/nvme0n1 /dev/nvme1n1 --via 0000:03:00.0 --require-p2p --json"
)]
pub struct CopyArgs {
    /// Source: a block device or a regular file.
    pub src: PathBuf,
    /// Destination: a block device or a regular file (created when missing, never
    /// truncated).
    pub dst: PathBuf,
    /// Where the buffer lives: `auto` (the provider the kernel would pick for both
    /// devices; host memory, loudly, when there is none), `host`, or a provider's PCI
    /// address.
    #[arg(long, value_name = "auto|host|BDF", default_value = "auto", value_parser = parse_via)]
    pub via: Via,
    /// Bytes per request (a multiple of the logical block size).
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_size)]
    pub chunk: u64,
    /// Reads in flight at once, and writes in flight at once (1 to 512), as fio's read
    /// job and write job at --iodepth N together. The buffer, mapped once, holds 2 x N
    /// chunks (the next N are read while N are written), never more than the copy has.
    /// Default in host memory: 32, lowered from 512K chunks on to keep the buffer within
    /// 16 MiB (16 at 512K, 8 at 1M, 2 at 4M, 1 from 8M); in a provider's p2pmem: 4,
    /// within 16 MiB (2 at 4M), halved while the pool cannot supply it.
    #[arg(long, value_name = "N")]
    pub depth: Option<usize>,
    /// First source byte (block-aligned).
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size)]
    pub offset: u64,
    /// First destination byte (block-aligned); default: the same as --offset.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub dst_offset: Option<u64>,
    /// Bytes to copy; default: to the end of the source.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub length: Option<u64>,
    /// Afterwards, read both ranges again into host memory and compare BLAKE3 hashes
    /// chunk by chunk.
    #[arg(long)]
    pub verify: bool,
    /// Fail (exit 1) instead of falling back to host memory.
    #[arg(long)]
    pub require_p2p: bool,
    /// Write to a destination that is mounted or in use, or overlapping the source; try
    /// a P2P path the model predicts refused.
    #[arg(long)]
    pub force: bool,
    /// Diagnostic: the I/O engine, `auto` (io_uring, else pread/pwrite), `uring` or
    /// `sync` (pread/pwrite, one request at a time). Also read from P2PMEM_ENGINE.
    #[arg(long, value_name = "auto|uring|sync", value_parser = parse_engine)]
    pub engine: Option<EngineChoice>,
}

fn parse_via(s: &str) -> Result<Via, String> {
    s.parse()
}

fn parse_engine(s: &str) -> Result<EngineChoice, String> {
    s.parse()
}

pub use p2pmem_model::size::parse_size;

fn progress_bar() -> ProgressBar {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    if no_color || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// SIGINT/SIGTERM set the flag (checked between chunks); a second one exits at once.
fn cancel_flag() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))?;
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

fn print_text(
    report: &CopyReport,
    route: &Route,
    verify: Option<&VerifyReport>,
    host_memory: &HostMemoryMeasurement,
) {
    let rate = report.bytes_per_second as u64;
    println!(
        "copied {} in {:.3} s: {}/s",
        size(report.bytes),
        report.seconds,
        size(rate)
    );
    let range = |off: u64| ByteRange {
        start: off,
        end: off + report.bytes,
    };
    println!(
        "  source       {} bytes {}",
        report.src.display(),
        range(report.src_offset)
    );
    println!(
        "  destination  {} bytes {}{}",
        report.dst.display(),
        range(report.dst_offset),
        if report.created { " (created)" } else { "" }
    );
    println!("  buffer       {}: {}", report.location, route.reason);
    println!(
        "  engine       {}, {} reads and {} writes of {} allowed in flight, a buffer of {} \
         chunks ({} requests at most seen)",
        report.engine,
        report.depth,
        report.depth,
        size(report.chunk),
        report.buffer_chunks,
        report.max_in_flight
    );
    for (i, line) in route.model.iter().enumerate() {
        let head = if i == 0 {
            "  path         "
        } else {
            "               "
        };
        println!("{head}{}", line.trim_start());
    }
    println!("  host memory  {}", host_memory.reason);
    if report.tail_bytes_via_host > 0 {
        println!(
            "  tail         the last {} bytes (less than a block) went through host memory with buffered I/O",
            report.tail_bytes_via_host
        );
    }
    if let Some(v) = verify {
        if v.ok() {
            println!(
                "verify: OK, {} chunks of {} match ({})",
                v.chunks,
                size(v.chunk),
                v.hash
            );
        } else {
            let list: Vec<String> = v.mismatches.iter().map(ToString::to_string).collect();
            println!(
                "verify: MISMATCH: destination bytes {} differ from the source ({})",
                list.join(", "),
                v.hash
            );
        }
    }
}

/// A copy that ran to its end.
pub struct Finished {
    report: CopyReport,
    route: Route,
    notes: Vec<String>,
    verify: Option<VerifyReport>,
    host_memory: HostMemoryMeasurement,
}

impl Finished {
    /// The `--json` document.
    pub fn document(&self) -> CopyDocument {
        CopyDocument {
            report: self.report.clone(),
            via: self.report.location.via_label(),
            reason: self.route.reason.clone(),
            model: self.route.model.clone(),
            warnings: self.route.warnings.clone(),
            notes: self.notes.clone(),
            verified: self.verify.as_ref().map(VerifyReport::ok),
            mismatches: self.verify.as_ref().map(|v| v.mismatches.clone()),
            payload_bytes: self.report.bytes,
            host_memory_bytes: self.host_memory.bytes,
            peer_bytes: None,
            host_memory_per_payload_byte: None,
            host_memory_reason: self.host_memory.reason.clone(),
        }
    }

    /// 0 copied (and verified), 1 `--verify` found differences.
    pub fn exit(&self) -> i32 {
        match &self.verify {
            Some(v) if !v.ok() => 1,
            _ => 0,
        }
    }
}

/// How a copy ended short of an error.
pub enum Ended {
    /// It ran.
    Finished(Box<Finished>),
    /// `--require-p2p` found no P2P path (exit 1); the message was said.
    NoP2pPath,
}

/// The engine of `p2pmem copy`, shared by the command and the lab agent: prepares, says
/// warnings and notes through `say` (as the command prints them on stderr), copies
/// (reporting bytes done and planned), verifies. An error is the copy's failure, with the written
/// range in its message.
pub fn execute(
    root: &Path,
    args: &CopyArgs,
    cancel: &AtomicBool,
    say: &mut dyn FnMut(String),
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<Ended> {
    let engine = match args.engine {
        Some(e) => e,
        None => match std::env::var("P2PMEM_ENGINE") {
            Ok(v) if !v.is_empty() => v
                .parse()
                .map_err(|e: String| anyhow::anyhow!("P2PMEM_ENGINE: {e}"))?,
            _ => EngineChoice::Auto,
        },
    };
    let req = CopyRequest {
        src: args.src.clone(),
        dst: args.dst.clone(),
        offset: args.offset,
        dst_offset: args.dst_offset,
        length: args.length,
        chunk: args.chunk,
        depth: args.depth,
        via: args.via,
        require_p2p: args.require_p2p,
        force: args.force,
        engine,
    };
    let prepared = match prepare(root, &req) {
        Ok(p) => p,
        Err(e @ CopyError::NoP2pPath { .. }) => {
            say(format!("p2pmem: {e}"));
            return Ok(Ended::NoP2pPath);
        }
        Err(e) => return Err(e.into()),
    };
    for w in &prepared.route().warnings {
        say(format!("p2pmem: WARNING: {w}"));
    }
    for n in prepared.notes() {
        say(format!("p2pmem: note: {n}"));
    }
    let route = prepared.route().clone();
    let notes = prepared.notes().to_vec();
    let plan = *prepared.plan();
    let report = prepared.run(cancel, &mut |done| progress(done, plan.len))?;
    let verify = if args.verify {
        let chunk = plan.chunk.clamp(64 << 10, 8 << 20);
        Some(verify_ranges(
            &report.src,
            report.src_offset,
            &report.dst,
            report.dst_offset,
            report.bytes,
            chunk,
            cancel,
        )?)
    } else {
        None
    };
    let host_memory = host_memory_measurement(root);
    Ok(Ended::Finished(Box::new(Finished {
        report,
        route,
        notes,
        verify,
        host_memory,
    })))
}

/// Run `copy`.
pub fn run(common: &Common, args: &CopyArgs) -> anyhow::Result<i32> {
    let cancel = cancel_flag()?;
    let bar = progress_bar();
    let ended = execute(
        &common.root,
        args,
        &cancel,
        &mut |line| eprintln!("{line}"),
        &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done)
        },
    );
    bar.finish_and_clear();
    let f = match ended? {
        Ended::Finished(f) => f,
        Ended::NoP2pPath => return Ok(1),
    };
    if common.json {
        print_json("copy", &f.document())?;
    } else {
        print_text(&f.report, &f.route, f.verify.as_ref(), &f.host_memory);
    }
    Ok(f.exit())
}
