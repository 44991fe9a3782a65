//! `p2pmem copy` end to end on the host tier: regular files in the target directory (a
//! file system with O_DIRECT; tmpfs may lack it), host buffers, both engines; loop
//! devices when root and losetup are there (else SKIPPED, said on stderr).

#![cfg(test)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn p2pmem() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_p2pmem"));
    c.env_remove("P2PMEM_ENGINE");
    c
}

fn run(args: &[&str]) -> Output {
    p2pmem().args(args).output().unwrap()
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
        let o = run(&[
            "copy",
            "--via",
            "host",
            "--engine",
            "sync",
            probe.to_str().unwrap(),
            tmp.path().join("probe.out").to_str().unwrap(),
        ]);
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

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed)
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_host_copy_verifies_and_prints_the_documented_json() {
    let d = scratch_or_skip!();
    let src = d.path().join("src.img");
    let dst = d.path().join("dst.img");
    let data = pattern(3 << 20, 1);
    std::fs::write(&src, &data).unwrap();
    let o = run(&[
        "copy",
        "--json",
        "--via",
        "host",
        "--verify",
        s(&src),
        s(&dst),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["bytes"], 3 << 20);
    assert!(v["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(v["via"], "host");
    assert_eq!(v["verified"], true);
    assert_eq!(v["mismatches"], serde_json::json!([]));
    assert_eq!(v["chunk"], 1 << 20);
    // The default depth (8 at 1 MiB), cut to the copy's three chunks, with a buffer of
    // those three.
    assert_eq!(v["depth"], 3);
    assert_eq!(v["buffer_chunks"], 3);
    assert!(
        o.stderr.is_empty(),
        "no progress bar off a TTY: {}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    // Without --verify, `verified` is null.
    let o = run(&["copy", "--json", "--via", "host", s(&src), s(&dst)]);
    assert_eq!(json(&o)["verified"], Value::Null);
    // The text report says where the buffer was.
    let o = run(&["copy", "--via", "host", "--verify", s(&src), s(&dst)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("copied 3.0 MiB in "), "{out}");
    assert!(out.contains("buffer       host memory"), "{out}");
    assert!(out.contains("verify: OK, 3 chunks"), "{out}");
    // Without --depth, 32 reads and 32 writes, fewer from 512 KiB on to keep the buffer
    // (twice the depth in chunks) within 16 MiB; --depth rules. A sparse 32 MiB source has
    // chunks enough for every depth asked.
    let (src, dst) = (d.path().join("big.img"), d.path().join("big-dst.img"));
    std::fs::File::create(&src)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let cases = [
        ("64K", 64 << 10, None, 32, 64),
        ("1M", 1 << 20, None, 8, 16),
        ("4M", 4 << 20, None, 2, 4),
        ("8M", 8 << 20, None, 1, 2),
        ("4M", 4 << 20, Some("3"), 3, 6),
        // Never more than the copy has chunks: 32 MiB is two 16 MiB chunks.
        ("16M", 16 << 20, Some("8"), 2, 2),
    ];
    for (chunk, bytes, depth, want, buffer) in cases {
        let mut args = vec!["copy", "--json", "--via", "host", "--chunk", chunk];
        args.extend(depth.map(|d| ["--depth", d]).iter().flatten());
        args.extend([s(&src), s(&dst)]);
        let v = json(&run(&args));
        assert_eq!(v["depth"], want, "--chunk {chunk} --depth {depth:?}");
        assert_eq!(
            v["buffer_chunks"], buffer,
            "--chunk {chunk} --depth {depth:?}"
        );
        assert_eq!(v["chunk"], bytes);
    }
}

#[test]
fn chunk_depth_and_engine_variants_all_copy_the_same_bytes() {
    let d = scratch_or_skip!();
    let src = d.path().join("src.img");
    let data = pattern(2 << 20, 2);
    std::fs::write(&src, &data).unwrap();
    let mut n = 0;
    for (engine, chunk, depth) in [
        ("sync", "4K", "1"),
        ("sync", "1M", "4"),
        ("auto", "4K", "16"),
        ("auto", "64K", "1"),
        ("auto", "512K", "8"),
        ("uring", "128K", "32"),
    ] {
        let dst = d.path().join(format!("dst-{engine}-{chunk}-{depth}.img"));
        let o = p2pmem()
            .env("P2PMEM_ENGINE", engine)
            .args(["copy", "--json", "--via", "host", "--verify"])
            .args(["--chunk", chunk, "--depth", depth, s(&src), s(&dst)])
            .output()
            .unwrap();
        if engine == "uring"
            && o.status.code() == Some(2)
            && stderr(&o).contains("io_uring is unavailable")
        {
            p2pmem_linux::testing::skipped(&format!("SKIPPED (uring variant): {}", stderr(&o)));
            continue;
        }
        assert_eq!(
            o.status.code(),
            Some(0),
            "{engine} {chunk} {depth}: {}",
            stderr(&o)
        );
        let v = json(&o);
        let expect = if engine == "sync" { "sync" } else { "io_uring" };
        if engine == "auto" && v["engine"] == "sync" {
            assert!(stderr(&o).contains("io_uring is unavailable"), "said once");
        } else {
            assert_eq!(v["engine"], expect, "{engine}");
        }
        assert_eq!(v["verified"], true);
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        n += 1;
    }
    assert!(n >= 5, "{n} variants ran");
    // --engine beats the environment.
    let o = p2pmem()
        .env("P2PMEM_ENGINE", "uring")
        .args([
            "copy",
            "--json",
            "--via",
            "host",
            "--engine",
            "sync",
            s(&src),
        ])
        .arg(d.path().join("x.img"))
        .output()
        .unwrap();
    assert_eq!(json(&o)["engine"], "sync");
    let o = p2pmem()
        .env("P2PMEM_ENGINE", "turbo")
        .args(["copy", "--via", "host", s(&src)])
        .arg(d.path().join("y.img"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("P2PMEM_ENGINE"), "{}", stderr(&o));
}

#[test]
fn offset_length_and_dst_offset() {
    let d = scratch_or_skip!();
    let src = d.path().join("src.img");
    let dst = d.path().join("dst.img");
    let data = pattern(1 << 20, 3);
    let old = pattern(1 << 20, 4);
    std::fs::write(&src, &data).unwrap();
    std::fs::write(&dst, &old).unwrap();
    let o = run(&[
        "copy",
        "--json",
        "--via",
        "host",
        "--verify",
        "--offset",
        "64K",
        "--dst-offset",
        "128K",
        "--length",
        "256K",
        "--chunk",
        "32K",
        s(&src),
        s(&dst),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(
        (
            v["bytes"].clone(),
            v["src_offset"].clone(),
            v["dst_offset"].clone()
        ),
        (
            Value::from(256 << 10),
            Value::from(64 << 10),
            Value::from(128 << 10)
        )
    );
    assert_eq!(v["created"], false);
    let got = std::fs::read(&dst).unwrap();
    assert_eq!(&got[..128 << 10], &old[..128 << 10]);
    assert_eq!(&got[128 << 10..384 << 10], &data[64 << 10..320 << 10]);
    assert_eq!(&got[384 << 10..], &old[384 << 10..]);
    // Misaligned and bad sizes are errors (exit 2), naming the value.
    let o = run(&["copy", "--via", "host", "--offset", "100", s(&src), s(&dst)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("offset 100 is not a multiple of 512"),
        "{}",
        stderr(&o)
    );
    let o = run(&["copy", "--chunk", "1.5M", s(&src), s(&dst)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("1.5M"), "{}", stderr(&o));
    let o = run(&["copy", "--via", "host", "--length", "2M", s(&src), s(&dst)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("run past its end"), "{}", stderr(&o));
}

#[test]
fn an_overlapping_range_is_refused_unless_forced() {
    let d = scratch_or_skip!();
    let f = d.path().join("one.img");
    let data = pattern(1 << 20, 5);
    std::fs::write(&f, &data).unwrap();
    let o = run(&[
        "copy",
        "--via",
        "host",
        "--length",
        "512K",
        "--dst-offset",
        "256K",
        s(&f),
        s(&f),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("overlap on the same file") && e.contains("--force"),
        "{e}"
    );
    assert_eq!(std::fs::read(&f).unwrap(), data, "nothing was written");
    let o = run(&[
        "copy",
        "--via",
        "host",
        "--length",
        "256K",
        "--dst-offset",
        "512K",
        s(&f),
        s(&f),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(&[
        "copy",
        "--via",
        "host",
        "--force",
        "--length",
        "512K",
        "--dst-offset",
        "256K",
        s(&f),
        s(&f),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
}

#[test]
fn require_p2p_without_a_path_exits_1_and_auto_falls_back_loudly() {
    let d = scratch_or_skip!();
    let src = d.path().join("src.img");
    let dst = d.path().join("dst.img");
    std::fs::write(&src, pattern(65536, 6)).unwrap();
    let o = run(&["copy", "--require-p2p", s(&src), s(&dst)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--require-p2p"), "{}", stderr(&o));
    assert!(!dst.exists(), "a refused copy leaves no new file behind");
    let o = run(&["copy", "--json", s(&src), s(&dst)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["via"], "host");
    assert!(stderr(&o).contains("NO P2P PATH"), "{}", stderr(&o));
    assert!(stderr(&o).contains("HOST memory"), "{}", stderr(&o));
}

#[test]
fn ctrl_c_stops_between_chunks_and_reports_the_written_range() {
    let d = scratch_or_skip!();
    let src = d.path().join("big.img");
    let dst = d.path().join("big.out");
    std::fs::write(&src, pattern(64 << 20, 7)).unwrap();
    // 4 KiB synchronous requests: slow enough to be interrupted mid-way.
    let child = p2pmem()
        .args([
            "copy", "--via", "host", "--engine", "sync", "--chunk", "4K", "--depth", "1",
        ])
        .args([s(&src), s(&dst)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Signal as soon as the copy has written something (never before it started, so the
    // interruption is mid-copy unless 64 MiB of 4 KiB requests finish in no time).
    let started = std::time::Instant::now();
    while std::fs::metadata(&dst).map(|m| m.len()).unwrap_or(0) == 0
        && started.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    if o.status.code() == Some(0) {
        p2pmem_linux::testing::skipped("SKIPPED: the copy finished before the signal arrived");
        return;
    }
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("interrupted; of the planned [0, 67108864) of") && e.contains("bytes [0, "),
        "{e}"
    );
    // The range it names was really written.
    let written: u64 = e
        .split("bytes [0, ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(written > 0 && written < 64 << 20, "{e}");
    let got = std::fs::read(&dst).unwrap();
    assert_eq!(
        &got[..written as usize],
        &pattern(64 << 20, 7)[..written as usize]
    );
}

// ---------------------------------------------------------------------------------
// Loop devices (need root and losetup)
// ---------------------------------------------------------------------------------

struct Loop(PathBuf);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn attach(img: &Path) -> Result<Loop, String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not root".into());
    }
    let o = Command::new("losetup")
        .args(["--find", "--show", "--direct-io=on"])
        .arg(img)
        .output()
        .map_err(|e| format!("losetup: {e}"))?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
    }
    Ok(Loop(PathBuf::from(
        String::from_utf8_lossy(&o.stdout).trim(),
    )))
}

#[test]
fn loop_device_copy_verifies_and_a_mounted_destination_is_refused() {
    let d = scratch_or_skip!();
    let img = d.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let lo = match attach(&img) {
        Ok(l) => l,
        Err(why) => {
            p2pmem_linux::testing::skipped(&format!(
                "SKIPPED: loop device test needs root and losetup: {why}"
            ));
            return;
        }
    };
    let src = d.path().join("src.img");
    let data = pattern(2 << 20, 8);
    std::fs::write(&src, &data).unwrap();
    let o = run(&["copy", "--json", "--verify", s(&src), s(&lo.0)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(
        (v["via"].clone(), v["verified"].clone()),
        ("host".into(), true.into())
    );
    assert!(stderr(&o).contains("NO P2P PATH"), "{}", stderr(&o));
    // Back again, device to file.
    let back = d.path().join("back.img");
    let o = run(&[
        "copy",
        "--via",
        "host",
        "--verify",
        "--length",
        "2M",
        s(&lo.0),
        s(&back),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read(&back).unwrap(), data);
    // A root whose mountinfo has the device mounted.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("proc/self")).unwrap();
    let meta = std::fs::metadata(&lo.0).unwrap();
    let rdev = std::os::unix::fs::MetadataExt::rdev(&meta);
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
    let o = run(&[
        "--root",
        s(root.path()),
        "copy",
        "--via",
        "host",
        s(&src),
        s(&lo.0),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("mounted at /mnt/victim (ext4"),
        "{}",
        stderr(&o)
    );
    // --force overrides.
    let o = run(&[
        "--root",
        s(root.path()),
        "copy",
        "--via",
        "host",
        "--force",
        s(&src),
        s(&lo.0),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
