//! Lab tier: the `p2pmem_pci` provider driver (a Rust kernel module, `driver/p2pmem_pci/`)
//! and `p2pmem provider bind|unbind`, on the real 6.12 kernel, in three boots of the
//! `provider` topology: 05:00.0 shmS (ivshmem, 64 MiB) on a switch with 03:00.0 swA and
//! 04:00.0 swB (NVMe), 06:00.0 rpC (NVMe) on another root port, 07:00.0 shmR (ivshmem,
//! 16 MiB) on a third, 00:08.0 shmB (ivshmem, 16 MiB) on the root bus; the q35 SMBus
//! controller 00:1f.3 (no driver in the lab kernel) has an I/O BAR 4.
//!
//! Boot 1 (`lab run`) walks the life cycle: the clear errors (module missing, a device of
//! another driver), bind (the module loads and binds every ivshmem; `p2pmem/` has the
//! BAR's size and is published), an O_DIRECT NVMe copy through it that verifies, a
//! sub-range, the driver's refusals (BAR too small, misaligned range, I/O BAR, no
//! prefetchable BAR), unbind and rebind, and unloading the module while a process holds
//! a mapping of its p2pmem (its next access is an error it reports, not a SIGBUS
//! death). Boots 2 and 3 (`lab demo` under `-cpu max` and under a Zen
//! CPU) probe every provider/client pair against the model.

#![cfg(test)]

mod lab_common;
#[path = "lab_common/transcript.rs"]
mod transcript;

use serde_json::Value;
use std::sync::OnceLock;
use transcript::Transcript;

/// The guest's job. `step NAME CMD...` prints `@@step NAME rc=N`, the command's stdout,
/// `@@stderr`, its stderr and `@@end`; `hash NAME DEV OFF LEN` prints `@@hash NAME
/// <sha256>` of LEN bytes at OFF (multiples of 1 MiB).
const SCRIPT: &str = r#"
step() { n=$1; shift; "$@" > /tmp/o 2> /tmp/e; rc=$?; echo "@@step $n rc=$rc"; cat /tmp/o; echo; echo "@@stderr"; cat /tmp/e; echo; echo "@@end"; }
blk() { for b in /sys/block/nvme*n1; do case "$(readlink -f $b/device/device)" in *$1) basename $b;; esac; done; }
hash() { echo "@@hash $1 $(dd if=/dev/$2 bs=1048576 skip=$(($3 / 1048576)) count=$(($4 / 1048576)) 2>/dev/null | sha256sum | cut -d' ' -f1)"; }
A=$(blk 0000:03:00.0); B=$(blk 0000:04:00.0)
S=0000:05:00.0; R=0000:07:00.0; RB=0000:00:08.0; SMBUS=0000:00:1f.3
M=1048576
step loaded_at_start sh -c '[ -d /sys/module/p2pmem_pci ] && echo loaded || echo not-loaded'
step module_missing p2pmem provider bind $S --module /nonexistent/p2pmem_pci.ko
step other_driver p2pmem provider bind 0000:03:00.0
step bind p2pmem --json provider bind $S
step bind_text p2pmem provider bind $S
step files sh -c "cat /sys/bus/pci/devices/$S/p2pmem/size /sys/bus/pci/devices/$S/p2pmem/published"
step copy p2pmem --json copy /dev/$A /dev/$B --via $S --require-p2p --verify --length 2M --dst-offset 2M
hash copy_src $A 0 $((2 * M)); hash copy_dst $B $((2 * M)) $((2 * M))
step subrange p2pmem --json provider bind $RB --bar 2 --offset 2M --size 4M
step subrange_size cat /sys/bus/pci/devices/$RB/p2pmem/size
step too_small p2pmem provider bind $R --bar 0
step misaligned p2pmem provider bind $R --offset 4K
step io_bar p2pmem provider bind $SMBUS --bar 4
step io_bar_override cat /sys/bus/pci/devices/$SMBUS/driver_override
step no_prefetchable p2pmem provider bind $SMBUS
step bind_after_refusals p2pmem --json provider bind $R
step unbind p2pmem --json provider unbind $S
step after_unbind sh -c "[ -d /sys/bus/pci/devices/$S/p2pmem ] && echo present || echo gone; cat /sys/bus/pci/devices/$S/driver_override"
step rebind p2pmem --json provider bind $S
step unbind_other p2pmem provider unbind 0000:03:00.0
p2pmem agent hold-p2pmem --provider $S --len 2M --until /tmp/go > /tmp/hold.out 2>&1 &
hp=$!
i=0; while ! grep -q mapped /tmp/hold.out && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
step available cat /sys/bus/pci/devices/$S/p2pmem/available
step rmmod timeout 60 rmmod p2pmem_pci
step after_rmmod sh -c "[ -d /sys/bus/pci/devices/$S/p2pmem ] && echo p2pmem-present || echo p2pmem-gone; [ -d /sys/module/p2pmem_pci ] && echo module-loaded || echo module-gone"
touch /tmp/go
wait $hp
echo "@@holder rc=$?"
step hold cat /tmp/hold.out
step reload insmod /lib/modules/p2pmem_pci.ko
step reloaded cat /sys/bus/pci/devices/$S/p2pmem/size
step dmesg dmesg
exit 0
"#;

