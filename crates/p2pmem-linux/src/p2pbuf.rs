//! DMA buffers: p2pmem (PCI device memory mapped from a provider's
//! `p2pmem/allocate`) and page-aligned host memory, behind one [`DmaBuffer`] trait, so
//! that I/O code does not care where the bytes live.
//!
//! Each `mmap` of `allocate` makes one new allocation from the provider's pool (kernel
//! 6.2+): the pool must supply one contiguous chunk of the page-rounded length. Device
//! memory is never a Rust slice: the CPU reaches it only through volatile copies, and the
//! kernel through a raw pointer.

pub use crate::sys::Pages;
use crate::sys::{self, AccessFault, HostAlloc, MmapRegion, RawIo, RawIoMut};
use p2pmem_model::Bdf;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use std::io;
use std::path::{Path, PathBuf};

pub use p2pmem_wire::copy::Location;

/// A copy range that does not fit the buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "range of {len} bytes at offset {offset} does not fit the {buf_len}-byte buffer in {location}"
)]
pub struct RangeError {
    /// Requested start.
    pub offset: usize,
    /// Requested length.
    pub len: usize,
    /// The buffer's length.
    pub buf_len: usize,
    /// The buffer's location.
    pub location: Location,
}

/// Why a CPU access to a buffer ([`DmaBuffer::copy_from_host`],
/// [`DmaBuffer::copy_to_host`], [`DmaBuffer::fill`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum CpuAccessError {
    /// The range does not fit the buffer; nothing was touched.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// The mapping's device memory is gone: the access raised SIGBUS (in the guard
    /// process, see [`P2pBuffer`]). Nothing was copied; every later CPU access to this
    /// buffer fails the same way, and kernel I/O into it fails with an errno.
    #[error(
        "the p2pmem of {provider} mapped from {path} is gone: a CPU access to it raised SIGBUS. {}",
        if *allocate_present {
            "The file still exists, so the provider was unbound and bound again (or its pages \
             were revoked): this mapping is dead; map the provider again"
        } else {
            "The file no longer exists: the provider was unbound, its driver unloaded or the \
             device removed"
        }
    )]
    DeviceMemoryGone {
        /// The provider.
        provider: Bdf,
        /// The `allocate` file the buffer mapped.
        path: PathBuf,
        /// Whether `allocate` existed when the fault was seen.
        allocate_present: bool,
    },
    /// The guard process ended in another way than success or SIGBUS (a foreign signal,
    /// for example); whether the access completed is unknown.
    #[error("a CPU access to the p2pmem of {provider} ({path}) did not complete: its guard process {status}")]
    Guard {
        /// The provider.
        provider: Bdf,
        /// The `allocate` file.
        path: PathBuf,
        /// `killed by SIGSEGV`, `exited with status N`, ...
        status: String,
    },
    /// The guard process could not be started or waited for (`mmap` of the bounce
    /// buffer, `fork`, `waitpid`).
    #[error("cannot run a CPU access to the p2pmem of {provider} ({path}) in a guard process: {call} failed ({errno})")]
    GuardSetup {
        /// The provider.
        provider: Bdf,
        /// The `allocate` file.
        path: PathBuf,
        /// The system call.
        call: &'static str,
        /// Errno name.
        errno: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
}

/// A buffer that O_DIRECT I/O can target, wherever it lives. `Send`: each job of a
/// bench moves its buffer (inside its queue) to the job's thread.
pub trait DmaBuffer: Send {
    /// Start address, for the kernel and for alignment checks.
    fn as_ptr(&self) -> *const u8;
    /// Start address, for the kernel.
    fn as_mut_ptr(&mut self) -> *mut u8;
    /// Usable length in bytes.
    fn len(&self) -> usize;
    /// Whether the buffer has no usable bytes.
    fn is_empty(&self) -> bool;
    /// Where the bytes live.
    fn location(&self) -> Location;
    /// Copies `src` into the buffer at `offset`.
    fn copy_from_host(&mut self, offset: usize, src: &[u8]) -> Result<(), CpuAccessError>;
    /// Copies from the buffer at `offset` into `dst`.
    fn copy_to_host(&self, offset: usize, dst: &mut [u8]) -> Result<(), CpuAccessError>;
    /// Sets every byte to `byte`.
    fn fill(&mut self, byte: u8) -> Result<(), CpuAccessError>;
    /// The range `[offset, offset+len)` for the kernel to write into (a `pread`).
    fn io_mut(&mut self, offset: usize, len: usize) -> Result<RawIoMut<'_>, RangeError>;
    /// The range `[offset, offset+len)` for the kernel to read from (a `pwrite`).
    fn io(&self, offset: usize, len: usize) -> Result<RawIo<'_>, RangeError>;
}

