//! `lab demo` as data: for each (provider, client) pair, the prediction made in the guest
//! by `p2pmem check --json` next to the kernel's real verdict from `p2pmem agent
//! dma-probe`, whether they agree, and the kernel's messages; then the copy step and a
//! summary. Rendering (table or JSON lines) is left to the CLI.

use p2pmem_model::messages::is_p2pdma_decision_line;
use serde::Serialize;
use serde_json::Value;

use crate::pairs::{probe_ok, PairResult, PairsResult};
use crate::trace::MeasuredCopy;

/// One pair of the demo.
#[derive(Debug, Clone, Serialize)]
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
    /// The kernel's verdict: `Some(true)` when read and write both moved all bytes.
    pub kernel: Option<bool>,
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
    /// Kernel messages logged during the probe.
    pub kernel_log: Vec<String>,
    /// The kernel messages the model predicted (`p2pmem check --json`'s `messages`).
    pub predicted_messages: Vec<String>,
}

/// The demo's last word.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// Topology name.
    pub topology: String,
    /// The `-cpu` value.
    pub cpu: String,
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
    pub copy_report: Option<Value>,
    /// Where the bytes went, from QEMU's DMA trace: the copy through the CMB, then the
    /// same copy through a host buffer (filled in by the caller; see [`crate::trace`]).
    pub dma: Vec<MeasuredCopy>,
    /// Why `dma` is empty or incomplete, when the copies ran but could not be measured.
    pub dma_error: Option<String>,
    /// PCI functions the `p2pmem_pci` driver (Rust) bound and published in the guest.
    pub driver_providers: Vec<String>,
    /// The copy between two NVMe through a `p2pmem_pci` provider, in words.
    pub driver_copy: String,
    /// `Some(true)`: `p2pmem copy --verify` succeeded through the driver's provider and
    /// the lab's sha256 of both ranges matched; `None`: not run.
    pub driver_copy_verified: Option<bool>,
    /// That copy's `p2pmem copy` JSON report.
    pub driver_copy_report: Option<Value>,
}

fn short_err(stderr: &str, rc: Option<i32>) -> String {
    let first = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    match rc {
        Some(rc) if first.is_empty() => format!("exit status {rc}, no output"),
        Some(rc) => format!("exit status {rc}: {first}"),
        None => first.to_string(),
    }
}

