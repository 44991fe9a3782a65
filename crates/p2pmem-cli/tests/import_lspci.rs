//! `p2pmem import lspci` against the real lspci: for every ground-truth capture, lspci
//! (pciutils) reads the capture's sysfs tree, its output is imported with the capture's
//! kernel, CPU and providers, and `topo --matrix` and `check` decide every
//! provider-client pair as they do on the capture itself.

#![cfg(test)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn truth() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/truth")
}

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

/// Can lspci read a sysfs tree other than /sys here?
fn have_lspci() -> bool {
    Command::new("lspci")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A copy of a capture that lspci reads: it wants each function's `irq` (which
/// p2pmem never reads, so captures lack it) and the drivers' directories (empty, so git
/// dropped them) for `Kernel driver in use`.
fn lspci_readable_copy(root: &Path) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let ok = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", root.display()))
        .arg(d.path())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let devices = d.path().join("sys/bus/pci/devices");
    for e in std::fs::read_dir(&devices).unwrap() {
        let dir = e.unwrap().path();
        std::fs::write(dir.join("irq"), "0\n").unwrap();
        if let Ok(t) = std::fs::read_link(dir.join("driver")) {
            let real = std::fs::canonicalize(&dir).unwrap();
            let target = real.join(t);
            std::fs::create_dir_all(target).unwrap();
        }
    }
    d
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
    let o = p2pmem(root, &["--json", "topo", "--matrix"]);
    let v = one_json(&o);
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
fn decision(root: &Path, provider: &str, client: &str) -> (Option<i32>, Value) {
    let o = p2pmem(root, &["--json", "check", provider, client]);
    let mut v = one_json(&o);
    let m = v.as_object_mut().unwrap();
    for k in ["client_names", "devices", "imported", "proven_fixes"] {
        m.remove(k);
    }
    (o.status.code(), v)
}

#[test]
fn every_capture_imported_from_real_lspci_decides_every_pair_alike() {
    if !have_lspci() {
        p2pmem_linux::testing::skipped("lspci (pciutils) is not installed");
        return;
    }
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(truth())
        .unwrap()
        .map(|e| e.unwrap().path().join("root"))
        .filter(|p| p.join("sys/bus/pci/devices").is_dir())
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 10, "{fixtures:?}");
    let mut pairs = 0;
    for root in &fixtures {
        let copy = lspci_readable_copy(root);
        let o = Command::new("lspci")
            .args(["-D", "-vvv", "-xxxx", "-A", "linux-sysfs", "-O"])
            .arg(format!(
                "sysfs.path={}",
                copy.path().join("sys/bus/pci").display()
            ))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let work = tempfile::tempdir().unwrap();
        let text = work.path().join("lspci.txt");
        std::fs::write(&text, &o.stdout).unwrap();
        let dir = work.path().join("imported");
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
            "{}",
            root.display()
        );
        for (k, x) in &a {
            assert_eq!(Some(x), b.get(k), "{}: {k:?}", root.display());
        }
        let note = one_json(&p2pmem(&dir, &["--json", "topo", "--matrix"]));
        assert_eq!(note["imported"]["from"], "lspci", "{note}");
        for (p, c) in a.keys() {
            let x = decision(root, p, c);
            let y = decision(&dir, p, c);
            assert_eq!(x, y, "{}: check {p} {c}", root.display());
            pairs += 1;
        }
    }
    eprintln!(
        "{} captures, {pairs} provider-client pairs decided alike",
        fixtures.len()
    );
    assert!(pairs >= 50, "{pairs}");
}

#[test]
fn commands_on_an_import_state_its_note_once_and_bad_input_names_its_line() {
    let file = truth().join("../lspci/lab_multifunction_acs.vvv-xxxx.txt");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("imported");
    let args = [
        "import",
        "lspci",
        file.to_str().unwrap(),
        dir.to_str().unwrap(),
        "--cpu",
        "AuthenticAMD:23",
        "--provider",
        "0000:01:00.0=16M",
    ];
    let o = p2pmem(Path::new("/"), &args);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("lspci -xxxx (4096 bytes"), "{out}");
    // Again into the same directory: refused, nothing overwritten.
    let o = p2pmem(Path::new("/"), &args);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));

    let o = p2pmem(&dir, &["check", "0000:01:00.0", "0000:01:00.1"]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(
        err.matches("p2pmem: note: made from lspci output").count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("kernel version unknown")
            && err.contains("CPU given as AuthenticAMD family 23"),
        "{err}"
    );
    assert!(!out.contains("made from lspci"), "{out}");
    assert!(!err.contains("warning"), "{err}");

    let bad = work.path().join("bad.txt");
    std::fs::write(&bad, "0000:00:00.0 Host bridge\n00: 86 80 zz\n").unwrap();
    let o = p2pmem(
        Path::new("/"),
        &[
            "import",
            "lspci",
            bad.to_str().unwrap(),
            work.path().join("other").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("line 2: "), "{err}");
    assert!(!work.path().join("other").exists());
}
