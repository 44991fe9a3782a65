//! `p2pmem bench` end to end on the host tier: regular files in the target directory (a
//! file system with O_DIRECT), host buffers; the documented JSON, the text report, the
//! refusals and their exit status; loop devices when root and losetup are there (else
//! SKIPPED, said on stderr). Nothing here asserts a speed.

#![cfg(test)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// A scratch directory where O_DIRECT works (the target directory), or `None`.
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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn image(dir: &Path, len: usize) -> PathBuf {
    let p = dir.join("bench.img");
    std::fs::write(&p, vec![0x5a; len]).unwrap();
    p
}

#[test]
fn json_has_the_documented_fields_for_every_pattern() {
    let d = scratch_or_skip!();
    let f = image(d.path(), 2 << 20);
    for rw in ["read", "write", "randread", "randwrite"] {
        let o = run(&[
            "bench",
            "--json",
            "--via",
            "host",
            "--rw",
            rw,
            "--bs",
            "64K",
            "--depth",
            "4",
            "--time",
            "0.2",
            s(&f),
        ]);
        assert_eq!(o.status.code(), Some(0), "{rw}: {}", stderr(&o));
        assert!(
            o.stderr.is_empty(),
            "{rw}: quiet with --via host: {}",
            stderr(&o)
        );
        let v = json(&o);
        assert_eq!(v["rw"], rw);
        assert_eq!(v["via"], "host");
        assert_eq!(v["bs"], 64 << 10);
        assert_eq!(v["depth"], 4);
        assert_eq!(v["interrupted"], false);
        let bytes = v["bytes"].as_u64().unwrap();
        let ios = v["ios"].as_u64().unwrap();
        assert!(ios >= 1);
        assert_eq!(bytes, ios * (64 << 10));
        let secs = v["seconds"].as_f64().unwrap();
        assert!(secs > 0.0);
        let iops = v["iops"].as_f64().unwrap();
        let mib = v["mib_per_s"].as_f64().unwrap();
        assert!((iops * secs - ios as f64).abs() < 1e-3 * ios as f64);
        assert!((mib * secs * 1048576.0 - bytes as f64).abs() < 1e-3 * bytes as f64);
        let l = &v["latency_us"];
        let q: Vec<f64> = ["min", "p50", "p90", "p99", "p99.9", "max"]
            .iter()
            .map(|k| {
                l[k].as_f64()
                    .unwrap_or_else(|| panic!("latency_us.{k}: {l}"))
            })
            .collect();
        assert!(q.windows(2).all(|w| w[0] <= w[1]), "{l}");
        assert!(l["mean"].as_f64().is_some());
    }
    // Benches never grow or create files.
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 2 << 20);
}

