//! Where a lab kernel comes from: a pinned Debian source package (`--kernel 6.12`, the
//! default), a user's source tree (`--kernel-source DIR`, built out of tree and never
//! written to), or a user's prebuilt image (`--kernel-image FILE --kernel-config FILE`,
//! optionally with the tree it was built in, for module builds). Each has a line (which
//! options of the fragment hold), an identity (part of the kernel cache key) and words
//! for reports.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::build::lines::{pin, Line, Pin, DEFAULT_LINE, PINS};
use crate::error::{io_err, LabError, Result};

/// Where the kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// A pinned Debian source package, downloaded into the cache (`debian.rs`).
    Pinned(Pin),
    /// A user's kernel source tree, configured and built out of tree by the lab.
    Tree(PathBuf),
    /// A user's prebuilt kernel, used as it is.
    Image {
        /// The `bzImage`.
        bzimage: PathBuf,
        /// The `.config` it was built with.
        config: PathBuf,
        /// The tree it was built in (`make -C TREE M=...` builds modules for it), if
        /// given.
        tree: Option<PathBuf>,
    },
}

impl Default for KernelSource {
    fn default() -> Self {
        match pin(DEFAULT_LINE) {
            Some(p) => Self::Pinned(*p),
            None => Self::Pinned(PINS[0]),
        }
    }
}

impl KernelSource {
    /// The pinned source of `line`; an error listing the pinned lines otherwise.
    pub fn line(line: Line) -> Result<Self> {
        pin(line).map(|p| Self::Pinned(*p)).ok_or_else(|| LabError::Source {
            origin: format!("--kernel {line}"),
            why: format!(
                "the lab pins {} (crates/p2pmem-lab/src/build/lines.rs); for another kernel give --kernel-source DIR or --kernel-image FILE --kernel-config FILE",
                crate::build::lines::pinned_lines()
            ),
        })
    }

    /// Which line this kernel is: the pin's, the tree's `Makefile`'s, the config's
    /// header's.
    pub fn kernel_line(&self) -> Result<Line> {
        match self {
            Self::Pinned(p) => Ok(p.line),
            Self::Tree(dir) => {
                let makefile = dir.join("Makefile");
                let text = read(&makefile, "kernel source tree's Makefile")?;
                Line::from_makefile(&text).ok_or_else(|| LabError::Source {
                    origin: dir.display().to_string(),
                    why: format!(
                        "{} has no VERSION and PATCHLEVEL: not a kernel source tree",
                        makefile.display()
                    ),
                })
            }
            Self::Image { config, .. } => {
                let text = read(config, "kernel config")?;
                Line::from_config(&text).ok_or_else(|| LabError::Source {
                    origin: config.display().to_string(),
                    why: "no `# Linux/x86 X.Y.Z Kernel Configuration` header: not a kernel .config"
                        .into(),
                })
            }
        }
    }

    /// The source's identity in the kernel cache key: the pin (package, version,
    /// sha256); the tree's path and a fingerprint of its files (count, bytes, newest
    /// mtime; `.git` left out); the image's and config's sha256 and the tree's path.
    pub fn identity(&self) -> Result<String> {
        match self {
            Self::Pinned(p) => Ok(p.identity()),
            Self::Tree(dir) => Ok(format!(
                "tree {} {}",
                canonical(dir)?.display(),
                tree_fingerprint(dir)?
            )),
            Self::Image {
                bzimage,
                config,
                tree,
            } => {
                let tree = match tree {
                    Some(t) => canonical(t)?.display().to_string(),
                    None => "-".into(),
                };
                Ok(format!(
                    "image {} config {} tree {tree}",
                    crate::build::debian::sha256_file(bzimage)?,
                    crate::build::debian::sha256_file(config)?
                ))
            }
        }
    }

    /// In words, for reports: `Debian linux-source-6.12 6.12.118-1~deb12u1`.
    pub fn describe(&self) -> String {
        match self {
            Self::Pinned(p) => format!("Debian {} {}", p.package, p.version),
            Self::Tree(dir) => format!("the source tree {}", dir.display()),
            Self::Image { bzimage, .. } => format!("the prebuilt image {}", bzimage.display()),
        }
    }
}

fn read(path: &Path, what: &'static str) -> Result<String> {
    fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            LabError::Missing {
                what,
                path: path.to_path_buf(),
                hint: "check the path given to --kernel-source or --kernel-config",
            }
        } else {
            io_err("cannot read", path)(source)
        }
    })
}

