//! Kernel facts about nvmet that planning depends on, each with the versions it holds
//! for: which configfs attributes exist and when they can be written, which backing
//! queues accept P2P pages, which transports pass a P2P client, where connected
//! controllers are visible, and what each errno from a configfs operation means.
//!
//! Source: `drivers/nvme/target/{configfs,core,rdma}.c` of 6.12 (the lab kernel) and the
//! P2PDMA reference (§5.5, §7). Versions marked unverified were inferred from merge
//! dates.

use crate::errno::{
    Errno, EACCES, EADDRINUSE, EADDRNOTAVAIL, EBUSY, EEXIST, EINVAL, EISDIR, EMFILE, ENODEV,
    ENOENT, ENOMEM, ENOTBLK, ENOTEMPTY, ENOTSUPP, EPERM,
};
use crate::kernel_version::{KernelVersion, VersionRange};
use serde::Serialize;

/// When the kernel refuses to change an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lock {
    /// Writable at any time.
    Never,
    /// Refused (EACCES) while the port is enabled, i.e. has a subsystem linked.
    PortEnabled,
    /// Refused (EINVAL) once a host has discovered the subsystem (identify seen).
    Discovered,
}

/// A configfs attribute this tool saves and restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrFact {
    /// The file name.
    pub name: &'static str,
    /// When the kernel refuses a change.
    pub lock: Lock,
    /// What it is.
    pub about: &'static str,
}

const fn attr(name: &'static str, lock: Lock, about: &'static str) -> AttrFact {
    AttrFact { name, lock, about }
}

/// Subsystem attributes besides `attr_allow_any_host`, in the order a restore writes
/// them. `attr_cntlid_min`/`max` are ordered at plan time so min <= max always holds.
/// `attr_pi_enable` exists only with `CONFIG_BLK_DEV_INTEGRITY`; any absent attribute is
/// neither saved nor written.
pub const SUBSYS_ATTRS: &[AttrFact] = &[
    attr(
        "attr_version",
        Lock::Discovered,
        "NVMe version reported, e.g. 1.3",
    ),
    attr(
        "attr_serial",
        Lock::Discovered,
        "serial number, at most 20 ASCII bytes",
    ),
    attr(
        "attr_model",
        Lock::Discovered,
        "model number, at most 40 ASCII bytes",
    ),
    attr("attr_ieee_oui", Lock::Discovered, "IEEE OUI"),
    attr(
        "attr_firmware",
        Lock::Discovered,
        "firmware revision, at most 8 bytes",
    ),
    attr("attr_cntlid_min", Lock::Never, "lowest controller id"),
    attr("attr_cntlid_max", Lock::Never, "highest controller id"),
    attr(
        "attr_qid_max",
        Lock::Never,
        "I/O queues per controller; a change resets controllers",
    ),
    attr("attr_pi_enable", Lock::Never, "T10 protection information"),
];

/// Port attributes in the order a restore writes them: the transport first, because
/// writing `addr_trtype` resets `addr_tsas`. All are refused (EACCES) while the port is
/// enabled. `addr_tsas` is shown as `connected` (rdma) or `none` (tcp) by default.
pub const PORT_ATTRS: &[AttrFact] = &[
    attr(
        "addr_trtype",
        Lock::PortEnabled,
        "transport: rdma, tcp, loop, fc",
    ),
    attr(
        "addr_adrfam",
        Lock::PortEnabled,
        "address family: ipv4, ipv6, ib, fc, loop",
    ),
    attr(
        "addr_traddr",
        Lock::PortEnabled,
        "transport address (IP address for rdma and tcp)",
    ),
    attr(
        "addr_trsvcid",
        Lock::PortEnabled,
        "service id (port number for rdma and tcp)",
    ),
    attr("addr_treq", Lock::PortEnabled, "secure channel requirement"),
    attr(
        "addr_tsas",
        Lock::PortEnabled,
        "transport specific address subtype",
    ),
    attr(
        "param_inline_data_size",
        Lock::PortEnabled,
        "inline data size; -1: transport default",
    ),
    attr(
        "param_max_queue_size",
        Lock::PortEnabled,
        "queue size; -1: transport default",
    ),
    attr(
        "param_pi_enable",
        Lock::PortEnabled,
        "T10 protection information",
    ),
];

/// Namespace attributes that can change only while the namespace is disabled (EBUSY,
/// or EINVAL for `buffered_io`), in the order a restore writes them, before `enable`.
pub const NS_LOCKED_ATTRS: &[&str] = &[
    "device_path",
    "device_uuid",
    "device_nguid",
    "buffered_io",
    "p2pmem",
];

