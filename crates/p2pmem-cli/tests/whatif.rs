//! What-if answers and proven fixes against the lab's ground truth: the capture of the
//! `multifunction_acs` topology (kernel 6.12, `pci=config_acs=11xx@0000:00:07.0` puts RR
//! and CR on the root port above a two-function NVMe, so the kernel refused both
//! cross-function pairs) and `s01` (cross-root-port pairs refused by the host bridge).

#![cfg(test)]

use p2pmem_wire::check::CheckReport;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/truth")
        .join(name)
        .join("root")
}

fn run(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn check(root: &Path, more: &[&str]) -> (CheckReport, Option<i32>) {
    let mut args = vec!["--json", "check", "01:00.0", "01:00.1"];
    args.extend_from_slice(more);
    let o = run(root, &args);
    let r: CheckReport = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not a check report ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (r, o.status.code())
}

#[test]
fn the_kernels_suggestion_is_checked_and_a_fix_that_works_is_found() {
    let root = fixture("lab_multifunction_acs");
    let (r, code) = check(&root, &[]);
    assert_eq!((r.supported, code), (Some(false), Some(1)));
    // The kernel's own line suggests disable_acs_redir; config_acs is applied after it
    // and sets RR/CR again, so the check finds it does not help...
    let f = &r.proven_fixes;
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f[0].parameter, "pci=disable_acs_redir=0000:00:07.0");
    assert_eq!(f[0].allowed, Some(false));
    // ...and rewrites the config_acs entry instead: allowed, bus address.
    assert!(f[1]
        .parameter
        .starts_with("pci=config_acs=0x00xx@0000:00:07.0"));
    assert_eq!(f[1].allowed, Some(true));
    assert_eq!(f[1].map_type.as_deref(), Some("bus_addr"));
    // Asking with that command line gives the same answer as the proof.
    let (w, code) = check(&root, &["--cmdline", &f[1].cmdline]);
    assert_eq!((w.supported, code), (Some(true), Some(0)));
    assert_eq!(w.map_type.as_deref(), Some("bus_addr"));
    let what_if = w.what_if.expect("the what-if is reported");
    assert_eq!(what_if.acs_changes.len(), 1);
    assert_eq!(what_if.acs_changes[0].bdf.to_string(), "0000:00:07.0");
    assert!(what_if
        .kernel_lines
        .contains(&"pci 0000:00:07.0: Configured ACS to 0x0000".to_string()));
}

#[test]
fn commas_are_split_as_the_kernel_splits_them() {
    let root = fixture("lab_multifunction_acs");
    // Only pci= options: they replace the captured ones.
    let (w, _) = check(
        &root,
        &[
            "--cmdline",
            "pci=config_acs=0x00xx@0000:00:05.0,0x00xx@0000:00:07.0",
        ],
    );
    // The entry for 00:07.0 was split off: the port keeps its firmware value for RR and
    // CR, which the captured boot had overwritten: unknown, not guessed.
    assert_eq!(w.supported, None, "{w:?}");
    let what_if = w.what_if.expect("what-if");
    assert!(
        what_if
            .kernel_lines
            .contains(&"PCI: Unknown option `0x00xx@0000:00:07.0'".to_string()),
        "{:?}",
        what_if.kernel_lines
    );
    // With `;` it works.
    let (w, _) = check(
        &root,
        &[
            "--cmdline",
            "pci=config_acs=0x00xx@0000:00:05.0;0x00xx@0000:00:07.0",
        ],
    );
    assert_eq!(w.supported, Some(true));
}

#[test]
fn iommu_and_kernel_what_ifs() {
    let root = fixture("lab_multifunction_acs");
    // With the IOMMU the kernel turns on RR and CR itself (a whole command line without
    // config_acs here); disable_acs_redir for the port then decides.
    let (w, _) = check(&root, &["--iommu", "on", "--cmdline", "console=ttyS0"]);
    assert_eq!(w.supported, Some(false));
    let (w, _) = check(
        &root,
        &[
            "--iommu",
            "on",
            "--cmdline",
            "pci=disable_acs_redir=0000:00:07.0",
        ],
    );
    assert_eq!(w.supported, Some(true), "{w:?}");
    // 6.1 has no config_acs: the captured parameter is an unknown option there, and the
    // port is left at its firmware value, which the capture does not show.
    let (w, _) = check(&root, &["--kernel", "6.1.192"]);
    let what_if = w.what_if.expect("what-if");
    assert!(what_if
        .kernel_lines
        .iter()
        .any(|l| l.starts_with("PCI: Unknown option `config_acs=")));
    assert_eq!(w.kernel, "6.1.192");
    assert_eq!(w.supported, None);
}

