//! Host-tier tests of the copy: regular files on a file system with O_DIRECT (the
//! target directory), host buffers, both engines; a fault-injecting queue for errors in
//! the middle of a copy; loop devices when root and losetup are there.

use super::*;
use crate::p2pbuf::HostBuffer;
use crate::testing::support::{loop_or_skip, read_counters, scratch};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use std::sync::atomic::Ordering;

macro_rules! scratch_or_skip {
    () => {
        match scratch() {
            Some(d) => d,
            None => {
                crate::testing::skipped("SKIPPED: no file system here supports O_DIRECT");
                return;
            }
        }
    };
}

/// Deterministic, position-dependent bytes (a 64-bit LCG), so shifted copies differ.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn request(src: &Path, dst: &Path) -> CopyRequest {
    CopyRequest {
        src: src.to_path_buf(),
        dst: dst.to_path_buf(),
        offset: 0,
        dst_offset: None,
        length: None,
        chunk: 64 << 10,
        depth: Some(4),
        via: Via::Host,
        require_p2p: false,
        force: false,
        engine: EngineChoice::Auto,
    }
}

fn no_cancel() -> AtomicBool {
    AtomicBool::new(false)
}

fn copy(req: &CopyRequest) -> Result<CopyReport, CopyError> {
    let root = Path::new("/");
    prepare(root, req)?.run(&no_cancel(), &mut |_| {})
}

fn verify(req: &CopyRequest, len: u64) -> VerifyReport {
    verify_ranges(
        &req.src,
        req.offset,
        &req.dst,
        req.dst_offset.unwrap_or(req.offset),
        len,
        req.chunk,
        &no_cancel(),
    )
    .unwrap()
}

fn uring_works() -> bool {
    match Ring::open(4) {
        Ok(_) => true,
        Err(e) => {
            crate::testing::skipped(&format!(
                "SKIPPED (io_uring part): io_uring unavailable here: {e}"
            ));
            false
        }
    }
}

#[test]
fn copies_and_verifies_with_both_engines_and_many_geometries() {
    let d = scratch_or_skip!();
    let src = d.path().join("src.img");
    let data = pattern(3 << 20, 1);
    std::fs::write(&src, &data).unwrap();
    let mut engines = vec![EngineChoice::Sync];
    if uring_works() {
        engines.push(EngineChoice::Uring);
    }
    let mut runs = 0;
    for engine in engines {
        for (chunk, depth) in [
            (4096, 1),
            (4096, 8),
            (64 << 10, 3),
            (1 << 20, 8),
            (2 << 20, 2),
        ] {
            let dst = d.path().join(format!("dst-{engine:?}-{chunk}-{depth}.img"));
            let mut req = request(&src, &dst);
            req.chunk = chunk;
            req.depth = Some(depth);
            req.engine = engine;
            let p = prepare(Path::new("/"), &req).unwrap();
            assert_eq!(
                p.engine(),
                if engine == EngineChoice::Sync {
                    "sync"
                } else {
                    "io_uring"
                }
            );
            let r = p.run(&no_cancel(), &mut |_| {}).unwrap();
            assert_eq!(r.bytes, 3 << 20);
            assert_eq!(r.location, Location::Host);
            assert!(r.created);
            if engine == EngineChoice::Uring && depth > 1 {
                assert!(r.max_in_flight > 1, "{r:?}");
            }
            // `depth` reads and `depth` writes.
            assert!(r.max_in_flight <= 2 * depth, "{r:?}");
            assert_eq!(
                std::fs::read(&dst).unwrap(),
                data,
                "{engine:?} {chunk} {depth}"
            );
            let v = verify(&req, 3 << 20);
            assert!(v.ok(), "{v:?}");
            assert_eq!(v.chunks, (3u64 << 20).div_ceil(chunk.max(1)));
            runs += 1;
        }
    }
    assert!(runs >= 5);
}

#[test]
fn offset_length_and_destination_offset_touch_only_that_range() {
    let d = scratch_or_skip!();
    let src = d.path().join("src.img");
    let dst = d.path().join("dst.img");
    let data = pattern(1 << 20, 2);
    let old = pattern(1 << 20, 3);
    std::fs::write(&src, &data).unwrap();
    std::fs::write(&dst, &old).unwrap();
    let mut req = request(&src, &dst);
    req.offset = 8192;
    req.dst_offset = Some(65536);
    req.length = Some(200 << 10);
    req.chunk = 16 << 10;
    let r = copy(&req).unwrap();
    assert_eq!(
        (r.bytes, r.src_offset, r.dst_offset),
        (200 << 10, 8192, 65536)
    );
    assert!(!r.created);
    let got = std::fs::read(&dst).unwrap();
    let (a, b) = (65536, 65536 + (200 << 10));
    assert_eq!(&got[..a], &old[..a]);
    assert_eq!(&got[a..b], &data[8192..8192 + (200 << 10)]);
    assert_eq!(&got[b..], &old[b..]);
    assert!(verify(&req, 200 << 10).ok());
    // Misaligned offsets never reach the kernel.
    req.offset = 100;
    let e = prepare(Path::new("/"), &req).unwrap_err();
    assert!(
        matches!(
            e,
            CopyError::Plan(PlanError::Misaligned { offset: 100, .. })
        ),
        "{e}"
    );
}

