//! The kernel's verdict for one (provider, client) pair, found by doing it: the record
//! `p2pmem agent` produces in the guest (the DMA probe of `p2pmem-linux`), in the shape
//! of a ground-truth `truth.json` pair.

use p2pmem_model::Bdf;
use serde::{Deserialize, Serialize};

/// The result of a transfer that moved every byte.
pub const OK: &str = "ok";

/// Whether transferred data verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataCheck {
    /// The bytes agree.
    Match,
    /// They differ.
    Mismatch,
}

/// Kernel log lines per phase (level and timestamp stripped).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseLog {
    /// Logged during open + mmap + fill.
    pub mmap: Vec<String>,
    /// Logged during the P2P read (and the host reference read).
    pub read: Vec<String>,
    /// Logged during the P2P write (and the host read-back).
    pub write: Vec<String>,
    /// Logged after the buffer was unmapped.
    pub after: Vec<String>,
}

/// One probe, with the fields (and field order) of a `truth.json` pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaProbeResult {
    /// The p2pmem provider.
    pub provider: Bdf,
    /// The client's PCI function, as given by the caller.
    pub client: Option<Bdf>,
    /// `ok` (all 64 KiB moved), an errno name, `short:<bytes>`, or null when not run
    /// (the mmap failed).
    pub read: Option<String>,
    /// As `read`, for the write.
    pub write: Option<String>,
    /// Every kernel log line from the CLEAR to the end.
    pub kernel_log: Vec<String>,
    /// The client block device path.
    pub client_blkdev: String,
    /// `ok` or the mmap errno name.
    pub mmap: String,
    /// The P2P-read bytes against a host-buffer O_DIRECT read of the same range; null
    /// when the P2P read did not complete.
    pub read_data: Option<DataCheck>,
    /// The bytes read back through host memory against what was written; null when the
    /// P2P write did not complete.
    pub write_data: Option<DataCheck>,
    /// Kernel log lines per phase.
    pub kernel_log_phase: PhaseLog,
    /// Diagnostics for a human (not part of the truth record).
    #[serde(skip)]
    pub notes: Vec<String>,
}

impl DmaProbeResult {
    /// Did the kernel move every byte both ways?
    pub fn ok(&self) -> bool {
        self.read.as_deref() == Some(OK) && self.write.as_deref() == Some(OK)
    }
}

/// The kernel's verdict for one pair from the NVMe target (the oracle on kernels without
/// userspace p2pmem, before 6.2): a namespace backed by the client's block device, its
/// `p2pmem` set to the provider, then `enable`, which runs the same
/// `pci_p2pdma_distance()` decision and prints the same lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmetVerdict {
    /// The p2pmem provider.
    pub provider: Bdf,
    /// The client's PCI function, as given by the caller.
    pub client: Option<Bdf>,
    /// The client block device path.
    pub client_blkdev: String,
    /// `ok` when the kernel accepted the provider at `enable`, else the errno name of
    /// the refused write (`p2pmem` or `enable`).
    pub enable: String,
    /// Which write the kernel refused (`p2pmem` or `enable`), when one was.
    pub refused_at: Option<String>,
    /// Every kernel log line from before `enable` to after it (level and timestamp
    /// stripped).
    pub kernel_log: Vec<String>,
}

impl NvmetVerdict {
    /// Did the kernel accept the provider for this client?
    pub fn ok(&self) -> bool {
        self.enable == OK
    }
}
