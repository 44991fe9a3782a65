//! The two ends of a copy: a block device or a regular file opened with O_DIRECT, with
//! its size, its alignment and what it is on disk (for the overlap check).
//!
//! [`DirectFile`] checks the file and learns the alignment; since it does not lend its
//! descriptor, the copy opens its own (same path and flags, plus `O_EXCL` on a
//! destination block device) and checks with `fstat` that both name the same object.

use crate::dio::{io_hint, Access, Alignment, DioError, DirectFile, DirectKind};
use crate::p2pbuf::Location;

/// The hint of a transfer to or from a block device whose capacity dropped to 0 after it
/// was opened ([`Endpoint::vanished`]).
pub const DEVICE_GONE: &str =
    "the device is gone: its capacity is now 0, so it was removed or its controller failed";
use crate::sys;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{FileType, Mode, OFlags, SeekFrom};
use rustix::io::Errno;
use std::io;
use std::path::{Path, PathBuf};

/// Why an endpoint could not be opened, or may not be written: the errors `copy` and
/// `bench` share before any I/O.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Opening with O_DIRECT failed.
    #[error(transparent)]
    Open(#[from] DioError),
    /// The destination file could not be created.
    #[error("cannot create {path} ({errno})")]
    Create {
        /// The path.
        path: PathBuf,
        /// Errno name.
        errno: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// `stat`/`open`/`fstat`/`lseek` on the path failed.
    #[error("cannot open or inspect {path} ({errno})")]
    Stat {
        /// The path.
        path: PathBuf,
        /// Errno name.
        errno: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The path changed type between two opens.
    #[error("{0} changed while it was being opened")]
    Changed(PathBuf),
    /// The device to write is in use.
    #[error("refusing to write to {path}: {why} (--force overrides)")]
    InUse {
        /// The device.
        path: PathBuf,
        /// Who holds it.
        why: String,
    },
}

/// A device number split into major and minor.
pub type DevNo = (u32, u32);

/// What an endpoint is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ident {
    /// A block device.
    Block {
        /// Its device number.
        rdev: DevNo,
    },
    /// A regular file.
    File {
        /// The device of its file system.
        dev: DevNo,
        /// Its inode.
        ino: u64,
    },
}

/// One end of a copy, open for O_DIRECT.
#[derive(Debug)]
pub struct Endpoint {
    path: PathBuf,
    kind: DirectKind,
    align: Alignment,
    size: u64,
    ident: Ident,
    created: bool,
    fd: OwnedFd,
}

fn split_dev(dev: u64) -> DevNo {
    (rustix::fs::major(dev), rustix::fs::minor(dev))
}

/// A failed `stat`-like call on `path`.
pub(crate) fn stat_error(path: &Path, e: Errno) -> EndpointError {
    EndpointError::Stat {
        path: path.to_path_buf(),
        errno: sys::errno_label(e.raw_os_error()),
        source: e.into(),
    }
}

impl Endpoint {
    /// Opens the source read-only.
    pub fn open_source(path: &Path) -> Result<Self, EndpointError> {
        Self::open(path, Access::Read, false, false)
    }

    /// Opens the destination read-write. A missing path becomes a new regular file. A
    /// block device is opened with `O_EXCL` when `exclusive`, so that the kernel refuses
    /// (EBUSY) a device that is mounted or claimed by md, dm, swap or another exclusive
    /// opener, and nobody can claim it while the copy runs.
    pub fn open_destination(path: &Path, exclusive: bool) -> Result<Self, EndpointError> {
        let created = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(source) => {
                return Err(EndpointError::Create {
                    path: path.to_path_buf(),
                    errno: sys::io_error_label(&source),
                    source,
                })
            }
        };
        Self::open(path, Access::ReadWrite, exclusive, created)
    }

    fn open(
        path: &Path,
        access: Access,
        exclusive: bool,
        created: bool,
    ) -> Result<Self, EndpointError> {
        let probe = DirectFile::open(path, access)?;
        let (kind, align) = (probe.kind(), probe.alignment());
        drop(probe);
        let mut flags = OFlags::DIRECT | OFlags::CLOEXEC;
        flags |= match access {
            Access::Read => OFlags::RDONLY,
            Access::ReadWrite => OFlags::RDWR,
        };
        if exclusive && kind == DirectKind::BlockDevice {
            flags |= OFlags::EXCL;
        }
        let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| {
            if e == Errno::BUSY {
                EndpointError::InUse {
                    path: path.to_path_buf(),
                    why: "the kernel refused an exclusive open (EBUSY): it is mounted, swap, \
                          part of md/dm/LVM, or held open exclusively by another program"
                        .to_string(),
                }
            } else {
                stat_error(path, e)
            }
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| stat_error(path, e))?;
        let ident = match FileType::from_raw_mode(st.st_mode) {
            FileType::BlockDevice if kind == DirectKind::BlockDevice => Ident::Block {
                rdev: split_dev(st.st_rdev),
            },
            FileType::RegularFile if kind == DirectKind::RegularFile => Ident::File {
                dev: split_dev(st.st_dev),
                ino: st.st_ino,
            },
            _ => return Err(EndpointError::Changed(path.to_path_buf())),
        };
        let size = match kind {
            DirectKind::RegularFile => u64::try_from(st.st_size).unwrap_or(0),
            DirectKind::BlockDevice => {
                rustix::fs::seek(&fd, SeekFrom::End(0)).map_err(|e| stat_error(path, e))?
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            kind,
            align,
            size,
            ident,
            created,
            fd,
        })
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Block device or regular file.
    pub fn kind(&self) -> DirectKind {
        self.kind
    }

    /// O_DIRECT alignment.
    pub fn alignment(&self) -> Alignment {
        self.align
    }

    /// Size in bytes when opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether a block device has gone away since it was opened: the kernel sets the
    /// capacity of a removed disk to 0, and its I/O then fails with ENOSPC (writes) or
    /// ends short (reads). Always `false` for a regular file.
    pub fn vanished(&self) -> bool {
        self.kind == DirectKind::BlockDevice
            && self.size > 0
            && rustix::fs::seek(&self.fd, SeekFrom::End(0)).is_ok_and(|end| end == 0)
    }

    /// What a failed transfer on this endpoint means: `DEVICE_GONE` when the disk went
    /// away (whatever errno that produced), else [`io_hint`]'s reading of the errno.
    pub fn io_hint(&self, errno: Option<i32>, location: Location) -> &'static str {
        if self.vanished() {
            DEVICE_GONE
        } else {
            io_hint(errno, location)
        }
    }

    /// What it is on disk.
    pub fn ident(&self) -> Ident {
        self.ident
    }

    /// Whether the destination file was created by this open.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The block device that does the I/O: the device itself, or the file system's
    /// device for a regular file.
    pub fn block_dev(&self) -> DevNo {
        match self.ident {
            Ident::Block { rdev } => rdev,
            Ident::File { dev, .. } => dev,
        }
    }

    /// The descriptor, for the I/O queue.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
