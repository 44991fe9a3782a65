//! Lab tier: the `p2pmem_pci` provider driver (a Rust kernel module, `driver/p2pmem_pci/`)
//! and `p2pmem provider bind|unbind`, on the real 6.12 kernel (or the line
//! `P2PMEM_LAB_KERNEL` names: scripts/test runs this file again on 7.3, whose glue is
//! `v7.rs`), in three boots of the
//! `provider` topology: 05:00.0 shmS (ivshmem, 64 MiB) on a switch with 03:00.0 swA and
//! 04:00.0 swB (NVMe), 06:00.0 rpC (NVMe) on another root port, 07:00.0 shmR (ivshmem,
//! 16 MiB) on a third, 00:08.0 shmB (ivshmem, 16 MiB) on the root bus; the q35 SMBus
//! controller 00:1f.3 (no driver in the lab kernel) has an I/O BAR 4.
//!
//! Boot 1 (one typed plan) walks the life cycle: the clear errors (module missing, a device of
//! another driver), bind (the module loads and binds every ivshmem; `p2pmem/` has the
//! BAR's size and is published), an O_DIRECT NVMe copy through it that verifies, a
//! sub-range, the driver's refusals (BAR too small, misaligned range, I/O BAR, no
//! prefetchable BAR), unbind and rebind, and unloading the module while a process holds
//! a mapping of its p2pmem (its next access is an error it reports, not a SIGBUS
//! death). Boots 2 and 3 (`lab demo` under `-cpu max` and under a Zen
//! CPU) probe every provider/client pair against the model.

#![cfg(test)]

mod lab_common;

use p2pmem_lab::PlanRun;
use p2pmem_wire::bind::{BindAction, BindReport};
use p2pmem_wire::copy::CopyDocument;
use p2pmem_wire::plan::{Arg, Dev, Plan, Step};
use p2pmem_wire::report::ExecResult;
use serde_json::Value;
use std::sync::OnceLock;

const S: &str = "0000:05:00.0";
const R: &str = "0000:07:00.0";
const RB: &str = "0000:00:08.0";
const SMBUS: &str = "0000:00:1f.3";

fn bdf(s: &str) -> p2pmem_model::Bdf {
    s.parse().expect("a PCI address")
}

fn sysfs(dev: &str, file: &str) -> String {
    format!("/sys/bus/pci/devices/{dev}/{file}")
}

