//! PCI configuration space from bytes: header, capability lists, PCIe port type, ACS.
//!
//! sysfs `config` gives 4096 bytes for a PCIe function (with extended config space), 256
//! for a conventional one, and only the first 64 bytes to an unprivileged reader. The
//! *exposed* length (the file's size) tells which it is even when fewer bytes were read.
//! Walks are bounded (48 standard, (4096-256)/4 extended capabilities) and loop-checked.

use crate::acs::{AcsFlags, AcsState, AcsUnknown, ACS_CAP_REG, ACS_CTRL_REG, ACS_EXT_CAP_ID};
use serde::Serialize;

/// Standard capability ID of the PCI Express capability.
pub const PCIE_CAP_ID: u8 = 0x10;
/// Most standard capabilities a 256-byte space can hold.
pub const MAX_STD_CAPS: usize = 48;
/// Most extended capabilities a 4096-byte space can hold.
pub const MAX_EXT_CAPS: usize = (4096 - 256) / 4;

/// Why bytes are not a config space.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Fewer than the 64-byte header.
    #[error("config space is {len} bytes: at least the 64-byte header is needed")]
    TooShort {
        /// How many bytes there were.
        len: usize,
    },
}

/// PCIe device/port type (PCIe Capabilities register bits 7:4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortType {
    /// PCI Express endpoint.
    Endpoint,
    /// Legacy PCI Express endpoint.
    LegacyEndpoint,
    /// Root port of a root complex.
    RootPort,
    /// Upstream port of a switch.
    UpstreamPort,
    /// Downstream port of a switch.
    DownstreamPort,
    /// PCI Express to PCI/PCI-X bridge.
    PcieToPciBridge,
    /// PCI/PCI-X to PCI Express bridge.
    PciToPcieBridge,
    /// Root-complex integrated endpoint.
    RcIntegratedEndpoint,
    /// Root-complex event collector.
    RcEventCollector,
    /// A reserved value.
    Reserved(u8),
}

impl PortType {
    /// Decode the 4-bit field.
    pub fn from_field(v: u8) -> Self {
        match v & 0xf {
            0x0 => Self::Endpoint,
            0x1 => Self::LegacyEndpoint,
            0x4 => Self::RootPort,
            0x5 => Self::UpstreamPort,
            0x6 => Self::DownstreamPort,
            0x7 => Self::PcieToPciBridge,
            0x8 => Self::PciToPcieBridge,
            0x9 => Self::RcIntegratedEndpoint,
            0xa => Self::RcEventCollector,
            other => Self::Reserved(other),
        }
    }

    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Endpoint => "endpoint",
            Self::LegacyEndpoint => "legacy endpoint",
            Self::RootPort => "root port",
            Self::UpstreamPort => "switch upstream port",
            Self::DownstreamPort => "switch downstream port",
            Self::PcieToPciBridge => "PCIe-to-PCI bridge",
            Self::PciToPcieBridge => "PCI-to-PCIe bridge",
            Self::RcIntegratedEndpoint => "RC integrated endpoint",
            Self::RcEventCollector => "RC event collector",
            Self::Reserved(_) => "reserved port type",
        }
    }
}

/// One standard capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capability {
    /// Capability ID.
    pub id: u8,
    /// Offset in config space.
    pub offset: u8,
}

/// One extended capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExtCapability {
    /// Extended capability ID.
    pub id: u16,
    /// Capability version.
    pub version: u8,
    /// Offset in config space.
    pub offset: u16,
}

/// Something wrong found while walking a capability list. The walk stops there; what
/// was found before is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum WalkProblem {
    /// A pointer points back to a capability already seen.
    Loop {
        /// The repeated offset.
        offset: u16,
    },
    /// A pointer points outside the readable space or into the header.
    OutOfRange {
        /// The bad offset.
        offset: u16,
    },
    /// More capabilities than the space can hold.
    TooMany,
    /// The list continues past the bytes that were read.
    Truncated {
        /// Where the next capability would be.
        offset: u16,
    },
}

/// The result of walking a capability list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Walk<T> {
    /// Capabilities found, in list order.
    pub caps: Vec<T>,
    /// What stopped the walk early, if anything.
    pub problem: Option<WalkProblem>,
}

impl<T> Default for Walk<T> {
    fn default() -> Self {
        Self {
            caps: Vec::new(),
            problem: None,
        }
    }
}

/// A function's configuration space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSpace {
    /// What was read, without its trailing zero bytes: most of a 4 KiB extended space
    /// is zero (a QEMU NVMe controller's last non-zero byte is at 0xa6), and a
    /// 4,096-function fabric keeps a tenth of the memory.
    bytes: Vec<u8>,
    /// How many bytes were read.
    read_len: usize,
    exposed_len: usize,
}

