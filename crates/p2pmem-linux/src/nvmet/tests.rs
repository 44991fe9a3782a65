//! The nvmet layer on fixture trees: the s01 capture with the `fixtures/nvmet/s01_target`
//! overlay (configfs tree, block and NVMe classes, soft-RoCE), and empty plain
//! directories standing in for configfs to check ordering and idempotence.

use super::facts::*;
use super::*;
use crate::system::read_system;
use crate::system::tests_support::scratch_copy;
use p2pmem_model::nvmet_attr::P2pmemSetting;
use p2pmem_model::nvmet_plan::{plan_restore, BackingFacts, BlockDriver, Step, TargetConfig};
use p2pmem_model::KernelVersion;
use std::path::PathBuf;

const SWITCH: &str = "nqn.2026-11.io.p2pmem:switch";
const LOOPBACK: &str = "nqn.2026-11.io.p2pmem:loopback";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The s01 capture with the nvmet overlay, in a scratch directory.
fn s01_target() -> tempfile::TempDir {
    let d = scratch_copy(&fixtures().join("truth/s01_switch_cmbmix_fam15/root"));
    let overlay = fixtures().join("nvmet/s01_target/root");
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", overlay.display()))
        .arg(d.path())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    d
}

/// An empty nvmet tree in a plain directory.
fn empty_target() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for sub in ["subsystems", "ports", "hosts"] {
        std::fs::create_dir_all(d.path().join(NVMET_DIR).join(sub)).unwrap();
    }
    d
}

#[test]
fn reads_the_fixture_target() {
    let d = s01_target();
    let t = Target::open(d.path()).unwrap();
    assert_eq!(t.backing(), Backing::PlainDir);
    let snap = t.read().unwrap();
    let c = &snap.config;
    assert!(snap.not_saved.is_empty(), "{:?}", snap.not_saved);
    assert_eq!(c.hosts.len(), 1);
    let names: Vec<&str> = c.subsystems.iter().map(|s| s.nqn.as_str()).collect();
    assert_eq!(names, [LOOPBACK, SWITCH]);
    let sw = c.subsystem(SWITCH).unwrap();
    assert!(!sw.allow_any_host);
    assert_eq!(sw.allowed_hosts, c.hosts);
    assert_eq!(sw.attrs["attr_serial"], "3f7c2a9e41b05d68");
    let settings: Vec<(u32, Option<P2pmemSetting>, bool)> = sw
        .namespaces
        .iter()
        .map(|n| (n.nsid, n.p2pmem, n.enable))
        .collect();
    assert_eq!(
        settings,
        [
            (
                1,
                Some(P2pmemSetting::Device("0000:03:00.0".parse().unwrap())),
                true
            ),
            (
                2,
                Some(P2pmemSetting::Device("0000:06:00.0".parse().unwrap())),
                false
            ),
            (3, Some(P2pmemSetting::Off), true),
        ]
    );
    assert_eq!(sw.namespaces[2].buffered_io, Some(true));
    let ports: Vec<(u16, &str, Vec<String>)> = c
        .ports
        .iter()
        .map(|p| (p.id, p.attr("addr_trtype"), p.subsystems.clone()))
        .collect();
    assert_eq!(
        ports,
        [
            (1, "loop", vec![LOOPBACK.to_string()]),
            (2, "rdma", vec![SWITCH.to_string()]),
            (3, "tcp", vec![SWITCH.to_string()]),
        ]
    );
    // Empty values are unset and not kept.
    assert!(!c.ports[0].attrs.contains_key("addr_traddr"));
    assert!(c.validate().is_ok());
}

#[test]
fn classifies_what_backs_each_namespace() {
    let d = s01_target();
    let fs = RootFs::new(d.path());
    assert_eq!(
        backing(&fs, "/dev/nvme2n1"),
        BackingFacts::Block {
            name: "nvme2n1".into(),
            driver: BlockDriver::NvmePci,
            pci: Some("0000:05:00.0".parse().unwrap()),
        }
    );
    assert!(matches!(
        backing(&fs, "/dev/loop0"),
        BackingFacts::Block {
            driver: BlockDriver::Loop,
            pci: None,
            ..
        }
    ));
    assert_eq!(
        backing(&fs, "/dev/nvme5n1"),
        BackingFacts::Block {
            name: "nvme5n1".into(),
            driver: BlockDriver::NvmeFabrics {
                transport: "loop".into()
            },
            pci: None,
        }
    );
    assert_eq!(backing(&fs, "/srv/nvmet/ns3.img"), BackingFacts::File);
    assert_eq!(backing(&fs, "/dev/nvme9n1"), BackingFacts::Missing);
    assert_eq!(backing(&fs, ""), BackingFacts::Unset);
    assert!(matches!(backing(&fs, "/srv"), BackingFacts::Other { .. }));
    let c = Target::open(d.path()).unwrap().read().unwrap().config;
    assert_eq!(all_backing(&fs, &c).len(), 4);
}