#[test]
fn a_source_that_ends_mid_block_gets_its_tail_through_host_memory() {
    let d = scratch_or_skip!();
    let src = d.path().join("odd.bin");
    let dst = d.path().join("odd.copy");
    let data = pattern(100_000, 4);
    std::fs::write(&src, &data).unwrap();
    let req = request(&src, &dst);
    let r = copy(&req).unwrap();
    assert_eq!(r.bytes, 100_000);
    assert_eq!(r.tail_bytes_via_host, 100_000 % 512);
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    let v = verify(&req, 100_000);
    assert!(v.ok(), "{v:?}");
}

#[test]
fn overlapping_ranges_of_one_file_are_refused_unless_forced() {
    let d = scratch_or_skip!();
    let f = d.path().join("one.img");
    let data = pattern(1 << 20, 5);
    std::fs::write(&f, &data).unwrap();
    let mut req = request(&f, &f);
    req.length = Some(256 << 10);
    req.dst_offset = Some(128 << 10);
    let e = prepare(Path::new("/"), &req).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CopyError::Overlap { .. }), "{msg}");
    assert!(
        msg.contains("[0, 262144)") && msg.contains("[131072, 393216)") && msg.contains("--force"),
        "{msg}"
    );
    // A hard link is the same file.
    let link = d.path().join("link.img");
    std::fs::hard_link(&f, &link).unwrap();
    let mut via_link = req.clone();
    via_link.dst = link;
    assert!(matches!(
        prepare(Path::new("/"), &via_link),
        Err(CopyError::Overlap { .. })
    ));
    // Disjoint ranges of the same file are fine.
    req.dst_offset = Some(512 << 10);
    copy(&req).unwrap();
    let got = std::fs::read(&f).unwrap();
    assert_eq!(&got[512 << 10..768 << 10], &data[..256 << 10]);
    // --force lets an overlap through, and says so.
    req.dst_offset = Some(128 << 10);
    req.force = true;
    let p = prepare(Path::new("/"), &req).unwrap();
    assert!(
        p.notes().iter().any(|n| n.contains("overlap")),
        "{:?}",
        p.notes()
    );
}

#[test]
fn verify_catches_a_byte_flipped_after_the_copy() {
    let d = scratch_or_skip!();
    let src = d.path().join("src.img");
    let dst = d.path().join("dst.img");
    std::fs::write(&src, pattern(1 << 20, 6)).unwrap();
    let mut req = request(&src, &dst);
    req.chunk = 128 << 10;
    copy(&req).unwrap();
    assert!(verify(&req, 1 << 20).ok());
    // Corrupt one byte of the destination through the page cache; the O_DIRECT re-read
    // must see it (the kernel writes dirty pages back before a direct read).
    let f = std::fs::OpenOptions::new().write(true).open(&dst).unwrap();
    let at = 300_000u64;
    let mut b = [0u8; 1];
    std::fs::File::open(&dst)
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    f.sync_all().unwrap();
    let v = verify(&req, 1 << 20);
    assert_eq!(
        v.mismatches,
        vec![ByteRange {
            start: 256 << 10,
            end: 384 << 10
        }]
    );
    assert_eq!(v.hash, "blake3");
    // A destination that is too short is a mismatch too, not an error.
    f.set_len(900_000).unwrap();
    let v = verify(&req, 1 << 20);
    assert_eq!(v.mismatches.last().map(|r| r.end), Some(1 << 20), "{v:?}");
}

