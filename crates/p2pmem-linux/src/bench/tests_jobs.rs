//! Host-tier tests of benches with several jobs, on regular files with O_DIRECT (the
//! target directory) and host buffers: the totals are the sums of the jobs, sequential
//! jobs write only their own slices (read back), random jobs draw with their own seeds,
//! Ctrl-C stops them all. Nothing here asserts a speed.

use super::tests::{bench, file, request, scratch_or_skip};
use super::*;
use crate::p2pbuf::HostBuffer;

/// What a report of several jobs must say, whatever the speed.
fn check_jobs(r: &BenchReport, req: &BenchRequest) {
    assert_eq!(r.jobs, req.jobs);
    assert_eq!(r.per_job.len(), req.jobs);
    assert_eq!(r.bytes, r.per_job.iter().map(|j| j.bytes).sum::<u64>());
    assert_eq!(r.ios, r.per_job.iter().map(|j| j.ios).sum::<u64>());
    assert_eq!(r.errors, r.per_job.iter().map(|j| j.errors).sum::<u64>());
    assert_eq!(r.bytes, r.ios * req.bs);
    for (i, j) in r.per_job.iter().enumerate() {
        assert_eq!(j.job, i);
        assert!(j.ios >= 1, "job {i} ran: {j:?}");
        assert!(
            j.seconds > 0.0 && j.seconds <= r.seconds + 1e-9,
            "{j:?} {}",
            r.seconds
        );
        assert!((j.iops - j.ios as f64 / j.seconds).abs() < 1e-6 * j.iops.max(1.0));
    }
    // Merged, not averaged: the total's extremes are the jobs' extremes, and its median
    // lies between the jobs' medians.
    let l = r.latency_us;
    let lo = |f: fn(&Latency) -> f64| {
        r.per_job
            .iter()
            .map(|j| f(&j.latency_us))
            .fold(f64::INFINITY, f64::min)
    };
    let hi = |f: fn(&Latency) -> f64| {
        r.per_job
            .iter()
            .map(|j| f(&j.latency_us))
            .fold(0.0, f64::max)
    };
    assert_eq!(l.min, lo(|l| l.min));
    assert_eq!(l.max, hi(|l| l.max));
    assert!(lo(|l| l.p50) <= l.p50 && l.p50 <= hi(|l| l.p50), "{r:?}");
    assert!(lo(|l| l.p99) <= l.p99 && l.p99 <= hi(|l| l.p99), "{r:?}");
    let mean = r
        .per_job
        .iter()
        .map(|j| j.latency_us.mean * j.ios as f64)
        .sum::<f64>()
        / r.ios as f64;
    assert!((l.mean - mean).abs() < 1e-6 * mean, "{} vs {mean}", l.mean);
}

/// The data job `job`'s buffer holds in a write bench: what `fill_random` puts there.
fn job_data(req: &BenchRequest, job: usize) -> Vec<u8> {
    let mut b = HostBuffer::new(req.depth * req.bs as usize).unwrap();
    setup::fill_random(&mut b, job_seed(req.seed, job)).unwrap();
    b.as_slice().to_vec()
}

#[test]
fn sequential_writers_write_only_their_own_slices() {
    let d = scratch_or_skip!();
    // 1 MiB + 12 KiB: 259 requests of 4 KiB for 4 jobs (65, 65, 65, 64).
    let len = (1 << 20) + 3 * 4096;
    let f = file(d.path(), "f.img", len, 0);
    let req = BenchRequest {
        jobs: 4,
        time: Duration::from_millis(300),
        ..request(&f, Rw::Write)
    };
    let r = bench(Path::new("/"), &req).unwrap();
    check_jobs(&r, &req);
    let slices: Vec<(u64, u64)> = r
        .per_job
        .iter()
        .map(|j| (j.region.start, j.region.end))
        .collect();
    let (a, b, c) = (65 * 4096, 130 * 4096, 195 * 4096);
    assert_eq!(slices, [(0, a), (a, b), (b, c), (c, len as u64)]);
    assert!(r.per_job.iter().all(|j| j.seed.is_none()));
    // Every 4 KiB block written holds one of the depth slots of its own job's buffer,
    // never another job's (each job's buffer has its own data).
    let data: Vec<Vec<u8>> = (0..4).map(|j| job_data(&req, j)).collect();
    let after = std::fs::read(&f).unwrap();
    let mut written = [0u64; 4];
    for (n, block) in after.chunks(4096).enumerate() {
        let off = n as u64 * 4096;
        if block.iter().all(|&b| b == 0) {
            continue;
        }
        let owner = slices
            .iter()
            .position(|&(s, e)| s <= off && off < e)
            .unwrap();
        let from = data
            .iter()
            .position(|d| d.chunks(4096).any(|slot| slot == block));
        assert_eq!(from, Some(owner), "block at {off} (job {owner}'s slice)");
        written[owner] += 1;
    }
    // Each job wrote at least its first block (the first batch always goes out).
    assert!(written.iter().all(|&w| w >= 1), "{written:?}");
    assert_eq!(after.len(), len, "never grown");
}

