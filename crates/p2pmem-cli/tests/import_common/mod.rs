//! Shared by the tests of `p2pmem import lspci` (against lspci on the host's fixtures,
//! and in the lab's guest): the facts lspci cannot show, read from a capture, and the
//! comparison of a capture with its import, pair by pair.

#![cfg(test)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

/// `p2pmem --root ROOT ARGS...`.
pub fn p2pmem(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

/// The one JSON document a command printed.
pub fn one_json(o: &Output) -> Value {
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
pub fn facts(root: &Path) -> Vec<String> {
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
pub fn cells(root: &Path) -> BTreeMap<(String, String), Value> {
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

/// `check PROVIDER CLIENT`'s decision, without the names (lspci does not know the NVMe
/// controllers' names), the import note, and the fixes proven by what-if (they start
/// from the kernel command line, which lspci does not show; the ACS Control it left is
/// in config space and so in the decision).
pub fn decision(root: &Path, provider: &str, client: &str) -> (Option<i32>, Value) {
    let o = p2pmem(root, &["--json", "check", provider, client]);
    let mut v = one_json(&o);
    let m = v.as_object_mut().unwrap();
    for k in ["client_names", "devices", "imported", "proven_fixes"] {
        m.remove(k);
    }
    (o.status.code(), v)
}

/// Imports `text` (lspci output made from the system captured at `root`) into
/// `work/imported` with the capture's facts, and checks that every `topo --matrix` cell
/// and every pair's `check` decision is the same on both; returns the pairs compared.
pub fn import_decides_alike(text: &Path, root: &Path, work: &Path) -> usize {
    let dir = work.join("imported");
    let mut args: Vec<String> = vec![
        "import".into(),
        "lspci".into(),
        text.display().to_string(),
        dir.display().to_string(),
    ];
    args.extend(facts(root));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = p2pmem(Path::new("/"), &args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}: {}",
        root.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let (a, b) = (cells(root), cells(&dir));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{}: the same pairs",
        root.display()
    );
    for (k, x) in &a {
        assert_eq!(Some(x), b.get(k), "{}: {k:?}", root.display());
    }
    let note = one_json(&p2pmem(&dir, &["--json", "topo", "--matrix"]));
    assert_eq!(note["imported"]["from"], "lspci", "{note}");
    for (p, c) in a.keys() {
        assert_eq!(
            decision(root, p, c),
            decision(&dir, p, c),
            "{}: check {p} {c}",
            root.display()
        );
    }
    a.len()
}
