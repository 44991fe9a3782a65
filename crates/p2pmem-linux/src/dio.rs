//! O_DIRECT I/O on a block device or regular file into and out of any [`DmaBuffer`],
//! host memory or p2pmem.
//!
//! O_DIRECT bypasses the page cache, so the device DMAs straight into the buffer: with a
//! p2pmem buffer that is a peer-to-peer transfer, which the kernel may refuse per
//! (provider, client) pair (EREMOTEIO on 6.0–6.16, EINVAL from 6.17) or per queue
//! (EREMOTEIO when the queue lacks P2PDMA). Requests must be aligned: buffer address,
//! length and file offset multiples of the logical block size (the memory alignment may
//! be looser where statx reports it).

use crate::p2pbuf::{DmaBuffer, Location, RangeError};
use crate::sys;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};
use rustix::io::Errno;
use serde::Serialize;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// How to open the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `O_RDONLY`.
    Read,
    /// `O_RDWR`.
    ReadWrite,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read-only",
            Self::ReadWrite => "read-write",
        })
    }
}

/// What kind of file was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectKind {
    /// A block device (`/dev/nvme0n1`, `/dev/loop0`).
    BlockDevice,
    /// A regular file on a file system with O_DIRECT.
    RegularFile,
}

/// The alignment O_DIRECT requests must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Alignment {
    /// File offsets and lengths: the logical block size (`BLKSSZGET`) or statx
    /// `dio_offset_align`.
    pub offset_align: u32,
    /// Buffer addresses: statx `dio_mem_align` where reported, else `offset_align`.
    pub mem_align: u32,
}

/// Which rule a request breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Misalignment {
    /// Buffer address.
    #[error("buffer address {addr:#x} is not a multiple of {align}")]
    BufferAddress {
        /// Address.
        addr: usize,
        /// Required alignment.
        align: u32,
    },
    /// Length.
    #[error("length {len} is not a multiple of {align}")]
    Length {
        /// Length.
        len: usize,
        /// Required alignment.
        align: u32,
    },
    /// File offset.
    #[error("file offset {offset} is not a multiple of {align}")]
    FileOffset {
        /// Offset.
        offset: u64,
        /// Required alignment.
        align: u32,
    },
}

/// Checks an O_DIRECT request against `align`. An alignment of 0 counts as 1.
pub fn check_alignment(
    addr: usize,
    len: usize,
    file_off: u64,
    align: Alignment,
) -> Result<(), Misalignment> {
    let mem = align.mem_align.max(1);
    let off = align.offset_align.max(1);
    if !addr.is_multiple_of(mem as usize) {
        return Err(Misalignment::BufferAddress { addr, align: mem });
    }
    if !len.is_multiple_of(off as usize) {
        return Err(Misalignment::Length { len, align: off });
    }
    if !file_off.is_multiple_of(u64::from(off)) {
        return Err(Misalignment::FileOffset {
            offset: file_off,
            align: off,
        });
    }
    Ok(())
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `pread`.
    Read,
    /// `pwrite`.
    Write,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "pread",
            Self::Write => "pwrite",
        })
    }
}

