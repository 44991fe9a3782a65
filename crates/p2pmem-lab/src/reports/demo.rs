//! `lab demo` as data: for each (provider, client) pair, the prediction made in the guest
//! (the agent's `check`) next to the kernel's real verdict (its DMA probe), whether they
//! agree, and the kernel's messages; then the copy steps and a summary. Rendering (table
//! or JSON lines) is left to the CLI.

use p2pmem_model::messages::is_p2pdma_decision_line;
use p2pmem_wire::copy::CopyDocument;
use p2pmem_wire::report::PairRecord;
use serde::{Deserialize, Serialize};

use crate::plans::dma::MeasuredCopy;
use crate::plans::pairs::{CopyStepResult, PairsResult};

/// One pair of the demo.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoPair {
    /// Provider BDF.
    pub provider: String,
    /// Client BDF.
    pub client: String,
    /// Client block device.
    pub client_blkdev: String,
    /// The prediction: `Some(true)` supported, `Some(false)` refused, `None` unavailable.
    pub predicted: Option<bool>,
    /// The predicted map type, if any.
    pub map_type: Option<String>,
    /// Why there is no prediction, if there is none.
    pub prediction_error: Option<String>,
    /// The kernel's verdict: `Some(true)` when read and write both moved all bytes (the
    /// DMA probe), or, where there is no DMA probe (kernels before 6.2), when the NVMe
    /// target accepted the provider.
    pub kernel: Option<bool>,
    /// Where the verdict came from: `dma`, `nvmet`, or `dma+nvmet` (both asked).
    pub oracle: String,
    /// The NVMe target's answer (`ok` or the errno of the refused write), when asked.
    pub nvmet: Option<String>,
    /// Read result (`ok` or an errno name).
    pub read: Option<String>,
    /// Write result.
    pub write: Option<String>,
    /// Why there is no kernel verdict, if there is none.
    pub kernel_error: Option<String>,
    /// Prediction and kernel agree: the same verdict, the same errno for a refusal, and
    /// the same P2PDMA decision lines in the same order (None when either is missing).
    pub agree: Option<bool>,
    /// Why they disagree, when they do.
    pub disagreement: Option<String>,
    /// Kernel messages logged during the probe (the DMA probe's, else the NVMe
    /// target's).
    pub kernel_log: Vec<String>,
    /// The kernel messages the model predicted (`p2pmem check --json`'s `messages`).
    pub predicted_messages: Vec<String>,
}

/// The demo's last word.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoSummary {
    /// Topology name.
    pub topology: String,
    /// The `-cpu` value.
    pub cpu: String,
    /// The guest kernel's release (`uname -r`).
    pub kernel: String,
    /// Pairs run.
    pub pairs: usize,
    /// Pairs whose prediction matched the kernel.
    pub agreed: usize,
    /// Pairs whose prediction contradicted the kernel.
    pub disagreed: usize,
    /// Pairs without a prediction or a kernel verdict.
    pub incomplete: usize,
    /// Pairs the kernel allowed.
    pub kernel_ok: usize,
    /// The verified-copy step in words: what was copied and whether it verified, or why
    /// it did not run.
    pub copy: String,
    /// `Some(true)`: `p2pmem copy --verify` succeeded through a CMB and the lab's own
    /// sha256 of both ranges matched; `Some(false)`: it ran and failed; `None`: not run.
    pub copy_verified: Option<bool>,
    /// `p2pmem copy`'s JSON report, when it ran.
    pub copy_report: Option<CopyDocument>,
    /// Where the bytes went, from QEMU's DMA trace: the copy through the CMB, then the
    /// same copy through a host buffer (filled in by the caller; see [`crate::plans::dma`]).
    pub dma: Vec<MeasuredCopy>,
    /// Why `dma` is empty or incomplete, when the copies ran but could not be measured.
    pub dma_error: Option<String>,
    /// PCI functions the `p2pmem_pci` driver (Rust) bound and published in the guest.
    pub driver_providers: Vec<String>,
    /// Why the guest had no `p2pmem_pci` module (`p2pmem_pci is not built for kernel
    /// 7.3: ...`); `None` when it had one.
    pub driver_not_built: Option<String>,
    /// What QEMU printed on stderr during the run.
    pub qemu_messages: Vec<String>,
    /// QEMU's IOMMU refused a device's DMA (`vtd_iommu_translate: detected translation
    /// failure`): a transfer the kernel reported as done may have moved no data. QEMU
    /// 7.2 translates peer-to-peer DMA too, which real hardware routes below the IOMMU.
    pub iommu_faults: bool,
    /// The copy between two NVMe through a `p2pmem_pci` provider, in words.
    pub driver_copy: String,
    /// `Some(true)`: `p2pmem copy --verify` succeeded through the driver's provider and
    /// the lab's sha256 of both ranges matched; `None`: not run.
    pub driver_copy_verified: Option<bool>,
    /// That copy's `p2pmem copy` JSON report.
    pub driver_copy_report: Option<CopyDocument>,
}

