//! Lab tier: `p2pmem lab demo --json` on the default topology: every pair's prediction
//! agrees with the kernel, and the summary object comes last.

#![cfg(test)]

mod lab_common;

use lab_common::demo;
use p2pmem_lab::reports::demo::DemoPair;

fn demo_json(
    topology: &str,
) -> (
    Vec<DemoPair>,
    p2pmem_lab::reports::demo::DemoSummary,
    Option<i32>,
) {
    demo(topology, None)
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn default_demo_predictions_agree_with_the_kernel() {
    let (pairs, summary, code) = demo_json("default");
    // 4 CMB providers and an ivshmem (p2pmem_pci) x 5 NVMe clients; same switch, same
    // device and the multi-function device work, everything across root ports is refused
    // (AMD family 15).
    assert_eq!(summary.pairs, 25, "{summary:?}");
    assert_eq!(pairs.len(), 25);
    assert_eq!(summary.kernel_ok, 9, "{summary:?}");
    assert_eq!(summary.agreed, 25, "{summary:?}");
    // The verified copy between two NVMe through a CMB: p2pmem copy --verify, and the
    // lab's own sha256 of both ranges.
    assert_eq!(summary.copy_verified, Some(true), "{}", summary.copy);
    let report = summary.copy_report.as_ref().expect("a copy report");
    assert_eq!(report.report.bytes, 1 << 20);
    assert_eq!(code, Some(0));
    // Both kernel oracles answered every pair (6.12 has userspace p2pmem), and `agreed`
    // includes that the NVMe target gave the DMA probe's verdict and decision lines.
    for p in &pairs {
        assert_eq!(p.oracle, "dma+nvmet", "{p:?}");
        let want = if p.kernel == Some(true) {
            "ok"
        } else {
            "EINVAL"
        };
        assert_eq!(p.nvmet.as_deref(), Some(want), "{p:?}");
    }
    let refused: Vec<&DemoPair> = pairs.iter().filter(|p| p.kernel == Some(false)).collect();
    assert!(!refused.is_empty());
    assert!(refused
        .iter()
        .all(|p| p.read.as_deref() == Some("EREMOTEIO")));
    // The refusal is among the pair's lines (a late boot line, such as the TSC's refined
    // calibration on a loaded host, may come before it; the kernel prints the refusal in
    // the probe's own system call, so it never lands in another pair's lines).
    for p in &refused {
        assert!(
            p.kernel_log
                .iter()
                .any(|l| l.contains("cannot be used for peer-to-peer DMA")),
            "{p:?}"
        );
    }
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn zen_cpu_allows_cross_root_port_p2p() {
    let (_, max, _) = demo_json("rootports_max");
    let (_, zen, code) = demo_json("rootports_zen");
    assert_eq!((max.pairs, max.kernel_ok), (4, 2), "{max:?}");
    assert_eq!((zen.pairs, zen.kernel_ok), (4, 4), "{zen:?}");
    assert_eq!(max.agreed, 4);
    assert_eq!(zen.agreed, 4);
    assert_eq!(code, Some(0));
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn acs_redirect_refuses_the_multifunction_pair_and_is_predicted() {
    let (pairs, summary, code) = demo_json("multifunction_acs");
    assert_eq!((summary.pairs, summary.kernel_ok), (4, 2), "{summary:?}");
    assert_eq!(summary.agreed, 4, "{summary:?}");
    assert_eq!(code, Some(0));
    let cross: Vec<&DemoPair> = pairs.iter().filter(|p| p.provider != p.client).collect();
    assert_eq!(cross.len(), 2);
    for p in cross {
        assert_eq!(p.read.as_deref(), Some("EREMOTEIO"), "{p:?}");
        let log = p.kernel_log.join("\n");
        assert!(
            log.contains("ACS redirect is set between the client and provider"),
            "{log}"
        );
        assert!(log.contains("pci=disable_acs_redir=0000:00:07.0"), "{log}");
    }
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn same_switch_and_nested_switches_use_bus_addresses() {
    for (topology, pairs_expected) in [("switch", 6), ("nested", 6)] {
        let (pairs, summary, code) = demo_json(topology);
        assert_eq!(summary.pairs, pairs_expected, "{topology}: {summary:?}");
        assert_eq!(summary.agreed, pairs_expected, "{topology}: {summary:?}");
        assert_eq!(summary.kernel_ok, pairs_expected, "{topology}: {summary:?}");
        assert_eq!(code, Some(0), "{topology}");
        for p in &pairs {
            assert_eq!(p.map_type.as_deref(), Some("bus_addr"), "{topology}: {p:?}");
            assert!(p.predicted_messages.is_empty(), "{topology}: {p:?}");
        }
    }
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn on_a_line_without_the_driver_its_copy_is_not_run_and_says_why() {
    let (pairs, summary, _) = lab_common::demo_on("default", None, Some("7.2"));
    assert_eq!(summary.kernel, "7.2.13", "{summary:?}");
    // The ivshmem is no provider without p2pmem_pci: 4 CMB providers x 5 NVMe.
    assert_eq!(summary.pairs, 20, "{summary:?}");
    assert_eq!(pairs.len(), 20);
    assert_eq!(summary.driver_copy_verified, None, "{summary:?}");
    assert!(summary.driver_providers.is_empty());
    assert!(
        summary
            .driver_copy
            .starts_with("not run: p2pmem_pci is not built for kernel 7.2"),
        "{}",
        summary.driver_copy
    );
}