#[test]
fn sequential_readers_and_random_jobs_report_totals_and_their_shares() {
    let d = scratch_or_skip!();
    let f = file(d.path(), "f.img", 1 << 20, 9);
    for rw in [Rw::Read, Rw::RandRead, Rw::RandWrite] {
        let req = BenchRequest {
            jobs: 4,
            seed: 5,
            offset: 64 << 10,
            size: Some(512 << 10),
            ..request(&f, rw)
        };
        let r = bench(Path::new("/"), &req).unwrap();
        check_jobs(&r, &req);
        assert_eq!(
            r.region,
            Region {
                start: 64 << 10,
                end: 576 << 10
            }
        );
        if rw.random() {
            assert!(r.per_job.iter().all(|j| j.region == r.region), "{r:?}");
            let seeds: Vec<u64> = r.per_job.iter().map(|j| j.seed.unwrap()).collect();
            assert_eq!(seeds, (0..4).map(|j| job_seed(5, j)).collect::<Vec<_>>());
        } else {
            let starts: Vec<u64> = r.per_job.iter().map(|j| j.region.start).collect();
            assert_eq!(starts, [64 << 10, 192 << 10, 320 << 10, 448 << 10]);
        }
    }
    // One job reports itself as the only job.
    let req = request(&f, Rw::Read);
    let r = bench(Path::new("/"), &req).unwrap();
    check_jobs(&r, &req);
    assert_eq!(r.per_job[0].region, r.region);
    assert_eq!(r.per_job[0].latency_us, r.latency_us);
}

#[test]
fn jobs_are_refused_outside_1_to_64_and_when_slices_would_be_empty() {
    let d = scratch_or_skip!();
    let f = file(d.path(), "f.img", 64 << 10, 1);
    let root = Path::new("/");
    let msg = |req: &BenchRequest| match prepare(root, req) {
        Err(e @ BenchError::Params(_)) => e.to_string(),
        other => panic!("expected a parameter error: {other:?}"),
    };
    assert!(msg(&BenchRequest {
        jobs: 0,
        ..request(&f, Rw::Read)
    })
    .contains("jobs 0 must be between 1 and 64"));
    assert!(msg(&BenchRequest {
        jobs: 65,
        ..request(&f, Rw::Read)
    })
    .contains("jobs 65 must be between 1 and 64"));
    // 16 requests of 4 KiB: 17 sequential jobs cannot each have a slice; random ones can.
    let e = msg(&BenchRequest {
        jobs: 17,
        ..request(&f, Rw::Read)
    });
    assert!(
        e.contains("holds 16 whole 4096-byte request(s), fewer than the 17 jobs"),
        "{e}"
    );
    let p = prepare(
        root,
        &BenchRequest {
            jobs: 17,
            ..request(&f, Rw::RandRead)
        },
    )
    .unwrap();
    assert_eq!(p.jobs(), 17);
}

#[test]
fn cancelling_stops_every_job() {
    let d = scratch_or_skip!();
    let f = file(d.path(), "f.img", 1 << 20, 0);
    let req = BenchRequest {
        time: Duration::from_secs(3600),
        depth: 8,
        jobs: 4,
        ..request(&f, Rw::RandRead)
    };
    let started = std::time::Instant::now();
    let r = prepare(Path::new("/"), &req)
        .unwrap()
        .run(&AtomicBool::new(true))
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(r.interrupted);
    // Each job's first batch went out and was reaped: depth requests each.
    assert!(r.per_job.iter().all(|j| j.ios == 8), "{:?}", r.per_job);
    assert_eq!(r.ios, 32);
}
