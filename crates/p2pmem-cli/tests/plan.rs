//! `p2pmem plan` end to end: designs, flows files, exit status, errors with lines.

#![cfg(test)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn p2pmem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .args(args)
        .output()
        .unwrap()
}

fn design(name: &str) -> String {
    repo()
        .join("examples/designs")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_worked_example_fits_with_p2p_and_says_why() {
    let o = p2pmem(&["plan", "--design", &design("box24-x4.toml")]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("rp0 -> sw0 up (192%)"), "{out}");
    assert!(out.contains("max_scale              2.08x"), "{out}");
    assert!(
        out.contains("P2P keeps 24.00 GiB/s off host memory"),
        "{out}"
    );
}

#[test]
fn flows_that_do_not_fit_exit_1() {
    let d = tempfile::tempdir().unwrap();
    let flows = d.path().join("flows.txt");
    std::fs::write(
        &flows,
        "# all through memory\nnvme0:nvme1:via=host:rate=4G/s\nnvme2:nvme3:via=host:rate=4G/s\n",
    )
    .unwrap();
    let o = p2pmem(&[
        "plan",
        "--design",
        &design("box24-x4.toml"),
        "--flows",
        flows.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn a_bad_design_or_flow_is_an_error_naming_the_place() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[system]\ncpu = \"intel\"\n\n[[switch]]\nname = \"sw\"\nparent = \"nowhere\"\n",
    )
    .unwrap();
    let o = p2pmem(&["plan", "--design", bad.to_str().unwrap(), "--flow", "a:b"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("line 5") && err.contains("nowhere"), "{err}");
    let o = p2pmem(&[
        "plan",
        "--design",
        &design("box24-x4.toml"),
        "--flow",
        "nvme0:nvme99",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("nvme99"), "{err}");
}
