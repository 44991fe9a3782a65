//! Lab tier: the matrix. Every embedded topology on every kernel line the lab pins
//! (Debian's 6.1, 6.12, 7.2, 7.3), booted, every (provider, client) pair decided by the
//! kernel (the DMA probe and the NVMe target on 6.2+, the NVMe target alone on 6.1) and
//! predicted by the model from the guest's own sysfs: the verdict, the errno and the
//! decision lines agree on every pair.

#![cfg(test)]

mod lab_common;

use p2pmem_lab::reports::demo::DemoSummary;

#[test]
#[ignore = "lab tier: boots every kernel line under QEMU; scripts/test runs it"]
fn every_topology_on_every_kernel_line_agrees() {
    let out = lab_common::p2pmem(&["--json", "lab", "matrix"]);
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let rows: Vec<DemoSummary> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a row ({e}): {l}")))
        .collect();
    let topologies = p2pmem_lab::machine::topology::EMBEDDED.len();
    assert_eq!(rows.len(), 4 * topologies, "{text}");
    for line in ["6.1.", "6.12.", "7.2.", "7.3."] {
        let of_line: Vec<&DemoSummary> =
            rows.iter().filter(|r| r.kernel.starts_with(line)).collect();
        assert_eq!(of_line.len(), topologies, "{line}: {text}");
        let pairs: usize = of_line.iter().map(|r| r.pairs).sum();
        assert!(pairs >= 100, "{line}: {pairs} pairs");
    }
    for r in &rows {
        assert_eq!(
            (r.disagreed, r.incomplete, r.agreed),
            (0, 0, r.pairs),
            "{} on {}: {r:?}",
            r.topology,
            r.kernel
        );
    }
    assert_eq!(out.status.code(), Some(0));
}