#[test]
fn the_text_report_and_the_region() {
    let d = scratch_or_skip!();
    let f = image(d.path(), 1 << 20);
    let o = run(&[
        "bench",
        "--via",
        "host",
        "--rw",
        "randread",
        "--offset",
        "256K",
        "--size",
        "512K",
        "--time",
        "0.1",
        s(&f),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with(&format!("randread {}: ", f.display())),
        "{out}"
    );
    assert!(
        out.contains("requests of 4.0 KiB, depth 8, io_uring"),
        "{out}"
    );
    assert!(out.contains(" IOPS, "), "{out}");
    assert!(out.contains("latency (us)  min "), "{out}");
    assert!(out.contains("p99.9 "), "{out}");
    assert!(
        out.contains("region        bytes 262144..786432 (512.0 KiB)"),
        "{out}"
    );
    assert!(
        out.contains("buffer        host memory, as asked (--via host)"),
        "{out}"
    );
}

#[test]
fn refusals_exit_2_and_write_nothing() {
    let d = scratch_or_skip!();
    let f = image(d.path(), 256 << 10);
    let missing = d.path().join("missing.img");
    let o = run(&["bench", "--rw", "write", "--via", "host", s(&missing)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(!missing.exists());
    for (args, want) in [
        (vec!["--bs", "1000"], "block size 1000"),
        (vec!["--offset", "100"], "offset 100"),
        (vec!["--size", "1M"], "run past its end"),
        (vec!["--depth", "0"], "depth 0"),
    ] {
        let mut a = vec!["bench", "--rw", "randwrite", "--via", "host"];
        a.extend(args);
        a.push(s(&f));
        let o = run(&a);
        assert_eq!(o.status.code(), Some(2), "{a:?}");
        assert!(stderr(&o).contains(want), "{a:?}: {}", stderr(&o));
    }
    for bad in [["--time", "0"], ["--rw", "readwrite"], ["--via", "nowhere"]] {
        let mut a = vec!["bench"];
        a.extend(bad);
        a.push(s(&f));
        assert_eq!(run(&a).status.code(), Some(2), "{a:?}");
    }
    // A provider named for a file: refused by the model's rules up front.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/truth/s01_switch_cmbmix_fam15/root");
    let o = run(&[
        "--root",
        s(&root),
        "bench",
        "--rw",
        "write",
        "--via",
        "0000:03:00.0",
        s(&f),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("refusing the P2P path through 0000:03:00.0"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&f).unwrap(), vec![0x5a; 256 << 10]);
}

struct Loop(PathBuf);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn loop_device_bench_and_a_mounted_device_is_refused_for_writes() {
    let d = scratch_or_skip!();
    let img = d.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let root_user = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n");
    if root_user.ok() != Some(true) {
        p2pmem_linux::testing::skipped(
            "SKIPPED: loop device test needs root and losetup: not root",
        );
        return;
    }
    let o = match Command::new("losetup")
        .args(["--find", "--show", "--direct-io=on"])
        .arg(&img)
        .output()
    {
        Ok(o) if o.status.success() => o,
        other => {
            p2pmem_linux::testing::skipped(&format!(
                "SKIPPED: loop device test needs root and losetup: {other:?}"
            ));
            return;
        }
    };
    let lo = Loop(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    for rw in ["randread", "write"] {
        let o = run(&[
            "bench",
            "--json",
            "--via",
            "host",
            "--rw",
            rw,
            "--time",
            "0.2",
            s(&lo.0),
        ]);
        assert_eq!(o.status.code(), Some(0), "{rw}: {}", stderr(&o));
        let v = json(&o);
        assert_eq!(v["region"]["end"], 4 << 20);
        assert!(v["ios"].as_u64().unwrap() >= 1);
    }
    // --via auto on a loop device: host memory, loudly.
    let o = run(&["bench", "--json", "--time", "0.1", s(&lo.0)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["via"], "host");
    assert!(stderr(&o).contains("NO P2P PATH"), "{}", stderr(&o));
    // A root whose mountinfo has the device mounted.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("proc/self")).unwrap();
    let rdev = std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata(&lo.0).unwrap());
    let (maj, min) = (
        (rdev >> 8) & 0xfff,
        (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
    );
    std::fs::write(
        root.path().join("proc/self/mountinfo"),
        format!(
            "50 1 {maj}:{min} / /mnt/victim rw - ext4 {} rw\n",
            lo.0.display()
        ),
    )
    .unwrap();
    let mounted = |rw: &str, force: bool| {
        let mut a = vec![
            "--root",
            s(root.path()),
            "bench",
            "--via",
            "host",
            "--time",
            "0.1",
        ];
        a.extend(["--rw", rw]);
        if force {
            a.push("--force");
        }
        a.push(s(&lo.0));
        run(&a)
    };
    let o = mounted("randwrite", false);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("refusing to write to"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("/mnt/victim"), "{}", stderr(&o));
    assert_eq!(mounted("randread", false).status.code(), Some(0));
    let o = mounted("write", true);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force: writing to"), "{}", stderr(&o));
}
