//! Lab tier: `p2pmem plan`'s byte counts for a copy equal what the lab's DMA accounting
//! measures for the same copy (QEMU's nvme DMA trace). On `s01_switch_cmbmix_fam15` (swA
//! 03:00.0 and swB 04:00.0 with CMBs and swC 05:00.0 without, behind one switch), three
//! 2 MiB copies, each in its own boot: through the source's own CMB on the switch, through
//! a third device's CMB, and through host memory. The planner works from the recorded
//! capture of that topology (`fixtures/truth/s01_switch_cmbmix_fam15`); the measurement
//! from the copy the guest really does. Both must give the same bytes through host
//! memory, inside a controller's own CMB, into another device's BAR, and per device BAR.

#![cfg(test)]

mod lab_common;

use p2pmem_lab::plans::dma::RunDma;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

const MIB: u64 = 1 << 20;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/truth/s01_switch_cmbmix_fam15/root")
}

/// The planner's accounting of the copy `src -> dst` through `via`, per payload byte.
fn planned(src: &str, dst: &str, via: &str) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .arg("--root")
        .arg(fixture())
        .args([
            "--json",
            "plan",
            "--flow",
            &format!("{src}:{dst}:via={via}"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    let doc: Value = serde_json::from_str(text.lines().next().expect("a plan document"))
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    doc["flows"][0]["accounting"].clone()
}

/// The lab's measurement of the same copy, run in the guest with the devices found by
/// their PCI addresses.
fn measured(src: &str, dst: &str, via: &str) -> RunDma {
    let p2p = if via == "host" { "" } else { " --require-p2p" };
    let script = format!(
        "n() {{ for d in /sys/bus/pci/devices/$1/nvme/nvme*/nvme*n1; do basename $d; done; }}; \
         p2pmem --json copy /dev/$(n {src}) /dev/$(n {dst}) --via {via} --length 2M{p2p}"
    );
    let out = lab_common::p2pmem(&[
        "--json",
        "lab",
        "run",
        "--trace-dma",
        "--topology",
        "s01_switch_cmbmix_fam15",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out.status.code(), Some(0), "{script}");
    let text = String::from_utf8(out.stdout).unwrap();
    let last = text.trim_end().lines().last().expect("the DMA line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn agree(src: &str, dst: &str, via: &str) {
    let plan = planned(src, dst, via);
    let run = measured(src, dst, via);
    assert_eq!(run.dma_error, None, "{run:?}");
    let d = run.dma_accounting.expect("figures");
    let f = &d.figures;
    let per = |k: &str| plan[k].as_u64().unwrap_or_else(|| panic!("{k}: {plan}"));
    assert_eq!(f.payload_bytes, 2 * MIB, "{f:?}");
    assert_eq!(
        f.host_memory_bytes,
        per("host_memory") * 2 * MIB,
        "{via}: {f:?} vs {plan}"
    );
    assert_eq!(
        f.own_cmb_bytes,
        per("own_cmb") * 2 * MIB,
        "{via}: {f:?} vs {plan}"
    );
    assert_eq!(
        f.other_device_bytes,
        per("other_device") * 2 * MIB,
        "{via}: {f:?} vs {plan}"
    );
    assert_eq!(f.unattributed_bytes, 0, "{f:?}");
    let planned_devices: std::collections::BTreeMap<String, u64> = plan["devices"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap() * 2 * MIB))
        .collect();
    let measured_devices: std::collections::BTreeMap<String, u64> = d
        .detail
        .devices
        .iter()
        .filter(|(_, b)| **b > 0)
        .map(|(k, b)| (k.clone(), *b))
        .collect();
    assert_eq!(
        measured_devices, planned_devices,
        "{via}: bytes per device BAR"
    );
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn through_the_sources_own_cmb_the_plan_counts_what_the_trace_measures() {
    agree("0000:03:00.0", "0000:04:00.0", "0000:03:00.0");
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn through_a_third_devices_cmb_the_plan_counts_what_the_trace_measures() {
    agree("0000:03:00.0", "0000:05:00.0", "0000:04:00.0");
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn through_host_memory_the_plan_counts_what_the_trace_measures() {
    agree("0000:03:00.0", "0000:04:00.0", "host");
}
