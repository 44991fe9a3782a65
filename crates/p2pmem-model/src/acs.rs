//! PCIe Access Control Services (ACS): the register bits P2PDMA looks at.
//!
//! The ACS extended capability (ID 0x000D) has a Capability register at +4 and a Control
//! register at +6. P2PDMA treats a device as redirecting peer traffic when its *Control*
//! register has any of RR (P2P Request Redirect), CR (P2P Completion Redirect) or EC
//! (P2P Egress Control) set; the other bits and the egress vector are ignored. This has
//! held from 4.20 to the pci tree after 7.3-rc1; a pending rework (per-TLP-class decisions)
//! would change it and is not modelled.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Extended capability ID of ACS.
pub const ACS_EXT_CAP_ID: u16 = 0x000d;
/// Offset of the ACS Capability register within the capability.
pub const ACS_CAP_REG: u16 = 0x04;
/// Offset of the ACS Control register within the capability.
pub const ACS_CTRL_REG: u16 = 0x06;

/// A set of ACS bits, as in the Capability or Control register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AcsFlags(pub u16);

impl AcsFlags {
    /// Source Validation.
    pub const SV: u16 = 0x0001;
    /// Translation Blocking.
    pub const TB: u16 = 0x0002;
    /// P2P Request Redirect.
    pub const RR: u16 = 0x0004;
    /// P2P Completion Redirect.
    pub const CR: u16 = 0x0008;
    /// Upstream Forwarding.
    pub const UF: u16 = 0x0010;
    /// P2P Egress Control.
    pub const EC: u16 = 0x0020;
    /// Direct Translated P2P.
    pub const DT: u16 = 0x0040;

    /// The bits `pci_bridge_has_acs_redir()` tests (kernel 4.20 .. at least 7.3).
    pub const P2PDMA_REDIRECT_MASK: u16 = Self::RR | Self::CR | Self::EC;

    const NAMES: [(u16, &'static str); 7] = [
        (Self::SV, "SV"),
        (Self::TB, "TB"),
        (Self::RR, "RR"),
        (Self::CR, "CR"),
        (Self::UF, "UF"),
        (Self::EC, "EC"),
        (Self::DT, "DT"),
    ];

    /// Does this Control value make P2PDMA treat the device as redirecting?
    pub fn redirects_p2p(self) -> bool {
        self.0 & Self::P2PDMA_REDIRECT_MASK != 0
    }

    /// The names of the set bits, in register order (e.g. `["RR", "CR"]`).
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

impl fmt::Display for AcsFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names();
        if names.is_empty() {
            write!(f, "0x{:04x} (none)", self.0)
        } else {
            write!(f, "0x{:04x} ({})", self.0, names.join(" "))
        }
    }
}

impl Serialize for AcsFlags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("AcsFlags", 2)?;
        st.serialize_field("value", &self.0)?;
        st.serialize_field("bits", &self.names())?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for AcsFlags {
    /// Reads what [`Serialize`] writes; `value` is the register, `bits` only its names.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            value: u16,
        }
        Ok(Self(Wire::deserialize(d)?.value))
    }
}

/// Why the ACS state of a device cannot be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcsUnknown {
    /// Only the first 64 bytes of config space were readable (an unprivileged read).
    ConfigTruncated,
    /// The config space could not be read at all.
    ConfigUnreadable,
    /// The capability list is malformed where ACS would be.
    MalformedCapabilities,
    /// A what-if asked for the firmware's value of a redirect bit that the captured
    /// boot had overwritten (with a boot parameter or for an IOMMU).
    FirmwareValueUnknown,
}

impl AcsUnknown {
    /// A sentence for users.
    pub fn explain(self) -> &'static str {
        match self {
            Self::ConfigTruncated => {
                "only 64 bytes of config space were readable (run as root to read ACS)"
            }
            Self::ConfigUnreadable => "config space could not be read",
            Self::MalformedCapabilities => "the extended capability list is malformed",
            Self::FirmwareValueUnknown => {
                "the firmware's ACS redirect bits are not known: the captured boot overwrote them"
            }
        }
    }
}

/// What is known about a device's ACS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AcsState {
    /// No ACS extended capability (or no extended config space): never redirects.
    Absent,
    /// The capability and its registers.
    Present {
        /// Offset of the capability in config space.
        offset: u16,
        /// What the device implements.
        capability: AcsFlags,
        /// What is enabled.
        control: AcsFlags,
    },
    /// Cannot be known from what was read.
    Unknown {
        /// Why.
        reason: AcsUnknown,
    },
}

