//! Host-tier tests of the bench: regular files on a file system with O_DIRECT (the
//! target directory), host buffers, both engines; the refusals; loop devices when root
//! and losetup are there (else SKIPPED, said on stderr). Nothing here asserts a speed.

use super::*;
use crate::testing::support::{loop_or_skip, read_counters};
use p2pmem_model::Bdf;
use std::sync::atomic::Ordering;

macro_rules! scratch_or_skip {
    () => {
        match $crate::testing::support::scratch() {
            Some(d) => d,
            None => {
                crate::testing::skipped("SKIPPED: no file system here supports O_DIRECT");
                return;
            }
        }
    };
}
pub(super) use scratch_or_skip;

pub(super) fn request(path: &Path, rw: Rw) -> BenchRequest {
    BenchRequest {
        path: path.to_path_buf(),
        rw,
        bs: 4096,
        depth: 4,
        time: Duration::from_millis(150),
        offset: 0,
        size: None,
        via: Via::Host,
        force: false,
        engine: EngineChoice::Auto,
        seed: 1,
        jobs: 1,
    }
}

pub(super) fn bench(root: &Path, req: &BenchRequest) -> Result<BenchReport, BenchError> {
    prepare(root, req)?.run(&AtomicBool::new(false))
}

pub(super) fn file(dir: &Path, name: &str, len: usize, byte: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, vec![byte; len]).unwrap();
    p
}

/// What every report must say, whatever the speed.
fn check_report(r: &BenchReport, req: &BenchRequest) {
    assert!(r.ios >= 1, "{r:?}");
    assert_eq!(r.bytes, r.ios * req.bs, "whole requests only: {r:?}");
    assert!(r.seconds > 0.0);
    assert_eq!(r.rw, req.rw);
    assert_eq!(r.via, "host");
    let l = r.latency_us;
    assert!(
        l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p99_9 && l.p99_9 <= l.max,
        "{l:?}"
    );
    assert!(l.min > 0.0 && l.mean >= l.min && l.mean <= l.max, "{l:?}");
    assert!((r.iops - r.ios as f64 / r.seconds).abs() < 1e-6 * r.iops.max(1.0));
    let mib = r.bytes as f64 / 1048576.0 / r.seconds;
    assert!((r.mib_per_s - mib).abs() < 1e-6 * mib.max(1.0));
}

#[test]
fn every_pattern_runs_on_a_file_with_both_engines() {
    let d = scratch_or_skip!();
    let f = file(d.path(), "f.img", 1 << 20, 0);
    for engine in [EngineChoice::Auto, EngineChoice::Sync] {
        for rw in [Rw::Read, Rw::Write, Rw::RandRead, Rw::RandWrite] {
            let req = BenchRequest {
                engine,
                ..request(&f, rw)
            };
            let r = bench(Path::new("/"), &req).unwrap();
            check_report(&r, &req);
            assert_eq!(
                r.region,
                Region {
                    start: 0,
                    end: 1 << 20
                }
            );
            assert!(!r.interrupted);
            if engine == EngineChoice::Sync {
                assert_eq!(r.engine, "sync");
            }
        }
    }
    // Benches never grow a file.
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 1 << 20);
}

#[test]
fn writes_stay_inside_the_region() {
    let d = scratch_or_skip!();
    let f = file(d.path(), "f.img", 256 << 10, 0);
    for rw in [Rw::Write, Rw::RandWrite] {
        std::fs::write(&f, vec![0u8; 256 << 10]).unwrap();
        let req = BenchRequest {
            offset: 64 << 10,
            size: Some(64 << 10),
            bs: 8192,
            ..request(&f, rw)
        };
        let r = bench(Path::new("/"), &req).unwrap();
        check_report(&r, &req);
        let after = std::fs::read(&f).unwrap();
        assert!(
            after[..64 << 10].iter().all(|&b| b == 0),
            "{rw}: before the region"
        );
        assert!(
            after[128 << 10..].iter().all(|&b| b == 0),
            "{rw}: after the region"
        );
        if rw == Rw::Write {
            // The first request goes to the region's first block.
            assert!(after[64 << 10..(64 << 10) + 8192].iter().any(|&b| b != 0));
        }
    }
}

