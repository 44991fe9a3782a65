//! `p2pmem bench DEVICE`: throughput, IOPS and latency percentiles of O_DIRECT reads or
//! writes on one block device (or file), with the buffers in host memory or in a
//! provider's p2pmem, so that a P2P transfer can be measured against a host one.
//!
//! It reuses the copy engine's pieces: the endpoint opening and in-use refusal, the
//! model's routing, the buffers, and the io_uring [`Queue`] (with the
//! `pread`/`pwrite` fallback). [`prepare`] does everything before the first request;
//! [`Prepared::run`] keeps `depth` requests in flight for `time` and reports.
//!
//! With `jobs` above 1 (fio's `numjobs` with `group_reporting`), each job has its own
//! thread, io_uring queue and buffers and runs the same loop; [`offsets::shares`] says
//! which offsets each job draws, and the report gives the totals and each job's figures.

mod error;
mod histogram;
mod offsets;
mod pipeline;
mod report;
mod route;
mod setup;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_jobs;

pub use error::{BenchError, IoError};
pub use histogram::Histogram;
pub use offsets::{job_seed, shares, JobShare, Offsets, Region, MAX_JOBS};
pub use report::{BenchReport, FailedRequest, JobReport, Latency};
pub use route::BenchRoute;

use crate::copy::{
    open_queue, place_buffers, refusal_explanation, routing_system, BufferSpec, Dir, Endpoint,
    EngineChoice, Queue, Submit, Via, MAX_DEPTH,
};
use crate::dio::Op;
use crate::p2pbuf::{Location, Pages};
use crate::sys;
use crate::system::System;
use report::{mib, per_s};
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// The access pattern, as fio names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rw {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    RandRead,
    /// Random writes.
    RandWrite,
}

impl Rw {
    /// Whether it writes to the device.
    pub fn writes(self) -> bool {
        matches!(self, Self::Write | Self::RandWrite)
    }

    /// Whether the offsets are random.
    pub fn random(self) -> bool {
        matches!(self, Self::RandRead | Self::RandWrite)
    }

    fn dir(self) -> Dir {
        if self.writes() {
            Dir::Write
        } else {
            Dir::Read
        }
    }
}

impl std::str::FromStr for Rw {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "randread" => Ok(Self::RandRead),
            "randwrite" => Ok(Self::RandWrite),
            other => Err(format!(
                "'{other}' is not an access pattern: read, write, randread or randwrite"
            )),
        }
    }
}

impl fmt::Display for Rw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::RandRead => "randread",
            Self::RandWrite => "randwrite",
        })
    }
}

/// What to measure and how.
#[derive(Debug, Clone)]
pub struct BenchRequest {
    /// The block device or regular file (never created).
    pub path: PathBuf,
    /// Access pattern.
    pub rw: Rw,
    /// Bytes per request (a multiple of the logical block size).
    pub bs: u64,
    /// Requests in flight.
    pub depth: usize,
    /// How long to keep starting requests (sequential offsets wrap around the region).
    pub time: Duration,
    /// First byte of the region (block-aligned).
    pub offset: u64,
    /// Bytes of the region; `None`: to the end of the device.
    pub size: Option<u64>,
    /// Where the buffers live.
    pub via: Via,
    /// Write to a device that is mounted or in use; try a P2P path the model refuses.
    pub force: bool,
    /// I/O engine.
    pub engine: EngineChoice,
    /// Seed of the random offsets (the same seed gives the same offsets).
    pub seed: u64,
    /// Jobs at once, each with its own queue and buffers (1 to [`MAX_JOBS`]).
    pub jobs: usize,
}

/// A bench ready to run: the device open, the buffers mapped, the engine set up.
pub struct Prepared {
    // Field order matters: the jobs' queues (each owns its buffer and drains its
    // in-flight requests on drop) go before the endpoint whose descriptor they use.
    jobs: Vec<Job>,
    ep: Endpoint,
    rw: Rw,
    bs: u64,
    depth: usize,
    time: Duration,
    region: Region,
    route: BenchRoute,
    sys: Option<System>,
    notes: Vec<String>,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("ep", &self.ep)
            .field("rw", &self.rw)
            .field("region", &self.region)
            .field("engine", &self.engine())
            .field("jobs", &self.jobs.len())
            .finish()
    }
}

/// One job: its queue (with its buffer), its offsets and where they come from.
struct Job {
    queue: Box<dyn Queue>,
    offsets: Offsets,
    share: JobShare,
}

pub(crate) fn params(msg: String) -> BenchError {
    BenchError::Params(msg)
}

