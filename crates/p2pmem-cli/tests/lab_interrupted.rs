//! Lab tier: interrupted configuration on the lab kernel's real configfs and sysfs, in
//! one boot of the `default` topology. A command is killed with SIGKILL at an exact
//! step (`P2PMEM_KILL_AT=NAME:N`, `p2pmem_linux::killpoint`: the process kills itself
//! right after the kernel took the Nth change, as `kill -9` from outside would), then
//! run again:
//!
//! * `nvmet restore` of a saved target (two subsystems, three namespaces, one with a
//!   CMB as p2pmem, a loop and a TCP port, an allowed host), killed after each of its
//!   configfs steps in turn from an empty target: the second run succeeds, the saved
//!   configuration is byte-identical to the file, and a third run changes nothing;
//! * `provider bind` of the ivshmem 06:00.2, killed after each of its three writes
//!   (`ranges`, `driver_override`, `bind`): `provider unbind` leaves the device with no
//!   driver, no override and no `ranges` entry (nothing half-bound), and a plain
//!   `provider bind` then publishes the whole BAR; killed again, `provider bind` with
//!   another range run straight after publishes that range.

#![cfg(test)]

mod lab_common;

use p2pmem_lab::PlanRun;
use p2pmem_wire::plan::{Plan, Step};
use p2pmem_wire::report::ExecResult;
use serde_json::Value;
use std::sync::OnceLock;

const N1: &str = "nqn.2026-12.io.p2pmem:cut-a";
const N2: &str = "nqn.2026-12.io.p2pmem:cut-b";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:5d1a0a3e-8a44-4a5b-9d6e-2f6a1c3b7e01";
/// The ivshmem (64 MiB BAR 2) the `p2pmem_pci` module binds as it loads.
const P: &str = "0000:06:00.2";
/// More restore runs than the saved target has steps: the first run that is not killed
/// shows every step was cut once.
const MAX_CUTS: usize = 64;
const MIB: u64 = 1 << 20;
/// Restoring an empty target: removes everything.
const WIPE: [&str; 6] = [
    "p2pmem",
    "--json",
    "nvmet",
    "restore",
    "/tmp/empty.json",
    "--force",
];

use lab_common::default_words as words;

fn killed_at(point: &str, n: usize, argv: &[&str]) -> Vec<String> {
    let mut v = vec!["env".to_string(), format!("P2PMEM_KILL_AT={point}:{n}")];
    v.extend(argv.iter().map(|s| s.to_string()));
    v
}

fn exec(p: &mut Plan, name: &str, argv: &[&str]) {
    p.step(name, Step::Exec { argv: words(argv) });
}

