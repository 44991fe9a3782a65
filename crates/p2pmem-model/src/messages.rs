//! The kernel's P2PDMA log messages, verbatim, and which versions print them.
//!
//! Each message is printed with `pci_warn`/`dev_warn` (KERN_WARNING), so the log line is
//! `<driver or bus name> <device name>: <text>`, e.g.
//! `nvme 0000:04:00.0: cannot be used for peer-to-peer DMA as the client and provider (0000:05:00.0) do not share an upstream bridge or whitelisted host bridge`.
//! Order within one decision (5.4+): ACS redirect, ACS fix, host-bridge warning, refusal.

use crate::bdf::Bdf;
use crate::kernel_version::{KernelVersion, VersionRange};
use serde::{Deserialize, Serialize};

/// The kernel's log level for all of these (KERN_WARNING).
pub const WARNING: u8 = 4;

/// Size of the kernel's ACS list buffer (`char buf[128]` + `seq_buf`).
pub const ACS_LIST_BUF: usize = 128;

/// Versions that print the "Host bridge not in P2PDMA whitelist" warning (cf201bfe8cdc).
pub const HOST_BRIDGE_WARNING: VersionRange = VersionRange::since(5, 14);

/// Which message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MessageKind {
    /// The client has no PCI ancestor (verbose).
    NotPci,
    /// ACS redirect found on the path (verbose).
    AcsRedirect {
        /// The provider named in the text.
        provider: Bdf,
    },
    /// The suggested boot parameter (verbose).
    AcsFix {
        /// The devices with RR/CR/EC set, in the order the kernel lists them.
        devices: Vec<Bdf>,
    },
    /// Host bridge not whitelisted (printed on the ACS path whatever `verbose` says).
    HostBridgeNotWhitelisted {
        /// Representative's vendor ID.
        #[serde(rename = "bridge_vendor")]
        vendor: u16,
        /// Representative's device ID (named apart from the message's `device`, the
        /// function the line is printed on: both sit in one JSON object).
        #[serde(rename = "bridge_device")]
        device: u16,
    },
    /// Rule H failed (verbose).
    NoPath {
        /// The provider named in the text.
        provider: Bdf,
    },
}

/// One message as the kernel would log it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelMessage {
    /// What it says, structured.
    #[serde(flatten)]
    pub kind: MessageKind,
    /// The device it is printed on.
    pub device: Bdf,
    /// The driver name (or `pci` when unbound) in the line's prefix.
    pub driver: String,
    /// Log level (4, warning).
    pub level: u8,
    /// The whole line without timestamp: `<driver> <BDF>: <text>`.
    pub line: String,
}

/// The ACS list exactly as `seq_buf_print_bus_devfn` builds it (`<name>;` each, final
/// `;` dropped), and whether it overflowed the kernel's 128-byte buffer.
pub fn acs_list(devices: &[Bdf]) -> (String, bool) {
    let full: String = devices.iter().map(|d| format!("{d};")).collect();
    let overflow = full.len() >= ACS_LIST_BUF;
    (full.trim_end_matches(';').to_string(), overflow)
}

/// The text of a message (without prefix) for `kernel`.
pub fn text(kind: &MessageKind, _kernel: KernelVersion) -> String {
    match kind {
        MessageKind::NotPci => "cannot be used for peer-to-peer DMA as it is not a PCI device".into(),
        MessageKind::AcsRedirect { provider } => {
            format!("ACS redirect is set between the client and provider ({provider})")
        }
        MessageKind::AcsFix { devices } => format!(
            "to disable ACS redirect for this path, add the kernel parameter: pci=disable_acs_redir={}",
            acs_list(devices).0
        ),
        MessageKind::HostBridgeNotWhitelisted { vendor, device } => {
            format!("Host bridge not in P2PDMA whitelist: {vendor:04x}:{device:04x}")
        }
        MessageKind::NoPath { provider } => format!(
            "cannot be used for peer-to-peer DMA as the client and provider ({provider}) do not share an upstream bridge or whitelisted host bridge"
        ),
    }
}

impl KernelMessage {
    /// Build the message as printed on `device` (bound to `driver`, `None` = unbound).
    pub fn new(
        kind: MessageKind,
        device: Bdf,
        driver: Option<&str>,
        kernel: KernelVersion,
    ) -> Self {
        let driver = driver.unwrap_or("pci").to_string();
        let line = format!("{driver} {device}: {}", text(&kind, kernel));
        Self {
            kind,
            device,
            driver,
            level: WARNING,
            line,
        }
    }
}