impl AcsState {
    /// `Some(true)` when P2PDMA sees a redirect, `Some(false)` when it does not,
    /// `None` when unknown.
    pub fn redirects_p2p(&self) -> Option<bool> {
        match self {
            Self::Absent => Some(false),
            Self::Present { control, .. } => Some(control.redirects_p2p()),
            Self::Unknown { .. } => None,
        }
    }
}

/// One entry of `pci=config_acs=<bits>@<dev>`: the bit string read right to left from
/// bit 0 (SV TB RR CR UF EC DT); `1` forces on, `0` forces off, `x` leaves alone (6.11+).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigAcsEntry {
    /// Bits forced on.
    pub set: u16,
    /// Bits forced off.
    pub clear: u16,
    /// The device specifier as written (`[dddd:]bb:dd.f[/dd.f...]` or `pci:vvvv:dddd...`).
    pub device: String,
}

/// Parse the value of `pci=config_acs=` (entries separated by `;` or `,`). Returns the
/// entries that parse and a description of each one the kernel would ignore.
pub fn parse_config_acs(value: &str) -> (Vec<ConfigAcsEntry>, Vec<String>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for item in value.split([';', ',']).filter(|s| !s.is_empty()) {
        let Some((bits, dev)) = item.split_once('@') else {
            bad.push(format!("'{item}': ACS Flags missing (no @device)"));
            continue;
        };
        if bits.is_empty() || bits.len() > 7 {
            bad.push(format!("'{item}': Invalid ACS flags... Ignoring"));
            continue;
        }
        let (mut set, mut clear) = (0u16, 0u16);
        let mut ok = true;
        for (i, c) in bits.chars().rev().enumerate() {
            match c {
                '1' => set |= 1 << i,
                '0' => clear |= 1 << i,
                'x' | 'X' => {}
                _ => ok = false,
            }
        }
        if ok {
            out.push(ConfigAcsEntry {
                set,
                clear,
                device: dev.to_string(),
            });
        } else {
            bad.push(format!("'{item}': Invalid ACS flags... Ignoring"));
        }
    }
    (out, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_mask_is_rr_cr_ec() {
        assert_eq!(AcsFlags::P2PDMA_REDIRECT_MASK, 0x002c);
        for bit in [AcsFlags::RR, AcsFlags::CR, AcsFlags::EC] {
            assert!(AcsFlags(bit).redirects_p2p());
        }
        for bit in [AcsFlags::SV, AcsFlags::TB, AcsFlags::UF, AcsFlags::DT] {
            assert!(!AcsFlags(bit).redirects_p2p());
        }
    }

    #[test]
    fn names_and_display() {
        assert_eq!(
            AcsFlags(0x005f).names(),
            ["SV", "TB", "RR", "CR", "UF", "DT"]
        );
        assert_eq!(AcsFlags(0x000c).to_string(), "0x000c (RR CR)");
        assert_eq!(AcsFlags(0).to_string(), "0x0000 (none)");
    }

    #[test]
    fn states() {
        assert_eq!(AcsState::Absent.redirects_p2p(), Some(false));
        let p = AcsState::Present {
            offset: 0x148,
            capability: AcsFlags(0x5f),
            control: AcsFlags(0x0c),
        };
        assert_eq!(p.redirects_p2p(), Some(true));
        let u = AcsState::Unknown {
            reason: AcsUnknown::ConfigTruncated,
        };
        assert_eq!(u.redirects_p2p(), None);
    }

    #[test]
    fn config_acs_parse() {
        // The lab-notes example: RR+CR forced on at a root port.
        let (e, bad) = parse_config_acs("11xx@0000:00:07.0");
        assert!(bad.is_empty());
        assert_eq!(e[0].set, AcsFlags::RR | AcsFlags::CR);
        assert_eq!(e[0].clear, 0);
        assert_eq!(e[0].device, "0000:00:07.0");
        let (e, bad) = parse_config_acs("0000000@pci:1b36:000c;1x@00:04.0,zz@01:00.0;101");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].clear, 0x7f);
        assert_eq!(e[1].set, AcsFlags::TB);
        assert_eq!(bad.len(), 2);
    }
}
