//! The NVMe target's per-namespace `p2pmem` configfs attribute, and the checks the
//! kernel makes when such a namespace is enabled.
//!
//! `/sys/kernel/config/nvmet/subsystems/<nqn>/namespaces/<nsid>/p2pmem` takes a boolean
//! (automatic provider choice) or the exact name of a PCI device with published p2pmem.
//! Writing it runs `pci_p2pdma_enable_store`; writing `enable` runs
//! `nvmet_p2pmem_ns_enable`. Both are replayed here on facts the Linux layer gathered.

use crate::bdf::{Bdf, BdfError};
use crate::errno::{Errno, EBUSY, EINVAL, ENODEV};
use crate::kernel_version::{KernelVersion, VersionRange};
use serde::{Serialize, Serializer};
use std::fmt;

/// What a namespace's `p2pmem` attribute holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "mode", content = "device", rename_all = "snake_case")]
pub enum P2pmemSetting {
    /// No P2P memory (`use_p2pmem` false); the kernel shows `0`.
    Off,
    /// P2P memory from any suitable provider, chosen per controller; the kernel shows `1`.
    Auto,
    /// P2P memory from this provider; the kernel shows its name.
    Device(Bdf),
}

impl P2pmemSetting {
    /// The string to write to the attribute: `0`, `1` or the device name. Every kernel
    /// with the attribute accepts these three forms.
    pub fn kernel_write(&self) -> String {
        match self {
            Self::Off => "0".into(),
            Self::Auto => "1".into(),
            Self::Device(bdf) => bdf.to_string(),
        }
    }
}

impl fmt::Display for P2pmemSetting {
    /// Our tool's spelling: `off`, `auto` or the BDF.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Auto => f.write_str("auto"),
            Self::Device(bdf) => write!(f, "{bdf}"),
        }
    }
}

/// What the kernel knows about a PCI device that exists: does `pci_has_p2pmem` hold
/// (published; in the pci tree after 7.3-rc1 also pool-backed)?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HasP2pmem {
    /// Published p2pmem.
    Yes,
    /// No pool, or not published.
    No,
}

/// One spelling `kstrtobool` accepts, with the kernels that accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoolSpelling {
    /// First bytes that select this row.
    pub first: &'static [u8],
    /// Second bytes required as well (only for `on`/`off`); `None`: anything follows.
    pub second: Option<&'static [u8]>,
    /// The value it gives.
    pub value: bool,
    /// A word that uses it.
    pub example: &'static str,
    /// Kernels whose `kstrtobool` accepts it (for this attribute, which exists since 4.20).
    pub versions: VersionRange,
    /// Whether the first release was confirmed, not inferred.
    pub version_verified: bool,
    /// Where the fact comes from.
    pub source: &'static str,
}

const ATTR_SINCE: VersionRange = VersionRange::since(4, 20);