/// The demo record of one pair.
pub fn demo_pair(p: &PairRecord) -> DemoPair {
    let check = p.check.as_ref();
    let report = check.and_then(|c| c.as_ref().ok());
    let (predicted, map_type, prediction_error) = match (check, report) {
        (_, Some(c)) => match c.supported {
            Some(s) => (Some(s), c.map_type.clone(), None),
            None => (
                None,
                None,
                Some(format!("unknown: {}", c.unknowns.join("; "))),
            ),
        },
        (Some(Err(e)), _) => (None, None, Some(e.clone())),
        _ => (None, None, Some("not predicted".to_string())),
    };
    let nvmet = p.nvmet.as_ref().and_then(|n| n.as_ref().ok());
    let (kernel, read, write, kernel_error, kernel_log) = match (&p.probe, nvmet) {
        (Some(Ok(r)), _) => (
            Some(r.ok()),
            r.read.clone(),
            r.write.clone(),
            None,
            r.kernel_log.clone(),
        ),
        (Some(Err(e)), _) => (None, None, None, Some(e.clone()), Vec::new()),
        (None, Some(n)) => (Some(n.ok()), None, None, None, n.kernel_log.clone()),
        (None, None) => {
            let why = match &p.nvmet {
                Some(Err(e)) => e.clone(),
                _ => "no kernel oracle ran".to_string(),
            };
            (None, None, None, Some(why), Vec::new())
        }
    };
    let oracle = match (&p.probe, &p.nvmet) {
        (Some(_), Some(_)) => "dma+nvmet",
        (None, Some(_)) => "nvmet",
        _ => "dma",
    };
    // Both oracles asked: the NVMe target must give the same verdict and lines.
    let oracle_conflict = match (p.dma(), nvmet) {
        (Some(d), Some(n)) => {
            let lines = |l: &[String]| -> Vec<String> {
                l.iter()
                    .filter(|l| is_p2pdma_decision_line(l))
                    .cloned()
                    .collect()
            };
            if d.ok() != n.ok() {
                Some(format!(
                    "the DMA probe {} the pair, the NVMe target {} it ({})",
                    word(d.ok()),
                    word(n.ok()),
                    n.enable
                ))
            } else if lines(&d.kernel_log) != lines(&n.kernel_log) {
                Some(format!(
                    "the DMA probe's decision lines {:?} differ from the NVMe target's {:?}",
                    lines(&d.kernel_log),
                    lines(&n.kernel_log)
                ))
            } else {
                None
            }
        }
        _ => None,
    };
    let predicted_messages: Vec<String> = report.map(|c| c.messages.clone()).unwrap_or_default();
    let predicted_errno = report.and_then(|c| c.refused_errno.as_deref());
    let decision_lines: Vec<&String> = kernel_log
        .iter()
        .filter(|l| is_p2pdma_decision_line(l))
        .collect();
    let (agree, disagreement) = match (predicted, kernel) {
        (Some(a), Some(b)) if a != b => (
            Some(false),
            Some(format!("predicted {}, the kernel {}", word(a), word(b))),
        ),
        (Some(_), Some(b)) => {
            let lines_match = decision_lines.len() == predicted_messages.len()
                && decision_lines
                    .iter()
                    .zip(&predicted_messages)
                    .all(|(k, m)| *k == m);
            // The O_DIRECT errno is the DMA probe's to check; the NVMe target's is nvmet's.
            let errno_match = b || p.dma().is_none() || read.as_deref() == predicted_errno;
            if let Some(c) = &oracle_conflict {
                (Some(false), Some(c.clone()))
            } else if !lines_match {
                (
                    Some(false),
                    Some(format!(
                        "kernel messages {decision_lines:?} differ from the predicted {predicted_messages:?}"
                    )),
                )
            } else if !errno_match {
                (
                    Some(false),
                    Some(format!(
                        "the kernel refused with {}, the model predicted {}",
                        read.as_deref().unwrap_or("?"),
                        predicted_errno.unwrap_or("no errno")
                    )),
                )
            } else {
                (Some(true), None)
            }
        }
        _ => (None, None),
    };
    DemoPair {
        provider: p.provider.to_string(),
        client: p.client.to_string(),
        client_blkdev: p.blkdev.clone(),
        predicted,
        map_type,
        prediction_error,
        kernel,
        oracle: oracle.to_string(),
        nvmet: nvmet.map(|n| n.enable.clone()),
        read,
        write,
        kernel_error,
        agree,
        disagreement,
        kernel_log,
        predicted_messages,
    }
}

