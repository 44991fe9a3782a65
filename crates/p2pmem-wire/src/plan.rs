//! The plan: what the host asks the guest to do, as data. A plan is a list of named,
//! typed steps; `p2pmem agent plan FILE` runs them in order inside the guest and answers
//! each with one [`crate::report::StepReport`]. A step that depends on an earlier one
//! (a copy through the pair a [`Step::Pick`] chose) is skipped, with the reason, when
//! that one found nothing. [`Step::Exec`] is the last resort for what has no type yet.

use p2pmem_model::Bdf;
use serde::{Deserialize, Serialize};

/// The plan format's version; the agent refuses another.
pub const PLAN_VERSION: u32 = 1;

/// Where the plan travels inside the initramfs.
pub const PLAN_PATH: &str = "/lab/plan.json";

/// The PCI IDs of QEMU's `ivshmem-plain` device, which the lab publishes with
/// `p2pmem_pci`.
pub const IVSHMEM_IDS: (u16, u16) = (0x1af4, 0x1110);

/// Where the initramfs puts the `p2pmem_pci` module, and where the bind steps find it.
pub const GUEST_MODULE: &str = "/lib/modules/p2pmem_pci.ko";

/// A list of named steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// [`PLAN_VERSION`].
    pub version: u32,
    /// The steps, run in order.
    pub steps: Vec<PlanStep>,
    /// Host files the guest needs at the same absolute path (a program such as
    /// `/usr/bin/lspci` comes with its shared libraries): the host puts them in the
    /// initramfs; the guest does not read this.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_files: Vec<String>,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            version: PLAN_VERSION,
            steps: Vec::new(),
            host_files: Vec::new(),
        }
    }
}

impl Plan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a step asks the host to act on the machine ([`Step::Unplug`]).
    pub fn needs_host_actions(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.step, Step::Unplug { .. }))
    }

    /// Asks for the host file `path` at the same path in the guest (a program with its
    /// shared libraries).
    pub fn host_file(&mut self, path: impl Into<String>) -> &mut Self {
        self.host_files.push(path.into());
        self
    }

    /// Appends `step` under `name` (names are how results are found again).
    pub fn step(&mut self, name: impl Into<String>, step: Step) -> &mut Self {
        self.steps.push(PlanStep {
            name: name.into(),
            step,
        });
        self
    }

    /// Appends a [`Step::Exec`] of `argv`.
    pub fn exec<S: AsRef<str>>(&mut self, name: impl Into<String>, argv: &[S]) -> &mut Self {
        let argv = argv.iter().map(|a| Arg::from(a.as_ref())).collect();
        self.step(name, Step::Exec { argv })
    }
}

/// One step and its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    /// Unique within the plan.
    pub name: String,
    /// What to do.
    pub step: Step,
}