/// The guest's plan: every command as the user types it (their exit status, stdout and
/// stderr are the test), the guest's sha256 of the copied ranges, and a process that
/// holds a mapping of the provider's p2pmem while the module goes away.
fn plan() -> Plan {
    let (a, b) = (
        Dev::Nvme(bdf("0000:03:00.0")),
        Dev::Nvme(bdf("0000:04:00.0")),
    );
    let mut p = Plan::new();
    let m = 1u64 << 20;
    p.exec("loaded_at_start", &["test", "-d", "/sys/module/p2pmem_pci"])
        .exec(
            "module_missing",
            &[
                "p2pmem",
                "provider",
                "bind",
                S,
                "--module",
                "/nonexistent/p2pmem_pci.ko",
            ],
        )
        .exec(
            "other_driver",
            &["p2pmem", "provider", "bind", "0000:03:00.0"],
        )
        .exec("bind", &["p2pmem", "--json", "provider", "bind", S])
        .exec("bind_text", &["p2pmem", "provider", "bind", S])
        .exec(
            "files",
            &[
                "cat",
                &sysfs(S, "p2pmem/size"),
                &sysfs(S, "p2pmem/published"),
            ],
        )
        .step(
            "copy",
            Step::Exec {
                argv: lab_common::words(
                    &[
                        "p2pmem",
                        "--json",
                        "copy",
                        "{A}",
                        "{B}",
                        "--via",
                        S,
                        "--require-p2p",
                        "--verify",
                        "--length",
                        "2M",
                        "--dst-offset",
                        "2M",
                    ],
                    &[("{A}", "0000:03:00.0"), ("{B}", "0000:04:00.0")],
                ),
            },
        )
        .step(
            "copy_src",
            Step::Hash {
                dev: a,
                offset: 0,
                len: 2 * m,
            },
        )
        .step(
            "copy_dst",
            Step::Hash {
                dev: b,
                offset: 2 * m,
                len: 2 * m,
            },
        )
        .exec(
            "subrange",
            &[
                "p2pmem", "--json", "provider", "bind", RB, "--bar", "2", "--offset", "2M",
                "--size", "4M",
            ],
        )
        .exec("subrange_size", &["cat", &sysfs(RB, "p2pmem/size")])
        .exec(
            "too_small",
            &["p2pmem", "provider", "bind", R, "--bar", "0"],
        )
        .exec(
            "misaligned",
            &["p2pmem", "provider", "bind", R, "--offset", "4K"],
        )
        .exec(
            "io_bar",
            &["p2pmem", "provider", "bind", SMBUS, "--bar", "4"],
        )
        .exec(
            "io_bar_override",
            &["cat", &sysfs(SMBUS, "driver_override")],
        )
        .exec("no_prefetchable", &["p2pmem", "provider", "bind", SMBUS])
        .exec(
            "bind_after_refusals",
            &["p2pmem", "--json", "provider", "bind", R],
        )
        .exec("unbind", &["p2pmem", "--json", "provider", "unbind", S])
        .exec("after_unbind_p2pmem", &["test", "-d", &sysfs(S, "p2pmem")])
        .exec(
            "after_unbind_override",
            &["cat", &sysfs(S, "driver_override")],
        )
        .exec("rebind", &["p2pmem", "--json", "provider", "bind", S])
        .exec(
            "unbind_other",
            &["p2pmem", "provider", "unbind", "0000:03:00.0"],
        )
        .step(
            "holder",
            Step::Spawn {
                argv: [
                    "p2pmem",
                    "agent",
                    "hold-p2pmem",
                    "--provider",
                    S,
                    "--len",
                    "2M",
                    "--until",
                    "/tmp/go",
                ]
                .map(Arg::from)
                .to_vec(),
                ready: Some("mapped".into()),
                wait_ms: 10_000,
            },
        )
        .exec("available", &["cat", &sysfs(S, "p2pmem/available")])
        .exec("rmmod", &["timeout", "60", "rmmod", "p2pmem_pci"])
        .exec("after_rmmod_p2pmem", &["test", "-d", &sysfs(S, "p2pmem")])
        .exec(
            "after_rmmod_module",
            &["test", "-d", "/sys/module/p2pmem_pci"],
        )
        .step(
            "go",
            Step::WriteFile {
                path: "/tmp/go".into(),
                text: String::new(),
            },
        )
        .step(
            "hold",
            Step::Join {
                spawn: "holder".into(),
                wait_ms: 60_000,
            },
        )
        .exec("reload", &["insmod", "/lib/modules/p2pmem_pci.ko"])
        .exec("reloaded", &["cat", &sysfs(S, "p2pmem/size")])
        .step("dmesg", Step::Dmesg);
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

    /// The bind report a `provider bind --json` step printed.
    fn bind(&self, name: &str) -> BindReport {
        let s = self.ok(name);
        serde_json::from_str(&s.stdout)
            .unwrap_or_else(|e| panic!("{name}: not a bind report ({e}): {}", s.stdout))
    }

    fn hash(&self, name: &str) -> &str {
        &self.0.hash(name).unwrap_or_else(|e| panic!("{e}")).sha256
    }
}

fn guest() -> &'static Guest {
    static GUEST: OnceLock<Guest> = OnceLock::new();
    GUEST.get_or_init(|| {
        let run = lab_common::shared_guest("lab_provider", || {
            lab_common::run_plan("provider", None, &plan())
        });
        Guest(run)
    })
}