/// What does the DMA for a namespace's block device, as far as P2PDMA cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BlockDriver {
    /// An nvme-pci namespace (or its partition).
    NvmePci,
    /// A namespace of an NVMe-oF host controller.
    NvmeFabrics {
        /// `rdma`, `tcp`, `loop`, `fc`.
        transport: String,
    },
    /// An NVMe multipath head disk.
    NvmeMultipathHead {
        /// Every path is an nvme-pci namespace.
        paths_support: bool,
    },
    /// An md array.
    Md {
        /// `raid0`, `raid1`, ... (`md/level`).
        level: String,
        /// Every member is an nvme-pci namespace.
        members_support: bool,
    },
    /// A loop device.
    Loop,
    /// virtio-blk.
    VirtioBlk,
    /// A SCSI disk.
    Scsi,
    /// device-mapper.
    DeviceMapper,
    /// Anything else.
    Other {
        /// The block device's name.
        name: String,
    },
}

/// One row of the table of queues with `BLK_FEAT_PCI_P2PDMA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRule {
    /// Which driver.
    pub driver: &'static str,
    /// Kernels where it sets the feature.
    pub versions: VersionRange,
    /// Extra condition.
    pub condition: &'static str,
    /// Where the fact comes from.
    pub source: &'static str,
}

/// Queues that accept P2P pages (reference §5.5). Everything else never does.
pub const QUEUE_RULES: &[QueueRule] = &[
    QueueRule {
        driver: "nvme-pci",
        versions: VersionRange::since(4, 20),
        condition: "dma_pci_p2pdma_supported() on the controller",
        source: "NVME_F_PCI_P2PDMA (4.20), BLK_FEAT_PCI_P2PDMA (6.11)",
    },
    QueueRule {
        driver: "nvme-rdma",
        versions: VersionRange::since(7, 1),
        condition: "the RDMA device supports P2P DMA",
        source: "23528aa3320a, April 2026",
    },
    QueueRule {
        driver: "nvme-multipath",
        versions: VersionRange::since(7, 2),
        condition: "every path's queue has it (blk_stack_limits clears it otherwise)",
        source: "fb0eeeed91f3, May 2026",
    },
    QueueRule {
        driver: "md-raid0/1/10",
        versions: VersionRange::since(7, 2),
        condition: "every member's queue has it; raid4/5/6 never",
        source: "02666132403a, May 2026",
    },
];

fn rule(driver: &str) -> Option<&'static QueueRule> {
    QUEUE_RULES.iter().find(|r| r.driver == driver)
}

fn holds(driver: &str, kernel: KernelVersion) -> bool {
    rule(driver).is_some_and(|r| r.versions.contains(kernel))
}

/// Does the backing queue have `BLK_FEAT_PCI_P2PDMA` on `kernel`
/// (`blk_queue_pci_p2pdma`, the second check of `nvmet_p2pmem_ns_enable`)?
pub fn queue_supports_p2pdma(driver: &BlockDriver, kernel: KernelVersion) -> bool {
    match driver {
        BlockDriver::NvmePci => holds("nvme-pci", kernel),
        BlockDriver::NvmeFabrics { transport } => transport == "rdma" && holds("nvme-rdma", kernel),
        BlockDriver::NvmeMultipathHead { paths_support } => {
            *paths_support && holds("nvme-multipath", kernel)
        }
        BlockDriver::Md {
            level,
            members_support,
        } => {
            matches!(level.as_str(), "raid0" | "raid1" | "raid10")
                && *members_support
                && holds("md-raid0/1/10", kernel)
        }
        BlockDriver::Loop
        | BlockDriver::VirtioBlk
        | BlockDriver::Scsi
        | BlockDriver::DeviceMapper
        | BlockDriver::Other { .. } => false,
    }
}

/// A port's transport (`addr_trtype`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// nvmet-rdma.
    Rdma,
    /// nvmet-tcp.
    Tcp,
    /// nvme-loop.
    Loop,
    /// nvmet-fc.
    Fc,
    /// Not set yet.
    Unset,
    /// Something this tool does not know.
    Unknown(String),
}

impl Transport {
    /// From `addr_trtype` as shown.
    pub fn parse(s: &str) -> Self {
        match s.trim() {
            "rdma" => Self::Rdma,
            "tcp" => Self::Tcp,
            "loop" => Self::Loop,
            "fc" => Self::Fc,
            "" => Self::Unset,
            other => Self::Unknown(other.to_string()),
        }
    }