fn canonical(path: &Path) -> Result<PathBuf> {
    path.canonicalize().map_err(io_err("cannot resolve", path))
}

/// `files N bytes N newest S.NNNNNNNNN` over every file below `dir` (symlinks not
/// followed, `.git` skipped): changes when a file is added, removed, resized or
/// rewritten.
pub fn tree_fingerprint(dir: &Path) -> Result<String> {
    let (mut files, mut bytes, mut newest) = (0u64, 0u64, 0u128);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io_err("cannot list", &d))? {
            let entry = entry.map_err(io_err("cannot list", &d))?;
            let meta = entry
                .metadata()
                .map_err(io_err("cannot stat", entry.path()))?;
            if meta.is_dir() {
                if entry.file_name() != ".git" {
                    stack.push(entry.path());
                }
                continue;
            }
            files += 1;
            bytes += meta.len();
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            newest = newest.max(mtime);
        }
    }
    Ok(format!(
        "files {files} bytes {bytes} newest {}.{:09}",
        newest / 1_000_000_000,
        newest % 1_000_000_000
    ))
}

/// Hex sha256 (first 16 digits) of `parts`, each ended by a NUL.
pub fn short_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update(b"\0");
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_pinned_default_line() {
        let s = KernelSource::default();
        assert_eq!(s.kernel_line().unwrap(), DEFAULT_LINE);
        assert_eq!(s.describe(), "Debian linux-source-6.12 6.12.118-1~deb12u1");
        assert!(s.identity().unwrap().contains("6.12.118-1~deb12u1"));
    }

    #[test]
    fn an_unpinned_line_names_the_pinned_ones() {
        let e = KernelSource::line(Line::new(6, 6)).unwrap_err().to_string();
        assert!(e.contains("6.1, 6.12, 7.2, 7.3"), "{e}");
        assert!(e.contains("--kernel-source"), "{e}");
        assert!(KernelSource::line(Line::new(7, 3)).is_ok());
    }

    #[test]
    fn a_tree_has_its_makefiles_line_and_a_fingerprint_that_follows_edits() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path();
        let src = KernelSource::Tree(tree.to_path_buf());
        let e = src.kernel_line().unwrap_err().to_string();
        assert!(e.contains("Makefile"), "{e}");
        fs::write(tree.join("Makefile"), "VERSION = 6\nPATCHLEVEL = 15\n").unwrap();
        assert_eq!(src.kernel_line().unwrap(), Line::new(6, 15));
        fs::create_dir_all(tree.join(".git")).unwrap();
        fs::write(tree.join(".git/index"), "x").unwrap();
        let a = src.identity().unwrap();
        assert!(a.contains("files 1 "), "{a}");
        fs::create_dir_all(tree.join("drivers")).unwrap();
        fs::write(tree.join("drivers/x.c"), "int x;").unwrap();
        let b = src.identity().unwrap();
        assert_ne!(a, b);
        assert_eq!(b, src.identity().unwrap());
        assert!(src.describe().contains(&tree.display().to_string()));
    }

    #[test]
    fn an_image_is_read_from_its_config_and_hashed() {
        let tmp = tempfile::tempdir().unwrap();
        let (img, cfg) = (tmp.path().join("bzImage"), tmp.path().join("config"));
        fs::write(&img, "kernel").unwrap();
        fs::write(&cfg, "#\n# Linux/x86 7.2.13 Kernel Configuration\n#\n").unwrap();
        let src = KernelSource::Image {
            bzimage: img.clone(),
            config: cfg.clone(),
            tree: None,
        };
        assert_eq!(src.kernel_line().unwrap(), Line::new(7, 2));
        let a = src.identity().unwrap();
        fs::write(&img, "kernel2").unwrap();
        assert_ne!(a, src.identity().unwrap());
        let missing = KernelSource::Image {
            bzimage: img,
            config: tmp.path().join("nope"),
            tree: None,
        };
        let e = missing.kernel_line().unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("--kernel-config"), "{e}");
    }

    #[test]
    fn short_hashes_separate_their_parts() {
        assert_eq!(short_hash(&[b"a"]).len(), 16);
        assert_ne!(short_hash(&[b"ab", b"c"]), short_hash(&[b"a", b"bc"]));
    }
}