#[test]
fn cancellation_stops_between_chunks_and_says_what_was_written() {
    let d = scratch_or_skip!();
    let src = d.path().join("src.img");
    std::fs::write(&src, pattern(1 << 20, 7)).unwrap();
    for engine in [EngineChoice::Sync, EngineChoice::Auto] {
        // Cancelled before it starts: nothing written.
        let dst = d.path().join(format!("a-{engine:?}.img"));
        let mut req = request(&src, &dst);
        req.engine = engine;
        let cancel = AtomicBool::new(true);
        let e = prepare(Path::new("/"), &req)
            .unwrap()
            .run(&cancel, &mut |_| {})
            .unwrap_err();
        assert!(matches!(e, CopyError::Interrupted { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("nothing of the planned [0, 1048576) of"),
            "{e}"
        );
        // Cancelled after the first completed write: the written set is exact.
        let dst = d.path().join(format!("b-{engine:?}.img"));
        let mut req = request(&src, &dst);
        req.engine = engine;
        req.depth = Some(1);
        let cancel = AtomicBool::new(false);
        let e = prepare(Path::new("/"), &req)
            .unwrap()
            .run(&cancel, &mut |_| cancel.store(true, Ordering::Relaxed))
            .unwrap_err();
        let p = e.progress().unwrap();
        assert_eq!(p.written.to_string(), "bytes [0, 65536)", "{e}");
        assert!(
            e.to_string()
                .starts_with("interrupted; of the planned [0, 1048576)"),
            "{e}"
        );
    }
}

#[test]
fn a_source_truncated_mid_copy_is_reported_with_the_bytes_written() {
    let d = scratch_or_skip!();
    let src = d.path().join("src.img");
    let dst = d.path().join("dst.img");
    std::fs::write(&src, pattern(1 << 20, 8)).unwrap();
    let mut req = request(&src, &dst);
    req.engine = EngineChoice::Sync;
    req.depth = Some(1);
    let p = prepare(Path::new("/"), &req).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&src)
        .unwrap()
        .set_len(256 << 10)
        .unwrap();
    let e = p.run(&no_cancel(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(e, CopyError::ShortSource { file_off, .. } if file_off == 256 << 10),
        "{e}"
    );
    assert_eq!(
        e.progress().unwrap().written.to_string(),
        "bytes [0, 262144)"
    );
}

/// A [`SyncQueue`] (each request runs as it is pushed; its completion comes at the next
/// wait) that fails the `fail_at`-th write (counting from 1) with EIO without doing it, a
/// device error in the middle of a copy, and hands over at most `writes_per_wait` write
/// completions at each wait, oldest first, the rest held back: a destination slower than
/// the source.
struct FaultQueue {
    inner: SyncQueue,
    /// Read completions taken from `inner` early, for the next wait.
    reads: Vec<Completion>,
    held: std::collections::VecDeque<Completion>,
    writes: usize,
    fail_at: Option<usize>,
    writes_per_wait: usize,
}

impl FaultQueue {
    /// Over a host buffer of `chunks` chunks of 64 KiB.
    fn new(chunks: usize, fail_at: Option<usize>, writes_per_wait: usize) -> Self {
        Self {
            inner: SyncQueue::new(Box::new(HostBuffer::new(chunks * (64 << 10)).unwrap())),
            reads: Vec::new(),
            held: Default::default(),
            writes: 0,
            fail_at,
            writes_per_wait,
        }
    }
}

impl Queue for FaultQueue {
    fn name(&self) -> &'static str {
        "fault"
    }
    fn location(&self) -> Location {
        self.inner.location()
    }
    fn buffer_len(&self) -> usize {
        self.inner.buffer_len()
    }
    fn push(
        &mut self,
        dir: Dir,
        fd: rustix::fd::BorrowedFd<'_>,
        buf_off: usize,
        len: usize,
        file_off: u64,
        user_data: u64,
    ) -> Result<(), PushError> {
        if dir == Dir::Read {
            return self.inner.push(dir, fd, buf_off, len, file_off, user_data);
        }
        self.writes += 1;
        if self.fail_at == Some(self.writes) {
            self.held.push_back(Completion {
                user_data,
                result: Err(std::io::Error::from_raw_os_error(5)),
            });
            return Ok(());
        }
        self.inner
            .push(dir, fd, buf_off, len, file_off, user_data)?;
        let mut done = Vec::new();
        // The sync queue's wait only hands over what it already did.
        let _ = self.inner.wait(&mut done);
        for c in done {
            if c.user_data == user_data {
                self.held.push_back(c);
            } else {
                self.reads.push(c);
            }
        }
        Ok(())
    }
    fn wait(&mut self, out: &mut Vec<Completion>) -> std::io::Result<()> {
        out.append(&mut self.reads);
        self.inner.wait(out)?;
        let n = self.writes_per_wait.min(self.held.len());
        out.extend(self.held.drain(..n));
        Ok(())
    }
    fn in_flight(&self) -> usize {
        self.inner.in_flight() + self.reads.len() + self.held.len()
    }
}

fn open_direct(path: &Path, flags: OFlags) -> OwnedFd {
    rustix::fs::open(
        path,
        flags | OFlags::DIRECT | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap()
}

/// Copies 1 MiB of `pattern(_, seed)` in 64 KiB chunks through `queue` at `depth`: the
/// source's bytes, the outcome and what the destination holds. `progress` as the engine's.
fn copy_1mib_through(
    queue: &mut FaultQueue,
    depth: usize,
    seed: u64,
    progress: &mut dyn FnMut(u64),
) -> (Vec<u8>, engine::Outcome, Vec<u8>) {
    let d = scratch().expect("callers check for an O_DIRECT scratch directory");
    let src = d.path().join("src.img");
    let dst = d.path().join("dst.img");
    let data = pattern(1 << 20, seed);
    std::fs::write(&src, &data).unwrap();
    let s = open_direct(&src, OFlags::RDONLY);
    let t = open_direct(&dst, OFlags::RDWR | OFlags::CREATE);
    let side = Side {
        size: 1 << 20,
        block: 512,
        fixed_size: false,
    };
    let plan = Plan::new(side, side, 0, 0, None, 64 << 10).unwrap();
    let out = engine::run(
        queue,
        depth,
        &plan,
        engine::Ends {
            src: s.as_fd(),
            dst: t.as_fd(),
        },
        512,
        &no_cancel(),
        progress,
    );
    let got = std::fs::read(&dst).unwrap_or_default();
    (data, out, got)
}

#[test]
fn a_device_error_mid_copy_stops_new_work_and_leaves_an_exact_written_set() {
    let _ = scratch_or_skip!();
    let mut q = FaultQueue::new(4, Some(6), usize::MAX);
    let mut seen = Vec::new();
    let (data, out, got) = copy_1mib_through(&mut q, 4, 9, &mut |b| seen.push(b));
    // The sync queue runs each request as it is pushed and reports at the next wait:
    // reads 0-3, writes 0-3, reads 4-7, writes 4-7 (write 5 fails), and only then the
    // failure is seen. Chunks 6 and 7 were written before it was: the written set is
    // not a prefix, and it is exact. Nothing after chunk 7 was started.
    assert_eq!(
        out.written.to_string(),
        "bytes [0, 327680), [393216, 524288)"
    );
    match out.stop {
        Some(engine::Stop::Io {
            dir: Dir::Write,
            file_off,
            len,
            ref source,
        }) => {
            assert_eq!((file_off, len), (5 * 65536, 65536));
            assert_eq!(source.raw_os_error(), Some(5));
        }
        ref other => panic!("{other:?}"),
    }
    assert_eq!(seen.last(), Some(&(327_680 + 131_072)));
    assert_eq!(q.in_flight(), 0, "everything in flight was reaped");
    assert_eq!(&got[..327_680], &data[..327_680]);
}

#[test]
fn a_buffer_too_small_for_one_chunk_is_an_error_not_a_hang() {
    let d = scratch_or_skip!();
    let src = d.path().join("src.img");
    std::fs::write(&src, pattern(1 << 20, 10)).unwrap();
    let s = open_direct(&src, OFlags::RDONLY);
    let t = open_direct(&d.path().join("dst.img"), OFlags::RDWR | OFlags::CREATE);
    let side = Side {
        size: 1 << 20,
        block: 512,
        fixed_size: false,
    };
    let plan = Plan::new(side, side, 0, 0, None, 64 << 10).unwrap();
    let mut q = SyncQueue::new(Box::new(HostBuffer::new(8192).unwrap()));
    let out = engine::run(
        &mut q,
        4,
        &plan,
        engine::Ends {
            src: s.as_fd(),
            dst: t.as_fd(),
        },
        512,
        &no_cancel(),
        &mut |_| {},
    );
    assert!(
        matches!(out.stop, Some(engine::Stop::Pool(_))),
        "{:?}",
        out.stop
    );
    assert_eq!(out.written.bytes(), 0);
}

/// A 64 KiB file of `pattern(_, seed)` opened O_DIRECT for reading, and an io_uring queue
/// of `depth` over a `buf_len`-byte host buffer, gathering requests; `None` (said as
/// skipped) without io_uring or an O_DIRECT scratch directory.
fn uring_queue_over_a_file(
    depth: usize,
    buf_len: usize,
    seed: u64,
) -> Option<(tempfile::TempDir, OwnedFd, UringQueue)> {
    uring_queue_submitting(depth, buf_len, seed, Submit::Gathered)
}

/// [`uring_queue_over_a_file`], handing requests to the kernel as `submit` says.
fn uring_queue_submitting(
    depth: usize,
    buf_len: usize,
    seed: u64,
    submit: Submit,
) -> Option<(tempfile::TempDir, OwnedFd, UringQueue)> {
    let Ok(ring) = Ring::open(depth) else {
        crate::testing::skipped("SKIPPED: io_uring unavailable here");
        return None;
    };
    let Some(d) = scratch() else {
        crate::testing::skipped("SKIPPED: no file system here supports O_DIRECT");
        return None;
    };
    let path = d.path().join("f.img");
    std::fs::write(&path, pattern(1 << 16, seed)).unwrap();
    let fd = open_direct(&path, OFlags::RDONLY);
    let q = UringQueue::new(ring, Box::new(HostBuffer::new(buf_len).unwrap()), submit);
    Some((d, fd, q))
}

#[test]
fn a_submit_lets_the_kernel_post_the_completions_it_deferred() {
    // With DEFER_TASKRUN (Linux 6.1) the kernel posts a finished request's completion only
    // when this thread enters io_uring asking for events. fio's engine asks at every
    // submit, so that its next reap finds them without waiting; so does the queue: the
    // second push's submit posts the first request's completion, done by then.
    let Some((_d, fd, mut q)) = uring_queue_submitting(2, 2 * 4096, 13, Submit::Each) else {
        return;
    };
    q.push(Dir::Read, fd.as_fd(), 0, 4096, 0, 1).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    q.push(Dir::Read, fd.as_fd(), 4096, 4096, 4096, 2).unwrap();
    assert!(
        q.posted() >= 1,
        "the first read's completion was not posted"
    );
    let mut out = Vec::new();
    while q.in_flight() > 0 {
        q.wait(&mut out).unwrap();
    }
    assert_eq!(out.len(), 2);
}

#[test]
fn a_queue_submits_each_request_or_gathers_half_its_depth() {
    // Depth 8: gathering hands requests over four at a time, `Pairs` two at a time,
    // `Each` at once.
    for (submit, left) in [
        (Submit::Each, [0, 0, 0, 0, 0]),
        (Submit::Pairs, [1, 0, 1, 0, 1]),
        (Submit::Gathered, [1, 2, 3, 0, 1]),
    ] {
        let Some((_d, fd, mut q)) = uring_queue_submitting(8, 8 * 4096, 12, submit) else {
            return;
        };
        for (i, want) in left.into_iter().enumerate() {
            let off = i * 4096;
            q.push(Dir::Read, fd.as_fd(), off, 4096, off as u64, i as u64 + 1)
                .unwrap();
            assert_eq!(q.unsubmitted(), want, "{submit:?}, request {i}");
        }
        let mut out = Vec::new();
        while q.in_flight() > 0 {
            q.wait(&mut out).unwrap();
        }
        assert_eq!(q.unsubmitted(), 0);
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|c| c.result.as_ref().ok() == Some(&4096)));
    }
}

