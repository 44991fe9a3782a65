//! io_uring behind the [`Queue`] interface: plain `IORING_OP_READ`/`IORING_OP_WRITE`
//! with a raw buffer pointer, never registered ("fixed") buffers, because registering
//! pins pages long-term and the kernel never allows that for p2pmem
//! (kernel-p2pdma §5.3: `FOLL_LONGTERM` with `FOLL_PCI_P2PDMA` is EOPNOTSUPP).
//!
//! The kernel keeps using a buffer after the push returns, so this type owns the buffer
//! and keeps every in-flight range in a table keyed by `user_data` until its completion
//! is reaped; it refuses overlapping requests and offers no CPU access to the buffer at
//! all. Drop waits for every outstanding completion before the buffer is freed, and
//! leaks the buffer if it cannot.

#![expect(
    unsafe_code,
    reason = "pushing io_uring submission entries whose buffers the kernel uses after the push returns"
)]

use super::queue::{Completion, Dir, PushError, Queue};
use crate::p2pbuf::{DmaBuffer, Location};
use io_uring::{opcode, register::Probe, squeue, types, IoUring};
use rustix::fd::{AsRawFd, BorrowedFd};
use std::io;

/// Most requests in flight (the ring is sized to the next power of two).
pub const MAX_DEPTH: usize = 1024;

/// `IORING_ENTER_GETEVENTS` (include/uapi/linux/io_uring.h, Linux 5.1).
const GETEVENTS: u32 = 1;

/// A buffer range `[off, end)` the kernel owns until its completion is reaped, and the
/// caller's tag for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    tag: u64,
    off: usize,
    end: usize,
}

/// Why a request cannot join the ones in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conflict {
    /// Its tag is in flight.
    Tag,
    /// Its buffer range overlaps one in flight.
    Range,
}

/// The requests in flight, each in an entry whose index is the `user_data` the kernel
/// carries for it: a completion finds its entry by index, and a push checks its tag and
/// range against every entry in one branch-free pass over flat arrays (the depth's worth),
/// which the compiler vectorizes. It was a `BTreeMap` by tag, with a lookup, a walk of
/// every entry, an insert and a remove a request: `bench --jobs 4`, 4 KiB random reads at
/// depth 32 from a memory-backed loop device, spent 337-406 ns of user time a request
/// with it and 206-258 with this table (3 alternated rounds, `perf stat`; README,
/// Benchmarks).
#[derive(Debug, Default)]
struct Table {
    /// Each entry's tag (stale in a free entry).
    tags: Vec<u64>,
    /// Each entry's range; a free entry's is `[FREE, 0)`, which overlaps nothing, and no
    /// request in flight starts at `FREE` (its end is at most the buffer's length).
    offs: Vec<usize>,
    ends: Vec<usize>,
    /// Indices of the free entries.
    free: Vec<usize>,
}

/// The start of a free entry's range.
const FREE: usize = usize::MAX;

impl Table {
    /// Whether `p` may join the requests in flight (a tag in flight is reported before an
    /// overlap).
    fn conflict(&self, p: &Pending) -> Option<Conflict> {
        let mut tag = false;
        for (&t, &off) in self.tags.iter().zip(&self.offs) {
            tag |= (t == p.tag) & (off != FREE);
        }
        if tag {
            return Some(Conflict::Tag);
        }
        let mut overlap = false;
        for (&off, &end) in self.offs.iter().zip(&self.ends) {
            overlap |= (off < p.end) & (p.off < end);
        }
        overlap.then_some(Conflict::Range)
    }

    /// The index the next [`Table::insert`] uses.
    fn vacant(&self) -> usize {
        self.free.last().copied().unwrap_or(self.tags.len())
    }

    /// Enters `p` (checked with [`Table::conflict`]) at [`Table::vacant`].
    fn insert(&mut self, p: Pending) {
        debug_assert!(p.off != FREE, "a request's range starts inside its buffer");
        match self.free.pop() {
            Some(i) => {
                self.tags[i] = p.tag;
                self.offs[i] = p.off;
                self.ends[i] = p.end;
            }
            None => {
                self.tags.push(p.tag);
                self.offs.push(p.off);
                self.ends.push(p.end);
            }
        }
    }