/// Is this line of QEMU's stderr an emulated IOMMU refusing a DMA?
pub fn is_iommu_fault(line: &str) -> bool {
    line.contains("vtd_iommu_translate: detected translation failure")
        || (line.contains("vtd_") && line.contains("permission error"))
}

fn word(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "refused"
    }
}

/// A copy step in words, and whether it verified (`None`: not run, with the reason).
/// Never faked: the copy must exit 0 through the picked provider and the lab's sha256
/// of both ranges must match.
pub fn copy_words(
    copy: Option<&CopyStepResult>,
    what: impl Fn(&crate::plans::pairs::CopyRun) -> String,
    place: &str,
) -> (String, Option<bool>) {
    match copy {
        None => ("not run: the plan had no copy".into(), None),
        Some(Err(why)) => (format!("not run: {why}"), None),
        Some(Ok(c)) => c.verdict(&what(c), place),
    }
}

/// The CMB copy in words.
pub fn copy_step(res: &PairsResult) -> (String, Option<bool>) {
    copy_words(
        res.cmb_copy.as_ref(),
        |c| {
            format!(
                "1 MiB {} -> {} at 4 MiB through the CMB of {}",
                c.picked.src, c.picked.dst, c.picked.via
            )
        },
        "the CMB",
    )
}

/// The copy through a `p2pmem_pci` provider in words.
pub fn driver_copy_step(res: &PairsResult) -> (String, Option<bool>) {
    if let Some(why) = &res.driver_not_built {
        return (format!("not run: {why}"), None);
    }
    if res.binds.is_empty() {
        return (
            "not run: no ivshmem bound by p2pmem_pci in this topology".into(),
            None,
        );
    }
    let failed: Vec<String> = res
        .binds
        .iter()
        .filter(|b| b.exit != 0)
        .map(|b| {
            let why = b.messages.first().map(String::as_str).unwrap_or("");
            format!("{} (exit {}: {})", b.bdf, b.exit, why.trim())
        })
        .collect();
    if matches!(res.driver_copy, Some(Err(_))) && !failed.is_empty() {
        return (
            format!("not run: binding failed for {}", failed.join(", ")),
            None,
        );
    }
    copy_words(
        res.driver_copy.as_ref(),
        |c| {
            format!(
                "2 MiB {} -> {} at 6 MiB through {} (ivshmem published by p2pmem_pci)",
                c.picked.src, c.picked.dst, c.picked.via
            )
        },
        "the provider",
    )
}

fn report(copy: Option<&CopyStepResult>) -> Option<CopyDocument> {
    copy.and_then(|c| c.as_ref().ok())
        .and_then(|c| c.outcome.report.clone())
}

