//! 10,000 copies and benches in one process leave nothing behind: after a warm-up, the
//! process's open file descriptors (`/proc/self/fd`), memory mappings (`/proc/self/maps`,
//! where every io_uring ring and buffer shows up) and resident memory (`VmRSS`) are
//! measured, then 10,000 operations run (copies through io_uring and through pread/pwrite,
//! benches of two jobs, each on its own thread, and a copy refused up front), and the same
//! three are measured again: the fd and mapping counts must be equal, and RSS may grow by
//! at most 4 MiB (the allocator keeps freed memory). Its own test binary, so no other test
//! opens files meanwhile. The figures are printed (README, "Faults").

#![cfg(test)]

use p2pmem_linux::bench::{prepare as bench_prepare, BenchRequest, Rw};
use p2pmem_linux::copy::{prepare, CopyRequest, EngineChoice, Via};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Operations measured (after the warm-up).
const RUNS: usize = 10_000;
/// Operations before the first measurement (the allocator's and io_uring's first
/// allocations are not leaks).
const WARM_UP: usize = 200;
/// Bytes each copy moves.
const LEN: usize = 256 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    fds: usize,
    maps: usize,
    rss_kib: u64,
}

fn usage() -> Usage {
    let fds = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .count();
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    Usage { fds, maps, rss_kib }
}

/// A scratch directory on a file system with O_DIRECT.
fn scratch() -> Option<tempfile::TempDir> {
    p2pmem_linux::testing::scratch_bases()
        .into_iter()
        .find_map(|dir| {
            let tmp = tempfile::tempdir_in(dir).ok()?;
            let probe = tmp.path().join("probe");
            std::fs::write(&probe, [0u8; 4096]).ok()?;
            p2pmem_linux::dio::DirectFile::open(&probe, p2pmem_linux::dio::Access::Read).ok()?;
            Some(tmp)
        })
}

fn copy_req(src: &Path, dst: &Path, engine: EngineChoice) -> CopyRequest {
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
        engine,
    }
}

fn bench_req(path: &Path, rw: Rw) -> BenchRequest {
    BenchRequest {
        path: path.to_path_buf(),
        rw,
        bs: 4096,
        depth: 4,
        time: Duration::from_millis(1),
        offset: 0,
        size: None,
        via: Via::Host,
        force: false,
        engine: EngineChoice::Auto,
        seed: 1,
        // Two jobs: each bench also starts and joins two threads with their own rings.
        jobs: 2,
    }
}

/// One of the operations, by turn: copies (io_uring and pread/pwrite), a read and a
/// write bench, and a copy refused up front (overlapping ranges of one file).
fn operation(i: usize, src: &Path, dst: &Path) {
    let cancel = AtomicBool::new(false);
    match i % 5 {
        0 | 1 => {
            let engine = if i.is_multiple_of(5) {
                EngineChoice::Auto
            } else {
                EngineChoice::Sync
            };
            let report = prepare(Path::new("/"), &copy_req(src, dst, engine))
                .expect("prepare")
                .run(&cancel, &mut |_| {})
                .expect("copy");
            assert_eq!(report.bytes, LEN as u64);
        }
        2 | 3 => {
            let rw = if i % 5 == 2 { Rw::Read } else { Rw::Write };
            let path: &PathBuf = &if i % 5 == 2 {
                src.to_path_buf()
            } else {
                dst.to_path_buf()
            };
            let report = bench_prepare(Path::new("/"), &bench_req(path, rw))
                .expect("prepare bench")
                .run(&cancel)
                .expect("bench");
            assert!(report.ios > 0);
        }
        _ => {
            let mut req = copy_req(src, src, EngineChoice::Auto);
            req.dst_offset = Some(4096);
            assert!(
                prepare(Path::new("/"), &req).is_err(),
                "an overlap is refused"
            );
        }
    }
}

#[test]
fn ten_thousand_copies_and_benches_leave_no_fds_mappings_or_memory_behind() {
    let Some(dir) = scratch() else {
        p2pmem_linux::testing::skipped("SKIPPED: no file system here supports O_DIRECT");
        return;
    };
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    let data: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    std::fs::write(&dst, vec![0u8; LEN]).unwrap();
    for i in 0..WARM_UP {
        operation(i, &src, &dst);
    }
    let before = usage();
    let started = Instant::now();
    for i in 0..RUNS {
        operation(i, &src, &dst);
    }
    let secs = started.elapsed().as_secs_f64();
    let after = usage();
    eprintln!(
        "{RUNS} operations in {secs:.1} s: fds {} -> {}, mappings {} -> {}, RSS {} KiB -> {} KiB",
        before.fds, after.fds, before.maps, after.maps, before.rss_kib, after.rss_kib
    );
    assert_eq!(after.fds, before.fds, "file descriptors leaked");
    assert_eq!(after.maps, before.maps, "mappings leaked");
    assert!(
        after.rss_kib <= before.rss_kib + 4096,
        "RSS grew by {} KiB",
        after.rss_kib.saturating_sub(before.rss_kib)
    );
    // The write benches overwrote the destination; one more copy must still be right.
    operation(0, &src, &dst);
    assert_eq!(std::fs::read(&dst).unwrap(), data);
}
