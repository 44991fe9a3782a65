//! `p2pmem bench DEVICE`: throughput, IOPS and latency percentiles of O_DIRECT reads or
//! writes on one block device (or file), with the buffers in host memory or in a
//! provider's p2pmem, so that a P2P transfer can be measured against a host one.
//!
//! It reuses the copy engine's pieces: the endpoint opening and in-use refusal, the
//! model's routing, the buffers, and the io_uring [`Queue`] (with the
//! `pread`/`pwrite` fallback). [`prepare`] does everything before the first request;
//! [`Prepared::run`] keeps `depth` requests in flight for `time` and reports.

mod error;
mod histogram;
mod offsets;
mod pipeline;
mod route;
mod setup;

#[cfg(test)]
mod tests;

pub use error::{BenchError, IoError};
pub use histogram::Histogram;
pub use offsets::{Offsets, Region};
pub use route::BenchRoute;

use crate::copy::{
    open_queue, place_buffer, refusal_explanation, routing_system, BufferSpec, Dir, Endpoint,
    EngineChoice, Queue, Via, MAX_DEPTH,
};
use crate::dio::Op;
use crate::p2pbuf::Location;
use crate::sys;
use crate::system::System;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

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
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    /// From a histogram of nanoseconds.
    pub fn from_ns(h: &Histogram) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            min: us(h.min()),
            mean: h.mean() / 1000.0,
            p50: us(h.percentile(50.0)),
            p90: us(h.percentile(90.0)),
            p99: us(h.percentile(99.0)),
            p99_9: us(h.percentile(99.9)),
            max: us(h.max()),
        }
    }
}

/// A finished bench.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The device.
    pub device: PathBuf,
    /// Access pattern.
    pub rw: Rw,
    /// Bytes per request.
    pub bs: u64,
    /// Requests allowed in flight.
    pub depth: usize,
    /// `io_uring` or `sync`.
    pub engine: &'static str,
    /// `host` or the provider's PCI address.
    pub via: String,
    /// The region the offsets were drawn from.
    pub region: Region,
    /// Bytes moved.
    pub bytes: u64,
    /// Requests completed.
    pub ios: u64,
    /// From the first request to the last completion.
    pub seconds: f64,
    /// `ios / seconds`.
    pub iops: f64,
    /// `bytes / 2^20 / seconds`.
    pub mib_per_s: f64,
    /// Per-request latency, from queuing the request to reaping its completion.
    pub latency_us: Latency,
    /// Stopped early by Ctrl-C (the numbers cover the time it ran).
    pub interrupted: bool,
    /// Requests that failed in the kernel; the bench went on (fio's
    /// `continue_on_error=io`). Not in `ios`, `bytes` or the latencies.
    pub errors: u64,
    /// The first failed requests (at most 8).
    pub first_errors: Vec<FailedRequest>,
}

/// One failed request of a bench.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedRequest {
    /// Its file offset.
    pub offset: u64,
    /// The errno name.
    pub errno: String,
    /// What it means here.
    pub hint: &'static str,
}

/// A bench ready to run: the device open, the buffers mapped, the engine set up.
pub struct Prepared {
    // Field order matters: the queue (which owns the buffer and drains in-flight
    // requests on drop) goes before the endpoint whose descriptor those requests use.
    queue: Box<dyn Queue>,
    ep: Endpoint,
    rw: Rw,
    bs: u64,
    depth: usize,
    time: Duration,
    offsets: Offsets,
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
            .field("engine", &self.queue.name())
            .finish()
    }
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
    let mut notes = Vec::new();
    let ep = setup::open(root, req, &mut notes)?;
    let (region, offsets) = setup::region(req, &ep)?;
    let sys = routing_system(root, req.via);
    let mut route = route::decide(
        root,
        sys.as_ref().map_err(String::clone),
        req.via,
        &ep,
        req.force,
    )?;
    let sys = sys.ok();
    let mut placed = place_buffer(
        root,
        BufferSpec {
            provider: route.provider,
            unit: req.bs,
            depth: req.depth,
            units: "buffers",
            host_fallback: (req.via == Via::Auto)
                .then_some("Benchmarking with buffers in HOST memory instead"),
        },
        &mut notes,
    )?;
    if let Some(fell) = placed.fell_back {
        route.warnings.push(fell.warning);
        route.provider = None;
        route.reason = fell.reason;
    }
    if req.rw.writes() {
        setup::fill_random(placed.buffer.as_mut(), req.seed).map_err(BenchError::Fill)?;
    }
    let depth = placed.depth;
    let queue = open_queue(req.engine, depth, placed.buffer, &mut notes)?;
    Ok(Prepared {
        queue,
        ep,
        rw: req.rw,
        bs: req.bs,
        depth,
        time: req.time,
        offsets,
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
        self.queue.name()
    }

    /// Requests in flight (may be lower than asked when the p2pmem pool was short).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The region the offsets are drawn from.
    pub fn region(&self) -> Region {
        self.region
    }

    /// Runs the bench. `cancel` (set by a signal handler) ends it early: requests in
    /// flight are reaped and the report covers the time it ran.
    pub fn run(mut self, cancel: &AtomicBool) -> Result<BenchReport, BenchError> {
        let location = self.queue.location();
        let bs =
            usize::try_from(self.bs).map_err(|_| params(format!("{} is too large", self.bs)))?;
        let p = pipeline::Params {
            dir: self.rw.dir(),
            bs,
            depth: self.depth,
            time: self.time,
        };
        let out = pipeline::run(
            self.queue.as_mut(),
            self.ep.fd(),
            p,
            &mut self.offsets,
            cancel,
        );
        if let Some(stop) = out.stop {
            return Err(self.stop_error(stop, location, out.ios));
        }
        let seconds = out.elapsed.as_secs_f64();
        let per_s = |v: f64| if seconds > 0.0 { v / seconds } else { 0.0 };
        Ok(BenchReport {
            device: self.ep.path().to_path_buf(),
            rw: self.rw,
            bs: self.bs,
            depth: self.depth,
            engine: self.queue.name(),
            via: match location {
                Location::Host => "host".to_string(),
                Location::P2p(b) => b.to_string(),
            },
            region: self.region,
            bytes: out.bytes,
            ios: out.ios,
            seconds,
            iops: per_s(out.ios as f64),
            mib_per_s: per_s(out.bytes as f64 / f64::from(1u32 << 20)),
            latency_us: Latency::from_ns(&out.latency_ns),
            interrupted: out.interrupted,
            errors: out.errors,
            first_errors: out
                .first_errors
                .iter()
                .map(|(offset, e)| FailedRequest {
                    offset: *offset,
                    errno: sys::io_error_label(e),
                    hint: self.ep.io_hint(e.raw_os_error(), location),
                })
                .collect(),
        })
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