    /// Takes the entry at `index` out (`None` if there is none).
    fn take(&mut self, index: u64) -> Option<Pending> {
        let i = usize::try_from(index).ok()?;
        if *self.offs.get(i)? == FREE {
            return None;
        }
        let p = Pending {
            tag: self.tags[i],
            off: self.offs[i],
            end: self.ends[i],
        };
        self.offs[i] = FREE;
        self.ends[i] = 0;
        self.free.push(i);
        Some(p)
    }

    fn len(&self) -> usize {
        self.tags.len() - self.free.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An io_uring that has been set up and can do READ and WRITE.
pub struct Ring {
    ring: IoUring,
    /// Requests the queue is sized for.
    depth: usize,
    /// Set up disabled (`IORING_SETUP_R_DISABLED`) for a single issuer: the thread that
    /// first uses the queue enables it and becomes that issuer.
    enable: bool,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("depth", &self.depth)
            .field("single_issuer", &self.enable)
            .finish()
    }
}

/// How a ring is set up, tried in this order until the kernel accepts one; fio 3.33
/// sets its rings up the same way and falls back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// `IORING_SETUP_COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN` (Linux 6.1), set up
    /// disabled (`R_DISABLED`, 5.10) so that the thread that runs the queue, not the one
    /// that made it, is the single issuer. Completions are then posted only when that
    /// thread enters io_uring asking for events (`UringQueue` asks at every submit and
    /// wait), and the kernel never interrupts it to post them: on 2 cores,
    /// with a loop device's kernel threads competing for them, 4 KiB random reads at
    /// depth 32 moved 1,487 against 1,089 MiB/s, 64 KiB sequential reads 4,965 against
    /// 3,782 (README, Benchmarks).
    Deferred,
    /// `IORING_SETUP_COOP_TASKRUN` alone (Linux 5.19).
    Cooperative,
    /// No flags (Linux 5.6).
    Plain,
}

impl Setup {
    const ORDER: [Self; 3] = [Self::Deferred, Self::Cooperative, Self::Plain];

    fn build(self, entries: u32) -> io::Result<IoUring> {
        let mut builder = IoUring::builder();
        match self {
            Self::Deferred => {
                builder
                    .setup_coop_taskrun()
                    .setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_r_disabled();
            }
            Self::Cooperative => {
                builder.setup_coop_taskrun();
            }
            Self::Plain => {}
        }
        builder.build(entries)
    }
}

/// The first setup the kernel accepts: an older kernel refuses flags it does not know
/// with EINVAL; any other error ends the search.
fn first_accepted<T>(mut build: impl FnMut(Setup) -> io::Result<T>) -> io::Result<(T, Setup)> {
    let einval = libc_einval();
    let mut last = None;
    for setup in Setup::ORDER {
        match build(setup) {
            Ok(t) => return Ok((t, setup)),
            Err(e) if e.raw_os_error() == Some(einval) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(einval)))
}

impl Ring {
    /// Sets up a ring for `depth` requests in flight and probes for `IORING_OP_READ`
    /// and `IORING_OP_WRITE` (Linux 5.6). Fails when io_uring is missing, disabled
    /// (`kernel.io_uring_disabled`, seccomp: EPERM/ENOSYS) or too old (EOPNOTSUPP).
    pub fn open(depth: usize) -> io::Result<Self> {
        let depth = depth.clamp(1, MAX_DEPTH);
        let entries = u32::try_from(depth.next_power_of_two())
            .map_err(|_| io::Error::from_raw_os_error(libc_einval()))?;
        let (ring, setup) = first_accepted(|setup| setup.build(entries))?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe).map_err(|_| {
            io::Error::from_raw_os_error(rustix::io::Errno::OPNOTSUPP.raw_os_error())
        })?;
        if !probe.is_supported(opcode::Read::CODE) || !probe.is_supported(opcode::Write::CODE) {
            return Err(io::Error::from_raw_os_error(
                rustix::io::Errno::OPNOTSUPP.raw_os_error(),
            ));
        }
        Ok(Self {
            ring,
            depth,
            enable: setup == Setup::Deferred,
        })
    }
}

