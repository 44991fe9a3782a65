//! `p2pmem bench DEVICE`: throughput, IOPS and latency percentiles of O_DIRECT reads or
//! writes on one device, with the buffers in host memory or a provider's p2pmem; with
//! `--jobs N`, N queues at once (fio's `numjobs` with `group_reporting`).
//!
//! Exit status: 0 measured (also after Ctrl-C: the report covers the time it ran and
//! says `interrupted`); 1 measured, but some requests failed (counted, as fio's
//! `continue_on_error=io`); 2 error (refused by a safety check or the model, or 64
//! failed requests in a row: nothing more was started and the requests in flight were
//! reaped).

use crate::cmd_copy::parse_size;
use crate::output::{print_json, size};
use crate::Common;
use clap::Args;
use p2pmem_linux::bench::{prepare, BenchReport, BenchRequest, Rw, MAX_JOBS};
use p2pmem_linux::copy::{EngineChoice, Via};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `bench`.
#[derive(Debug, Args)]
#[command(
    after_help = "Sizes take K, M, G (powers of 1024): --bs 64K, --size 1G.\n\n\
Requests are O_DIRECT, DEPTH of them in flight through io_uring (pread/pwrite one at a \
time when io_uring is unavailable), each BS bytes at a block-aligned offset of the region \
[--offset, --offset + --size): sequential offsets wrap around at its end, random ones are \
uniform over it (seeded: the same --seed gives the same offsets). The run lasts --time \
seconds (fio's time_based); writes are not followed by an fsync (fio's default). Latency \
is per request, from queuing it to reaping its completion (fio's `lat`), from a histogram \
with 0.1 % resolution.\n\n\
Buffers in host memory are in transparent huge pages when a request is more than one page \
(where the kernel has them): each request then reaches the device whole, in few segments \
(fio's default iomem=malloc gives base pages, one segment per 4 KiB, and a disk that takes \
fewer segments a request than a 1 MiB request has pages cuts it in two).\n\n\
Write patterns overwrite the device: they refuse a device that is mounted or in use \
unless --force, and never create or extend a file.\n\n\
A request that fails in the kernel is counted and the bench goes on (fio's \
continue_on_error=io): the report gives the count and the first failures' offsets and \
errnos; 64 failures in a row with none completing stop it with the error.\n\n\
--jobs N runs N jobs at once, as fio's numjobs with group_reporting: each job has its own \
thread, io_uring queue and DEPTH x BS buffers (all in host memory or all in the provider's \
p2pmem), and all stop together. A sequential job walks its own slice of the region (fio's \
offset_increment: consecutive slices of whole requests, the first ones one request longer \
when they do not divide evenly); a random job draws over the whole region with its own seed \
(job 0's is --seed). The report is the total over all jobs (latency percentiles of all \
requests together); --verbose adds a line per job, also printed when the slowest job moved \
less than half as much as the fastest. Failed requests are counted over all jobs; 64 in a \
row in one job stop every job.\n\n\
Exit status: 0 measured (also after Ctrl-C, marked interrupted); 1 measured, but some \
requests failed; 2 error.\n\n\
Examples:\n  p2pmem bench /dev/nvme0n1 --rw randread --bs 4K --depth 32 --time 10\n  \
p2pmem bench /dev/nvme0n1 --rw randread --bs 4K --depth 32 --jobs 4 --verbose\n  \
p2pmem bench /dev/nvme1n1 --via 0000:03:00.0 --rw write --bs 1M --json\n  \
p2pmem bench disk.img --via host --rw read --size 256M"
)]
pub struct BenchArgs {
    /// The block device (or regular file) to measure.
    pub device: PathBuf,
    /// Where the buffers live: `auto` (the provider the kernel would pick for the
    /// device; host memory, loudly, when there is none), `host`, or a provider's PCI
    /// address.
    #[arg(long, value_name = "auto|host|BDF", default_value = "auto", value_parser = parse_via)]
    pub via: Via,
    /// Access pattern.
    #[arg(long, value_name = "read|write|randread|randwrite", default_value = "read", value_parser = parse_rw)]
    pub rw: Rw,
    /// Bytes per request (a multiple of the logical block size).
    #[arg(long, value_name = "SIZE", default_value = "4K", value_parser = parse_size)]
    pub bs: u64,
    /// Requests in flight at once (the buffer is DEPTH x BS, mapped once).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub depth: usize,
    /// Seconds to run.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub time: Duration,
    /// First byte of the region (block-aligned).
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size)]
    pub offset: u64,
    /// Bytes of the region; default: to the end of the device.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub size: Option<u64>,
    /// Write to a device that is mounted or in use; try a P2P path the model predicts
    /// refused.
    #[arg(long)]
    pub force: bool,
    /// Seed of the random offsets.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Jobs at once (1 to 64; fio's numjobs), each with its own queue and buffers.
    #[arg(long, value_name = "N", default_value = "1", value_parser = parse_jobs)]
    pub jobs: usize,
    /// Also print each job's figures.
    #[arg(long, short)]
    pub verbose: bool,
    /// Diagnostic: the I/O engine, `auto` (io_uring, else pread/pwrite), `uring` or
    /// `sync`. Also read from P2PMEM_ENGINE.
    #[arg(long, value_name = "auto|uring|sync", value_parser = parse_engine)]
    pub engine: Option<EngineChoice>,
}

