//! The kernel's P2PDMA host-bridge whitelist (`pci_p2pdma_whitelist[]`), by version.
//!
//! A host bridge is judged by its *representative*: the first device on its root bus,
//! usable only if it is devfn 00.0 or (5.19+) a PCIe root port; before 5.19 the kernel
//! looked up devfn 00.0 only. Same host bridge: any matching entry allows. Different host
//! bridges: both must match entries without `REQ_SAME_HOST_BRIDGE`; a matching entry with
//! the flag refuses at once. Version bounds marked "unverified" come from
//! kernel-p2pdma.md §3.3 where the release was not confirmed.

use crate::kernel_version::{KernelVersion, VersionRange};
use serde::Serialize;

/// The device field of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceMatch {
    /// One device ID.
    Id(u16),
    /// `PCI_ANY_ID`.
    Any,
}

/// One whitelist entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WhitelistEntry {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID or any.
    pub device: DeviceMatch,
    /// `REQ_SAME_HOST_BRIDGE`: only for P2P within one host bridge.
    pub req_same_host_bridge: bool,
    /// What the kernel source says the entry is.
    pub comment: &'static str,
    /// Kernel versions that carry the entry.
    #[serde(skip)]
    pub versions: VersionRange,
    /// Whether the version bounds were confirmed from source or are an estimate.
    pub versions_verified: bool,
}

const INTEL: u16 = 0x8086;
const AMD: u16 = 0x1022;
const GOOGLE: u16 = 0x1ae0;
const NVIDIA: u16 = 0x10de;
const ZHAOXIN: u16 = 0x1d17;

const fn e(
    vendor: u16,
    device: u16,
    same: bool,
    comment: &'static str,
    versions: VersionRange,
    verified: bool,
) -> WhitelistEntry {
    WhitelistEntry {
        vendor,
        device: DeviceMatch::Id(device),
        req_same_host_bridge: same,
        comment,
        versions,
        versions_verified: verified,
    }
}

const V5_4: VersionRange = VersionRange::since(5, 4);
/// Skylake-E 0x2030 and 0x2020 (bc123a515cb7, merged in the "PCI changes for v5.6"
/// pull): verified from the merge window.
const V5_6: VersionRange = VersionRange::since(5, 6);
const V5_7: VersionRange = VersionRange::since(5, 7);
/// 0x09a2 (feaea1fe8b36): merged for 5.18, verified from the merge window.
const V_ICX: VersionRange = VersionRange::since(5, 18);
/// Intel accelerators (0ba76b19fd4c): 7.2 cycle, backported to 7.1.y stable.
const V_ACCEL: VersionRange = VersionRange::since(7, 1);
/// Google SoCs: Debian's 6.12.118 lacks it, 7.2.13 has it; the release in between is not
/// verified, 6.19 assumed.
const V_GOOGLE: VersionRange = VersionRange::since(6, 19);
/// NVIDIA Vera Rubin (894a78088fc3): Debian's 7.2.13 tree lacks it, 7.3.4 has it:
/// verified from the trees (both booted in the lab).
const V_NVIDIA: VersionRange = VersionRange::since(7, 3);
/// Zhaoxin (f7c220404700): just after 7.3-rc1, unverified; 7.4 assumed.
const V_ZHAOXIN: VersionRange = VersionRange::since(7, 4);

