//! Paths inside a root directory, with symlinks resolved *inside* that root.
//!
//! sysfs is a forest of relative symlinks (`sys/bus/pci/devices/<BDF>` ->
//! `../../../devices/pci0000:00/...`). A capture keeps them, and may also hold absolute
//! ones; both are followed as if the root were `/`, never escaping it. Loops and dangling
//! links are errors that name the path.

use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, Mode, OFlags};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

/// Most symlinks followed in one resolution (the kernel's limit is 40).
pub const MAX_LINKS: usize = 40;

/// Why a path could not be read or resolved.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// An I/O error on a path.
    #[error("{path}: {what}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Too many symlinks: a loop.
    #[error("{path}: too many levels of symbolic links (a loop?)")]
    Loop {
        /// The path.
        path: PathBuf,
    },
    /// A file's content is not what the kernel writes there.
    #[error("{path}: unexpected content {content:?}: {why}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// What was read (shortened).
        content: String,
        /// What was expected.
        why: &'static str,
    },
}

/// A root directory that stands for `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootFs {
    root: PathBuf,
}

impl RootFs {
    /// A root; `/` for the live system.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `rel` joined onto the root (no symlink resolution). `rel` is relative to `/`.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        self.root.join(rel)
    }

    /// Resolve `rel` (relative to the root) following symlinks inside the root. Returns
    /// the resolved path relative to the root (`sys/devices/pci0000:00/...`).
    pub fn resolve(&self, rel: impl AsRef<Path>) -> Result<PathBuf, FsError> {
        self.resolve_with(rel, &mut HashSet::new())
    }

    /// [`RootFs::resolve`], remembering in `known` the paths (relative to the root)
    /// already found not to be symlinks, so that resolving many paths below one tree
    /// (4,096 PCI functions under `sys/devices`) checks each shared prefix only once.
    /// The answer is the same as without `known`, provided the tree does not change.
    pub fn resolve_with(
        &self,
        rel: impl AsRef<Path>,
        known: &mut HashSet<PathBuf>,
    ) -> Result<PathBuf, FsError> {
        let mut done: Vec<OsString> = Vec::new();
        let mut todo: Vec<OsString> = Vec::new();
        push_components(&mut todo, rel.as_ref());
        let mut links = 0usize;
        while let Some(c) = todo.pop() {
            if c == ".." {
                done.pop();
                continue;
            }
            if c == "." || c.is_empty() {
                continue;
            }
            done.push(c);
            let so_far: PathBuf = done.iter().collect();
            if known.contains(&so_far) {
                continue;
            }
            let here = self.root.join(&so_far);
            // One readlink tells a link (its target) from anything else (EINVAL), and a
            // missing component from both.
            match std::fs::read_link(&here) {
                Ok(target) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(FsError::Loop { path: here });
                    }
                    done.pop();
                    if target.is_absolute() {
                        done.clear();
                    }
                    push_components(&mut todo, &target);
                }
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    known.insert(so_far);
                }
                Err(source) => {
                    return Err(FsError::Io {
                        path: here,
                        what: "cannot resolve",
                        source,
                    })
                }
            }
        }
        Ok(done.iter().collect())
    }

    /// Read a whole file.
    pub fn read(&self, rel: impl AsRef<Path>) -> Result<Vec<u8>, FsError> {
        let p = self.path(rel);
        std::fs::read(&p).map_err(|source| FsError::Io {
            path: p,
            what: "cannot read",
            source,
        })
    }

    /// Read a text file, trimmed; `None` when it does not exist.
    pub fn read_opt_string(&self, rel: impl AsRef<Path>) -> Result<Option<String>, FsError> {
        let p = self.path(rel);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(FsError::Io {
                path: p,
                what: "cannot read",
                source,
            }),
        }
    }

    /// Does `rel` exist (following links)?
    pub fn exists(&self, rel: impl AsRef<Path>) -> bool {
        self.path(rel).exists()
    }

    /// Names in a directory, sorted; empty when it does not exist.
    pub fn list(&self, rel: impl AsRef<Path>) -> Result<Vec<String>, FsError> {
        let p = self.path(rel);
        let rd = match std::fs::read_dir(&p) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(FsError::Io {
                    path: p,
                    what: "cannot list",
                    source,
                })
            }
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|source| FsError::Io {
                path: p.clone(),
                what: "cannot list",
                source,
            })?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Parse a hex sysfs value like `0x8086`.
    pub fn read_hex(&self, rel: impl AsRef<Path>) -> Result<u32, FsError> {
        let rel = rel.as_ref();
        parse_hex(&self.read(rel)?, || self.path(rel))
    }

    /// Parse a decimal sysfs value like `16777216`.
    pub fn read_u64(&self, rel: impl AsRef<Path>) -> Result<u64, FsError> {
        let rel = rel.as_ref();
        parse_u64(&self.read(rel)?, || self.path(rel))
    }

    /// Open the directory `rel` (relative to the root, symlinks already resolved) to read
    /// many files in it with short lookups.
    pub fn open_dir(&self, rel: impl AsRef<Path>) -> Result<Dir, FsError> {
        let path = self.path(rel);
        let fd = rustix::fs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::Io {
            path: path.clone(),
            what: "cannot open",
            source: e.into(),
        })?;
        Ok(Dir { fd, path })
    }
}

fn parse_hex(bytes: &[u8], path: impl FnOnce() -> PathBuf) -> Result<u32, FsError> {
    let text = String::from_utf8_lossy(bytes);
    let t = text.trim();
    let digits = t.strip_prefix("0x").unwrap_or(t);
    u32::from_str_radix(digits, 16).map_err(|_| FsError::Parse {
        path: path(),
        content: t.chars().take(40).collect(),
        why: "expected a hexadecimal number like 0x8086",
    })
}

