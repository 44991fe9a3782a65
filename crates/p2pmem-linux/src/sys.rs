//! The crate's only `unsafe` code: memory mappings, page-aligned host allocations,
//! volatile access to device memory (each in a forked guard process, so that a SIGBUS
//! from a torn-down mapping is an error), raw-pointer `pread`/`pwrite` and `klogctl`.
//!
//! Everything here is small and owns exactly one resource. Device memory (a p2pmem
//! mapping) is reached only through volatile accessors or handed to the kernel as a raw
//! pointer; it never becomes a Rust slice, not even for the length of a system call.
//! That is why `pread`/`pwrite` go through `libc` (rustix takes a slice) and why the
//! kernel-facing buffer types [`RawIoMut`]/[`RawIo`] can only be made here, from a
//! region this module owns and bounds-checks.

#![expect(
    unsafe_code,
    reason = "the fenced module that owns mmap, std::alloc, fork, volatile device access and raw-pointer system calls"
)]

use rustix::fd::{AsRawFd, BorrowedFd};
use rustix::mm::{MapFlags, ProtFlags};
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
/// after the kernel zapped the pages (provider unbound, driver unloaded, device
/// removed) raises SIGBUS, so those accessors run the access in a guard process and
/// report the signal as [`AccessFault::Signal`]; no signal handler is installed.
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

    /// Copies `src` into the mapping at `offset` with volatile stores, in a guard
    /// process (a forked child, see `guarded` below), so that a mapping the kernel tore
    /// down is an error and not the death of this process.
    pub fn write_from(&mut self, offset: usize, src: &[u8]) -> Result<(), AccessFault> {
        let dst =
            offset_ptr(self.ptr, self.len, offset, src.len()).ok_or(AccessFault::OutOfRange)?;
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: `dst..dst+src.len()` lies inside the live mapping (bounds checked by
        // `offset_ptr`) and `&mut self` keeps it mapped and excludes other access for
        // the call; `src` is host memory borrowed for the call, which cannot overlap a
        // fresh device mapping.
        unsafe {
            guarded(ChildOp::CopyIn {
                dst: dst.as_ptr(),
                src: src.as_ptr(),
                len: src.len(),
            })
        }
    }

    /// Copies from the mapping at `offset` into `dst` with volatile loads, in a guard
    /// process (a forked child, see `guarded` below) that writes into a shared bounce
    /// buffer.
    pub fn read_into(&self, offset: usize, dst: &mut [u8]) -> Result<(), AccessFault> {
        let src =
            offset_ptr(self.ptr, self.len, offset, dst.len()).ok_or(AccessFault::OutOfRange)?;
        if dst.is_empty() {
            return Ok(());
        }
        let bounce =
            AnonMap::new(dst.len(), MapFlags::SHARED).map_err(|source| AccessFault::Os {
                call: "mmap",
                source,
            })?;
        // SAFETY: `src..src+dst.len()` lies inside the live mapping (bounds checked) and
        // the borrow of `self` keeps it mapped for the call; the bounce mapping is at
        // least `dst.len()` bytes, owned here and distinct from the device mapping.
        unsafe {
            guarded(ChildOp::CopyOut {
                dst: bounce.ptr.as_ptr(),
                src: src.as_ptr(),
                len: dst.len(),
            })?;
        }
        // SAFETY: the guard process has exited (waitpid returned), so no other process
        // or thread writes the bounce mapping; it holds at least `dst.len()` initialised
        // bytes (anonymous memory is zeroed), and `dst` is a distinct host borrow.
        unsafe { ptr::copy_nonoverlapping(bounce.ptr.as_ptr(), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Sets every byte of the mapping to `byte` with volatile stores, in a guard
    /// process (a forked child, see `guarded` below).
    pub fn fill(&mut self, byte: u8) -> Result<(), AccessFault> {
        // SAFETY: the whole mapping `ptr..ptr+len` is live and `&mut self` keeps it so
        // and excludes any other access for the call.
        unsafe {
            guarded(ChildOp::Fill {
                dst: self.ptr.as_ptr(),
                len: self.len,
                byte,
            })
        }
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
/// in address order, and no access is wider than 8 bytes or unaligned. Raw pointers
/// only, no indexing: it cannot panic, so it may run in a guard process.
///
/// # Safety
/// `dst..dst+len` must be valid for writes, `src..src+len` for reads, and the two must
/// not overlap.
unsafe fn volatile_copy_in(dst: *mut u8, src: *const u8, len: usize) {
    let mut i = 0;
    while i < len && !(dst as usize).wrapping_add(i).is_multiple_of(8) {
        // SAFETY: `i < len`, so both `dst+i` and `src+i` are inside the caller's ranges.
        unsafe { dst.add(i).write_volatile(src.add(i).read()) };
        i += 1;
    }
    while len - i >= 8 {
        // SAFETY: `i + 8 <= len` keeps both accesses inside the caller's ranges; the host
        // side may be unaligned (read_unaligned), the device side is 8-aligned after the
        // head loop.
        unsafe {
            let word = src.add(i).cast::<u64>().read_unaligned();
            dst.add(i).cast::<u64>().write_volatile(word);
        }
        i += 8;
    }
    while i < len {
        // SAFETY: `i < len`, inside the caller's ranges.
        unsafe { dst.add(i).write_volatile(src.add(i).read()) };
        i += 1;
    }
}

/// Volatile copy from device memory into host memory, with the access pattern of
/// [`volatile_copy_in`] on the device side.
///
/// # Safety
/// `src..src+len` must be valid for reads, `dst..dst+len` for writes, and the two must
/// not overlap.
unsafe fn volatile_copy_out(dst: *mut u8, src: *const u8, len: usize) {
    let mut i = 0;
    while i < len && !(src as usize).wrapping_add(i).is_multiple_of(8) {
        // SAFETY: `i < len`, inside the caller's ranges.
        unsafe { dst.add(i).write(src.add(i).read_volatile()) };
        i += 1;
    }
    while len - i >= 8 {
        // SAFETY: `i + 8 <= len` keeps both accesses inside the caller's ranges; the
        // device side is 8-aligned after the head loop, the host side may not be.
        unsafe {
            let word = src.add(i).cast::<u64>().read_volatile();
            dst.add(i).cast::<u64>().write_unaligned(word);
        }
        i += 8;
    }
    while i < len {
        // SAFETY: `i < len`, inside the caller's ranges.
        unsafe { dst.add(i).write(src.add(i).read_volatile()) };
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
// Guard processes for CPU access to device memory
// ---------------------------------------------------------------------------------

/// Why a guarded access to a mapping did not complete.
#[derive(Debug)]
pub enum AccessFault {
    /// The range does not fit the mapping; nothing was touched.
    OutOfRange,
    /// The guard process was killed by this signal during the access: SIGBUS when the
    /// kernel had torn the mapping's pages down.
    Signal(i32),
    /// The guard process exited with this status instead of 0 (it never does: only a
    /// foreign `kill` or a kernel change could cause this).
    Exit(i32),
    /// A system call around the access failed (`mmap` of the bounce buffer, `fork`,
    /// `waitpid`); the device memory was not touched, or the outcome is unknown.
    Os {
        /// The call.
        call: &'static str,
        /// The system error.
        source: io::Error,
    },
}

impl AccessFault {
    /// `killed by SIGBUS`, `exited with status 3`, ... for messages.
    pub fn status_label(&self) -> String {
        match self {
            Self::OutOfRange => "range out of bounds".to_string(),
            Self::Signal(sig) => format!("killed by {}", signal_label(*sig)),
            Self::Exit(code) => format!("exited with status {code}"),
            Self::Os { call, source } => format!("{call} failed ({})", io_error_label(source)),
        }
    }
}

/// The signal a CPU access to a torn-down mapping raises.
pub const SIGBUS: i32 = libc::SIGBUS;

/// The name of a signal a guard process can die of, or `signal N`.
pub fn signal_label(sig: i32) -> String {
    let name = match sig {
        libc::SIGBUS => "SIGBUS",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGABRT => "SIGABRT",
        libc::SIGILL => "SIGILL",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// One CPU access to device memory, as raw pointers the guard process uses.
#[derive(Clone, Copy)]
enum ChildOp {
    /// [`volatile_copy_in`] from host `src` to device `dst`.
    CopyIn {
        dst: *mut u8,
        src: *const u8,
        len: usize,
    },
    /// [`volatile_copy_out`] from device `src` to the shared bounce buffer `dst`.
    CopyOut {
        dst: *mut u8,
        src: *const u8,
        len: usize,
    },
    /// [`volatile_fill`] of device `dst`.
    Fill { dst: *mut u8, len: usize, byte: u8 },
}

/// Runs one CPU access to device memory in a forked child and waits for it.
///
/// Why a process: after the provider is unbound or removed, the kernel zaps the
/// mapping and the next CPU access raises SIGBUS. Catching that in this process would
/// need `siglongjmp` out of a handler or unwinding from one, both undefined behaviour
/// in Rust. The child inherits the `MAP_SHARED` device mapping (the same pages, so its
/// stores are the parent's) and a copy-on-write copy of host memory (so it reads the
/// parent's `src`); a read goes through a `MAP_SHARED` anonymous bounce buffer made
/// before the fork. If the pages are gone the child dies of SIGBUS and `waitpid` says
/// so. The cost is a `fork` per call, which is why these accesses stay off hot paths.
///
/// # Safety
/// Every pointer in `op` must be valid for its access and length, in mappings or
/// allocations that stay alive until this returns (the caller borrows them), and
/// device and host ranges must not overlap. Device stores must not race with other
/// accesses to the same range (the caller holds `&mut`).
unsafe fn guarded(op: ChildOp) -> Result<(), AccessFault> {
    // SAFETY: `fork` itself has no memory-safety preconditions. What makes it sound in a
    // process that may have other threads: the child runs only the code below, which
    // touches only memory that was mapped before the fork (the device mapping and the
    // bounce buffer, both MAP_SHARED, and the host `src`, copied by fork), holds no lock,
    // allocates nothing, cannot panic (raw-pointer loops, no indexing) and leaves with
    // `_exit`, so no destructor, atexit handler or stdio flush runs, and no lock another
    // thread held at the fork is ever taken. `prctl`, `signal` and `_exit` are single
    // system calls (async-signal-safe).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: the guard child (see above). PR_SET_DUMPABLE 0 keeps the expected
        // SIGBUS from writing a core dump; SIG_DFL for SIGBUS makes sure an inherited
        // handler cannot run (the fault must kill the child). The access itself is sound
        // by this function's contract; the pointers are the same in the child.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
            match op {
                ChildOp::CopyIn { dst, src, len } => volatile_copy_in(dst, src, len),
                ChildOp::CopyOut { dst, src, len } => volatile_copy_out(dst, src, len),
                ChildOp::Fill { dst, len, byte } => volatile_fill(dst, len, byte),
            }
            libc::_exit(0)
        }
    }
    if pid < 0 {
        return Err(AccessFault::Os {
            call: "fork",
            source: io::Error::last_os_error(),
        });
    }
    wait_guard(pid)
}

/// Reaps the guard process `pid` and maps its end to a result.
fn wait_guard(pid: libc::pid_t) -> Result<(), AccessFault> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a live, writable `c_int` for the call; waiting for our
        // own child has no other precondition.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(AccessFault::Os {
                call: "waitpid",
                source: err,
            });
        }
    }
    if libc::WIFSIGNALED(status) {
        Err(AccessFault::Signal(libc::WTERMSIG(status)))
    } else if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            code => Err(AccessFault::Exit(code)),
        }
    } else {
        Err(AccessFault::Exit(status))
    }
}