#[test]
fn host_bridge_refusals_get_no_invented_parameter() {
    let root = fixture("s01_switch_cmbmix_fam15");
    let o = run(&root, &["check", "0000:06:00.0", "0000:04:00.0"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1));
    assert!(!text.contains("fix:"), "{text}");
    assert!(
        text.contains("what would change it: no boot parameter changes a host-bridge refusal"),
        "{text}"
    );
}

#[test]
fn doctor_reads_the_command_line_as_the_kernel_does() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("lab_multifunction_acs");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(status.success());
    let root = tmp.path().join("root");
    std::fs::write(
        root.join("proc/cmdline"),
        "console=ttyS0 pci=disable_acs_redir=0000:00:07.0,0000:00:09.0 pci=config_acs=11xx@0000:00:07.0\n",
    )
    .unwrap();
    let o = run(&root, &["doctor"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "pci= is split at commas: disable_acs_redir keeps only 0000:00:07.0",
        "write pci=disable_acs_redir=0000:00:07.0;0000:00:09.0",
        "PCI: Unknown option `0000:00:09.0'",
        "pci=disable_acs_redir= already lists 0000:00:07.0, yet its ACS redirect is on",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
}

#[test]
fn topo_and_find_answer_the_same_what_if() {
    let root = fixture("lab_multifunction_acs");
    let o = run(
        &root,
        &["topo", "--iommu", "on", "--cmdline", "console=ttyS0"],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(
            "0000:00:07.0 root port: Red Hat, Inc. QEMU PCIe Root port [1b36:000c] (pcieport) ACS ctrl 0x001d (SV RR CR UF) REDIRECT"
        ),
        "{text}"
    );
    // Under the captured boot the sibling function is refused, so find picks the client
    // itself only; with the redirect off the sibling is reachable too.
    let find = |more: &[&str]| {
        let mut args = vec!["--json", "find", "01:00.1"];
        args.extend_from_slice(more);
        let o = run(&root, &args);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("find JSON")
    };
    let reachable = |v: &serde_json::Value| {
        v["candidates"]
            .as_array()
            .expect("candidates")
            .iter()
            .filter(|c| c["supported"] == true)
            .count()
    };
    assert_eq!(reachable(&find(&[])), 1);
    assert_eq!(
        reachable(&find(&["--cmdline", "pci=config_acs=0x00xx@0000:00:07.0"])),
        2
    );
}

/// `doctor` says whether an IOMMU is active and who put ACS redirect on each port: the
/// kernel for the IOMMU (the multifunction_iommu captures, every line), a `config_acs`
/// entry (multifunction_acs), none where no port redirects (default on 7.3).
#[test]
fn doctor_says_who_set_each_acs_redirect() {
    for line in ["6.1", "6.12", "7.2", "7.3"] {
        let root = fixture(&format!("lab_multifunction_iommu_k{line}"));
        let text = String::from_utf8_lossy(&run(&root, &["doctor"]).stdout).into_owned();
        for want in [
            "IOMMU active (dmar0)",
            "ACS redirect on 0000:00:07.0: set by the kernel because the IOMMU is on (dmar0)",
        ] {
            assert!(text.contains(want), "{line}: {want:?} not in\n{text}");
        }
    }
    let acs = fixture("lab_multifunction_acs");
    let text = String::from_utf8_lossy(&run(&acs, &["doctor"]).stdout).into_owned();
    assert!(
        text.contains("ACS redirect on 0000:00:07.0: set by pci=config_acs=11xx@0000:00:07.0"),
        "{text}"
    );
    assert!(text.contains("no IOMMU registered"), "{text}");
    let plain = fixture("lab_default_k7.3");
    let text = String::from_utf8_lossy(&run(&plain, &["doctor"]).stdout).into_owned();
    assert!(!text.contains("ACS redirect on"), "{text}");
}

/// On 7.x a port's ACS is written when the IOMMU probes it and again when its driver
/// binds (each time with that moment's prefix), so the driver must be read even where a
/// check reads only what its decision needs: on the 7.3 IOMMU capture the kernel's fix
/// is proven, with both lines.
#[test]
fn on_7_3_the_fix_is_proven_with_the_lines_of_both_writes() {
    let root = fixture("lab_multifunction_iommu_k7.3");
    let (r, code) = check(&root, &[]);
    assert_eq!((r.supported, code), (Some(false), Some(1)));
    let fix = &r.proven_fixes[0];
    assert_eq!(fix.parameter, "pci=disable_acs_redir=0000:00:07.0");
    assert_eq!(fix.allowed, Some(true));
    let whole = "console=ttyS0 panic=-1 intel_iommu=on pci=disable_acs_redir=0000:00:07.0";
    let (w, _) = check(&root, &["--cmdline", whole]);
    assert_eq!(w.supported, Some(true));
    assert_eq!(
        w.what_if.expect("what-if").kernel_lines,
        [
            "pci 0000:00:07.0: Configured ACS to 0x0000",
            "pcieport 0000:00:07.0: Configured ACS to 0x0000"
        ]
    );
}