/// The demo record of one pair.
pub fn demo_pair(p: &PairResult) -> DemoPair {
    let (predicted, map_type, prediction_error) = match &p.check {
        Some(c) => match c.get("supported").and_then(Value::as_bool) {
            Some(s) => (
                Some(s),
                c.get("map_type")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                None,
            ),
            None => (
                None,
                None,
                Some("`supported` missing from p2pmem check --json".to_string()),
            ),
        },
        None => (None, None, Some(short_err(&p.check_err, p.check_rc))),
    };
    let (kernel, read, write, kernel_error, kernel_log) = match &p.probe {
        Some(v) => {
            let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            let log = v
                .get("kernel_log")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            (Some(probe_ok(v)), s("read"), s("write"), None, log)
        }
        None => (
            None,
            None,
            None,
            Some(short_err(&p.probe_err, Some(p.probe_rc))),
            Vec::new(),
        ),
    };
    let predicted_messages: Vec<String> = p
        .check
        .as_ref()
        .and_then(|c| c.get("messages"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let predicted_errno = p
        .check
        .as_ref()
        .and_then(|c| c.get("refused_errno"))
        .and_then(Value::as_str);
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
            let errno_match = b || read.as_deref() == predicted_errno;
            if !lines_match {
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
        provider: p.provider.clone(),
        client: p.client.clone(),
        client_blkdev: p.blkdev.clone(),
        predicted,
        map_type,
        prediction_error,
        kernel,
        read,
        write,
        kernel_error,
        agree,
        disagreement,
        kernel_log,
        predicted_messages,
    }
}

fn word(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "refused"
    }
}

/// The copy step's report. The lab never fakes it: without `p2pmem copy` in the guest
/// binary, or without a working pair, it says so.
pub fn copy_step(res: &PairsResult) -> (String, Option<bool>) {
    if !res.copy_available {
        return (
            "not available yet: the guest's p2pmem has no `copy` subcommand".into(),
            None,
        );
    }
    let Some(c) = &res.copy else {
        return (
            "not run: no working pair between two different NVMe with a CMB".into(),
            None,
        );
    };
    let what = format!(
        "1 MiB {} -> {} at 4 MiB through the CMB of {}",
        c.src, c.dst, c.via
    );
    c.verdict(&what, "the CMB")
}

/// Pairs and summary.
pub fn demo(topology: &str, cpu: &str, res: &PairsResult) -> (Vec<DemoPair>, DemoSummary) {
    let pairs: Vec<DemoPair> = res.pairs.iter().map(demo_pair).collect();
    let count = |f: &dyn Fn(&DemoPair) -> bool| pairs.iter().filter(|p| f(p)).count();
    let summary = DemoSummary {
        topology: topology.to_string(),
        cpu: cpu.to_string(),
        pairs: pairs.len(),
        agreed: count(&|p| p.agree == Some(true)),
        disagreed: count(&|p| p.agree == Some(false)),
        incomplete: count(&|p| p.agree.is_none()),
        kernel_ok: count(&|p| p.kernel == Some(true)),
        copy: copy_step(res).0,
        copy_verified: copy_step(res).1,
        copy_report: res.copy.as_ref().and_then(|c| c.report.clone()),
        dma: Vec::new(),
        dma_error: None,
        driver_providers: res.driver.providers(),
        driver_copy: crate::provider_job::driver_copy_step(&res.driver).0,
        driver_copy_verified: crate::provider_job::driver_copy_step(&res.driver).1,
        driver_copy_report: res.driver.copy.as_ref().and_then(|c| c.report.clone()),
    };
    (pairs, summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pair(check: Option<Value>, probe: Option<Value>) -> PairResult {
        PairResult {
            provider: "0000:03:00.0".into(),
            client: "0000:06:00.0".into(),
            blkdev: "/dev/nvme3n1".into(),
            probe_rc: if probe.is_some() { 0 } else { 2 },
            probe,
            probe_err: "error: unrecognized subcommand 'agent'\n".into(),
            check_rc: Some(if check.is_some() { 0 } else { 2 }),
            check,
            check_err: String::new(),
        }
    }

    #[test]
    fn agreement_is_computed_from_both_sides() {
        let line = "nvme 0000:06:00.0: cannot be used for peer-to-peer DMA as the client and provider (0000:03:00.0) do not share an upstream bridge or whitelisted host bridge";
        let refused = json!({"read": "EREMOTEIO", "write": "EREMOTEIO",
            "kernel_log": [line, "critical target error, dev nvme3n1, sector 0"]});
        let predicted = json!({"supported": false, "map_type": "not_supported",
            "messages": [line], "refused_errno": "EREMOTEIO"});
        let p = demo_pair(&pair(Some(predicted.clone()), Some(refused.clone())));
        assert_eq!(p.agree, Some(true), "{:?}", p.disagreement);
        assert_eq!(p.kernel_log.len(), 2);
        // The verdict alone is not enough: the decision lines must match too...
        let mut no_lines = predicted.clone();
        no_lines["messages"] = json!([]);
        let p = demo_pair(&pair(Some(no_lines), Some(refused.clone())));
        assert_eq!(p.agree, Some(false));
        assert!(p.disagreement.unwrap().contains("differ"));
        // ...and so must the errno.
        let mut einval = predicted;
        einval["refused_errno"] = json!("EINVAL");
        let p = demo_pair(&pair(Some(einval), Some(refused.clone())));
        assert_eq!(p.agree, Some(false));
        let p = demo_pair(&pair(Some(json!({"supported": true})), Some(refused)));
        assert_eq!(p.agree, Some(false));
    }

    fn with_copy(copy: Option<crate::pairs::CopyRun>, available: bool) -> PairsResult {
        PairsResult {
            cpuinfo: String::new(),
            cmdline: String::new(),
            osrelease: String::new(),
            capture: None,
            nvme: Vec::new(),
            copy_available: available,
            pairs: Vec::new(),
            copy,
            driver: Default::default(),
        }
    }

    fn run(sha_b: &str, exit: i32) -> crate::pairs::CopyRun {
        crate::pairs::CopyRun {
            via: "0000:03:00.0".into(),
            src: "/dev/nvme0n1".into(),
            dst: "/dev/nvme1n1".into(),
            exit,
            report: Some(json!({"via": "0000:03:00.0", "bytes": 1048576})),
            stderr: String::new(),
            sha256: Some(("a".repeat(64), sha_b.to_string())),
        }
    }

    #[test]
    fn copy_step_is_never_faked() {
        let (text, ok) = copy_step(&with_copy(None, false));
        assert!(text.starts_with("not available yet"));
        assert_eq!(ok, None);
        assert_eq!(copy_step(&with_copy(None, true)).1, None);
        let (text, ok) = copy_step(&with_copy(Some(run(&"a".repeat(64), 0)), true));
        assert_eq!(ok, Some(true), "{text}");
        let (text, ok) = copy_step(&with_copy(Some(run(&"b".repeat(64), 0)), true));
        assert_eq!(ok, Some(false));
        assert!(text.contains("sha256 differ"), "{text}");
        assert_eq!(
            copy_step(&with_copy(Some(run(&"a".repeat(64), 1)), true)).1,
            Some(false)
        );
    }

    #[test]
    fn missing_commands_are_incomplete_not_agreed() {
        let p = demo_pair(&pair(None, None));
        assert_eq!(p.agree, None);
        assert!(p.kernel_error.unwrap().contains("unrecognized subcommand"));
        assert!(p.prediction_error.unwrap().contains("exit status 2"));
    }
}
