//! Names for PCI vendor, device and class numbers, as lspci shows them.
//!
//! The system's `pci.ids` comes first (the file lspci reads: `usr/share/misc/pci.ids` on
//! Debian, `usr/share/hwdata/pci.ids` on Fedora), below the root and then below `/`;
//! without one, the snapshot bundled at build time by the `pci-ids` crate. A file larger
//! than [`MAX_PCI_IDS_BYTES`] is refused rather than read.

use p2pmem_model::pci_ids::PciIdDb;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where the system's `pci.ids` may be, relative to a root, in lspci's order.
pub const PCI_IDS_PATHS: [&str; 2] = ["usr/share/misc/pci.ids", "usr/share/hwdata/pci.ids"];

/// The largest `pci.ids` read (today's file is about 1.5 MiB).
pub const MAX_PCI_IDS_BYTES: u64 = 32 << 20;

/// Why a `pci.ids` file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PciIdsError {
    /// It could not be opened or read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It is larger than [`MAX_PCI_IDS_BYTES`].
    #[error("{path} is larger than {MAX_PCI_IDS_BYTES} bytes: not a pci.ids file")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// It holds no vendor at all.
    #[error("{path} names no PCI vendor: not a pci.ids file")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Where the names come from.
#[derive(Debug)]
enum Source {
    File { path: PathBuf, db: PciIdDb },
    Bundled,
}

/// The PCI ID database in use.
#[derive(Debug)]
pub struct PciNames {
    source: Source,
}