/// What one step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// What the guest is: `/proc/cpuinfo`, `/proc/cmdline`, the kernel release, the NVMe
    /// namespaces and the p2pmem providers (read with the reader `p2pmem topo` uses).
    Inventory,
    /// `p2pmem capture` of the live system; the tree comes back as a tar attachment.
    Capture,
    /// `p2pmem provider bind` of every PCI function with these IDs, in PCI order, when
    /// the guest has the `p2pmem_pci` module (otherwise an empty list).
    BindAll {
        /// Vendor ID.
        vendor: u16,
        /// Device ID.
        device: u16,
    },
    /// `p2pmem provider bind` of one function (the whole BAR the driver chooses).
    Bind {
        /// The PCI function.
        bdf: Bdf,
    },
    /// Every (provider, NVMe namespace) pair once, providers and namespaces in PCI order:
    /// the prediction (`p2pmem check`) when `check`, then the kernel's own verdict from a
    /// DMA probe.
    Pairs {
        /// Predict each pair too.
        check: bool,
        /// Which kernel answer each pair gets.
        #[serde(default)]
        oracle: Oracle,
        /// Before a pair whose I/O error lines could overflow the kernel's rate limit
        /// (`p2pmem_model::ratelimit`), wait for its window to close, so that every pair's
        /// lines are logged (a capture records them); the decision lines are not
        /// rate-limited, so a demo can skip it.
        #[serde(default = "yes")]
        pause_after_failure: bool,
    },
    /// The kernel's verdict for one pair from a DMA probe (1 MiB of p2pmem mapped, 64 KiB
    /// read into it at offset 0, written back at 1 MiB).
    Probe {
        /// The provider.
        provider: Bdf,
        /// The client block device.
        client: Dev,
    },
    /// `p2pmem check PROVIDER CLIENT...`.
    Check {
        /// The provider.
        provider: Bdf,
        /// The clients (PCI functions).
        clients: Vec<Bdf>,
    },
    /// Chooses a copy pair from the last [`Step::Pairs`] (and [`Step::BindAll`]) results;
    /// later steps name its choice with [`Dev::Picked`] and [`Via::Picked`].
    Pick(PickRule),
    /// `p2pmem copy`.
    Copy(CopyStep),
    /// The sha256 of a byte range, read with O_DIRECT into host memory.
    Hash {
        /// The block device or file.
        dev: Dev,
        /// First byte (block-aligned).
        offset: u64,
        /// Bytes (block-aligned).
        len: u64,
    },
    /// The guest's address map for the DMA accounting: `/proc/iomem` and every PCI
    /// function's `resource`.
    AddressMap,
    /// A DMA-trace marker: an O_DIRECT read of `MARKER_BLOCKS` blocks at `lba` of the
    /// first NVMe namespace, which QEMU's trace shows as a read at that LBA.
    Mark {
        /// The logical block.
        lba: u64,
    },
    /// The kernel log so far (`dmesg`).
    Dmesg,
    /// Wait.
    Sleep {
        /// Milliseconds.
        ms: u64,
    },
    /// Starts a program in the background, its output going to a file, and waits (at
    /// most `wait_ms`) until its stdout contains `ready` when given. [`Step::Join`]
    /// collects it.
    Spawn {
        /// Program and arguments (looked up in `PATH`; a device as in [`Step::Exec`]).
        argv: Vec<Arg>,
        /// Text on its stdout that says it is ready.
        ready: Option<String>,
        /// How long to wait for `ready`.
        wait_ms: u64,
    },
    /// Waits for the program a [`Step::Spawn`] started and returns its exit status and
    /// output.
    Join {
        /// The spawn step's name.
        spawn: String,
        /// How long to wait before killing it.
        wait_ms: u64,
    },
    /// Creates (or truncates) a file with this text.
    WriteFile {
        /// The path.
        path: String,
        /// The contents.
        text: String,
    },
    /// Asks the host to hot-unplug the NVMe controller at `bdf` (QEMU's `device_del`,
    /// found by its serial number), then waits at most `wait_ms` for the function to
    /// leave `/sys/bus/pci/devices` (pciehp removes it about 5 s after the request: the
    /// attention button's abort window). Answers [`crate::report::Output::Unplugged`].
    /// The plan's QEMU gets a QMP socket only when the plan has such a step.
    Unplug {
        /// The controller.
        bdf: Bdf,
        /// How long to wait for the removal.
        wait_ms: u64,
    },
    /// Connects to an NVMe-oF target with the kernel's own initiator, as nvme-cli's
    /// `connect` does it: the options written to `/dev/nvme-fabrics`, the new
    /// controller's `instance=N,cntlid=M` read back. A refused connect (the target not
    /// serving yet, its network not up) is retried every [`CONNECT_RETRY_MS`] for at most
    /// `wait_ms`; then the step waits what is left of `wait_ms` for the controller's
    /// namespaces to appear. Later steps name them with [`Dev::Connected`]. Answers
    /// [`crate::report::Output::Connected`].
    Connect(Connect),
    /// Polls one logical block of `dev` (O_DIRECT, every [`WAIT_POLL_MS`]) until it
    /// starts with `text`, for at most `wait_ms`: another machine writing it is the
    /// signal (a target guest waiting for its initiator's last write). Answers
    /// [`crate::report::Output::Waited`]; not seeing it is a failure.
    WaitForBlock {
        /// The block device.
        dev: Dev,
        /// Byte offset of the block (block-aligned).
        offset: u64,
        /// The text the block must start with.
        text: String,
        /// How long to wait.
        wait_ms: u64,
    },
    /// The last resort: runs a program (looked up in `PATH`, in `/tmp`, standard input
    /// empty) and returns its exit status, stdout and stderr.
    Exec {
        /// Program and arguments.
        argv: Vec<Arg>,
    },
}

