//! The PCI ID database (`pci.ids`, as lspci reads it): vendor, device and class names
//! for the numbers in config space.
//!
//! The format is line-based: a vendor line is four hex digits, two spaces and a name; a
//! device line is a tab, four hex digits, two spaces and a name; two tabs start a
//! subsystem line. After a `C xx  name` line the same indentation holds subclasses and
//! programming interfaces. `#` starts a comment. The parser takes bytes (never a path),
//! skips what it does not understand and never panics; the caller bounds the size.

use rustc_hash::FxHashMap;
use std::ops::Range;
use std::sync::OnceLock;

/// A parsed `pci.ids`: only what p2pmem shows (vendors, devices, classes, subclasses).
/// The names stay in the file's text, which the tables index, and a vendor's device
/// lines are read the first time one of its devices is asked for: of a file's 18,000
/// device lines, a `find` over a 4,096-function fabric of one make reads a few.
#[derive(Debug, Clone, Default)]
pub struct PciIdDb {
    /// The whole file, invalid UTF-8 replaced.
    text: String,
    vendors: FxHashMap<u16, Vendor>,
    classes: FxHashMap<u8, Range<usize>>,
    /// By class (high 8 bits) and subclass.
    subclasses: FxHashMap<u16, Range<usize>>,
    /// The `# Version: ...` line of the file header, when present.
    version: Option<String>,
    /// Lines outside vendors' sections that were neither comments, blank nor understood.
    skipped: usize,
}

/// A vendor: where its name is, and where the lines of its devices are.
#[derive(Debug, Clone, Default)]
struct Vendor {
    name: Range<usize>,
    /// The text of each section it heads, after its line (a vendor named twice heads two).
    sections: Vec<Range<usize>>,
    /// Its devices, read from `sections` when first asked for, with the number of lines
    /// there not understood.
    devices: OnceLock<(FxHashMap<u16, Range<usize>>, usize)>,
}

/// Which section the parser is in.
#[derive(Clone, Copy)]
enum Section {
    /// Before the first vendor line, or after a line that closed the previous entry.
    None,
    /// A vendor's, its device lines from this byte on.
    Vendor(u16, usize),
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

/// Split `"1b36  Red Hat, Inc."` (found at byte `at` of the text) into the id and where
/// the name is (trimmed; empty is refused).
fn id_and_name(s: &str, at: usize, digits: usize) -> Option<(u16, Range<usize>)> {
    let id = s.get(..digits)?;
    let rest = s.get(digits..)?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let start = at + s.len() - rest.trim_start().len();
    let name = rest.trim();
    if name.is_empty() {
        return None;
    }
    Some((hex_u16(id, digits)?, start..start + name.len()))
}

/// The lines of `text` in `range` (which starts at a line), each with where it starts and
/// without its `\n`; trailing `\r` and spaces trimmed, blank lines left out.
fn lines(text: &str, range: Range<usize>) -> impl Iterator<Item = (usize, &str)> {
    let part = text.get(range.clone()).unwrap_or("");
    let ends = memchr::memchr_iter(b'\n', part.as_bytes()).chain([part.len()]);
    let mut at = 0;
    ends.filter_map(move |end| {
        let line = part.get(at..end).unwrap_or("");
        let start = range.start + at;
        at = end + 1;
        let line = line.trim_end_matches(['\r', ' ']);
        (!line.is_empty()).then_some((start, line))
    })
}

impl PciIdDb {
    /// Parse the text of a `pci.ids` file. Unknown or malformed lines are counted in
    /// [`PciIdDb::skipped`] and otherwise ignored; invalid UTF-8 is replaced.
    pub fn parse(bytes: &[u8]) -> PciIdDb {
        Self::parse_owned(bytes.to_vec())
    }

