//! PCI function addresses (`DDDD:BB:DD.F`) and host-bridge names (`pciDDDD:BB`).
//!
//! The kernel names a function `<domain>:<bus>:<device>.<function>` with a 4-hex-digit
//! domain (wider on VMD-style domains), 2-hex-digit bus, 2-hex-digit device (0..=31) and
//! one function digit (0..=7). Users also write `BB:DD.F`, meaning domain 0.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A PCI function address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    /// PCI domain (segment).
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

/// Why a string is not a PCI address. The input is repeated in every message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BdfError {
    /// The overall shape is wrong.
    #[error("'{input}' is not a PCI address: expected DDDD:BB:DD.F or BB:DD.F (hex)")]
    Shape {
        /// What the user wrote.
        input: String,
    },
    /// One field is out of range or not hex.
    #[error("'{input}' is not a PCI address: {field} '{value}' {why}")]
    Field {
        /// What the user wrote.
        input: String,
        /// Which field.
        field: &'static str,
        /// The offending text.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl Bdf {
    /// A function address from its parts; `None` when device > 31 or function > 7.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Option<Self> {
        (device < 32 && function < 8).then_some(Self {
            domain,
            bus,
            device,
            function,
        })
    }

    /// `devfn` as the kernel packs it: device << 3 | function.
    pub fn devfn(&self) -> u8 {
        (self.device << 3) | self.function
    }

    /// The kernel's `pci_dev_id`: bus << 8 | devfn.
    pub fn dev_id(&self) -> u16 {
        (u16::from(self.bus) << 8) | u16::from(self.devfn())
    }

    /// `bus:dev.fn` without the domain, the form `seq_buf_print_bus_devfn` prints into
    /// the kernel's ACS list is the full `pci_name`, so this is only for display.
    pub fn short(&self) -> String {
        format!("{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }

    /// The kernel's own form (`pci_name`: `%04x:%02x:%02x.%d`, 12 bytes), read without
    /// splitting: sysfs names 4,096 functions and their paths this way. `None` for
    /// anything else, which [`str::parse`] then reads the long way.
    fn from_kernel_form(b: &[u8]) -> Option<Bdf> {
        let &[d0, d1, d2, d3, b':', b0, b1, b':', v0, v1, b'.', f] = b else {
            return None;
        };
        let hex = |c: u8| char::from(c).to_digit(16);
        let domain = [d0, d1, d2, d3]
            .iter()
            .try_fold(0u32, |a, &c| Some(a << 4 | hex(c)?))?;
        let bus = hex(b0)? << 4 | hex(b1)?;
        let device = hex(v0)? << 4 | hex(v1)?;
        let function = hex(f)?;
        (device <= 31 && function <= 7).then_some(Bdf {
            domain,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

fn hex_field(
    input: &str,
    field: &'static str,
    text: &str,
    max_len: usize,
) -> Result<u32, BdfError> {
    let bad = |why| BdfError::Field {
        input: input.to_string(),
        field,
        value: text.to_string(),
        why,
    };
    if text.is_empty() || text.len() > max_len {
        return Err(bad(if text.is_empty() {
            "is empty"
        } else {
            "has too many digits"
        }));
    }
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("is not hexadecimal"));
    }
    u32::from_str_radix(text, 16).map_err(|_| bad("is not hexadecimal"))
}

impl FromStr for Bdf {
    type Err = BdfError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        match Self::from_kernel_form(input.as_bytes()) {
            Some(b) => Ok(b),
            None => Self::parse_any_form(input),
        }
    }
}

impl Bdf {
    /// Every form [`str::parse`] takes, field by field, with errors that say which field.
    fn parse_any_form(input: &str) -> Result<Self, BdfError> {
        let shape = || BdfError::Shape {
            input: input.to_string(),
        };
        let s = input.trim();
        let (head, function) = s.rsplit_once('.').ok_or_else(shape)?;
        let mut parts = head.split(':');
        let (domain, bus, device) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(d), Some(b), Some(dev), None) => (hex_field(input, "domain", d, 8)?, b, dev),
            (Some(b), Some(dev), None, None) => (0, b, dev),
            _ => return Err(shape()),
        };
        let bus = hex_field(input, "bus", bus, 2)?;
        let device = hex_field(input, "device", device, 2)?;
        if device > 31 {
            return Err(BdfError::Field {
                input: input.to_string(),
                field: "device",
                value: format!("{device:02x}"),
                why: "is above 1f",
            });
        }
        let function_v = hex_field(input, "function", function, 1)?;
        if function_v > 7 {
            return Err(BdfError::Field {
                input: input.to_string(),
                field: "function",
                value: function.to_string(),
                why: "is above 7",
            });
        }
        // bus <= 0xff and device <= 31 and function <= 7 were checked above.
        Ok(Self {
            domain,
            bus: bus as u8,
            device: device as u8,
            function: function_v as u8,
        })
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl Serialize for Bdf {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Bdf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A host bridge, named as sysfs names its directory: `pciDDDD:BB` (domain, root bus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostBridgeId {
    /// PCI domain.
    pub domain: u32,
    /// Root bus number.
    pub bus: u8,
}

/// Why a string is not a host-bridge name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' is not a host bridge name: expected pciDDDD:BB")]
pub struct HostBridgeIdError {
    /// What was given.
    pub input: String,
}

impl FromStr for HostBridgeId {
    type Err = HostBridgeIdError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || HostBridgeIdError {
            input: input.to_string(),
        };
        let rest = input.strip_prefix("pci").ok_or_else(err)?;
        let (d, b) = rest.split_once(':').ok_or_else(err)?;
        let domain = hex_field(input, "domain", d, 8).map_err(|_| err())?;
        let bus = hex_field(input, "bus", b, 2).map_err(|_| err())?;
        Ok(Self {
            domain,
            bus: bus as u8,
        })
    }
}

impl fmt::Display for HostBridgeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pci{:04x}:{:02x}", self.domain, self.bus)
    }
}

impl<'de> Deserialize<'de> for HostBridgeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for HostBridgeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_full_and_short_forms() {
        let b: Bdf = "0000:03:00.0".parse().unwrap();
        assert_eq!(b, Bdf::new(0, 3, 0, 0).unwrap());
        assert_eq!(
            "03:1f.7".parse::<Bdf>().unwrap(),
            Bdf::new(0, 3, 31, 7).unwrap()
        );
        assert_eq!("10000:e1:00.1".parse::<Bdf>().unwrap().domain, 0x10000);
        assert_eq!(b.to_string(), "0000:03:00.0");
        assert_eq!(b.devfn(), 0);
        assert_eq!(Bdf::new(0, 6, 0, 1).unwrap().dev_id(), 0x0601);
    }

    #[test]
    fn errors_repeat_the_input() {
        for bad in [
            "",
            "0000:03:00",
            "0000:03:20.0",
            "0000:03:00.8",
            "zz:00.0",
            "0:0:0:0.0",
            "0000:100:00.0",
            "03:00.0x",
        ] {
            let e = bad.parse::<Bdf>().unwrap_err();
            assert!(e.to_string().contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn host_bridge_names() {
        let h: HostBridgeId = "pci0000:80".parse().unwrap();
        assert_eq!(
            h,
            HostBridgeId {
                domain: 0,
                bus: 0x80
            }
        );
        assert_eq!(h.to_string(), "pci0000:80");
        assert!("pcix:00".parse::<HostBridgeId>().is_err());
        assert!("0000:00".parse::<HostBridgeId>().is_err());
    }

    proptest! {
        #[test]
        fn display_parse_roundtrip(domain in 0u32..0x10000, bus: u8, device in 0u8..32, function in 0u8..8) {
            let b = Bdf::new(domain, bus, device, function).unwrap();
            prop_assert_eq!(b.to_string().parse::<Bdf>().unwrap(), b);
        }

        #[test]
        fn the_kernel_form_reads_as_the_long_way(
            d in "[0-9a-fA-F+g ]{4}", b in "[0-9a-fA-F+g ]{2}", v in "[0-9a-fA-F+g ]{2}",
            f in "[0-9a-fA-F+g ]", seps in "[:.]{3}",
        ) {
            let sep: Vec<char> = seps.chars().collect();
            let s = format!("{d}{}{b}{}{v}{}{f}", sep[0], sep[1], sep[2]);
            let fast = Bdf::from_kernel_form(s.as_bytes());
            if let Some(bdf) = fast {
                prop_assert_eq!(Bdf::parse_any_form(&s).ok(), Some(bdf));
            }
            // And it takes what the long way takes in that shape.
            if sep == [':', ':', '.'] {
                prop_assert_eq!(fast, Bdf::parse_any_form(&s).ok());
            }
        }

        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = s.parse::<Bdf>();
            let _ = s.parse::<HostBridgeId>();
        }
    }
}
