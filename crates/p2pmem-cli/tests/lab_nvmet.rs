//! Lab tier: `p2pmem nvmet` against the lab kernel's real configfs (6.12, nvmet built
//! in), in one boot of the `default` topology under `-cpu max` (AMD family 15). Every
//! write the pre-flight judges is made with `--write-anyway`, so the kernel answers and
//! the tool reports whether its prediction matched: an explicit provider on the same
//! switch (enable succeeds), one on another root port (EINVAL), `auto`, a BDF without
//! p2pmem and one that does not exist (ENODEV), a write while enabled (EBUSY). Then a
//! loop-transport connect that does I/O, the connected-host guard, and save → wipe →
//! restore giving an identical configuration.

#![cfg(test)]

mod lab_common;

use serde_json::Value;
use std::collections::BTreeMap;

const LAB: &str = "lab tier: boots the lab kernel under QEMU; scripts/test runs it";

/// The guest's job. Each `step NAME CMD...` prints `@@step NAME rc=N`, the command's
/// stdout, `@@stderr`, its stderr and `@@end`.
const SCRIPT: &str = r#"
step() { n=$1; shift; "$@" > /tmp/o 2> /tmp/e; rc=$?; echo "@@step $n rc=$rc"; cat /tmp/o; echo; echo "@@stderr"; cat /tmp/e; echo; echo "@@end"; }
blk() { for b in /sys/block/nvme*n1; do case "$(readlink -f $b/device/device)" in *$1) basename $b;; esac; done; }
A=$(blk 0000:04:00.0); B=$(blk 0000:05:00.0); C=$(blk 0000:06:00.1)
N=nqn.2026-11.io.p2pmem:lab
HID=0c6f4a2e-9a8b-4c1d-8e2f-3a4b5c6d7e8f
H=nqn.2014-08.org.nvmexpress:uuid:$HID
NS=/sys/kernel/config/nvmet/subsystems/$N/namespaces
step subsys p2pmem --json nvmet subsys add $N
step any_host cat /sys/kernel/config/nvmet/subsystems/$N/attr_allow_any_host
step ns_add p2pmem nvmet ns add $N 1 $A
step ns_add2 p2pmem nvmet ns add $N 2 $B
step ns_add3 p2pmem nvmet ns add $N 3 $C
step same_switch_set p2pmem --json nvmet ns set-p2pmem $N 1 0000:03:00.0 --write-anyway
step same_switch_enable p2pmem --json nvmet ns enable $N 1 --write-anyway
step root_port_set p2pmem --json nvmet ns set-p2pmem $N 2 0000:03:00.0 --write-anyway
step root_port_refused p2pmem --json nvmet ns enable $N 2
step root_port_enable p2pmem --json nvmet ns enable $N 2 --write-anyway
step auto_set p2pmem --json nvmet ns set-p2pmem $N 3 auto --write-anyway
step auto_enable p2pmem --json nvmet ns enable $N 3 --write-anyway
step no_p2pmem p2pmem --json nvmet ns set-p2pmem $N 2 0000:06:00.1 --write-anyway
step no_device p2pmem --json nvmet ns set-p2pmem $N 2 0000:09:00.0 --write-anyway
step busy_refused p2pmem --json nvmet ns set-p2pmem $N 1 auto
step busy p2pmem --json nvmet ns set-p2pmem $N 1 auto --write-anyway
step reenable p2pmem --json nvmet ns set-p2pmem $N 1 0000:04:00.0 --reenable
step settings cat $NS/1/p2pmem $NS/1/enable $NS/2/p2pmem $NS/2/enable $NS/3/p2pmem $NS/3/enable
step check p2pmem --json nvmet check
step port_loop p2pmem nvmet port add 1 --trtype loop
step link_loop p2pmem nvmet port link 1 $N
step host p2pmem nvmet host allow $N $H
ip link set lo up
step port_tcp p2pmem nvmet port add 2 --trtype tcp --traddr 127.0.0.1
step link_tcp p2pmem nvmet port link 2 $N
step connect sh -c "echo transport=loop,nqn=$N,hostnqn=$H,hostid=$HID > /dev/nvme-fabrics"
sleep 1
L=""; for b in /sys/block/nvme*n*; do [ "$(cat $b/device/transport 2>/dev/null)" = loop ] && [ "$(cat $b/nsid)" = 1 ] && L=$(basename $b); done
step loop_read sh -c "head -c 30 /dev/$L"
step loop_write sh -c "echo lab-nvmet-loop-write-0123456789 | dd of=/dev/$L bs=512 seek=100 count=1 conv=sync oflag=direct 2>/dev/null && dd if=/dev/$A bs=512 skip=100 count=1 iflag=direct 2>/dev/null | head -c 31"
step status p2pmem --json nvmet status
step rm_refused p2pmem --json nvmet subsys rm $N
step save p2pmem nvmet save /tmp/s1.json
echo '{"format":"p2pmem-nvmet","version":1}' > /tmp/empty.json
step wipe p2pmem --json nvmet restore /tmp/empty.json --force
step wiped sh -c "find /sys/kernel/config/nvmet/subsystems /sys/kernel/config/nvmet/ports /sys/kernel/config/nvmet/hosts -mindepth 1 -maxdepth 1 | wc -l"
step restore p2pmem --json nvmet restore /tmp/s1.json
step save2 p2pmem nvmet save /tmp/s2.json
step identical cmp /tmp/s1.json /tmp/s2.json
step restore2 p2pmem --json nvmet restore /tmp/s1.json
step saved cat /tmp/s1.json
step dmesg dmesg
exit 0
"#;

