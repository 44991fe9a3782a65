//! Lab tier: where the bytes of a copy went, measured from QEMU's nvme DMA trace.
//! `lab demo` copies 1 MiB twice in one boot (through a CMB, then through a host buffer),
//! each between its own trace markers; `lab run -- p2pmem copy ...` measures the copy it
//! runs. Through a CMB no payload byte crosses host memory; through a host buffer every
//! payload byte crosses it twice (written into RAM by the source, read out of it by the
//! destination).

#![cfg(test)]

mod lab_common;

use p2pmem_lab::plans::dma::{MeasuredCopy, RunDma};
use p2pmem_wire::copy::CopyDocument;

const MIB: u64 = 1 << 20;

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn cmb_copy_moves_no_payload_through_host_memory_and_a_host_buffer_twice() {
    let (_, summary, code) = lab_common::demo("switch", None);
    assert_eq!(code, Some(0), "{summary:?}");
    assert_eq!(summary.copy_verified, Some(true), "{}", summary.copy);
    assert_eq!(summary.dma_error, None, "{summary:?}");
    assert_eq!(summary.dma.len(), 2, "{summary:?}");

    let cmb: &MeasuredCopy = &summary.dma[0];
    let f = &cmb.dma.figures;
    assert_eq!(cmb.via, "0000:03:00.0", "{cmb:?}");
    assert_eq!(cmb.exit, Some(0));
    assert_eq!(
        cmb.dma.detail.window,
        p2pmem_model::dma_accounting::WindowState::Closed
    );
    assert_eq!(f.payload_bytes, MIB, "{f:?}");
    assert_eq!(f.host_memory_bytes, 0, "{f:?}");
    assert_eq!(f.host_memory_per_payload_byte, Some(0.0));
    // The source writes into its own CMB; the destination reads it across the switch.
    assert_eq!(f.own_cmb_bytes, MIB, "{f:?}");
    assert_eq!(f.other_device_bytes, MIB, "{f:?}");
    assert_eq!(f.peer_bytes, 2 * MIB, "{f:?}");
    assert_eq!(f.unattributed_bytes, 0, "{f:?}");
    assert_eq!(cmb.dma.detail.devices.get("0000:03:00.0"), Some(&(2 * MIB)));
    // --verify reads both ranges back into host memory: reported apart.
    assert_eq!(f.readback_bytes, 2 * MIB, "{f:?}");
    assert!(f.queue_bytes > 0);

    let host = &summary.dma[1];
    let f = &host.dma.figures;
    assert_eq!(host.via, "host", "{host:?}");
    assert_eq!(host.exit, Some(0));
    assert_eq!(f.payload_bytes, MIB, "{f:?}");
    assert_eq!(f.host_memory_bytes, 2 * MIB, "{f:?}");
    assert_eq!(f.host_memory_per_payload_byte, Some(2.0));
    assert_eq!(f.peer_bytes, 0, "{f:?}");
    assert_eq!(f.unattributed_bytes, 0, "{f:?}");
    // 512 KiB commands through PRPs: the lists are queue traffic, in RAM.
    let q = &host.dma.detail.queue;
    assert_eq!(q.prp_list_bytes, q.prp_list_host_memory_bytes, "{q:?}");
    assert!(q.prp_list_bytes > 0, "{q:?}");
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn lab_run_of_a_copy_measures_it_and_the_guest_copy_says_it_cannot() {
    // The namespaces of 03:00.0 and 04:00.0, whatever numbers the guest's kernel gave
    // them (it numbers controllers in probe order).
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
        "{nvme:0000:03:00.0}",
        "{nvme:0000:04:00.0}",
        "--via",
        "0000:04:00.0",
        "--require-p2p",
        "--length",
        "2M",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let (copy, last) = text.trim_end().rsplit_once('\n').expect("two documents");
    let copy: CopyDocument = serde_json::from_str(copy).expect("a copy report");
    assert_eq!(copy.via, "0000:04:00.0");
    assert_eq!(copy.payload_bytes, 2 * MIB);
    assert_eq!(copy.host_memory_bytes, None, "{copy:?}");
    assert!(copy
        .host_memory_reason
        .starts_with("not measurable on this machine"));

    let last: RunDma = serde_json::from_str(last).expect("the DMA line");
    assert_eq!(last.dma_error, None, "{last:?}");
    let d = last.dma_accounting.expect("figures");
    let f = &d.figures;
    assert_eq!(f.payload_bytes, 2 * MIB, "{f:?}");
    assert_eq!(f.host_memory_bytes, 0, "{f:?}");
    // Through the destination's CMB: the source writes into 04:00.0's BAR across the
    // switch, the destination reads its own CMB.
    assert_eq!(f.other_device_bytes, 2 * MIB, "{f:?}");
    assert_eq!(f.own_cmb_bytes, 2 * MIB, "{f:?}");
    assert_eq!(d.detail.devices.get("0000:04:00.0"), Some(&(4 * MIB)));
    assert_eq!(f.readback_bytes, 0, "no --verify");
    assert!(d.trace.is_file());
}
