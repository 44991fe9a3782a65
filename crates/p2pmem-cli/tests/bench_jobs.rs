//! `p2pmem bench --jobs N` end to end on the host tier: regular files in the target
//! directory (a file system with O_DIRECT) and loop devices (root and losetup, else
//! SKIPPED through the skip helper), host buffers. The totals are the sums of the jobs,
//! sequential jobs get consecutive disjoint slices, random ones their own seeds, every
//! JSON field is documented, and a device that starts failing under the jobs (a loop
//! device shrunk under them: ENOSPC past its new end) is counted over all jobs or, when
//! a job's whole slice is gone, stops every job at once; SIGINT stops every job and the
//! report covers the time they ran. Nothing here asserts a speed.

#![cfg(test)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .env_remove("P2PMEM_ENGINE")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            stderr(o)
        )
    })
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A scratch directory where O_DIRECT works (`testing::scratch_bases`), or `None`.
fn scratch() -> Option<tempfile::TempDir> {
    for dir in p2pmem_linux::testing::scratch_bases() {
        let Ok(tmp) = tempfile::tempdir_in(&dir) else {
            continue;
        };
        let probe = tmp.path().join("probe.img");
        std::fs::write(&probe, vec![7u8; 1 << 20]).unwrap();
        let o = run(&["bench", "--via", "host", "--time", "0.01", s(&probe)]);
        if o.status.success() {
            return Some(tmp);
        }
        eprintln!("note: {}: {}", dir.display(), stderr(&o));
    }
    None
}

macro_rules! scratch_or_skip {
    () => {
        match scratch() {
            Some(d) => d,
            None => {
                p2pmem_linux::testing::skipped("SKIPPED: no file system here supports O_DIRECT");
                return;
            }
        }
    };
}