/// Opens, checks, routes and maps: everything before the first request. `root` is
/// where sysfs and procfs are read (`/` on a live system).
pub fn prepare(root: &Path, req: &BenchRequest) -> Result<Prepared, BenchError> {
    if req.depth == 0 || req.depth > MAX_DEPTH {
        return Err(params(format!(
            "depth {} must be between 1 and {MAX_DEPTH}",
            req.depth
        )));
    }
    if req.time.is_zero() {
        return Err(params("the time must be more than 0 seconds".to_string()));
    }
    if req.jobs == 0 || req.jobs > MAX_JOBS {
        return Err(params(format!(
            "jobs {} must be between 1 and {MAX_JOBS}",
            req.jobs
        )));
    }
    let mut notes = Vec::new();
    let ep = setup::open(root, req, &mut notes)?;
    let (region, shares) = setup::region(req, &ep)?;
    let sys = routing_system(root, req.via);
    let mut route = route::decide(
        root,
        sys.as_ref().map_err(String::clone),
        req.via,
        &ep,
        req.force,
    )?;
    let sys = sys.ok();
    let placed = place_buffers(
        root,
        BufferSpec {
            provider: route.provider,
            unit: req.bs,
            depth: req.depth,
            units: "buffers",
            host_fallback: (req.via == Via::Auto)
                .then_some("Benchmarking with buffers in HOST memory instead"),
            host_pages: Pages::for_requests(req.bs),
        },
        req.jobs,
        &mut notes,
    )?;
    if let Some(fell) = placed.fell_back {
        route.warnings.push(fell.warning);
        route.provider = None;
        route.reason = fell.reason;
    }
    let depth = placed.depth;
    let mut engine = req.engine;
    let mut jobs = Vec::with_capacity(req.jobs);
    for (mut buffer, share) in placed.buffers.into_iter().zip(shares) {
        if req.rw.writes() {
            setup::fill_random(buffer.as_mut(), share.seed).map_err(BenchError::Fill)?;
        }
        // The first job's queue decides the engine (and says why in the notes); the
        // others get the same one or fail: one bench never mixes engines.
        let mut said = Vec::new();
        let notes = if jobs.is_empty() {
            &mut notes
        } else {
            &mut said
        };
        // The device sees requests of `bs`, never merged ones, as fio's. Random requests
        // go to the kernel two at a time, too few for the block layer to plug, for half
        // the system calls (see `Submit::Pairs`); sequential ones each at once, which
        // measured better than pairs with one job (README, Benchmarks).
        let submit = if req.rw.random() {
            Submit::Pairs
        } else {
            Submit::Each
        };
        let queue = open_queue(engine, depth, depth, submit, buffer, notes)?;
        engine = if queue.name() == "sync" {
            EngineChoice::Sync
        } else {
            EngineChoice::Uring
        };
        let offsets = setup::offsets(req, share)?;
        jobs.push(Job {
            queue,
            offsets,
            share,
        });
    }
    Ok(Prepared {
        jobs,
        ep,
        rw: req.rw,
        bs: req.bs,
        depth,
        time: req.time,
        region,
        route,
        sys,
        notes,
    })
}

impl Prepared {
    /// Where the buffers live and why.
    pub fn route(&self) -> &BenchRoute {
        &self.route
    }

