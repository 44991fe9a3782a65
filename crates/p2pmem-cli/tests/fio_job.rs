//! `fio-job` against the ground-truth captures: the job maps the provider's
//! `p2pmem/allocate` shared, is O_DIRECT with no CPU-touching options, carries `check`'s
//! verdict, fits `available`, refuses what the kernel refuses and write patterns unless
//! --force, and real fio accepts it (`fio --parse-only`).

#![cfg(test)]

use p2pmem_linux::testing::skipped;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/truth")
        .join(name)
        .join("root")
}

fn fio_job(name: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .arg("--root")
        .arg(fixture(name))
        .arg("fio-job")
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The job's `key=value` lines.
fn options(job: &str) -> Vec<(&str, &str)> {
    job.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect()
}

#[test]
fn an_allowed_pair_gets_a_p2p_job_with_the_verdict_on_top() {
    let job = ok(&fio_job("lab_default_k7.3", &["0000:03:00.0", "nvme1n1"]));
    let opts = options(&job);
    for want in [
        ("filename", "/dev/nvme1n1"),
        ("direct", "1"),
        ("ioengine", "io_uring"),
        (
            "iomem",
            "mmapshared:/sys/bus/pci/devices/0000:03:00.0/p2pmem/allocate",
        ),
        ("scramble_buffers", "0"),
        ("rw", "read"),
        ("bs", "4k"),
        ("iodepth", "8"),
        ("numjobs", "1"),
        ("runtime", "10"),
        ("time_based", "1"),
    ] {
        assert!(opts.contains(&want), "{want:?} missing:\n{job}");
    }
    for never in [
        "verify",
        "zero_buffers",
        "refill_buffers",
        "fixedbufs",
        "buffer_pattern",
    ] {
        assert!(
            !opts.iter().any(|(k, _)| *k == never),
            "{never} set:\n{job}"
        );
    }
    let head: Vec<&str> = job.lines().take_while(|l| l.starts_with('#')).collect();
    assert!(
        head.iter()
            .any(|l| l.contains("ALLOWED: bus address") && l.contains("distance 4")),
        "{head:#?}"
    );
    assert!(
        head.iter().any(|l| l.contains("15.9 MiB available")),
        "{head:#?}"
    );
    assert!(job.contains("[p2pmem-0000:03:00.0-nvme1n1]"), "{job}");
}

#[test]
fn a_refused_pair_is_refused_with_the_kernels_reason_unless_forced() {
    let o = fio_job("lab_default_k7.3", &["0000:03:00.0", "/dev/nvme2n1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("do not share an upstream bridge or whitelisted host bridge"),
        "{e}"
    );
    assert!(e.contains("EINVAL") && e.contains("--force"), "{e}");
    let job = ok(&fio_job(
        "lab_default_k7.3",
        &["0000:03:00.0", "nvme2n1", "--force"],
    ));
    assert!(job.contains("#   REFUSED"), "{job}");
    assert!(
        job.contains("# WARNING: the kernel refuses this pair"),
        "{job}"
    );
    // DEVICE must be a block device: fio reads a file, not a PCI function.
    let o = fio_job("s01_switch_cmbmix_fam15", &["0000:81:00.0", "0000:03:00.0"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a PCI address is not a block device"
    );
}

#[test]
fn json_has_the_job_and_the_verdict() {
    let o = fio_job(
        "lab_default_k7.3",
        &[
            "--json",
            "0000:06:00.0",
            "nvme4n1",
            "--bs",
            "64K",
            "--iodepth",
            "4",
        ],
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(0), "{v}");
    assert_eq!(v["schema"], 1);
    assert_eq!(v["document"], "fio_job");
    assert_eq!(v["provider"], "0000:06:00.0");
    assert_eq!(v["filename"], "/dev/nvme4n1");
    assert_eq!(v["supported"], true);
    assert_eq!(v["map_type"], "bus_addr");
    assert_eq!(v["distance"], 2);
    assert_eq!(v["bs"], 65536);
    assert_eq!(v["buffer_bytes_per_job"], 4 * 65536 + 2 * 65536);
    assert_eq!(v["refusal"], Value::Null);
    assert!(v["job"].as_str().unwrap().contains("bs=64k"));
    let o = fio_job("lab_default_k7.3", &["--json", "0000:03:00.0", "nvme2n1"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["supported"], false);
    assert_eq!(v["job"], Value::Null);
    assert!(v["refusal"].as_str().unwrap().contains("EINVAL"));
}

#[test]
fn buffers_that_do_not_fit_available_are_refused_with_what_to_lower() {
    let o = fio_job(
        "lab_default_k7.3",
        &[
            "0000:03:00.0",
            "nvme1n1",
            "--bs",
            "1M",
            "--iodepth",
            "8",
            "--numjobs",
            "2",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("15.9 MiB available"), "{e}");
    assert!(e.contains("lower --iodepth, --bs or --numjobs"), "{e}");
    assert!(o.stdout.is_empty());
}

#[test]
fn write_patterns_need_force_and_say_so_in_the_job() {
    for rw in ["write", "randwrite"] {
        let o = fio_job("lab_default_k7.3", &["0000:03:00.0", "nvme1n1", "--rw", rw]);
        assert_eq!(o.status.code(), Some(2), "{rw}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
        let job = ok(&fio_job(
            "lab_default_k7.3",
            &["0000:03:00.0", "nvme1n1", "--rw", rw, "--force"],
        ));
        assert!(job.contains(&format!("\nrw={rw}\n")), "{job}");
        assert!(
            job.contains("# WARNING: this job WRITES to /dev/nvme1n1"),
            "{job}"
        );
    }
}

#[test]
fn jobs_run_the_workload_of_bench_jobs() {
    // Sequential: each job its own consecutive slice of the region (nvme1n1 has 8 MiB).
    let job = ok(&fio_job(
        "lab_default_k7.3",
        &["0000:03:00.0", "nvme1n1", "--jobs", "4", "--bs", "64K"],
    ));
    let opts = options(&job);
    for want in [
        ("numjobs", "4"),
        ("group_reporting", "1"),
        ("size", "2m"),
        ("offset_increment", "2m"),
    ] {
        assert!(opts.contains(&want), "{want:?} missing:\n{job}");
    }
    assert!(
        job.contains("# 4 sequential jobs, each on its own 2.0 MiB of the device"),
        "{job}"
    );
    // A region that does not divide: equal slices of whole requests, the rest said.
    let o = fio_job(
        "lab_default_k7.3",
        &[
            "0000:03:00.0",
            "nvme1n1",
            "--numjobs",
            "3",
            "--size",
            "1M",
            "--json",
        ],
    );
    let v: Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(v["size"], 1 << 20);
    // 256 requests of 4 KiB for 3 jobs: 85 each, one left out.
    assert_eq!(v["job_size"], 85 * 4096);
    assert_eq!(v["offset_increment"], 85 * 4096);
    assert_eq!(v["unreached"], 4096);
    let opts = options(v["job"].as_str().unwrap())
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>();
    assert!(
        opts.contains(&"offset_increment=340k".to_string()),
        "{opts:?}"
    );
    // Random: every job over the whole region, no offset_increment (fio seeds each job
    // differently, as bench does).
    let job = ok(&fio_job(
        "lab_default_k7.3",
        &[
            "0000:03:00.0",
            "nvme1n1",
            "--jobs",
            "4",
            "--rw",
            "randread",
            "--size",
            "4M",
        ],
    ));
    let opts = options(&job);
    assert!(opts.contains(&("size", "4m")), "{job}");
    assert!(!opts.iter().any(|(k, _)| *k == "offset_increment"), "{job}");
    // More sequential jobs than requests: refused with what to change.
    let o = fio_job(
        "lab_default_k7.3",
        &["0000:03:00.0", "nvme1n1", "--jobs", "4", "--size", "8K"],
    );
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("fewer than the 4 sequential jobs"), "{e}");
}

#[test]
fn before_6_2_there_is_no_allocate_to_map() {
    let o = fio_job("lab_default_k6.1", &["0000:03:00.0", "nvme1n1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("6.2"));
}

#[test]
fn fio_accepts_the_jobs() {
    if Command::new("fio").arg("--version").output().is_err() {
        skipped("fio is not installed: the generated jobs were not parsed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases: [&[&str]; 5] = [
        &["0000:03:00.0", "nvme1n1"],
        &[
            "0000:03:00.0",
            "nvme1n1",
            "--rw",
            "randread",
            "--bs",
            "128K",
            "--iodepth",
            "16",
            "--numjobs",
            "4",
            "--size",
            "1G",
            "--runtime",
            "30",
        ],
        &["0000:06:00.0", "nvme4n1", "--rw", "randwrite", "--force"],
        &["0000:03:00.0", "nvme2n1", "--force"],
        &["0000:03:00.0", "nvme1n1", "--jobs", "4", "--size", "1M"],
    ];
    for (i, args) in cases.iter().enumerate() {
        let job = ok(&fio_job("lab_default_k7.3", args));
        let file = dir.path().join(format!("job{i}.fio"));
        std::fs::write(&file, &job).unwrap();
        let o = Command::new("fio")
            .arg("--parse-only")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "fio --parse-only refused {args:?}: {}{}\n{job}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
