//! Every (provider, client) pair in every ground-truth capture under fixtures/truth is
//! predicted from that capture's `root/` alone, and the kernel's decision lines
//! (`cannot be used ...`, ACS redirect, the fix, the host-bridge warning) are exactly the
//! messages the model says the kernel prints, in order.

#![cfg(test)]

use p2pmem_linux::system::read_system;
use p2pmem_model::messages::is_p2pdma_decision_line;
use p2pmem_model::select::check;
use p2pmem_model::Bdf;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/truth");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("truth.json").is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_truth_pair_is_predicted() {
    let scen = scenarios();
    assert!(
        scen.len() >= 2,
        "fixtures/truth must hold the shared captures: {scen:?}"
    );
    let mut pairs = 0;
    for dir in scen {
        let truth: Value =
            serde_json::from_slice(&std::fs::read(dir.join("truth.json")).unwrap()).unwrap();
        let sys = read_system(&dir.join("root")).unwrap();
        assert!(
            sys.problems.is_empty(),
            "{}: {:?}",
            dir.display(),
            sys.problems
        );
        for p in truth["pairs"].as_array().unwrap() {
            let provider: Bdf = p["provider"].as_str().unwrap().parse().unwrap();
            let client: Bdf = p["client"].as_str().unwrap().parse().unwrap();
            let ctx = format!(
                "{} {provider} -> {client}",
                dir.file_name().unwrap().to_string_lossy()
            );
            // The kernel's verdict: the DMA probe's where it ran (6.2+), else the NVMe
            // target's (6.1 has no p2pmem/allocate); where both ran they must agree.
            let dma = !p["read"].is_null();
            let nvmet = p.get("nvmet").filter(|n| !n.is_null());
            assert!(dma || nvmet.is_some(), "{ctx}: no kernel verdict");
            let kernel_ok = if dma {
                p["read"] == "ok"
            } else {
                nvmet.is_some_and(|n| n["enable"] == "ok")
            };
            if let (true, Some(n)) = (dma, nvmet) {
                assert_eq!(n["enable"] == "ok", kernel_ok, "{ctx}: the oracles differ");
            }
            assert_eq!(p["read"], p["write"], "read and write never disagree");
            let c = check(&sys.topology, &sys.rules, provider, &[client]).unwrap();
            assert_eq!(c.supported, Some(kernel_ok), "{ctx}: {c:#?}");
            assert_eq!(c.distance.is_some(), kernel_ok, "{ctx}");
            let lines_of = |log: &Value| -> Vec<String> {
                log.as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|l| is_p2pdma_decision_line(l))
                    .map(str::to_string)
                    .collect()
            };
            let kernel_lines = if dma {
                lines_of(&p["kernel_log"])
            } else {
                lines_of(&nvmet.map_or(Value::Null, |n| n["kernel_log"].clone()))
            };
            assert_eq!(c.messages, kernel_lines, "{ctx}");
            if let (true, Some(n)) = (dma, nvmet) {
                assert_eq!(
                    lines_of(&n["kernel_log"]),
                    kernel_lines,
                    "{ctx}: oracle lines"
                );
            }
            if !kernel_ok && dma {
                let errno = p["read"].as_str().unwrap();
                let predicted =
                    p2pmem_model::errno::o_direct_not_supported(sys.rules.kernel).unwrap();
                assert_eq!(predicted.name, errno, "{ctx}");
            }
            pairs += 1;
        }
    }
    assert!(pairs >= 44, "{pairs} pairs checked");
}
