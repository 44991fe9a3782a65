//! On a kernel without userspace p2pmem (6.1: `p2pmem/allocate` arrived in 6.2), copy
//! and bench say so plainly, with what still works, instead of failing on a missing
//! file; `--via auto` copies through host memory and says why. The capture is s01 with
//! its release set to Debian 12's 6.1 and the `allocate` files removed, as 6.1 lays out
//! sysfs.

#![cfg(test)]

use std::path::Path;
use std::process::{Command, Output};

fn capture_61(dir: &Path) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/truth/s01_switch_cmbmix_fam15/root");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(dir)
        .status()
        .unwrap()
        .success());
    let root = dir.join("root");
    std::fs::write(root.join("proc/sys/kernel/osrelease"), "6.1.0-27-amd64\n").unwrap();
    let mut stack = vec![root.join("sys/devices")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if e.file_name() == "allocate" {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
    root
}

fn run(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn copy_and_bench_say_userspace_p2p_needs_6_2_and_what_still_works() {
    let tmp = tempfile::tempdir().unwrap();
    let root = capture_61(tmp.path());
    let src = tmp.path().join("src.img");
    let dst = tmp.path().join("dst.img");
    std::fs::write(&src, vec![7u8; 1 << 20]).unwrap();
    let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());
    let o = run(&root, &["copy", s, d, "--via", "0000:03:00.0", "--force"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("kernel 6.1.0 has no userspace p2pmem: p2pmem/allocate arrived in 6.2"),
        "{err}"
    );
    assert!(err.contains("What still works on this kernel"), "{err}");
    assert!(!dst.exists(), "nothing was written");
    let o = run(&root, &["--json", "copy", s, d]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("NO P2P PATH: kernel 6.1.0 has no userspace p2pmem"),
        "{err}"
    );
    assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&src).unwrap());
    let o = run(
        &root,
        &[
            "bench",
            s,
            "--via",
            "0000:03:00.0",
            "--force",
            "--time",
            "1",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("has no userspace p2pmem"), "{err}");
    let o = run(&root, &["doctor"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(
            "kernel 6.1.0 has no p2pmem/allocate: userspace P2P buffers need 6.2 or later"
        ),
        "{out}"
    );
}