/// `kstrtobool` looks at one or two bytes: `y Y t T e E 1` → true, `n N f F d D 0` →
/// false, `o`/`O` followed by `n`/`N` → true or by `f`/`F` → false; anything else fails.
///
/// The first releases with `t/f` and `e/d` are not verified. The commits are known
/// (0d6ea3ac94ca, mm tree, April 2022; ae5b3500856f, mm-nonmm, spring 2025), and the
/// releases are inferred from when they reached linux-next: **5.19** and **6.16**. Older
/// kernels are assumed to reject the letters. The conservative rule for our own writes
/// does not depend on this table: the tool only writes `0`, `1` or a device name
/// ([`P2pmemSetting::kernel_write`]), which every kernel with the attribute accepts.
/// The table only predicts what a value typed by hand does.
pub const KSTRTOBOOL: &[BoolSpelling] = &[
    BoolSpelling {
        first: b"1",
        second: None,
        value: true,
        example: "1",
        versions: ATTR_SINCE,
        version_verified: true,
        source: "strtobool, older than P2PDMA",
    },
    BoolSpelling {
        first: b"yY",
        second: None,
        value: true,
        example: "yes",
        versions: ATTR_SINCE,
        version_verified: true,
        source: "strtobool, older than P2PDMA",
    },
    BoolSpelling {
        first: b"0",
        second: None,
        value: false,
        example: "0",
        versions: ATTR_SINCE,
        version_verified: true,
        source: "strtobool, older than P2PDMA",
    },
    BoolSpelling {
        first: b"nN",
        second: None,
        value: false,
        example: "no",
        versions: ATTR_SINCE,
        version_verified: true,
        source: "strtobool, older than P2PDMA",
    },
    BoolSpelling {
        first: b"oO",
        second: Some(b"nN"),
        value: true,
        example: "on",
        versions: ATTR_SINCE,
        version_verified: true,
        source: "kstrtobool on/off (4.6), older than P2PDMA",
    },
    BoolSpelling {
        first: b"oO",
        second: Some(b"fF"),
        value: false,
        example: "off",
        versions: ATTR_SINCE,
        version_verified: true,
        source: "kstrtobool on/off (4.6), older than P2PDMA",
    },
    BoolSpelling {
        first: b"tT",
        second: None,
        value: true,
        example: "true",
        versions: VersionRange::since(5, 19),
        version_verified: false,
        source: "0d6ea3ac94ca lib/kstrtox.c: add \"false\"/\"true\" support to kstrtobool()",
    },
    BoolSpelling {
        first: b"fF",
        second: None,
        value: false,
        example: "false",
        versions: VersionRange::since(5, 19),
        version_verified: false,
        source: "0d6ea3ac94ca lib/kstrtox.c: add \"false\"/\"true\" support to kstrtobool()",
    },
    BoolSpelling {
        first: b"eE",
        second: None,
        value: true,
        example: "enable",
        versions: VersionRange::since(6, 16),
        version_verified: false,
        source: "ae5b3500856f kstrtox: add support for enabled and disabled in kstrtobool()",
    },
    BoolSpelling {
        first: b"dD",
        second: None,
        value: false,
        example: "disable",
        versions: VersionRange::since(6, 16),
        version_verified: false,
        source: "ae5b3500856f kstrtox: add support for enabled and disabled in kstrtobool()",
    },
];

/// Why the kernel took a write for "no such PCI device".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RejectReason {
    /// Starts with `0` or `1` and goes on: refused so that a mistyped address is not
    /// read as a boolean.
    LooksLikeAddress,
    /// Not a spelling `kstrtobool` knows (`auto` is one of these).
    NotBoolean,
    /// A spelling newer kernels accept, but not this one.
    SpellingTooNew {
        /// The spelling's example word.
        example: &'static str,
        /// First kernel assumed to accept it.
        since: KernelVersion,
    },
}

/// Where a kernel log line gets its prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum LogPrefix {
    /// A `pr_*` message with the module's `pr_fmt` prefix, e.g. `pci-p2pdma: `.
    Module(&'static str),
    /// A `pci_err`/`dev_*` message, prefixed `<driver or "pci"> <BDF>: `.
    Device(Bdf),
}

/// A line the kernel logs, without its prefix and newline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelLog {
    /// Where the prefix comes from.
    pub prefix: LogPrefix,
    /// The text after the prefix.
    pub text: String,
}

/// `pr_fmt` of drivers/pci/p2pdma.c.
pub const P2PDMA_PREFIX: &str = "pci-p2pdma: ";
/// `pr_fmt` of drivers/nvme/target.
pub const NVMET_PREFIX: &str = "nvmet: ";

/// Why the kernel refuses a write to `p2pmem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvmetAttrError {
    /// The namespace is enabled; the attribute is read-only until `enable` is 0.
    #[error("cannot change p2pmem of an enabled namespace (EBUSY): write 0 to its enable first")]
    NamespaceEnabled,
    /// The name matches a PCI device without published p2pmem.
    #[error("PCI device has no peer-to-peer memory: {device} (ENODEV)")]
    NoP2pmem {
        /// What was written.
        input: String,
        /// The device it named.
        device: Bdf,
    },
    /// Neither a device name nor a boolean.
    #[error("No such PCI device: {shown} (ENODEV)")]
    NoSuchDevice {
        /// What was written.
        input: String,
        /// What the kernel prints: the input up to its first newline.
        shown: String,
        /// Why it was not taken as a boolean.
        reason: RejectReason,
    },
}

impl NvmetAttrError {
    /// The errno the write fails with: EBUSY or ENODEV.
    pub fn errno(&self) -> Errno {
        match self {
            Self::NamespaceEnabled => EBUSY,
            Self::NoP2pmem { .. } | Self::NoSuchDevice { .. } => ENODEV,
        }
    }

