//! The crate's only `unsafe` code: memory mappings, page-aligned host allocations,
//! volatile access to device memory, raw-pointer `pread`/`pwrite` and `klogctl`.
//!
//! Everything here is small and owns exactly one resource. Device memory (a p2pmem
//! mapping) is reached only through volatile accessors or handed to the kernel as a raw
//! pointer; it never becomes a Rust slice, not even for the length of a system call.
//! That is why `pread`/`pwrite` go through `libc` (rustix takes a slice) and why the
//! kernel-facing buffer types [`RawIoMut`]/[`RawIo`] can only be made here, from a
//! region this module owns and bounds-checks.

#![expect(
    unsafe_code,
    reason = "the fenced module that owns mmap, std::alloc, volatile device access and raw-pointer system calls"
)]

use rustix::fd::{AsRawFd, BorrowedFd};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};
use std::alloc::Layout;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::{io, slice};

/// The system page size.
pub fn page_size() -> usize {
    rustix::param::page_size()
}

/// `len` rounded up to a whole number of pages; `None` on overflow.
pub fn round_up_to_page(len: usize) -> Option<usize> {
    let page = page_size();
    len.checked_add(page - 1).map(|v| v / page * page)
}

/// `[offset, offset + len)` when it lies inside `[0, size)`.
fn in_bounds(offset: usize, len: usize, size: usize) -> bool {
    offset.checked_add(len).is_some_and(|end| end <= size)
}

// ---------------------------------------------------------------------------------
// Kernel-facing buffers
// ---------------------------------------------------------------------------------

/// A range of a buffer that the kernel may write into (the buffer of a `pread`).
///
/// Only this module makes one, from a region it owns and after a bounds check, and the
/// lifetime ties it to a mutable borrow of that region: holding one proves that
/// `ptr..ptr+len` is mapped, writable and not otherwise borrowed.
#[derive(Debug)]
pub struct RawIoMut<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _borrow: PhantomData<&'a mut u8>,
}

/// A range of a buffer that the kernel may read from (the buffer of a `pwrite`).
///
/// Only this module makes one, from a region it owns and after a bounds check; the
/// lifetime ties it to a shared borrow of that region.
#[derive(Debug)]
pub struct RawIo<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _borrow: PhantomData<&'a u8>,
}

impl RawIoMut<'_> {
    /// Start address, for messages and alignment checks.
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl RawIo<'_> {
    /// Start address, for messages and alignment checks.
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn offset_ptr(base: NonNull<u8>, size: usize, offset: usize, len: usize) -> Option<NonNull<u8>> {
    if !in_bounds(offset, len, size) {
        return None;
    }
    // SAFETY: `offset <= size` (checked above) and `base..base+size` is one live
    // allocation or mapping (the caller's invariant), so the result stays inside it or
    // one past its end, and is non-null because `base` is.
    Some(unsafe { base.add(offset) })
}