#[test]
fn bad_parameters_are_refused_before_any_io() {
    let d = scratch_or_skip!();
    let f = file(d.path(), "f.img", 64 << 10, 7);
    let root = Path::new("/");
    let msg = |req: &BenchRequest| match prepare(root, req) {
        Err(e @ BenchError::Params(_)) => e.to_string(),
        other => panic!("expected a parameter error: {other:?}"),
    };
    let base = request(&f, Rw::Write);
    assert!(msg(&BenchRequest {
        bs: 1000,
        ..base.clone()
    })
    .contains("block size 1000"));
    assert!(msg(&BenchRequest {
        bs: 0,
        ..base.clone()
    })
    .contains("block size 0"));
    assert!(msg(&BenchRequest {
        offset: 100,
        ..base.clone()
    })
    .contains("offset 100"));
    assert!(msg(&BenchRequest {
        offset: 64 << 10,
        ..base.clone()
    })
    .contains("past the end"));
    assert!(msg(&BenchRequest {
        size: Some(1 << 20),
        ..base.clone()
    })
    .contains("run past its end"));
    assert!(msg(&BenchRequest {
        size: Some(4096),
        bs: 8192,
        ..base.clone()
    })
    .contains("holds no whole 8192-byte request"));
    assert!(msg(&BenchRequest {
        depth: 0,
        ..base.clone()
    })
    .contains("depth 0"));
    assert!(msg(&BenchRequest {
        time: Duration::ZERO,
        ..base.clone()
    })
    .contains("more than 0 seconds"));
    assert_eq!(std::fs::read(&f).unwrap(), vec![7u8; 64 << 10]);
    // A write bench never creates its target.
    let missing = d.path().join("missing.img");
    let e = prepare(root, &request(&missing, Rw::RandWrite)).unwrap_err();
    assert!(matches!(e, BenchError::Missing { .. }), "{e}");
    assert!(!missing.exists());
    let e = prepare(root, &request(&missing, Rw::Read)).unwrap_err();
    assert!(e.to_string().contains("missing.img"), "{e}");
}

fn s01() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/truth/s01_switch_cmbmix_fam15/root")
}

#[test]
fn p2p_routes_are_decided_with_the_model() {
    let d = scratch_or_skip!();
    let f = file(d.path(), "f.img", 64 << 10, 3);
    let root = s01();
    // auto: a regular file is not a P2P client; host memory, said loudly.
    let p = prepare(
        &root,
        &BenchRequest {
            via: Via::Auto,
            ..request(&f, Rw::Read)
        },
    )
    .unwrap();
    assert_eq!(p.route().provider, None);
    assert!(
        p.route().warnings[0].contains("NO P2P PATH"),
        "{:?}",
        p.route()
    );
    assert!(
        p.route().warnings[0].contains("is a regular file"),
        "{:?}",
        p.route()
    );
    let r = p.run(&AtomicBool::new(false)).unwrap();
    assert_eq!(r.via, "host");
    // A named provider with a file: refused up front, nothing written.
    let bdf: Bdf = "0000:03:00.0".parse().unwrap();
    let e = prepare(
        &root,
        &BenchRequest {
            via: Via::Provider(bdf),
            ..request(&f, Rw::Write)
        },
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("refusing the P2P path through 0000:03:00.0"),
        "{text}"
    );
    assert!(text.contains("--force tries anyway"), "{text}");
    // A provider that is not there.
    let e = prepare(
        &root,
        &BenchRequest {
            via: Via::Provider("0000:7f:00.0".parse().unwrap()),
            ..request(&f, Rw::Read)
        },
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("not a PCI function of this system"),
        "{e}"
    );
    assert_eq!(std::fs::read(&f).unwrap(), vec![3u8; 64 << 10]);
}

#[test]
fn cancelling_reaps_what_is_in_flight_and_reports() {
    let d = scratch_or_skip!();
    let f = file(d.path(), "f.img", 1 << 20, 0);
    let req = BenchRequest {
        time: Duration::from_secs(3600),
        depth: 8,
        ..request(&f, Rw::RandRead)
    };
    let cancel = AtomicBool::new(true);
    let r = prepare(Path::new("/"), &req).unwrap().run(&cancel).unwrap();
    assert!(r.interrupted);
    // The first batch always goes out and is reaped: depth requests.
    assert_eq!(r.ios, 8);
    assert!(cancel.load(Ordering::Relaxed));
}

