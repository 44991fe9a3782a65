//! Lab tier: a bug report's `lspci -D -vvv -xxxx`, made in the guest by Debian's lspci
//! (the plan asks for `/usr/bin/lspci`, which goes into the initramfs with its libraries,
//! and `pci.ids`), imported with `p2pmem import lspci` and the facts lspci cannot show
//! (the kernel release, the CPU, the providers), decides every provider-client pair as
//! the sysfs capture of the same boot does, on every embedded topology: the same
//! `topo --matrix` cells, and the same `check` decision for every pair.

#![cfg(test)]

mod lab_common;

use p2pmem_lab::machine::topology::EMBEDDED;
use p2pmem_wire::plan::{Plan, Step};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

fn p2pmem(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn one_json(o: &Output) -> Value {
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one JSON document: {text} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(lines[0]).unwrap()
}

/// The facts lspci does not show, read from the capture: kernel, CPU, providers.
fn facts(root: &Path) -> Vec<String> {
    let mut args = Vec::new();
    if let Ok(k) = std::fs::read_to_string(root.join("proc/sys/kernel/osrelease")) {
        args.push(format!("--kernel={}", k.trim()));
    }
    let cpuinfo = std::fs::read_to_string(root.join("proc/cpuinfo")).unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == name))
            .map(|(_, v)| v.trim().to_string())
    };
    if let (Some(v), Some(f)) = (field("vendor_id"), field("cpu family")) {
        args.push(format!("--cpu={v}:{f}"));
    }
    let devices = root.join("sys/bus/pci/devices");
    let mut names: Vec<String> = std::fs::read_dir(&devices)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        if let Ok(size) = std::fs::read_to_string(devices.join(&n).join("p2pmem/size")) {
            args.push(format!("--provider={n}={}", size.trim()));
        }
    }
    args
}

/// `topo --matrix` cells by (provider, client).
fn cells(root: &Path) -> BTreeMap<(String, String), Value> {
    let v = one_json(&p2pmem(root, &["--json", "topo", "--matrix"]));
    v["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                (
                    c["provider"].as_str().unwrap().to_string(),
                    c["client"].as_str().unwrap().to_string(),
                ),
                c.clone(),
            )
        })
        .collect()
}

/// `check PROVIDER CLIENT`'s decision without what lspci cannot know (the NVMe names,
/// the import note, fixes proven from the kernel command line).
fn decision(root: &Path, provider: &str, client: &str) -> (Option<i32>, Value) {
    let o = p2pmem(root, &["--json", "check", provider, client]);
    let mut v = one_json(&o);
    let m = v.as_object_mut().unwrap();
    for k in ["client_names", "devices", "imported", "proven_fixes"] {
        m.remove(k);
    }
    (o.status.code(), v)
}

fn plan() -> Plan {
    let mut p = Plan::new();
    p.host_file("/usr/bin/lspci");
    p.host_file("/usr/share/misc/pci.ids");
    p.step("capture", Step::Capture);
    p.exec("lspci", &["lspci", "-D", "-vvv", "-xxxx"]);
    p
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn lspci_made_in_the_guest_imports_to_the_verdicts_of_the_sysfs_capture_on_every_topology() {
    let mut pairs = 0;
    for (name, _) in EMBEDDED {
        let run = lab_common::run_plan(name, None, &plan());
        let lspci = run.exec("lspci").expect("lspci ran");
        assert_eq!(lspci.exit, Some(0), "{name}: {lspci:?}");
        let work = tempfile::tempdir().unwrap();
        let captured = work.path().join("capture");
        p2pmem_lab::run::lab::unpack_tar(run.attachment("capture").unwrap(), &captured).unwrap();
        let root = captured.join("root");
        let root = if root.is_dir() {
            root
        } else {
            captured.clone()
        };
        let text = work.path().join("lspci.txt");
        std::fs::write(&text, &lspci.stdout).unwrap();
        let imported = work.path().join("imported");
        let mut args: Vec<String> = vec![
            "import".into(),
            "lspci".into(),
            text.display().to_string(),
            imported.display().to_string(),
        ];
        args.extend(facts(&root));
        let o = Command::new(env!("CARGO_BIN_EXE_p2pmem"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (want, got) = (cells(&root), cells(&imported));
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>(),
            "{name}: the same pairs"
        );
        for ((p, c), cell) in &want {
            let other = &got[&(p.clone(), c.clone())];
            assert_eq!(cell["cell"], other["cell"], "{name}: {p} -> {c}");
            assert_eq!(
                decision(&root, p, c),
                decision(&imported, p, c),
                "{name}: {p} -> {c}"
            );
            pairs += 1;
        }
    }
    eprintln!("{pairs} pairs alike on {} topologies", EMBEDDED.len());
    assert!(pairs > 0);
}
