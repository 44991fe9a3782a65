//! Lab tier: `p2pmem lab capture` of the topologies that reproduce shared/truth must give
//! the kernel's recorded verdicts pair for pair (same kernel, same QEMU, same devices).

#![cfg(test)]

mod lab_common;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn shared_truth(scenario: &str) -> PathBuf {
    let shared = std::env::var("P2PMEM_SHARED")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures").to_string());
    Path::new(&shared).join("truth").join(scenario)
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn capture_matches_truth(scenario: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cap");
    let out = lab_common::p2pmem(&[
        "lab",
        "capture",
        "--topology",
        scenario,
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    for f in [
        "truth.json",
        "boot_dmesg.txt",
        "qemu.sh",
        "root/proc/cmdline",
        "root/proc/cpuinfo",
    ] {
        assert!(dir.join(f).exists(), "{f} missing from the capture");
    }
    assert!(dir.join("root/sys/bus/pci/devices").is_dir());
    let ours = load(&dir.join("truth.json"));
    let truth = load(&shared_truth(scenario).join("truth.json"));
    for key in [
        "scenario",
        "qemu_args",
        "cpu",
        "cpu_vendor_id",
        "cpu_family",
        "cmdline",
    ] {
        assert_eq!(ours[key], truth[key], "{key}");
    }
    let bdfs = |v: &Value| -> Vec<(String, String)> {
        v["nvme"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["serial"].as_str().unwrap().into(),
                    n["bdf"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    assert_eq!(bdfs(&ours), bdfs(&truth));
    let boot = std::fs::read_to_string(dir.join("boot_dmesg.txt")).unwrap();
    assert!(
        boot.contains("Linux version 6.12"),
        "boot_dmesg.txt lacks the boot log"
    );
    assert!(!ours["boot_log"].as_array().unwrap().is_empty());

    let pairs = |v: &Value| v["pairs"].as_array().unwrap().clone();
    let (ours_p, truth_p) = (pairs(&ours), pairs(&truth));
    assert_eq!(ours_p.len(), truth_p.len(), "pair count");
    for t in &truth_p {
        let o = ours_p
            .iter()
            .find(|o| o["provider"] == t["provider"] && o["client"] == t["client"])
            .unwrap_or_else(|| panic!("pair {} -> {} not run", t["provider"], t["client"]));
        for key in [
            "mmap",
            "read",
            "write",
            "read_data",
            "write_data",
            "kernel_log",
        ] {
            assert_eq!(
                o[key], t[key],
                "{} -> {}: {key}",
                t["provider"], t["client"]
            );
        }
    }
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn s01_capture_reproduces_the_recorded_verdicts() {
    capture_matches_truth("s01_switch_cmbmix_fam15");
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn s05_capture_reproduces_the_recorded_verdicts() {
    capture_matches_truth("s05_multifunction_fam15");
}