/// When queued requests are handed to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submit {
    /// Each request as it is queued, as fio does by default (`iodepth_batch_submit=1`):
    /// the device sees requests of exactly the size asked for. A batch of adjacent
    /// requests submitted together is merged by the block layer (a 4 KiB sequential bench
    /// at depth 8 issued 30,112 device reads for 80,172 requests, 2.7 per read, on a loop
    /// device: `block:block_rq_issue`), which would make `bench`'s IOPS, figures per
    /// request, those of larger requests than fio's.
    Each,
    /// Two at a time: once two requests are queued, and at every wait. For `bench`'s
    /// random requests: half the system calls of [`Submit::Each`], and still no merged
    /// requests, because io_uring plugs the block layer only for a call that hands it
    /// more than two (`io_submit_state_start`: `need_plug = max_ios > 2`), so each
    /// request reaches the driver as io_uring issues it, as one device request of its own
    /// size (Linux 6.18, measured: a 4 KiB sequential bench at depth 8 with 4 jobs made
    /// 437,560 requests and as many device reads, none merged). 4 KiB random reads at
    /// depth 32 with 4 jobs from a memory-backed loop device, alternated with fio:
    /// 0.98-1.13 of it two at a time, 0.96-1.02 each at once; between files on the virtio
    /// disk level. Sequential reads at depth 8 with one job from that device were slower
    /// two at a time (0.86 and 0.88 of fio, README, Benchmarks), so they go each at once.
    Pairs,
    /// Once `submit_batch(depth)` requests are queued, and at every wait. For the copy,
    /// which moves bytes: merged requests are fewer device operations for the same bytes.
    Gathered,
}

/// Requests queued before they are handed to the kernel ([`Submit::Gathered`]), for a
/// queue of `depth`: half the depth, at most 8, so that at least half the queue stays in
/// flight while the rest is gathered. Submitting each request at once keeps a loop device
/// whose kernel threads share the CPUs with the submitter busiest; gathering them lets
/// the block layer merge adjacent requests for a disk. Measured on 2 cores (README,
/// Benchmarks), at depth 8: 64 KiB copies 1,346 and 921 MiB/s gathering 4 (memory- and
/// disk-backed source), 1,260 and 819 one at a time, 1,065 and 840 gathering all 8. At
/// depth 32 (the default for small chunks), 4 alternated rounds of 256 MiB at 4 KiB
/// chunks: gathering 8 moved 369-415 MiB/s between loop devices apart against 340-355
/// gathering 4, and 228-296 against 237-249 between two files on one disk; at 64 KiB
/// and 1 MiB the two were level within the rounds' spread.
pub fn submit_batch(depth: usize) -> usize {
    (depth / 2).clamp(1, 8)
}

fn libc_einval() -> i32 {
    rustix::io::Errno::INVAL.raw_os_error()
}

/// What an io_uring setup errno usually means.
pub fn unavailable_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error().map(rustix::io::Errno::from_raw_os_error) {
        Some(rustix::io::Errno::NOSYS) => {
            "this kernel has no io_uring, or a seccomp filter hides it"
        }
        Some(rustix::io::Errno::PERM | rustix::io::Errno::ACCESS) => {
            "io_uring is disabled (sysctl kernel.io_uring_disabled, or a seccomp/LSM policy)"
        }
        Some(rustix::io::Errno::OPNOTSUPP) => {
            "the kernel's io_uring lacks IORING_OP_READ/WRITE (needs Linux 5.6)"
        }
        Some(rustix::io::Errno::NOMEM) => "no memory for the ring (RLIMIT_MEMLOCK on old kernels)",
        _ => "io_uring setup failed",
    }
}

/// io_uring over one owned buffer.
pub struct UringQueue {
    ring: IoUring,
    /// Every range the kernel may be using; the kernel's `user_data` is its index.
    pending: Table,
    /// `None` only after Drop leaked it.
    buf: Option<Box<dyn DmaBuffer>>,
    location: Location,
    buf_len: usize,
    /// Entries in the submission queue the kernel has not been told about.
    unsubmitted: usize,
    /// Submit once this many are queued (1, or [`submit_batch`]).
    batch: usize,
    /// The ring is still disabled: the first submit enables it.
    enable: bool,
}