    /// The name configfs uses.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Rdma => "rdma",
            Self::Tcp => "tcp",
            Self::Loop => "loop",
            Self::Fc => "fc",
            Self::Unset => "",
            Self::Unknown(s) => s,
        }
    }

    /// The configfs name of a known transport (`""` for [`Self::Unset`] and
    /// [`Self::Unknown`], whose text is not static).
    pub fn as_str_static(&self) -> &'static str {
        match self {
            Self::Rdma => "rdma",
            Self::Tcp => "tcp",
            Self::Loop => "loop",
            Self::Fc => "fc",
            Self::Unset | Self::Unknown(_) => "",
        }
    }

    /// Why a controller on this transport never gets P2P memory, or `None` for rdma
    /// (which passes its RDMA device as the P2P client when that device can do P2P DMA).
    pub fn never_p2pmem(&self) -> Option<&'static str> {
        match self {
            Self::Rdma => None,
            Self::Tcp => Some(
                "TCP ports never use p2pmem: nvmet-tcp passes no P2P client, so data buffers come from host memory",
            ),
            Self::Loop => Some(
                "loop ports never use p2pmem: nvme-loop passes no P2P client, so data buffers come from host memory",
            ),
            Self::Fc => Some(
                "FC ports never use p2pmem: nvmet-fc passes no P2P client, so data buffers come from host memory",
            ),
            Self::Unset => Some("no transport set (addr_trtype is empty)"),
            Self::Unknown(_) => Some("an unknown transport: only nvmet-rdma passes a P2P client"),
        }
    }
}

/// Why a soft RDMA device gets no P2P memory.
pub const SOFT_RDMA: &str = "soft-RoCE (rxe) and siw are virtual-DMA devices: \
ib_dma_pci_p2p_dma_supported() is false, so nvmet-rdma passes no P2P client and \
controllers on this device never use p2pmem";

/// Kernels whose nvmet lists connected controllers in debugfs
/// (`/sys/kernel/debug/nvmet/<nqn>/ctrl<cntlid>/{port,hostnqn}`), when built with
/// `CONFIG_NVME_TARGET_DEBUGFS`. Before that nothing shows them. [version inferred:
/// 649fd41420a8, merged for 6.9]
pub const CTRL_DEBUGFS: VersionRange = VersionRange::since(6, 9);