fn plan() -> Plan {
    let mut p = Plan::new();
    // The target to save: made with p2pmem's own commands.
    exec(&mut p, "lo_up", &["ip", "link", "set", "lo", "up"]);
    for (name, argv) in [
        ("subsys_a", vec!["p2pmem", "nvmet", "subsys", "add", N1]),
        ("subsys_b", vec!["p2pmem", "nvmet", "subsys", "add", N2]),
        (
            "ns_a1",
            vec!["p2pmem", "nvmet", "ns", "add", N1, "1", "{A}"],
        ),
        (
            "ns_a2",
            vec!["p2pmem", "nvmet", "ns", "add", N1, "2", "{B}"],
        ),
        (
            "ns_b1",
            vec!["p2pmem", "nvmet", "ns", "add", N2, "1", "{C}"],
        ),
        (
            "cmb",
            vec![
                "p2pmem",
                "nvmet",
                "ns",
                "set-p2pmem",
                N1,
                "1",
                "0000:03:00.0",
            ],
        ),
        (
            "enable_a1",
            vec!["p2pmem", "nvmet", "ns", "enable", N1, "1"],
        ),
        (
            "enable_b1",
            vec!["p2pmem", "nvmet", "ns", "enable", N2, "1"],
        ),
        (
            "port_loop",
            vec!["p2pmem", "nvmet", "port", "add", "1", "--trtype", "loop"],
        ),
        (
            "port_tcp",
            vec![
                "p2pmem",
                "nvmet",
                "port",
                "add",
                "2",
                "--trtype",
                "tcp",
                "--traddr",
                "127.0.0.1",
            ],
        ),
        (
            "link_loop",
            vec!["p2pmem", "nvmet", "port", "link", "1", N1],
        ),
        ("link_tcp", vec!["p2pmem", "nvmet", "port", "link", "2", N2]),
        ("host", vec!["p2pmem", "nvmet", "host", "allow", N1, HOST]),
        ("save", vec!["p2pmem", "nvmet", "save", "/tmp/want.json"]),
    ] {
        exec(&mut p, name, &argv);
    }
    p.step(
        "empty",
        Step::WriteFile {
            path: "/tmp/empty.json".into(),
            text: r#"{"format":"p2pmem-nvmet","version":1}"#.to_string() + "\n",
        },
    );
    let restore = ["p2pmem", "--json", "nvmet", "restore", "/tmp/want.json"];
    for n in 1..=MAX_CUTS {
        exec(&mut p, &format!("wipe{n}"), &WIPE);
        let cut = killed_at("nvmet-step", n, &restore);
        let cut: Vec<&str> = cut.iter().map(String::as_str).collect();
        exec(&mut p, &format!("cut{n}"), &cut);
        exec(&mut p, &format!("again{n}"), &restore);
        let got = format!("/tmp/got{n}.json");
        exec(
            &mut p,
            &format!("save{n}"),
            &["p2pmem", "nvmet", "save", &got],
        );
        exec(
            &mut p,
            &format!("same{n}"),
            &["cmp", "/tmp/want.json", &got],
        );
        exec(&mut p, &format!("third{n}"), &restore);
    }
    // Clear the target before the provider part (the CMB namespace holds nothing of
    // 06:00.2, but keep the runs apart).
    exec(&mut p, "wipe_end", &WIPE);

    // Provider: the module loads and binds 06:00.2 by its ID.
    let dev = |f: &str| format!("/sys/bus/pci/devices/{P}/{f}");
    let state = |p: &mut Plan, name: &str| {
        p.exec(
            name,
            &[
                "sh",
                "-c",
                &format!(
                    "echo override=$(cat {o}); if [ -e {d} ]; then echo driver=$(basename $(readlink {d})); else echo driver=none; fi; \
                     r=$(grep '^{P} ' /sys/bus/pci/drivers/p2pmem_pci/ranges); echo ranges=${{r:-none}}; \
                     if [ -d {m} ]; then echo p2pmem=$(cat {m}/size); else echo p2pmem=none; fi",
                    o = dev("driver_override"),
                    d = dev("driver"),
                    m = dev("p2pmem"),
                ),
            ],
        );
    };
    exec(
        &mut p,
        "first_bind",
        &["p2pmem", "--json", "provider", "bind", P],
    );
    let bind_4m = ["p2pmem", "provider", "bind", P, "--size", "4M"];
    for n in 1..=3 {
        exec(
            &mut p,
            &format!("unbind_before{n}"),
            &["p2pmem", "--json", "provider", "unbind", P],
        );
        let cut = killed_at("provider-bind", n, &bind_4m);
        let cut: Vec<&str> = cut.iter().map(String::as_str).collect();
        exec(&mut p, &format!("bind_cut{n}"), &cut);
        state(&mut p, &format!("after_cut{n}"));
        exec(
            &mut p,
            &format!("undo{n}"),
            &["p2pmem", "--json", "provider", "unbind", P],
        );
        state(&mut p, &format!("after_undo{n}"));
        exec(
            &mut p,
            &format!("bind_whole{n}"),
            &["p2pmem", "--json", "provider", "bind", P],
        );
        state(&mut p, &format!("after_whole{n}"));
        // Cut again, then finish with another range straight away.
        exec(
            &mut p,
            &format!("unbind_mid{n}"),
            &["p2pmem", "--json", "provider", "unbind", P],
        );
        exec(&mut p, &format!("bind_cut_again{n}"), &cut);
        exec(
            &mut p,
            &format!("bind_2m{n}"),
            &["p2pmem", "--json", "provider", "bind", P, "--size", "2M"],
        );
        state(&mut p, &format!("after_2m{n}"));
    }
    p.step("dmesg", Step::Dmesg);
    p
}

struct Guest(PlanRun);

impl Guest {
    /// A command the plan ran.
    fn step(&self, name: &str) -> &ExecResult {
        lab_common::exec_step(&self.0, name)
    }

    /// A command that must have succeeded.
    fn ok(&self, name: &str) -> &ExecResult {
        lab_common::exec_ok(&self.0, name)
    }