    /// Things to say once on stderr before the bench starts (engine fallback, depth
    /// reduced, `--force` overrides). The route's warnings are separate.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// `io_uring` or `sync`.
    pub fn engine(&self) -> &'static str {
        self.jobs.first().map_or("none", |j| j.queue.name())
    }

    /// Jobs that will run at once.
    pub fn jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Requests in flight (may be lower than asked when the p2pmem pool was short).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The region the offsets are drawn from.
    pub fn region(&self) -> Region {
        self.region
    }

    /// Runs the bench: every job on its own thread, all started with one deadline.
    /// `cancel` (set by a signal handler) ends all of them early: requests in flight are
    /// reaped and the report covers the time they ran. A job that stops on an error
    /// stops the others too (they reap what they have in flight), and the bench fails
    /// with that error.
    pub fn run(mut self, cancel: &AtomicBool) -> Result<BenchReport, BenchError> {
        let location = self.jobs[0].queue.location();
        let bs =
            usize::try_from(self.bs).map_err(|_| params(format!("{} is too large", self.bs)))?;
        let p = pipeline::Params {
            dir: self.rw.dir(),
            bs,
            depth: self.depth,
            until: Instant::now() + self.time,
        };
        let halt = AtomicBool::new(false);
        let flags = pipeline::Flags {
            cancel,
            halt: &halt,
        };
        let fd = self.ep.fd();
        let outcomes = std::thread::scope(|s| {
            let mut handles = Vec::with_capacity(self.jobs.len());
            for (i, job) in self.jobs.iter_mut().enumerate() {
                let spawned = std::thread::Builder::new()
                    .name(format!("bench-job-{i}"))
                    .spawn_scoped(s, move || {
                        pipeline::run(job.queue.as_mut(), fd, p, &mut job.offsets, flags)
                    });
                match spawned {
                    Ok(h) => handles.push(h),
                    Err(source) => {
                        // The jobs already running stop at their next completion.
                        halt.store(true, std::sync::atomic::Ordering::Relaxed);
                        return Err(BenchError::Thread { job: i, source });
                    }
                }
            }
            Ok(handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect::<Vec<_>>())
        })?;
        let total_ios = outcomes.iter().map(|o| o.ios).sum();
        let mut outcomes = outcomes;
        if let Some(stop) = outcomes.iter_mut().find_map(|o| o.stop.take()) {
            return Err(self.stop_error(stop, location, total_ios));
        }
        Ok(self.report(outcomes, location))
    }

    /// The report of finished jobs: totals, the merged latency histogram, the first
    /// failures over all jobs by the time they were reaped, and each job's figures.
    fn report(&self, outcomes: Vec<pipeline::Outcome>, location: Location) -> BenchReport {
        let first = outcomes.iter().map(|o| o.started).min();
        let last = outcomes.iter().map(|o| o.started + o.elapsed).max();
        let seconds = match (first, last) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let interrupted = outcomes.iter().any(|o| o.interrupted);
        let mut latency = Histogram::new();
        let mut failed = Vec::new();
        let mut per_job = Vec::with_capacity(outcomes.len());
        for (o, job) in outcomes.into_iter().zip(&self.jobs) {
            latency.merge(&o.latency_ns);
            let secs = o.elapsed.as_secs_f64();
            per_job.push(JobReport {
                job: per_job.len(),
                region: job.share.region,
                seed: self.rw.random().then_some(job.share.seed),
                bytes: o.bytes,
                ios: o.ios,
                seconds: secs,
                iops: per_s(o.ios as f64, secs),
                mib_per_s: per_s(mib(o.bytes), secs),
                latency_us: Latency::from_ns(&o.latency_ns),
                errors: o.errors,
            });
            failed.extend(o.first_errors);
        }
        failed.sort_by_key(|f| f.at);
        failed.truncate(pipeline::KEPT_ERRORS);
        let bytes = per_job.iter().map(|j| j.bytes).sum();
        let ios = per_job.iter().map(|j| j.ios).sum();
        BenchReport {
            device: self.ep.path().to_path_buf(),
            rw: self.rw,
            bs: self.bs,
            depth: self.depth,
            engine: self.engine(),
            via: match location {
                Location::Host => "host".to_string(),
                Location::P2p(b) => b.to_string(),
            },
            region: self.region,
            bytes,
            ios,
            seconds,
            iops: per_s(ios as f64, seconds),
            mib_per_s: per_s(mib(bytes), seconds),
            latency_us: Latency::from_ns(&latency),
            interrupted,
            errors: per_job.iter().map(|j| j.errors).sum(),
            first_errors: failed
                .iter()
                .map(|f| FailedRequest {
                    offset: f.file_off,
                    errno: sys::io_error_label(&f.source),
                    hint: self.ep.io_hint(f.source.raw_os_error(), location),
                })
                .collect(),
            jobs: self.jobs.len(),
            per_job,
        }
    }

    fn stop_error(&self, stop: pipeline::Stop, location: Location, ios: u64) -> BenchError {
        let path = self.ep.path().to_path_buf();
        let op = if self.rw.writes() {
            Op::Write
        } else {
            Op::Read
        };
        match stop {
            pipeline::Stop::Io { file_off, source } => {
                let errno = source.raw_os_error();
                let explanation = refusal_explanation(
                    location,
                    errno,
                    self.sys.as_ref(),
                    self.route.client.as_ref(),
                );
                BenchError::Io(Box::new(IoError {
                    op,
                    path,
                    file_off,
                    len: self.bs,
                    location,
                    errno: sys::io_error_label(&source),
                    hint: self.ep.io_hint(errno, location),
                    explanation,
                    ios,
                    source,
                }))
            }
            pipeline::Stop::Zero { file_off } if !self.rw.writes() => {
                BenchError::ShortRead { path, file_off }
            }
            pipeline::Stop::Zero { file_off } => BenchError::Io(Box::new(IoError {
                op,
                path,
                file_off,
                len: self.bs,
                location,
                errno: "none".to_string(),
                hint: "the write moved 0 bytes",
                explanation: None,
                ios,
                source: std::io::Error::from(std::io::ErrorKind::WriteZero),
            })),
            pipeline::Stop::Push(e) => BenchError::Push(e),
            pipeline::Stop::Wait(source) => BenchError::Wait {
                errno: sys::io_error_label(&source),
                source,
            },
        }
    }
}
