//! What `p2pmem copy` reports: the finished copy ([`CopyReport`], from the copy engine)
//! and the document `p2pmem copy --json` prints and the lab agent returns
//! ([`CopyDocument`]): the report plus the route, warnings, verification and the
//! host-memory figures.

use p2pmem_model::Bdf;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Where a buffer's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// Ordinary host RAM.
    Host,
    /// p2pmem of this PCI provider (device memory, usually a BAR such as an NVMe CMB).
    P2p(Bdf),
}

impl Location {
    /// `host` or the provider's address, as `--via` takes it.
    pub fn via_label(self) -> String {
        match self {
            Self::Host => "host".to_string(),
            Self::P2p(b) => b.to_string(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host => f.write_str("host memory"),
            Self::P2p(bdf) => write!(f, "p2pmem of {bdf}"),
        }
    }
}

/// A half-open byte range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl ByteRange {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether two ranges share a byte.
    pub fn overlaps(&self, other: &ByteRange) -> bool {
        !self.is_empty() && !other.is_empty() && self.start < other.end && other.start < self.end
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// A finished copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyReport {
    /// Source path.
    pub src: PathBuf,
    /// Destination path.
    pub dst: PathBuf,
    /// First source byte.
    pub src_offset: u64,
    /// First destination byte.
    pub dst_offset: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Wall time, including the final fdatasync.
    pub seconds: f64,
    /// `bytes / seconds`.
    pub bytes_per_second: f64,
    /// Where the buffer was.
    pub location: Location,
    /// `io_uring` or `sync`.
    pub engine: String,
    /// Chunk size.
    pub chunk: u64,
    /// Reads, and writes, allowed in flight at once.
    pub depth: usize,
    /// Chunks the buffer holds (twice `depth`, fewer for a copy of fewer chunks or when
    /// the p2pmem pool was short); 0 in reports from before it was counted.
    #[serde(default)]
    pub buffer_chunks: usize,
    /// Most requests the kernel had at once.
    pub max_in_flight: usize,
    /// Bytes at the end, shorter than a block, copied with buffered I/O through host
    /// memory.
    pub tail_bytes_via_host: u64,
    /// Whether the destination file was created.
    pub created: bool,
}

/// `p2pmem copy --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyDocument {
    /// The copy.
    #[serde(flatten)]
    pub report: CopyReport,
    /// `host` or the provider's BDF.
    pub via: String,
    /// Why that buffer.
    pub reason: String,
    /// The model's account of the path.
    pub model: Vec<String>,
    /// Warnings (printed on stderr too).
    pub warnings: Vec<String>,
    /// Notes (printed on stderr too).
    pub notes: Vec<String>,
    /// `--verify`: whether every chunk matched (null without `--verify`).
    pub verified: Option<bool>,
    /// `--verify`: the destination ranges that differ.
    pub mismatches: Option<Vec<ByteRange>>,
    /// `bytes`, under the DMA accounting's name.
    pub payload_bytes: u64,
    /// Bytes through host memory: null when not measured (`host_memory_reason` says
    /// why; the lab measures it: `p2pmem lab run -- p2pmem copy ...`).
    pub host_memory_bytes: Option<u64>,
    /// Bytes that stayed in device memory: null when not measured.
    pub peer_bytes: Option<u64>,
    /// `host_memory_bytes / payload_bytes`: null when not measured.
    pub host_memory_per_payload_byte: Option<f64>,
    /// Why the host-memory figures are (not) there.
    pub host_memory_reason: String,
}
