//! Lab tier: beyond one machine. Two guests of the lab kernel boot at once, joined by a
//! QEMU network (each an e1000e; `Lab::run_pair` wires them), and speak the kernel's own
//! NVMe/TCP on both ends. The target guest is configured by `p2pmem nvmet` alone: a
//! subsystem, namespace 1 on its NVMe with a 16 MiB CMB (p2pmem `auto`, which the kernel
//! accepts), a TCP port on its address, the initiator's host NQN allowed; `nvmet check`
//! must say the TCP port never uses p2pmem. The initiator guest connects with the
//! kernel's initiator (`/dev/nvme-fabrics`, retried until the target serves), reads the
//! target's data, writes 1 MiB of its own NVMe to the target with O_DIRECT (`p2pmem
//! copy --verify`) and, last, one 4 KiB block the target waits for. Every hash taken on
//! one side must equal the other side's. The target's kernel log must show the TCP
//! controller made for that host and no `using p2pmem` line, its NVMe's DMA (QEMU's
//! trace) must have read every written byte from host memory, and the NIC counters must
//! have carried them: what `p2pmem plan` says for the same setup
//! (`examples/designs/lab-two-hosts-tcp.toml`), read from its JSON.

#![cfg(test)]

mod lab_common;

use p2pmem_lab::machine::topology::Topology;
use p2pmem_lab::plans::dma::account_run;
use p2pmem_lab::{Guest, Lab, PlanRun};
use p2pmem_model::dma_accounting::Window;
use p2pmem_wire::plan::{Arg, Connect, CopyStep, Dev, Plan, Step, Via};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const MIB: u64 = 1 << 20;
const NQN: &str = "nqn.2026-12.io.p2pmem:two-hosts";
const HOSTID: &str = "5b0f7a1c-2d3e-4f50-8a6b-7c8d9e0f1a2b";
const TARGET_IP: &str = "10.0.2.1";
const INITIATOR_IP: &str = "10.0.2.2";
/// Where the initiator writes its 1 MiB on the target's namespace (beyond the 2 MiB the
/// lab pre-fills: zeros before).
const WRITTEN_AT: u64 = 4 * MIB;
/// The last block the initiator writes, which the target waits for.
const DONE_AT: u64 = 7 * MIB;
const DONE_LEN: u64 = 4096;
/// Where on its own NVMe the initiator takes that block from.
const DONE_FROM: u64 = MIB;
/// How long each side waits for the other (both guests boot under TCG on shared cores).
const WAIT_MS: u64 = 240_000;

const TARGET: &str = r#"
name = "two_hosts_target"
description = "NVMe/TCP target: an NVMe with a 16 MiB CMB on a root port, an e1000e on the root bus"
cpu = "max"
[[root_port]]
id = "rp1"
addr = 0x4
[[nvme]]
serial = "tgtA"
parent = "rp1"
cmb_mb = 16
desc = "the namespace the target serves"
[nic]
addr = 0x10
mac = "52:54:00:00:16:01"
"#;

const INITIATOR: &str = r#"
name = "two_hosts_initiator"
description = "NVMe/TCP initiator: an NVMe (the data it writes) and an e1000e on the root bus"
cpu = "max"
[[root_port]]
id = "rp1"
addr = 0x4
[[nvme]]
serial = "iniA"
parent = "rp1"
desc = "the initiator's own disk"
[nic]
addr = 0x10
mac = "52:54:00:00:16:02"
"#;

fn hostnqn() -> String {
    format!("nqn.2014-08.org.nvmexpress:uuid:{HOSTID}")
}

/// Each guest's NVMe is at 01:00.0 (its root port is 00:04.0).
fn own_nvme() -> Dev {
    Dev::Nvme("0000:01:00.0".parse().expect("a PCI address"))
}

fn exec(p: &mut Plan, name: &str, argv: &[&str]) {
    p.exec(name, argv);
}

fn exec_dev(p: &mut Plan, name: &str, argv: Vec<Arg>) {
    p.step(name, Step::Exec { argv });
}

fn ip_up(p: &mut Plan, addr: &str) {
    exec(p, "ip_addr", &["ip", "addr", "add", addr, "dev", "eth0"]);
    exec(p, "ip_up", &["ip", "link", "set", "eth0", "up"]);
}

fn nic_counters(p: &mut Plan, name: &str) {
    exec(
        p,
        name,
        &[
            "cat",
            "/sys/class/net/eth0/statistics/rx_bytes",
            "/sys/class/net/eth0/statistics/tx_bytes",
        ],
    );
}

