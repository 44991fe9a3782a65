//! The `p2pmem` binary end to end against the ground-truth captures: exit codes, JSON
//! fields, errors for bad input (exit 2, a message naming the input, never a panic).

#![cfg(test)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/truth")
        .join(name)
        .join("root")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .args(args)
        .output()
        .unwrap()
}

fn s01(args: &[&str]) -> Output {
    let root = fixture("s01_switch_cmbmix_fam15");
    let mut all = vec!["--root", root.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&all)
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

#[test]
fn check_allowed_exits_0_with_the_documented_json() {
    let o = s01(&["check", "--json", "0000:03:00.0", "04:00.0"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json(&o);
    assert_eq!(v["provider"], "0000:03:00.0");
    assert_eq!(v["clients"], serde_json::json!(["0000:04:00.0"]));
    assert_eq!(v["map_type"], "bus_addr");
    assert_eq!(v["distance"], 4);
    assert_eq!(v["supported"], true);
    assert_eq!(v["messages"], serde_json::json!([]));
    assert!(o.stderr.is_empty());
}

#[test]
fn check_refused_exits_1_with_the_kernel_line() {
    let o = s01(&["check", "--json", "0000:81:00.0", "0000:03:00.0"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["map_type"], "not_supported");
    assert_eq!(v["distance"], Value::Null);
    assert_eq!(v["supported"], false);
    assert_eq!(v["refused_errno"], "EREMOTEIO");
    assert_eq!(
        v["messages"][0],
        "nvme 0000:03:00.0: cannot be used for peer-to-peer DMA as the client and provider (0000:81:00.0) do not share an upstream bridge or whitelisted host bridge"
    );
    let text = s01(&["check", "0000:81:00.0", "0000:03:00.0"]);
    assert_eq!(text.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&text.stdout).contains("REFUSED"));
}

#[test]
fn many_clients_fail_if_one_fails() {
    let o = s01(&["check", "--json", "03:00.0", "04:00.0", "05:00.0"]);
    assert_eq!(
        (o.status.code(), json(&o)["distance"].clone()),
        (Some(0), Value::from(8))
    );
    let o = s01(&["check", "--json", "03:00.0", "04:00.0", "06:00.0"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn find_lists_ties() {
    let o = s01(&["find", "--json", "05:00.0"]);
    assert_eq!(o.status.code(), Some(0));
    let v = json(&o);
    assert_eq!(
        v["best"],
        serde_json::json!(["0000:03:00.0", "0000:04:00.0"])
    );
    assert_eq!(v["best_distance"], 4);
    let o = s01(&["find", "06:00.0", "03:00.0"]);
    assert_eq!(o.status.code(), Some(1), "no provider reaches both");
}

#[test]
fn topo_text_json_and_dot() {
    let o = s01(&["topo"]);
    assert_eq!(o.status.code(), Some(0));
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.contains("pci0000:80"), "{t}");
    assert!(t.contains("0000:03:00.0 NVMe"), "{t}");
    let v = json(&s01(&["topo", "--json"]));
    assert_eq!(v["functions"].as_array().unwrap().len(), 17);
    assert_eq!(v["host_bridges"][0]["whitelisted"], false);
    let d = String::from_utf8_lossy(&s01(&["topo", "--dot"]).stdout).to_string();
    assert!(d.starts_with("digraph p2pmem {"), "{d}");
    assert!(
        d.contains("\"0000:03:00.0\" -> \"0000:04:00.0\" [color=green4"),
        "{d}"
    );
    assert!(
        !d.contains("\"0000:06:00.0\" -> \"0000:03:00.0\""),
        "refused pairs get no edge"
    );
}

#[test]
fn doctor_on_a_capture() {
    let o = s01(&["doctor", "--json"]);
    let v = json(&o);
    assert_eq!(o.status.code(), Some(0), "{v:#}");
    assert_eq!(v["usable"], true);
    let topics: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["topic"].as_str())
        .collect();
    assert!(
        topics.contains(&"providers") && topics.contains(&"host bridge"),
        "{topics:?}"
    );
}

#[test]
fn capture_then_replay() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("cap");
    let o = s01(&["capture", out.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let a = json(&s01(&["check", "--json", "03:00.0", "81:00.0"]));
    let b = json(&run(&[
        "--root",
        out.to_str().unwrap(),
        "check",
        "--json",
        "03:00.0",
        "81:00.0",
    ]));
    assert_eq!(a, b);
    // A second capture into the same, now non-empty, directory is refused.
    let o = s01(&["capture", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
}

#[test]
fn bad_input_is_a_clear_error_with_exit_2() {
    for (args, needle) in [
        (vec!["check", "0000:99:00.0", "03:00.0"], "0000:99:00.0"),
        (vec!["check", "03:00.0", "nvme9n1"], "nvme9n1"),
        (vec!["check", "03:00.0", "0000:03:00.9"], "0000:03:00.9"),
        (vec!["find", "zz"], "'zz'"),
    ] {
        let o = s01(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(needle) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    let o = run(&["--root", "/nonexistent/root", "topo"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/root"));
}