#[test]
fn the_uring_queue_guards_its_buffer() {
    let Some((_d, fd, mut q)) = uring_queue_over_a_file(4, 16384, 11) else {
        return;
    };
    q.push(Dir::Read, fd.as_fd(), 0, 8192, 0, 1).unwrap();
    assert_eq!(
        q.push(Dir::Read, fd.as_fd(), 4096, 8192, 0, 2),
        Err(PushError::Busy {
            offset: 4096,
            len: 8192
        })
    );
    assert_eq!(
        q.push(Dir::Read, fd.as_fd(), 8192, 4096, 0, 1),
        Err(PushError::DuplicateTag(1))
    );
    assert!(matches!(
        q.push(Dir::Read, fd.as_fd(), 12288, 8192, 0, 3),
        Err(PushError::OutOfBuffer { .. })
    ));
    q.push(Dir::Read, fd.as_fd(), 8192, 8192, 8192, 4).unwrap();
    assert_eq!(q.in_flight(), 2);
    let mut out = Vec::new();
    while q.in_flight() > 0 {
        q.wait(&mut out).unwrap();
    }
    let mut tags: Vec<(u64, usize)> = out
        .iter()
        .map(|c| (c.user_data, *c.result.as_ref().unwrap()))
        .collect();
    tags.sort();
    assert_eq!(tags, vec![(1, 8192), (4, 8192)]);
    // A request left in flight is reaped by Drop before the buffer goes.
    q.push(Dir::Read, fd.as_fd(), 0, 16384, 0, 5).unwrap();
    drop(q);
}