/// The provider script's transcript, plus the holder's exit status (`@@holder rc=N`).
struct Guest {
    t: Transcript,
    holder_rc: Option<i32>,
}

impl std::ops::Deref for Guest {
    type Target = Transcript;
    fn deref(&self) -> &Transcript {
        &self.t
    }
}

fn parse(stdout: &str) -> Guest {
    let holder_rc = stdout
        .lines()
        .find_map(|l| l.strip_prefix("@@holder rc="))
        .and_then(|rc| rc.trim().parse().ok());
    Guest {
        t: Transcript::parse(stdout),
        holder_rc,
    }
}

fn guest() -> &'static Guest {
    static GUEST: OnceLock<Guest> = OnceLock::new();
    GUEST.get_or_init(|| parse(&lab_common::guest_sh("provider", SCRIPT)))
}

fn demo(cpu: &str) -> (Vec<Value>, Value) {
    let out = lab_common::p2pmem(&[
        "--json",
        "lab",
        "demo",
        "--topology",
        "provider",
        "--cpu",
        cpu,
    ]);
    assert_eq!(out.status.code(), Some(0), "demo under {cpu} failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let summary = lines.pop().expect("no output");
    (lines, summary)
}

const MIB: u64 = 1 << 20;

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn missing_module_and_foreign_driver_are_clear_errors() {
    let g = guest();
    assert_eq!(g.ok("loaded_at_start").out.trim(), "not-loaded");
    let m = g.step("module_missing");
    assert_eq!(m.rc, 2, "{}", m.err);
    assert!(
        m.err
            .contains("the p2pmem_pci module is not loaded and p2pmem_pci.ko was not found"),
        "{}",
        m.err
    );
    assert!(m.err.contains("/nonexistent/p2pmem_pci.ko"), "{}", m.err);
    let o = g.step("other_driver");
    assert_eq!(o.rc, 2, "{}", o.err);
    assert!(
        o.err
            .contains("0000:03:00.0 is bound to the nvme driver, not p2pmem_pci"),
        "{}",
        o.err
    );
    let u = g.step("unbind_other");
    assert_eq!(u.rc, 2);
    assert!(u.err.contains("(its driver is nvme)"), "{}", u.err);
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn bind_loads_the_module_and_publishes_the_whole_bar() {
    let g = guest();
    let b = g.ok("bind").json();
    assert_eq!(b["module_loaded"], "/lib/modules/p2pmem_pci.ko", "{b}");
    // The module binds every ivshmem by ID as it loads.
    assert_eq!(b["action"], "already_bound", "{b}");
    assert_eq!(b["size"], 64 * MIB, "{b}");
    assert_eq!(b["published"], true, "{b}");
    assert_eq!(b["region"]["bar"], 2, "{b}");
    assert_eq!(b["region"]["offset"], 0, "{b}");
    assert_eq!(b["region"]["bar_len"], 64 * MIB, "{b}");
    assert_eq!(
        g.ok("files").out.split_whitespace().collect::<Vec<_>>(),
        ["67108864", "1"]
    );
    // The model's verdicts: the two NVMe on its switch, not the one on another root port.
    let verdicts: Vec<(String, Value)> = b["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["bdf"].as_str().unwrap().to_string(),
                c["supported"].clone(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("0000:03:00.0".to_string(), Value::Bool(true)),
            ("0000:04:00.0".to_string(), Value::Bool(true)),
            ("0000:06:00.0".to_string(), Value::Bool(false)),
        ]
    );
    let text = &g.ok("bind_text").out;
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
    let c = g.ok("copy").json();
    assert_eq!(c["via"], "0000:05:00.0", "{c}");
    assert_eq!(c["verified"], true, "{c}");
    assert_eq!(c["bytes"], 2 * MIB, "{c}");
    assert_eq!(c["tail_bytes_via_host"], 0, "{c}");
    assert_eq!(g.hash("copy_src"), g.hash("copy_dst"));
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn a_chosen_sub_range_is_published() {
    let g = guest();
    let s = g.ok("subrange").json();
    assert_eq!(s["action"], "rebound", "{s}");
    assert_eq!(s["region"]["offset"], 2 * MIB, "{s}");
    assert_eq!(s["region"]["size"], 4 * MIB, "{s}");
    assert_eq!(s["region"]["bar_len"], 16 * MIB, "{s}");
    assert_eq!(g.ok("subrange_size").out.trim(), (4 * MIB).to_string());
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
        assert_eq!(s.rc, 1, "{step}: {}", s.err);
        assert!(
            s.err.contains("the kernel refused to bind") && s.err.contains(errno),
            "{step}: {}",
            s.err
        );
        assert!(s.err.contains(&format!("kernel: {why}")), "{step}: {}", s.err);
    }
    assert!(g
        .step("misaligned")
        .err
        .contains("is misaligned for ZONE_DEVICE memory"));
    // A refused bind leaves the device bindable by any driver again.
    assert_eq!(g.ok("io_bar_override").out.trim(), "(null)");
    // And the device can still be bound with a usable choice.
    let b = g.ok("bind_after_refusals").json();
    assert_eq!(b["action"], "bound", "{b}");
    assert_eq!(b["size"], 16 * MIB, "{b}");
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn unbind_removes_p2pmem_and_rebind_works() {
    let g = guest();
    let u = g.ok("unbind").json();
    assert_eq!(u["action"], "unbound");
    assert_eq!(u["region"]["size"], 64 * MIB);
    let after: Vec<String> = g
        .ok("after_unbind")
        .out
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(after, ["gone", "(null)"]);
    let r = g.ok("rebind").json();
    assert_eq!(r["action"], "bound", "{r}");
    assert_eq!(r["size"], 64 * MIB, "{r}");
    assert_eq!(r["published"], true, "{r}");
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
    assert_eq!(g.ok("available").out.trim(), (62 * MIB).to_string());
    g.ok("rmmod");
    let after: Vec<&str> = g.ok("after_rmmod").out.lines().collect();
    assert_eq!(after, ["p2pmem-gone", "module-gone"]);
    let hold = &g.ok("hold").out;
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
    // Status 1 (the memory is gone), not 135 (128 + SIGBUS: killed).
    assert_eq!(g.holder_rc, Some(1), "{}", g.stdout);
    g.ok("reload");
    assert_eq!(g.ok("reloaded").out.trim(), (64 * MIB).to_string());
    let dmesg = &g.ok("dmesg").out;
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
    let (pairs, max) = demo("max");
    assert_eq!(max["pairs"], 9, "{max}");
    assert_eq!(max["agreed"], 9, "{max}");
    assert_eq!(max["kernel_ok"], 2, "{max}");
    let ok: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|p| p["kernel"] == true)
        .map(|p| {
            (
                p["provider"].as_str().unwrap(),
                p["client"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ok,
        [
            ("0000:05:00.0", "0000:03:00.0"),
            ("0000:05:00.0", "0000:04:00.0")
        ]
    );
    for p in pairs.iter().filter(|p| p["kernel"] == false) {
        assert_eq!(p["read"], "EREMOTEIO", "{p}");
        assert!(
            p["kernel_log"][0].as_str().is_some_and(
                |l| l.contains("do not share an upstream bridge or whitelisted host bridge")
            ),
            "{p}"
        );
    }
    assert_eq!(
        max["driver_providers"],
        serde_json::json!(["0000:00:08.0", "0000:05:00.0", "0000:07:00.0"])
    );
    assert_eq!(max["driver_copy_verified"], true, "{}", max["driver_copy"]);
    assert_eq!(max["driver_copy_report"]["via"], "0000:05:00.0");

    let (_, zen) = demo("max,family=23");
    assert_eq!(zen["pairs"], 9, "{zen}");
    assert_eq!(zen["agreed"], 9, "{zen}");
    assert_eq!(zen["kernel_ok"], 9, "{zen}");
    assert_eq!(zen["driver_copy_verified"], true, "{}", zen["driver_copy"]);
}