#[test]
fn maps_rdma_ports_to_devices_and_sees_local_loop_hosts() {
    let d = s01_target();
    let fs = RootFs::new(d.path());
    // A PCI RDMA NIC on 06:00.0 with eth1 (no route for the port's address).
    let dev = d
        .path()
        .join("sys/devices/pci0000:00/0000:00:05.0/0000:06:00.0");
    std::fs::create_dir_all(dev.join("infiniband/mlx5_0/ports/1/gid_attrs/ndevs")).unwrap();
    std::fs::write(
        dev.join("infiniband/mlx5_0/ports/1/gid_attrs/ndevs/0"),
        "eth1\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "../../devices/pci0000:00/0000:00:05.0/0000:06:00.0/infiniband/mlx5_0",
        d.path().join("sys/class/infiniband/mlx5_0"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../../..", dev.join("infiniband/mlx5_0/device")).unwrap();
    let sys = read_system(d.path()).unwrap();
    let c = Target::open(d.path()).unwrap().read().unwrap().config;
    let facts = all_port_facts(&fs, &sys, &c);
    assert_eq!(facts.len(), 1, "only the rdma port");
    let names: Vec<(&str, bool)> = facts[0]
        .devices
        .iter()
        .map(|r| (r.name.as_str(), r.bdf.is_some()))
        .collect();
    assert_eq!(names, [("rxe0", false)], "{}", facts[0].matched_by);
    assert_eq!(facts[0].matched_by, "192.168.1.10 is on eth0");
    let mut other = c.ports[1].clone();
    other.attrs.insert("addr_traddr".into(), "0.0.0.0".into());
    let any = port_facts(&fs, &sys, &other);
    assert_eq!(any.devices.len(), 2, "{any:?}");
    let conns = connections(&fs, KernelVersion::new(6, 12, 117));
    assert_eq!(conns.local_loop, [LOOPBACK]);
    assert!(conns.debugfs.is_none());
    assert!(conns
        .hidden_because
        .unwrap()
        .contains("CONFIG_NVME_TARGET_DEBUGFS"));
    let old = connections(&fs, KernelVersion::new(6, 1, 0));
    assert!(old.hidden_because.unwrap().contains("older than 6.9"));
}

#[test]
fn reads_controllers_from_debugfs_when_mounted() {
    let d = s01_target();
    let c = d
        .path()
        .join(format!("sys/kernel/debug/nvmet/{SWITCH}/ctrl1"));
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("port"), "2\n").unwrap();
    std::fs::write(c.join("hostnqn"), "nqn.h\n").unwrap();
    let conns = connections(&RootFs::new(d.path()), KernelVersion::new(6, 12, 0));
    let list = conns.debugfs.unwrap();
    assert_eq!(
        (list[0].port, list[0].hostnqn.as_deref()),
        (Some(2), Some("nqn.h"))
    );
}

#[test]
fn finds_nvmet_p2pmem_lines_in_the_log() {
    let log = std::fs::read(fixtures().join("nvmet/s01_target/dmesg.txt")).unwrap();
    let lines = p2pmem_log(&log);
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0].text,
        "nvmet: using p2pmem on 0000:03:00.0 for nsid 1"
    );
    assert_eq!(lines[0].nsid, Some(1));
}

fn apply_all(t: &Target, steps: &[Step]) {
    for s in steps {
        t.apply(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

#[test]
fn restore_into_an_empty_plain_tree_reproduces_the_fixture_and_is_idempotent() {
    let src = s01_target();
    let want = Target::open(src.path()).unwrap().read().unwrap().config;
    let d = empty_target();
    let t = Target::open(d.path()).unwrap();
    let steps = plan_restore(&t.read().unwrap().config, &want);
    apply_all(&t, &steps);
    let got = t.read().unwrap().config;
    assert_eq!(got, want);
    assert!(
        plan_restore(&got, &want).is_empty(),
        "a second restore changes nothing"
    );
    // Links are relative in a plain tree.
    let link = d
        .path()
        .join(NVMET_DIR)
        .join(format!("ports/2/subsystems/{SWITCH}"));
    assert_eq!(
        std::fs::read_link(link).unwrap(),
        PathBuf::from(format!("../../../subsystems/{SWITCH}"))
    );
    // And back to nothing: every object and link goes, in an order rmdir accepts.
    apply_all(&t, &plan_restore(&got, &TargetConfig::default()));
    assert_eq!(t.read().unwrap().config, TargetConfig::default());
    assert!(
        std::fs::read_dir(d.path().join(NVMET_DIR).join("subsystems"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn refusals_carry_path_errno_and_meaning() {
    let d = s01_target();
    let t = Target::open(d.path()).unwrap();
    let e = t
        .apply(&Step::RmSubsystem { nqn: SWITCH.into() })
        .unwrap_err();
    assert_eq!(e.errno_name(), Some("ENOTEMPTY"));
    let text = e.to_string();
    assert!(
        text.contains(SWITCH) && text.contains("remove namespaces and links first"),
        "{text}"
    );
    let e = t
        .apply(&Step::MkSubsystem { nqn: SWITCH.into() })
        .unwrap_err();
    assert_eq!((e.errno_name(), e.errno_code()), (Some("EEXIST"), Some(17)));
    assert!(e.to_string().contains("it exists already"));
    let e = t
        .apply(&Step::SetNamespace {
            nqn: "nqn.none".into(),
            nsid: 1,
            attr: "p2pmem".into(),
            value: "1".into(),
            old: None,
        })
        .unwrap_err();
    assert_eq!(e.errno_name(), Some("ENOENT"));
    assert!(e.to_string().contains("CONFIG_PCI_P2PDMA"), "{e}");
    let missing = tempfile::tempdir().unwrap();
    let e = Target::open(missing.path()).unwrap_err();
    assert!(e.to_string().contains("modprobe nvmet"), "{e}");
}