#[test]
fn a_queue_made_on_one_thread_runs_on_another() {
    // bench makes every job's queue on the main thread and runs it on the job's own:
    // with a single-issuer ring the running thread must be the issuer.
    let Some((_d, fd, mut q)) = uring_queue_over_a_file(8, 1 << 16, 13) else {
        return;
    };
    // 4 KiB block `i` of the file into 4 KiB slot `i` of the buffer, tagged i + 1.
    fn read(q: &mut UringQueue, fd: &OwnedFd, i: usize) {
        let off = i * 4096;
        q.push(Dir::Read, fd.as_fd(), off, 4096, off as u64, i as u64 + 1)
            .unwrap();
    }
    let reaped = std::thread::scope(|s| {
        s.spawn(|| {
            // Fewer requests than a submit batch: `wait` must hand them to the kernel.
            for i in 0..3 {
                read(&mut q, &fd, i);
            }
            let mut out = Vec::new();
            while q.in_flight() > 0 {
                q.wait(&mut out).unwrap();
            }
            // Then many, more than one batch at a time.
            for i in 3..16 {
                read(&mut q, &fd, i);
                if q.in_flight() == 8 {
                    q.wait(&mut out).unwrap();
                }
            }
            while q.in_flight() > 0 {
                q.wait(&mut out).unwrap();
            }
            out
        })
        .join()
        .unwrap()
    });
    let mut tags: Vec<u64> = reaped
        .iter()
        .map(|c| {
            assert_eq!(*c.result.as_ref().unwrap(), 4096);
            c.user_data
        })
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, (1..=16).collect::<Vec<u64>>());
    drop(q);
}