fn parse_via(s: &str) -> Result<Via, String> {
    s.parse()
}

fn parse_rw(s: &str) -> Result<Rw, String> {
    s.parse()
}

fn parse_engine(s: &str) -> Result<EngineChoice, String> {
    s.parse()
}

/// `--jobs`: 1 to [`MAX_JOBS`].
fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_JOBS).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{s}': the jobs must be a whole number from 1 to {MAX_JOBS}"
        )),
    }
}

/// `10`, `0.5`, `2.5s`: seconds, more than 0 and at most a day.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let t = s.trim().trim_end_matches('s');
    let v: f64 = t
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(v > 0.0 && v <= 86_400.0) {
        return Err(format!(
            "'{s}': the time must be more than 0 and at most 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

#[derive(Serialize)]
struct BenchJson<'a> {
    #[serde(flatten)]
    report: &'a BenchReport,
    reason: &'a str,
    model: &'a [String],
    warnings: &'a [String],
    notes: &'a [String],
}

/// SIGINT/SIGTERM set the flag (checked between batches); a second one exits at once.
fn cancel_flag() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))?;
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

/// Whether the jobs disagree enough to show each: the slowest moved less than half as
/// many bytes as the fastest.
fn jobs_disagree(r: &BenchReport) -> bool {
    let moved = r.per_job.iter().map(|j| j.bytes);
    match (moved.clone().min(), moved.max()) {
        (Some(lo), Some(hi)) => r.per_job.len() > 1 && lo.saturating_mul(2) < hi,
        _ => false,
    }
}

fn print_jobs(r: &BenchReport) {
    for j in &r.per_job {
        let l = j.latency_us;
        println!(
            "  job {:<9} {:.2} s, {:.0} IOPS, {:.1} MiB/s ({} moved), p50 {:.1} p99 {:.1} us, bytes {}..{}{}{}",
            j.job,
            j.seconds,
            j.iops,
            j.mib_per_s,
            size(j.bytes),
            l.p50,
            l.p99,
            j.region.start,
            j.region.end,
            j.seed.map(|s| format!(", seed {s}")).unwrap_or_default(),
            if j.errors > 0 {
                format!(", {} FAILED", j.errors)
            } else {
                String::new()
            }
        );
    }
}