    fn json(&self, name: &str) -> Value {
        let s = self.ok(name);
        serde_json::from_str(s.stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {}", s.stdout))
    }

    fn killed(&self, name: &str) -> bool {
        let s = self.step(name);
        match (s.exit, s.signal) {
            (None, Some(9)) => true,
            (Some(0), None) => false,
            other => panic!("{name}: {other:?}\n{}\n{}", s.stdout, s.stderr),
        }
    }

    /// `key=value` lines of a state step.
    fn state(&self, name: &str) -> Vec<String> {
        self.ok(name).stdout.lines().map(str::to_string).collect()
    }
}

fn guest() -> &'static Guest {
    static GUEST: OnceLock<Guest> = OnceLock::new();
    GUEST.get_or_init(|| {
        Guest(lab_common::shared_guest("lab_interrupted", || {
            lab_common::run_plan("default", None, &plan())
        }))
    })
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn a_restore_killed_after_any_configfs_step_converges_when_run_again() {
    let g = guest();
    let saved = &g.ok("save").stdout;
    assert!(
        saved.contains("saved 2 subsystem(s), 3 namespace(s), 2 port(s), 1 host(s)"),
        "{saved}"
    );
    let mut steps = None;
    for n in 1..=MAX_CUTS {
        g.ok(&format!("wipe{n}"));
        if !g.killed(&format!("cut{n}")) {
            // Not killed: the restore has fewer steps than n; it did them all.
            steps = Some(n - 1);
            let all = g.json(&format!("cut{n}"))["changed"]
                .as_array()
                .expect("changed")
                .len();
            assert_eq!(all, n - 1, "the uncut run made {all} steps");
            break;
        }
        let again = g.json(&format!("again{n}"));
        assert_eq!(again["failed"], Value::Null, "after a cut at {n}: {again}");
        g.ok(&format!("save{n}"));
        let same = g.step(&format!("same{n}"));
        assert_eq!(
            same.exit,
            Some(0),
            "after a cut at step {n} the configuration differs: {}",
            same.stdout
        );
        assert_eq!(
            g.json(&format!("third{n}"))["changed"],
            serde_json::json!([]),
            "a third run after a cut at {n}"
        );
    }
    let steps = steps.unwrap_or_else(|| panic!("more than {MAX_CUTS} restore steps"));
    assert!(steps > 20, "only {steps} steps were cut");
    eprintln!("nvmet restore: killed after each of its {steps} steps; every rerun converged");
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn a_provider_bind_killed_after_any_write_leaves_nothing_half_bound() {
    let g = guest();
    let first = g.json("first_bind");
    assert_eq!(first["size"], 64 * MIB, "{first}");
    let clean = [
        "override=(null)".to_string(),
        "driver=none".into(),
        "ranges=none".into(),
        "p2pmem=none".into(),
    ];
    for n in 1..=3 {
        g.ok(&format!("unbind_before{n}"));
        assert!(g.killed(&format!("bind_cut{n}")), "bind {n} was not cut");
        let cut = g.state(&format!("after_cut{n}"));
        // What each cut leaves: the ranges entry; then the override too; then a bound
        // device publishing the 4 MiB asked for.
        let expect_override = if n >= 2 {
            "override=p2pmem_pci"
        } else {
            "override=(null)"
        };
        assert_eq!(cut[0], expect_override, "cut {n}: {cut:?}");
        assert!(
            cut[2].starts_with(&format!("ranges={P} ")),
            "cut {n}: {cut:?}"
        );
        if n == 3 {
            assert_eq!(cut[1], "driver=p2pmem_pci", "cut {n}: {cut:?}");
        } else {
            assert_eq!(cut[1], "driver=none", "cut {n}: {cut:?}");
        }
        let undo = g.json(&format!("undo{n}"));
        let action = if n == 3 {
            "unbound"
        } else {
            "cleared_half_bind"
        };
        assert_eq!(undo["action"], action, "cut {n}: {undo}");
        assert_eq!(
            g.state(&format!("after_undo{n}")),
            clean,
            "after undoing cut {n}"
        );
        let whole = g.json(&format!("bind_whole{n}"));
        assert_eq!(whole["size"], 64 * MIB, "cut {n}: {whole}");
        assert_eq!(whole["published"], true, "cut {n}: {whole}");
        assert_eq!(
            g.state(&format!("after_whole{n}"))[3],
            format!("p2pmem={}", 64 * MIB)
        );
        g.ok(&format!("unbind_mid{n}"));
        assert!(g.killed(&format!("bind_cut_again{n}")));
        let two = g.json(&format!("bind_2m{n}"));
        assert_eq!(two["size"], 2 * MIB, "cut {n} then bind 2M: {two}");
        let after = g.state(&format!("after_2m{n}"));
        assert_eq!(after[1], "driver=p2pmem_pci", "{after:?}");
        assert_eq!(after[3], format!("p2pmem={}", 2 * MIB), "{after:?}");
    }
    let dmesg = &g.0.dmesg;
    for bad in ["Oops", "BUG:", "WARNING:", "Call Trace"] {
        assert!(!dmesg.contains(bad), "kernel log has {bad}:\n{dmesg}");
    }
}
