//! Paths inside a root directory, with symlinks resolved *inside* that root.
//!
//! sysfs is a forest of relative symlinks (`sys/bus/pci/devices/<BDF>` ->
//! `../../../devices/pci0000:00/...`), and a capture keeps them. A capture stays a
//! sandbox: this module resolves every link itself, and a link that is absolute or
//! climbs above the root is an error naming the link ([`FsError::Escape`]), as are loops
//! and dangling links. (The live root `/` follows absolute links: it is the real
//! system.) Files are read only once resolved, only when regular, and only up to a
//! bound ([`crate::bounded`]), so a capture cannot make p2pmem read the host's files,
//! block on a FIFO or read a device without end.

use crate::bounded;
use p2pmem_model::limits::{self, Bound};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags};
use std::borrow::Cow;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Most symlinks followed in one resolution (the kernel's limit is 40).
pub const MAX_LINKS: usize = 40;

/// Paths (relative to the root, as bytes) found to be directories and not links, for
/// [`RootFs::resolve_with`]. A fast hash (FxHash, not SipHash): it is asked once per
/// component of every path resolved, a dozen for each of a large capture's 4,096 links. Its keys are the capture's own paths: a capture made to
/// collide only slows the reading of itself.
pub type KnownDirs = HashSet<Box<[u8]>, rustc_hash::FxBuildHasher>;

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
    /// A symbolic link leads out of the root: absolute, or climbing above it.
    #[error("{link}: symbolic link to {target:?} leads out of the root")]
    Escape {
        /// The link.
        link: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// A symbolic link whose target does not exist.
    #[error("{link}: dangling symbolic link to {target:?}")]
    Dangling {
        /// The link.
        link: PathBuf,
        /// Where it points.
        target: PathBuf,
        /// The error on the missing part.
        #[source]
        source: io::Error,
    },
    /// A file is larger than anything of its kind can be (or endless).
    #[error("{path}: more than {} bytes, larger than {} can be", bound.max, bound.what)]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound it broke.
        bound: Bound,
    },
    /// Something other than a regular file where a file is read (a FIFO, a device).
    #[error("{path}: a {kind}, not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
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

impl FsError {
    /// Is this "no such file or directory"?
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } | Self::Dangling { source, .. }
            if source.kind() == io::ErrorKind::NotFound)
    }
}

/// A root directory that stands for `/`.
#[derive(Debug, Clone)]
pub struct RootFs {
    root: PathBuf,
    /// The root, open (`O_PATH`) at the first lookup below it, shared by the clones:
    /// what is below it is looked up from here, without the root's own path before it
    /// each time. `None` when it does not open (then the root's path is walked, and its
    /// errors name what is wrong).
    fd: Arc<OnceLock<Option<OwnedFd>>>,
}

impl PartialEq for RootFs {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
    }
}

impl Eq for RootFs {}

/// Where a symlink's target is read without allocating (sysfs's longest are some 100
/// bytes); a longer one is read again into a buffer of its size.
const LINK_BUF: usize = 256;