/// Every entry that any modelled kernel version carried.
pub const ENTRIES: &[WhitelistEntry] = &[
    // AMD root complexes, replaced by the CPU-family test in 5.9 (dea286bb71ba).
    e(
        AMD,
        0x1450,
        false,
        "AMD ZEN",
        VersionRange::between((5, 4), (5, 9)),
        true,
    ),
    e(
        AMD,
        0x15d0,
        false,
        "AMD Raven",
        VersionRange::between((5, 8), (5, 9)),
        true,
    ),
    e(
        AMD,
        0x1630,
        false,
        "AMD Renoir",
        VersionRange::between((5, 8), (5, 9)),
        true,
    ),
    // Intel Xeon E5/E7 and Core i7: same host bridge only.
    e(INTEL, 0x3c00, true, "Intel Xeon E5 / Core i7", V5_4, true),
    e(INTEL, 0x3c01, true, "Intel Xeon E5 / Core i7", V5_4, true),
    e(
        INTEL,
        0x2f00,
        true,
        "Intel Xeon E7 v3 / Xeon E5 v3 / Core i7",
        V5_4,
        true,
    ),
    e(
        INTEL,
        0x2f01,
        true,
        "Intel Xeon E7 v3 / Xeon E5 v3 / Core i7",
        V5_4,
        true,
    ),
    e(INTEL, 0x2030, false, "Intel Skylake-E", V5_6, true),
    e(
        INTEL,
        0x2031,
        false,
        "Intel Skylake-E root port B",
        V5_7,
        true,
    ),
    e(
        INTEL,
        0x2032,
        false,
        "Intel Skylake-E root port C",
        V5_7,
        true,
    ),
    e(
        INTEL,
        0x2033,
        false,
        "Intel Skylake-E root port D",
        V5_7,
        true,
    ),
    e(INTEL, 0x2020, false, "Intel Skylake-E", V5_6, true),
    e(
        INTEL,
        0x09a2,
        false,
        "Intel 3rd Gen Xeon Scalable and later Xeons",
        V_ICX,
        true,
    ),
    e(
        INTEL,
        0x0b25,
        false,
        "Intel DSA (Sapphire Rapids)",
        V_ACCEL,
        true,
    ),
    e(
        INTEL,
        0x0cfe,
        false,
        "Intel IAX (Sapphire Rapids)",
        V_ACCEL,
        true,
    ),
    e(
        INTEL,
        0x11fb,
        false,
        "Intel DSA (Granite Rapids-D)",
        V_ACCEL,
        true,
    ),
    e(
        INTEL,
        0x1212,
        false,
        "Intel DSA (Diamond Rapids)",
        V_ACCEL,
        true,
    ),
    e(
        INTEL,
        0x1216,
        false,
        "Intel IAA (Diamond Rapids)",
        V_ACCEL,
        true,
    ),
    e(INTEL, 0x4940, false, "Intel QAT 4xxx", V_ACCEL, true),
    e(INTEL, 0x4942, false, "Intel QAT 401xx", V_ACCEL, true),
    e(INTEL, 0x4944, false, "Intel QAT 402xx", V_ACCEL, true),
    e(INTEL, 0x4946, false, "Intel QAT 420xx", V_ACCEL, true),
    e(INTEL, 0x4948, false, "Intel QAT 6xxx", V_ACCEL, true),
    WhitelistEntry {
        vendor: GOOGLE,
        device: DeviceMatch::Any,
        req_same_host_bridge: false,
        comment: "Google SoCs",
        versions: V_GOOGLE,
        versions_verified: false,
    },
    e(
        NVIDIA,
        0x2f95,
        false,
        "Nvidia CPUs (Vera Rubin)",
        V_NVIDIA,
        true,
    ),
    e(
        NVIDIA,
        0x2f96,
        false,
        "Nvidia CPUs (Vera Rubin)",
        V_NVIDIA,
        true,
    ),
    e(
        NVIDIA,
        0x2f97,
        false,
        "Nvidia CPUs (Vera Rubin)",
        V_NVIDIA,
        true,
    ),
    e(
        NVIDIA,
        0x2f98,
        false,
        "Nvidia CPUs (Vera Rubin)",
        V_NVIDIA,
        true,
    ),
    e(
        ZHAOXIN,
        0x1003,
        true,
        "Zhaoxin KX-6000/KH-40000",
        V_ZHAOXIN,
        false,
    ),
    e(ZHAOXIN, 0x1005, true, "Zhaoxin KX-6000G", V_ZHAOXIN, false),
    e(ZHAOXIN, 0x1006, true, "Zhaoxin KX-7000", V_ZHAOXIN, false),
    e(ZHAOXIN, 0x1007, true, "Zhaoxin KH-50000", V_ZHAOXIN, false),
    e(ZHAOXIN, 0x1008, false, "Zhaoxin", V_ZHAOXIN, false),
];

/// From 5.19 (4f5bc91ce1be) the representative may be a root port at any devfn.
pub const ROOT_PORT_REPRESENTATIVE: VersionRange = VersionRange::since(5, 19);

/// The entries in force for `kernel`, in table order (the kernel takes the first match).
pub fn entries_for(kernel: KernelVersion) -> impl Iterator<Item = &'static WhitelistEntry> {
    ENTRIES.iter().filter(move |e| e.versions.contains(kernel))
}

