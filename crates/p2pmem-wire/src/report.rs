//! What the guest answers: one [`StepReport`] per plan step, carrying a typed
//! [`Output`]. The reports of the commands that run there (`check`, `copy`, `provider
//! bind`, the DMA probe) are defined in their own modules of this crate, once, and are
//! what those commands print with `--json` too.

use p2pmem_model::Bdf;
use serde::{Deserialize, Serialize};

use crate::bind::BindReport;
use crate::check::CheckReport;
use crate::copy::CopyDocument;
use crate::probe::{DmaProbeResult, NvmetVerdict};

/// One step's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Its place in the plan.
    pub index: usize,
    /// Its name in the plan.
    pub name: String,
    /// Wall time.
    pub seconds: f64,
    /// What came of it.
    pub result: StepResult,
}

/// What came of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepResult {
    /// It ran; what it found (a refusal by the kernel is a finding, not a failure).
    Done {
        /// The typed output.
        output: Box<Output>,
    },
    /// It could not run (the message says why, with its causes).
    Failed {
        /// Why.
        error: String,
    },
    /// It was not run because what it depends on is missing.
    Skipped {
        /// Why.
        why: String,
    },
}

/// The typed output of each kind of step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// [`crate::plan::Step::Inventory`].
    Inventory(Inventory),
    /// [`crate::plan::Step::Capture`]: the tree is the step's tar attachment.
    Capture(Captured),
    /// [`crate::plan::Step::BindAll`] and [`crate::plan::Step::Bind`].
    Binds(Vec<BindAttempt>),
    /// [`crate::plan::Step::Pairs`].
    Pairs(Vec<PairRecord>),
    /// [`crate::plan::Step::Probe`].
    Probe(DmaProbeResult),
    /// [`crate::plan::Step::Check`].
    Check(CheckReport),
    /// [`crate::plan::Step::Pick`].
    Picked(Picked),
    /// [`crate::plan::Step::Copy`].
    Copy(CopyOutcome),
    /// [`crate::plan::Step::Hash`].
    Hash(HashResult),
    /// [`crate::plan::Step::AddressMap`].
    AddressMap(AddressMap),
    /// [`crate::plan::Step::Mark`]: the LBA read.
    Marked(u64),
    /// [`crate::plan::Step::Dmesg`]: the kernel log, one line each, as `dmesg` prints
    /// it (`[timestamp] text`).
    Dmesg(Vec<String>),
    /// [`crate::plan::Step::Sleep`], [`crate::plan::Step::WriteFile`].
    Nothing,
    /// [`crate::plan::Step::Spawn`]: the process ID.
    Spawned(u32),
    /// [`crate::plan::Step::Exec`] and [`crate::plan::Step::Join`].
    Exec(ExecResult),
    /// [`crate::plan::Step::Unplug`]: seconds from the request until the function left
    /// sysfs.
    Unplugged(f64),
    /// [`crate::plan::Step::Connect`]: the controller made.
    Connected(Connected),
    /// [`crate::plan::Step::WaitForBlock`]: seconds until the block held the text.
    Waited(f64),
}

/// The controller a [`crate::plan::Step::Connect`] made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connected {
    /// `nvmeN`.
    pub controller: String,
    /// N.
    pub instance: u32,
    /// The controller ID the target gave it.
    pub cntlid: u32,
    /// Its `transport` attribute as the kernel shows it (`tcp`).
    pub transport: String,
    /// Its `address` attribute (`traddr=...,trsvcid=...`).
    pub address: String,
    /// Writes to `/dev/nvme-fabrics` it took (1: the first one succeeded).
    pub attempts: u32,
    /// The last refusal before the connect succeeded (errno text), if any.
    pub last_refusal: Option<String>,
    /// Its namespaces' block devices (`/dev/nvmeNnM`) by NSID.
    pub namespaces: Vec<(u32, String)>,
    /// Seconds the step took.
    pub seconds: f64,
}

/// What the guest asks the host to do to the machine, sent as frame
/// [`frame_id::host`] while the step waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum HostRequest {
    /// `device_del` of the NVMe controller with this serial number.
    UnplugNvme {
        /// Its serial (the topology's).
        serial: String,
    },
}

/// What the guest is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// `/proc/cpuinfo`.
    pub cpuinfo: String,
    /// `/proc/cmdline`, trimmed.
    pub cmdline: String,
    /// The kernel release (`uname -r`).
    pub osrelease: String,
    /// NVMe namespaces, by PCI function.
    pub nvme: Vec<GuestNvme>,
    /// Functions with `p2pmem/`, in PCI order.
    pub providers: Vec<Bdf>,
}

/// One NVMe controller with its first namespace, as the guest saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNvme {
    /// Serial number.
    pub serial: String,
    /// Controller name (`nvme0`).
    pub ctrl: String,
    /// PCI function.
    pub bdf: Bdf,
    /// Namespace block device (`/dev/nvme0n1`).
    pub blkdev: String,
}