impl ConfigSpace {
    /// Config space from the bytes read and the length the kernel exposes (the sysfs
    /// file size: 4096, 256, or 64 for some devices). An `exposed_len` smaller than what
    /// was read is raised to it. The bytes are borrowed (a reader keeps its buffer for
    /// the next function): only those up to the last non-zero one are kept.
    pub fn new(bytes: &[u8], exposed_len: usize) -> Result<Self, ConfigError> {
        if bytes.len() < 64 {
            return Err(ConfigError::TooShort { len: bytes.len() });
        }
        // The zero tail, 16 bytes at a time (a byte at a time, 4 KiB of zeros cost as
        // much as the rest of reading a function).
        let mut kept = bytes.len();
        while kept >= 16 && bytes.get(kept - 16..kept) == Some(&[0u8; 16][..]) {
            kept -= 16;
        }
        while kept > 0 && bytes.get(kept - 1) == Some(&0) {
            kept -= 1;
        }
        Ok(Self {
            bytes: bytes.get(..kept).unwrap_or(bytes).to_vec(),
            read_len: bytes.len(),
            exposed_len: exposed_len.max(bytes.len()),
        })
    }

    /// Config space where what was read is all there is.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::new(bytes, bytes.len())
    }

    /// Bytes actually read.
    pub fn readable_len(&self) -> usize {
        self.read_len
    }

    /// Bytes the kernel exposes (may exceed what an unprivileged reader got).
    pub fn exposed_len(&self) -> usize {
        self.exposed_len
    }

    /// Was the read cut short (unprivileged)?
    pub fn is_truncated(&self) -> bool {
        self.read_len < self.exposed_len
    }

    /// `N` bytes at `off`, if they were read (past the kept bytes, zero).
    fn at<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if off.checked_add(N)? > self.read_len {
            return None;
        }
        let mut b = [0u8; N];
        for (i, v) in b.iter_mut().enumerate() {
            *v = self.bytes.get(off + i).copied().unwrap_or(0);
        }
        Some(b)
    }

    fn u8_at(&self, off: usize) -> Option<u8> {
        self.at::<1>(off).map(|[b]| b)
    }

    fn u16_at(&self, off: usize) -> Option<u16> {
        self.at(off).map(u16::from_le_bytes)
    }

    fn u32_at(&self, off: usize) -> Option<u32> {
        self.at(off).map(u32::from_le_bytes)
    }

    /// Vendor ID.
    pub fn vendor_id(&self) -> u16 {
        self.u16_at(0x00).unwrap_or(0xffff)
    }

    /// Device ID.
    pub fn device_id(&self) -> u16 {
        self.u16_at(0x02).unwrap_or(0xffff)
    }

    /// Status register.
    pub fn status(&self) -> u16 {
        self.u16_at(0x06).unwrap_or(0)
    }

    /// 24-bit class code (base class, subclass, prog-if).
    pub fn class_code(&self) -> u32 {
        self.u32_at(0x08).map(|v| v >> 8).unwrap_or(0)
    }

    /// Header layout (0 normal, 1 PCI-PCI bridge, 2 CardBus), without the multi-function bit.
    pub fn header_type(&self) -> u8 {
        self.u8_at(0x0e).unwrap_or(0) & 0x7f
    }

    /// Is the multi-function bit set?
    pub fn is_multifunction(&self) -> bool {
        self.u8_at(0x0e).unwrap_or(0) & 0x80 != 0
    }

    /// Does the Status register say there is a capability list?
    pub fn has_capability_list(&self) -> bool {
        self.status() & 0x0010 != 0
    }

    /// Walk the standard capability list (bounded, loop-checked). An empty walk with a
    /// `Truncated` problem means the list exists but was not readable.
    pub fn capabilities(&self) -> Walk<Capability> {
        let mut walk = Walk::default();
        if !self.has_capability_list() {
            return walk;
        }
        let ptr_off = if self.header_type() == 2 { 0x14 } else { 0x34 };
        let mut ptr = self.u8_at(ptr_off).unwrap_or(0) & 0xfc;
        let mut seen = [false; 256];
        while ptr != 0 {
            if ptr < 0x40 {
                walk.problem = Some(WalkProblem::OutOfRange { offset: ptr.into() });
                break;
            }
            if seen[usize::from(ptr)] {
                walk.problem = Some(WalkProblem::Loop { offset: ptr.into() });
                break;
            }
            if walk.caps.len() >= MAX_STD_CAPS {
                walk.problem = Some(WalkProblem::TooMany);
                break;
            }
            seen[usize::from(ptr)] = true;
            let (Some(id), Some(next)) = (self.u8_at(ptr.into()), self.u8_at(usize::from(ptr) + 1))
            else {
                walk.problem = Some(WalkProblem::Truncated { offset: ptr.into() });
                break;
            };
            walk.caps.push(Capability { id, offset: ptr });
            ptr = next & 0xfc;
        }
        walk
    }

    /// Offset of the PCI Express capability, if found.
    pub fn pcie_cap_offset(&self) -> Option<u8> {
        self.capabilities()
            .caps
            .iter()
            .find(|c| c.id == PCIE_CAP_ID)
            .map(|c| c.offset)
    }

    /// The PCIe port type, `None` for a conventional function or when unreadable.
    pub fn port_type(&self) -> Option<PortType> {
        let off = usize::from(self.pcie_cap_offset()?);
        let reg = self.u16_at(off + 2)?;
        Some(PortType::from_field(((reg >> 4) & 0xf) as u8))
    }

    /// Walk the extended capability list starting at 0x100 (bounded, loop-checked).
    pub fn extended_capabilities(&self) -> Walk<ExtCapability> {
        let mut walk = Walk::default();
        let mut ptr: u16 = 0x100;
        let mut seen = vec![false; 4096 / 4];
        loop {
            let Some(header) = self.u32_at(ptr.into()) else {
                walk.problem = Some(WalkProblem::Truncated { offset: ptr });
                break;
            };
            // An all-zero or all-ones header at 0x100 means no extended capabilities.
            if header == 0 || header == 0xffff_ffff {
                break;
            }
            if seen[usize::from(ptr / 4)] {
                walk.problem = Some(WalkProblem::Loop { offset: ptr });
                break;
            }
            if walk.caps.len() >= MAX_EXT_CAPS {
                walk.problem = Some(WalkProblem::TooMany);
                break;
            }
            seen[usize::from(ptr / 4)] = true;
            walk.caps.push(ExtCapability {
                id: (header & 0xffff) as u16,
                version: ((header >> 16) & 0xf) as u8,
                offset: ptr,
            });
            let next = ((header >> 20) & 0xffc) as u16;
            if next == 0 {
                break;
            }
            if next < 0x100 {
                walk.problem = Some(WalkProblem::OutOfRange { offset: next });
                break;
            }
            ptr = next;
        }
        walk
    }

    /// What P2PDMA can know about this function's ACS from these bytes.
    pub fn acs(&self) -> AcsState {
        // A kernel exposes 256 (conventional) or 4096 (PCIe) bytes; 64 only appears in a
        // capture made by an unprivileged reader, where nothing is known.
        if self.exposed_len <= 64 {
            return AcsState::Unknown {
                reason: AcsUnknown::ConfigTruncated,
            };
        }
        // No extended config space exposed at all: no ACS capability can exist.
        if self.exposed_len <= 0x100 {
            return AcsState::Absent;
        }
        if self.read_len <= 0x100 {
            return AcsState::Unknown {
                reason: AcsUnknown::ConfigTruncated,
            };
        }
        let walk = self.extended_capabilities();
        if let Some(cap) = walk.caps.iter().find(|c| c.id == ACS_EXT_CAP_ID) {
            let base = usize::from(cap.offset);
            return match (
                self.u16_at(base + usize::from(ACS_CAP_REG)),
                self.u16_at(base + usize::from(ACS_CTRL_REG)),
            ) {
                (Some(c), Some(ctrl)) => AcsState::Present {
                    offset: cap.offset,
                    capability: AcsFlags(c),
                    control: AcsFlags(ctrl),
                },
                _ => AcsState::Unknown {
                    reason: AcsUnknown::MalformedCapabilities,
                },
            };
        }
        match walk.problem {
            None => AcsState::Absent,
            Some(_) => AcsState::Unknown {
                reason: AcsUnknown::MalformedCapabilities,
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A 4096-byte PCIe function with a PCIe capability of `port` type at 0x40 and, when
    /// `acs_ctrl` is given, an ACS capability at 0x148 (as QEMU's pcie-root-port has).
    pub(crate) fn pcie_function(port: u8, acs_ctrl: Option<u16>) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        b[2..4].copy_from_slice(&0x000cu16.to_le_bytes());
        b[6] = 0x10; // capability list
        b[0x0e] = if port == 4 || port == 6 || port == 5 {
            1
        } else {
            0
        };
        b[0x34] = 0x40;
        b[0x40] = PCIE_CAP_ID;
        b[0x41] = 0x00;
        b[0x42] = (port << 4) | 2;
        if let Some(ctrl) = acs_ctrl {
            // AER at 0x100 -> ACS at 0x148 -> end.
            let aer: u32 = 0x0001 | (1 << 16) | (0x148 << 20);
            b[0x100..0x104].copy_from_slice(&aer.to_le_bytes());
            let acs: u32 = 0x000d | (1 << 16);
            b[0x148..0x14c].copy_from_slice(&acs.to_le_bytes());
            b[0x14c..0x14e].copy_from_slice(&0x005fu16.to_le_bytes());
            b[0x14e..0x150].copy_from_slice(&ctrl.to_le_bytes());
        }
        b
    }

    #[test]
    fn root_port_with_acs() {
        let cs = ConfigSpace::from_bytes(&pcie_function(4, Some(0x000c))).unwrap();
        assert_eq!(cs.port_type(), Some(PortType::RootPort));
        assert_eq!(cs.header_type(), 1);
        let ext = cs.extended_capabilities();
        assert_eq!(ext.caps.len(), 2);
        assert_eq!(ext.problem, None);
        assert_eq!(
            cs.acs(),
            AcsState::Present {
                offset: 0x148,
                capability: AcsFlags(0x5f),
                control: AcsFlags(0x0c)
            }
        );
    }

    #[test]
    fn truncated_reads_make_acs_unknown_but_conventional_absent() {
        let full = pcie_function(6, Some(0));
        let cs = ConfigSpace::new(&full[..64], 4096).unwrap();
        assert!(cs.is_truncated());
        assert_eq!(
            cs.acs(),
            AcsState::Unknown {
                reason: AcsUnknown::ConfigTruncated
            }
        );
        assert_eq!(cs.port_type(), None);
        // A conventional function exposes 256 bytes: no extended space, so no ACS.
        let cs = ConfigSpace::new(&full[..64], 256).unwrap();
        assert_eq!(cs.acs(), AcsState::Absent);
        // A 64-byte file (an unprivileged capture) says nothing.
        let cs = ConfigSpace::from_bytes(&full[..64]).unwrap();
        assert_eq!(
            cs.acs(),
            AcsState::Unknown {
                reason: AcsUnknown::ConfigTruncated
            }
        );
        assert!(ConfigSpace::from_bytes(&full[..63]).is_err());
    }

    #[test]
    fn no_acs_capability_is_absent() {
        let cs = ConfigSpace::from_bytes(&pcie_function(0, None)).unwrap();
        assert_eq!(cs.acs(), AcsState::Absent);
        assert_eq!(cs.port_type(), Some(PortType::Endpoint));
    }

    #[test]
    fn loops_are_detected() {
        let mut b = pcie_function(0, Some(0));
        b[0x41] = 0x40; // standard cap points to itself
        let w = ConfigSpace::from_bytes(&b).unwrap().capabilities();
        assert_eq!(w.problem, Some(WalkProblem::Loop { offset: 0x40 }));
        let mut b = pcie_function(0, Some(0));
        let acs: u32 = 0x000d | (1 << 16) | (0x100 << 20); // ACS points back to AER
        b[0x148..0x14c].copy_from_slice(&acs.to_le_bytes());
        let cs = ConfigSpace::from_bytes(&b).unwrap();
        assert_eq!(
            cs.extended_capabilities().problem,
            Some(WalkProblem::Loop { offset: 0x100 })
        );
        // ACS was found before the loop, so it is still known.
        assert!(matches!(cs.acs(), AcsState::Present { .. }));
    }

    #[test]
    fn header_pointer_into_header_is_out_of_range() {
        let mut b = pcie_function(0, None);
        b[0x34] = 0x10;
        let w = ConfigSpace::from_bytes(&b).unwrap().capabilities();
        assert_eq!(w.problem, Some(WalkProblem::OutOfRange { offset: 0x10 }));
    }

    proptest! {
        #[test]
        fn walks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 64..4097), exposed in 0usize..5000) {
            if let Ok(cs) = ConfigSpace::new(&bytes, exposed) {
                let w = cs.capabilities();
                prop_assert!(w.caps.len() <= MAX_STD_CAPS);
                let e = cs.extended_capabilities();
                prop_assert!(e.caps.len() <= MAX_EXT_CAPS);
                let _ = cs.acs();
                let _ = cs.port_type();
            }
        }

        /// Kept without its zero tail, config space reads as the bytes read: every
        /// register at every offset, and none past the end.
        #[test]
        fn the_zero_tail_reads_as_read(
            head in proptest::collection::vec(any::<u8>(), 0..300),
            zeros in 0usize..400,
            exposed in 0usize..5000,
        ) {
            let mut bytes = head;
            bytes.resize(bytes.len() + zeros, 0);
            if let Ok(cs) = ConfigSpace::new(&bytes, exposed) {
                prop_assert_eq!(cs.readable_len(), bytes.len());
                prop_assert_eq!(cs.is_truncated(), bytes.len() < exposed);
                for off in 0..bytes.len() + 8 {
                    prop_assert_eq!(cs.u8_at(off), bytes.get(off).copied());
                    let w = bytes.get(off..off + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
                    prop_assert_eq!(cs.u16_at(off), w);
                    let d = bytes.get(off..off + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    prop_assert_eq!(cs.u32_at(off), d);
                }
            }
        }
    }
}
