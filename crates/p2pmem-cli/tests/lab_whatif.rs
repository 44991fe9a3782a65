//! Lab tier: every what-if `p2pmem check` answers from a capture, and every fix it
//! proves, against the real kernel booted that way. The capture is the lab's own
//! `multifunction_acs` (kernel 6.12, no IOMMU, `pci=config_acs=11xx@0000:00:07.0`); the
//! boots are `multifunction_iommu` (the same two-function NVMe below root port 00:07.0,
//! with QEMU's intel-iommu, so the kernel itself turns on ACS redirect) with three
//! command lines: as is, with the fix `check` printed, and with that fix written with a
//! comma. Each prediction is made before its boot, from the capture alone.
//!
//! The kernel's decision is read from the NVMe target (its `enable` runs the same
//! `pci_p2pdma_distance()` and prints the same lines) and from the DMA probe's errno and
//! lines, never from the bytes: under QEMU's IOMMU a transfer the kernel allowed can
//! return wrong data without an error (lab-notes.md), which says nothing about the
//! decision.

#![cfg(test)]

mod lab_common;

use p2pmem_lab::{PlanRun, Topology};
use p2pmem_model::acs::AcsState;
use p2pmem_model::messages::is_p2pdma_decision_line;
use p2pmem_wire::check::CheckReport;
use p2pmem_wire::plan::{Oracle, Plan, Step};
use p2pmem_wire::report::PairRecord;
use std::process::Command;

const FIX: &str = "pci=disable_acs_redir=0000:00:07.0";
const COMMA: &str = "pci=disable_acs_redir=0000:00:05.0,0000:00:07.0";
const BASE: &str = "console=ttyS0 panic=-1 intel_iommu=on";

/// `p2pmem check --json 01:00.0 01:00.1 --iommu on --cmdline CMDLINE` on the capture.
fn predict(extra: &str) -> CheckReport {
    let root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/truth/lab_multifunction_acs/root"
    );
    let cmdline = format!("{BASE} {extra}");
    check_on(
        std::path::Path::new(root),
        &["--iommu", "on", "--cmdline", cmdline.trim()],
    )
}

/// `p2pmem --root ROOT --json check 01:00.0 01:00.1 ARGS...`, read typed.
fn check_on(root: &std::path::Path, args: &[&str]) -> CheckReport {
    let out = Command::new(lab_common::bin())
        .arg("--root")
        .arg(root)
        .args(["--json", "check", "01:00.0", "01:00.1"])
        .args(args)
        .output()
        .expect("p2pmem runs");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a check report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Boots `multifunction_iommu` with `extra` on the command line.
fn boot(extra: &str) -> PlanRun {
    boot_topology("multifunction_iommu", extra)
}

/// Boots `topology` with `extra` on the command line: every pair through both kernel
/// oracles, and the guest's own view of the root port.
fn boot_topology(topology: &str, extra: &str) -> PlanRun {
    boot_on(topology, extra, None, false)
}

/// [`boot_topology`] on a kernel line (the default one when `None`), capturing the
/// guest's sysfs first when asked (the step `capture`).
fn boot_on(topology: &str, cmdline: &str, line: Option<&str>, capture: bool) -> PlanRun {
    let mut topo = Topology::load(topology).expect("topology");
    topo.cmdline = cmdline.to_string();
    let mut plan = Plan::new();
    if capture {
        plan.step("capture", Step::Capture);
    }
    plan.step(
        "pairs",
        Step::Pairs {
            check: true,
            oracle: Oracle::Both,
            pause_after_failure: false,
        },
    );
    lab_common::run_plan_on(&topo, None, line, &plan)
}

fn pair<'a>(run: &'a PlanRun, p: &str, c: &str) -> &'a PairRecord {
    run.pairs("pairs")
        .expect("pairs")
        .iter()
        .find(|r| r.provider.to_string() == p && r.client.to_string() == c)
        .unwrap_or_else(|| panic!("no pair {p} -> {c}"))
}

