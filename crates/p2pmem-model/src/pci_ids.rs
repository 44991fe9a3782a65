//! The PCI ID database (`pci.ids`, as lspci reads it): vendor, device and class names
//! for the numbers in config space.
//!
//! The format is line-based: a vendor line is four hex digits, two spaces and a name; a
//! device line is a tab, four hex digits, two spaces and a name; two tabs start a
//! subsystem line. After a `C xx  name` line the same indentation holds subclasses and
//! programming interfaces. `#` starts a comment. The parser takes bytes (never a path),
//! skips what it does not understand and never panics; the caller bounds the size.

use std::collections::HashMap;

/// A vendor's name and its devices' names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Vendor {
    name: String,
    devices: HashMap<u16, String>,
}

/// A class's name and its subclasses' names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Class {
    name: String,
    subclasses: HashMap<u8, String>,
}

/// A parsed `pci.ids`: only what p2pmem shows (vendors, devices, classes, subclasses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PciIdDb {
    vendors: HashMap<u16, Vendor>,
    classes: HashMap<u8, Class>,
    /// The `# Version: ...` line of the file header, when present.
    version: Option<String>,
    /// Lines that were neither comments, blank nor understood.
    skipped: usize,
}

/// Which section the parser is in.
#[derive(Clone, Copy)]
enum Section {
    /// Before the first vendor line, or after a line that closed the previous entry.
    None,
    Vendor(u16),
    Class(u8),
    /// A vendor-like top-level section p2pmem does not use (e.g. `C` never reached).
    Ignored,
}

/// `hex` exactly `N` hex digits, as a number.
fn hex_u16(s: &str, digits: usize) -> Option<u16> {
    if s.len() != digits || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(s, 16).ok()
}

/// Split `"1b36  Red Hat, Inc."` into id and name (the name is trimmed; empty is refused).
fn id_and_name(s: &str, digits: usize) -> Option<(u16, String)> {
    let id = s.get(..digits)?;
    let rest = s.get(digits..)?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let name = rest.trim();
    if name.is_empty() {
        return None;
    }
    Some((hex_u16(id, digits)?, name.to_string()))
}

impl PciIdDb {
    /// Parse the text of a `pci.ids` file. Unknown or malformed lines are counted in
    /// [`PciIdDb::skipped`] and otherwise ignored; invalid UTF-8 is replaced.
    pub fn parse(bytes: &[u8]) -> PciIdDb {
        let mut db = PciIdDb::default();
        let mut section = Section::None;
        for raw in bytes.split(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(raw);
            let line = line.trim_end_matches(['\r', ' ']);
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                if db.version.is_none() {
                    if let Some(v) = comment.trim().strip_prefix("Version:") {
                        db.version = Some(v.trim().to_string());
                    }
                }
                continue;
            }
            if line.starts_with("\t\t") {
                // Subsystem or programming interface: not shown by p2pmem.
                continue;
            }
            if let Some(rest) = line.strip_prefix('\t') {
                let ok = match section {
                    Section::Vendor(v) => match id_and_name(rest, 4) {
                        Some((d, name)) => {
                            if let Some(vendor) = db.vendors.get_mut(&v) {
                                vendor.devices.insert(d, name);
                            }
                            true
                        }
                        None => false,
                    },
                    Section::Class(c) => match id_and_name(rest, 2) {
                        Some((s, name)) => {
                            if let (Some(class), Ok(s)) = (db.classes.get_mut(&c), u8::try_from(s))
                            {
                                class.subclasses.insert(s, name);
                            }
                            true
                        }
                        None => false,
                    },
                    Section::Ignored => true,
                    Section::None => false,
                };
                if !ok {
                    db.skipped += 1;
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("C ") {
                section = match id_and_name(rest, 2)
                    .and_then(|(c, n)| Some((u8::try_from(c).ok()?, n)))
                {
                    Some((c, name)) => {
                        db.classes.entry(c).or_default().name = name;
                        Section::Class(c)
                    }
                    None => {
                        db.skipped += 1;
                        Section::None
                    }
                };
                continue;
            }
            section = match id_and_name(line, 4) {
                Some((v, name)) => {
                    db.vendors.entry(v).or_default().name = name;
                    Section::Vendor(v)
                }
                // Other top-level sections (e.g. `X` for the unknown-vendor block of
                // some files) are skipped with their indented lines.
                None if line.as_bytes().get(1) == Some(&b' ') => Section::Ignored,
                None => {
                    db.skipped += 1;
                    Section::None
                }
            };
        }
        db
    }

    /// The vendor's name (`Red Hat, Inc.` for 0x1b36).
    pub fn vendor(&self, vendor: u16) -> Option<&str> {
        self.vendors.get(&vendor).map(|v| v.name.as_str())
    }

    /// The device's name (`QEMU NVM Express Controller` for 1b36:0010).
    pub fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        self.vendors
            .get(&vendor)?
            .devices
            .get(&device)
            .map(String::as_str)
    }