fn parse_u64(bytes: &[u8], path: impl FnOnce() -> PathBuf) -> Result<u64, FsError> {
    let text = String::from_utf8_lossy(bytes);
    let t = text.trim();
    t.parse().map_err(|_| FsError::Parse {
        path: path(),
        content: t.chars().take(40).collect(),
        why: "expected a decimal number",
    })
}

/// An open directory inside the root. Files in it are opened relative to it (`openat`),
/// so reading the dozen files of one PCI function costs no walk from `/` each time; the
/// answers and error paths are those of the [`RootFs`] methods on the joined path.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// The directory's path (the root joined).
    path: PathBuf,
}

impl Dir {
    /// The directory's path, the root included.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&self, name: &str) -> Result<File, FsError> {
        rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(|e| FsError::Io {
            path: self.path.join(name),
            what: "cannot read",
            source: e.into(),
        })
    }

    /// Read `file` to its end with plain `read` calls (`read_to_end` would also ask for
    /// the file's size and position: two more system calls per file). A read that does
    /// not fill the buffer ends the file: sysfs hands an attribute over whole in one
    /// read, and a regular file reads short only at its end.
    fn read_file(&self, name: &str, mut file: File, hint: usize) -> Result<Vec<u8>, FsError> {
        let mut bytes = vec![0u8; hint.max(64)];
        let mut len = 0;
        loop {
            if len == bytes.len() {
                bytes.resize(2 * len, 0);
            }
            match file.read(&mut bytes[len..]) {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    if len < bytes.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(FsError::Io {
                        path: self.path.join(name),
                        what: "cannot read",
                        source,
                    })
                }
            }
        }
        bytes.truncate(len);
        Ok(bytes)
    }

    /// Read a whole file (small: sysfs attributes).
    pub fn read(&self, name: &str) -> Result<Vec<u8>, FsError> {
        let file = self.open(name)?;
        self.read_file(name, file, 64)
    }

    /// Read a whole file and the length its metadata gives (what sysfs exposes of a
    /// `config` file, which an unprivileged read may cut short).
    pub fn read_with_len(&self, name: &str) -> Result<(Vec<u8>, u64), FsError> {
        let file = self.open(name)?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        // One more byte than the length, so that the read that finds the end is the second.
        let hint = usize::try_from(len).unwrap_or(0).clamp(63, 1 << 16) + 1;
        Ok((self.read_file(name, file, hint)?, len))
    }

    /// Parse a hex sysfs value like `0x8086`.
    pub fn read_hex(&self, name: &str) -> Result<u32, FsError> {
        parse_hex(&self.read(name)?, || self.path.join(name))
    }

    /// Parse a decimal sysfs value like `16777216`.
    pub fn read_u64(&self, name: &str) -> Result<u64, FsError> {
        parse_u64(&self.read(name)?, || self.path.join(name))
    }

    /// Is `name` a directory (following links)?
    pub fn is_dir(&self, name: &str) -> bool {
        rustix::fs::statat(&self.fd, name, AtFlags::empty()).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
        })
    }

    /// The target of the symlink `name`, if it is one.
    pub fn read_link(&self, name: &str) -> Option<PathBuf> {
        rustix::fs::readlinkat(&self.fd, name, Vec::new())
            .ok()
            .map(|t| PathBuf::from(OsString::from_vec(t.into_bytes())))
    }
}

fn push_components(todo: &mut Vec<OsString>, p: &Path) {
    // `todo` is a stack: push in reverse so the first component is popped first.
    let comps: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect();
    todo.extend(comps.into_iter().rev());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolves_relative_and_absolute_links_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = RootFs::new(d.path());
        std::fs::create_dir_all(r.path("sys/devices/pci0000:00/0000:00:04.0")).unwrap();
        std::fs::create_dir_all(r.path("sys/bus/pci/devices")).unwrap();
        symlink(
            "../../../devices/pci0000:00/0000:00:04.0",
            r.path("sys/bus/pci/devices/0000:00:04.0"),
        )
        .unwrap();
        symlink("/sys/devices/pci0000:00", r.path("sys/abs")).unwrap();
        assert_eq!(
            r.resolve("sys/bus/pci/devices/0000:00:04.0").unwrap(),
            PathBuf::from("sys/devices/pci0000:00/0000:00:04.0")
        );
        assert_eq!(
            r.resolve("/sys/abs/0000:00:04.0").unwrap(),
            PathBuf::from("sys/devices/pci0000:00/0000:00:04.0")
        );
        // `..` never climbs above the root.
        assert_eq!(
            r.resolve("../../sys/devices").unwrap(),
            PathBuf::from("sys/devices")
        );
    }

    #[test]
    fn loops_and_dangling_links_are_errors_naming_the_path() {
        let d = tempfile::tempdir().unwrap();
        let r = RootFs::new(d.path());
        symlink("b", r.path("a")).unwrap();
        symlink("a", r.path("b")).unwrap();
        let e = r.resolve("a").unwrap_err();
        assert!(matches!(e, FsError::Loop { .. }), "{e}");
        symlink("nowhere", r.path("dangling")).unwrap();
        let e = r.resolve("dangling/x").unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
    }

    #[test]
    fn parse_errors_name_the_path_and_content() {
        let d = tempfile::tempdir().unwrap();
        let r = RootFs::new(d.path());
        std::fs::write(r.path("size"), "sixteen\n").unwrap();
        let e = r.read_u64("size").unwrap_err().to_string();
        assert!(e.contains("size") && e.contains("sixteen"), "{e}");
        std::fs::write(r.path("vendor"), "0x8086\n").unwrap();
        assert_eq!(r.read_hex("vendor").unwrap(), 0x8086);
        assert_eq!(r.read_opt_string("missing").unwrap(), None);
    }
}
