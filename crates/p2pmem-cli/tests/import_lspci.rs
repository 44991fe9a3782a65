//! `p2pmem import lspci` against the real lspci: for every ground-truth capture, lspci
//! (pciutils) reads the capture's sysfs tree, its output is imported with the capture's
//! kernel, CPU and providers, and `topo --matrix` and `check` decide every
//! provider-client pair as they do on the capture itself.

#![cfg(test)]

mod import_common;

use import_common::{import_decides_alike, p2pmem};

use std::path::{Path, PathBuf};
use std::process::Command;

fn truth() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/truth")
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
        pairs += import_decides_alike(&text, root, work.path());
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