impl std::fmt::Debug for UringQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringQueue")
            .field("in_flight", &self.pending.len())
            .field("location", &self.location)
            .finish()
    }
}

impl UringQueue {
    /// A queue over `buf` on `ring`, handing requests to the kernel as `submit` says.
    pub fn new(ring: Ring, buf: Box<dyn DmaBuffer>, submit: Submit) -> Self {
        Self {
            batch: match submit {
                Submit::Each => 1,
                Submit::Pairs => 2,
                Submit::Gathered => submit_batch(ring.depth),
            },
            enable: ring.enable,
            ring: ring.ring,
            pending: Table::default(),
            location: buf.location(),
            buf_len: buf.len(),
            buf: Some(buf),
            unsubmitted: 0,
        }
    }

    /// Enables a ring set up disabled, making the calling thread its single issuer.
    fn enabled(&mut self) -> io::Result<()> {
        if self.enable {
            self.ring.submitter().register_enable_rings()?;
            self.enable = false;
        }
        Ok(())
    }

    /// `io_uring_enter(to_submit, min_complete, GETEVENTS)`, as fio 3.33's io_uring engine
    /// calls it both to submit and to wait: GETEVENTS also runs the completions the kernel
    /// deferred to this thread (`DEFER_TASKRUN` posts them only then), so that they are in
    /// the ring when it is next reaped, without waiting.
    fn enter(&self, to_submit: u32, min_complete: u32) -> io::Result<usize> {
        // SAFETY: no argument is passed (a null pointer, without EXT_ARG); every entry up
        // to the ring's tail was pushed by `push`, which keeps its buffer range alive
        // until its completion is reaped.
        unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(to_submit, min_complete, GETEVENTS, None)
        }
    }

    /// Hands every queued entry to the kernel, first enabling a ring set up disabled
    /// (the calling thread becomes its single issuer), and lets it post the completions
    /// it deferred.
    fn submit(&mut self) -> io::Result<()> {
        if self.unsubmitted > 0 {
            self.enabled()?;
            let queued = u32::try_from(self.ring.submission().len()).unwrap_or(u32::MAX);
            self.enter(queued, 0)?;
            self.unsubmitted = self.ring.submission().len();
        }
        Ok(())
    }

    /// Requests queued and not yet handed to the kernel.
    #[cfg(test)]
    pub(crate) fn unsubmitted(&self) -> usize {
        self.unsubmitted
    }

    /// Completions the kernel has posted to the ring and nobody reaped yet.
    #[cfg(test)]
    pub(crate) fn posted(&mut self) -> usize {
        self.ring.completion().len()
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        for cqe in self.ring.completion() {
            // Every entry the kernel completes was pushed with its table index.
            let taken = self.pending.take(cqe.user_data());
            debug_assert!(taken.is_some(), "a completion for no request in flight");
            let Some(p) = taken else {
                continue;
            };
            let res = cqe.result();
            let result = usize::try_from(res).map_err(|_| io::Error::from_raw_os_error(-res));
            out.push(Completion {
                user_data: p.tag,
                result,
            });
        }
    }
}

impl Queue for UringQueue {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn location(&self) -> Location {
        self.location
    }

    fn buffer_len(&self) -> usize {
        self.buf_len
    }