/// The text of docs/json.md's `## bench` section.
fn bench_doc() -> String {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/json.md"))
            .unwrap();
    let start = text
        .find("\n## bench\n")
        .expect("docs/json.md has ## bench");
    let rest = &text[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    rest[..end].to_string()
}

/// What every `--json` report of `jobs` jobs must say; returns the jobs' regions.
fn check_jobs(v: &Value, jobs: u64) -> Vec<(u64, u64)> {
    assert_eq!(v["jobs"], jobs, "{v}");
    let per = v["per_job"].as_array().unwrap();
    assert_eq!(per.len() as u64, jobs);
    let sum = |k: &str| per.iter().map(|j| j[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(v["bytes"].as_u64().unwrap(), sum("bytes"), "{v}");
    assert_eq!(v["ios"].as_u64().unwrap(), sum("ios"), "{v}");
    assert_eq!(v["errors"].as_u64().unwrap(), sum("errors"), "{v}");
    let doc = bench_doc();
    for (i, j) in per.iter().enumerate() {
        assert_eq!(j["job"], i as u64);
        assert!(j["ios"].as_u64().unwrap() >= 1, "job {i} ran: {j}");
        for k in j.as_object().unwrap().keys() {
            assert!(
                doc.contains(&format!("`{k}`")),
                "docs/json.md `## bench` does not document per_job's `{k}`"
            );
        }
        let secs = j["seconds"].as_f64().unwrap();
        assert!(secs > 0.0 && secs <= v["seconds"].as_f64().unwrap() + 1e-9);
        let l = &j["latency_us"];
        assert!(l["p50"].as_f64().unwrap() <= l["p99"].as_f64().unwrap());
    }
    per.iter()
        .map(|j| {
            (
                j["region"]["start"].as_u64().unwrap(),
                j["region"]["end"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn one_and_four_jobs_report_totals_shares_and_documented_fields() {
    let d = scratch_or_skip!();
    let f = d.path().join("bench.img");
    std::fs::write(&f, vec![0u8; 4 << 20]).unwrap();
    for rw in ["read", "randread", "write", "randwrite"] {
        for jobs in ["1", "4"] {
            let o = run(&[
                "bench",
                "--json",
                "--via",
                "host",
                "--rw",
                rw,
                "--bs",
                "8K",
                "--depth",
                "4",
                "--jobs",
                jobs,
                "--time",
                "0.2",
                "--offset",
                "1M",
                "--size",
                "2M",
                "--seed",
                "3",
                s(&f),
            ]);
            assert_eq!(o.status.code(), Some(0), "{rw} x{jobs}: {}", stderr(&o));
            let v = json(&o);
            let n: u64 = jobs.parse().unwrap();
            let regions = check_jobs(&v, n);
            assert_eq!(v["region"]["start"], 1 << 20);
            assert_eq!(v["region"]["end"], 3 << 20);
            let per = v["per_job"].as_array().unwrap();
            if rw.starts_with("rand") {
                assert!(regions.iter().all(|&r| r == (1 << 20, 3 << 20)), "{v}");
                let seeds: Vec<u64> = per.iter().map(|j| j["seed"].as_u64().unwrap()).collect();
                assert_eq!(seeds[0], 3, "job 0 keeps --seed");
                let distinct: std::collections::BTreeSet<_> = seeds.iter().collect();
                assert_eq!(distinct.len() as u64, n, "{seeds:?}");
            } else {
                // 2 MiB of 8 KiB requests: 256, so 64 each, consecutive from the start.
                let want: Vec<(u64, u64)> = (0..n)
                    .map(|i| {
                        let len = (2 << 20) / n;
                        ((1 << 20) + i * len, (1 << 20) + (i + 1) * len)
                    })
                    .collect();
                assert_eq!(regions, want);
                assert!(per.iter().all(|j| j["seed"].is_null()));
            }
        }
    }
    // Writes stayed inside the region, and every sequential writer wrote its slice's
    // first request (the first batch always goes out).
    let o = run(&[
        "bench",
        "--json",
        "--via",
        "host",
        "--rw",
        "write",
        "--bs",
        "8K",
        "--jobs",
        "4",
        "--time",
        "0.05",
        "--offset",
        "1M",
        "--size",
        "2M",
        s(&f),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let after = std::fs::read(&f).unwrap();
    assert!(
        after[..1 << 20].iter().all(|&b| b == 0),
        "before the region"
    );
    assert!(after[3 << 20..].iter().all(|&b| b == 0), "after the region");
    for (start, _) in check_jobs(&json(&o), 4) {
        let first = &after[start as usize..start as usize + 8192];
        assert!(
            first.iter().any(|&b| b != 0),
            "slice at {start} not written"
        );
    }
    assert_eq!(after.len(), 4 << 20, "never grown");
}

#[test]
fn the_text_report_and_the_limits_of_jobs() {
    let d = scratch_or_skip!();
    let f = d.path().join("bench.img");
    std::fs::write(&f, vec![1u8; 1 << 20]).unwrap();
    let base = ["bench", "--via", "host", "--time", "0.1"];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend(extra);
        a.push(s(&f));
        run(&a)
    };
    let o = with(&["--jobs", "3", "--verbose"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(", depth 8, io_uring, 3 jobs (totals)"),
        "{out}"
    );
    // 256 requests of 4 KiB for 3 jobs: 86, 85, 85.
    assert!(out.contains("  job 0 "), "{out}");
    assert!(out.contains(", bytes 0..352256"), "{out}");
    assert!(out.contains(", bytes 352256..700416"), "{out}");
    assert!(
        out.contains("  job 2 ") && out.contains(", bytes 700416..1048576"),
        "{out}"
    );
    // Without --verbose, the totals only (unless the jobs disagree, which they may on a
    // busy machine: then the jobs line says so).
    let o = with(&["--jobs", "3"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.contains("  job 0 "),
        out.contains("jobs          DISAGREE"),
        "{out}"
    );
    for bad in ["0", "65", "x"] {
        let o = with(&["--jobs", bad]);
        assert_eq!(o.status.code(), Some(2), "--jobs {bad}");
        assert!(stderr(&o).contains("from 1 to 64"), "{}", stderr(&o));
    }
    // Sequential jobs need a request each.
    let o = with(&["--jobs", "64", "--bs", "32K"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("holds 32 whole 32768-byte request(s), fewer than the 64 jobs"),
        "{}",
        stderr(&o)
    );
    // 64 random jobs are fine.
    let o = with(&["--jobs", "64", "--rw", "randread", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    check_jobs(&json(&o), 64);
}

/// A loop device (`--direct-io=on`) over a file of `len` bytes, detached on drop.
struct Loop {
    dev: PathBuf,
    img: PathBuf,
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn loop_device(dir: &Path, len: u64) -> Result<Loop, String> {
    let img = dir.join("disk.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(len))
        .map_err(|e| e.to_string())?;
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if uid.stdout != b"0\n" {
        return Err("not root".to_string());
    }
    let o = Command::new("losetup")
        .args(["--find", "--show", "--direct-io=on"])
        .arg(&img)
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    Ok(Loop {
        dev: PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        img,
    })
}

macro_rules! loop_or_skip {
    ($dir:expr, $len:expr) => {
        match loop_device($dir, $len) {
            Ok(l) => l,
            Err(why) => {
                p2pmem_linux::testing::skipped(&format!(
                    "SKIPPED: loop device test needs root and losetup: {why}"
                ));
                return;
            }
        }
    };
}

/// Shrinks the loop device to `len` bytes under a running bench: the backing file, then
/// the device's capacity (`losetup -c`, which reads the file's size), again until the
/// capacity is `len` (the bench's writes in flight past `len` can grow the file back
/// between the two). Requests past the new end fail (ENOSPC for writes).
fn shrink(lo: &Loop, len: u64) {
    let name = lo.dev.file_name().unwrap().to_str().unwrap();
    let sectors = || {
        std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    for _ in 0..100 {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&lo.img)
            .and_then(|f| f.set_len(len))
            .unwrap();
        let st = Command::new("losetup")
            .arg("-c")
            .arg(&lo.dev)
            .status()
            .unwrap();
        assert!(st.success(), "losetup -c");
        if sectors() == Some(len / 512) {
            return;
        }
    }
    panic!("{} kept {:?} sectors", lo.dev.display(), sectors());
}

/// Whether process `pid` runs its bench jobs: a thread named `bench-job-0` exists once
/// the device is open and the region decided.
fn jobs_running(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("bench-job-"))
    })
}

/// Starts a bench on the loop device, shrinks the device to half `after` its jobs started
/// (not before: a bench that opens the shrunk device just benches the smaller one), and
/// returns the bench's output and how long it ran.
fn bench_while_shrinking(lo: &Loop, args: &[&str], after: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .env_remove("P2PMEM_ENGINE")
        .args(args)
        .arg(&lo.dev)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while !jobs_running(child.id()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the bench's jobs never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(after);
    shrink(lo, 4 << 20);
    let o = child.wait_with_output().unwrap();
    (o, started.elapsed())
}

#[test]
fn loop_device_jobs_and_errors_counted_over_all_jobs() {
    let d = scratch_or_skip!();
    let lo = loop_or_skip!(d.path(), 8 << 20);
    for rw in ["randread", "write"] {
        for jobs in ["1", "4"] {
            let o = run(&[
                "bench",
                "--json",
                "--via",
                "host",
                "--rw",
                rw,
                "--jobs",
                jobs,
                "--time",
                "0.2",
                s(&lo.dev),
            ]);
            assert_eq!(o.status.code(), Some(0), "{rw} x{jobs}: {}", stderr(&o));
            let v = json(&o);
            let regions = check_jobs(&v, jobs.parse().unwrap());
            if rw == "write" {
                assert_eq!(regions.last().unwrap().1, 8 << 20);
                assert!(regions.windows(2).all(|w| w[0].1 == w[1].0), "{regions:?}");
            }
        }
    }
    // Random writes over the whole device while its second half goes away: the requests
    // there fail (ENOSPC) in every job, never 64 in a row, so the bench goes on, counts
    // them over all jobs and exits 1.
    let (o, _) = bench_while_shrinking(
        &lo,
        &[
            "bench",
            "--json",
            "--via",
            "host",
            "--rw",
            "randwrite",
            "--jobs",
            "4",
            "--time",
            "3",
        ],
        Duration::from_millis(300),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v = json(&o);
    check_jobs(&v, 4);
    assert!(v["errors"].as_u64().unwrap() > 0, "{v}");
    let first = v["first_errors"].as_array().unwrap();
    assert!(!first.is_empty());
    for e in first {
        assert_eq!(e["errno"], "ENOSPC", "{e}");
        assert!(e["offset"].as_u64().unwrap() >= 4 << 20, "{e}");
    }
}

#[test]
fn a_job_whose_slice_is_gone_stops_every_job_at_once() {
    let d = scratch_or_skip!();
    let lo = loop_or_skip!(d.path(), 8 << 20);
    // Sequential writes, 4 jobs of 2 MiB each: after the shrink the last two jobs fail
    // every request, give up after 64 in a row, and the first two stop with them instead
    // of running out their 60 s.
    let (o, took) = bench_while_shrinking(
        &lo,
        &[
            "bench", "--via", "host", "--rw", "write", "--jobs", "4", "--time", "60",
        ],
        Duration::from_millis(300),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let e = stderr(&o);
    assert!(
        e.contains("O_DIRECT pwrite of 4096 bytes at offset "),
        "{e}"
    );
    assert!(e.contains("(ENOSPC)"), "{e}");
}

#[test]
fn ctrl_c_stops_every_job_and_the_report_covers_the_time_they_ran() {
    let d = scratch_or_skip!();
    let f = d.path().join("bench.img");
    std::fs::write(&f, vec![0u8; 4 << 20]).unwrap();
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .env_remove("P2PMEM_ENGINE")
        .args([
            "bench", "--json", "--via", "host", "--rw", "randread", "--jobs", "4",
        ])
        .args(["--time", "600", s(&f)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while !jobs_running(child.id()) {
        assert!(started.elapsed() < Duration::from_secs(60), "no jobs");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(120), "it stopped");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("interrupted after"), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["interrupted"], true);
    check_jobs(&v, 4);
    assert!(v["seconds"].as_f64().unwrap() < 120.0);
}