    /// [`PciIdDb::parse`], keeping `bytes` as the text the names are read from (no copy
    /// of a valid file).
    pub fn parse_owned(bytes: Vec<u8>) -> PciIdDb {
        // Replacing invalid UTF-8 in the whole text or a line at a time is the same: a
        // `\n` is never part of a UTF-8 sequence.
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        let mut db = PciIdDb::default();
        let mut section = Section::None;
        for (at, line) in lines(&text, 0..text.len()) {
            // Most lines are a vendor's devices (looked at later) and subsystems or
            // programming interfaces (not shown by p2pmem).
            if line.starts_with('\t')
                && (matches!(section, Section::Vendor(..) | Section::Ignored)
                    || line.starts_with("\t\t"))
            {
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
            if let Some(rest) = line.strip_prefix('\t') {
                // A subclass in a class's section; before any section, not understood.
                match (section, id_and_name(rest, at + 1, 2)) {
                    (Section::Class(c), Some((s, name))) => {
                        db.subclasses.insert(u16::from(c) << 8 | s, name);
                    }
                    _ => db.skipped += 1,
                }
                continue;
            }
            // A top-level line ends the vendor's section.
            if let Section::Vendor(v, from) = section {
                if let Some(vendor) = db.vendors.get_mut(&v) {
                    vendor.sections.push(from..at);
                }
            }
            if let Some(rest) = line.strip_prefix("C ") {
                section = match id_and_name(rest, at + 2, 2)
                    .and_then(|(c, n)| Some((u8::try_from(c).ok()?, n)))
                {
                    Some((c, name)) => {
                        db.classes.insert(c, name);
                        Section::Class(c)
                    }
                    None => {
                        db.skipped += 1;
                        Section::None
                    }
                };
                continue;
            }
            section = match id_and_name(line, at, 4) {
                // Its section starts right after the name: what is left of the line
                // was trimmed off, and reads as blank.
                Some((v, name)) => {
                    db.vendors.entry(v).or_default().name = name;
                    Section::Vendor(v, at + line.len())
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
        if let Section::Vendor(v, from) = section {
            if let Some(vendor) = db.vendors.get_mut(&v) {
                vendor.sections.push(from..text.len());
            }
        }
        db.text = text;
        db
    }

    /// The devices of `vendor`, read from its sections the first time.
    fn devices<'a>(&'a self, vendor: &'a Vendor) -> &'a (FxHashMap<u16, Range<usize>>, usize) {
        vendor.devices.get_or_init(|| {
            let mut devices = FxHashMap::default();
            let mut skipped = 0;
            for section in &vendor.sections {
                for (at, line) in lines(&self.text, section.clone()) {
                    // Comments (and blank lines) may stand among a vendor's devices;
                    // subsystems are not shown.
                    if line.starts_with('#') || line.starts_with("\t\t") {
                        continue;
                    }
                    match line
                        .strip_prefix('\t')
                        .and_then(|rest| id_and_name(rest, at + 1, 4))
                    {
                        Some((d, name)) => {
                            devices.insert(d, name);
                        }
                        None => skipped += 1,
                    }
                }
            }
            (devices, skipped)
        })
    }

    fn name(&self, at: Option<&Range<usize>>) -> Option<&str> {
        self.text.get(at?.clone())
    }

    /// The vendor's name (`Red Hat, Inc.` for 0x1b36).
    pub fn vendor(&self, vendor: u16) -> Option<&str> {
        self.name(self.vendors.get(&vendor).map(|v| &v.name))
    }

    /// The device's name (`QEMU NVM Express Controller` for 1b36:0010).
    pub fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        let vendor = self.vendors.get(&vendor)?;
        self.name(self.devices(vendor).0.get(&device))
    }

    /// The name of a class code's subclass, else its class (`Non-Volatile memory
    /// controller` for 0x010802).
    pub fn class(&self, class_code: u32) -> Option<&str> {
        let [_, base, sub, _] = class_code.to_be_bytes();
        let class = self.classes.get(&base)?;
        let sub = self
            .subclasses
            .get(&(u16::from(base) << 8 | u16::from(sub)));
        self.name(Some(sub.unwrap_or(class)))
    }

    /// The file's `# Version:` header, when it has one.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// How many vendors the database names.
    pub fn vendor_count(&self) -> usize {
        self.vendors.len()
    }

    /// Lines that were not understood (a sign of a damaged file when large). Reads every
    /// vendor's devices.
    pub fn skipped(&self) -> usize {
        self.skipped
            + self
                .vendors
                .values()
                .map(|v| self.devices(v).1)
                .sum::<usize>()
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

    /// The parser as it was before the names stayed in the text (a `String` per name,
    /// a line converted at a time): the new one must answer as it did.
    mod reference {
        use std::collections::HashMap;

        #[derive(Default)]
        pub struct Db {
            pub vendors: HashMap<u16, (String, HashMap<u16, String>)>,
            pub classes: HashMap<u8, (String, HashMap<u8, String>)>,
            pub version: Option<String>,
            pub skipped: usize,
        }

        fn hex(s: &str, digits: usize) -> Option<u16> {
            if s.len() != digits || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u16::from_str_radix(s, 16).ok()
        }

        fn id_and_name(s: &str, digits: usize) -> Option<(u16, String)> {
            let rest = s.get(digits..)?;
            if !rest.starts_with(char::is_whitespace) || rest.trim().is_empty() {
                return None;
            }
            Some((hex(s.get(..digits)?, digits)?, rest.trim().to_string()))
        }

        pub fn parse(bytes: &[u8]) -> Db {
            enum Section {
                None,
                Vendor(u16),
                Class(u8),
                Ignored,
            }
            let mut db = Db::default();
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
                    continue;
                }
                if let Some(rest) = line.strip_prefix('\t') {
                    let ok = match section {
                        Section::Vendor(v) => id_and_name(rest, 4)
                            .map(|(d, n)| db.vendors.entry(v).or_default().1.insert(d, n))
                            .is_some(),
                        Section::Class(c) => id_and_name(rest, 2)
                            .and_then(|(s, n)| Some((u8::try_from(s).ok()?, n)))
                            .map(|(s, n)| db.classes.entry(c).or_default().1.insert(s, n))
                            .is_some(),
                        Section::Ignored => true,
                        Section::None => false,
                    };
                    db.skipped += usize::from(!ok);
                    continue;
                }
                if let Some(rest) = line.strip_prefix("C ") {
                    section = match id_and_name(rest, 2)
                        .and_then(|(c, n)| Some((u8::try_from(c).ok()?, n)))
                    {
                        Some((c, n)) => {
                            db.classes.entry(c).or_default().0 = n;
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
                    Some((v, n)) => {
                        db.vendors.entry(v).or_default().0 = n;
                        Section::Vendor(v)
                    }
                    None if line.as_bytes().get(1) == Some(&b' ') => Section::Ignored,
                    None => {
                        db.skipped += 1;
                        Section::None
                    }
                };
            }
            db
        }
    }

    /// Every answer of `db` for the IDs that `text` could name is the reference's.
    fn answers_as_the_reference(bytes: &[u8]) {
        let db = PciIdDb::parse(bytes);
        let old = reference::parse(bytes);
        assert_eq!(db.vendor_count(), old.vendors.len());
        assert_eq!(db.version(), old.version.as_deref());
        assert_eq!(db.skipped(), old.skipped);
        for (v, (name, devices)) in &old.vendors {
            assert_eq!(db.vendor(*v), Some(name.as_str()));
            for (d, name) in devices {
                assert_eq!(db.device(*v, *d), Some(name.as_str()));
            }
        }
        for (c, (name, subs)) in &old.classes {
            for sub in 0..=255u8 {
                let code = u32::from_be_bytes([0, *c, sub, 0]);
                let want = subs.get(&sub).unwrap_or(name);
                assert_eq!(db.class(code), Some(want.as_str()));
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn answers_as_the_line_at_a_time_parser(lines in proptest::collection::vec(
            proptest::sample::select(vec!["1b36  Red Hat, Inc.", "1b36  Renamed", "\t0010  NVMe",
                "\t0010  Again ", "\t0011\u{a0} nbsp", "\t\t1af4 1100  Sub", "C 01  Mass", "\t08  NVM",
                "C 01  Renamed", "\t08\t tab", "#", "# Version: 2025.07.11", "#Version:x", "", "\t",
                "C ", "ffff", "\tffff  ", "C 0g  x", "X 1  y", "8086  Intel\r", "\tabcd  \u{e9}t\u{e9}",
                "\tabc\u{e9}  multi", "\u{e9}abc  vendor", "12345  long", "\t00ff  \u{fffd}",
                "8086 ", "  8086  lead"]), 0..64)) {
            answers_as_the_reference(lines.join("\n").as_bytes());
        }

        #[test]
        fn answers_as_the_reference_on_any_bytes(bytes in proptest::collection::vec(
            proptest::sample::select(b"0123456789abcdefC \t\n\r#Vx\xc3\xa9\xff".to_vec()), 0..512)) {
            answers_as_the_reference(&bytes);
        }

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
