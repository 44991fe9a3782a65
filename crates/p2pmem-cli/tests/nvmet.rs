//! `p2pmem nvmet` end to end on the s01 capture with the `fixtures/nvmet/s01_target`
//! overlay, in a scratch copy (a plain directory standing in for configfs): status,
//! pre-flight verdicts and exit codes, refusals before writing, the ordering of writes,
//! the connected-host guard, and save → wipe → restore. The kernel's own answers are
//! checked by the lab tier (`lab_nvmet.rs`).

#![cfg(test)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SWITCH: &str = "nqn.2026-11.io.p2pmem:switch";
const LOOPBACK: &str = "nqn.2026-11.io.p2pmem:loopback";
const NVMET: &str = "sys/kernel/config/nvmet";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn cp(src: &Path, dst: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dst)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// s01 plus the nvmet overlay, writable.
fn target() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    cp(
        &fixtures().join("truth/s01_switch_cmbmix_fam15/root"),
        d.path(),
    );
    assert!(Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(d.path())
        .status()
        .unwrap()
        .success());
    cp(&fixtures().join("nvmet/s01_target/root"), d.path());
    d
}

fn p2pmem(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn attr(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(NVMET).join(rel))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

#[test]
fn status_shows_settings_use_and_why_ports_never_use_p2pmem() {
    let d = target();
    let klog = fixtures().join("nvmet/s01_target/dmesg.txt");
    let o = p2pmem(
        d.path(),
        &[
            "--json",
            "nvmet",
            "status",
            "--klog",
            klog.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    let sw = &v["subsystems"][1];
    assert_eq!(sw["nqn"], SWITCH);
    assert_eq!(sw["namespaces"][0]["p2pmem"], "0000:03:00.0");
    assert_eq!(sw["namespaces"][0]["in_use"], "in_use");
    assert_eq!(sw["namespaces"][0]["providers"][0]["available"], 16711680);
    assert_eq!(
        sw["namespaces"][0]["log"][0],
        "nvmet: using p2pmem on 0000:03:00.0 for nsid 1"
    );
    assert_eq!(sw["namespaces"][1]["in_use"], "disabled");
    assert_eq!(sw["namespaces"][2]["in_use"], "off");
    // The loopback namespace shares nsid 1 but has p2pmem off: the line is not its.
    assert_eq!(
        v["subsystems"][0]["namespaces"][0]["log"],
        serde_json::json!([])
    );
    assert!(v["ports"][0]["p2pmem_never"]
        .as_str()
        .unwrap()
        .starts_with("loop ports never use p2pmem"));
    assert_eq!(v["ports"][1]["p2pmem_never"], Value::Null);
    assert!(v["ports"][2]["p2pmem_never"]
        .as_str()
        .unwrap()
        .starts_with("TCP ports never use p2pmem"));
    assert_eq!(
        v["connections"]["local_loop"],
        serde_json::json!([LOOPBACK])
    );
    let text = p2pmem(d.path(), &["nvmet", "status"]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.contains("kernel log: not read: --root names another system"),
        "{out}"
    );
}

#[test]
fn check_predicts_einval_across_host_bridges_and_says_soft_roce_cannot() {
    let d = target();
    let o = p2pmem(d.path(), &["--json", "nvmet", "check"]);
    assert_eq!(code(&o), Some(1));
    let v = json(&o);
    assert_eq!(v["verdict"], "fails");
    let ns2 = &v["namespaces"][1];
    assert_eq!(ns2["nsid"], 2);
    assert_eq!(ns2["enable"]["errno"]["name"], "EINVAL");
    assert_eq!(ns2["enable"]["failure"]["error"], "distance_rejected");
    assert_eq!(
        ns2["kernel_log"][0],
        "nvme 0000:81:00.0: cannot be used for peer-to-peer DMA as the client and provider (0000:06:00.0) do not share an upstream bridge or whitelisted host bridge"
    );
    let rdma = v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["trtype"] == "rdma")
        .unwrap();
    assert_eq!(rdma["controllers"][0]["rdma_device"], "rxe0");
    assert!(rdma["controllers"][0]["no_p2p_client"]
        .as_str()
        .unwrap()
        .contains("soft-RoCE"));
    let one = p2pmem(d.path(), &["nvmet", "check", SWITCH, "1"]);
    assert_eq!(code(&one), Some(0));
    assert!(String::from_utf8_lossy(&one.stdout).contains("enable: succeeds"));
    // A provider without p2pmem: the write itself is refused (ENODEV).
    let o = p2pmem(
        d.path(),
        &[
            "--json", "nvmet", "check", SWITCH, "2", "--p2pmem", "05:00.0",
        ],
    );
    assert_eq!(code(&o), Some(1));
    assert_eq!(
        json(&o)["namespaces"][0]["attr_write"]["error"]["errno"]["name"],
        "ENODEV"
    );
    // auto on the second host bridge finds 81:00.0's own CMB.
    let o = p2pmem(
        d.path(),
        &["--json", "nvmet", "check", SWITCH, "2", "--p2pmem", "auto"],
    );
    assert_eq!(code(&o), Some(0));
    assert_eq!(
        json(&o)["namespaces"][0]["providers"][0]["bdf"],
        "0000:81:00.0"
    );
}

#[test]
fn predicted_refusals_write_nothing() {
    let d = target();
    let r = d.path();
    let p2p = format!("subsystems/{SWITCH}/namespaces/1/p2pmem");
    // Enabled: the kernel would answer EBUSY.
    let o = p2pmem(
        r,
        &["--json", "nvmet", "ns", "set-p2pmem", SWITCH, "1", "auto"],
    );
    assert_eq!(code(&o), Some(1));
    let v = json(&o);
    assert_eq!(v["predicted_errno"], "EBUSY");
    assert_eq!(v["changed"], serde_json::json!([]));
    assert_eq!(attr(r, &p2p), "0000:03:00.0");
    // No p2pmem on 05:00.0: ENODEV, with the kernel's line.
    let o = p2pmem(
        r,
        &[
            "--json",
            "nvmet",
            "ns",
            "set-p2pmem",
            SWITCH,
            "2",
            "0000:05:00.0",
        ],
    );
    assert_eq!(
        (code(&o), json(&o)["predicted_errno"].clone()),
        (Some(1), "ENODEV".into())
    );
    // Enabling nsid 2 (06:00.0 across host bridges, family 15): EINVAL.
    let o = p2pmem(r, &["nvmet", "ns", "enable", SWITCH, "2"]);
    assert_eq!(code(&o), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("the kernel will refuse to enable"));
    assert_eq!(
        attr(r, &format!("subsystems/{SWITCH}/namespaces/2/enable")),
        "0"
    );
    // --write-anyway lets the file system answer; a plain directory judges nothing.
    let o = p2pmem(
        r,
        &[
            "--json",
            "nvmet",
            "ns",
            "enable",
            SWITCH,
            "2",
            "--write-anyway",
        ],
    );
    assert_eq!(code(&o), Some(0));
    let v = json(&o);
    assert_eq!(
        (
            v["predicted_errno"].clone(),
            v["prediction_matched"].clone()
        ),
        ("EINVAL".into(), Value::Null)
    );
}

#[test]
fn reenable_disables_writes_and_enables_in_that_order() {
    let d = target();
    let o = p2pmem(
        d.path(),
        &[
            "--json",
            "nvmet",
            "ns",
            "set-p2pmem",
            SWITCH,
            "1",
            "04:00.0",
            "--reenable",
        ],
    );
    assert_eq!(code(&o), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let steps: Vec<(String, String)> = json(&o)["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["attr"].as_str().unwrap().to_string(),
                s["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [("enable", "0"), ("p2pmem", "0000:04:00.0"), ("enable", "1")];
    assert_eq!(steps, want.map(|(a, v)| (a.to_string(), v.to_string())));
    // Across host bridges it would not come back: refused, left enabled as it was.
    let o = p2pmem(
        d.path(),
        &[
            "nvmet",
            "ns",
            "set-p2pmem",
            SWITCH,
            "1",
            "06:00.0",
            "--reenable",
        ],
    );
    assert_eq!(code(&o), Some(1));
    assert_eq!(
        attr(
            d.path(),
            &format!("subsystems/{SWITCH}/namespaces/1/enable")
        ),
        "1"
    );
}

#[test]
fn allow_any_host_is_set_only_when_asked() {
    let d = target();
    let r = d.path();
    assert_eq!(
        code(&p2pmem(r, &["nvmet", "subsys", "add", "nqn.t1"])),
        Some(0)
    );
    assert_eq!(
        attr(r, "subsystems/nqn.t1/attr_allow_any_host"),
        "",
        "never written"
    );
    assert!(r.join(NVMET).join("subsystems/nqn.t1/namespaces").is_dir());
    assert_eq!(
        code(&p2pmem(
            r,
            &["nvmet", "subsys", "add", "nqn.t2", "--allow-any-host"]
        )),
        Some(0)
    );
    assert_eq!(attr(r, "subsystems/nqn.t2/attr_allow_any_host"), "1");
    // Hosts cannot be listed while any host is allowed (the kernel's EINVAL).
    let o = p2pmem(r, &["nvmet", "host", "allow", "nqn.t2", "nqn.h"]);
    assert_eq!(code(&o), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("EINVAL"));
    assert_eq!(
        code(&p2pmem(r, &["nvmet", "host", "allow", "nqn.t1", "nqn.h"])),
        Some(0)
    );
    assert_eq!(
        std::fs::read_link(r.join(NVMET).join("subsystems/nqn.t1/allowed_hosts/nqn.h")).unwrap(),
        PathBuf::from("../../../hosts/nqn.h")
    );
    // Repeating a change changes nothing.
    let o = p2pmem(r, &["nvmet", "host", "allow", "nqn.t1", "nqn.h"]);
    assert_eq!(code(&o), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "nothing to change\n");
}

#[test]
fn removal_is_refused_while_hosts_are_or_may_be_connected() {
    let d = target();
    let r = d.path();
    // This machine is connected to the loopback subsystem over loop.
    let o = p2pmem(r, &["nvmet", "subsys", "rm", LOOPBACK]);
    assert_eq!(code(&o), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("connected: this machine, over loop port 1")
    );
    // Nobody can tell who is on the rdma port (no nvmet debugfs).
    let o = p2pmem(r, &["--json", "nvmet", "port", "rm", "2"]);
    assert_eq!(code(&o), Some(1));
    assert_eq!(json(&o)["blocked"][0]["connected"], "unknown");
    assert!(r.join(NVMET).join("ports/2").is_dir());
    let o = p2pmem(r, &["nvmet", "subsys", "rm", LOOPBACK, "--force"]);
    assert_eq!(code(&o), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!r.join(NVMET).join("subsystems").join(LOOPBACK).exists());
    assert!(!r
        .join(NVMET)
        .join("ports/1/subsystems")
        .join(LOOPBACK)
        .exists());
}

#[test]
fn save_wipe_restore_gives_the_same_configuration_and_restore_is_idempotent() {
    let d = target();
    let r = d.path();
    let file = r.join("saved.json");
    let f = file.to_str().unwrap();
    assert_eq!(code(&p2pmem(r, &["nvmet", "save", f])), Some(0));
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["format"], "p2pmem-nvmet");
    assert_eq!(
        saved["subsystems"][1]["namespaces"][0]["p2pmem"],
        "0000:03:00.0"
    );
    // Wipe: a fresh, empty target.
    std::fs::remove_dir_all(r.join(NVMET)).unwrap();
    for s in ["subsystems", "ports", "hosts"] {
        std::fs::create_dir_all(r.join(NVMET).join(s)).unwrap();
    }
    // The file lets any host into the loopback subsystem: only when asked.
    let o = p2pmem(r, &["nvmet", "restore", f]);
    assert_eq!(code(&o), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--allow-any-host"));
    // nsid 2 would not enable under family 15, but the saved state has it disabled.
    let o = p2pmem(r, &["--json", "nvmet", "restore", f, "--allow-any-host"]);
    assert_eq!(code(&o), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    let steps = v["changed"].as_array().unwrap();
    let pos = |attr: &str| {
        steps
            .iter()
            .position(|s| s["nqn"] == SWITCH && s["nsid"] == 1 && s["attr"] == attr)
            .unwrap()
    };
    assert!(pos("p2pmem") < pos("enable"));
    assert_eq!(v["preflight"][0]["enable"]["result"], "passes");
    let again = file.with_file_name("again.json");
    assert_eq!(
        code(&p2pmem(r, &["nvmet", "save", again.to_str().unwrap()])),
        Some(0)
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&again).unwrap()
    );
    let o = p2pmem(r, &["--json", "nvmet", "restore", f, "--allow-any-host"]);
    assert_eq!(
        (code(&o), json(&o)["changed"].clone()),
        (Some(0), serde_json::json!([]))
    );
}

#[test]
fn bad_input_is_an_error_naming_it() {
    let d = target();
    let r = d.path();
    let o = p2pmem(r, &["nvmet", "subsys", "add", "a/b"]);
    assert_eq!(code(&o), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("contains '/'"));
    let o = p2pmem(r, &["nvmet", "port", "add", "9", "--trtype", "tcp"]);
    assert_eq!(code(&o), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--traddr"));
    let o = p2pmem(r, &["nvmet", "ns", "set-p2pmem", SWITCH, "1", "yes"]);
    assert_eq!(code(&o), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a p2pmem setting"));
    std::fs::write(r.join("junk.json"), "{\"format\": \"x\", \"version\": 1}").unwrap();
    let o = p2pmem(
        r,
        &["nvmet", "restore", r.join("junk.json").to_str().unwrap()],
    );
    assert_eq!(code(&o), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a p2pmem nvmet configuration"));
    let empty = tempfile::tempdir().unwrap();
    let o = p2pmem(empty.path(), &["nvmet", "status"]);
    assert_eq!(code(&o), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("modprobe nvmet"));
}

/// The lab capture replays to the kernel's own verdicts: the namespaces it enabled are
/// predicted to enable, the one it refused is predicted EINVAL with the line it logged.
#[test]
fn lab_capture_replays_to_the_kernels_verdicts() {
    let cap = fixtures().join("nvmet/lab_default_fam15");
    let root = cap.join("root");
    let dmesg = std::fs::read_to_string(cap.join("dmesg.txt")).unwrap();
    let o = p2pmem(&root, &["--json", "nvmet", "check"]);
    assert_eq!(code(&o), Some(1));
    let v = json(&o);
    for ns in v["namespaces"].as_array().unwrap() {
        let enabled = ns["enabled"].as_bool().unwrap();
        let fails = ns["enable"]["result"] == "fails";
        assert_eq!(
            enabled, !fails,
            "the kernel's verdict is the enable state: {ns}"
        );
        for line in ns["kernel_log"].as_array().unwrap() {
            let line = line.as_str().unwrap();
            assert!(
                dmesg.contains(line),
                "{line:?} is not in the lab's kernel log"
            );
        }
    }
    assert_eq!(v["namespaces"][1]["enable"]["errno"]["name"], "EINVAL");
    assert_eq!(
        v["namespaces"][1]["kernel_log"].as_array().unwrap().len(),
        1
    );
    assert!(!dmesg.contains("using p2pmem on"), "loop never uses p2pmem");
    let log = cap.join("dmesg.txt");
    let o = p2pmem(
        &root,
        &["--json", "nvmet", "status", "--klog", log.to_str().unwrap()],
    );
    let v = json(&o);
    assert_eq!(
        v["connections"]["local_loop"],
        serde_json::json!(["nqn.2026-11.io.p2pmem:lab"])
    );
    assert_eq!(v["subsystems"][0]["namespaces"][0]["in_use"], "never");
    assert_eq!(
        v["subsystems"][0]["namespaces"][0]["backing"]["pci"],
        "0000:04:00.0"
    );
}

/// Issue 13: `nvmet restore /dev/urandom` never returned (the file was read without a
/// bound). Now it stops at the bound of a saved configuration, with an error naming the
/// file and the bound.
#[test]
fn restore_of_an_endless_file_is_a_quick_clear_error() {
    let d = target();
    let r = d.path();
    let start = std::time::Instant::now();
    let o = p2pmem(r, &["nvmet", "restore", "/dev/urandom"]);
    assert_ne!(code(&o), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/dev/urandom") && err.contains("saved nvmet configuration"),
        "{err}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(60));
}

/// A restore killed with SIGKILL after each of its steps in turn (`P2PMEM_KILL_AT`, as
/// `kill -9` would), then run again, converges: the second run redoes nothing the first
/// did and a third run changes nothing (`lab_interrupted` checks the same on the lab
/// kernel's configfs, where the result is also byte-identical to the saved file).
#[test]
fn a_restore_killed_after_any_step_converges_when_run_again() {
    use std::os::unix::process::ExitStatusExt;
    let d = target();
    let r = d.path();
    let file = r.join("saved.json");
    let f = file.to_str().unwrap();
    assert_eq!(code(&p2pmem(r, &["nvmet", "save", f])), Some(0));
    let wipe = || {
        std::fs::remove_dir_all(r.join(NVMET)).unwrap();
        for s in ["subsystems", "ports", "hosts"] {
            std::fs::create_dir_all(r.join(NVMET).join(s)).unwrap();
        }
    };
    let restore = |kill_at: Option<usize>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_p2pmem"));
        c.arg("--root")
            .arg(r)
            .args(["--json", "nvmet", "restore", f, "--allow-any-host"]);
        match kill_at {
            Some(n) => c.env("P2PMEM_KILL_AT", format!("nvmet-step:{n}")),
            None => c.env_remove("P2PMEM_KILL_AT"),
        };
        c.output().unwrap()
    };
    wipe();
    let whole = restore(None);
    assert_eq!(code(&whole), Some(0));
    let total = json(&whole)["changed"].as_array().unwrap().len();
    assert!(total > 10, "{total} steps");
    for n in 1..total {
        wipe();
        let killed = restore(Some(n));
        assert_eq!(
            killed.status.signal(),
            Some(9),
            "step {n}: {:?}",
            killed.status
        );
        let rerun = restore(None);
        assert_eq!(
            code(&rerun),
            Some(0),
            "after a kill at step {n}: {}",
            String::from_utf8_lossy(&rerun.stderr)
        );
        // Nothing done before the kill is done again, and the configuration reached is
        // a fixed point. (Byte-identical to the saved file only on real configfs, where
        // `mkdir` creates a namespace's attribute files: the lab checks that. Here a
        // namespace directory made before the kill has no `p2pmem` file, which reads as
        // a kernel without the attribute.)
        let changed = json(&rerun)["changed"].as_array().unwrap().len();
        assert!(
            changed <= total - n,
            "after a kill at step {n}: {changed} steps"
        );
        assert_eq!(
            json(&restore(None))["changed"],
            serde_json::json!([]),
            "a third run after a kill at step {n}"
        );
    }
}