const MIB: u64 = 1 << 20;

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn missing_module_and_foreign_driver_are_clear_errors() {
    let g = guest();
    assert_eq!(
        g.step("loaded_at_start").exit,
        Some(1),
        "loaded before any bind"
    );
    let m = g.step("module_missing");
    assert_eq!(m.exit, Some(2), "{}", m.stderr);
    assert!(
        m.stderr
            .contains("the p2pmem_pci module is not loaded and p2pmem_pci.ko was not found"),
        "{}",
        m.stderr
    );
    assert!(
        m.stderr.contains("/nonexistent/p2pmem_pci.ko"),
        "{}",
        m.stderr
    );
    let o = g.step("other_driver");
    assert_eq!(o.exit, Some(2), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("0000:03:00.0 is bound to the nvme driver, not p2pmem_pci"),
        "{}",
        o.stderr
    );
    let u = g.step("unbind_other");
    assert_eq!(u.exit, Some(2));
    assert!(u.stderr.contains("(its driver is nvme)"), "{}", u.stderr);
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn bind_loads_the_module_and_publishes_the_whole_bar() {
    let g = guest();
    let b = g.bind("bind");
    assert_eq!(
        b.module_loaded.as_deref(),
        Some(std::path::Path::new("/lib/modules/p2pmem_pci.ko")),
        "{b:?}"
    );
    // The module binds every ivshmem by ID as it loads.
    assert_eq!(b.action, BindAction::AlreadyBound, "{b:?}");
    assert_eq!(b.size, Some(64 * MIB), "{b:?}");
    assert_eq!(b.published, Some(true), "{b:?}");
    let region = b.region.expect("a region");
    assert_eq!(
        (region.bar, region.offset, region.bar_len),
        (2, 0, 64 * MIB)
    );
    assert_eq!(
        g.ok("files").stdout.split_whitespace().collect::<Vec<_>>(),
        ["67108864", "1"]
    );
    // The model's verdicts: the two NVMe on its switch, not the one on another root port.
    let verdicts: Vec<(String, Option<bool>)> = b
        .clients
        .iter()
        .map(|c| (c.bdf.to_string(), c.supported))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("0000:03:00.0".to_string(), Some(true)),
            ("0000:04:00.0".to_string(), Some(true)),
            ("0000:06:00.0".to_string(), Some(false)),
        ]
    );
    let text = &g.ok("bind_text").stdout;
    assert!(
        text.contains("0000:05:00.0 already bound to p2pmem_pci"),
        "{text}"
    );
    assert!(
        text.contains("p2pmem/: size 64.0 MiB, available 64.0 MiB, published"),
        "{text}"
    );
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn o_direct_copy_through_the_driver_provider_verifies() {
    let g = guest();
    let out = &g.ok("copy").stdout;
    let c: CopyDocument =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("not a copy report ({e}): {out}"));
    assert_eq!(c.via, "0000:05:00.0", "{c:?}");
    assert_eq!(c.verified, Some(true), "{c:?}");
    assert_eq!(c.report.bytes, 2 * MIB, "{c:?}");
    assert_eq!(c.report.tail_bytes_via_host, 0, "{c:?}");
    assert_eq!(g.hash("copy_src"), g.hash("copy_dst"));
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn a_chosen_sub_range_is_published() {
    let g = guest();
    let s = g.bind("subrange");
    assert_eq!(s.action, BindAction::Rebound, "{s:?}");
    let r = s.region.expect("a region");
    assert_eq!((r.offset, r.size, r.bar_len), (2 * MIB, 4 * MIB, 16 * MIB));
    assert_eq!(g.ok("subrange_size").stdout.trim(), (4 * MIB).to_string());
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn the_driver_refuses_unusable_bars_and_says_why() {
    let g = guest();
    for (step, errno, why) in [
        (
            "too_small",
            "EINVAL",
            "p2pmem_pci 0000:07:00.0: refused: BAR 0: 0x100 bytes is too small for ZONE_DEVICE memory (at least 0x200000)",
        ),
        (
            "misaligned",
            "EINVAL",
            "p2pmem_pci 0000:07:00.0: refused: BAR 2: range 0x",
        ),
        (
            "io_bar",
            "EINVAL",
            "p2pmem_pci 0000:00:1f.3: refused: BAR 4 is an I/O port BAR; p2pmem needs a memory BAR",
        ),
        (
            "no_prefetchable",
            "ENODEV",
            "p2pmem_pci 0000:00:1f.3: refused: no prefetchable memory BAR to publish by default",
        ),
    ] {
        let s = g.step(step);
        assert_eq!(s.exit, Some(1), "{step}: {}", s.stderr);
        assert!(
            s.stderr.contains("the kernel refused to bind") && s.stderr.contains(errno),
            "{step}: {}",
            s.stderr
        );
        assert!(
            s.stderr.contains(&format!("kernel: {why}")),
            "{step}: {}",
            s.stderr
        );
    }
    assert!(g
        .step("misaligned")
        .stderr
        .contains("is misaligned for ZONE_DEVICE memory"));
    // A refused bind leaves the device bindable by any driver again.
    assert_eq!(g.ok("io_bar_override").stdout.trim(), "(null)");
    // And the device can still be bound with a usable choice.
    let b = g.bind("bind_after_refusals");
    assert_eq!(b.action, BindAction::Bound, "{b:?}");
    assert_eq!(b.size, Some(16 * MIB), "{b:?}");
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn unbind_removes_p2pmem_and_rebind_works() {
    let g = guest();
    // `provider unbind --json` is the command's own JSON output, checked as such.
    let u: Value = serde_json::from_str(&g.ok("unbind").stdout).expect("unbind JSON");
    assert_eq!(u["action"], "unbound");
    assert_eq!(u["region"]["size"], 64 * MIB);
    assert_eq!(
        g.step("after_unbind_p2pmem").exit,
        Some(1),
        "p2pmem/ still there"
    );
    assert_eq!(g.ok("after_unbind_override").stdout.trim(), "(null)");
    let r = g.bind("rebind");
    assert_eq!(r.action, BindAction::Bound, "{r:?}");
    assert_eq!(r.size, Some(64 * MIB), "{r:?}");
    assert_eq!(r.published, Some(true), "{r:?}");
}

/// What unloading the driver does to a process that holds a mapping of its p2pmem: the
/// unload completes at once (the device-managed teardown removes `allocate`, which
/// unmaps every user mapping of it, so no page reference is left to wait for),
/// `p2pmem/` goes, and the holder's next CPU access to the mapping raises SIGBUS, in
/// the guard process that runs every such access: the holder itself survives, reports
/// `DeviceMemoryGone` and exits with status 1. Loading the module again publishes the
/// device again.
#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn unloading_while_mapped_unmaps_and_the_holder_reports_the_memory_gone() {
    let g = guest();
    assert_eq!(g.ok("available").stdout.trim(), (62 * MIB).to_string());
    g.ok("rmmod");
    assert_eq!(
        g.step("after_rmmod_p2pmem").exit,
        Some(1),
        "p2pmem/ still there"
    );
    assert_eq!(
        g.step("after_rmmod_module").exit,
        Some(1),
        "module still loaded"
    );
    let holder = g.step("hold");
    let hold = &holder.stdout;
    // The fill and read-back before the unload went through the guard process too.
    assert!(
        hold.contains("mapped 2097152 bytes of 0000:05:00.0 p2pmem, first bytes [a5, a5,"),
        "{hold}"
    );
    assert!(hold.contains("touching"), "{hold}");
    assert!(
        !hold.contains("read ["),
        "the access after removal returned: {hold}"
    );
    assert!(
        hold.contains(
            "gone: the p2pmem of 0000:05:00.0 mapped from \
             /sys/bus/pci/devices/0000:05:00.0/p2pmem/allocate is gone: a CPU access to it \
             raised SIGBUS. The file no longer exists"
        ),
        "{hold}"
    );
    // Status 1 (the memory is gone), not killed by SIGBUS.
    assert_eq!(
        (holder.exit, holder.signal),
        (Some(1), None),
        "{}",
        holder.stderr
    );
    g.ok("reload");
    assert_eq!(g.ok("reloaded").stdout.trim(), (64 * MIB).to_string());
    let dmesg = g.0.dmesg_lines("dmesg").expect("dmesg step").join("\n");
    for bad in ["BUG", "WARNING", "Oops", "hung"] {
        assert!(!dmesg.contains(bad), "kernel log has {bad}:\n{dmesg}");
    }
    assert!(dmesg.contains("p2pmem_pci: unregistered"), "{dmesg}");
}

/// The kernel's rules apply to the driver's providers exactly as to CMBs, and the model
/// predicts every pair: under AMD family 15 only the same-switch pairs work; under Zen
/// everything does.
#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn kernel_rules_apply_and_the_model_predicts_them() {
    let (pairs, max, code) = lab_common::demo("provider", Some("max"));
    assert_eq!(code, Some(0), "demo under max failed");
    assert_eq!(max.pairs, 9, "{max:?}");
    assert_eq!(max.agreed, 9, "{max:?}");
    assert_eq!(max.kernel_ok, 2, "{max:?}");
    let ok: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|p| p.kernel == Some(true))
        .map(|p| (p.provider.as_str(), p.client.as_str()))
        .collect();
    assert_eq!(
        ok,
        [
            ("0000:05:00.0", "0000:03:00.0"),
            ("0000:05:00.0", "0000:04:00.0")
        ]
    );
    // The errno of a refused O_DIRECT depends on the line (EREMOTEIO to 6.16, EINVAL after).
    let kernel: p2pmem_model::kernel_version::KernelVersion =
        max.kernel.parse().expect("the demo names its kernel");
    let refused = p2pmem_model::errno::o_direct_not_supported(kernel).map(|e| e.name);
    for p in pairs.iter().filter(|p| p.kernel == Some(false)) {
        assert_eq!(p.read.as_deref(), refused, "{p:?}");
        // The pair's window of the kernel log may also hold late boot lines (the TSC
        // calibration, once, under load): the refusal must be among them.
        assert!(
            p.kernel_log
                .iter()
                .any(|l| l.contains("do not share an upstream bridge or whitelisted host bridge")),
            "{p:?}"
        );
    }
    assert_eq!(
        max.driver_providers,
        ["0000:00:08.0", "0000:05:00.0", "0000:07:00.0"]
    );
    assert_eq!(max.driver_copy_verified, Some(true), "{}", max.driver_copy);
    let report = max.driver_copy_report.as_ref().expect("a copy report");
    assert_eq!(report.via, "0000:05:00.0");

    let (_, zen, code) = lab_common::demo("provider", Some("max,family=23"));
    assert_eq!(code, Some(0), "demo under Zen failed");
    assert_eq!(zen.pairs, 9, "{zen:?}");
    assert_eq!(zen.agreed, 9, "{zen:?}");
    assert_eq!(zen.kernel_ok, 9, "{zen:?}");
    assert_eq!(zen.driver_copy_verified, Some(true), "{}", zen.driver_copy);
}