// ---------------------------------------------------------------------------------
// P2P buffers
// ---------------------------------------------------------------------------------

/// Why a p2pmem buffer could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum P2pBufferError {
    /// A zero-byte mapping was asked for.
    #[error("cannot map 0 bytes of {path}")]
    ZeroLength {
        /// The `allocate` file.
        path: PathBuf,
    },
    /// The requested length overflows when rounded to pages.
    #[error("cannot map {len} bytes of {path}: the length overflows when rounded to pages")]
    TooLong {
        /// The `allocate` file.
        path: PathBuf,
        /// Requested length.
        len: usize,
    },
    /// `allocate` is missing.
    #[error(
        "{path} does not exist: {provider} {}",
        if *provider_present {
            "has no p2pmem pool (not a provider, kernel before 6.2, or CONFIG_PCI_P2PDMA off)"
        } else {
            "has no sysfs directory here (no such PCI device)"
        }
    )]
    NoAllocate {
        /// The `allocate` file.
        path: PathBuf,
        /// The provider.
        provider: Bdf,
        /// Whether the provider's sysfs directory exists.
        provider_present: bool,
        /// The system error (ENOENT).
        #[source]
        source: io::Error,
    },
    /// `allocate` is not a regular file (a directory, a device, ...).
    #[error("{path} is a {kind}, not the kernel's p2pmem allocate attribute")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// `allocate` is a regular file too small for the mapping: not the kernel's attribute
    /// (which reports a dummy size of 1 TiB) but a capture or a placeholder. Mapping it
    /// would raise SIGBUS on the first touch.
    #[error(
        "{path} is a {size}-byte regular file, smaller than the {len}-byte mapping: not the kernel's \
         allocate attribute (which reports 1 TiB) but a captured placeholder; refusing to map it"
    )]
    Placeholder {
        /// The path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Page-rounded mapping length.
        len: usize,
    },
    /// `open(allocate, O_RDWR)` failed.
    #[error("cannot open {path} read-write ({errno}): {hint}")]
    Open {
        /// The path.
        path: PathBuf,
        /// Errno name.
        errno: String,
        /// What it means here.
        hint: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the `mmap`: this is the kernel's answer, not a setup problem.
    #[error("mmap of {len} bytes of {path} failed ({errno}): {hint}")]
    Mmap {
        /// The path.
        path: PathBuf,
        /// The provider.
        provider: Bdf,
        /// Page-rounded mapping length.
        len: usize,
        /// Errno name.
        errno: String,
        /// The provider's `p2pmem/available` when it could be read.
        available: Option<u64>,
        /// What it means here.
        hint: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
}

impl P2pBufferError {
    /// The errno of a refused `mmap` (the kernel's verdict), `None` for other failures.
    pub fn mmap_errno(&self) -> Option<i32> {
        match self {
            Self::Mmap { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// What an `mmap` errno means for `p2pmem/allocate` (kernel-p2pdma §4.5).
pub fn mmap_hint(errno: Option<i32>, len: usize, available: Option<u64>) -> String {
    match errno.map(Errno::from_raw_os_error) {
        Some(Errno::NOMEM) => {
            let avail = available.map_or_else(|| "unknown".to_string(), |a| format!("{a} bytes"));
            format!(
                "the provider's pool cannot supply one contiguous chunk of {len} bytes \
                 (available: {avail}; the pool allocates first-fit, so fragmentation can refuse \
                 a request even when available is larger); another process may hold it: ask \
                 for less (a smaller chunk or depth), use another provider, or wait"
            )
        }
        Some(Errno::NODEV) => {
            "the provider has no P2PDMA state, or it is being removed (unbind in progress)"
                .to_string()
        }
        Some(Errno::INVAL) => "the kernel refused a private mapping or a non-zero offset; this \
                               code maps MAP_SHARED at offset 0, so the kernel or sysfs changed"
            .to_string(),
        Some(Errno::ACCESS | Errno::PERM) => "mapping p2pmem needs root".to_string(),
        _ => "unexpected error from mmap".to_string(),
    }
}

fn open_hint(errno: Option<i32>) -> &'static str {
    match errno.map(Errno::from_raw_os_error) {
        Some(Errno::ACCESS | Errno::PERM) => "allocate is mode 0660 root:root; run as root",
        Some(Errno::NODEV | Errno::NXIO) => "the provider is being removed",
        _ => "unexpected error opening the allocate attribute",
    }
}

fn file_kind(ft: FileType) -> &'static str {
    match ft {
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::RegularFile => "regular file",
        _ => "file of unknown type",
    }
}

/// The sysfs directory of a PCI function under `root`: `<root>/sys/bus/pci/devices/<BDF>`.
pub fn pci_device_dir(root: &Path, bdf: Bdf) -> PathBuf {
    root.join("sys/bus/pci/devices").join(bdf.to_string())
}

/// A mapping of a provider's `p2pmem/allocate`: one allocation of device memory from its
/// pool, returned to the pool (page by page) on drop.
///
/// The CPU reaches the memory only through [`copy_from_host`](DmaBuffer::copy_from_host),
/// [`copy_to_host`](DmaBuffer::copy_to_host) and [`fill`](DmaBuffer::fill), which use
/// **volatile**, naturally aligned accesses of at most 8 bytes (bytes at unaligned
/// edges). `ptr::copy_nonoverlapping` was rejected: `memcpy` may use wide vector or
/// `rep movs` accesses, touch bytes twice or in any order, and lets the compiler merge or
/// drop accesses, none of which is safe to assume for a PCI BAR that may be mapped
/// uncached or write-combined; no access is assumed atomic beyond one aligned 8-byte
/// word. CPU access to device memory is slow (each access may be a PCIe transaction), so
/// keep it off hot paths.
///
/// **Provider removal is an error, not a crash.** If the provider is unbound or
/// hot-removed while mapped, the kernel zaps the mapping and the next CPU access raises
/// SIGBUS. So each of these methods runs its accesses in a short-lived forked guard
/// process (the device mapping is `MAP_SHARED`, so the child's stores are this
/// process's; a read comes back through a shared bounce buffer), and a guard killed by
/// SIGBUS becomes [`CpuAccessError::DeviceMemoryGone`]. No signal handler is installed
/// and nothing unwinds or jumps out of one. The price is a `fork` per call, on top of
/// the slow accesses themselves. Checking first whether `allocate` still exists would
/// not do: it races with removal, and after an unbind and rebind the file exists again
/// while this mapping stays dead. Kernel accesses (`pread`/`pwrite` into the buffer)
/// fail with an errno instead.
#[derive(Debug)]
pub struct P2pBuffer {
    region: MmapRegion,
    path: PathBuf,
    provider: Bdf,
}

/// A provider's `p2pmem/allocate`, opened read-write and checked, not yet mapped.
///
/// Opening is separate from mapping so that a caller can find setup problems (no such
/// provider, not root, a captured placeholder) before it starts recording what the
/// kernel does; only [`map`](Self::map) allocates from the pool.
#[derive(Debug)]
pub struct AllocateFile {
    fd: OwnedFd,
    path: PathBuf,
    dir: PathBuf,
    provider: Bdf,
    map_len: usize,
}

impl AllocateFile {
    /// Opens `<root>/sys/bus/pci/devices/<BDF>/p2pmem/allocate` read-write for a mapping
    /// of `len` bytes (rounded up to the page size), and checks that it is the kernel's
    /// attribute: a regular file reporting at least `len` bytes (the kernel reports
    /// 1 TiB). Needs root.
    pub fn open(root: &Path, provider: Bdf, len: usize) -> Result<Self, P2pBufferError> {
        let dir = pci_device_dir(root, provider);
        let path = dir.join("p2pmem/allocate");
        if len == 0 {
            return Err(P2pBufferError::ZeroLength { path });
        }
        let Some(map_len) = sys::round_up_to_page(len) else {
            return Err(P2pBufferError::TooLong { path, len });
        };
        let fd = match rustix::fs::open(&path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            // ENOTDIR: a path component is a file (a capture that stored symlinks as
            // files, for example); for the caller that is the same as missing.
            Err(e @ (Errno::NOENT | Errno::NOTDIR)) => {
                return Err(P2pBufferError::NoAllocate {
                    provider_present: dir.is_dir(),
                    path,
                    provider,
                    source: e.into(),
                })
            }
            Err(Errno::ISDIR) => {
                return Err(P2pBufferError::NotAFile {
                    path,
                    kind: "directory",
                })
            }
            Err(e) => {
                return Err(P2pBufferError::Open {
                    hint: open_hint(Some(e.raw_os_error())),
                    errno: sys::errno_label(e.raw_os_error()),
                    path,
                    source: e.into(),
                })
            }
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| P2pBufferError::Open {
            hint: "fstat failed on the open file",
            errno: sys::errno_label(e.raw_os_error()),
            path: path.clone(),
            source: e.into(),
        })?;
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft != FileType::RegularFile {
            return Err(P2pBufferError::NotAFile {
                path,
                kind: file_kind(ft),
            });
        }
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if size < map_len as u64 {
            return Err(P2pBufferError::Placeholder {
                path,
                size,
                len: map_len,
            });
        }
        Ok(Self {
            fd,
            path,
            dir,
            provider,
            map_len,
        })
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_SHARED, fd, 0)`: one new allocation
    /// from the provider's pool. A refusal is [`P2pBufferError::Mmap`], the kernel's
    /// answer, with the pool's `available` when readable.
    pub fn map(self) -> Result<P2pBuffer, P2pBufferError> {
        let Self {
            fd,
            path,
            dir,
            provider,
            map_len,
        } = self;
        let region = MmapRegion::map_shared_rw(fd.as_fd(), map_len).map_err(|source| {
            let available = read_available(&dir);
            P2pBufferError::Mmap {
                errno: sys::io_error_label(&source),
                hint: mmap_hint(source.raw_os_error(), map_len, available),
                available,
                len: map_len,
                path: path.clone(),
                provider,
                source,
            }
        })?;
        // The mapping holds its own reference to the attribute; the fd can go.
        drop(fd);
        Ok(P2pBuffer {
            region,
            path,
            provider,
        })
    }
}

impl P2pBuffer {
    /// Maps `len` bytes (rounded up to the page size) of the p2pmem of `provider`, whose
    /// sysfs lives under `root` (`/` on a live system): [`AllocateFile::open`], then
    /// [`AllocateFile::map`]. Needs root and kernel 6.2+.
    pub fn map(root: &Path, provider: Bdf, len: usize) -> Result<Self, P2pBufferError> {
        AllocateFile::open(root, provider, len)?.map()
    }

    /// The `allocate` file this buffer maps.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The provider whose pool the memory comes from.
    pub fn provider(&self) -> Bdf {
        self.provider
    }

    fn range_error(&self, offset: usize, len: usize) -> RangeError {
        RangeError {
            offset,
            len,
            buf_len: self.region.len(),
            location: self.location(),
        }
    }

    /// What a failed guarded access means for this buffer.
    fn access_error(&self, fault: AccessFault, offset: usize, len: usize) -> CpuAccessError {
        let provider = self.provider;
        let path = self.path.clone();
        match fault {
            AccessFault::OutOfRange => self.range_error(offset, len).into(),
            AccessFault::Signal(sig) if sig == sys::SIGBUS => CpuAccessError::DeviceMemoryGone {
                allocate_present: path.exists(),
                provider,
                path,
            },
            fault @ (AccessFault::Signal(_) | AccessFault::Exit(_)) => CpuAccessError::Guard {
                status: fault.status_label(),
                provider,
                path,
            },
            AccessFault::Os { call, source } => CpuAccessError::GuardSetup {
                errno: sys::io_error_label(&source),
                provider,
                path,
                call,
                source,
            },
        }
    }
}

fn read_available(provider_dir: &Path) -> Option<u64> {
    let bytes = crate::bounded::read_regular(
        &provider_dir.join("p2pmem/available"),
        p2pmem_model::limits::SYSFS_ATTR,
    )
    .ok()?;
    crate::rootfs::parse_u64_attr(&bytes)
}

impl DmaBuffer for P2pBuffer {
    fn as_ptr(&self) -> *const u8 {
        self.region.as_ptr()
    }
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.region.as_mut_ptr()
    }
    /// The mapped length: the requested length rounded up to the page size.
    fn len(&self) -> usize {
        self.region.len()
    }
    fn is_empty(&self) -> bool {
        self.region.is_empty()
    }
    fn location(&self) -> Location {
        Location::P2p(self.provider)
    }
    fn copy_from_host(&mut self, offset: usize, src: &[u8]) -> Result<(), CpuAccessError> {
        self.region
            .write_from(offset, src)
            .map_err(|f| self.access_error(f, offset, src.len()))
    }
    fn copy_to_host(&self, offset: usize, dst: &mut [u8]) -> Result<(), CpuAccessError> {
        self.region
            .read_into(offset, dst)
            .map_err(|f| self.access_error(f, offset, dst.len()))
    }
    fn fill(&mut self, byte: u8) -> Result<(), CpuAccessError> {
        self.region
            .fill(byte)
            .map_err(|f| self.access_error(f, 0, self.region.len()))
    }
    fn io_mut(&mut self, offset: usize, len: usize) -> Result<RawIoMut<'_>, RangeError> {
        let err = self.range_error(offset, len);
        self.region.io_mut(offset, len).ok_or(err)
    }
    fn io(&self, offset: usize, len: usize) -> Result<RawIo<'_>, RangeError> {
        self.region
            .io(offset, len)
            .ok_or_else(|| self.range_error(offset, len))
    }
}

// ---------------------------------------------------------------------------------
// Host buffers
// ---------------------------------------------------------------------------------

/// A host allocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot allocate a {len}-byte page-aligned host buffer")]
pub struct HostBufferError {
    /// Requested length.
    pub len: usize,
}

/// Page-aligned, zeroed host memory (an anonymous mapping in base or huge pages,
/// unmapped on drop), usable for O_DIRECT on any device. Host memory may be seen
/// as a slice ([`as_slice`](Self::as_slice)).
#[derive(Debug)]
pub struct HostBuffer {
    alloc: HostAlloc,
}

impl HostBuffer {
    /// A zeroed buffer of `len` bytes in base pages, aligned to the page size.
    pub fn new(len: usize) -> Result<Self, HostBufferError> {
        Self::with_pages(len, Pages::Base)
    }

    /// A zeroed buffer of `len` bytes in `pages` ([`Pages::Huge`]: transparent huge
    /// pages where the kernel gives them, for large O_DIRECT requests).
    pub fn with_pages(len: usize, pages: Pages) -> Result<Self, HostBufferError> {
        HostAlloc::with_pages(len, pages)
            .map(|alloc| Self { alloc })
            .ok_or(HostBufferError { len })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.alloc.as_slice()
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.alloc.as_mut_slice()
    }

    fn range_error(&self, offset: usize, len: usize) -> RangeError {
        RangeError {
            offset,
            len,
            buf_len: self.alloc.len(),
            location: Location::Host,
        }
    }

    fn range(&self, offset: usize, len: usize) -> Result<std::ops::Range<usize>, RangeError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.alloc.len() => Ok(offset..end),
            _ => Err(self.range_error(offset, len)),
        }
    }
}

impl DmaBuffer for HostBuffer {
    fn as_ptr(&self) -> *const u8 {
        self.alloc.as_slice().as_ptr()
    }
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.alloc.as_mut_slice().as_mut_ptr()
    }
    fn len(&self) -> usize {
        self.alloc.len()
    }
    fn is_empty(&self) -> bool {
        self.alloc.is_empty()
    }
    fn location(&self) -> Location {
        Location::Host
    }
    fn copy_from_host(&mut self, offset: usize, src: &[u8]) -> Result<(), CpuAccessError> {
        let r = self.range(offset, src.len())?;
        self.alloc.as_mut_slice()[r].copy_from_slice(src);
        Ok(())
    }
    fn copy_to_host(&self, offset: usize, dst: &mut [u8]) -> Result<(), CpuAccessError> {
        let r = self.range(offset, dst.len())?;
        dst.copy_from_slice(&self.alloc.as_slice()[r]);
        Ok(())
    }
    fn fill(&mut self, byte: u8) -> Result<(), CpuAccessError> {
        self.alloc.as_mut_slice().fill(byte);
        Ok(())
    }
    fn io_mut(&mut self, offset: usize, len: usize) -> Result<RawIoMut<'_>, RangeError> {
        let err = self.range_error(offset, len);
        self.alloc.io_mut(offset, len).ok_or(err)
    }
    fn io(&self, offset: usize, len: usize) -> Result<RawIo<'_>, RangeError> {
        self.alloc
            .io(offset, len)
            .ok_or_else(|| self.range_error(offset, len))
    }
}

#[cfg(test)]
mod tests;