/// The kernel's decision for 01:00.0 -> 01:00.1: allowed, and its decision lines.
fn kernel_decision(run: &PlanRun) -> (bool, Vec<String>) {
    let p = pair(run, "0000:01:00.0", "0000:01:00.1");
    let n = p
        .nvmet
        .as_ref()
        .and_then(|n| n.as_ref().ok())
        .expect("the NVMe target answered");
    let d = p.dma().expect("the DMA probe answered");
    let lines = |l: &[String]| -> Vec<String> {
        l.iter()
            .filter(|l| is_p2pdma_decision_line(l))
            .cloned()
            .collect()
    };
    // Both oracles give one decision: allowed means no refusal errno and no lines.
    let dma_allowed = d.read.as_deref() != Some("EREMOTEIO") && lines(&d.kernel_log).is_empty();
    assert_eq!(n.ok(), dma_allowed, "the oracles differ: {n:?} {d:?}");
    assert_eq!(lines(&n.kernel_log), lines(&d.kernel_log));
    (n.ok(), lines(&n.kernel_log))
}

/// The root port's ACS Control as the guest read it.
fn guest_acs(run: &PlanRun) -> AcsState {
    let p = pair(run, "0000:01:00.0", "0000:01:00.1");
    let check = p
        .check
        .as_ref()
        .and_then(|c| c.as_ref().ok())
        .expect("the guest's check");
    check.pairs[0]
        .acs_tests
        .iter()
        .find(|t| t.bdf.to_string() == "0000:00:07.0")
        .map(|t| t.acs)
        .expect("the root port was tested")
}