/// Pairs and summary.
pub fn demo(topology: &str, cpu: &str, res: &PairsResult) -> (Vec<DemoPair>, DemoSummary) {
    let pairs: Vec<DemoPair> = res.pairs.iter().map(demo_pair).collect();
    let count = |f: &dyn Fn(&DemoPair) -> bool| pairs.iter().filter(|p| f(p)).count();
    let (copy, copy_verified) = copy_step(res);
    let (driver_copy, driver_copy_verified) = driver_copy_step(res);
    let summary = DemoSummary {
        topology: topology.to_string(),
        cpu: cpu.to_string(),
        kernel: res.inventory.osrelease.clone(),
        pairs: pairs.len(),
        agreed: count(&|p| p.agree == Some(true)),
        disagreed: count(&|p| p.agree == Some(false)),
        incomplete: count(&|p| p.agree.is_none()),
        kernel_ok: count(&|p| p.kernel == Some(true)),
        copy,
        copy_verified,
        copy_report: report(res.cmb_copy.as_ref()),
        dma: Vec::new(),
        dma_error: None,
        driver_providers: res.driver_providers(),
        driver_not_built: res.driver_not_built.clone(),
        qemu_messages: res.qemu_messages.clone(),
        iommu_faults: res.qemu_messages.iter().any(|m| is_iommu_fault(m)),
        driver_copy,
        driver_copy_verified,
        driver_copy_report: report(res.driver_copy.as_ref()),
    };
    (pairs, summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plans::pairs::CopyRun;
    use p2pmem_wire::check::CheckReport;
    use p2pmem_wire::probe::{DmaProbeResult, NvmetVerdict, PhaseLog};
    use p2pmem_wire::report::{CopyOutcome, Inventory, Picked};

    const LINE: &str = "nvme 0000:06:00.0: cannot be used for peer-to-peer DMA as the client and provider (0000:03:00.0) do not share an upstream bridge or whitelisted host bridge";

    fn bdf(s: &str) -> p2pmem_model::Bdf {
        s.parse().unwrap()
    }

    fn check(supported: Option<bool>, messages: &[&str], errno: Option<&str>) -> CheckReport {
        CheckReport {
            provider: bdf("0000:03:00.0"),
            clients: vec![bdf("0000:06:00.0")],
            client_names: vec!["0000:06:00.0".into()],
            map_type: supported.map(|s| if s { "bus_addr" } else { "not_supported" }.into()),
            distance: None,
            supported,
            messages: messages.iter().map(|m| m.to_string()).collect(),
            fixes: Vec::new(),
            unknowns: Vec::new(),
            kernel: "6.12.117".into(),
            refused_errno: errno.map(str::to_string),
            is_provider: true,
            published: true,
            pairs: Vec::new(),
            what_if: None,
            proven_fixes: Vec::new(),
            devices: Vec::new(),
        }
    }

    fn probe(result: &str, log: &[&str]) -> DmaProbeResult {
        DmaProbeResult {
            provider: bdf("0000:03:00.0"),
            client: Some(bdf("0000:06:00.0")),
            read: Some(result.into()),
            write: Some(result.into()),
            kernel_log: log.iter().map(|m| m.to_string()).collect(),
            client_blkdev: "/dev/nvme3n1".into(),
            mmap: "ok".into(),
            read_data: None,
            write_data: None,
            kernel_log_phase: PhaseLog::default(),
            notes: Vec::new(),
        }
    }

    fn pair(
        check: Option<Result<CheckReport, String>>,
        probe: Result<DmaProbeResult, String>,
    ) -> PairRecord {
        PairRecord {
            provider: bdf("0000:03:00.0"),
            client: bdf("0000:06:00.0"),
            blkdev: "/dev/nvme3n1".into(),
            check,
            probe: Some(probe),
            nvmet: None,
        }
    }

    fn nvmet(enable: &str, log: &[&str]) -> NvmetVerdict {
        NvmetVerdict {
            provider: bdf("0000:03:00.0"),
            client: Some(bdf("0000:06:00.0")),
            client_blkdev: "/dev/nvme3n1".into(),
            enable: enable.into(),
            refused_at: (enable != "ok").then(|| "enable".to_string()),
            kernel_log: log.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn the_nvme_target_is_the_oracle_where_there_is_no_dma_probe() {
        let predicted = check(Some(false), &[LINE], None);
        let mut p = pair(Some(Ok(predicted.clone())), Ok(probe("ok", &[])));
        p.probe = None;
        p.nvmet = Some(Ok(nvmet("EINVAL", &[LINE])));
        let d = demo_pair(&p);
        assert_eq!((d.kernel, d.agree), (Some(false), Some(true)), "{d:?}");
        assert_eq!(d.oracle, "nvmet");
        assert_eq!(d.nvmet.as_deref(), Some("EINVAL"));
        // The lines still decide.
        p.nvmet = Some(Ok(nvmet("EINVAL", &[])));
        assert_eq!(demo_pair(&p).agree, Some(false));
        // Neither oracle: incomplete, with the reason.
        p.nvmet = Some(Err("the nvmet target is not loaded".into()));
        let d = demo_pair(&p);
        assert_eq!(d.agree, None);
        assert!(d.kernel_error.unwrap().contains("not loaded"));
    }

    #[test]
    fn both_oracles_must_agree_with_each_other() {
        let refused = probe("EREMOTEIO", &[LINE]);
        let predicted = check(Some(false), &[LINE], Some("EREMOTEIO"));
        let mut p = pair(Some(Ok(predicted)), Ok(refused));
        p.nvmet = Some(Ok(nvmet("EINVAL", &[LINE])));
        let d = demo_pair(&p);
        assert_eq!(d.agree, Some(true), "{d:?}");
        assert_eq!(d.oracle, "dma+nvmet");
        p.nvmet = Some(Ok(nvmet("ok", &[])));
        let d = demo_pair(&p);
        assert_eq!(d.agree, Some(false));
        assert!(
            d.disagreement.unwrap().contains("the NVMe target allowed"),
            ""
        );
    }

    #[test]
    fn agreement_is_computed_from_both_sides() {
        let refused = probe(
            "EREMOTEIO",
            &[LINE, "critical target error, dev nvme3n1, sector 0"],
        );
        let predicted = check(Some(false), &[LINE], Some("EREMOTEIO"));
        let p = demo_pair(&pair(Some(Ok(predicted)), Ok(refused.clone())));
        assert_eq!(p.agree, Some(true), "{:?}", p.disagreement);
        assert_eq!(p.kernel_log.len(), 2);
        // The verdict alone is not enough: the decision lines must match too...
        let no_lines = check(Some(false), &[], Some("EREMOTEIO"));
        let p = demo_pair(&pair(Some(Ok(no_lines)), Ok(refused.clone())));
        assert_eq!(p.agree, Some(false));
        assert!(p.disagreement.unwrap().contains("differ"));
        // ...and so must the errno.
        let einval = check(Some(false), &[LINE], Some("EINVAL"));
        let p = demo_pair(&pair(Some(Ok(einval)), Ok(refused.clone())));
        assert_eq!(p.agree, Some(false));
        let allowed = check(Some(true), &[], None);
        let p = demo_pair(&pair(Some(Ok(allowed.clone())), Ok(refused)));
        assert_eq!(p.agree, Some(false));
        let p = demo_pair(&pair(Some(Ok(allowed)), Ok(probe("ok", &[]))));
        assert_eq!(p.agree, Some(true));
        assert_eq!(p.kernel, Some(true));
    }

    fn with_copy(copy: Option<CopyStepResult>) -> PairsResult {
        PairsResult {
            inventory: Inventory {
                cpuinfo: String::new(),
                cmdline: String::new(),
                osrelease: String::new(),
                nvme: Vec::new(),
                providers: Vec::new(),
            },
            binds: Vec::new(),
            capture: None,
            pairs: Vec::new(),
            cmb_copy: copy,
            driver_copy: None,
            driver_not_built: None,
            qemu_messages: Vec::new(),
        }
    }

    fn run(sha_b: &str, exit: i32, via: &str) -> CopyStepResult {
        let doc: CopyDocument = serde_json::from_value(serde_json::json!({
            "src": "/dev/nvme0n1", "dst": "/dev/nvme1n1", "src_offset": 0,
            "dst_offset": 4194304, "bytes": 1048576, "seconds": 0.1,
            "bytes_per_second": 1e7, "location": {"p2p": "0000:03:00.0"},
            "engine": "io_uring", "chunk": 1048576, "depth": 8, "max_in_flight": 1,
            "tail_bytes_via_host": 0, "created": false, "via": via, "reason": "",
            "model": [], "warnings": [], "notes": [], "verified": true,
            "mismatches": [], "payload_bytes": 1048576, "host_memory_bytes": null,
            "peer_bytes": null, "host_memory_per_payload_byte": null,
            "host_memory_reason": ""
        }))
        .unwrap();
        Ok(CopyRun {
            picked: Picked {
                via: bdf("0000:03:00.0"),
                src: "/dev/nvme0n1".into(),
                dst: "/dev/nvme1n1".into(),
            },
            outcome: CopyOutcome {
                exit,
                report: Some(doc),
                messages: Vec::new(),
            },
            sha256: Some(("a".repeat(64), sha_b.to_string())),
        })
    }

    #[test]
    fn copy_step_is_never_faked() {
        let (text, ok) = copy_step(&with_copy(None));
        assert!(text.starts_with("not run"), "{text}");
        assert_eq!(ok, None);
        let why = "no working pair between two different NVMe with a CMB".to_string();
        let (text, ok) = copy_step(&with_copy(Some(Err(why))));
        assert_eq!(ok, None);
        assert!(text.contains("no working pair"), "{text}");
        let a = "a".repeat(64);
        let (text, ok) = copy_step(&with_copy(Some(run(&a, 0, "0000:03:00.0"))));
        assert_eq!(ok, Some(true), "{text}");
        let (text, ok) = copy_step(&with_copy(Some(run(&"b".repeat(64), 0, "0000:03:00.0"))));
        assert_eq!(ok, Some(false));
        assert!(text.contains("sha256 differ"), "{text}");
        assert_eq!(
            copy_step(&with_copy(Some(run(&a, 1, "0000:03:00.0")))).1,
            Some(false)
        );
        let (text, ok) = copy_step(&with_copy(Some(run(&a, 0, "host"))));
        assert_eq!(ok, Some(false));
        assert!(text.contains("not in the CMB"), "{text}");
    }

    #[test]
    fn a_driver_that_is_not_built_is_a_copy_not_run() {
        let mut res = with_copy(None);
        res.driver_not_built = Some("p2pmem_pci is not built for kernel 7.3: no Rust".into());
        let (text, ok) = driver_copy_step(&res);
        assert_eq!(
            text,
            "not run: p2pmem_pci is not built for kernel 7.3: no Rust"
        );
        assert_eq!(ok, None);
        let (_, summary) = demo("default", "max", &res);
        assert_eq!(summary.driver_copy_verified, None);
        assert!(summary.driver_not_built.is_some());
    }

    #[test]
    fn qemu_iommu_faults_are_flagged() {
        // Seen with QEMU 7.2's intel-iommu and a bus-address P2P DMA inside a switch.
        let mut res = with_copy(None);
        res.qemu_messages = vec![
            "qemu-system-x86_64: vtd_iova_to_slpte: detected slpte permission error (iova=0xfc010000, level=0x2, slpte=0x0, write=1, pasid=0xffffffff)".into(),
            "qemu-system-x86_64: vtd_iommu_translate: detected translation failure (dev=04:00:00, iova=0xfc010000)".into(),
        ];
        assert!(demo("switch_iommu", "max", &res).1.iommu_faults);
        res.qemu_messages =
            vec!["qemu-system-x86_64: warning: TCG doesn't support requested feature".into()];
        assert!(!demo("switch", "max", &res).1.iommu_faults);
    }

    #[test]
    fn missing_answers_are_incomplete_not_agreed() {
        let p = demo_pair(&pair(
            Some(Err("cannot read the system".into())),
            Err("cannot map p2pmem of 0000:03:00.0".into()),
        ));
        assert_eq!(p.agree, None);
        assert!(p.kernel_error.unwrap().contains("cannot map"));
        assert!(p.prediction_error.unwrap().contains("cannot read"));
    }
}