/// The configfs operation an errno came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "op", content = "name", rename_all = "snake_case")]
pub enum Op {
    /// `mkdir subsystems/<nqn>`.
    MkSubsystem,
    /// `mkdir .../namespaces/<nsid>`.
    MkNamespace,
    /// `mkdir ports/<id>`.
    MkPort,
    /// `mkdir hosts/<hostnqn>`.
    MkHost,
    /// `rmdir` of any object.
    Rmdir,
    /// Write of a namespace attribute.
    NsAttr(&'static str),
    /// Write of a subsystem attribute.
    SubsysAttr(&'static str),
    /// Write of a port attribute.
    PortAttr(&'static str),
    /// `ln -s` of a subsystem into `ports/<id>/subsystems/` (enables the port).
    LinkPort,
    /// `ln -s` of a host into `allowed_hosts/`.
    AllowHost,
    /// Removal of a symlink.
    Unlink,
}

/// The errnos that configfs operations on nvmet return (names and numbers in
/// [`crate::errno`]).
pub const ERRNOS: &[Errno] = &[
    EPERM,
    ENOENT,
    ENOMEM,
    EACCES,
    ENOTBLK,
    EBUSY,
    EEXIST,
    ENODEV,
    EISDIR,
    EINVAL,
    EMFILE,
    ENOTEMPTY,
    EADDRINUSE,
    EADDRNOTAVAIL,
    ENOTSUPP,
];

/// The name of `code` when it is one of the [`ERRNOS`] nvmet returns.
pub fn errno_name(code: i32) -> Option<&'static str> {
    ERRNOS.iter().find(|e| e.code == code).map(|e| e.name)
}

/// What `code` means for `op`, in words a user can act on; `None` when nvmet gives the
/// errno no special meaning there.
pub fn errno_meaning(op: Op, code: i32) -> Option<&'static str> {
    let name = errno_name(code)?;
    let text = match (op, name) {
        (_, "EPERM") => "configfs changes need root",
        (Op::NsAttr("p2pmem"), "EBUSY") => {
            "the namespace is enabled: p2pmem can change only while enable is 0 (disable, write, enable)"
        }
        (Op::NsAttr("p2pmem"), "ENODEV") => {
            "no such PCI device, or the device has no published p2pmem (the kernel logs which)"
        }
        (Op::NsAttr("p2pmem"), "ENOENT") => {
            "this kernel has no p2pmem attribute: it was built without CONFIG_PCI_P2PDMA"
        }
        (Op::NsAttr("enable"), "EINVAL") => {
            "nvmet refused to enable the namespace: a P2P check failed or the backend is unusable (see the nvmet: and pci lines in the kernel log)"
        }
        (Op::NsAttr("enable"), "ENOENT") => "device_path does not exist",
        (Op::NsAttr("enable"), "EMFILE") => "the subsystem has the most namespaces nvmet allows",
        (Op::NsAttr("enable"), "EISDIR") => "device_path is a directory",
        (Op::NsAttr("buffered_io"), "EINVAL") => {
            "the namespace is enabled (disable it first), or the value is not a boolean"
        }
        (Op::NsAttr(_), "EBUSY") => "the namespace is enabled: disable it first",
        (Op::NsAttr(_), "EINVAL") => "the value is malformed",
        (Op::PortAttr(_), "EACCES") => {
            "the port is enabled (a subsystem is linked to it): unlink its subsystems first"
        }
        (Op::PortAttr(_), "EINVAL") => "the kernel does not accept this value (it logs 'Invalid value')",
        (Op::SubsysAttr("attr_allow_any_host"), "EINVAL") => {
            "allowed_hosts lists hosts: remove them first (or the value is not a boolean)"
        }
        (Op::SubsysAttr(_), "EINVAL") => {
            "invalid value, or a host has already discovered the subsystem and the value is fixed"
        }
        (Op::MkSubsystem, "EINVAL") => "the discovery NQN cannot be created",
        (Op::MkNamespace, "EINVAL") => "nsid 0 and 0xffffffff are reserved, or the name is not a number",
        (Op::MkPort, "EINVAL") => "a port id is a 16-bit number",
        (Op::MkSubsystem | Op::MkNamespace | Op::MkPort | Op::MkHost, "EEXIST") => {
            "it exists already"
        }
        (Op::LinkPort, "EEXIST") => "the subsystem is already linked to this port",
        (Op::LinkPort, "EINVAL") => {
            "the port could not be enabled: its transport is not available or its address is incomplete (see the kernel log)"
        }
        (Op::LinkPort, "EADDRINUSE") => "another port listens on this address",
        (Op::LinkPort, "EADDRNOTAVAIL" | "ENODEV") => {
            "traddr is not an address of this host (for rdma: of an RDMA device)"
        }
        (Op::AllowHost, "EINVAL") => "attr_allow_any_host is 1: set it to 0 before listing hosts",
        (Op::AllowHost, "EEXIST") => "the host is already allowed",
        (Op::Rmdir, "EBUSY" | "ENOTEMPTY") => {
            "it still has children or links: remove namespaces and links first"
        }
        (_, "EACCES") => "permission denied: configfs changes need root",
        (_, "ENOENT") => "no such configfs object (is the nvmet module loaded?)",
        _ => return None,
    };
    Some(text)
}

/// `nvmet_p2pmem_ns_add_p2p`'s success line, without the `nvmet: ` prefix. It names the
/// nsid but not the subsystem.
pub fn using_p2pmem_line(provider: crate::bdf::Bdf, nsid: u32) -> String {
    format!("using p2pmem on {provider} for nsid {nsid}")
}

/// `nvmet_p2pmem_ns_add_p2p`'s line when `auto` finds nothing for the RDMA device and
/// the namespace, without the `nvmet: ` prefix.
pub fn no_provider_for_ctrl_line(rdma_device: &str, device_path: &str) -> String {
    format!(
        "no peer-to-peer memory is available that's supported by {rdma_device} and {device_path}"
    )
}

/// Parses a kernel log text (prefix included) of [`using_p2pmem_line`]: the provider
/// and nsid.
pub fn parse_using_line(text: &str) -> Option<(crate::bdf::Bdf, u32)> {
    let rest = text.split_once("using p2pmem on ")?.1;
    let (bdf, rest) = rest.split_once(" for nsid ")?;
    let nsid = rest.trim_end().parse().ok()?;
    Some((bdf.parse().ok()?, nsid))
}
