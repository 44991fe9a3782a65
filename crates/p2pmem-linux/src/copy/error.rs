//! Why a copy was refused or stopped. Every failure after the first write says which
//! destination bytes were written, so the user knows what to redo.

use super::endpoint::EndpointError;
use super::placement::PlacementError;
use super::plan::{ByteRange, PlanError, Written};
use crate::dio::Op;
use crate::p2pbuf::Location;
use p2pmem_model::pool::PoolError;
use std::io;
use std::path::PathBuf;

/// Which destination bytes a stopped copy wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The destination.
    pub dst: PathBuf,
    /// The planned destination range.
    pub planned: ByteRange,
    /// Completed writes, merged.
    pub written: Written,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.written.bytes() == 0 {
            return write!(
                f,
                "nothing of the planned {} of {} was written",
                self.planned,
                self.dst.display()
            );
        }
        write!(
            f,
            "of the planned {} of {}, {} were written ({} of {} bytes)",
            self.planned,
            self.dst.display(),
            self.written,
            self.written.bytes(),
            self.planned.len()
        )
    }
}

/// A copy that was refused, failed or stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Opening an endpoint, or the refusal to write to a device in use.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The range, chunk or depth does not work.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The destination range overlaps the source range on the same object.
    #[error(
        "refusing to copy: source bytes {src_range} of {src} and destination bytes {dst_range} of {dst} \
         overlap on the same {object} (--force overrides; the result is then undefined)"
    )]
    Overlap {
        /// Source path.
        src: PathBuf,
        /// Destination path.
        dst: PathBuf,
        /// The source range on the common object.
        src_range: ByteRange,
        /// The destination range on the common object.
        dst_range: ByteRange,
        /// `file` or `disk`.
        object: &'static str,
    },
    /// The P2P path refused, the buffer not mapped or the engine unavailable; nothing
    /// was written.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// `--require-p2p` and no P2P path exists.
    #[error("no P2P path, and --require-p2p was given: {why}")]
    NoP2pPath {
        /// Why there is none.
        why: String,
    },
    /// The buffer cannot be cut into chunks (a bug if it happens).
    #[error("cannot sub-allocate chunks from the {len}-byte buffer")]
    Pool {
        /// Buffer length.
        len: usize,
        /// The cause.
        #[source]
        source: PoolError,
    },
    /// A transfer failed; nothing more was submitted and the in-flight requests were
    /// reaped before this was returned.
    #[error(transparent)]
    Transfer(Box<TransferError>),
    /// The source ended early (truncated while copying, or a disk that went away).
    #[error(
        "{path} ended at offset {file_off}, before the planned range did{}; {progress}",
        if *gone { format!(" ({})", super::endpoint::DEVICE_GONE) } else { String::new() }
    )]
    ShortSource {
        /// The source.
        path: PathBuf,
        /// Where it ended.
        file_off: u64,
        /// The source disk went away ([`super::Endpoint::vanished`]).
        gone: bool,
        /// What had been written.
        progress: Box<Progress>,
    },
    /// A short transfer left a remainder that is not block-aligned.
    #[error("{op} at offset {file_off} of {path} moved {got} bytes, not a multiple of the {block}-byte block; {progress}")]
    UnalignedShort {
        /// Which call.
        op: Op,
        /// The path.
        path: PathBuf,
        /// File offset.
        file_off: u64,
        /// Bytes moved.
        got: usize,
        /// Block size.
        block: u64,
        /// What had been written.
        progress: Box<Progress>,
    },
    /// Waiting for io_uring completions failed; nothing more can be reaped.
    #[error("waiting for io_uring completions failed ({errno}); {progress}")]
    Wait {
        /// Errno name.
        errno: String,
        /// What had been written.
        progress: Box<Progress>,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Ctrl-C (or SIGTERM): no new chunk was started; in-flight requests finished.
    #[error("interrupted; {progress}")]
    Interrupted {
        /// What had been written.
        progress: Box<Progress>,
    },
    /// Buffered I/O of the sub-block tail, or the final fdatasync, failed.
    #[error("{what} of {path} failed ({errno}); {progress}")]
    Finish {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Errno name.
        errno: String,
        /// What had been written.
        progress: Box<Progress>,
        /// The system error.
        #[source]
        source: io::Error,
    },
}

impl CopyError {
    /// What was written, for errors after the copy started.
    pub fn progress(&self) -> Option<&Progress> {
        match self {
            Self::Transfer(t) => Some(&t.progress),
            Self::ShortSource { progress, .. }
            | Self::UnalignedShort { progress, .. }
            | Self::Wait { progress, .. }
            | Self::Interrupted { progress }
            | Self::Finish { progress, .. } => Some(progress),
            _ => None,
        }
    }
}

/// A failed O_DIRECT transfer during a copy.
#[derive(Debug, thiserror::Error)]
#[error(
    "O_DIRECT {op} of {len} bytes at offset {file_off} of {path} with a buffer in {location} \
     failed ({errno}): {hint}{}; {progress}",
    explanation.as_deref().map(|e| format!(". The model: {e}")).unwrap_or_default()
)]
pub struct TransferError {
    /// Which call.
    pub op: Op,
    /// The file it went to.
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
    /// The model's explanation of a P2P refusal (EREMOTEIO/EINVAL with p2pmem).
    pub explanation: Option<String>,
    /// What had been written.
    pub progress: Progress,
    /// The system error.
    #[source]
    pub source: io::Error,
}