fn print_text(r: &BenchReport, reason: &str, model: &[String], verbose: bool) {
    println!(
        "{} {}: {} requests of {}, depth {}, {}{}",
        r.rw,
        r.device.display(),
        r.ios,
        size(r.bs),
        r.depth,
        r.engine,
        if r.jobs > 1 {
            format!(", {} jobs (totals)", r.jobs)
        } else {
            String::new()
        }
    );
    println!(
        "  {:.2} s, {:.0} IOPS, {:.1} MiB/s ({} moved){}",
        r.seconds,
        r.iops,
        r.mib_per_s,
        size(r.bytes),
        if r.interrupted { ", INTERRUPTED" } else { "" }
    );
    let l = r.latency_us;
    println!(
        "  latency (us)  min {:.1}  mean {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        l.min, l.mean, l.p50, l.p90, l.p99, l.p99_9, l.max
    );
    println!(
        "  region        bytes {}..{} ({})",
        r.region.start,
        r.region.end,
        size(r.region.len())
    );
    let disagree = jobs_disagree(r);
    if disagree {
        println!(
            "  jobs          DISAGREE: the slowest moved less than half as much as the fastest"
        );
    }
    if verbose || disagree {
        print_jobs(r);
    }
    println!("  buffer        {reason}");
    if r.errors > 0 {
        println!(
            "  ERRORS        {} request(s) failed and were not counted (the bench went on, as fio's continue_on_error=io does):",
            r.errors
        );
        for e in &r.first_errors {
            println!(
                "                at offset {}: {}: {}",
                e.offset, e.errno, e.hint
            );
        }
    }
    for (i, line) in model.iter().enumerate() {
        let head = if i == 0 {
            "  path          "
        } else {
            "                "
        };
        println!("{head}{}", line.trim_start());
    }
}

/// Run `bench`.
pub fn run(common: &Common, args: &BenchArgs) -> anyhow::Result<i32> {
    let engine = match args.engine {
        Some(e) => e,
        None => match std::env::var("P2PMEM_ENGINE") {
            Ok(v) if !v.is_empty() => v
                .parse()
                .map_err(|e: String| anyhow::anyhow!("P2PMEM_ENGINE: {e}"))?,
            _ => EngineChoice::Auto,
        },
    };
    let req = BenchRequest {
        path: args.device.clone(),
        rw: args.rw,
        bs: args.bs,
        depth: args.depth,
        time: args.time,
        offset: args.offset,
        size: args.size,
        via: args.via,
        force: args.force,
        engine,
        seed: args.seed,
        jobs: args.jobs,
    };
    let prepared = prepare(&common.root, &req)?;
    for w in &prepared.route().warnings {
        eprintln!("p2pmem: WARNING: {w}");
    }
    for n in prepared.notes() {
        eprintln!("p2pmem: note: {n}");
    }
    let route = prepared.route().clone();
    let notes = prepared.notes().to_vec();
    let cancel = cancel_flag()?;
    let report = prepared.run(&cancel)?;
    if report.interrupted {
        eprintln!(
            "p2pmem: interrupted after {:.2} s; the numbers cover that time",
            report.seconds
        );
    }
    if common.json {
        print_json(
            "bench",
            &BenchJson {
                report: &report,
                reason: &route.reason,
                model: &route.model,
                warnings: &route.warnings,
                notes: &notes,
            },
        )?;
    } else {
        print_text(&report, &route.reason, &route.model, args.verbose);
    }
    Ok(if report.errors > 0 { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::{parse_jobs, parse_secs};
    use std::time::Duration;

    #[test]
    fn jobs_parse() {
        assert_eq!(parse_jobs("1"), Ok(1));
        assert_eq!(parse_jobs("64"), Ok(64));
        for bad in ["0", "65", "-1", "four", "1.5", ""] {
            let e = parse_jobs(bad).unwrap_err();
            assert!(e.contains("from 1 to 64"), "{bad}: {e}");
        }
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(parse_secs("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_secs("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("NaN").is_err());
        assert!(parse_secs("1e9").is_err());
        assert!(parse_secs("ten").is_err());
    }
}