struct Step {
    rc: i32,
    out: String,
    err: String,
}

impl Step {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.out, self.err))
    }
}

fn parse(stdout: &str) -> BTreeMap<String, Step> {
    let mut steps = BTreeMap::new();
    for chunk in stdout.split("@@step ").skip(1) {
        let (head, rest) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let (name, rc) = head.split_once(" rc=").unwrap();
        let (out, rest) = rest.split_once("\n@@stderr\n").unwrap();
        let err = rest.split("\n@@end").next().unwrap_or_default();
        steps.insert(
            name.to_string(),
            Step {
                rc: rc.trim().parse().unwrap(),
                out: out.to_string(),
                err: err.to_string(),
            },
        );
    }
    steps
}

/// A write judged by the kernel: the answer expected, and the prediction matched it.
fn judged(steps: &BTreeMap<String, Step>, name: &str, want: Option<&str>) -> Value {
    let s = &steps[name];
    let v = s.json();
    assert_eq!(
        v["kernel_errno"].as_str(),
        want,
        "{name}: the kernel's answer\n{}",
        s.out
    );
    assert_eq!(
        v["predicted_errno"].as_str(),
        want,
        "{name}: the prediction"
    );
    assert_eq!(v["prediction_matched"], true, "{name}");
    assert_eq!(s.rc, i32::from(want.is_some()), "{name}: exit status");
    v
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn nvmet_p2pmem_predictions_match_the_kernel_and_the_target_round_trips() {
    let stdout = lab_common::guest_sh("default", SCRIPT);
    let steps = parse(&stdout);
    assert!(
        steps.contains_key("dmesg"),
        "{LAB}: the script did not finish\n{stdout}"
    );
    let dmesg = &steps["dmesg"].out;
    let lines = |v: &Value| -> Vec<String> {
        v["preflight"]["kernel_log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect()
    };

    // Never sets attr_allow_any_host unless asked.
    assert_eq!(steps["subsys"].rc, 0);
    assert_eq!(steps["any_host"].out.trim(), "0");

    // Same switch: the write and enable succeed, as predicted.
    judged(&steps, "same_switch_set", None);
    let v = judged(&steps, "same_switch_enable", None);
    assert_eq!(v["preflight"]["providers"][0]["bdf"], "0000:03:00.0");

    // Another root port under -cpu max: EINVAL, with the kernel's own line. Without
    // --write-anyway nothing is written.
    judged(&steps, "root_port_set", None);
    assert_eq!(steps["root_port_refused"].rc, 1);
    assert_eq!(
        steps["root_port_refused"].json()["changed"],
        serde_json::json!([])
    );
    let v = judged(&steps, "root_port_enable", Some("EINVAL"));
    let predicted = lines(&v);
    assert_eq!(
        predicted,
        ["nvme 0000:05:00.0: cannot be used for peer-to-peer DMA as the client and provider (0000:03:00.0) do not share an upstream bridge or whitelisted host bridge"]
    );
    assert!(dmesg.contains(&predicted[0]), "{dmesg}");

    // auto: the sibling function's CMB.
    judged(&steps, "auto_set", None);
    let v = judged(&steps, "auto_enable", None);
    assert_eq!(v["preflight"]["providers"][0]["bdf"], "0000:06:00.0");

    // A BDF without p2pmem, and one that does not exist: ENODEV, lines as logged.
    for (name, line) in [
        (
            "no_p2pmem",
            "nvme 0000:06:00.1: PCI device has no peer-to-peer memory: 0000:06:00.1",
        ),
        ("no_device", "pci-p2pdma: No such PCI device: 0000:09:00.0"),
    ] {
        let v = judged(&steps, name, Some("ENODEV"));
        assert_eq!(lines(&v), [line], "{name}");
        assert!(dmesg.contains(line), "{name}: {line:?} not logged\n{dmesg}");
    }

    // A write while enabled: refused before writing, and EBUSY from the kernel.
    assert_eq!(steps["busy_refused"].rc, 1);
    assert_eq!(steps["busy_refused"].json()["predicted_errno"], "EBUSY");
    judged(&steps, "busy", Some("EBUSY"));
    // --reenable: disable, write, enable.
    let v = steps["reenable"].json();
    assert_eq!(steps["reenable"].rc, 0, "{}", steps["reenable"].err);
    let order: Vec<(&str, &str)> = v["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["attr"].as_str().unwrap(), s["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        order,
        [("enable", "0"), ("p2pmem", "0000:04:00.0"), ("enable", "1")]
    );
    assert_eq!(
        steps["settings"].out.split_whitespace().collect::<Vec<_>>(),
        ["0000:04:00.0", "1", "0000:03:00.0", "0", "1", "1"]
    );

    // The pre-flight of the whole target agrees with what the kernel accepted.
    let check = steps["check"].json();
    for ns in check["namespaces"].as_array().unwrap() {
        assert_eq!(
            ns["enabled"].as_bool(),
            Some(ns["enable"]["result"] != "fails"),
            "{ns}"
        );
    }

    // Loop transport: connect, read the backing device's pattern, write through it.
    for s in [
        "port_loop",
        "link_loop",
        "host",
        "port_tcp",
        "link_tcp",
        "connect",
    ] {
        assert_eq!(steps[s].rc, 0, "{s}: {}", steps[s].err);
    }
    assert_eq!(
        steps["loop_read"].out.trim_end(),
        "p2pmem-lab serial=swB sector=0"
    );
    assert_eq!(
        steps["loop_write"].out.trim_end(),
        "lab-nvmet-loop-write-0123456789"
    );
    assert!(dmesg.contains("nvmet: creating nvm controller"), "{dmesg}");
    assert!(
        !dmesg.contains("using p2pmem on"),
        "loop and tcp never use p2pmem"
    );
    let status = steps["status"].json();
    assert_eq!(
        status["connections"]["local_loop"][0],
        "nqn.2026-11.io.p2pmem:lab"
    );
    assert_eq!(status["subsystems"][0]["namespaces"][0]["in_use"], "never");

    // The connected host blocks removal.
    assert_eq!(steps["rm_refused"].rc, 1);
    assert_eq!(steps["rm_refused"].json()["blocked"][0]["connected"], "yes");

    // save -> wipe -> restore: identical, and a second restore changes nothing.
    assert_eq!(steps["save"].rc, 0);
    assert_eq!(steps["wipe"].rc, 0, "{}", steps["wipe"].err);
    assert_eq!(steps["wiped"].out.trim(), "0");
    assert_eq!(steps["restore"].rc, 0, "{}", steps["restore"].err);
    let restored = steps["restore"].json();
    assert_eq!(restored["failed"], Value::Null);
    assert!(restored["preflight"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["enable"]["result"] == "passes"));
    assert_eq!(steps["identical"].rc, 0, "saved files differ");
    let again = steps["restore2"].json();
    assert_eq!(
        (steps["restore2"].rc, again["changed"].clone()),
        (0, serde_json::json!([]))
    );
    let saved: Value = serde_json::from_str(&steps["saved"].out).unwrap();
    assert_eq!(
        saved["subsystems"][0]["namespaces"][0]["p2pmem"],
        "0000:04:00.0"
    );
    assert_eq!(saved["subsystems"][0]["allow_any_host"], false);
}

/// Under a Zen CPU the host bridge forwards P2P: the provider on another root port that
/// family 15 refuses is accepted, and predicted so.
#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn nvmet_cross_root_port_provider_is_accepted_under_zen() {
    let script = r#"
step() { n=$1; shift; "$@" > /tmp/o 2> /tmp/e; rc=$?; echo "@@step $n rc=$rc"; cat /tmp/o; echo; echo "@@stderr"; cat /tmp/e; echo; echo "@@end"; }
blk() { for b in /sys/block/nvme*n1; do case "$(readlink -f $b/device/device)" in *$1) basename $b;; esac; done; }
N=nqn.2026-11.io.p2pmem:zen
p2pmem nvmet subsys add $N > /dev/null
p2pmem nvmet ns add $N 1 $(blk 0000:05:00.0) > /dev/null
step set p2pmem --json nvmet ns set-p2pmem $N 1 0000:03:00.0 --write-anyway
step enable p2pmem --json nvmet ns enable $N 1 --write-anyway
step cpu grep -m1 "cpu family" /proc/cpuinfo
exit 0
"#;
    let out = lab_common::p2pmem(&[
        "lab",
        "run",
        "--topology",
        "default",
        "--cpu",
        "max,family=23",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(out.status.code(), Some(0), "{LAB}");
    let steps = parse(&String::from_utf8_lossy(&out.stdout));
    assert!(steps["cpu"].out.contains(": 23"), "{}", steps["cpu"].out);
    judged(&steps, "set", None);
    let v = judged(&steps, "enable", None);
    assert_eq!(v["preflight"]["enable"]["result"], "passes");
    assert_eq!(v["preflight"]["providers"][0]["bdf"], "0000:03:00.0");
}