/// The target of the symlink `path` (relative to `dir`) handed to `f`, read into a stack
/// buffer when it fits; `None` when `path` is anything but a link.
fn with_link<R>(
    dir: impl rustix::fd::AsFd,
    path: &Path,
    f: impl FnOnce(&[u8]) -> R,
) -> io::Result<Option<R>> {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); LINK_BUF];
    match rustix::fs::readlinkat_raw(&dir, path, &mut buf) {
        Ok((target, _)) if target.len() < LINK_BUF => Ok(Some(f(target))),
        Ok(_) => {
            let target = rustix::fs::readlinkat(&dir, path, Vec::new())?;
            Ok(Some(f(target.as_bytes())))
        }
        Err(rustix::io::Errno::INVAL) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl RootFs {
    /// A root; `/` for the live system.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            fd: Arc::default(),
        }
    }

    /// Where `rel` (below the root) is looked up from: the open root and `rel`, else the
    /// current directory and the root's path joined.
    fn at<'a>(&'a self, rel: &'a Path) -> (BorrowedFd<'a>, Cow<'a, Path>) {
        let fd = self.fd.get_or_init(|| {
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
            rustix::fs::open(&self.root, flags, Mode::empty()).ok()
        });
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        match fd {
            Some(fd) if rel.as_os_str().is_empty() => (fd.as_fd(), Cow::Borrowed(Path::new("."))),
            Some(fd) => (fd.as_fd(), Cow::Borrowed(rel)),
            None => (rustix::fs::CWD, Cow::Owned(self.root.join(rel))),
        }
    }

    /// Is `rel` (below the root, resolved) a symbolic link? Its target if so, `None` if
    /// it is anything else.
    fn link_at(&self, rel: &Path) -> io::Result<Option<PathBuf>> {
        let (dir, rel) = self.at(rel);
        with_link(dir, &rel, |t| PathBuf::from(OsStr::from_bytes(t)))
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

    /// Is this the live system's root (`/`)? There absolute links are followed.
    fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Resolve `rel` (relative to the root) following symlinks inside the root. Returns
    /// the resolved path relative to the root (`sys/devices/pci0000:00/...`). A `..` in
    /// `rel` itself stops at the root; a link that leads out of it is an error.
    pub fn resolve(&self, rel: impl AsRef<Path>) -> Result<PathBuf, FsError> {
        self.resolve_with(rel, &mut KnownDirs::default())
    }

    /// [`RootFs::resolve`], remembering in `known` the paths (relative to the root)
    /// already found not to be symlinks, so that resolving many paths below one tree
    /// (4,096 PCI functions under `sys/devices`) checks each shared prefix only once.
    /// The answer is the same as without `known`, provided the tree does not change.
    pub fn resolve_with(
        &self,
        rel: impl AsRef<Path>,
        known: &mut KnownDirs,
    ) -> Result<PathBuf, FsError> {
        let mut walk = Walk::default();
        walk.push(rel.as_ref().as_os_str().as_bytes());
        self.walk(PathBuf::new(), walk, known)
    }

    /// [`RootFs::resolve_with`] for `name` in `dir`, a directory opened at a resolved
    /// path: the same answer, but the entry is read relative to the open directory, so
    /// that locating the 4,096 links of `sys/bus/pci/devices` costs no walk from `/` each.
    pub fn resolve_in(
        &self,
        dir: &Dir,
        name: &str,
        known: &mut KnownDirs,
    ) -> Result<PathBuf, FsError> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return self.resolve_with(dir.rel.join(name), known);
        }
        let here = || dir.path.join(name);
        // A plain target is resolved as read; any other is walked, which names what is
        // wrong with it.
        let resolved = with_link(&dir.fd, Path::new(name), |target| {
            match self.lexically(&dir.rel, target, known) {
                Some(done) => Ok(done),
                None => {
                    let target = PathBuf::from(OsStr::from_bytes(target));
                    // No path given: text 0 is empty, the link's target text 1.
                    let mut walk = Walk::default();
                    walk.push(&[]);
                    let mut done = dir.rel.clone();
                    self.enter_link(&mut walk, &mut done, here(), target)?;
                    self.walk(done, walk, known)
                }
            }
        });
        match resolved {
            Ok(Some(r)) => r,
            Ok(None) => {
                let rel = dir.rel.join(name);
                known.insert(rel.as_os_str().as_bytes().into());
                Ok(rel)
            }
            Err(e) => Err(FsError::Io {
                path: here(),
                what: "cannot resolve",
                source: e,
            }),
        }
    }

    /// Where the link in `dir` (resolved) to `target` leads, when that is plain: a
    /// relative target whose components are all directories, not links, and do not
    /// climb above the root. The same answer as the walk, which names what is wrong when
    /// it is not plain (`None` here).
    fn lexically(&self, dir: &Path, target: &[u8], known: &mut KnownDirs) -> Option<PathBuf> {
        if target.first() == Some(&b'/') {
            return None;
        }
        let mut done = dir.to_path_buf();
        for c in target.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    if !done.pop() {
                        return None;
                    }
                }
                _ => {
                    done.push(OsStr::from_bytes(c));
                    if known.contains(done.as_os_str().as_bytes()) {
                        continue;
                    }
                    match self.link_at(&done) {
                        Ok(None) => {
                            known.insert(done.as_os_str().as_bytes().into());
                        }
                        _ => return None,
                    }
                }
            }
        }
        Some(done)
    }

    /// The link `here` (full path), found at `done` (its directory, resolved), leads to
    /// `target`: its components are walked next, from the root when it is absolute (the
    /// live system only: elsewhere it leads out of the root), within the loop bound.
    fn enter_link(
        &self,
        walk: &mut Walk,
        done: &mut PathBuf,
        here: PathBuf,
        target: PathBuf,
    ) -> Result<(), FsError> {
        if walk.links.len() >= MAX_LINKS {
            return Err(FsError::Loop { path: here });
        }
        if target.is_absolute() {
            if !self.is_live() {
                return Err(FsError::Escape { link: here, target });
            }
            done.clear();
        }
        walk.follow(here, target);
        Ok(())
    }

    /// Walk what is left of `walk` from `done` (resolved, relative to the root).
    fn walk(
        &self,
        mut done: PathBuf,
        mut walk: Walk,
        known: &mut KnownDirs,
    ) -> Result<PathBuf, FsError> {
        let live = self.is_live();
        while let Some((text, start, end)) = walk.todo.pop() {
            // Text 0 is the path given; text i + 1 the target of link i.
            let from = text.checked_sub(1);
            let c = walk
                .texts
                .get(text)
                .and_then(|t| t.get(start..end))
                .unwrap_or(&[]);
            if c == b".." {
                if !done.pop() && !live {
                    if let Some(i) = from {
                        let (link, target) = walk.link(i);
                        return Err(FsError::Escape { link, target });
                    }
                }
                continue;
            }
            if c == b"." || c.is_empty() {
                continue;
            }
            done.push(OsStr::from_bytes(c));
            if known.contains(done.as_os_str().as_bytes()) {
                continue;
            }
            // One readlink tells a link (its target) from anything else (EINVAL), and a
            // missing component from both.
            match self.link_at(&done) {
                Ok(Some(target)) => {
                    let here = self.root.join(&done);
                    done.pop();
                    self.enter_link(&mut walk, &mut done, here, target)?;
                }
                Ok(None) => {
                    known.insert(done.as_os_str().as_bytes().into());
                }
                Err(source) => {
                    let here = self.root.join(&done);
                    // Name the link the missing part came from, if any.
                    return Err(match from {
                        Some(i) => {
                            let (link, target) = walk.link(i);
                            FsError::Dangling {
                                link,
                                target,
                                source,
                            }
                        }
                        None => FsError::Io {
                            path: here,
                            what: "cannot resolve",
                            source,
                        },
                    });
                }
            }
        }
        Ok(done)
    }

    /// The full path of `rel` once resolved inside the root.
    fn resolved(&self, rel: impl AsRef<Path>) -> Result<PathBuf, FsError> {
        Ok(self.root.join(self.resolve(rel)?))
    }

    /// Read a whole regular file, resolved inside the root, of at most `bound` bytes.
    pub fn read(&self, rel: impl AsRef<Path>, bound: Bound) -> Result<Vec<u8>, FsError> {
        let path = match self.resolved(rel) {
            Ok(p) => p,
            Err(FsError::Io { path, source, .. }) => {
                return Err(FsError::Io {
                    path,
                    what: "cannot read",
                    source,
                })
            }
            Err(e) => return Err(e),
        };
        bounded::read_regular(&path, bound)
    }

    /// Read a text attribute (sysfs, configfs, a small procfs file: one page at most),
    /// trimmed; `None` when it does not exist.
    pub fn read_opt_string(&self, rel: impl AsRef<Path>) -> Result<Option<String>, FsError> {
        match self.read(rel, limits::SYSFS_ATTR) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).trim().to_string())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The length of a file as its metadata says (sysfs `config`: what the kernel
    /// exposes), resolved inside the root.
    pub fn len(&self, rel: impl AsRef<Path>) -> Result<u64, FsError> {
        let p = self.resolved(rel)?;
        std::fs::metadata(&p)
            .map(|m| m.len())
            .map_err(|source| FsError::Io {
                path: p,
                what: "cannot stat",
                source,
            })
    }

    /// Is `rel` a directory (links resolved inside the root)?
    pub fn is_dir(&self, rel: impl AsRef<Path>) -> bool {
        self.resolved(rel)
            .and_then(|p| {
                std::fs::symlink_metadata(&p).map_err(|source| FsError::Io {
                    path: p,
                    what: "cannot stat",
                    source,
                })
            })
            .is_ok_and(|m| m.is_dir())
    }

    /// Is `name` in `dir`, a directory already resolved, a directory itself (not a link
    /// to one), as [`Dir::is_dir`] has it? One `lstat`: `dir` holds no links.
    pub fn is_real_dir(&self, dir: &Path, name: &str) -> bool {
        let path = dir.join(name);
        let (dir, path) = self.at(&path);
        is_dir_at(dir, path.as_ref())
    }

    /// The last component of where the link `rel` points (`driver` -> `nvme`), without
    /// following it; `None` when `rel` is not a link.
    pub fn link_name(&self, rel: impl AsRef<Path>) -> Option<String> {
        let rel = rel.as_ref();
        let parent = self.resolve(rel.parent()?).ok()?;
        let target = std::fs::read_link(self.root.join(parent).join(rel.file_name()?)).ok()?;
        target.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    /// Does `rel` exist (links resolved inside the root)?
    pub fn exists(&self, rel: impl AsRef<Path>) -> bool {
        self.resolve(rel).is_ok()
    }

    /// Names in a directory (links resolved inside the root), sorted; empty when it does
    /// not exist.
    pub fn list(&self, rel: impl AsRef<Path>) -> Result<Vec<String>, FsError> {
        let p = match self.resolved(rel) {
            Ok(p) => p,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
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
        let bytes = self.read(rel, limits::SYSFS_ATTR)?;
        parse_hex_attr(&bytes).ok_or_else(|| FsError::Parse {
            path: self.path(rel),
            content: shorten(&bytes),
            why: "expected a hexadecimal number like 0x8086",
        })
    }

    /// Parse a decimal sysfs value like `16777216`.
    pub fn read_u64(&self, rel: impl AsRef<Path>) -> Result<u64, FsError> {
        let rel = rel.as_ref();
        let bytes = self.read(rel, limits::SYSFS_ATTR)?;
        parse_u64_attr(&bytes).ok_or_else(|| FsError::Parse {
            path: self.path(rel),
            content: shorten(&bytes),
            why: "expected a decimal number",
        })
    }

    /// Open the directory `rel` (relative to the root, symlinks already resolved inside
    /// it) to read many files in it with short lookups.
    pub fn open_dir(&self, rel: impl AsRef<Path>) -> Result<Dir, FsError> {
        let rel = rel.as_ref().to_path_buf();
        let path = self.path(&rel);
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let (dir, below) = self.at(&rel);
        let fd = rustix::fs::openat(dir, below.as_ref(), flags, Mode::empty()).map_err(|e| {
            FsError::Io {
                path: path.clone(),
                what: "cannot open",
                source: e.into(),
            }
        })?;
        Ok(Dir {
            fd,
            path,
            fs: self.clone(),
            rel,
        })
    }
}

/// An open directory inside the root. Files in it are opened relative to it (`openat`),
/// so reading the dozen files of one PCI function costs no walk from `/` each time. The
/// sandbox holds as for [`RootFs`]: a file that is a symbolic link is not followed, only
/// a regular file is read, and never beyond its bound.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// The directory's path (the root joined).
    path: PathBuf,
    /// The root it is in, and its path there: a file that is a link is resolved the
    /// long way ([`RootFs::read`]), so that a link out of the root is named as such.
    fs: RootFs,
    rel: PathBuf,
}

/// What [`Dir::open`] found.
enum Opened {
    /// A regular file and its length.
    File(File, u64),
    /// A symbolic link, to be resolved inside the root.
    Link,
}

impl Dir {
    /// The directory's path, the root included.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the regular file `name` (not following a link, not blocking on a FIFO)
    /// and returns it with its length.
    fn open(&self, name: &str) -> Result<Opened, FsError> {
        let file = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => File::from(fd),
            Err(rustix::io::Errno::LOOP) => return Ok(Opened::Link),
            Err(e) => {
                return Err(FsError::Io {
                    path: self.path.join(name),
                    what: "cannot read",
                    source: e.into(),
                })
            }
        };
        let meta = file.metadata().map_err(|source| FsError::Io {
            path: self.path.join(name),
            what: "cannot stat",
            source,
        })?;
        if !meta.file_type().is_file() {
            return Err(FsError::NotAFile {
                path: self.path.join(name),
                kind: bounded::kind_of(&meta.file_type()),
            });
        }
        Ok(Opened::File(file, meta.len()))
    }

    /// Read `file` to its end with plain `read` calls, at most `bound` bytes. A read that
    /// does not fill the buffer ends the file: sysfs hands an attribute over whole in one
    /// read, and a regular file reads short only at its end.
    fn read_file(
        &self,
        name: &str,
        file: File,
        hint: usize,
        bound: Bound,
    ) -> Result<Vec<u8>, FsError> {
        let mut bytes = Vec::new();
        let len = self.read_file_into(name, file, hint, bound, &mut bytes)?;
        bytes.truncate(len);
        Ok(bytes)
    }

    /// [`Dir::read_file`] into the start of `bytes`, returning the length read. What lies
    /// past it is left as it was, and so is the memory: the 4 KiB config spaces of 4,096
    /// functions read into one buffer touch no new pages and clear none.
    fn read_file_into(
        &self,
        name: &str,
        mut file: File,
        hint: usize,
        bound: Bound,
        bytes: &mut Vec<u8>,
    ) -> Result<usize, FsError> {
        let max = usize::try_from(bound.max).unwrap_or(usize::MAX);
        // What this read may fill: the hint, then twice as much, up to one byte past the
        // bound.
        let mut window = hint.max(64).min(max.saturating_add(1));
        let mut len = 0;
        loop {
            if len == window {
                if len > max {
                    return Err(FsError::TooLarge {
                        path: self.path.join(name),
                        bound,
                    });
                }
                window = (2 * len).min(max.saturating_add(1)).max(len + 1);
            }
            if bytes.len() < window {
                bytes.resize(window, 0);
            }
            match file.read(&mut bytes[len..window]) {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    if len > max {
                        return Err(FsError::TooLarge {
                            path: self.path.join(name),
                            bound,
                        });
                    }
                    if len < window {
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
        Ok(len)
    }

    /// Read a whole sysfs attribute (at most a page).
    pub fn read(&self, name: &str) -> Result<Vec<u8>, FsError> {
        match self.open(name)? {
            Opened::File(file, _) => self.read_file(name, file, 64, limits::SYSFS_ATTR),
            Opened::Link => self.fs.read(self.rel.join(name), limits::SYSFS_ATTR),
        }
    }

    /// Read a whole `config` file (at most the 4 KiB of PCIe config space) and the length
    /// its metadata gives (what sysfs exposes, which an unprivileged read may cut short).
    /// It is read into the start of `bytes`, a buffer kept from one function to the
    /// next: the bytes read are `bytes[..n]` for the `n` returned with the length.
    pub fn read_with_len(&self, name: &str, bytes: &mut Vec<u8>) -> Result<(usize, u64), FsError> {
        let (file, len) = match self.open(name)? {
            Opened::File(file, len) => (file, len),
            Opened::Link => {
                let rel = self.rel.join(name);
                *bytes = self.fs.read(&rel, limits::CONFIG_SPACE)?;
                return Ok((bytes.len(), self.fs.len(&rel)?));
            }
        };
        // One more byte than the length, so that the read that finds the end is the second.
        let hint = usize::try_from(len).unwrap_or(0).clamp(63, 1 << 16) + 1;
        let n = self.read_file_into(name, file, hint, limits::CONFIG_SPACE, bytes)?;
        Ok((n, len))
    }

    /// Parse a hex sysfs value like `0x8086`.
    pub fn read_hex(&self, name: &str) -> Result<u32, FsError> {
        let bytes = self.read(name)?;
        parse_hex_attr(&bytes).ok_or_else(|| FsError::Parse {
            path: self.path.join(name),
            content: shorten(&bytes),
            why: "expected a hexadecimal number like 0x8086",
        })
    }

    /// Parse a decimal sysfs value like `16777216`.
    pub fn read_u64(&self, name: &str) -> Result<u64, FsError> {
        let bytes = self.read(name)?;
        parse_u64_attr(&bytes).ok_or_else(|| FsError::Parse {
            path: self.path.join(name),
            content: shorten(&bytes),
            why: "expected a decimal number",
        })
    }

    /// Is `name` a directory (a link is not followed)?
    pub fn is_dir(&self, name: &str) -> bool {
        is_dir_at(&self.fd, name)
    }

    /// The target of the symlink `name`, if it is one.
    pub fn read_link(&self, name: &str) -> Option<PathBuf> {
        rustix::fs::readlinkat(&self.fd, name, Vec::new())
            .ok()
            .map(|t| PathBuf::from(OsString::from_vec(t.into_bytes())))
    }
}

/// Is `path` (relative to `dir`) a directory itself, not a link to one (`lstat`)?
fn is_dir_at(dir: impl rustix::fd::AsFd, path: impl rustix::path::Arg) -> bool {
    rustix::fs::statat(dir, path, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
    })
}

/// A hexadecimal sysfs value (`vendor`, `device`, `class`: `0x8086`), trimmed.
pub fn parse_hex_attr(bytes: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(bytes).ok()?;
    let t = text.trim();
    let digits = t.strip_prefix("0x").unwrap_or(t);
    u32::from_str_radix(digits, 16).ok()
}

/// A decimal sysfs value (p2pmem `size`, `available`, `published`), trimmed.
pub fn parse_u64_attr(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// The start of a file's content for an error message.
fn shorten(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(160)])
        .trim()
        .chars()
        .take(40)
        .collect()
}

/// A resolution in progress: the components still to walk, as byte ranges of the path
/// given and of the targets of the links met on the way (no allocation per component).
#[derive(Default)]
struct Walk {
    /// The path given, then each followed link's target.
    texts: Vec<Vec<u8>>,
    /// The links followed (their full paths), in order: link `i`'s target is text `i + 1`.
    links: Vec<PathBuf>,
    /// The components still to walk, the next one last: (text, start, end).
    todo: Vec<(usize, usize, usize)>,
}

impl Walk {
    /// Queue the components of `text` to be walked before anything queued so far.
    fn push(&mut self, text: &[u8]) {
        let t = self.texts.len();
        // `todo` is a stack: push in reverse so the first component is popped first.
        let mut end = text.len();
        loop {
            let start = text[..end]
                .iter()
                .rposition(|&b| b == b'/')
                .map_or(0, |slash| slash + 1);
            if start < end {
                self.todo.push((t, start, end));
            }
            if start == 0 {
                break;
            }
            end = start - 1;
        }
        self.texts.push(text.to_vec());
    }

    /// Follow the link `link` to `target`: its components are walked next.
    fn follow(&mut self, link: PathBuf, target: PathBuf) {
        self.push(target.as_os_str().as_bytes());
        self.links.push(link);
    }

    /// Link `i` and its target, for an error that names them.
    fn link(&self, i: usize) -> (PathBuf, PathBuf) {
        let target = self.texts.get(i + 1).map_or(&[][..], Vec::as_slice);
        (
            self.links.get(i).cloned().unwrap_or_default(),
            PathBuf::from(OsStr::from_bytes(target)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolves_relative_links_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = RootFs::new(d.path());
        std::fs::create_dir_all(r.path("sys/devices/pci0000:00/0000:00:04.0")).unwrap();
        std::fs::create_dir_all(r.path("sys/bus/pci/devices")).unwrap();
        symlink(
            "../../../devices/pci0000:00/0000:00:04.0",
            r.path("sys/bus/pci/devices/0000:00:04.0"),
        )
        .unwrap();
        assert_eq!(
            r.resolve("sys/bus/pci/devices/0000:00:04.0").unwrap(),
            PathBuf::from("sys/devices/pci0000:00/0000:00:04.0")
        );
        // `..` in the asked path never climbs above the root.
        assert_eq!(
            r.resolve("../../sys/devices").unwrap(),
            PathBuf::from("sys/devices")
        );
    }

    #[test]
    fn a_link_out_of_the_root_is_an_error_naming_the_link() {
        let d = tempfile::tempdir().unwrap();
        let r = RootFs::new(d.path());
        std::fs::create_dir_all(r.path("sys/devices/pci0000:00")).unwrap();
        std::fs::write(r.path("sys/devices/pci0000:00/config"), b"ok").unwrap();
        // Absolute: it would read the host's file, not the capture's.
        symlink("/sys/devices/pci0000:00", r.path("sys/abs")).unwrap();
        // Relative, climbing above the root (and then back into it, by name).
        let root_name = d.path().file_name().unwrap().to_string_lossy().into_owned();
        symlink(format!("../../{root_name}/sys"), r.path("sys/climb")).unwrap();
        symlink("/dev/zero", r.path("sys/devices/pci0000:00/zero")).unwrap();
        for (asked, link) in [
            ("sys/abs/config", "sys/abs"),
            ("sys/climb/devices", "sys/climb"),
            ("sys/devices/pci0000:00/zero", "sys/devices/pci0000:00/zero"),
        ] {
            let e = r.read(asked, limits::SYSFS_ATTR).unwrap_err();
            assert!(matches!(e, FsError::Escape { .. }), "{asked}: {e}");
            let text = e.to_string();
            assert!(
                text.contains(&r.path(link).display().to_string())
                    && text.contains("leads out of the root"),
                "{text}"
            );
        }
        assert!(!r.exists("sys/abs"));
        assert!(r.list("sys/abs").is_err());
        // Inside the root, a climb that stays inside is fine.
        symlink("../sys/devices/pci0000:00", r.path("sys/inside")).unwrap();
        assert_eq!(
            r.read("sys/inside/config", limits::SYSFS_ATTR).unwrap(),
            b"ok"
        );
    }

    /// `resolve_in` (an entry of an open directory) answers as `resolve_with` does for
    /// the same path, with the same known set: for a plain entry, links inside, out of
    /// the root (absolute and climbing), dangling, looping, chained, and missing.
    #[test]
    fn resolving_in_an_open_directory_answers_as_the_long_way() {
        let d = tempfile::tempdir().unwrap();
        let r = RootFs::new(d.path());
        std::fs::create_dir_all(r.path("sys/devices/pci0000:00/0000:00:04.0")).unwrap();
        std::fs::create_dir_all(r.path("sys/bus/pci/devices/plain")).unwrap();
        let dev = |n: &str| r.path(format!("sys/bus/pci/devices/{n}"));
        symlink("../../../devices/pci0000:00/0000:00:04.0", dev("inside")).unwrap();
        symlink("/sys/devices", dev("absolute")).unwrap();
        symlink("../../../../../x", dev("climbs")).unwrap();
        symlink("../../../devices/none", dev("dangling")).unwrap();
        symlink("loop2", dev("loop1")).unwrap();
        symlink("loop1", dev("loop2")).unwrap();
        symlink("inside", dev("chained")).unwrap();
        symlink(
            "../../../devices/pci0000:00/../pci0000:00/.//0000:00:04.0/",
            dev("dots"),
        )
        .unwrap();
        // A link at the end of the way, one on it, a file on it and at its end, a
        // target too long to read at once.
        symlink("0000:00:04.0", r.path("sys/devices/pci0000:00/last")).unwrap();
        symlink("../devices/pci0000:00", r.path("sys/middle")).unwrap();
        std::fs::write(r.path("sys/devices/pci0000:00/file"), "x").unwrap();
        symlink("../../../devices/pci0000:00/last", dev("to_last")).unwrap();
        symlink("../../../middle/0000:00:04.0", dev("via_middle")).unwrap();
        symlink("../../../devices/pci0000:00/file", dev("to_file")).unwrap();
        symlink("../../../devices/pci0000:00/file/x", dev("through_file")).unwrap();
        let long = format!(
            "../../..{}/devices/pci0000:00/0000:00:04.0",
            "/.".repeat(150)
        );
        symlink(&long, dev("long")).unwrap();
        let dir = r
            .open_dir(r.resolve("sys/bus/pci/devices").unwrap())
            .unwrap();
        let names = [
            "plain",
            "inside",
            "absolute",
            "climbs",
            "dangling",
            "loop1",
            "chained",
            "dots",
            "missing",
            "..",
            ".",
            "to_last",
            "via_middle",
            "to_file",
            "through_file",
            "long",
        ];
        let mut known_in = KnownDirs::default();
        let mut known_long = KnownDirs::default();
        // Twice: the second time with what the first found known.
        for name in names.iter().chain(&names) {
            let rel = format!("sys/bus/pci/devices/{name}");
            let long = r.resolve_with(&rel, &mut known_long);
            let short = r.resolve_in(&dir, name, &mut known_in);
            assert_eq!(
                format!("{short:?}"),
                format!("{long:?}"),
                "{name}: in the directory {short:?}, the long way {long:?}"
            );
        }
        assert_eq!(
            r.resolve_in(&dir, "dots", &mut KnownDirs::default())
                .unwrap(),
            PathBuf::from("sys/devices/pci0000:00/0000:00:04.0")
        );
    }

    #[test]
    fn the_live_root_follows_absolute_links() {
        let r = RootFs::new("/");
        // `/proc/self` is a link; `/proc/self/root` an absolute one back to `/`.
        assert!(r.resolve("proc/self/root/proc").is_ok());
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
        assert_eq!(parse_hex_attr(b"0x10de\n"), Some(0x10de));
        assert_eq!(parse_u64_attr(b" 4096\n"), Some(4096));
        assert_eq!(parse_hex_attr(b"\xff"), None);
        assert_eq!(r.read_hex("vendor").unwrap(), 0x8086);
        assert_eq!(r.read_opt_string("missing").unwrap(), None);
    }
}