/// `pread(2)` into a kernel-facing buffer; retries on EINTR. Returns the byte count,
/// which may be short.
pub fn pread(fd: BorrowedFd<'_>, buf: RawIoMut<'_>, offset: u64) -> io::Result<usize> {
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    loop {
        // SAFETY: a `RawIoMut` is only built here from an owned region after a bounds
        // check, and borrows that region mutably for its lifetime, so `ptr..ptr+len` is
        // mapped, writable and aliased by no Rust reference during the call. The fd is
        // borrowed, so it stays open.
        let n = unsafe { libc::pread(fd.as_raw_fd(), buf.ptr.as_ptr().cast(), buf.len, off) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `pwrite(2)` from a kernel-facing buffer; retries on EINTR. Returns the byte count,
/// which may be short.
pub fn pwrite(fd: BorrowedFd<'_>, buf: RawIo<'_>, offset: u64) -> io::Result<usize> {
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    loop {
        // SAFETY: a `RawIo` is only built here from an owned region after a bounds check
        // and borrows that region for its lifetime, so `ptr..ptr+len` is mapped and
        // readable during the call; the kernel only reads it. The fd is borrowed.
        let n = unsafe { libc::pwrite(fd.as_raw_fd(), buf.ptr.as_ptr().cast(), buf.len, off) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

// ---------------------------------------------------------------------------------
// Shared mappings of device memory
// ---------------------------------------------------------------------------------

/// One `MAP_SHARED`, read-write mapping at file offset 0, unmapped on drop.
///
/// The memory may be device memory (a PCI BAR behind p2pmem), so it is touched only
/// with volatile, naturally aligned accesses of at most 8 bytes ([`Self::write_from`],
/// [`Self::read_into`], [`Self::fill`]) and never turned into a slice. A CPU access
/// after the kernel zapped the pages (provider unbound, `MADV_DONTNEED`) raises SIGBUS;
/// no handler is installed here.
#[derive(Debug)]
pub struct MmapRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region owns its mapping outright (no thread-local state); moving it to
// another thread moves the only handle, and munmap works from any thread.
unsafe impl Send for MmapRegion {}
// SAFETY: `&MmapRegion` only allows volatile reads and kernel reads (`RawIo`); every
// write needs `&mut`, so shared references never race with a write.
unsafe impl Sync for MmapRegion {}

impl MmapRegion {
    /// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_SHARED, fd, 0)`. `len` must be a
    /// non-zero multiple of the page size (EINVAL otherwise, before any system call).
    pub fn map_shared_rw(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        if len == 0 || !len.is_multiple_of(page_size()) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a fresh mapping at an address the kernel chooses (NULL hint, no
        // MAP_FIXED) cannot overlap any existing Rust object. The result is owned by the
        // returned value and unmapped exactly once, in Drop.
        let addr = unsafe {
            rustix::mm::mmap(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }?;
        let ptr = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        Ok(Self { ptr, len })
    }

    /// Start address of the mapping.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Start address of the mapping, for handing to the kernel.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Mapped length in bytes (a multiple of the page size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping is never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `src` into the mapping at `offset` with volatile stores; `None` when the
    /// range does not fit.
    pub fn write_from(&mut self, offset: usize, src: &[u8]) -> Option<()> {
        let dst = offset_ptr(self.ptr, self.len, offset, src.len())?;
        // SAFETY: `dst..dst+src.len()` lies inside the live mapping (bounds checked by
        // `offset_ptr`), `&mut self` excludes concurrent access, and `src` is host
        // memory that cannot overlap a fresh device mapping.
        unsafe { volatile_copy_in(dst.as_ptr(), src) };
        Some(())
    }

    /// Copies from the mapping at `offset` into `dst` with volatile loads; `None` when
    /// the range does not fit.
    pub fn read_into(&self, offset: usize, dst: &mut [u8]) -> Option<()> {
        let src = offset_ptr(self.ptr, self.len, offset, dst.len())?;
        // SAFETY: `src..src+dst.len()` lies inside the live mapping (bounds checked),
        // readers only race with other readers (writes need `&mut self`), and `dst` is
        // host memory distinct from the mapping.
        unsafe { volatile_copy_out(src.as_ptr(), dst) };
        Some(())
    }

    /// Sets every byte of the mapping to `byte` with volatile stores.
    pub fn fill(&mut self, byte: u8) {
        // SAFETY: the whole mapping `ptr..ptr+len` is live and `&mut self` excludes any
        // other access.
        unsafe { volatile_fill(self.ptr.as_ptr(), self.len, byte) };
    }

    /// The kernel-facing range `[offset, offset+len)` for a `pread`.
    pub fn io_mut(&mut self, offset: usize, len: usize) -> Option<RawIoMut<'_>> {
        let ptr = offset_ptr(self.ptr, self.len, offset, len)?;
        Some(RawIoMut {
            ptr,
            len,
            _borrow: PhantomData,
        })
    }

    /// The kernel-facing range `[offset, offset+len)` for a `pwrite`.
    pub fn io(&self, offset: usize, len: usize) -> Option<RawIo<'_>> {
        let ptr = offset_ptr(self.ptr, self.len, offset, len)?;
        Some(RawIo {
            ptr,
            len,
            _borrow: PhantomData,
        })
    }
}

impl Drop for MmapRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is exactly the mapping made in `map_shared_rw`, owned
        // by this value and unmapped only here; no `RawIo`/`RawIoMut` can outlive the
        // borrow of `self`, so nothing refers to it any more. A failure cannot be
        // reported from Drop and leaves at worst a leaked mapping.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Volatile copy from host memory into device memory: byte stores up to an 8-byte
/// boundary, aligned 8-byte stores, then byte stores. Each byte is written exactly once,
/// in address order, and no access is wider than 8 bytes or unaligned.
///
/// # Safety
/// `dst..dst+src.len()` must be valid for writes and must not overlap `src`.
unsafe fn volatile_copy_in(dst: *mut u8, src: &[u8]) {
    let n = src.len();
    let mut i = 0;
    while i < n && !(dst as usize).wrapping_add(i).is_multiple_of(8) {
        // SAFETY: `i < n`, so `dst+i` is inside the caller's valid range.
        unsafe { dst.add(i).write_volatile(src[i]) };
        i += 1;
    }
    while n - i >= 8 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&src[i..i + 8]);
        // SAFETY: `i + 8 <= n` keeps the store inside the caller's range, and `dst+i` is
        // 8-aligned after the head loop.
        unsafe {
            dst.add(i)
                .cast::<u64>()
                .write_volatile(u64::from_ne_bytes(word))
        };
        i += 8;
    }
    while i < n {
        // SAFETY: `i < n`, inside the caller's range.
        unsafe { dst.add(i).write_volatile(src[i]) };
        i += 1;
    }
}

/// Volatile copy from device memory into host memory, with the access pattern of
/// [`volatile_copy_in`].
///
/// # Safety
/// `src..src+dst.len()` must be valid for reads and must not overlap `dst`.
unsafe fn volatile_copy_out(src: *const u8, dst: &mut [u8]) {
    let n = dst.len();
    let mut i = 0;
    while i < n && !(src as usize).wrapping_add(i).is_multiple_of(8) {
        // SAFETY: `i < n`, inside the caller's range.
        dst[i] = unsafe { src.add(i).read_volatile() };
        i += 1;
    }
    while n - i >= 8 {
        // SAFETY: `i + 8 <= n` keeps the load inside the caller's range, and `src+i` is
        // 8-aligned after the head loop.
        let word = unsafe { src.add(i).cast::<u64>().read_volatile() };
        dst[i..i + 8].copy_from_slice(&word.to_ne_bytes());
        i += 8;
    }
    while i < n {
        // SAFETY: `i < n`, inside the caller's range.
        dst[i] = unsafe { src.add(i).read_volatile() };
        i += 1;
    }
}

/// Volatile fill with the access pattern of [`volatile_copy_in`].
///
/// # Safety
/// `dst..dst+len` must be valid for writes.
unsafe fn volatile_fill(dst: *mut u8, len: usize, byte: u8) {
    let word = u64::from_ne_bytes([byte; 8]);
    let mut i = 0;
    while i < len && !(dst as usize).wrapping_add(i).is_multiple_of(8) {
        // SAFETY: `i < len`, inside the caller's range.
        unsafe { dst.add(i).write_volatile(byte) };
        i += 1;
    }
    while len - i >= 8 {
        // SAFETY: `i + 8 <= len`, inside the caller's range; `dst+i` is 8-aligned.
        unsafe { dst.add(i).cast::<u64>().write_volatile(word) };
        i += 8;
    }
    while i < len {
        // SAFETY: `i < len`, inside the caller's range.
        unsafe { dst.add(i).write_volatile(byte) };
        i += 1;
    }
}

// ---------------------------------------------------------------------------------
// Page-aligned host memory
// ---------------------------------------------------------------------------------

/// A zeroed, page-aligned host allocation of at least one page, freed on drop.
#[derive(Debug)]
pub struct HostAlloc {
    ptr: NonNull<u8>,
    /// The bytes the owner asked for (`<= layout.size()`).
    len: usize,
    layout: Layout,
}

// SAFETY: a uniquely owned heap allocation, like `Box<[u8]>`.
unsafe impl Send for HostAlloc {}
// SAFETY: shared access only reads (writes need `&mut`), like `Box<[u8]>`.
unsafe impl Sync for HostAlloc {}

impl HostAlloc {
    /// Allocates `len` zeroed bytes, page-aligned, rounded up to whole pages (at least
    /// one). `None` when the size overflows or the allocator fails.
    pub fn new(len: usize) -> Option<Self> {
        let size = round_up_to_page(len.max(1))?;
        let layout = Layout::from_size_align(size, page_size()).ok()?;
        // SAFETY: `layout.size()` is at least one page, so non-zero, as `alloc_zeroed`
        // requires.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw)?;
        Some(Self { ptr, len, layout })
    }

    /// The requested length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the requested length is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, as a slice (host memory, so this is fine).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live, zero-initialised allocation of `layout.size() >= len`
        // bytes owned by `self`; the shared borrow of `self` excludes writers.
        unsafe { slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, as a mutable slice.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; the mutable borrow of `self` makes it unique.
        unsafe { slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The kernel-facing range `[offset, offset+len)` for a `pread`.
    pub fn io_mut(&mut self, offset: usize, len: usize) -> Option<RawIoMut<'_>> {
        let ptr = offset_ptr(self.ptr, self.len, offset, len)?;
        Some(RawIoMut {
            ptr,
            len,
            _borrow: PhantomData,
        })
    }

    /// The kernel-facing range `[offset, offset+len)` for a `pwrite`.
    pub fn io(&self, offset: usize, len: usize) -> Option<RawIo<'_>> {
        let ptr = offset_ptr(self.ptr, self.len, offset, len)?;
        Some(RawIo {
            ptr,
            len,
            _borrow: PhantomData,
        })
    }
}

impl Drop for HostAlloc {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed(self.layout)` and is freed only here;
        // borrows handed out (slices, `RawIo*`) cannot outlive `self`.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

// ---------------------------------------------------------------------------------
// klogctl
// ---------------------------------------------------------------------------------

/// `SYSLOG_ACTION_READ_ALL`: read the whole ring buffer without consuming it.
const SYSLOG_ACTION_READ_ALL: libc::c_int = 3;
/// `SYSLOG_ACTION_CLEAR`: forget everything logged so far (for READ_ALL).
const SYSLOG_ACTION_CLEAR: libc::c_int = 5;
/// `SYSLOG_ACTION_SIZE_BUFFER`: size of the ring buffer.
const SYSLOG_ACTION_SIZE_BUFFER: libc::c_int = 10;

/// `klogctl(SYSLOG_ACTION_CLEAR)`.
pub fn klog_clear() -> io::Result<()> {
    // SAFETY: CLEAR ignores the buffer argument; a NULL pointer with length 0 is the
    // documented form.
    let rc = unsafe { libc::klogctl(SYSLOG_ACTION_CLEAR, ptr::null_mut(), 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `klogctl(SYSLOG_ACTION_READ_ALL)` into a buffer of the ring buffer's size: the raw
/// `<level>[timestamp] text\n` records logged since the last CLEAR.
pub fn klog_read_all() -> io::Result<Vec<u8>> {
    // SAFETY: SIZE_BUFFER ignores the buffer argument.
    let size = unsafe { libc::klogctl(SYSLOG_ACTION_SIZE_BUFFER, ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let size = size.max(4096);
    let mut buf = vec![0u8; usize::try_from(size).unwrap_or(4096)];
    let cap = libc::c_int::try_from(buf.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `buf` is a live host buffer of `buf.len() >= cap` bytes, borrowed mutably
    // for the call; the kernel writes at most `cap` bytes.
    let n = unsafe { libc::klogctl(SYSLOG_ACTION_READ_ALL, buf.as_mut_ptr().cast(), cap) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    buf.truncate(n);
    Ok(buf)
}

// ---------------------------------------------------------------------------------
// errno names
// ---------------------------------------------------------------------------------

/// Error numbers met around P2PDMA, mmap, O_DIRECT and sysfs, with their names.
/// The numbers come from rustix, so they are right for the target architecture.
const ERRNO_NAMES: &[(Errno, &str)] = &[
    (Errno::PERM, "EPERM"),
    (Errno::NOENT, "ENOENT"),
    (Errno::SRCH, "ESRCH"),
    (Errno::INTR, "EINTR"),
    (Errno::IO, "EIO"),
    (Errno::NXIO, "ENXIO"),
    (Errno::TOOBIG, "E2BIG"),
    (Errno::BADF, "EBADF"),
    (Errno::AGAIN, "EAGAIN"),
    (Errno::NOMEM, "ENOMEM"),
    (Errno::ACCESS, "EACCES"),
    (Errno::FAULT, "EFAULT"),
    (Errno::NOTBLK, "ENOTBLK"),
    (Errno::BUSY, "EBUSY"),
    (Errno::EXIST, "EEXIST"),
    (Errno::XDEV, "EXDEV"),
    (Errno::NODEV, "ENODEV"),
    (Errno::NOTDIR, "ENOTDIR"),
    (Errno::ISDIR, "EISDIR"),
    (Errno::INVAL, "EINVAL"),
    (Errno::NFILE, "ENFILE"),
    (Errno::MFILE, "EMFILE"),
    (Errno::NOTTY, "ENOTTY"),
    (Errno::TXTBSY, "ETXTBSY"),
    (Errno::FBIG, "EFBIG"),
    (Errno::NOSPC, "ENOSPC"),
    (Errno::SPIPE, "ESPIPE"),
    (Errno::ROFS, "EROFS"),
    (Errno::PIPE, "EPIPE"),
    (Errno::RANGE, "ERANGE"),
    (Errno::NOSYS, "ENOSYS"),
    (Errno::NODATA, "ENODATA"),
    (Errno::TIME, "ETIME"),
    (Errno::NOLINK, "ENOLINK"),
    (Errno::PROTO, "EPROTO"),
    (Errno::OVERFLOW, "EOVERFLOW"),
    (Errno::ILSEQ, "EILSEQ"),
    (Errno::OPNOTSUPP, "EOPNOTSUPP"),
    (Errno::TIMEDOUT, "ETIMEDOUT"),
    (Errno::REMOTEIO, "EREMOTEIO"),
    (Errno::NOMEDIUM, "ENOMEDIUM"),
    (Errno::MEDIUMTYPE, "EMEDIUMTYPE"),
    (Errno::CANCELED, "ECANCELED"),
    (Errno::HWPOISON, "EHWPOISON"),
];

/// The symbolic name of an errno (`121` → `EREMOTEIO`), when it is one we know.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    ERRNO_NAMES
        .iter()
        .find(|(e, _)| e.raw_os_error() == errno)
        .map(|(_, name)| *name)
}

/// The name of an errno, or `errno N` for one not in the table.
pub fn errno_label(errno: i32) -> String {
    errno_name(errno).map_or_else(|| format!("errno {errno}"), str::to_string)
}

/// The name of an I/O error's errno, or a description when it carries none.
pub fn io_error_label(err: &io::Error) -> String {
    err.raw_os_error()
        .map_or_else(|| format!("{:?}", err.kind()), errno_label)
}

#[cfg(test)]
mod tests;

/// Restore the default action for SIGPIPE, so that a command whose stdout is a closed
/// pipe (`p2pmem topo | head`) ends quietly as other Unix tools do, instead of the Rust
/// runtime's `EPIPE` turning `println!` into a panic.
pub fn restore_default_sigpipe() {
    // SAFETY: `signal` with SIG_DFL installs no handler code; it only changes the
    // disposition of SIGPIPE for this process, which is called once at start-up before
    // any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