    /// The name of a class code's subclass, else its class (`Non-Volatile memory
    /// controller` for 0x010802).
    pub fn class(&self, class_code: u32) -> Option<&str> {
        let [_, base, sub, _] = class_code.to_be_bytes();
        let class = self.classes.get(&base)?;
        Some(
            class
                .subclasses
                .get(&sub)
                .map(String::as_str)
                .unwrap_or(class.name.as_str()),
        )
    }

    /// The file's `# Version:` header, when it has one.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// How many vendors the database names.
    pub fn vendor_count(&self) -> usize {
        self.vendors.len()
    }

    /// Lines that were not understood (a sign of a damaged file when large).
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::PciIdDb;

    const SAMPLE: &str = "#\n#\tList of PCI ID's\n#\n#\tVersion: 2025.07.11\n\
1b36  Red Hat, Inc.\n\
\t0001  QEMU PCI-PCI bridge\n\
\t0010  QEMU NVM Express Controller\n\
\t\t1af4 1100  QEMU Virtual Machine\n\
8086  Intel Corporation\n\
\t29c0  82G33/G31/P35/P31 Express DRAM Controller\n\
\n\
# List of known device classes, subclasses and programming interfaces\n\
C 01  Mass storage controller\n\
\t08  Non-Volatile memory controller\n\
\t\t02  NVM Express\n\
C 06  Bridge\n\
\t04  PCI bridge\n";

    #[test]
    fn vendors_devices_classes() {
        let db = PciIdDb::parse(SAMPLE.as_bytes());
        assert_eq!(db.vendor(0x1b36), Some("Red Hat, Inc."));
        assert_eq!(
            db.device(0x1b36, 0x0010),
            Some("QEMU NVM Express Controller")
        );
        assert_eq!(db.device(0x1b36, 0x1100), None);
        assert_eq!(
            db.device(0x8086, 0x29c0),
            Some("82G33/G31/P35/P31 Express DRAM Controller")
        );
        assert_eq!(db.vendor(0x1234), None);
        assert_eq!(db.class(0x010802), Some("Non-Volatile memory controller"));
        assert_eq!(db.class(0x060400), Some("PCI bridge"));
        assert_eq!(db.class(0x060900), Some("Bridge"));
        assert_eq!(db.class(0x020000), None);
        assert_eq!(db.version(), Some("2025.07.11"));
        assert_eq!(db.vendor_count(), 2);
        assert_eq!(db.skipped(), 0);
    }

    #[test]
    fn bad_lines_are_skipped_not_fatal() {
        let text = "\tabcd  device before any vendor\nzzzz  not hex\n12345  too long\n\
1b36\n1b36  Red Hat, Inc.\n\tqq  short\n\t0010\n\t0010  Good\r\nC zz  bad class\n\tff  orphan\n";
        let db = PciIdDb::parse(text.as_bytes());
        assert_eq!(db.vendor(0x1b36), Some("Red Hat, Inc."));
        assert_eq!(db.device(0x1b36, 0x0010), Some("Good"));
        assert!(db.skipped() >= 6, "skipped {}", db.skipped());
    }

    #[test]
    fn invalid_utf8_and_empty_input() {
        assert_eq!(PciIdDb::parse(b"").vendor_count(), 0);
        let db = PciIdDb::parse(b"1b36  Red \xff Hat\n\t0010  N\xc3\n");
        assert_eq!(db.vendor(0x1b36), Some("Red \u{fffd} Hat"));
        assert_eq!(db.device(0x1b36, 0x0010), Some("N\u{fffd}"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let _ = PciIdDb::parse(&bytes);
        }

        #[test]
        fn never_panics_on_line_soup(lines in proptest::collection::vec(
            proptest::sample::select(vec!["1b36  A", "\t0010  B", "\t\t1 2  C", "C 01  D", "\t08  E",
                "#", "", "\t", "C ", "ffff", "\tffff  ", "C 0g  x", "X 1  y"]), 0..64)) {
            let text = lines.join("\n");
            let _ = PciIdDb::parse(text.as_bytes());
        }
    }
}
