//! `p2pmem fio-job PROVIDER DEVICE`: a fio job file whose I/O buffers are the provider's
//! p2pmem, so fio measures device-to-device DMA the way people already measure disks.
//!
//! fio maps its buffers from a file with `iomem=mmapshared:FILE` (a shared mapping, no
//! truncation, the file kept): pointed at `p2pmem/allocate`, each job's mapping is one
//! allocation from the provider's pool. The job is O_DIRECT with io_uring (no registered
//! buffers), touches the buffers with the CPU as little as fio allows, fits the pool's
//! `available`, and opens with `check`'s verdict for the pair as comments.

use crate::cmd_check::check_report;
use crate::output::{load_scoped, print_json, size};
use crate::Common;
use anyhow::{bail, Context};
use clap::Args;
use p2pmem_linux::bench::Rw;
use p2pmem_linux::p2pbuf::pci_device_dir;
use p2pmem_linux::resolve::{block_device_bytes, resolve_client, ClientKind};
use p2pmem_linux::system::{Scope, System};
use p2pmem_model::distance::MapType;
use p2pmem_model::size::parse_size;
use p2pmem_wire::check::CheckReport;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

mod layout;
pub use layout::{layout, JobLayout};

/// What fio adds to `iodepth * bs` per job with `direct=1`: a page mask when it sizes
/// the buffer and another when it maps it (memory.c: `total_mem += page_mask`), measured
/// with fio 3.33's `--debug=mem` (8 x 64 KiB: "Alloc 532478"). Counted with 64 KiB pages,
/// the largest Linux uses, so the estimate holds on every architecture.
pub const FIO_SLACK: u64 = 2 * (64 << 10);

/// The kernel maps `allocate` in whole pages; counted in 64 KiB ones, as [`FIO_SLACK`].
const PAGE: u64 = 64 << 10;

/// The most jobs (each maps its own buffers).
const MAX_JOBS: u32 = 1024;

/// The most requests in flight per job.
const MAX_IODEPTH: u32 = 65536;

/// Arguments of `fio-job`.
#[derive(Debug, Args)]
#[command(
    after_help = "Sizes take K, M, G (powers of 1024): --bs 128K, --size 1G.\n\n\
The job maps each job's buffers from PROVIDER's p2pmem (iomem=mmapshared: on \
/sys/bus/pci/devices/BDF/p2pmem/allocate), does O_DIRECT I/O on DEVICE with io_uring, and \
leaves fio's CPU-touching options off (scramble_buffers=0; no verify, zero_buffers or \
refill_buffers). Every job needs iodepth x bs plus fio's alignment slack (128 KiB counted) \
of the provider's available p2pmem; a job that does not fit is refused with what to lower. \
Run it as root on kernel 6.2 or later: `p2pmem fio-job 0000:03:00.0 nvme1n1 > p2p.fio && \
fio p2p.fio`.\n\n\
A pair the kernel refuses is refused here too (exit 1), since fio would get the kernel's \
errno (EREMOTEIO or EINVAL); --force prints the job anyway. Write patterns overwrite DEVICE \
and need --force.\n\n\
--numjobs N (or --jobs N, as `p2pmem bench`) runs N jobs with group_reporting, the workload \
of `p2pmem bench --jobs N`: random jobs each draw over the whole region (the first --size \
bytes, else the device), each with its own seed; sequential jobs each walk their own \
consecutive slice of it (size and offset_increment: the region divided by N, in whole \
requests).\n\n\
Exit status: 0 job printed, 1 the kernel refuses the pair, 2 error.\n\n\
Examples:\n  p2pmem fio-job 0000:03:00.0 nvme1n1\n  \
p2pmem fio-job 0000:03:00.0 /dev/nvme1n1 --rw randread --bs 4K --iodepth 32 --numjobs 4\n  \
p2pmem fio-job 0000:03:00.0 nvme1n1 --rw write --bs 1M --force --json"
)]
pub struct FioJobArgs {
    /// The provider whose p2pmem holds the buffers: a PCI address (or a device name of
    /// the function) with `p2pmem/`.
    pub provider: String,
    /// The block device fio reads or writes: nvme0n1 or /dev/nvme0n1 (a partition too).
    pub device: String,
    /// Access pattern (fio's `rw`).
    #[arg(long, value_name = "read|write|randread|randwrite", default_value = "read", value_parser = parse_rw)]
    pub rw: Rw,
    /// Bytes per request (fio's `bs`; a multiple of 512, of the device's logical block size).
    #[arg(long, value_name = "SIZE", default_value = "4K", value_parser = parse_size)]
    pub bs: u64,
    /// Requests in flight per job (fio's `iodepth`).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub iodepth: u32,
    /// Jobs running at once (fio's `numjobs`, reported as one group), each with its own
    /// buffers.
    #[arg(long, visible_alias = "jobs", value_name = "N", default_value_t = 1)]
    pub numjobs: u32,
    /// Bytes of the device the jobs cover, from its start; default: the whole device.
    /// Random jobs each draw over all of it; sequential jobs split it (see below).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub size: Option<u64>,
    /// Seconds to run (fio's `runtime` with `time_based`).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub runtime: u64,
    /// Print the job for a pair the kernel refuses (fio will fail), or one that writes.
    #[arg(long)]
    pub force: bool,
}