/// Read and parse one `pci.ids` file, at most [`MAX_PCI_IDS_BYTES`].
pub fn read_pci_ids(path: &Path) -> Result<PciIdDb, PciIdsError> {
    let io = |source| PciIdsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // Room for the whole file at once (its length as it is now, within the bound): one
    // read, no copying as the buffer grows.
    let len = file
        .metadata()
        .map_or(0, |m| m.len().min(MAX_PCI_IDS_BYTES));
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0) + 1);
    file.take(MAX_PCI_IDS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_PCI_IDS_BYTES {
        return Err(PciIdsError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let db = PciIdDb::parse_owned(bytes);
    if db.vendor_count() == 0 {
        return Err(PciIdsError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(db)
}

impl PciNames {
    /// The names from `explicit` when given (an error if it cannot be used), else from the
    /// first `pci.ids` found below `root` and then below `/`, else the bundled snapshot.
    /// A system file that exists but cannot be used is skipped with a warning in the
    /// returned list.
    pub fn load(
        root: &Path,
        explicit: Option<&Path>,
    ) -> Result<(PciNames, Vec<String>), PciIdsError> {
        if let Some(path) = explicit {
            let db = read_pci_ids(path)?;
            return Ok((PciNames::file(path.to_path_buf(), db), Vec::new()));
        }
        let mut warnings = Vec::new();
        let mut roots = vec![root.to_path_buf()];
        if root != Path::new("/") {
            roots.push(PathBuf::from("/"));
        }
        for r in roots {
            for rel in PCI_IDS_PATHS {
                let path = r.join(rel);
                if !path.exists() {
                    continue;
                }
                match read_pci_ids(&path) {
                    Ok(db) => return Ok((PciNames::file(path, db), warnings)),
                    Err(e) => warnings.push(format!("{e}; trying the next source")),
                }
            }
        }
        Ok((PciNames::bundled(), warnings))
    }

    /// Names from a parsed file.
    pub fn file(path: PathBuf, db: PciIdDb) -> PciNames {
        PciNames {
            source: Source::File { path, db },
        }
    }

    /// The snapshot bundled into the binary.
    pub fn bundled() -> PciNames {
        PciNames {
            source: Source::Bundled,
        }
    }

    /// Where the names come from: the file's path and version, or `bundled snapshot`.
    pub fn source(&self) -> String {
        match &self.source {
            Source::File { path, db } => match db.version() {
                Some(v) => format!("{} (version {v})", path.display()),
                None => path.display().to_string(),
            },
            Source::Bundled => "the pci.ids snapshot bundled with p2pmem".to_string(),
        }
    }

    /// The vendor's name.
    pub fn vendor(&self, vendor: u16) -> Option<&str> {
        match &self.source {
            Source::File { db, .. } => db.vendor(vendor),
            Source::Bundled => {
                use pci_ids::FromId;
                pci_ids::Vendor::from_id(vendor).map(|v| v.name())
            }
        }
    }

    /// The device's name.
    pub fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        match &self.source {
            Source::File { db, .. } => db.device(vendor, device),
            Source::Bundled => pci_ids::Device::from_vid_pid(vendor, device).map(|d| d.name()),
        }
    }

    /// The class code's subclass name, else its class name.
    pub fn class(&self, class_code: u32) -> Option<&str> {
        match &self.source {
            Source::File { db, .. } => db.class(class_code),
            Source::Bundled => {
                let [_, base, sub, _] = class_code.to_be_bytes();
                pci_ids::Subclass::from_cid_sid(base, sub)
                    .map(|s| s.name())
                    .or_else(|| {
                        use pci_ids::FromId;
                        pci_ids::Class::from_id(base).map(|c| c.name())
                    })
            }
        }
    }

    /// lspci's words for a function: `Red Hat, Inc. QEMU NVM Express Controller`, `Red
    /// Hat, Inc. Device 1234` when only the vendor is known, `Device 1234:5678` when
    /// neither is.
    pub fn describe(&self, vendor: u16, device: u16) -> String {
        match (self.vendor(vendor), self.device(vendor, device)) {
            (Some(v), Some(d)) => format!("{v} {d}"),
            (Some(v), None) => format!("{v} Device {device:04x}"),
            (None, _) => format!("Device {vendor:04x}:{device:04x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_names_qemu_devices() {
        let n = PciNames::bundled();
        assert_eq!(n.vendor(0x1b36), Some("Red Hat, Inc."));
        assert_eq!(
            n.device(0x1b36, 0x0010),
            Some("QEMU NVM Express Controller")
        );
        assert_eq!(
            n.describe(0x1b36, 0x0010),
            "Red Hat, Inc. QEMU NVM Express Controller"
        );
        assert_eq!(n.class(0x010802), Some("Non-Volatile memory controller"));
        assert_eq!(n.vendor(0x0002), None);
        assert_eq!(n.describe(0x0002, 0x0001), "Device 0002:0001");
    }

    #[test]
    fn file_beats_bundled_and_bad_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let misc = dir.path().join("usr/share/misc");
        std::fs::create_dir_all(&misc).unwrap();
        // An unusable file at the first place is skipped with a warning...
        std::fs::write(misc.join("pci.ids"), b"\x00\x01 not a database\n").unwrap();
        let hw = dir.path().join("usr/share/hwdata");
        std::fs::create_dir_all(&hw).unwrap();
        std::fs::write(hw.join("pci.ids"), "1b36  Test Vendor\n\t0010  Test NVMe\n").unwrap();
        let (n, warnings) = PciNames::load(dir.path(), None).unwrap();
        assert_eq!(n.describe(0x1b36, 0x0010), "Test Vendor Test NVMe");
        assert_eq!(n.describe(0x1b36, 0x0011), "Test Vendor Device 0011");
        assert!(n.source().contains("hwdata"), "{}", n.source());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("names no PCI vendor"), "{warnings:?}");
    }

    #[test]
    fn explicit_file_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.ids");
        let e = PciNames::load(dir.path(), Some(&missing)).unwrap_err();
        assert!(e.to_string().contains("nope.ids"), "{e}");
    }

    #[test]
    fn oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("pci.ids");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_PCI_IDS_BYTES + 1).unwrap();
        let e = read_pci_ids(&big).unwrap_err();
        assert!(matches!(e, PciIdsError::TooLarge { .. }), "{e}");
    }
}