/// The target: `p2pmem nvmet` commands as a user types them, the DMA-trace window
/// around everything the initiator does, then what the kernel logged.
fn target_plan() -> Plan {
    let mut p = Plan::new();
    ip_up(&mut p, &format!("{TARGET_IP}/24"));
    p.step("address_map", Step::AddressMap);
    exec(
        &mut p,
        "subsys",
        &["p2pmem", "--json", "nvmet", "subsys", "add", NQN],
    );
    exec_dev(
        &mut p,
        "ns",
        vec![
            "p2pmem".into(),
            "--json".into(),
            "nvmet".into(),
            "ns".into(),
            "add".into(),
            NQN.into(),
            "1".into(),
            own_nvme().into(),
            "--p2pmem".into(),
            "auto".into(),
            "--enable".into(),
        ],
    );
    exec(
        &mut p,
        "host",
        &[
            "p2pmem",
            "--json",
            "nvmet",
            "host",
            "allow",
            NQN,
            &hostnqn(),
        ],
    );
    exec(
        &mut p,
        "port",
        &[
            "p2pmem",
            "--json",
            "nvmet",
            "port",
            "add",
            "1",
            "--trtype",
            "tcp",
            "--traddr",
            TARGET_IP,
            "--trsvcid",
            "4420",
        ],
    );
    p.step(
        "hash_served",
        Step::Hash {
            dev: own_nvme(),
            offset: 0,
            len: MIB,
        },
    );
    nic_counters(&mut p, "nic_before");
    // The window opens before the port serves: every byte the initiator moves is in it.
    p.step(
        "mark_open",
        Step::Mark {
            lba: Window::nth(0).begin_lba,
        },
    );
    exec(
        &mut p,
        "link",
        &["p2pmem", "--json", "nvmet", "port", "link", "1", NQN],
    );
    exec(&mut p, "check", &["p2pmem", "--json", "nvmet", "check"]);
    p.step(
        "wait_done",
        Step::WaitForBlock {
            dev: own_nvme(),
            offset: DONE_AT,
            text: format!("p2pmem-lab serial=iniA sector={}\n", DONE_FROM / 512),
            wait_ms: WAIT_MS,
        },
    );
    p.step(
        "mark_close",
        Step::Mark {
            lba: Window::nth(0).end_lba,
        },
    );
    nic_counters(&mut p, "nic_after");
    p.step(
        "hash_written",
        Step::Hash {
            dev: own_nvme(),
            offset: WRITTEN_AT,
            len: MIB,
        },
    );
    exec(&mut p, "status", &["p2pmem", "--json", "nvmet", "status"]);
    p.step("dmesg", Step::Dmesg);
    p
}

/// The initiator: connect, read, write, and the last block.
fn initiator_plan() -> Plan {
    let mut p = Plan::new();
    ip_up(&mut p, &format!("{INITIATOR_IP}/24"));
    p.step(
        "connect",
        Step::Connect(Connect {
            transport: "tcp".into(),
            traddr: Some(TARGET_IP.into()),
            trsvcid: Some("4420".into()),
            nqn: NQN.into(),
            hostnqn: Some(hostnqn()),
            hostid: Some(HOSTID.into()),
            wait_ms: WAIT_MS,
        }),
    );
    p.step(
        "hash_remote",
        Step::Hash {
            dev: Dev::Connected(1),
            offset: 0,
            len: MIB,
        },
    );
    exec_dev(
        &mut p,
        "head_remote",
        vec![
            "head".into(),
            "-c".into(),
            "31".into(),
            Dev::Connected(1).into(),
        ],
    );
    nic_counters(&mut p, "nic_before");
    p.step(
        "write",
        Step::Copy(
            CopyStep::new(own_nvme(), Dev::Connected(1), Via::Host)
                .length(MIB)
                .dst_offset(WRITTEN_AT)
                .verify(),
        ),
    );
    p.step(
        "done",
        Step::Copy(
            CopyStep::new(own_nvme(), Dev::Connected(1), Via::Host)
                .offset(DONE_FROM)
                .length(DONE_LEN)
                .dst_offset(DONE_AT),
        ),
    );
    nic_counters(&mut p, "nic_after");
    p.step(
        "hash_local",
        Step::Hash {
            dev: own_nvme(),
            offset: 0,
            len: MIB,
        },
    );
    p.step(
        "hash_written",
        Step::Hash {
            dev: Dev::Connected(1),
            offset: WRITTEN_AT,
            len: MIB,
        },
    );
    p.step("dmesg", Step::Dmesg);
    p
}

fn topology(text: &str) -> Topology {
    Topology::parse(text, Path::new("<lab_two_hosts>"), "two_hosts").expect("a topology")
}

/// An exec step's stdout, its exit status 0.
fn ok_out(run: &PlanRun, name: &str) -> String {
    let e = run
        .exec(name)
        .unwrap_or_else(|e| panic!("{name}: {e}\nconsole: {}", run.console_log.display()));
    assert_eq!(e.exit, Some(0), "{name}: {e:?}");
    e.stdout.clone()
}