    /// What the kernel logs, if anything. For `NoP2pmem` the kernel prints the written
    /// text verbatim, so a trailing newline shows up as an extra empty line.
    pub fn kernel_log(&self) -> Option<KernelLog> {
        match self {
            Self::NamespaceEnabled => None,
            Self::NoP2pmem { device, .. } => Some(KernelLog {
                prefix: LogPrefix::Device(*device),
                text: format!("PCI device has no peer-to-peer memory: {device}"),
            }),
            Self::NoSuchDevice { shown, .. } => Some(KernelLog {
                prefix: LogPrefix::Module(P2PDMA_PREFIX),
                text: format!("No such PCI device: {shown}"),
            }),
        }
    }
}

impl Serialize for NvmetAttrError {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Repr<'a> {
            error: &'static str,
            message: String,
            errno: Errno,
            input: Option<&'a str>,
            reason: Option<RejectReason>,
            kernel_log: Option<KernelLog>,
        }
        let (error, input, reason) = match self {
            Self::NamespaceEnabled => ("namespace_enabled", None, None),
            Self::NoP2pmem { input, .. } => ("no_p2pmem", Some(input.as_str()), None),
            Self::NoSuchDevice { input, reason, .. } => {
                ("no_such_device", Some(input.as_str()), Some(*reason))
            }
        };
        Repr {
            error,
            message: self.to_string(),
            errno: self.errno(),
            input,
            reason,
            kernel_log: self.kernel_log(),
        }
        .serialize(s)
    }
}

/// The kernel's `iscntrl`: its ctype table marks 0..=31, 127 and 128..=159.
fn is_cntrl(b: u8) -> bool {
    b < 32 || (127..160).contains(&b)
}

/// `kstrtobool` for `version`, or why it fails.
fn kstrtobool(s: &[u8], version: KernelVersion) -> Result<bool, RejectReason> {
    let first = s.first().copied().unwrap_or(0);
    let second = s.get(1).copied().unwrap_or(0);
    let row = KSTRTOBOOL
        .iter()
        .find(|r| r.first.contains(&first) && r.second.is_none_or(|sec| sec.contains(&second)))
        .ok_or(RejectReason::NotBoolean)?;
    if row.versions.contains(version) {
        Ok(row.value)
    } else {
        Err(RejectReason::SpellingTooNew {
            example: row.example,
            since: row.versions.since,
        })
    }
}

/// Replays `pci_p2pdma_enable_store` for a write of `input` to the attribute on kernel
/// `version`. `exists(name)` answers for a canonical device name (`0000:05:00.0`):
/// `None` when no such PCI device exists.
///
/// Order, as in the kernel: the exact device name (one trailing newline ignored, as
/// `sysfs_streq` does); then input starting with `0` or `1` and not followed by a control
/// character or the end is refused; then `kstrtobool`. Refusals are ENODEV.
pub fn parse_p2pmem_attr(
    input: &str,
    exists: impl Fn(&str) -> Option<HasP2pmem>,
    version: KernelVersion,
) -> Result<P2pmemSetting, NvmetAttrError> {
    // configfs hands the store a NUL-terminated copy of what was written.
    let page = input.find('\0').map_or(input, |nul| &input[..nul]);
    let name = page.strip_suffix('\n').unwrap_or(page);
    // Device names are canonical (`%04x:%02x:%02x.%d`), so only a canonical spelling
    // can match one.
    if let Ok(bdf) = name.parse::<Bdf>() {
        if bdf.to_string() == name {
            match exists(name) {
                Some(HasP2pmem::Yes) => return Ok(P2pmemSetting::Device(bdf)),
                Some(HasP2pmem::No) => {
                    return Err(NvmetAttrError::NoP2pmem {
                        input: input.to_string(),
                        device: bdf,
                    })
                }
                None => {}
            }
        }
    }
    let bytes = page.as_bytes();
    let no_such = |reason| NvmetAttrError::NoSuchDevice {
        input: input.to_string(),
        shown: page.split('\n').next().unwrap_or_default().to_string(),
        reason,
    };
    if matches!(bytes.first(), Some(b'0' | b'1')) && !is_cntrl(bytes.get(1).copied().unwrap_or(0)) {
        return Err(no_such(RejectReason::LooksLikeAddress));
    }
    match kstrtobool(bytes, version) {
        Ok(true) => Ok(P2pmemSetting::Auto),
        Ok(false) => Ok(P2pmemSetting::Off),
        Err(reason) => Err(no_such(reason)),
    }
}