/// An O_DIRECT failure, with everything needed to act on it.
#[derive(Debug, thiserror::Error)]
pub enum DioError {
    /// `open(O_DIRECT)` failed.
    #[error("cannot open {path} {access} with O_DIRECT ({errno}): {hint}")]
    Open {
        /// The path.
        path: PathBuf,
        /// Requested access.
        access: Access,
        /// Errno name.
        errno: String,
        /// What it means.
        hint: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Neither a block device nor a regular file.
    #[error("{path} is a {kind}: O_DIRECT needs a block device or a regular file")]
    NotBlockOrFile {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// fstat/ioctl/statx for the block size failed.
    #[error("cannot query the logical block size of {path} ({errno})")]
    BlockSize {
        /// The path.
        path: PathBuf,
        /// Errno name.
        errno: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The request breaks O_DIRECT alignment; nothing was sent to the kernel.
    #[error("O_DIRECT {op} of {len} bytes at offset {file_off} of {path} is misaligned")]
    Misaligned {
        /// Which call.
        op: Op,
        /// The path.
        path: PathBuf,
        /// File offset.
        file_off: u64,
        /// Length.
        len: usize,
        /// The broken rule.
        #[source]
        source: Misalignment,
    },
    /// The buffer range does not fit the buffer.
    #[error("O_DIRECT {op} of {len} bytes at offset {file_off} of {path}: bad buffer range")]
    BufferRange {
        /// Which call.
        op: Op,
        /// The path.
        path: PathBuf,
        /// File offset.
        file_off: u64,
        /// Length.
        len: usize,
        /// The range problem.
        #[source]
        source: RangeError,
    },
    /// The kernel failed the transfer.
    #[error("O_DIRECT {op} of {len} bytes at offset {file_off} of {path} with a buffer in {location} failed ({errno}): {hint}")]
    Io {
        /// Which call.
        op: Op,
        /// The path.
        path: PathBuf,
        /// File offset.
        file_off: u64,
        /// Length.
        len: usize,
        /// Where the buffer lives.
        location: Location,
        /// Errno name.
        errno: String,
        /// What it means (basic; callers may add a model-based explanation).
        hint: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
}

impl DioError {
    /// The errno of a failed transfer or open, if there was one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Open { source, .. }
            | Self::BlockSize { source, .. }
            | Self::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

fn open_hint(errno: Option<i32>) -> &'static str {
    match errno.map(Errno::from_raw_os_error) {
        Some(Errno::NOENT) => "no such file or device",
        Some(Errno::ACCESS | Errno::PERM) => {
            "permission denied; block devices need root or the disk group"
        }
        Some(Errno::INVAL) => {
            "the file system does not support O_DIRECT (tmpfs before 6.6, for example)"
        }
        Some(Errno::ROFS) => "read-only file system or device",
        Some(Errno::BUSY) => "the device is held exclusively by someone else",
        Some(Errno::NXIO | Errno::NODEV) => "the device is gone or has no medium",
        _ => "unexpected error",
    }
}

/// A basic explanation of a transfer errno (kernel-p2pdma §5.6).
pub fn io_hint(errno: Option<i32>, location: Location) -> &'static str {
    let p2p = matches!(location, Location::P2p(_));
    match (errno.map(Errno::from_raw_os_error), p2p) {
        (Some(Errno::REMOTEIO), true) => {
            "the kernel refused peer-to-peer DMA: this device cannot reach the buffer's provider \
             (no shared upstream bridge and no whitelisted host bridge, or ACS redirect on the path; \
             kernels 6.0-6.16 report a refused pair as EREMOTEIO), or this block queue does not \
             support P2PDMA (only nvme-pci namespaces, and on recent kernels md raid0/1/10 and \
             nvme-rdma, do); see the kernel log"
        }
        (Some(Errno::REMOTEIO), false) => "remote I/O error reported by the device or driver",
        (Some(Errno::INVAL), true) => {
            "the request is misaligned for O_DIRECT, or (kernel 6.17+) the kernel refused \
             peer-to-peer DMA between this device and the buffer's provider; see the kernel log"
        }
        (Some(Errno::INVAL), false) => {
            "O_DIRECT rejected the request: buffer address, length or offset not aligned to the \
             device's requirements, or the file system does not support O_DIRECT"
        }
        (Some(Errno::OPNOTSUPP), true) => "this I/O path cannot pin p2pmem pages (long-term pins are never allowed)",
        (Some(Errno::FAULT), true) => {
            "the p2pmem mapping is no longer valid (provider unbound or removed?)"
        }
        (Some(Errno::FAULT), false) => "the buffer is not mapped",
        (Some(Errno::IO), _) => "the device reported an I/O error; see the kernel log",
        // BLK_STS_MEDIUM: an NVMe unrecovered read error or write fault (verified in the
        // lab on 6.12 with QEMU's blkdebug behind the drive).
        (Some(Errno::NODATA), _) => {
            "the device reported a medium error: it cannot read or write the data at this offset (an unrecovered read error or write fault); see the kernel log"
        }
        (Some(Errno::NOSPC), _) => "no space left on the device or file system",
        (Some(Errno::ROFS | Errno::PERM | Errno::BADF), _) => "the file is not open for writing or is read-only",
        (Some(Errno::NXIO | Errno::NODEV), _) => "the device is gone",
        _ => "unexpected error",
    }
}

/// A block device or regular file opened with O_DIRECT.
#[derive(Debug)]
pub struct DirectFile {
    fd: OwnedFd,
    path: PathBuf,
    kind: DirectKind,
    align: Alignment,
}

impl DirectFile {
    /// Opens `path` with `O_DIRECT | O_CLOEXEC` and learns its alignment: `BLKSSZGET` for
    /// block devices, statx `STATX_DIOALIGN` for regular files (512 when the kernel
    /// does not report it).
    pub fn open(path: &Path, access: Access) -> Result<Self, DioError> {
        let mode = match access {
            Access::Read => OFlags::RDONLY,
            Access::ReadWrite => OFlags::RDWR,
        };
        let fd = rustix::fs::open(path, mode | OFlags::DIRECT | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| DioError::Open {
                path: path.to_path_buf(),
                access,
                errno: sys::errno_label(e.raw_os_error()),
                hint: open_hint(Some(e.raw_os_error())),
                source: e.into(),
            })?;
        let size_err = |e: Errno| DioError::BlockSize {
            path: path.to_path_buf(),
            errno: sys::errno_label(e.raw_os_error()),
            source: e.into(),
        };
        let st = rustix::fs::fstat(&fd).map_err(size_err)?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let (kind, align) = match ft {
            FileType::BlockDevice => {
                let lbs = rustix::fs::ioctl_blksszget(&fd).map_err(size_err)?;
                let mem = dio_align(&fd).map_or(lbs, |a| a.mem_align);
                (
                    DirectKind::BlockDevice,
                    Alignment {
                        offset_align: lbs,
                        mem_align: mem,
                    },
                )
            }
            FileType::RegularFile => (
                DirectKind::RegularFile,
                dio_align(&fd).unwrap_or(Alignment {
                    offset_align: 512,
                    mem_align: 512,
                }),
            ),
            other => {
                return Err(DioError::NotBlockOrFile {
                    path: path.to_path_buf(),
                    kind: match other {
                        FileType::Directory => "directory",
                        FileType::CharacterDevice => "character device",
                        FileType::Fifo => "FIFO",
                        FileType::Socket => "socket",
                        _ => "file of another type",
                    },
                })
            }
        };
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            kind,
            align,
        })
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Block device or regular file.
    pub fn kind(&self) -> DirectKind {
        self.kind
    }

    /// The alignment requests must keep.
    pub fn alignment(&self) -> Alignment {
        self.align
    }

    /// The logical block size (offset/length alignment).
    pub fn logical_block_size(&self) -> u32 {
        self.align.offset_align
    }

    /// O_DIRECT `pread` of `len` bytes at `file_off` into `buf[buf_off..]`. The buffer
    /// goes to the kernel as a raw pointer (it may be device memory). Returns the byte
    /// count, which may be short (end of file, or a buffer mixing page kinds).
    pub fn pread_into(
        &self,
        buf: &mut dyn DmaBuffer,
        buf_off: usize,
        len: usize,
        file_off: u64,
    ) -> Result<usize, DioError> {
        let location = buf.location();
        let io = buf
            .io_mut(buf_off, len)
            .map_err(|source| DioError::BufferRange {
                op: Op::Read,
                path: self.path.clone(),
                file_off,
                len,
                source,
            })?;
        self.check(Op::Read, io.addr(), len, file_off)?;
        sys::pread(self.fd.as_fd(), io, file_off)
            .map_err(|e| self.io_error(Op::Read, file_off, len, location, e))
    }

    /// O_DIRECT `pwrite` of `len` bytes from `buf[buf_off..]` at `file_off`.
    pub fn pwrite_from(
        &self,
        buf: &dyn DmaBuffer,
        buf_off: usize,
        len: usize,
        file_off: u64,
    ) -> Result<usize, DioError> {
        let location = buf.location();
        let io = buf
            .io(buf_off, len)
            .map_err(|source| DioError::BufferRange {
                op: Op::Write,
                path: self.path.clone(),
                file_off,
                len,
                source,
            })?;
        self.check(Op::Write, io.addr(), len, file_off)?;
        sys::pwrite(self.fd.as_fd(), io, file_off)
            .map_err(|e| self.io_error(Op::Write, file_off, len, location, e))
    }

    fn check(&self, op: Op, addr: usize, len: usize, file_off: u64) -> Result<(), DioError> {
        check_alignment(addr, len, file_off, self.align).map_err(|source| DioError::Misaligned {
            op,
            path: self.path.clone(),
            file_off,
            len,
            source,
        })
    }

    fn io_error(
        &self,
        op: Op,
        file_off: u64,
        len: usize,
        location: Location,
        source: io::Error,
    ) -> DioError {
        DioError::Io {
            op,
            path: self.path.clone(),
            file_off,
            len,
            location,
            errno: sys::io_error_label(&source),
            hint: io_hint(source.raw_os_error(), location),
            source,
        }
    }
}

/// statx `STATX_DIOALIGN` (Linux 6.1+ for files, 6.11+ for block devices); `None` when
/// not reported or reported as 0.
fn dio_align(fd: &OwnedFd) -> Option<Alignment> {
    let stx = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN).ok()?;
    if stx.stx_mask & StatxFlags::DIOALIGN.bits() == 0 || stx.stx_dio_offset_align == 0 {
        return None;
    }
    Some(Alignment {
        offset_align: stx.stx_dio_offset_align,
        mem_align: stx.stx_dio_mem_align.max(1),
    })
}

#[cfg(test)]
mod tests;