/// A capture made in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    /// What `p2pmem capture` warned about.
    pub warnings: Vec<String>,
    /// Size of the tar attachment.
    pub archive_bytes: u64,
}

/// One `p2pmem provider bind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindAttempt {
    /// The PCI function.
    pub bdf: Bdf,
    /// The exit status `p2pmem provider bind` gives (0 bound, 1 refused, 2 error).
    pub exit: i32,
    /// The report, when it bound.
    pub report: Option<BindReport>,
    /// What it printed on stderr (the kernel's or the tool's reason).
    pub messages: Vec<String>,
}

/// One (provider, client) pair of a [`crate::plan::Step::Pairs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    /// The provider.
    pub provider: Bdf,
    /// The client's PCI function.
    pub client: Bdf,
    /// The client's block device.
    pub blkdev: String,
    /// The prediction, when asked for: the report or why there is none.
    pub check: Option<Result<CheckReport, String>>,
    /// The kernel's verdict from a DMA probe, when one ran: its record or why there is
    /// none.
    pub probe: Option<Result<DmaProbeResult, String>>,
    /// The kernel's verdict from the NVMe target, when asked.
    pub nvmet: Option<Result<NvmetVerdict, String>>,
}

impl PairRecord {
    /// The kernel's verdict: the DMA probe's (the bytes moved both ways) when it ran,
    /// else the NVMe target's; `None` when neither gave one.
    pub fn kernel_verdict(&self) -> Option<bool> {
        match (&self.probe, &self.nvmet) {
            (Some(Ok(p)), _) => Some(p.ok()),
            (_, Some(Ok(n))) => Some(n.ok()),
            _ => None,
        }
    }

    /// Did the kernel allow the pair?
    pub fn kernel_ok(&self) -> bool {
        self.kernel_verdict() == Some(true)
    }

    /// The DMA probe's record, when it gave one.
    pub fn dma(&self) -> Option<&DmaProbeResult> {
        self.probe.as_ref().and_then(|p| p.as_ref().ok())
    }
}

/// The pair a [`crate::plan::Step::Pick`] chose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Picked {
    /// The provider whose p2pmem holds the buffer.
    pub via: Bdf,
    /// Source block device.
    pub src: String,
    /// Destination block device.
    pub dst: String,
}

/// A `p2pmem copy` run in the guest: what it would have exited with, its `--json`
/// document when it finished, and what it printed on stderr.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyOutcome {
    /// The exit status `p2pmem copy` gives (0 copied, 1 no, 2 error).
    pub exit: i32,
    /// The report, when the copy finished.
    pub report: Option<CopyDocument>,
    /// Warnings, notes and the error, as `p2pmem copy` prints them on stderr.
    pub messages: Vec<String>,
}

impl CopyOutcome {
    /// The stderr text (messages joined by newlines).
    pub fn stderr(&self) -> String {
        self.messages.join("\n")
    }
}

/// A range's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashResult {
    /// Lower-case hex sha256.
    pub sha256: String,
    /// Bytes hashed.
    pub bytes: u64,
}

/// The guest's address map, as files the DMA accounting reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressMap {
    /// `/proc/iomem`.
    pub iomem: String,
    /// Each PCI function's `resource` file, in PCI order.
    pub resources: Vec<(Bdf, String)>,
}

/// A program's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Exit status, when it exited.
    pub exit: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Its stdout (lossy UTF-8, at most [`MAX_CAPTURED`] bytes kept).
    pub stdout: String,
    /// Its stderr (likewise).
    pub stderr: String,
}

/// The most output the agent keeps of one program, per stream.
pub const MAX_CAPTURED: usize = 16 << 20;

/// How the plan ended, sent after the last step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEnd {
    /// Steps run.
    pub steps: usize,
    /// Steps that failed.
    pub failed: usize,
    /// A reason when the plan itself could not be read or run.
    pub error: Option<String>,
}

/// The ids of the frames the agent sends.
pub mod frame_id {
    /// The kernel log before the first step.
    pub const BOOT_LOG: &str = "bootlog";
    /// The kernel log after the last step.
    pub const DMESG: &str = "dmesg";
    /// The [`super::PlanEnd`].
    pub const END: &str = "plan-end";

    /// The [`super::StepReport`] of step `i`.
    pub fn step(i: usize) -> String {
        format!("step.{i}")
    }

    /// The attachment of step `i` (a tar stream).
    pub fn data(i: usize) -> String {
        format!("data.{i}")
    }

    /// A [`super::HostRequest`] of step `i`.
    pub fn host(i: usize) -> String {
        format!("host.{i}")
    }

    /// The prefix of [`host`] frames.
    pub const HOST_PREFIX: &str = "host.";
}