/// A write to the attribute as `nvmet_ns_p2pmem_store` handles it: refused with EBUSY
/// (and no log line) while the namespace is enabled, otherwise [`parse_p2pmem_attr`].
pub fn store_p2pmem_attr(
    input: &str,
    namespace_enabled: bool,
    exists: impl Fn(&str) -> Option<HasP2pmem>,
    version: KernelVersion,
) -> Result<P2pmemSetting, NvmetAttrError> {
    if namespace_enabled {
        return Err(NvmetAttrError::NamespaceEnabled);
    }
    parse_p2pmem_attr(input, exists, version)
}

/// What the kernel shows when the attribute is read: `0\n`, `1\n` or `<BDF>\n`.
pub fn format_p2pmem_attr(setting: &P2pmemSetting) -> String {
    format!("{}\n", setting.kernel_write())
}

/// Text that is neither what the kernel shows nor what our tool accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum SettingFormatError {
    /// Not what reading the attribute gives.
    #[error("'{input}' is not a value of the nvmet p2pmem attribute: expected 0, 1 or a PCI device name")]
    Shown {
        /// The text (lossily decoded, at most 200 bytes).
        input: String,
    },
    /// Not a setting our tool accepts.
    #[error("'{input}' is not a p2pmem setting: expected off, auto or a PCI address")]
    User {
        /// What the user wrote.
        input: String,
        /// Why it is not a PCI address either.
        #[source]
        #[serde(skip)]
        cause: BdfError,
    },
}

/// Parses what reading the attribute gives ([`format_p2pmem_attr`]'s output).
pub fn parse_p2pmem_show(bytes: &[u8]) -> Result<P2pmemSetting, SettingFormatError> {
    let err = || SettingFormatError::Shown {
        input: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| err())?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    match text {
        "0" => Ok(P2pmemSetting::Off),
        "1" => Ok(P2pmemSetting::Auto),
        _ => match text.parse::<Bdf>() {
            Ok(bdf) if bdf.to_string() == text => Ok(P2pmemSetting::Device(bdf)),
            _ => Err(err()),
        },
    }
}

/// Parses our tool's spelling: `off`, `auto` (the kernel's `1`: any suitable provider),
/// or a PCI address in any form [`Bdf`] accepts. Write [`P2pmemSetting::kernel_write`]
/// of the result.
pub fn parse_user_setting(input: &str) -> Result<P2pmemSetting, SettingFormatError> {
    let text = input.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(P2pmemSetting::Off);
    }
    if text.eq_ignore_ascii_case("auto") {
        return Ok(P2pmemSetting::Auto);
    }
    text.parse()
        .map(P2pmemSetting::Device)
        .map_err(|cause| SettingFormatError::User {
            input: input.to_string(),
            cause,
        })
}

/// How a namespace is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NsBackend {
    /// A block device (`ns->bdev`).
    Block {
        /// The backing queue has `BLK_FEAT_PCI_P2PDMA` (`blk_queue_pci_p2pdma`).
        queue_supports_p2pdma: bool,
    },
    /// A regular file (buffered or direct file backend).
    File,
}

/// What the kernel looks at when a namespace with `p2pmem` set is enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceFacts {
    /// The namespace's `device_path` attribute.
    pub device_path: String,
    /// Block or file backend.
    pub backend: NsBackend,
    /// The `p2pmem` setting.
    pub setting: P2pmemSetting,
    /// For a chosen device: is `pci_p2pdma_distance(device, namespace's disk) >= 0`?
    /// `None`: not known.
    pub distance_ok: Option<bool>,
    /// For `auto`: does `pci_p2pmem_find(namespace's disk)` return a provider? `None`:
    /// not known.
    pub provider_found: Option<bool>,
}

/// A check the model could not decide because its input was unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PreflightCheck {
    /// The distance from the chosen device to the namespace's disk.
    Distance,
    /// Whether any provider serves the namespace's disk.
    ProviderSearch,
}

/// `enable` does not fail on the P2P checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PreflightPass {
    /// `p2pmem` is off: nothing is checked.
    NotRequested,
    /// Every check passes.
    Passes,
    /// The earlier checks pass; this one depends on an unknown input.
    Undetermined {
        /// Which check.
        check: PreflightCheck,
    },
}

