//! Topology files: every embedded file parses, and bad files are rejected with an error
//! naming the file and the key.

#![cfg(test)]

use std::path::Path;

use p2pmem_lab::machine::topology::{Topology, EMBEDDED};

fn parse(text: &str) -> Result<Topology, String> {
    Topology::parse(text, Path::new("/x/bad.toml"), "bad").map_err(|e| e.to_string())
}

fn assert_err(text: &str, needles: &[&str]) {
    let Err(err) = parse(text) else {
        unreachable!("must be rejected: {text}")
    };
    assert!(err.contains("/x/bad.toml"), "no path in: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
}

const MINIMAL: &str = r#"
cpu = "max"
[[root_port]]
id = "rp1"
addr = 4
[[nvme]]
serial = "a"
parent = "rp1"
"#;

#[test]
fn every_embedded_topology_parses() {
    assert!(EMBEDDED.len() >= 8);
    for (name, _) in EMBEDDED {
        let t = Topology::embedded(name).unwrap();
        assert_eq!(&t.name, name);
        assert!(!t.cpu.is_empty());
        assert!(!t.description.is_empty(), "{name} lacks a description");
    }
}

#[test]
fn defaults_apply() {
    let t = parse(MINIMAL).unwrap();
    assert_eq!(t.name, "bad");
    assert_eq!(t.memory_mib, 1024);
    assert_eq!(t.nvme[0].disk_mib, 8);
    assert_eq!(t.nvme[0].cmb_mb, None);
    assert_eq!(t.root_port[0].host_bridge, "pcie.0");
    assert_eq!(t.kernel_cmdline(), "console=ttyS0 panic=-1");
}

#[test]
fn default_topology_has_the_demo_shape() {
    let t = Topology::embedded("default").unwrap();
    assert_eq!(t.cpu, "max");
    assert_eq!(t.switch.len(), 1);
    let cmb = t.nvme.iter().filter(|n| n.cmb_mb.is_some()).count();
    assert_eq!(cmb, 4);
    assert_eq!(t.nvme.iter().filter(|n| n.function.is_some()).count(), 2);
}

#[test]
fn acs_topology_sets_config_acs_on_its_root_port() {
    let t = Topology::embedded("multifunction_acs").unwrap();
    assert_eq!(t.root_port[0].addr, 7);
    assert_eq!(
        t.kernel_cmdline(),
        "console=ttyS0 panic=-1 pci=config_acs=11xx@0000:00:07.0"
    );
    assert_eq!(
        Topology::embedded("rootports_zen").unwrap().cpu,
        "max,family=23"
    );
}

#[test]
fn iommu_topologies_are_their_plain_twins_with_the_iommu() {
    use p2pmem_lab::machine::topology::Iommu;
    for (with, without) in [
        ("rootports_iommu", "rootports_max"),
        ("switch_iommu", "switch"),
    ] {
        let a = Topology::embedded(with).unwrap();
        let b = Topology::embedded(without).unwrap();
        assert_eq!(a.iommu, Some(Iommu::Intel));
        assert_eq!(b.iommu, None);
        assert_eq!(a.kernel_cmdline(), "console=ttyS0 panic=-1 intel_iommu=on");
        assert_eq!(
            (&a.root_port, &a.switch, &a.cpu),
            (&b.root_port, &b.switch, &b.cpu)
        );
        let serials = |t: &Topology| -> Vec<(String, String, Option<u32>)> {
            t.nvme
                .iter()
                .map(|n| (n.serial.clone(), n.parent.clone(), n.cmb_mb))
                .collect()
        };
        assert_eq!(serials(&a), serials(&b), "{with}");
    }
    let t = parse(&MINIMAL.replace(
        "cpu = \"max\"",
        "cpu = \"max\"\niommu = \"intel\"\ncmdline = \"x=1\"",
    ))
    .unwrap();
    assert_eq!(
        t.kernel_cmdline(),
        "console=ttyS0 panic=-1 intel_iommu=on x=1"
    );
    assert_err(
        &MINIMAL.replace("cpu = \"max\"", "cpu = \"max\"\niommu = \"amd\""),
        &["iommu", "intel"],
    );
}

#[test]
fn missing_cpu_is_named() {
    assert_err(&MINIMAL.replace("cpu = \"max\"", ""), &["cpu"]);
    assert_err(&MINIMAL.replace("\"max\"", "\"\""), &["cpu"]);
}

#[test]
fn unknown_key_is_named() {
    assert_err(&format!("{MINIMAL}\ncolour = 1\n"), &["colour"]);
    assert_err(
        &MINIMAL.replace("addr = 4", "addr = 4\nslot = 2"),
        &["slot"],
    );
}

#[test]
fn wrong_type_is_named() {
    assert_err(&MINIMAL.replace("addr = 4", "addr = \"four\""), &["addr"]);
    assert_err(&MINIMAL.replace("addr = 4", "addr = 300"), &["addr"]);
}

#[test]
fn dangling_parent_is_named() {
    assert_err(
        &MINIMAL.replace("parent = \"rp1\"", "parent = \"rp9\""),
        &["nvme[0].parent", "rp9"],
    );
}

#[test]
fn duplicate_ids_and_serials_are_named() {
    let dup = format!("{MINIMAL}[[root_port]]\nid = \"rp1\"\naddr = 5\n");
    assert_err(&dup, &["root_port[1].id", "twice"]);
    let dup = format!("{MINIMAL}[[root_port]]\nid = \"rp2\"\naddr = 5\n[[nvme]]\nserial = \"a\"\nparent = \"rp2\"\n");
    assert_err(&dup, &["nvme[1].serial", "twice"]);
    let slot = format!("{MINIMAL}[[root_port]]\nid = \"rp2\"\naddr = 4\n");
    assert_err(&slot, &["root_port[1].addr", "twice"]);
}

#[test]
fn reserved_slots_and_bad_values_are_named() {
    assert_err(
        &MINIMAL.replace("addr = 4", "addr = 0"),
        &["root_port[0].addr"],
    );
    assert_err(
        &MINIMAL.replace("addr = 4", "addr = 0x1f"),
        &["root_port[0].addr"],
    );
    assert_err(&format!("{MINIMAL}cmb_mb = 3\n"), &["nvme[0].cmb_mb"]);
    assert_err(&format!("{MINIMAL}function = 9\n"), &["nvme[0].function"]);
    assert_err(&format!("{MINIMAL}disk_mib = 0\n"), &["nvme[0].disk_mib"]);
    assert_err(
        &MINIMAL.replace("serial = \"a\"", "serial = \"a b\""),
        &["nvme[0].serial"],
    );
    assert_err(
        &MINIMAL.replace("cpu = \"max\"", "cpu = \"max\"\nmemory_mib = 16"),
        &["memory_mib"],
    );
    assert_err(
        &MINIMAL.replace("cpu = \"max\"", "cpu = \"max\"\ncmdline = \"a'b\""),
        &["cmdline"],
    );
}

#[test]
fn two_devices_on_one_port_need_functions() {
    let two = format!("{MINIMAL}[[nvme]]\nserial = \"b\"\nparent = \"rp1\"\n");
    assert_err(&two, &["rp1", "function"]);
    let no_zero = r#"
cpu = "max"
[[root_port]]
id = "rp1"
addr = 4
[[nvme]]
serial = "a"
parent = "rp1"
function = 1
"#;
    assert_err(no_zero, &["function = 0"]);
}

#[test]
fn switch_errors_are_named() {
    let base = r#"
cpu = "max"
[[root_port]]
id = "rp1"
addr = 4
[[switch]]
id = "up1"
parent = "rp1"
downstream = ["dn0"]
[[nvme]]
serial = "a"
parent = "dn0"
"#;
    parse(base).unwrap();
    assert_err(
        &base.replace("downstream = [\"dn0\"]", "downstream = []"),
        &["switch[0].downstream"],
    );
    assert_err(
        &base.replace("parent = \"rp1\"", "parent = \"dn0\""),
        &["below itself"],
    );
    assert_err(
        &base.replace("parent = \"dn0\"", "parent = \"rp1\""),
        &["nvme[0].parent", "switch"],
    );
    assert_err(
        &base.replace("parent = \"dn0\"", "parent = \"up1\""),
        &["nvme[0].parent"],
    );
}

#[test]
fn host_bridge_references_are_checked() {
    let t = r#"
cpu = "max"
[[host_bridge]]
id = "pxb1"
bus_nr = 0x80
addr = 0x10
[[root_port]]
id = "rpx"
host_bridge = "pxb9"
addr = 0
[[nvme]]
serial = "a"
parent = "rpx"
"#;
    assert_err(t, &["root_port[0].host_bridge", "pxb9"]);
    parse(&t.replace("pxb9", "pxb1")).unwrap();
}

#[test]
fn loading_unknown_name_lists_embedded_topologies() {
    let err = Topology::load("no-such-topology").unwrap_err().to_string();
    assert!(
        err.contains("default") && err.contains("multifunction_acs"),
        "{err}"
    );
}

#[test]
fn a_nic_is_typed_and_checked() {
    let with = |nic: &str| format!("{MINIMAL}\n[nic]\n{nic}\n");
    let t = parse(&with("addr = 0x10\nmac = \"52:54:00:12:34:01\"")).unwrap();
    let nic = t.nic.expect("a nic");
    assert_eq!(
        (nic.model, nic.addr, nic.mac.as_str()),
        (
            p2pmem_lab::machine::nic::NicModel::E1000e,
            0x10,
            "52:54:00:12:34:01"
        )
    );
    assert_eq!(parse(MINIMAL).unwrap().nic, None);
    assert_err(
        &with("addr = 4\nmac = \"52:54:00:12:34:01\""),
        &["nic.addr", "used twice"],
    );
    assert_err(
        &with("addr = 0x1f\nmac = \"52:54:00:12:34:01\""),
        &["nic.addr"],
    );
    assert_err(&with("addr = 0x10\nmac = \"52:54:00\""), &["nic.mac"]);
    assert_err(
        &with("addr = 0x10\nmac = \"52:54:00:12:34:01\"\nmodel = \"virtio\""),
        &["virtio"],
    );
}