fn predicted_acs(r: &CheckReport) -> AcsState {
    let w = r.what_if.as_ref().expect("what-if");
    w.acs_changes
        .iter()
        .find(|c| c.bdf.to_string() == "0000:00:07.0")
        .map(|c| c.after)
        .expect("the root port changes")
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn with_the_iommu_the_registers_and_the_refusal_are_predicted() {
    let p = predict("");
    assert_eq!(p.supported, Some(false));
    let run = boot("");
    // The registers the kernel set: SV, RR, CR, UF of the capability 0x005f.
    assert_eq!(guest_acs(&run), predicted_acs(&p));
    let (allowed, lines) = kernel_decision(&run);
    assert!(!allowed);
    assert_eq!(lines, p.messages);
    // The fix check prints is the kernel's own suggestion, proven by a what-if...
    let fix = &p.proven_fixes[0];
    assert_eq!(fix.parameter, FIX);
    assert_eq!(fix.allowed, Some(true));
    assert!(lines.iter().any(|l| l.ends_with(FIX)), "{lines:?}");
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn the_printed_fix_works_when_booted() {
    let p = predict(FIX);
    assert_eq!(
        (p.supported, p.map_type.as_deref()),
        (Some(true), Some("bus_addr"))
    );
    let run = boot(FIX);
    let (allowed, lines) = kernel_decision(&run);
    assert!(allowed, "{lines:?}");
    assert_eq!(guest_acs(&run), predicted_acs(&p));
    let w = p.what_if.expect("what-if");
    for l in &w.kernel_lines {
        assert!(run.boot_dmesg.contains(l.as_str()), "{l:?} not logged");
    }
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn the_fix_written_with_a_comma_fails_as_predicted() {
    let p = predict(COMMA);
    assert_eq!(p.supported, Some(false));
    let w = p.what_if.as_ref().expect("what-if");
    assert!(w
        .kernel_lines
        .contains(&"PCI: Unknown option `0000:00:07.0'".to_string()));
    let run = boot(COMMA);
    assert!(
        run.boot_dmesg
            .contains("PCI: Unknown option `0000:00:07.0'"),
        "the kernel did not log the split"
    );
    let (allowed, _) = kernel_decision(&run);
    assert!(!allowed);
    assert_eq!(guest_acs(&run), predicted_acs(&p));
}

/// Without an IOMMU, on the capture's own topology (`pci=config_acs=` sets RR/CR on the
/// root port): the kernel's suggestion is proven not to help (config_acs is applied after
/// disable_acs_redir), and the rewritten config_acs is proven to; both booted.
#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn on_the_config_acs_capture_the_kernels_suggestion_fails_and_the_rewrite_works() {
    let root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/truth/lab_multifunction_acs/root"
    );
    let out = Command::new(lab_common::bin())
        .args(["--root", root, "--json", "check", "01:00.0", "01:00.1"])
        .output()
        .expect("p2pmem runs");
    let p: CheckReport = serde_json::from_slice(&out.stdout).expect("a check report");
    let [suggested, rewritten] = &p.proven_fixes[..] else {
        panic!("two fixes expected: {:?}", p.proven_fixes);
    };
    assert_eq!(
        (suggested.allowed, rewritten.allowed),
        (Some(false), Some(true))
    );
    for (fix, want) in [(suggested, false), (rewritten, true)] {
        let extra = fix
            .cmdline
            .strip_prefix("console=ttyS0 panic=-1 ")
            .expect("the lab's base command line");
        let run = boot_topology("multifunction_acs", extra);
        let (allowed, _) = kernel_decision(&run);
        assert_eq!(allowed, want, "booted with `{}`", fix.cmdline);
    }
}

/// 7.x writes a port's ACS Control when a driver binds it (or an IOMMU probes it), 6.12 at
/// enumeration. With `pcie_ports=compat` no driver binds root port 00:07.0, so on 7.3 its
/// `config_acs` entry is never applied and the pair is allowed, with the register at its
/// firmware value. From that 7.3 capture alone, the what-if predicts the usual boot (the
/// port driver binds: config_acs applied, refused) and 6.12 with `pcie_ports=compat`
/// (applied at enumeration: refused); both are booted.
#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn on_7_3_a_port_no_driver_binds_keeps_its_firmware_acs() {
    let acs = "pci=config_acs=11xx@0000:00:07.0";
    let compat = format!("{acs} pcie_ports=compat");
    let run = boot_on("multifunction_acs", &compat, Some("7.3"), true);
    let (allowed, lines) = kernel_decision(&run);
    assert!(
        allowed,
        "7.3 applied config_acs to a port with no driver: {lines:?}"
    );
    let unbound = guest_acs(&run);
    assert!(
        matches!(unbound, AcsState::Present { control, .. } if control.0 == 0),
        "{unbound:?}"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    p2pmem_lab::run::lab::unpack_tar(run.attachment("capture").expect("capture"), &root)
        .expect("unpack the capture");
    let here = check_on(&root, &[]);
    assert_eq!(here.supported, Some(true), "{here:?}");

    // The usual boot of 7.3: the port driver binds and config_acs is applied. (A whole
    // command line: a `pci=` part alone would keep the captured pcie_ports=compat.)
    let whole = format!("console=ttyS0 panic=-1 {acs}");
    let bound = check_on(&root, &["--cmdline", &whole]);
    assert_eq!(bound.supported, Some(false), "{bound:?}");
    let run = boot_on("multifunction_acs", acs, Some("7.3"), false);
    let (allowed, lines) = kernel_decision(&run);
    assert!(!allowed);
    assert_eq!(lines, bound.messages);
    assert_eq!(guest_acs(&run), predicted_acs(&bound));
    let w = bound.what_if.as_ref().expect("what-if");
    for l in &w.kernel_lines {
        assert!(run.boot_dmesg.contains(l.as_str()), "{l:?} not logged");
    }

    // 6.12 with the same command line: applied at enumeration, driver or not.
    let old = check_on(&root, &["--kernel", "6.12.118", "--cmdline", &compat]);
    assert_eq!(old.supported, Some(false), "{old:?}");
    let run = boot_on("multifunction_acs", &compat, Some("6.12"), false);
    let (allowed, lines) = kernel_decision(&run);
    assert!(!allowed);
    assert_eq!(lines, old.messages);
    assert_eq!(guest_acs(&run), predicted_acs(&old));
}