/// Why writing 1 to `enable` fails with EINVAL (`nvmet_p2pmem_ns_enable`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightFailure {
    /// A file-backed namespace.
    #[error("peer-to-peer DMA is not supported by non-block device namespaces (EINVAL)")]
    NotBlockDevice,
    /// The backing block driver does not do P2PDMA.
    #[error("peer-to-peer DMA is not supported by the driver of {device_path} (EINVAL)")]
    DriverLacksP2pdma {
        /// The namespace's device path.
        device_path: String,
    },
    /// The chosen device cannot reach the namespace's disk; the kernel's own P2PDMA
    /// warnings (from the distance check) are the only log.
    #[error("{device} cannot do peer-to-peer DMA with {device_path} (EINVAL)")]
    DistanceRejected {
        /// The chosen provider.
        device: Bdf,
        /// The namespace's device path.
        device_path: String,
    },
    /// `auto`, and no published provider serves the namespace's disk.
    #[error("no peer-to-peer memory is available for {device_path} (EINVAL)")]
    NoProvider {
        /// The namespace's device path.
        device_path: String,
    },
}

impl PreflightFailure {
    /// Always EINVAL.
    pub fn errno(&self) -> Errno {
        EINVAL
    }

    /// The `nvmet: ` line, if nvmet logs one (a distance rejection logs only the PCI
    /// warnings of the distance check).
    pub fn kernel_log(&self) -> Option<KernelLog> {
        let text = match self {
            Self::NotBlockDevice => {
                "peer-to-peer DMA is not supported by non-block device namespaces".to_string()
            }
            Self::DriverLacksP2pdma { device_path } => {
                format!("peer-to-peer DMA is not supported by the driver of {device_path}")
            }
            Self::DistanceRejected { .. } => return None,
            Self::NoProvider { device_path } => {
                format!("no peer-to-peer memory is available for {device_path}")
            }
        };
        Some(KernelLog {
            prefix: LogPrefix::Module(NVMET_PREFIX),
            text,
        })
    }
}

impl Serialize for PreflightFailure {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Repr<'a> {
            error: &'static str,
            message: String,
            errno: Errno,
            device: Option<Bdf>,
            device_path: Option<&'a str>,
            kernel_log: Option<KernelLog>,
        }
        let (error, device, device_path) = match self {
            Self::NotBlockDevice => ("not_block_device", None, None),
            Self::DriverLacksP2pdma { device_path } => {
                ("driver_lacks_p2pdma", None, Some(device_path.as_str()))
            }
            Self::DistanceRejected {
                device,
                device_path,
            } => (
                "distance_rejected",
                Some(*device),
                Some(device_path.as_str()),
            ),
            Self::NoProvider { device_path } => ("no_provider", None, Some(device_path.as_str())),
        };
        Repr {
            error,
            message: self.to_string(),
            errno: self.errno(),
            device,
            device_path,
            kernel_log: self.kernel_log(),
        }
        .serialize(s)
    }
}

/// Replays the P2P checks `nvmet_p2pmem_ns_enable` makes when `enable` is written,
/// in the kernel's order.
pub fn preflight(ns: &NamespaceFacts) -> Result<PreflightPass, PreflightFailure> {
    if ns.setting == P2pmemSetting::Off {
        return Ok(PreflightPass::NotRequested);
    }
    match ns.backend {
        NsBackend::File => return Err(PreflightFailure::NotBlockDevice),
        NsBackend::Block {
            queue_supports_p2pdma: false,
        } => {
            return Err(PreflightFailure::DriverLacksP2pdma {
                device_path: ns.device_path.clone(),
            })
        }
        NsBackend::Block { .. } => {}
    }
    let (known, check) = match ns.setting {
        P2pmemSetting::Device(_) => (ns.distance_ok, PreflightCheck::Distance),
        _ => (ns.provider_found, PreflightCheck::ProviderSearch),
    };
    match (known, ns.setting) {
        (None, _) => Ok(PreflightPass::Undetermined { check }),
        (Some(true), _) => Ok(PreflightPass::Passes),
        (Some(false), P2pmemSetting::Device(device)) => Err(PreflightFailure::DistanceRejected {
            device,
            device_path: ns.device_path.clone(),
        }),
        (Some(false), _) => Err(PreflightFailure::NoProvider {
            device_path: ns.device_path.clone(),
        }),
    }
}

#[cfg(test)]
mod tests;
