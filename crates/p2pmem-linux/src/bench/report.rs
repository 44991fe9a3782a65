//! What a bench reports: the totals over all its jobs (what `bench` printed before it had
//! jobs, so scripts reading them keep working) and each job's own figures. Latency
//! percentiles over all jobs come from the merged histogram, never from averaging the
//! jobs' percentiles.

use super::histogram::Histogram;
use super::offsets::Region;
use super::Rw;
use serde::Serialize;
use std::path::PathBuf;

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

/// A finished bench: every figure outside `per_job` is the total (or the merge) over all
/// jobs.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The device.
    pub device: PathBuf,
    /// Access pattern.
    pub rw: Rw,
    /// Bytes per request.
    pub bs: u64,
    /// Requests allowed in flight, per job.
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
    /// From the first request of any job to the last completion of any job.
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
    /// The first failed requests (at most 8, over all jobs, in the order they failed).
    pub first_errors: Vec<FailedRequest>,
    /// Jobs that ran at once, each with its own queue and buffers (fio's `numjobs`).
    pub jobs: usize,
    /// Each job's figures (fio's per-job report without `group_reporting`).
    pub per_job: Vec<JobReport>,
}

/// One job of a bench.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// Its number, from 0.
    pub job: usize,
    /// The bytes its offsets were drawn from: its slice of the region for sequential
    /// patterns, the whole region for random ones.
    pub region: Region,
    /// The seed of its random offsets; `None` for sequential patterns.
    pub seed: Option<u64>,
    /// Bytes moved.
    pub bytes: u64,
    /// Requests completed.
    pub ios: u64,
    /// From its first request to its last completion.
    pub seconds: f64,
    /// `ios / seconds`.
    pub iops: f64,
    /// `bytes / 2^20 / seconds`.
    pub mib_per_s: f64,
    /// Its requests' latency.
    pub latency_us: Latency,
    /// Its failed requests.
    pub errors: u64,
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

/// `v / seconds`, 0 for an empty time.
pub(super) fn per_s(v: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        v / seconds
    } else {
        0.0
    }
}

/// `bytes` in MiB.
pub(super) fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}