    fn push(
        &mut self,
        dir: Dir,
        fd: BorrowedFd<'_>,
        buf_off: usize,
        len: usize,
        file_off: u64,
        user_data: u64,
    ) -> Result<(), PushError> {
        let out_of_buffer = PushError::OutOfBuffer {
            offset: buf_off,
            len,
            buf_len: self.buf_len,
        };
        let Some(buf) = self.buf.as_mut() else {
            return Err(out_of_buffer);
        };
        let len32 = u32::try_from(len).map_err(|_| PushError::TooLong(len))?;
        let range = Pending {
            tag: user_data,
            off: buf_off,
            end: buf_off.saturating_add(len),
        };
        let conflict = self.pending.conflict(&range);
        if conflict == Some(Conflict::Tag) {
            return Err(PushError::DuplicateTag(user_data));
        }
        // An end past usize::MAX saturated, and no buffer is that long.
        if range.end > self.buf_len {
            return Err(out_of_buffer);
        }
        if conflict == Some(Conflict::Range) {
            return Err(PushError::Busy {
                offset: buf_off,
                len,
            });
        }
        let target = types::Fd(fd.as_raw_fd());
        let entry: squeue::Entry = match dir {
            Dir::Read => {
                let io = buf
                    .io_mut(buf_off, len)
                    .map_err(|_| out_of_buffer.clone())?;
                opcode::Read::new(target, io.addr() as *mut u8, len32)
                    .offset(file_off)
                    .build()
            }
            Dir::Write => {
                let io = buf.io(buf_off, len).map_err(|_| out_of_buffer.clone())?;
                opcode::Write::new(target, io.addr() as *const u8, len32)
                    .offset(file_off)
                    .build()
            }
        }
        .user_data(self.pending.vacant() as u64);
        if self.ring.submission().is_full() {
            self.submit().map_err(|_| PushError::Full)?;
        }
        // SAFETY: the entry points at `[buf_off, buf_off + len)` of `self.buf`, checked to
        // lie inside it by `io`/`io_mut` above. The buffer is owned by `self` and lives at
        // a fixed address (a heap allocation or an mmap behind a Box); it is freed only
        // after Drop has reaped every completion in `pending` (or never, if it cannot).
        // The range is entered in `pending` below and no other request may overlap it
        // until its completion is reaped, and this type gives no CPU access to the
        // buffer, so nothing else reads or writes those bytes while the kernel owns
        // them. The descriptor is only a number to the kernel: the engine keeps the
        // endpoints open for the queue's whole life.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        pushed.map_err(|_| PushError::Full)?;
        self.pending.insert(range);
        self.unsubmitted += 1;
        if self.unsubmitted >= self.batch {
            // A failed submit leaves the entries queued: `wait` submits them again and
            // reports the error.
            let _ = self.submit();
        }
        Ok(())
    }

