//! Vendor and device names from the PCI ID database in `topo`, `check`, `find` and
//! `doctor`, as lspci shows them, with the IDs kept; `--pci-ids FILE` as `lspci -i`.

#![cfg(test)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/truth/lab_default_k7.3/root")
}

fn run(args: &[&str]) -> Output {
    let root = root();
    Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .arg("--root")
        .arg(&root)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ids_file(dir: &Path) -> PathBuf {
    let p = dir.join("pci.ids");
    std::fs::write(
        &p,
        "#\tVersion: test\n1b36  Test Hat\n\t0010  Test NVMe Controller\n\
104c  Test Instruments\nC 01  Mass storage controller\n\t08  NVM controller\n",
    )
    .unwrap();
    p
}

#[test]
fn topo_names_functions_like_lspci_and_keeps_the_ids() {
    // The system's pci.ids and the bundled snapshot agree on QEMU's NVMe controller.
    let o = run(&["topo"]);
    assert_eq!(o.status.code(), Some(0));
    let t = stdout(&o);
    assert!(
        t.contains("0000:03:00.0 NVMe: Red Hat, Inc. QEMU NVM Express Controller [1b36:0010]"),
        "{t}"
    );
    assert!(t.contains("QEMU PCIe Root port [1b36:000c]"), "{t}");
}

#[test]
fn pci_ids_option_is_used_and_json_adds_name_fields() {
    let d = tempfile::tempdir().unwrap();
    let ids = ids_file(d.path());
    let ids = ids.to_str().unwrap();
    let t = stdout(&run(&["--pci-ids", ids, "topo"]));
    assert!(
        t.contains("0000:03:00.0 NVMe: Test Hat Test NVMe Controller [1b36:0010]"),
        "{t}"
    );
    // Vendor known, device not: lspci's "Device xxxx".
    assert!(t.contains("Test Hat Device 000c [1b36:000c]"), "{t}");
    // Neither known.
    assert!(t.contains("Device 8086:29c0 [8086:29c0]"), "{t}");

    let v: Value =
        serde_json::from_slice(&run(&["--pci-ids", ids, "topo", "--json"]).stdout).unwrap();
    let f = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["bdf"] == "0000:03:00.0")
        .unwrap();
    assert_eq!(f["vendor"], "1b36");
    assert_eq!(f["device"], "0010");
    assert_eq!(f["vendor_name"], "Test Hat");
    assert_eq!(f["device_name"], "Test NVMe Controller");
    assert_eq!(f["class_name"], "NVM controller");

    let c = stdout(&run(&[
        "--pci-ids",
        ids,
        "check",
        "0000:03:00.0",
        "nvme1n1",
    ]));
    assert!(
        c.contains("Test Hat Test NVMe Controller [1b36:0010]"),
        "{c}"
    );
    let v: Value = serde_json::from_slice(
        &run(&[
            "--pci-ids",
            ids,
            "check",
            "0000:03:00.0",
            "nvme1n1",
            "--json",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(v["devices"][0]["bdf"], "0000:03:00.0");
    assert_eq!(v["devices"][0]["device_name"], "Test NVMe Controller");
    assert_eq!(v["devices"][1]["bdf"], "0000:04:00.0");

    let f = stdout(&run(&["--pci-ids", ids, "find", "nvme1n1"]));
    assert!(
        f.contains("Test Hat Test NVMe Controller [1b36:0010]"),
        "{f}"
    );

    let doc = stdout(&run(&["--pci-ids", ids, "doctor"]));
    assert!(doc.contains("pci.ids: device names from "), "{doc}");
    assert!(doc.contains("(version test)"), "{doc}");
    assert!(
        doc.contains("Test Hat Test NVMe Controller [1b36:0010]"),
        "{doc}"
    );
}

#[test]
fn a_bad_pci_ids_file_is_an_error_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.ids");
    std::fs::write(&bad, b"\xff\xfe\x00garbage\n\t\t\tC\n").unwrap();
    for file in [bad, d.path().join("missing.ids")] {
        let o = run(&["--pci-ids", file.to_str().unwrap(), "topo"]);
        assert_eq!(o.status.code(), Some(2));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("--pci-ids"), "{e}");
        assert!(
            e.contains(file.file_name().unwrap().to_str().unwrap()),
            "{e}"
        );
        assert!(!e.contains("panicked"), "{e}");
    }
}
