//! Lab tier: `p2pmem probe` says whether a path the kernel allows moves the right bytes.
//! On `switch` (no IOMMU) swA's CMB (03:00.0) and swB (04:00.0) share a switch and the
//! bytes come through intact; on `switch_iommu` the kernel allows the same pair (bus
//! address, same switch) but QEMU's intel-iommu translates the peer DMA too, so the
//! transfer completes without an error and the data is wrong, with DMAR fault lines in
//! the kernel log. Each boot runs a read-only probe and one with a scratch range.

#![cfg(test)]

mod lab_common;

use p2pmem_linux::path_probe::{PathProbe, PathVerdict};
use p2pmem_wire::plan::{Arg, Dev, Plan, Step};

fn bdf(s: &str) -> p2pmem_model::Bdf {
    s.parse().expect("a PCI address")
}

fn plan() -> Plan {
    let client = Dev::Nvme(bdf("0000:04:00.0"));
    let mut p = Plan::new();
    let probe = |extra: &[&str]| {
        let mut argv: Vec<Arg> = ["p2pmem", "--json", "probe", "0000:03:00.0"]
            .into_iter()
            .map(Arg::from)
            .collect();
        argv.push(client.clone().into());
        argv.extend(extra.iter().map(|a| Arg::from(*a)));
        Step::Exec { argv }
    };
    p.step("read-only", probe(&[]));
    p.step("scratch", probe(&["--scratch", "4M:1M"]));
    p
}

fn probes(topology: &str) -> Vec<(Option<i32>, PathProbe)> {
    let run = lab_common::run_plan(topology, None, &plan());
    ["read-only", "scratch"]
        .iter()
        .map(|name| {
            let e = run.exec(name).expect("the probe ran");
            eprintln!("{name}: exit {:?}\n{}\n{}", e.exit, e.stdout, e.stderr);
            let p: PathProbe = serde_json::from_str(e.stdout.trim()).expect("probe --json");
            (e.exit, p)
        })
        .collect()
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn on_a_plain_switch_the_path_moves_correct_data() {
    let got = probes("switch");
    let (exit, read) = &got[0];
    assert_eq!(read.verdict, PathVerdict::Correct, "{read:?}");
    assert_eq!(*exit, Some(0));
    assert!(read.write.is_none(), "read-only unless --scratch");
    assert!(read.faults.is_empty(), "{read:?}");
    let (exit, scratch) = &got[1];
    assert_eq!(scratch.verdict, PathVerdict::Correct, "{scratch:?}");
    assert_eq!(*exit, Some(0));
    assert_eq!(
        scratch.write.as_ref().map(|w| w.transfer.as_str()),
        Some("ok")
    );
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn under_qemus_iommu_the_allowed_path_moves_wrong_data_and_says_so() {
    let got = probes("switch_iommu");
    for (exit, p) in &got {
        assert_eq!(p.mmap, "ok", "the kernel allowed the mapping: {p:?}");
        assert_eq!(
            p.read.as_ref().map(|r| r.transfer.as_str()),
            Some("ok"),
            "the transfer completes without an error: {p:?}"
        );
        assert_eq!(p.verdict, PathVerdict::Wrong, "{p:?}");
        assert_eq!(*exit, Some(1));
        assert!(p.summary.contains("WRONG"), "{}", p.summary);
    }
}