fn json(run: &PlanRun, name: &str) -> Value {
    let out = ok_out(run, name);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {out}"))
}

fn sha(run: &PlanRun, name: &str) -> String {
    run.hash(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .sha256
        .clone()
}

/// (rx, tx) bytes of eth0 between two counter steps.
fn nic_delta(run: &PlanRun) -> (u64, u64) {
    let read = |name: &str| -> Vec<u64> {
        ok_out(run, name)
            .split_whitespace()
            .map(|w| w.parse().expect("a byte counter"))
            .collect()
    };
    let (b, a) = (read("nic_before"), read("nic_after"));
    (a[0] - b[0], a[1] - b[1])
}

/// `p2pmem --json plan --design examples/designs/lab-two-hosts-tcp.toml`.
fn planned() -> Value {
    let design =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/designs/lab-two-hosts-tcp.toml");
    let o = Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .args(["--json", "plan", "--design"])
        .arg(&design)
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    serde_json::from_str(text.lines().next().expect("a plan document"))
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn nvme_tcp_between_two_guests_moves_verified_bytes_through_host_memory_as_planned() {
    let mut lab = Lab::from_env().expect("lab settings");
    lab.p2pmem = lab_common::bin();
    // Only the 6.12 line is built with the NVMe/TCP initiator (p2pmem-lab.config), so
    // this test boots it whatever P2PMEM_LAB_KERNEL says.
    let line = p2pmem_lab::build::lines::Line::parse("6.12").expect("a kernel line");
    lab.kernel = p2pmem_lab::KernelSpec {
        source: p2pmem_lab::KernelSource::line(line).expect("a pinned line"),
        fragment: None,
    };
    let (tt, it) = (topology(TARGET), topology(INITIATOR));
    let (tp, ip) = (target_plan(), initiator_plan());
    let (target, initiator) = lab
        .run_pair(
            &Guest {
                topo: &tt,
                cpu: None,
                plan: &tp,
                trace: true,
            },
            &Guest {
                topo: &it,
                cpu: None,
                plan: &ip,
                trace: false,
            },
        )
        .unwrap_or_else(|e| panic!("the two-guest lab run failed: {e}"));
    eprintln!(
        "target: {:.1} s ({}), initiator: {:.1} s ({})",
        target.qemu_secs,
        target.run_dir.display(),
        initiator.qemu_secs,
        initiator.run_dir.display()
    );

    // The target, configured by p2pmem nvmet alone.
    for step in ["ip_addr", "ip_up", "subsys", "ns", "host", "port", "link"] {
        ok_out(&target, step);
    }
    // Namespace 1 with p2pmem=1 (auto), enabled: the kernel accepted it (its CMB).
    let ns = json(&target, "ns");
    assert_eq!(ns["failed"], Value::Null, "{ns}");
    let set: Vec<(&str, &str)> = ns["changed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| Some((c["attr"].as_str()?, c["value"].as_str()?)))
        .collect();
    assert!(
        set.contains(&("p2pmem", "1")) && set.contains(&("enable", "1")),
        "{ns}"
    );
    let check = json(&target, "check");
    let pre = &check["namespaces"][0];
    assert_eq!(pre["enable"]["result"], "passes", "{pre}");
    assert_eq!(pre["providers"][0]["bdf"], "0000:01:00.0", "{pre}");
    let port = check["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["trtype"] == "tcp"))
        .unwrap_or_else(|| panic!("no tcp port in nvmet check: {check}"));
    assert_eq!(port["traddr"], TARGET_IP, "{port}");
    assert!(
        port["never"]
            .as_str()
            .is_some_and(|w| w.starts_with("TCP ports never use p2pmem")),
        "{port}"
    );

    // The initiator: the kernel's NVMe/TCP initiator made a controller to that target.
    let c = initiator.connected("connect").expect("the connect step");
    assert!(c.namespaces.iter().any(|(n, _)| *n == 1), "{c:?}");
    assert_eq!(c.transport, "tcp", "{c:?}");
    assert!(
        c.address.contains(&format!("traddr={TARGET_IP}")) && c.address.contains("trsvcid=4420"),
        "{c:?}"
    );

    // Verified I/O both ways: what the target serves is what the initiator read; what
    // the initiator wrote (O_DIRECT, verified by copy) is on the target's NVMe.
    assert_eq!(sha(&initiator, "hash_remote"), sha(&target, "hash_served"));
    assert_eq!(
        ok_out(&initiator, "head_remote"),
        "p2pmem-lab serial=tgtA sector=0"
    );
    let w = initiator.copy("write").expect("the write");
    assert_eq!(w.exit, 0, "{w:?}");
    assert_eq!(initiator.copy("done").expect("the last block").exit, 0);
    let written = sha(&initiator, "hash_local");
    assert_eq!(sha(&initiator, "hash_written"), written);
    assert_eq!(sha(&target, "hash_written"), written);
    assert_ne!(
        sha(&target, "hash_served"),
        written,
        "two different patterns"
    );
    target
        .output("wait_done")
        .expect("the target saw the last block");

    // The target's kernel: a TCP controller for this host, and no p2pmem.
    let dmesg = target
        .dmesg_lines("dmesg")
        .expect("the target's log")
        .join("\n");
    assert!(
        dmesg.contains(&format!(
            "nvmet: creating nvm controller {} for subsystem {NQN} for NQN {}",
            c.cntlid,
            hostnqn()
        )),
        "{dmesg}"
    );
    assert!(
        dmesg.contains(&format!("nvmet_tcp: enabling port 1 ({TARGET_IP}:4420)")),
        "{dmesg}"
    );
    assert!(!dmesg.contains("using p2pmem"), "{dmesg}");
    let idmesg = initiator.dmesg_lines("dmesg").unwrap().join("\n");
    assert!(
        idmesg.contains(&format!("new ctrl: NQN \"{NQN}\", addr {TARGET_IP}:4420")),
        "{idmesg}"
    );

    // Where the bytes crossed host memory, measured, against the plan.
    let plan = planned();
    let flow = &plan["flows"][0];
    assert_eq!(flow["transport"], "tcp");
    assert_eq!(flow["path"], "host_memory");
    assert_eq!(flow["provider"], Value::Null);
    assert!(
        flow["why"]
            .as_str()
            .is_some_and(|w| w.starts_with("TCP ports never use p2pmem")),
        "{flow}"
    );
    let rate = flow["rate_bytes_per_s"].as_u64().unwrap();
    let per_payload = |host: &str| -> u64 {
        let b = plan["host_memory"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["host"] == host)
            .unwrap_or_else(|| panic!("no host {host} in the plan"))["bytes_per_s"]
            .as_u64()
            .unwrap();
        assert_eq!(b % rate, 0, "{host}: {b} is not a whole number of payloads");
        b / rate
    };
    let (k_target, k_initiator) = (per_payload("target"), per_payload("initiator"));
    assert_eq!(
        (k_target, k_initiator),
        (2, 1),
        "the model's rule: a bounce is twice the payload, the initiator's buffer once"
    );
    assert!(flow["accounting"]["devices"]
        .as_object()
        .unwrap()
        .is_empty());

    // Payload: every byte the initiator wrote to the target.
    let payload = MIB + DONE_LEN;
    // Target, leg 2 (memory -> NVMe), from QEMU's trace: every written byte came from
    // host memory, none from the CMB or another BAR.
    let map = target.address_map("address_map").unwrap();
    let dma = account_run(&target.run_dir, map).expect("the target's DMA accounting");
    let wr = dma.detail.write;
    assert_eq!(dma.figures.payload_bytes, payload, "{:?}", dma.figures);
    assert_eq!(
        (wr.host_memory, wr.own_cmb, wr.other_device, wr.unattributed),
        (payload, 0, 0, 0),
        "{wr:?}"
    );
    // Target, leg 1 (NIC -> memory): the e1000e received them all (plus Ethernet, IP,
    // TCP and NVMe/TCP headers and the initiator's reads' commands).
    let (rx, _) = nic_delta(&target);
    let (_, tx) = nic_delta(&initiator);
    eprintln!(
        "payload {payload} B; target: NVMe read {} B from host memory (trace), e1000e received {rx} B; initiator: e1000e sent {tx} B; plan: target {k_target} x, initiator {k_initiator} x payload",
        wr.host_memory
    );
    // Each side's measured host-memory bytes, in payloads, round to the plan's factor:
    // never less than it (every byte crossed), and the headers' share (a few percent)
    // never as much as half a payload.
    let in_payloads = |bytes: u64| (bytes as f64 / payload as f64).round() as u64;
    assert!(rx >= payload, "target rx {rx} < payload {payload}");
    assert_eq!(in_payloads(rx), 1, "target rx {rx}");
    let measured_target = wr.host_memory + rx;
    assert!(measured_target >= k_target * payload);
    assert_eq!(
        in_payloads(measured_target),
        k_target,
        "target host memory {measured_target} vs planned {k_target} x {payload}"
    );
    // Initiator (its buffer -> NIC): the e1000e sent them all.
    assert!(tx >= k_initiator * payload, "initiator tx {tx}");
    assert_eq!(
        in_payloads(tx),
        k_initiator,
        "initiator tx {tx} vs planned {k_initiator} x {payload}"
    );
}