// ---------------------------------------------------------------------------------
// Loop devices: real block devices (BLKSSZGET, O_EXCL, sysfs). Need root and losetup.
// ---------------------------------------------------------------------------------

/// A 300 ms sequential read bench of `bs` at `depth` on `dev` through io_uring: its
/// request count, and the device's completed reads, merged reads and sectors meanwhile
/// (`/sys/class/block/NAME/stat`).
fn bench_device_reads(dev: &Path, bs: u64, depth: usize) -> (u64, [u64; 3]) {
    let req = BenchRequest {
        bs,
        depth,
        time: Duration::from_millis(300),
        engine: EngineChoice::Uring,
        ..request(dev, Rw::Read)
    };
    let before = read_counters(dev);
    let r = bench(Path::new("/"), &req).unwrap();
    let after = read_counters(dev);
    (r.ios, [0, 1, 2].map(|i| after[i] - before[i]))
}

#[test]
fn a_sequential_bench_issues_requests_of_its_block_size() {
    // Adjacent requests handed to the kernel together are merged by the block layer
    // (under an io_uring plug): a 4 KiB bench would then time larger device reads than
    // fio's. Each goes on its own, so the device completes one 4 KiB read per request.
    let Some(lo) = loop_or_skip(8 << 20, 512) else {
        return;
    };
    let (ios, [reads, merged, sectors]) = bench_device_reads(&lo.dev, 4096, 8);
    assert!(ios > 100, "{ios}");
    assert_eq!(merged, 0, "{ios} requests, {reads} device reads");
    assert!(reads >= ios, "{ios} requests, {reads} device reads");
    assert_eq!(sectors, reads * 8, "4 KiB each");
}

#[test]
fn a_1_mib_bench_request_is_one_device_request() {
    // Requests of more than a page go into huge pages: a 1 MiB read is 16 segments of
    // the loop device's 64 KiB maximum, not 256 pages, more than its 128 segments a
    // request, which the block layer would cut into two device reads (base pages).
    let Some(lo) = loop_or_skip(16 << 20, 512) else {
        return;
    };
    let (ios, [reads, merged, sectors]) = bench_device_reads(&lo.dev, 1 << 20, 4);
    assert!(ios > 10, "{ios}");
    assert_eq!(merged, 0, "{ios} requests, {reads} device reads");
    assert_eq!(reads, ios, "{ios} requests of 1 MiB, {reads} device reads");
    assert_eq!(sectors, reads * 2048, "1 MiB each");
}

#[test]
fn loop_devices_bench_and_a_mounted_device_is_not_written() {
    let Some(lo) = loop_or_skip(4 << 20, 4096) else {
        return;
    };
    for rw in [Rw::Read, Rw::RandWrite] {
        let req = request(&lo.dev, rw);
        let r = bench(Path::new("/"), &req).unwrap();
        check_report(&r, &req);
        assert_eq!(r.region.end, 4 << 20);
    }
    // 4096-byte sectors: a 512-byte request is refused with the device's block size.
    let e = prepare(
        Path::new("/"),
        &BenchRequest {
            bs: 512,
            ..request(&lo.dev, Rw::Read)
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("multiple of 4096"), "{e}");
    // A root whose mountinfo has the device mounted: writes are refused, reads are not.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("proc/self")).unwrap();
    let st = rustix::fs::stat(&lo.dev).unwrap();
    let (maj, min) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
    std::fs::write(
        root.path().join("proc/self/mountinfo"),
        format!(
            "50 1 {maj}:{min} / /mnt/victim rw - ext4 {} rw\n",
            lo.dev.display()
        ),
    )
    .unwrap();
    let e = prepare(root.path(), &request(&lo.dev, Rw::Write)).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("refusing to write to") && text.contains("/mnt/victim"),
        "{text}"
    );
    bench(root.path(), &request(&lo.dev, Rw::RandRead)).unwrap();
    // --force overrides, and says so.
    let p = prepare(
        root.path(),
        &BenchRequest {
            force: true,
            ..request(&lo.dev, Rw::Write)
        },
    )
    .unwrap();
    assert!(
        p.notes().iter().any(|n| n.contains("--force: writing to")),
        "{:?}",
        p.notes()
    );
}
