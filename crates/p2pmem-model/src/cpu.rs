//! The CPU half of rule H: `cpu_supports_p2pdma()`.
//!
//! Since 5.9 the kernel allows every host-bridge path on x86 when boot CPU 0 is an AMD
//! (`AuthenticAMD`) of family 0x17 (Zen) or later. Hygon and every other vendor fall
//! through to the host-bridge whitelist. Userspace reads the same facts from cpu0's
//! block of `/proc/cpuinfo`.

use crate::kernel_version::{KernelVersion, VersionRange};
use serde::Serialize;

/// Versions in which the AMD family test exists (dea286bb71ba, 5.9).
pub const AMD_FAMILY_RULE: VersionRange = VersionRange::since(5, 9);
/// The first family that counts (Zen).
pub const AMD_MIN_FAMILY: u32 = 0x17;

/// What `/proc/cpuinfo` says about CPU 0.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct CpuInfo {
    /// `vendor_id` (x86 only), e.g. `AuthenticAMD`.
    pub vendor_id: Option<String>,
    /// `cpu family` (x86 only), decimal.
    pub family: Option<u32>,
    /// `model name`, for display.
    pub model_name: Option<String>,
}

impl CpuInfo {
    /// Parse the first processor block of `/proc/cpuinfo`. Unknown or missing fields stay
    /// `None`; never fails.
    pub fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let mut info = Self::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() && i > 0 {
                break; // end of cpu0's block
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            match k {
                "vendor_id" => info.vendor_id = Some(v.to_string()),
                "cpu family" => info.family = v.parse().ok(),
                "model name" => info.model_name = Some(v.to_string()),
                _ => {}
            }
        }
        info
    }

    /// Does the kernel's CPU test allow host-bridge P2P on this CPU, for `kernel`?
    pub fn supports_p2pdma(&self, kernel: KernelVersion) -> bool {
        AMD_FAMILY_RULE.contains(kernel)
            && self.vendor_id.as_deref() == Some("AuthenticAMD")
            && self.family.is_some_and(|f| f >= AMD_MIN_FAMILY)
    }

    /// One line for humans, e.g. `AuthenticAMD family 15 (0xf)`.
    pub fn describe(&self) -> String {
        match (&self.vendor_id, self.family) {
            (Some(v), Some(f)) => format!("{v} family {f} (0x{f:x})"),
            (Some(v), None) => v.clone(),
            _ => "unknown CPU (no x86 vendor_id in /proc/cpuinfo)".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAM15: &[u8] = b"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 15\nmodel\t\t: 107\nmodel name\t: QEMU TCG CPU version 2.5+\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\ncpu family\t: 25\n";

    #[test]
    fn reads_cpu0_only() {
        let c = CpuInfo::parse(FAM15);
        assert_eq!(c.vendor_id.as_deref(), Some("AuthenticAMD"));
        assert_eq!(c.family, Some(15));
        assert!(!c.supports_p2pdma(KernelVersion::new(6, 12, 0)));
    }

    #[test]
    fn zen_and_later_only_from_5_9() {
        let zen = CpuInfo {
            vendor_id: Some("AuthenticAMD".into()),
            family: Some(23),
            model_name: None,
        };
        assert!(zen.supports_p2pdma(KernelVersion::new(6, 12, 0)));
        assert!(zen.supports_p2pdma(KernelVersion::new(5, 9, 0)));
        assert!(!zen.supports_p2pdma(KernelVersion::new(5, 8, 0)));
        let hygon = CpuInfo {
            vendor_id: Some("HygonGenuine".into()),
            family: Some(24),
            model_name: None,
        };
        assert!(!hygon.supports_p2pdma(KernelVersion::new(6, 12, 0)));
        let arm = CpuInfo::parse(b"processor\t: 0\nBogoMIPS\t: 50.00\n");
        assert!(!arm.supports_p2pdma(KernelVersion::new(6, 12, 0)));
        assert!(arm.describe().contains("unknown"));
    }
}
