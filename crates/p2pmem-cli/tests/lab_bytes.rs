//! Lab tier: where the bytes of a copy went, measured from QEMU's nvme DMA trace.
//! `lab demo` copies 1 MiB twice in one boot (through a CMB, then through a host buffer),
//! each between its own trace markers; `lab run -- p2pmem copy ...` measures the copy it
//! runs. Through a CMB no payload byte crosses host memory; through a host buffer every
//! payload byte crosses it twice (written into RAM by the source, read out of it by the
//! destination).

#![cfg(test)]

mod lab_common;

use serde_json::Value;

const MIB: u64 = 1 << 20;

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {v}"))
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn cmb_copy_moves_no_payload_through_host_memory_and_a_host_buffer_twice() {
    let out = lab_common::p2pmem(&["--json", "lab", "demo", "--topology", "switch"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let summary: Value = serde_json::from_str(text.lines().last().expect("no output")).unwrap();
    assert_eq!(out.status.code(), Some(0), "{summary}");
    assert_eq!(summary["copy_verified"], true, "{}", summary["copy"]);
    assert_eq!(summary["dma_error"], Value::Null, "{summary}");
    let dma = summary["dma"].as_array().expect("dma is a list");
    assert_eq!(dma.len(), 2, "{summary}");

    let cmb = &dma[0];
    assert_eq!(cmb["via"], "0000:03:00.0", "{cmb}");
    assert_eq!(cmb["exit"], 0);
    assert_eq!(cmb["detail"]["window"], "closed");
    assert_eq!(u(cmb, "payload_bytes"), MIB, "{cmb}");
    assert_eq!(u(cmb, "host_memory_bytes"), 0, "{cmb}");
    assert_eq!(cmb["host_memory_per_payload_byte"].as_f64(), Some(0.0));
    // The source writes into its own CMB; the destination reads it across the switch.
    assert_eq!(u(cmb, "own_cmb_bytes"), MIB, "{cmb}");
    assert_eq!(u(cmb, "other_device_bytes"), MIB, "{cmb}");
    assert_eq!(u(cmb, "peer_bytes"), 2 * MIB, "{cmb}");
    assert_eq!(u(cmb, "unattributed_bytes"), 0, "{cmb}");
    assert_eq!(u(&cmb["detail"]["devices"], "0000:03:00.0"), 2 * MIB);
    // --verify reads both ranges back into host memory: reported apart.
    assert_eq!(u(cmb, "readback_bytes"), 2 * MIB, "{cmb}");
    assert!(u(cmb, "queue_bytes") > 0);

    let host = &dma[1];
    assert_eq!(host["via"], "host", "{host}");
    assert_eq!(host["exit"], 0);
    assert_eq!(u(host, "payload_bytes"), MIB, "{host}");
    assert_eq!(u(host, "host_memory_bytes"), 2 * MIB, "{host}");
    assert_eq!(host["host_memory_per_payload_byte"].as_f64(), Some(2.0));
    assert_eq!(u(host, "peer_bytes"), 0, "{host}");
    assert_eq!(u(host, "unattributed_bytes"), 0, "{host}");
    // 512 KiB commands through PRPs: the lists are queue traffic, in RAM.
    let q = &host["detail"]["queue"];
    assert_eq!(
        u(q, "prp_list_bytes"),
        u(q, "prp_list_host_memory_bytes"),
        "{q}"
    );
    assert!(u(q, "prp_list_bytes") > 0, "{q}");
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn lab_run_of_a_copy_measures_it_and_the_guest_copy_says_it_cannot() {
    // nvme0 is 03:00.0 and nvme1 04:00.0 (controllers are numbered in probe order).
    let out = lab_common::p2pmem(&[
        "--json",
        "lab",
        "run",
        "--topology",
        "switch",
        "--",
        "p2pmem",
        "--json",
        "copy",
        "/dev/nvme0n1",
        "/dev/nvme1n1",
        "--via",
        "0000:04:00.0",
        "--require-p2p",
        "--length",
        "2M",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let (copy, last) = text.trim_end().rsplit_once('\n').expect("two documents");
    let copy: Value = serde_json::from_str(copy).unwrap();
    assert_eq!(copy["via"], "0000:04:00.0");
    assert_eq!(u(&copy, "payload_bytes"), 2 * MIB);
    assert_eq!(copy["host_memory_bytes"], Value::Null, "{copy}");
    assert!(copy["host_memory_reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("not measurable on this machine")));

    let last: Value = serde_json::from_str(last).unwrap();
    assert_eq!(last["dma_error"], Value::Null, "{last}");
    let d = &last["dma_accounting"];
    assert_eq!(u(d, "payload_bytes"), 2 * MIB, "{d}");
    assert_eq!(u(d, "host_memory_bytes"), 0, "{d}");
    // Through the destination's CMB: the source writes into 04:00.0's BAR across the
    // switch, the destination reads its own CMB.
    assert_eq!(u(d, "other_device_bytes"), 2 * MIB, "{d}");
    assert_eq!(u(d, "own_cmb_bytes"), 2 * MIB, "{d}");
    assert_eq!(u(&d["detail"]["devices"], "0000:04:00.0"), 4 * MIB);
    assert_eq!(u(d, "readback_bytes"), 0, "no --verify");
    assert!(std::path::Path::new(d["trace"].as_str().unwrap()).is_file());
}