/// The first entry in force that matches (vendor, device).
pub fn lookup(kernel: KernelVersion, vendor: u16, device: u16) -> Option<&'static WhitelistEntry> {
    entries_for(kernel).find(|e| {
        e.vendor == vendor
            && match e.device {
                DeviceMatch::Any => true,
                DeviceMatch::Id(d) => d == device,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V6_12: KernelVersion = KernelVersion::new(6, 12, 0);
    const V7_4: KernelVersion = KernelVersion::new(7, 4, 0);

    #[test]
    fn q35_host_bridge_is_not_listed() {
        assert!(lookup(V6_12, 0x8086, 0x29c0).is_none());
        assert!(lookup(V7_4, 0x8086, 0x29c0).is_none());
    }

    #[test]
    fn every_entry_matches_itself_in_its_range_and_not_outside() {
        for e in ENTRIES {
            let dev = match e.device {
                DeviceMatch::Id(d) => d,
                DeviceMatch::Any => 0x1234,
            };
            let found = lookup(e.versions.since, e.vendor, dev).unwrap();
            assert_eq!(found.vendor, e.vendor);
            assert_eq!(found.req_same_host_bridge, e.req_same_host_bridge, "{e:?}");
            let before = KernelVersion::new(e.versions.since.major, e.versions.since.minor, 0);
            if before.minor > 0 {
                let prev = KernelVersion::new(before.major, before.minor - 1, 99);
                assert!(
                    lookup(prev, e.vendor, dev).is_none() || e.vendor == GOOGLE,
                    "{e:?} before {prev}"
                );
            }
            if let Some(u) = e.versions.until {
                assert!(lookup(u, e.vendor, dev).is_none(), "{e:?} at {u}");
            }
        }
    }

    /// What Debian's trees show (kernel-versions.md): 6.1 and 6.12 carry the same ten
    /// Intel entries; 7.2 adds the Intel accelerators and Google; 7.3 adds NVIDIA.
    #[test]
    fn entries_per_kernel_line_match_debians_trees() {
        let count = |v: KernelVersion| entries_for(v).count();
        let intel = |v: KernelVersion| entries_for(v).filter(|e| e.vendor == INTEL).count();
        for line in [(6, 1, 192), (6, 12, 118)] {
            let v = KernelVersion::new(line.0, line.1, line.2);
            assert_eq!((intel(v), count(v)), (10, 10), "{v}");
        }
        let v7_2 = KernelVersion::new(7, 2, 13);
        assert_eq!(intel(v7_2), 20);
        assert!(lookup(v7_2, GOOGLE, 0x1234).is_some());
        assert!(lookup(v7_2, NVIDIA, 0x2f95).is_none());
        let v7_3 = KernelVersion::new(7, 3, 4);
        assert_eq!(count(v7_3), count(v7_2) + 4);
        assert!(lookup(v7_3, NVIDIA, 0x2f98).is_some());
        // The merge windows: Skylake-E 0x2030/0x2020 from 5.6, 0x09a2 from 5.18.
        assert!(lookup(KernelVersion::new(5, 5, 0), INTEL, 0x2030).is_none());
        assert!(lookup(KernelVersion::new(5, 6, 0), INTEL, 0x2020).is_some());
        assert!(lookup(KernelVersion::new(5, 17, 0), INTEL, 0x09a2).is_none());
        assert!(lookup(KernelVersion::new(5, 18, 0), INTEL, 0x09a2).is_some());
    }

    #[test]
    fn amd_root_complexes_only_before_5_9() {
        assert!(lookup(KernelVersion::new(5, 4, 0), AMD, 0x1450).is_some());
        assert!(lookup(KernelVersion::new(5, 7, 0), AMD, 0x15d0).is_none());
        assert!(lookup(KernelVersion::new(5, 8, 0), AMD, 0x15d0).is_some());
        assert!(lookup(KernelVersion::new(5, 9, 0), AMD, 0x1450).is_none());
    }

    #[test]
    fn same_host_bridge_flags() {
        assert!(lookup(V6_12, INTEL, 0x3c00).unwrap().req_same_host_bridge);
        assert!(!lookup(V6_12, INTEL, 0x2030).unwrap().req_same_host_bridge);
        assert!(lookup(V7_4, ZHAOXIN, 0x1003).unwrap().req_same_host_bridge);
        assert!(!lookup(V7_4, ZHAOXIN, 0x1008).unwrap().req_same_host_bridge);
        assert!(lookup(V6_12, GOOGLE, 0xabcd).is_none());
        assert!(lookup(V7_4, GOOGLE, 0xabcd).is_some());
    }
}