/// An anonymous read-write mapping owned by its value and unmapped on drop:
/// `MAP_SHARED` for the bounce buffer a guard process writes what it read into,
/// `MAP_PRIVATE` under [`HostAlloc`].
#[derive(Debug)]
struct AnonMap {
    ptr: NonNull<u8>,
    len: usize,
}

impl AnonMap {
    /// At least `len` (> 0) zeroed bytes, rounded up to whole pages.
    fn new(len: usize, flags: MapFlags) -> io::Result<Self> {
        let len = round_up_to_page(len.max(1))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses (NULL hint,
        // no MAP_FIXED) cannot overlap any Rust object; it is owned by the returned
        // value and unmapped once, in Drop.
        let addr = unsafe {
            rustix::mm::mmap_anonymous(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
            )
        }?;
        let ptr = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`, owned by this value; no pointer
        // into it outlives the owner that handed it out.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// ---------------------------------------------------------------------------------
// Page-aligned host memory
// ---------------------------------------------------------------------------------

/// Which pages back a [`HostAlloc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pages {
    /// The base page size.
    Base,
    /// Transparent huge pages where the kernel gives them: the allocation is rounded up
    /// to whole huge pages, starts on a huge-page boundary and is advised
    /// `MADV_HUGEPAGE` (honoured when `/sys/kernel/mm/transparent_hugepage/enabled` is
    /// `always` or `madvise`). An O_DIRECT request into it is then a few physically
    /// contiguous pieces instead of one per base page: fewer pages to pin, fewer
    /// scatter-gather segments, and neighbouring requests the block layer can merge
    /// (a virtio disk takes at most 254 segments a request). Where the huge page is
    /// larger than 2 MiB and than the allocation (arm64 with 16 or 64 KiB pages), or the
    /// kernel has no transparent huge pages, this is [`Pages::Base`].
    Huge,
}

impl Pages {
    /// The pages for a host buffer of requests of `request` bytes each: [`Pages::Huge`]
    /// where a request spans more than one base page, so that it reaches the device as
    /// one request of few segments (in base pages a 1 MiB request is 256 segments, and a
    /// virtio disk that takes 254 cuts it in two); [`Pages::Base`] where a request is one
    /// page, one segment either way (`bench` at 4 KiB measured level in both, README).
    pub fn for_requests(request: u64) -> Self {
        if request > page_size() as u64 {
            Self::Huge
        } else {
            Self::Base
        }
    }
}

/// The kernel's transparent huge page size, where it has them (read once).
fn huge_page_size() -> Option<usize> {
    static SIZE: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        let path = std::path::Path::new("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
        let raw = crate::bounded::read_file(path, p2pmem_model::limits::SYSFS_ATTR).ok()?;
        let size: usize = std::str::from_utf8(&raw).ok()?.trim().parse().ok()?;
        (size.is_power_of_two() && size > page_size()).then_some(size)
    })
}

/// The huge page size an allocation of `size` bytes uses, given the kernel's (`thp`):
/// none without one, and none where it is over 2 MiB and over `size`, which would
/// round a buffer up to far more memory than it asked for.
fn huge_page_for(thp: Option<usize>, size: usize) -> Option<usize> {
    thp.filter(|&h| h <= (2 << 20) || h <= size)
}

/// A zeroed, page-aligned host allocation of at least one page, freed on drop: a
/// private anonymous mapping, in base or huge pages ([`Pages`]), faulted in when it is
/// made (`MADV_POPULATE_WRITE`, Linux 5.14 on; before, at first use).
#[derive(Debug)]
pub struct HostAlloc {
    /// Where the caller's bytes start (inside `map`).
    ptr: NonNull<u8>,
    /// The bytes the owner asked for.
    len: usize,
    /// The whole mapping, held for its unmapping on drop.
    _map: AnonMap,
}

// SAFETY: a uniquely owned mapping, like `Box<[u8]>`.
unsafe impl Send for HostAlloc {}
// SAFETY: shared access only reads (writes need `&mut`), like `Box<[u8]>`.
unsafe impl Sync for HostAlloc {}

impl HostAlloc {
    /// Allocates `len` zeroed bytes in base pages, page-aligned, rounded up to whole
    /// pages (at least one). `None` when the size overflows or the mapping fails.
    pub fn new(len: usize) -> Option<Self> {
        Self::with_pages(len, Pages::Base)
    }

    /// Allocates `len` zeroed bytes in `pages`, aligned to the page size (to the huge
    /// page size for [`Pages::Huge`]). `None` when the size overflows or the mapping
    /// fails.
    pub fn with_pages(len: usize, pages: Pages) -> Option<Self> {
        let size = round_up_to_page(len.max(1))?;
        let huge = match pages {
            Pages::Base => None,
            Pages::Huge => huge_page_for(huge_page_size(), size),
        };
        let (size, map_len) = match huge {
            // Room to start on a huge-page boundary wherever the kernel puts the mapping.
            Some(h) => {
                let size = size.checked_next_multiple_of(h)?;
                (size, size.checked_add(h - page_size())?)
            }
            None => (size, size),
        };
        let map = AnonMap::new(map_len, MapFlags::PRIVATE).ok()?;
        // The mapping starts on a page boundary, so the distance to the next huge-page
        // boundary is at most `h - page_size()`.
        let skip = huge.map_or(0, |h| (h - map.ptr.as_ptr() as usize % h) % h);
        let ptr = NonNull::new(map.ptr.as_ptr().wrapping_add(skip))?;
        if huge.is_some() {
            // Advice only: refused (a kernel without THP), the buffer works in base pages.
            // SAFETY: `[ptr, ptr + size)` lies inside the mapping just made (`skip + size
            // <= map_len`); the advice does not change its contents.
            let _ = unsafe {
                rustix::mm::madvise(ptr.as_ptr().cast(), size, rustix::mm::Advice::LinuxHugepage)
            };
        }
        // Fault every page in now, not under the first request that uses it: a copy's
        // clock starts at its first request, as fio's starts after it has touched its
        // buffers, and zeroing huge pages mid-copy cost it (README, Benchmarks: 1 MiB
        // chunks at depth 32 moved 1,665-2,856 MiB/s faulting as they went, 2,877-3,084
        // populated first). Advice only: a kernel before 5.14 refuses it (EINVAL) and the
        // pages fault in at first use as before.
        // SAFETY: `[ptr, ptr + size)` lies inside the mapping just made; populating a
        // private anonymous mapping for writing allocates the zeroed pages it already
        // reads as, and changes no byte.
        let _ = unsafe {
            rustix::mm::madvise(
                ptr.as_ptr().cast(),
                size,
                rustix::mm::Advice::LinuxPopulateWrite,
            )
        };
        Some(Self {
            ptr,
            len,
            _map: map,
        })
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
        // SAFETY: `[ptr, ptr + len)` lies in a live, zero-initialised mapping owned by
        // `self`; the shared borrow of `self` excludes writers.
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

/// The symbolic name of an errno (`121` -> `EREMOTEIO`), when it is one we know: the
/// model's table ([`p2pmem_model::errno::KNOWN`]), whose numbers a test checks against
/// this target's.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    p2pmem_model::errno::name(errno)
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