/// Older texts (4.20 .. 5.3) that a log reader should still recognise.
pub const LEGACY_TEXTS: &[&str] = &[
    "cannot be used for peer-to-peer DMA as ACS redirect is set between the client and provider",
    "cannot be used for peer-to-peer DMA as the client and provider do not share an upstream bridge",
    "cannot be used for peer-to-peer DMA because the driver makes use of dma_virt_ops",
];

/// Is `line` (timestamp stripped) one of the P2PDMA decision messages of any version?
pub fn is_p2pdma_decision_line(line: &str) -> bool {
    line.contains("cannot be used for peer-to-peer DMA")
        || line.contains("ACS redirect is set between the client and provider")
        || line.contains("to disable ACS redirect for this path")
        || line.contains("Host bridge not in P2PDMA whitelist")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bdf(s: &str) -> Bdf {
        s.parse().unwrap()
    }

    const V: KernelVersion = KernelVersion::new(6, 12, 117);

    /// Every kind survives JSON, with no key twice (the host-bridge IDs and the device
    /// the line is printed on share one object).
    #[test]
    fn every_kind_round_trips_through_json_without_duplicate_keys() {
        let kinds = [
            MessageKind::NotPci,
            MessageKind::AcsRedirect {
                provider: bdf("0000:03:00.0"),
            },
            MessageKind::AcsFix {
                devices: vec![bdf("0000:00:07.0")],
            },
            MessageKind::HostBridgeNotWhitelisted {
                vendor: 0x8086,
                device: 0x29c0,
            },
            MessageKind::NoPath {
                provider: bdf("0000:03:00.0"),
            },
        ];
        for kind in kinds {
            let m = KernelMessage::new(kind, bdf("0000:06:00.1"), Some("nvme"), V);
            let text = serde_json::to_string(&m).unwrap();
            let keys: Vec<&str> = text
                .split('"')
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|w| w[1].starts_with(':'))
                .map(|w| w[0])
                .collect();
            let mut unique = keys.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), keys.len(), "{text}");
            let back: KernelMessage = serde_json::from_str(&text).unwrap();
            assert_eq!(back, m, "{text}");
        }
    }

    #[test]
    fn lines_match_the_lab_kernel() {
        // Verbatim from lab-notes.md and truth s01 (6.12.117).
        let m = KernelMessage::new(
            MessageKind::NoPath {
                provider: bdf("0000:05:00.0"),
            },
            bdf("0000:04:00.0"),
            Some("nvme"),
            V,
        );
        assert_eq!(m.line, "nvme 0000:04:00.0: cannot be used for peer-to-peer DMA as the client and provider (0000:05:00.0) do not share an upstream bridge or whitelisted host bridge");
        let m = KernelMessage::new(
            MessageKind::AcsRedirect {
                provider: bdf("0000:06:00.0"),
            },
            bdf("0000:06:00.1"),
            Some("nvme"),
            V,
        );
        assert_eq!(
            m.line,
            "nvme 0000:06:00.1: ACS redirect is set between the client and provider (0000:06:00.0)"
        );
        let m = KernelMessage::new(
            MessageKind::AcsFix {
                devices: vec![bdf("0000:00:07.0")],
            },
            bdf("0000:06:00.1"),
            Some("nvme"),
            V,
        );
        assert_eq!(m.line, "nvme 0000:06:00.1: to disable ACS redirect for this path, add the kernel parameter: pci=disable_acs_redir=0000:00:07.0");
        let m = KernelMessage::new(
            MessageKind::HostBridgeNotWhitelisted {
                vendor: 0x8086,
                device: 0x29c0,
            },
            bdf("0000:00:00.0"),
            None,
            V,
        );
        assert_eq!(
            m.line,
            "pci 0000:00:00.0: Host bridge not in P2PDMA whitelist: 8086:29c0"
        );
        let m = KernelMessage::new(MessageKind::NotPci, bdf("0000:00:01.0"), Some("x"), V);
        assert!(m
            .line
            .ends_with("cannot be used for peer-to-peer DMA as it is not a PCI device"));
        assert!(is_p2pdma_decision_line(&m.line));
    }

    #[test]
    fn acs_list_format_and_overflow() {
        let (s, over) = acs_list(&[bdf("0000:02:01.0"), bdf("0000:00:04.0")]);
        assert_eq!(s, "0000:02:01.0;0000:00:04.0");
        assert!(!over);
        let many: Vec<Bdf> = (0..10).map(|i| Bdf::new(0, i, 0, 0).unwrap()).collect();
        assert!(
            acs_list(&many).1,
            "10 entries of 13 bytes do not fit in 128"
        );
        assert!(!acs_list(&many[..9]).1);
    }
}