/// How often [`Step::Connect`] retries a refused connect.
pub const CONNECT_RETRY_MS: u64 = 1000;

/// How often [`Step::WaitForBlock`] reads its block.
pub const WAIT_POLL_MS: u64 = 200;

/// The options of a [`Step::Connect`], the words of nvme-cli's `connect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    /// `transport=`: `tcp`, `rdma` or `loop`.
    pub transport: String,
    /// `traddr=`: the target's address (none for loop).
    pub traddr: Option<String>,
    /// `trsvcid=`: its port (none for loop).
    pub trsvcid: Option<String>,
    /// `nqn=`: the subsystem.
    pub nqn: String,
    /// `hostnqn=`.
    pub hostnqn: Option<String>,
    /// `hostid=`.
    pub hostid: Option<String>,
    /// How long to retry, then wait for the namespaces.
    pub wait_ms: u64,
}

impl Connect {
    /// The text written to `/dev/nvme-fabrics`, the options in nvme-cli's order.
    pub fn options(&self) -> String {
        let mut o = format!("transport={}", self.transport);
        for (k, v) in [
            ("traddr", &self.traddr),
            ("trsvcid", &self.trsvcid),
            ("nqn", &Some(self.nqn.clone())),
            ("hostnqn", &self.hostnqn),
            ("hostid", &self.hostid),
        ] {
            if let Some(v) = v {
                o.push_str(&format!(",{k}={v}"));
            }
        }
        o
    }
}

/// One word of a [`Step::Exec`]: text, or a device the agent names (a plain string in
/// JSON, or `{"dev": ..., "prefix": "if="}`: the device's path after the prefix, for
/// programs such as `dd` that take `if=PATH`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Arg {
    /// The word itself.
    Text(String),
    /// The path of this device in the guest.
    Dev {
        /// The device.
        dev: Dev,
        /// Text before the path.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        prefix: String,
    },
}

impl From<&str> for Arg {
    fn from(s: &str) -> Self {
        Self::Text(s.to_string())
    }
}

impl From<Dev> for Arg {
    fn from(dev: Dev) -> Self {
        Self::Dev {
            dev,
            prefix: String::new(),
        }
    }
}

/// Where the kernel's verdict for a pair comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Oracle {
    /// Both where the kernel has userspace p2pmem (`p2pmem/allocate`, 6.2+; the DMA
    /// probe first, so the kernel's decision cache cannot hide its lines), the NVMe
    /// target alone where it does not.
    #[default]
    Auto,
    /// An O_DIRECT transfer through the provider's p2pmem (the DMA probe).
    Dma,
    /// The NVMe target: `enable` of a namespace with `p2pmem` set to the provider.
    Nvmet,
    /// Both.
    Both,
}

fn yes() -> bool {
    true
}

/// A block device or file named in a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dev {
    /// A path in the guest.
    Path(String),
    /// The first namespace of the NVMe controller at this PCI function.
    Nvme(Bdf),
    /// The source or destination of the last [`Step::Pick`].
    Picked(Role),
    /// The namespace with this NSID of the controller the last [`Step::Connect`] made.
    Connected(u32),
}

/// One end of a picked pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The source.
    Src,
    /// The destination.
    Dst,
}

/// Where a copy's buffer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The provider the kernel would pick for both devices, else host memory.
    Auto,
    /// Host memory.
    Host,
    /// This provider's p2pmem.
    Provider(Bdf),
    /// The provider of the last [`Step::Pick`].
    Picked,
}

/// How [`Step::Pick`] chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PickRule {
    /// The first pair (in run order) whose provider is an NVMe with a namespace, whose
    /// client is another NVMe, and whose probe read succeeded: source the provider's
    /// namespace, destination the client's.
    NvmeProviderToOtherNvme,
    /// The first provider bound by the last [`Step::BindAll`] that two NVMe namespaces
    /// can use (probe read and write succeeded): source the first, destination the
    /// second.
    BoundProviderTwoClients,
}