fn parse_rw(s: &str) -> Result<Rw, String> {
    s.parse()
}

/// `4k`, `1m`, `3g` as fio reads them (kb_base=1024), or plain bytes.
fn fio_size(n: u64) -> String {
    for (shift, unit) in [(30, "g"), (20, "m"), (10, "k")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// The p2pmem one fio job maps: `iodepth * bs` plus fio's slack, in whole pages.
pub fn bytes_per_job(bs: u64, iodepth: u32) -> Option<u64> {
    bs.checked_mul(u64::from(iodepth))?
        .checked_add(FIO_SLACK)?
        .checked_next_multiple_of(PAGE)
}

/// The job's parameters once checked.
#[derive(Debug, Clone, Serialize)]
pub struct JobSpec {
    /// fio's `rw`.
    pub rw: Rw,
    /// fio's `bs`.
    pub bs: u64,
    /// fio's `iodepth`.
    pub iodepth: u32,
    /// fio's `numjobs`.
    pub numjobs: u32,
    /// The region the jobs cover (`--size`), when given.
    pub size: Option<u64>,
    /// fio's `runtime` (seconds, time based).
    pub runtime: u64,
}

/// Checks the numbers and that every job's buffers fit `available`; the error says what
/// to lower.
pub fn check_fit(spec: &JobSpec, available: Option<u64>) -> Result<(u64, u64), String> {
    if spec.bs == 0 || !spec.bs.is_multiple_of(512) {
        return Err(format!(
            "--bs {} must be a non-zero multiple of 512 (O_DIRECT moves whole logical blocks)",
            spec.bs
        ));
    }
    if spec.iodepth == 0 || spec.iodepth > MAX_IODEPTH {
        return Err(format!(
            "--iodepth {} must be between 1 and {MAX_IODEPTH}",
            spec.iodepth
        ));
    }
    if spec.numjobs == 0 || spec.numjobs > MAX_JOBS {
        return Err(format!(
            "--numjobs {} must be between 1 and {MAX_JOBS}",
            spec.numjobs
        ));
    }
    if spec.runtime == 0 {
        return Err("--runtime must be at least 1 second".to_string());
    }
    if let Some(s) = spec.size {
        if s < spec.bs {
            return Err(format!(
                "--size {s} is smaller than one request (--bs {})",
                spec.bs
            ));
        }
    }
    let per_job = bytes_per_job(spec.bs, spec.iodepth)
        .ok_or_else(|| "--bs x --iodepth is too large".to_string())?;
    let total = per_job
        .checked_mul(u64::from(spec.numjobs))
        .ok_or_else(|| "--bs x --iodepth x --numjobs is too large".to_string())?;
    let Some(available) = available else {
        return Err(
            "the provider's p2pmem/available could not be read: how much p2pmem fio may map is unknown"
                .to_string(),
        );
    };
    if total > available {
        return Err(format!(
            "the job needs {} of p2pmem ({} job(s) x ({} x {} buffers + {} of fio's alignment, \
             in 64 KiB pages) = {} each) but the provider has {} available: lower --iodepth, \
             --bs or --numjobs",
            size(total),
            spec.numjobs,
            spec.iodepth,
            size(spec.bs),
            size(FIO_SLACK),
            size(per_job),
            size(available)
        ));
    }
    Ok((per_job, total))
}

/// The `fio_job` document.
#[derive(Debug, Serialize)]
struct FioJobJson<'a> {
    provider: p2pmem_model::Bdf,
    device: &'a str,
    filename: String,
    allocate: String,
    #[serde(flatten)]
    spec: &'a JobSpec,
    #[serde(flatten)]
    layout: JobLayout,
    buffer_bytes_per_job: u64,
    buffer_bytes: u64,
    available: Option<u64>,
    kernel: &'a str,
    supported: Option<bool>,
    map_type: Option<&'a str>,
    distance: Option<u32>,
    messages: &'a [String],
    refused_errno: Option<&'a str>,
    warnings: &'a [String],
    refusal: Option<&'a str>,
    job: Option<&'a str>,
}

/// The verdict in words, for the job's comments.
fn verdict_lines(r: &CheckReport) -> Vec<String> {
    let dist = r
        .distance
        .map(|d| format!(", distance {d}"))
        .unwrap_or_default();
    let mut out = vec![match (r.supported, r.map_type.as_deref()) {
        (Some(true), Some(m)) if m == MapType::BusAddr.as_str() => format!(
            "ALLOWED: bus address (map type {m}{dist}): the data stays below the common switch or port"
        ),
        (Some(true), Some(m)) => format!(
            "ALLOWED: through the host bridge (map type {m}{dist}): the data crosses the root complex"
        ),
        (Some(false), _) => format!(
            "REFUSED (map type not_supported): fio's I/O will fail with {}",
            r.refused_errno.as_deref().unwrap_or("an error")
        ),
        _ => "UNKNOWN: an ACS register could not be read (run `p2pmem check` as root)".to_string(),
    }];
    out.extend(r.messages.iter().map(|m| format!("kernel: {m}")));
    out
}

/// The job file.
fn job_text(
    args: &FioJobArgs,
    filename: &str,
    allocate: &str,
    (spec, layout): (&JobSpec, JobLayout),
    report: &CheckReport,
    warnings: &[String],
    (per_job, total, available): (u64, u64, u64),
) -> Result<String, std::fmt::Error> {
    let mut j = String::new();
    let jobs = if spec.numjobs == 1 { "job" } else { "jobs" };
    writeln!(
        j,
        "# fio job from `p2pmem fio-job {} {} --rw {} --bs {} --iodepth {} --numjobs {}`",
        args.provider,
        args.device,
        spec.rw,
        fio_size(spec.bs),
        spec.iodepth,
        spec.numjobs
    )?;
    writeln!(
        j,
        "# The I/O buffers are {}'s p2pmem: the data moves between {filename} and that",
        report.provider
    )?;
    writeln!(j, "# device's memory without crossing host memory.")?;
    writeln!(
        j,
        "# check {} {} (kernel {}):",
        report.provider, args.device, report.kernel
    )?;
    for l in verdict_lines(report) {
        writeln!(j, "#   {l}")?;
    }
    writeln!(
        j,
        "# p2pmem: {} {jobs} x {} ({} x {} + fio's alignment) = {} of {} available",
        spec.numjobs,
        size(per_job),
        spec.iodepth,
        size(spec.bs),
        size(total),
        size(available)
    )?;
    if let Some(inc) = layout.offset_increment {
        writeln!(
            j,
            "# {} sequential jobs, each on its own {} of the device (job i starts at i x {}){}",
            spec.numjobs,
            size(inc),
            size(inc),
            if layout.unreached > 0 {
                format!(
                    "; the last {} bytes of the region are left out (p2pmem bench gives them \
                     to its first jobs)",
                    layout.unreached
                )
            } else {
                String::new()
            }
        )?;
    }
    for w in warnings {
        writeln!(j, "# WARNING: {w}")?;
    }
    writeln!(
        j,
        "# Run as root (p2pmem/allocate is root's) on kernel 6.2 or later: fio THIS_FILE"
    )?;
    writeln!(j, "[global]")?;
    writeln!(j, "filename={filename}")?;
    writeln!(j, "direct=1")?;
    writeln!(
        j,
        "# io_uring without fixedbufs: registered buffers are pinned without P2PDMA support"
    )?;
    writeln!(j, "ioengine=io_uring")?;
    writeln!(
        j,
        "# A shared mapping of allocate (fio neither truncates nor deletes an existing file)"
    )?;
    writeln!(j, "iomem=mmapshared:{allocate}")?;
    writeln!(
        j,
        "# The CPU stays off device memory: fio's default scramble_buffers=1 rewrites buffers"
    )?;
    writeln!(j, "scramble_buffers=0")?;
    writeln!(j, "rw={}", spec.rw)?;
    writeln!(j, "bs={}", fio_size(spec.bs))?;
    writeln!(j, "iodepth={}", spec.iodepth)?;
    writeln!(j, "numjobs={}", spec.numjobs)?;
    if let Some(s) = layout.job_size {
        writeln!(j, "size={}", fio_size(s))?;
    }
    if let Some(inc) = layout.offset_increment {
        writeln!(j, "offset_increment={}", fio_size(inc))?;
    }
    writeln!(j, "runtime={}", spec.runtime)?;
    writeln!(j, "time_based=1")?;
    writeln!(j, "group_reporting=1")?;
    writeln!(j)?;
    let dev = Path::new(filename)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    writeln!(j, "[p2pmem-{}-{dev}]", report.provider)?;
    Ok(j)
}

/// The block device behind `name`: its name (`nvme1n1`).
fn block_device(sys: &System, name: &str) -> anyhow::Result<String> {
    let client = resolve_client(sys, name).context("DEVICE")?;
    match client.kind {
        ClientKind::Block { name, .. } => Ok(name),
        _ => bail!(
            "DEVICE '{name}' is not a block device: fio reads and writes a block device such as \
             nvme0n1 or /dev/nvme0n1 (see `p2pmem topo`)"
        ),
    }
}

/// Run `fio-job`.
pub fn run(common: &Common, args: &FioJobArgs) -> anyhow::Result<i32> {
    let scope = Scope::For {
        names: vec![args.provider.clone(), args.device.clone()],
        providers: false,
    };
    let sys = load_scoped(common, &scope)?;
    let disk = block_device(&sys, &args.device)?;
    let filename = format!("/dev/{disk}");
    let (report, check) = check_report(&sys, &args.provider, std::slice::from_ref(&args.device))?;
    let provider = check.provider;
    let Some(p2pmem) = sys.topology.get(&provider).and_then(|f| f.p2pmem) else {
        bail!(
            "{provider} has no p2pmem/ directory: it is not a P2PDMA provider (see `p2pmem topo`)"
        );
    };
    if report.refused_errno.is_none() {
        bail!(
            "kernel {} has no userspace P2P I/O (p2pmem/allocate arrived in 6.2): fio cannot map p2pmem here",
            sys.rules.kernel
        );
    }
    let spec = JobSpec {
        rw: args.rw,
        bs: args.bs,
        iodepth: args.iodepth,
        numjobs: args.numjobs,
        size: args.size,
        runtime: args.runtime,
    };
    let (per_job, total) =
        check_fit(&spec, p2pmem.available).map_err(|e| anyhow::anyhow!("{provider}: {e}"))?;
    let region = match spec.size {
        Some(s) => Some(s),
        None => block_device_bytes(&common.root, &disk).ok(),
    };
    let shares = layout(&spec, region).map_err(|e| anyhow::anyhow!("{filename}: {e}"))?;
    let available = p2pmem.available.unwrap_or(0);
    let mut warnings = Vec::new();
    if args.rw.writes() {
        if !args.force {
            bail!(
                "--rw {} overwrites {filename}: every block fio reaches is lost; pass --force to \
                 print this job (and unmount {filename} first)",
                args.rw
            );
        }
        warnings.push(format!(
            "this job WRITES to {filename}: its data is lost; it must not be mounted or in use"
        ));
        warnings.push(
            "fio fills the write buffers once at start with CPU stores to device memory (slow, once)"
                .to_string(),
        );
    }
    let refusal = match report.supported {
        Some(true) => None,
        Some(false) => Some(format!(
            "the kernel refuses P2P DMA between {provider} and {filename}: {} An O_DIRECT \
             transfer through this p2pmem fails with {}, so fio's would too (`p2pmem check {} {}` \
             explains; --force prints the job anyway)",
            report
                .messages
                .first()
                .map(|m| format!("\"{m}\"."))
                .unwrap_or_default(),
            report.refused_errno.as_deref().unwrap_or("an error"),
            args.provider,
            args.device
        )),
        None => Some(format!(
            "whether the kernel allows P2P DMA between {provider} and {filename} depends on ACS \
             registers this user cannot read: run as root, or --force prints the job anyway"
        )),
    };
    if refusal.is_some() && args.force {
        warnings.push(match report.supported {
            Some(false) => format!(
                "the kernel refuses this pair: fio's I/O will fail with {}",
                report.refused_errno.as_deref().unwrap_or("an error")
            ),
            _ => "the kernel's verdict for this pair is unknown".to_string(),
        });
    }
    let blocked = refusal.as_deref().filter(|_| !args.force);
    let allocate = allocate_path(provider).display().to_string();
    let job = match blocked {
        Some(_) => None,
        None => Some(job_text(
            args,
            &filename,
            &allocate,
            (&spec, shares),
            &report,
            &warnings,
            (per_job, total, available),
        )?),
    };
    let code = match (blocked, report.supported) {
        (None, _) => 0,
        (Some(_), Some(false)) => 1,
        (Some(_), _) => 2,
    };
    if common.json {
        print_json(
            "fio_job",
            &FioJobJson {
                provider,
                device: &args.device,
                filename: filename.clone(),
                allocate,
                spec: &spec,
                layout: shares,
                buffer_bytes_per_job: per_job,
                buffer_bytes: total,
                available: p2pmem.available,
                kernel: &report.kernel,
                supported: report.supported,
                map_type: report.map_type.as_deref(),
                distance: report.distance,
                messages: &report.messages,
                refused_errno: report.refused_errno.as_deref(),
                warnings: &warnings,
                refusal: blocked,
                job: job.as_deref(),
            },
        )?;
    } else {
        if let Some(r) = blocked {
            eprintln!("p2pmem: fio-job: {r}");
        }
        if let Some(j) = &job {
            print!("{j}");
            for w in &warnings {
                eprintln!("p2pmem: WARNING: {w}");
            }
        }
    }
    Ok(code)
}

/// The provider's `allocate` on the live system, where fio runs (also with `--root`: a
/// capture describes the machine the job is for).
pub fn allocate_path(provider: p2pmem_model::Bdf) -> PathBuf {
    pci_device_dir(Path::new("/"), provider).join("p2pmem/allocate")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A sequential read job spec (the layout's tests use it too).
    pub(crate) fn spec(bs: u64, iodepth: u32, numjobs: u32) -> JobSpec {
        JobSpec {
            rw: Rw::Read,
            bs,
            iodepth,
            numjobs,
            size: None,
            runtime: 10,
        }
    }

    #[test]
    fn fio_sizes() {
        assert_eq!(fio_size(4096), "4k");
        assert_eq!(fio_size(1 << 20), "1m");
        assert_eq!(fio_size(3 << 30), "3g");
        assert_eq!(fio_size(1536), "1536");
        assert_eq!(fio_size(512), "512");
    }

    #[test]
    fn a_job_maps_its_depth_of_buffers_plus_fios_slack_in_pages() {
        // fio 3.33 --debug=mem, 8 x 64 KiB, direct=1: "Alloc 532478 for buffers".
        let per_job = bytes_per_job(64 << 10, 8).unwrap();
        assert!(per_job >= 532_478, "{per_job}");
        assert_eq!(per_job, (8 << 16) + FIO_SLACK);
        assert_eq!(bytes_per_job(4096, 1).unwrap(), 3 * PAGE);
        assert_eq!(bytes_per_job(u64::MAX, 2), None);
    }

    #[test]
    fn what_does_not_fit_says_what_to_lower() {
        let avail = Some(16 << 20);
        assert!(check_fit(&spec(4096, 8, 1), avail).is_ok());
        let e = check_fit(&spec(1 << 20, 8, 4), avail).unwrap_err();
        assert!(e.contains("16.0 MiB available"), "{e}");
        assert!(e.contains("lower --iodepth, --bs or --numjobs"), "{e}");
        let e = check_fit(&spec(4096, 8, 1), None).unwrap_err();
        assert!(e.contains("available"), "{e}");
        for bad in [
            spec(0, 8, 1),
            spec(1000, 8, 1),
            spec(4096, 0, 1),
            spec(4096, 8, 0),
        ] {
            assert!(check_fit(&bad, avail).is_err(), "{bad:?}");
        }
        let mut s = spec(4096, 8, 1);
        s.runtime = 0;
        assert!(check_fit(&s, avail).is_err());
    }

    #[test]
    fn the_allocate_path_is_the_live_systems() {
        let b: p2pmem_model::Bdf = "0000:03:00.0".parse().unwrap();
        assert_eq!(
            allocate_path(b),
            PathBuf::from("/sys/bus/pci/devices/0000:03:00.0/p2pmem/allocate")
        );
    }
}