    fn wait(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Submit, reap what the ring holds, and only when it holds nothing wait in a
        // second io_uring_enter (as fio does). One combined submit-and-wait call left every
        // request on a loop device about one timer tick (4 ms) late on Linux 6.18: 334
        // against 12,000 IOPS at depth 1, 4 KiB (`p2pmem bench`, scripts/bench).
        // Anything in flight was submitted (or is submitted here), so the ring is enabled.
        self.submit()?;
        let before = out.len();
        self.reap(out);
        if out.len() == before {
            self.enter(0, 1)?;
            self.reap(out);
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

impl Drop for UringQueue {
    /// With a single issuer (`Setup::Deferred`) only the thread that ran the queue can
    /// wait: from any other every wait fails (EEXIST) and a buffer with requests still in
    /// flight is leaked below. Every user reaps its requests before the queue is dropped.
    fn drop(&mut self) {
        let mut sink = Vec::new();
        let mut failures = 0;
        while !self.pending.is_empty() && failures < 100 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => failures += 1,
            }
            self.reap(&mut sink);
            sink.clear();
        }
        if !self.pending.is_empty() {
            // The kernel may still write into the buffer: never free it.
            std::mem::forget(self.buf.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(e: rustix::io::Errno) -> io::Error {
        io::Error::from_raw_os_error(e.raw_os_error())
    }

    #[test]
    fn setup_falls_back_on_einval_only() {
        use rustix::io::Errno;
        // A kernel before 6.1 refuses DEFER_TASKRUN, one before 5.19 COOP_TASKRUN too.
        let (_, s) = first_accepted(|s| {
            if s == Setup::Deferred {
                Err(errno(Errno::INVAL))
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(s, Setup::Cooperative);
        let mut tried = Vec::new();
        let (_, s) = first_accepted(|s| {
            tried.push(s);
            if s == Setup::Plain {
                Ok(())
            } else {
                Err(errno(Errno::INVAL))
            }
        })
        .unwrap();
        assert_eq!(s, Setup::Plain);
        assert_eq!(tried, Setup::ORDER);
        // Any other error is the answer: io_uring disabled is not retried.
        let mut n = 0;
        let e = first_accepted::<()>(|_| {
            n += 1;
            Err(errno(Errno::PERM))
        })
        .unwrap_err();
        assert_eq!((e.raw_os_error(), n), (Some(Errno::PERM.raw_os_error()), 1));
        let e = first_accepted::<()>(|_| Err(errno(Errno::INVAL))).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(Errno::INVAL.raw_os_error()));
    }

    fn range(tag: u64, off: usize, len: usize) -> Pending {
        Pending {
            tag,
            off,
            end: off + len,
        }
    }

    #[test]
    fn the_table_refuses_a_tag_or_a_range_in_flight_and_reuses_indices() {
        let mut t = Table::default();
        for (i, p) in [range(7, 0, 4096), range(9, 8192, 4096)]
            .into_iter()
            .enumerate()
        {
            assert_eq!((t.conflict(&p), t.vacant()), (None, i));
            t.insert(p);
        }
        assert_eq!(t.len(), 2);
        // Adjacent ranges do not overlap; one byte more does.
        assert_eq!(t.conflict(&range(1, 4096, 4096)), None);
        assert_eq!(t.conflict(&range(1, 4095, 2)), Some(Conflict::Range));
        assert_eq!(t.conflict(&range(1, 12287, 1)), Some(Conflict::Range));
        assert_eq!(t.conflict(&range(1, 0, 1 << 20)), Some(Conflict::Range));
        // A tag in flight is reported first, even where the range overlaps too.
        assert_eq!(t.conflict(&range(9, 4096, 4096)), Some(Conflict::Tag));
        assert_eq!(t.conflict(&range(9, 0, 4096)), Some(Conflict::Tag));
        // A completion finds its entry by index, once; the index is used again.
        assert_eq!(t.take(0), Some(range(7, 0, 4096)));
        assert_eq!(t.take(0), None);
        assert_eq!(t.take(5), None);
        assert_eq!(t.take(u64::MAX), None);
        assert_eq!((t.len(), t.vacant()), (1, 0));
        assert_eq!(t.conflict(&range(7, 0, 4096)), None);
        t.insert(range(7, 0, 4096));
        assert_eq!((t.len(), t.vacant()), (2, 2));
        assert_eq!(t.take(1), Some(range(9, 8192, 4096)));
        assert_eq!(t.take(0), Some(range(7, 0, 4096)));
        assert!(t.is_empty());
    }

    proptest::proptest! {
        /// Against a model that keeps every request in flight in a list: the same
        /// refusals, and each completion gives back the tag and range it was pushed with.
        #[test]
        fn the_table_agrees_with_a_list(ops in proptest::collection::vec(
            (0u64..12, 0usize..16, 1usize..4, proptest::bool::ANY), 1..200)) {
            let mut t = Table::default();
            let mut model: Vec<(usize, Pending)> = Vec::new();
            for (tag, off, len, complete) in ops {
                if complete && !model.is_empty() {
                    let (index, p) = model.remove(tag as usize % model.len());
                    proptest::prop_assert_eq!(t.take(index as u64), Some(p));
                    continue;
                }
                let p = range(tag, off, len);
                let want = if model.iter().any(|(_, q)| q.tag == tag) {
                    Some(Conflict::Tag)
                } else if model.iter().any(|(_, q)| q.off < p.end && p.off < q.end) {
                    Some(Conflict::Range)
                } else {
                    None
                };
                proptest::prop_assert_eq!(t.conflict(&p), want);
                if want.is_none() {
                    let index = t.vacant();
                    proptest::prop_assert!(model.iter().all(|(i, _)| *i != index));
                    t.insert(p);
                    model.push((index, p));
                }
                proptest::prop_assert_eq!(t.len(), model.len());
            }
        }
    }

    #[test]
    fn half_the_depth_is_gathered_at_most_eight() {
        let got: Vec<usize> = [1, 2, 3, 4, 8, 16, 32, 1024]
            .into_iter()
            .map(submit_batch)
            .collect();
        assert_eq!(got, [1, 1, 1, 2, 4, 8, 8, 8]);
    }
}