/// A `p2pmem copy`, with its options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyStep {
    /// Source.
    pub src: Dev,
    /// Destination.
    pub dst: Dev,
    /// Where the buffer lives.
    pub via: Via,
    /// First source byte.
    pub offset: u64,
    /// First destination byte (default: `offset`).
    pub dst_offset: Option<u64>,
    /// Bytes (default: to the end of the source).
    pub length: Option<u64>,
    /// Bytes per request (default: the CLI's).
    pub chunk: Option<u64>,
    /// Requests in flight (default: the CLI's).
    pub depth: Option<usize>,
    /// `--verify`.
    pub verify: bool,
    /// `--require-p2p`.
    pub require_p2p: bool,
    /// `--force`.
    pub force: bool,
}

impl CopyStep {
    /// A copy of the whole source with the CLI's defaults.
    pub fn new(src: Dev, dst: Dev, via: Via) -> Self {
        Self {
            src,
            dst,
            via,
            offset: 0,
            dst_offset: None,
            length: None,
            chunk: None,
            depth: None,
            verify: false,
            require_p2p: false,
            force: false,
        }
    }

    /// Sets the source offset.
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// Sets the destination offset.
    pub fn dst_offset(mut self, offset: u64) -> Self {
        self.dst_offset = Some(offset);
        self
    }

    /// Sets the length.
    pub fn length(mut self, len: u64) -> Self {
        self.length = Some(len);
        self
    }

    /// Turns on `--verify`.
    pub fn verify(mut self) -> Self {
        self.verify = true;
        self
    }

    /// Turns on `--require-p2p`.
    pub fn require_p2p(mut self) -> Self {
        self.require_p2p = true;
        self
    }

    /// Turns on `--force`.
    pub fn force(mut self) -> Self {
        self.force = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_round_trips_through_json() {
        let b: Bdf = "0000:03:00.0".parse().unwrap();
        let mut plan = Plan::new();
        plan.step("inv", Step::Inventory)
            .step(
                "pairs",
                Step::Pairs {
                    check: true,
                    oracle: Oracle::Auto,
                    pause_after_failure: true,
                },
            )
            .step("pick", Step::Pick(PickRule::NvmeProviderToOtherNvme))
            .step(
                "copy",
                Step::Copy(
                    CopyStep::new(Dev::Picked(Role::Src), Dev::Nvme(b), Via::Picked)
                        .length(1 << 20)
                        .verify(),
                ),
            )
            .exec("cmd", &["cat", "/proc/cmdline"])
            .step(
                "dd",
                Step::Exec {
                    argv: vec!["head".into(), "-c1".into(), Dev::Nvme(b).into()],
                },
            );
        let text = serde_json::to_string(&plan).unwrap();
        assert!(text.contains(r#""op":"copy""#), "{text}");
        assert!(
            text.contains(r#""argv":["head","-c1",{"dev":{"nvme":"0000:03:00.0"}}]"#),
            "{text}"
        );
        let back: Plan = serde_json::from_str(&text).unwrap();
        assert_eq!(back, plan);
    }

    #[test]
    fn a_connect_writes_nvme_clis_options() {
        let c = Connect {
            transport: "tcp".into(),
            traddr: Some("10.0.2.1".into()),
            trsvcid: Some("4420".into()),
            nqn: "nqn.x:lab".into(),
            hostnqn: Some("nqn.h".into()),
            hostid: None,
            wait_ms: 1000,
        };
        assert_eq!(
            c.options(),
            "transport=tcp,traddr=10.0.2.1,trsvcid=4420,nqn=nqn.x:lab,hostnqn=nqn.h"
        );
        let mut plan = Plan::new();
        plan.step("connect", Step::Connect(c)).step(
            "wait",
            Step::WaitForBlock {
                dev: Dev::Connected(1),
                offset: 4096,
                text: "done".into(),
                wait_ms: 5,
            },
        );
        let text = serde_json::to_string(&plan).unwrap();
        assert!(text.contains(r#""dev":{"connected":1}"#), "{text}");
        assert_eq!(serde_json::from_str::<Plan>(&text).unwrap(), plan);
    }

    #[test]
    fn unknown_steps_are_refused() {
        let text = r#"{"version":1,"steps":[{"name":"x","step":{"op":"format_disk"}}]}"#;
        assert!(serde_json::from_str::<Plan>(text).is_err());
    }
}
