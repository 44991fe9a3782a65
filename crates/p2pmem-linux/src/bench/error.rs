//! Why a bench was refused or stopped.

use crate::copy::{EndpointError, PlacementError, PushError};
use crate::dio::Op;
use crate::p2pbuf::{CpuAccessError, Location};
use std::io;
use std::path::PathBuf;

/// A bench that was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Opening the device, or the refusal to write to a device in use (as `p2pmem copy`
    /// refuses a destination).
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The P2P route refused, the buffers not mapped or io_uring unavailable (as for
    /// `p2pmem copy`); nothing was moved.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The buffer could not be filled with the data a write bench writes.
    #[error("cannot fill the buffer with the data to write")]
    Fill(#[source] CpuAccessError),
    /// The device does not exist (a bench never creates files).
    #[error("{path} does not exist (p2pmem bench never creates or extends a file)")]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// Block size, depth, time or region do not work for this device.
    #[error("{0}")]
    Params(String),
    /// A request failed in the kernel; nothing more was started and every request in
    /// flight was reaped.
    #[error(transparent)]
    Io(Box<IoError>),
    /// A read returned 0 bytes inside the region (the file shrank?).
    #[error("{path} ended at offset {file_off}, inside the benchmarked region")]
    ShortRead {
        /// The device.
        path: PathBuf,
        /// Where.
        file_off: u64,
    },
    /// The queue refused a request (a bug if it happens).
    #[error("the I/O queue refused a request before it reached the kernel")]
    Push(#[source] PushError),
    /// A job's thread could not be started; the jobs already running were stopped.
    #[error("cannot start the thread of bench job {job}")]
    Thread {
        /// The job.
        job: usize,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Waiting for io_uring completions failed.
    #[error("waiting for io_uring completions failed ({errno})")]
    Wait {
        /// Errno name.
        errno: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
}

/// A failed O_DIRECT request during a bench.
#[derive(Debug, thiserror::Error)]
#[error(
    "O_DIRECT {op} of {len} bytes at offset {file_off} of {path} with a buffer in {location} \
     failed ({errno}) after {ios} requests: {hint}{}",
    explanation.as_deref().map(|e| format!(". The model: {e}")).unwrap_or_default()
)]
pub struct IoError {
    /// Which call.
    pub op: Op,
    /// The device.
    pub path: PathBuf,
    /// File offset.
    pub file_off: u64,
    /// Length.
    pub len: u64,
    /// Where the buffer lived.
    pub location: Location,
    /// Errno name.
    pub errno: String,
    /// What the errno means here.
    pub hint: &'static str,
    /// The model's explanation of a P2P refusal.
    pub explanation: Option<String>,
    /// Requests that had completed before.
    pub ios: u64,
    /// The system error.
    #[source]
    pub source: io::Error,
}