#[test]
fn auto_falls_back_to_host_memory_loudly_for_files_and_require_p2p_refuses() {
    let d = scratch_or_skip!();
    let src = d.path().join("src.img");
    std::fs::write(&src, pattern(65536, 12)).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/truth/s01_switch_cmbmix_fam15/root");
    let mut req = request(&src, &d.path().join("dst.img"));
    req.via = Via::Auto;
    let p = prepare(&root, &req).unwrap();
    assert_eq!(p.route().provider, None);
    let w = p.route().warnings.join("\n");
    assert!(
        w.contains("NO P2P PATH") && w.contains("regular file"),
        "{w}"
    );
    let r = p.run(&no_cancel(), &mut |_| {}).unwrap();
    assert_eq!(r.location, Location::Host);
    req.require_p2p = true;
    let e = prepare(&root, &req).unwrap_err();
    assert!(matches!(e, CopyError::NoP2pPath { .. }), "{e}");
    // An explicit provider with endpoints that cannot take p2pmem is refused up front.
    req.require_p2p = false;
    req.via = Via::Provider("0000:03:00.0".parse().unwrap());
    let e = prepare(&root, &req).unwrap_err();
    assert!(
        matches!(e, CopyError::Placement(PlacementError::P2pRefused { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("--force tries anyway"), "{e}");
    // A created destination is removed again when preparing fails.
    let fresh = d.path().join("never.img");
    let mut req2 = request(&src, &fresh);
    req2.via = Via::Provider("0000:03:00.0".parse().unwrap());
    assert!(prepare(&root, &req2).is_err());
    assert!(!fresh.exists());
    // Not a PCI function at all.
    req.via = Via::Provider("0000:7f:00.0".parse().unwrap());
    let e = prepare(&root, &req).unwrap_err();
    assert!(e.to_string().contains("not a PCI function"), "{e}");
}

#[test]
fn via_and_engine_parse() {
    assert_eq!("auto".parse::<Via>(), Ok(Via::Auto));
    assert_eq!("host".parse::<Via>(), Ok(Via::Host));
    assert_eq!(
        "03:00.0".parse::<Via>(),
        Ok(Via::Provider("0000:03:00.0".parse().unwrap()))
    );
    assert!("nvme0".parse::<Via>().unwrap_err().contains("'nvme0'"));
    assert_eq!("uring".parse::<EngineChoice>(), Ok(EngineChoice::Uring));
    assert!("fast".parse::<EngineChoice>().is_err());
}

// ---------------------------------------------------------------------------------
// Loop devices: real block devices (BLKSSZGET, O_EXCL, sysfs). Need root and losetup.
// ---------------------------------------------------------------------------------

#[test]
fn loop_devices_copy_verify_and_refuse_overlap() {
    let Some(a) = loop_or_skip(4 << 20, 512) else {
        return;
    };
    let Some(b) = loop_or_skip(4 << 20, 4096) else {
        return;
    };
    let d = scratch_or_skip!();
    let src = d.path().join("src.img");
    let data = pattern(4 << 20, 13);
    std::fs::write(&src, &data).unwrap();
    // file -> loop (512) -> loop (4096): the 4096-byte block size rules the second copy.
    let mut req = request(&src, &a.dev);
    req.chunk = 256 << 10;
    let r = copy(&req).unwrap();
    assert_eq!(r.bytes, 4 << 20);
    assert!(verify(&req, 4 << 20).ok());
    let mut req = request(&a.dev, &b.dev);
    req.offset = 4096;
    req.length = Some(1 << 20);
    let r = copy(&req).unwrap();
    assert_eq!(r.bytes, 1 << 20);
    assert!(verify(&req, 1 << 20).ok());
    req.offset = 512;
    assert!(matches!(
        prepare(Path::new("/"), &req),
        Err(CopyError::Plan(PlanError::Misaligned { block: 4096, .. }))
    ));
    // A device past its end.
    let mut req = request(&src, &b.dev);
    req.dst_offset = Some(1 << 20);
    assert!(matches!(
        prepare(Path::new("/"), &req),
        Err(CopyError::Plan(PlanError::PastDestination { .. }))
    ));
    // The same device: overlapping ranges refused.
    let mut req = request(&a.dev, &a.dev);
    req.length = Some(1 << 20);
    req.dst_offset = Some(512 << 10);
    let e = prepare(Path::new("/"), &req).unwrap_err();
    assert!(
        matches!(e, CopyError::Overlap { object: "disk", .. }),
        "{e}"
    );
}

#[test]
fn the_default_depth_is_32_in_host_memory_4_in_p2pmem_with_at_most_16_mib_of_buffer() {
    let p2p = Location::P2p("0000:03:00.0".parse().unwrap());
    for (chunk, host, p2pmem) in [
        (0, 32, 4),
        (4 << 10, 32, 4),
        (64 << 10, 32, 4),
        (256 << 10, 32, 4),
        (512 << 10, 16, 4),
        (1 << 20, 8, 4),
        (2 << 20, 4, 4),
        (3 << 20, 2, 2),
        (4 << 20, 2, 2),
        (8 << 20, 1, 1),
        (64 << 20, 1, 1),
        (u64::MAX, 1, 1),
    ] {
        assert_eq!(default_depth(chunk, Location::Host), host, "chunk {chunk}");
        assert_eq!(default_depth(chunk, p2p), p2pmem, "chunk {chunk}");
        // The buffer, twice the depth, stays within 16 MiB unless one read and one write
        // do not fit in it.
        for depth in [host, p2pmem] {
            let bytes = (buffer_chunks(depth, usize::MAX) as u64).saturating_mul(chunk);
            assert!(
                bytes <= 16 << 20 || depth == 1,
                "chunk {chunk} depth {depth}"
            );
        }
    }
}

#[test]
fn a_copy_asks_for_its_depth_or_the_default_where_its_buffer_is_and_never_past_its_chunks() {
    let side = Side {
        size: 64 << 20,
        block: 512,
        fixed_size: true,
    };
    let plan = |len: u64, chunk: u64| Plan::new(side, side, 0, 0, Some(len), chunk).unwrap();
    let cmb: Option<Bdf> = Some("0000:03:00.0".parse().unwrap());
    assert_eq!(copy_depth(None, &plan(64 << 20, 64 << 10), None), 32);
    assert_eq!(copy_depth(None, &plan(64 << 20, 64 << 10), cmb), 4);
    assert_eq!(copy_depth(None, &plan(64 << 20, 1 << 20), None), 8);
    assert_eq!(copy_depth(None, &plan(64 << 20, 1 << 20), cmb), 4);
    assert_eq!(copy_depth(Some(3), &plan(64 << 20, 1 << 20), cmb), 3);
    // Three chunks, the last short: never a fourth read, asked or not.
    assert_eq!(copy_depth(None, &plan(5 << 20, 2 << 20), None), 3);
    assert_eq!(copy_depth(Some(64), &plan(5 << 20, 2 << 20), cmb), 3);
    // Twice the depth in buffer, never more chunks than the copy has, never none.
    assert_eq!(buffer_chunks(32, 4096), 64);
    assert_eq!(buffer_chunks(3, 3), 3);
    assert_eq!(buffer_chunks(1, 1), 1);
    assert_eq!(buffer_chunks(0, 0), 1);
    assert_eq!(buffer_chunks(usize::MAX, usize::MAX), usize::MAX);
    // A short p2pmem pool: half the chunks it mapped, at least 1, never more than asked.
    assert_eq!(depth_for_buffer(8, 16, 16), 8);
    assert_eq!(depth_for_buffer(3, 3, 3), 3);
    assert_eq!(depth_for_buffer(8, 16, 8), 4);
    assert_eq!(depth_for_buffer(8, 16, 1), 1);
    assert_eq!(depth_for_buffer(2, 4, 3), 1);
}

#[test]
fn a_depth_of_0_or_past_half_the_queue_is_refused_before_anything_is_opened() {
    // Nothing is opened: the paths need not exist.
    let mut req = request(Path::new("/nonexistent/src"), Path::new("/nonexistent/dst"));
    for depth in [0, MAX_COPY_DEPTH + 1, MAX_DEPTH] {
        req.depth = Some(depth);
        let e = prepare(Path::new("/"), &req).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("depth {depth} must be between 1 and 512"),
            "{e:?}"
        );
    }
    req.depth = Some(MAX_COPY_DEPTH);
    let e = prepare(Path::new("/"), &req).unwrap_err();
    assert!(!e.to_string().contains("depth"), "{e}");
}

#[test]
fn a_copy_keeps_depth_writes_in_flight_and_reads_ahead_into_the_rest_of_its_buffer() {
    let _ = scratch_or_skip!();
    // Depth 4, a buffer of 8 chunks, a destination slower than the source: the copy
    // has 4 writes in flight, and the other 4 chunks are read ahead meanwhile (a buffer
    // shared by reads and writes without a cap would put up to 8 writes in flight).
    let mut q = FaultQueue::new(8, None, 1);
    let (data, out, got) = copy_1mib_through(&mut q, 4, 11, &mut |_| {});
    assert!(out.stop.is_none(), "{:?}", out.stop);
    assert_eq!(out.written.to_string(), "bytes [0, 1048576)");
    assert_eq!(got, data);
    assert_eq!(out.max_by_dir, [4, 4], "at most 4 reads and 4 writes");
    assert_eq!(out.max_in_flight, 8);
    assert_eq!(q.in_flight(), 0);
}

#[test]
fn a_write_failing_while_chunks_wait_for_a_write_slot_leaves_them_unwritten() {
    let _ = scratch_or_skip!();
    // Depth 2, 4 chunks of buffer: writes 0 and 1 in flight while chunks 2 and 3 wait,
    // read. Write 1 (the first) fails: the chunks waiting are never written, nothing new
    // is read, and the copy returns with exactly what was written.
    let mut q = FaultQueue::new(4, Some(1), 1);
    let (data, out, got) = copy_1mib_through(&mut q, 2, 11, &mut |_| {});
    match out.stop {
        Some(engine::Stop::Io {
            dir: Dir::Write,
            file_off: 0,
            ..
        }) => {}
        ref other => panic!("{other:?}"),
    }
    // Write 2 (chunk 1) was in flight and is reaped; chunks 2 and 3 never were.
    assert_eq!(out.written.to_string(), "bytes [65536, 131072)");
    assert_eq!(got.len(), 2 << 16);
    assert_eq!(&got[65536..], &data[65536..131072]);
    assert_eq!(out.max_by_dir, [2, 2]);
    assert_eq!(q.in_flight(), 0);
}

#[test]
fn a_chunk_read_into_host_memory_is_one_device_request() {
    // The copy's host buffer is in huge pages: a 1 MiB chunk is 16 segments of the loop
    // device's 64 KiB maximum instead of 256 pages, more than its 128 segments a request,
    // so each chunk reaches the device as one read, not two (in base pages: 16 reads).
    let Some(lo) = loop_or_skip(8 << 20, 512) else {
        return;
    };
    let d = scratch_or_skip!();
    let mut req = request(&lo.dev, &d.path().join("out.img"));
    req.chunk = 1 << 20;
    let before = read_counters(&lo.dev);
    let r = copy(&req).unwrap();
    let after = read_counters(&lo.dev);
    let [reads, _, sectors] = [0, 1, 2].map(|i| after[i] - before[i]);
    assert_eq!(r.bytes, 8 << 20);
    assert_eq!(sectors, (8 << 20) / 512);
    assert!(
        (1..=8).contains(&reads),
        "8 chunks of 1 MiB reached the device as {reads} reads"
    );
}

#[test]
fn a_loop_device_held_exclusively_is_refused_unless_forced() {
    let Some(a) = loop_or_skip(1 << 20, 512) else {
        return;
    };
    let d = scratch_or_skip!();
    let src = d.path().join("src.img");
    std::fs::write(&src, pattern(1 << 20, 14)).unwrap();
    // Hold the device the way a mount or md would: an exclusive open.
    let holder = rustix::fs::open(&a.dev, OFlags::RDONLY | OFlags::EXCL, Mode::empty()).unwrap();
    let req = request(&src, &a.dev);
    let e = prepare(Path::new("/"), &req).unwrap_err();
    assert!(
        matches!(e, CopyError::Endpoint(EndpointError::InUse { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("EBUSY"), "{e}");
    let mut forced = req.clone();
    forced.force = true;
    copy(&forced).unwrap();
    drop(holder);
    // The forced copy wrote to the device; when its descriptor closes, udev may probe
    // the device and hold it for a moment, so the plain copy is retried for a bounded
    // time while the kernel still says EBUSY (it must then succeed).
    let mut tries = 0;
    loop {
        match copy(&req) {
            Ok(_) => break,
            Err(CopyError::Endpoint(EndpointError::InUse { .. })) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("the device is free again, yet: {e}"),
        }
    }
}

#[test]
fn a_loop_device_listed_in_mountinfo_is_refused() {
    let Some(a) = loop_or_skip(1 << 20, 512) else {
        return;
    };
    let d = scratch_or_skip!();
    let src = d.path().join("src.img");
    std::fs::write(&src, pattern(1 << 20, 15)).unwrap();
    let st = rustix::fs::stat(&a.dev).unwrap();
    let (maj, min) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
    // A root whose mountinfo says the device is mounted (the real sysfs is not needed).
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("proc/self")).unwrap();
    std::fs::write(
        root.path().join("proc/self/mountinfo"),
        format!(
            "40 1 {maj}:{min} / /srv/data rw,relatime - ext4 {} rw\n",
            a.dev.display()
        ),
    )
    .unwrap();
    let req = request(&src, &a.dev);
    let e = prepare(root.path(), &req).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("mounted at /srv/data (ext4"), "{msg}");
    assert!(msg.contains("--force overrides"), "{msg}");
}
