//! `p2pmem topo --matrix` on the ground-truth captures: every cell is what `check`
//! decides for the pair, the legend explains every code, filters narrow the table.

#![cfg(test)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn run(fixture: &str, args: &[&str]) -> Output {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/truth")
        .join(fixture)
        .join("root");
    Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .arg("--root")
        .arg(&root)
        .args(args)
        .output()
        .unwrap()
}

fn json(o: &Output) -> Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON document per line: {text}");
    serde_json::from_str(lines[0]).unwrap()
}

#[test]
fn table_rows_columns_and_legend() {
    let o = run("lab_default_k7.3", &["topo", "--matrix"]);
    assert_eq!(o.status.code(), Some(0));
    let t = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["provider", "nvme0", "nvme1", "nvme2", "nvme3", "nvme4"],
        "{t}"
    );
    // The switch pair is a bus address at distance 4, across root ports the host bridge
    // refuses, the multi-function pair below one root port is distance 2.
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["nvme0", "B0", "B4", "xH", "xH", "xH"],
        "{t}"
    );
    assert_eq!(
        lines[4].split_whitespace().collect::<Vec<_>>(),
        ["nvme3", "xH", "xH", "xH", "B0", "B2"],
        "{t}"
    );
    for code in ["B<n>", "H<n>", "xA", "xH", "?"] {
        assert!(t.contains(&format!("  {code}")), "legend lacks {code}: {t}");
    }
    assert!(
        t.contains("nvme4  0000:06:00.1  Red Hat, Inc. QEMU NVM Express Controller [1b36:0010]"),
        "{t}"
    );
}

#[test]
fn acs_redirect_and_host_bridge_codes() {
    let t = String::from_utf8_lossy(&run("lab_multifunction_acs", &["topo", "--matrix"]).stdout)
        .to_string();
    assert!(t.lines().nth(1).unwrap().ends_with("xA"), "{t}");
    let t =
        String::from_utf8_lossy(&run("lab_provider_zen", &["topo", "--matrix"]).stdout).to_string();
    assert!(t.contains(" H5 "), "AMD Zen allows the host bridge: {t}");
}

#[test]
fn every_cell_is_checks_verdict() {
    for fixture in [
        "lab_default_k7.3",
        "lab_multifunction_acs",
        "lab_provider_zen",
        "s01_switch_cmbmix_fam15",
    ] {
        let m = json(&run(fixture, &["topo", "--matrix", "--json"]));
        assert_eq!(m["schema"], 1);
        assert_eq!(m["document"], "topo_matrix");
        let cells = m["cells"].as_array().unwrap();
        assert!(!cells.is_empty(), "{fixture}");
        for cell in cells {
            let p = cell["provider"].as_str().unwrap();
            let c = cell["client"].as_str().unwrap();
            let o = run(fixture, &["check", p, c, "--json"]);
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            let exit = match v["supported"].as_bool() {
                Some(true) => 0,
                Some(false) => 1,
                None => 2,
            };
            assert_eq!(o.status.code(), Some(exit), "{fixture} {p} {c}");
            assert_eq!(cell["supported"], v["supported"], "{fixture} {p} {c}");
            assert_eq!(cell["map_type"], v["map_type"], "{fixture} {p} {c}");
            assert_eq!(
                cell["distance"], v["pairs"][0]["walk_distance"],
                "{fixture} {p} {c}"
            );
        }
    }
}

#[test]
fn filters_narrow_the_table_and_bad_names_are_errors() {
    let m = json(&run(
        "lab_default_k7.3",
        &[
            "topo",
            "--matrix",
            "--json",
            "--provider",
            "nvme0",
            "--client",
            "nvme1n1",
            "--client",
            "0000:05:00.0",
        ],
    ));
    let codes: Vec<&str> = m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["B4", "xH"]);
    // A row without p2pmem is marked, not an error.
    let m = json(&run(
        "lab_default_k7.3",
        &[
            "topo",
            "--matrix",
            "--json",
            "--provider",
            "nvme4",
            "--client",
            "nvme0",
        ],
    ));
    assert_eq!(m["cells"][0]["code"], "-");
    let o = run(
        "lab_default_k7.3",
        &["topo", "--matrix", "--client", "nvme99"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nvme99"));
    // --provider needs --matrix.
    let o = run("lab_default_k7.3", &["topo", "--provider", "nvme0"]);
    assert_eq!(o.status.code(), Some(2));
}
