//! Configuration files, kernel facts and the pre-flight, on a small switch topology with
//! an RDMA NIC. The restore planner is tested against a configfs simulator in
//! `tests/restore_sim.rs`.

mod ports;
mod restore_sim;

use super::config::*;
use super::facts::*;
use super::ports::*;
use super::preflight::*;
use crate::cpu::CpuInfo;
use crate::distance::Rules;
use crate::errno::{EBUSY, EINVAL, ENODEV};
use crate::kernel_version::KernelVersion;
use crate::nvmet_attr::{NvmetAttrError, P2pmemSetting, PreflightFailure};
use crate::topology::tests::{bdf, func};
use crate::topology::{Function, P2pmemInfo, Topology};
use std::collections::BTreeMap;

fn prov(mut f: Function) -> Function {
    f.p2pmem = Some(P2pmemInfo {
        size: Some(16 << 20),
        available: Some((16 << 20) - (64 << 10)),
        published: Some(true),
    });
    f
}

/// 00:04.0 root port -> switch 01:00.0 -> 02:00.0..02:03.0: 03:00.0 and 04:00.0 (CMB
/// providers), 05:00.0 (NVMe client), 08:00.0 (RDMA NIC). 00:05.0 -> 06:00.0 (CMB
/// provider on another root port). 00:06.0 -> 07:00.0 (a second NIC).
fn topo() -> Topology {
    Topology::new(vec![
        func(&["00:00.0"], None, None),
        func(&["00:04.0"], Some(4), Some(0)),
        func(&["00:04.0", "01:00.0"], Some(5), None),
        func(&["00:04.0", "01:00.0", "02:00.0"], Some(6), None),
        func(&["00:04.0", "01:00.0", "02:01.0"], Some(6), None),
        func(&["00:04.0", "01:00.0", "02:02.0"], Some(6), None),
        func(&["00:04.0", "01:00.0", "02:03.0"], Some(6), None),
        prov(func(
            &["00:04.0", "01:00.0", "02:00.0", "03:00.0"],
            Some(0),
            None,
        )),
        prov(func(
            &["00:04.0", "01:00.0", "02:01.0", "04:00.0"],
            Some(0),
            None,
        )),
        func(&["00:04.0", "01:00.0", "02:02.0", "05:00.0"], Some(0), None),
        func(&["00:04.0", "01:00.0", "02:03.0", "08:00.0"], Some(0), None),
        func(&["00:05.0"], Some(4), Some(0)),
        prov(func(&["00:05.0", "06:00.0"], Some(0), None)),
        func(&["00:06.0"], Some(4), Some(0)),
        func(&["00:06.0", "07:00.0"], Some(0), None),
    ])
    .unwrap()
}

fn rules(family: u32, kernel: KernelVersion) -> Rules {
    Rules {
        kernel,
        cpu: CpuInfo {
            vendor_id: Some("AuthenticAMD".into()),
            family: Some(family),
            model_name: None,
        },
    }
}

const K612: KernelVersion = KernelVersion::new(6, 12, 117);

fn ns(nsid: u32, setting: P2pmemSetting, enable: bool) -> Namespace {
    Namespace {
        p2pmem: Some(setting),
        enable,
        ..Namespace::new(nsid, "/dev/nvme2n1")
    }
}

fn nvme_block(pci: &str) -> BackingFacts {
    BackingFacts::Block {
        name: "nvme2n1".into(),
        driver: BlockDriver::NvmePci,
        pci: Some(bdf(pci)),
    }
}

fn dev(s: &str) -> P2pmemSetting {
    P2pmemSetting::Device(bdf(s))
}

fn pre(family: u32, n: &Namespace, b: &BackingFacts, set: Option<P2pmemSetting>) -> NsPreflight {
    let t = topo();
    let r = rules(family, K612);
    namespace(
        Env {
            topo: &t,
            rules: &r,
        },
        "nqn.test",
        n,
        b,
        set,
    )
}

#[test]
fn chosen_provider_on_the_same_switch_passes() {
    let p = pre(
        15,
        &ns(1, dev("03:00.0"), false),
        &nvme_block("05:00.0"),
        None,
    );
    assert_eq!(p.enable, EnableOutcome::Passes);
    assert_eq!(p.queue_supports_p2pdma, Some(true));
    assert_eq!(p.providers.len(), 1);
    assert_eq!(p.providers[0].distance, Some(4));
    assert_eq!(p.providers[0].available, Some((16 << 20) - (64 << 10)));
    assert!(p.kernel_log.is_empty());
}

#[test]
fn chosen_provider_on_another_root_port_is_einval_unless_zen() {
    let n = ns(1, dev("06:00.0"), false);
    let p = pre(15, &n, &nvme_block("05:00.0"), None);
    let EnableOutcome::Fails { errno, failure } = &p.enable else {
        panic!("{:?}", p.enable)
    };
    assert_eq!(*errno, EINVAL);
    assert!(matches!(failure, PreflightFailure::DistanceRejected { .. }));
    assert_eq!(
        p.kernel_log,
        ["nvme 0000:05:00.0: cannot be used for peer-to-peer DMA as the client and provider (0000:06:00.0) do not share an upstream bridge or whitelisted host bridge"]
    );
    assert_eq!(enable_errno(&p.enable), Some(EINVAL));
    let zen = pre(23, &n, &nvme_block("05:00.0"), None);
    assert_eq!(zen.enable, EnableOutcome::Passes);
}

#[test]
fn auto_finds_tied_providers() {
    let p = pre(
        15,
        &ns(1, P2pmemSetting::Auto, false),
        &nvme_block("05:00.0"),
        None,
    );
    assert_eq!(p.enable, EnableOutcome::Passes);
    let b: Vec<String> = p.providers.iter().map(|x| x.bdf.to_string()).collect();
    assert_eq!(b, ["0000:03:00.0", "0000:04:00.0"]);
    assert!(p.notes.iter().any(|n| n.contains("tie")), "{:?}", p.notes);
}

#[test]
fn auto_without_reachable_provider_is_einval_with_the_nvmet_line() {
    // 07:00.0 is alone on its root port; under family 15 nothing reaches it.
    let p = pre(
        15,
        &ns(1, P2pmemSetting::Auto, false),
        &nvme_block("07:00.0"),
        None,
    );
    assert_eq!(enable_errno(&p.enable), Some(EINVAL));
    assert_eq!(
        p.kernel_log,
        ["nvmet: no peer-to-peer memory is available for /dev/nvme2n1"]
    );
}

#[test]
fn attribute_writes_predict_enodev_ebusy_and_enoent() {
    let b = nvme_block("05:00.0");
    let p = pre(
        15,
        &ns(1, P2pmemSetting::Off, false),
        &b,
        Some(dev("05:00.0")),
    );
    let Some(AttrWrite::Refused { error }) = &p.attr_write else {
        panic!("{:?}", p.attr_write)
    };
    assert!(matches!(error, NvmetAttrError::NoP2pmem { .. }));
    assert_eq!(error.errno(), ENODEV);
    assert_eq!(
        p.kernel_log[0],
        "nvme 0000:05:00.0: PCI device has no peer-to-peer memory: 0000:05:00.0"
    );
    let p = pre(
        15,
        &ns(1, P2pmemSetting::Off, false),
        &b,
        Some(dev("09:00.0")),
    );
    assert_eq!(
        attr_write_errno(p.attr_write.as_ref().unwrap()),
        Some(ENODEV)
    );
    assert_eq!(
        p.kernel_log[0],
        "pci-p2pdma: No such PCI device: 0000:09:00.0"
    );
    let p = pre(
        15,
        &ns(1, P2pmemSetting::Off, true),
        &b,
        Some(P2pmemSetting::Auto),
    );
    assert_eq!(
        attr_write_errno(p.attr_write.as_ref().unwrap()),
        Some(EBUSY)
    );
    let mut absent = ns(1, P2pmemSetting::Off, false);
    absent.p2pmem = None;
    let p = pre(15, &absent, &b, Some(P2pmemSetting::Auto));
    assert_eq!(p.attr_write, Some(AttrWrite::NoAttribute));
    let p = pre(
        15,
        &ns(1, P2pmemSetting::Off, false),
        &b,
        Some(dev("04:00.0")),
    );
    assert_eq!(p.attr_write, Some(AttrWrite::Accepted));
    assert_eq!(
        p.enable,
        EnableOutcome::Passes,
        "the proposed setting is checked"
    );
}

#[test]
fn backends_that_cannot_do_p2p() {
    let auto = ns(1, P2pmemSetting::Auto, false);
    let p = pre(15, &auto, &BackingFacts::File, None);
    assert!(matches!(
        p.enable,
        EnableOutcome::Fails {
            failure: PreflightFailure::NotBlockDevice,
            ..
        }
    ));
    assert_eq!(
        p.kernel_log,
        ["nvmet: peer-to-peer DMA is not supported by non-block device namespaces"]
    );
    let lp = BackingFacts::Block {
        name: "loop0".into(),
        driver: BlockDriver::Loop,
        pci: None,
    };
    let p = pre(15, &auto, &lp, None);
    assert_eq!(p.queue_supports_p2pdma, Some(false));
    assert_eq!(
        p.kernel_log,
        ["nvmet: peer-to-peer DMA is not supported by the driver of /dev/nvme2n1"]
    );
    let p = pre(15, &auto, &BackingFacts::Missing, None);
    assert!(
        matches!(p.enable, EnableOutcome::BackendFails { errno: Some(e), .. } if e.name == "ENOENT")
    );
    let off = ns(1, P2pmemSetting::Off, false);
    assert_eq!(pre(15, &off, &lp, None).enable, EnableOutcome::NotRequested);
}

#[test]
fn a_supporting_queue_without_pci_function_fails_the_distance_check() {
    let md = BackingFacts::Block {
        name: "md0".into(),
        driver: BlockDriver::Md {
            level: "raid1".into(),
            members_support: true,
        },
        pci: None,
    };
    let t = topo();
    let r = rules(15, KernelVersion::new(7, 2, 0));
    let env = Env {
        topo: &t,
        rules: &r,
    };
    let p = namespace(env, "n", &ns(1, dev("03:00.0"), false), &md, None);
    assert_eq!(p.queue_supports_p2pdma, Some(true));
    assert!(matches!(
        p.enable,
        EnableOutcome::Fails {
            failure: PreflightFailure::DistanceRejected { .. },
            ..
        }
    ));
    assert_eq!(
        p.kernel_log,
        ["block md0: cannot be used for peer-to-peer DMA as it is not a PCI device"]
    );
    // On 6.12 md never has the feature.
    let r = rules(15, K612);
    let env = Env {
        topo: &t,
        rules: &r,
    };
    let p = namespace(env, "n", &ns(1, dev("03:00.0"), false), &md, None);
    assert_eq!(p.queue_supports_p2pdma, Some(false));
}

#[test]
fn queue_rules_each_entry() {
    let v = |a, b| KernelVersion::new(a, b, 0);
    assert!(queue_supports_p2pdma(&BlockDriver::NvmePci, v(4, 20)));
    assert!(queue_supports_p2pdma(&BlockDriver::NvmePci, K612));
    let rdma = BlockDriver::NvmeFabrics {
        transport: "rdma".into(),
    };
    assert!(!queue_supports_p2pdma(&rdma, v(7, 0)));
    assert!(queue_supports_p2pdma(&rdma, v(7, 1)));
    let tcp = BlockDriver::NvmeFabrics {
        transport: "tcp".into(),
    };
    assert!(!queue_supports_p2pdma(&tcp, v(7, 3)));
    let head = |ok| BlockDriver::NvmeMultipathHead { paths_support: ok };
    assert!(!queue_supports_p2pdma(&head(true), v(7, 1)));
    assert!(queue_supports_p2pdma(&head(true), v(7, 2)));
    assert!(!queue_supports_p2pdma(&head(false), v(7, 2)));
    let md = |level: &str, ok| BlockDriver::Md {
        level: level.into(),
        members_support: ok,
    };
    assert!(queue_supports_p2pdma(&md("raid10", true), v(7, 2)));
    assert!(!queue_supports_p2pdma(&md("raid1", true), v(7, 1)));
    assert!(!queue_supports_p2pdma(&md("raid5", true), v(7, 3)));
    assert!(!queue_supports_p2pdma(&md("raid0", false), v(7, 3)));
    for d in [
        BlockDriver::Loop,
        BlockDriver::VirtioBlk,
        BlockDriver::Scsi,
        BlockDriver::DeviceMapper,
    ] {
        assert!(!queue_supports_p2pdma(&d, v(7, 3)), "{d:?}");
    }
    assert_eq!(QUEUE_RULES.len(), 4);
}

#[test]
fn transports_and_errno_meanings() {
    assert_eq!(Transport::parse("rdma\n"), Transport::Rdma);
    assert_eq!(
        Transport::parse("").never_p2pmem(),
        Some("no transport set (addr_trtype is empty)")
    );
    assert!(Transport::Rdma.never_p2pmem().is_none());
    for t in ["tcp", "loop", "fc"] {
        assert!(Transport::parse(t)
            .never_p2pmem()
            .unwrap()
            .contains("no P2P client"));
    }
    assert!(errno_meaning(Op::NsAttr("p2pmem"), 16)
        .unwrap()
        .contains("enabled"));
    assert!(errno_meaning(Op::NsAttr("p2pmem"), 19)
        .unwrap()
        .contains("no published p2pmem"));
    assert!(errno_meaning(Op::NsAttr("enable"), 22)
        .unwrap()
        .contains("refused to enable"));
    assert!(errno_meaning(Op::PortAttr("addr_traddr"), 13)
        .unwrap()
        .contains("unlink"));
    assert!(errno_meaning(Op::AllowHost, 22)
        .unwrap()
        .contains("allow_any_host"));
    assert_eq!(errno_meaning(Op::Unlink, 5), None);
    assert_eq!(errno_name(39), Some("ENOTEMPTY"));
}

#[test]
fn using_lines_parse_back() {
    let line = format!("nvmet: {}", using_p2pmem_line(bdf("03:00.0"), 7));
    assert_eq!(parse_using_line(&line), Some((bdf("03:00.0"), 7)));
    assert_eq!(
        parse_using_line("nvmet: using p2pmem on x for nsid 1"),
        None
    );
    assert_eq!(parse_using_line("something else"), None);
}

fn saved_json() -> serde_json::Value {
    serde_json::json!({
        "format": "p2pmem-nvmet",
        "version": 1,
        "hosts": ["nqn.host1"],
        "subsystems": [{
            "nqn": "nqn.s",
            "attrs": {"attr_serial": "abc"},
            "allowed_hosts": ["nqn.host1"],
            "namespaces": [{"nsid": 1, "device_path": "/dev/nvme0n1", "p2pmem": "0000:03:00.0", "enable": true}]
        }],
        "ports": [{"id": 1, "attrs": {"addr_trtype": "loop"}, "subsystems": ["nqn.s"]}]
    })
}

fn load(v: serde_json::Value) -> Result<TargetConfig, String> {
    let s: SavedConfig = serde_json::from_value(v).map_err(|e| e.to_string())?;
    s.into_config().map_err(|e| e.to_string())
}

#[test]
fn saved_configs_round_trip_and_keep_our_spelling() {
    let c = load(saved_json()).unwrap();
    assert_eq!(c.subsystems[0].namespaces[0].p2pmem, Some(dev("03:00.0")));
    let text = serde_json::to_value(SavedConfig::new(&c)).unwrap();
    assert_eq!(
        text["subsystems"][0]["namespaces"][0]["p2pmem"],
        "0000:03:00.0"
    );
    assert_eq!(load(text).unwrap(), c);
    let mut v = saved_json();
    v["subsystems"][0]["namespaces"][0]["p2pmem"] = "auto".into();
    assert_eq!(
        load(v).unwrap().subsystems[0].namespaces[0].p2pmem,
        Some(P2pmemSetting::Auto)
    );
}

#[test]
fn bad_files_are_refused_with_the_reason() {
    type Edit = fn(&mut serde_json::Value);
    let cases: Vec<(Edit, &str)> = vec![
        (
            |v| v["format"] = "x".into(),
            "not a p2pmem nvmet configuration",
        ),
        (|v| v["version"] = 9.into(), "version 9"),
        (|v| v["subsystems"][0]["nqn"] = "a/b".into(), "contains '/'"),
        (
            |v| v["subsystems"][0]["nqn"] = DISCOVERY_NQN.into(),
            "discovery NQN",
        ),
        (
            |v| v["subsystems"][0]["attrs"]["../../x"] = "1".into(),
            "unknown attribute",
        ),
        (
            |v| v["subsystems"][0]["allow_any_host"] = true.into(),
            "allow_any_host cannot",
        ),
        (
            |v| v["hosts"] = serde_json::json!([]),
            "not in the configuration",
        ),
        (
            |v| v["subsystems"][0]["namespaces"][0]["nsid"] = 0.into(),
            "reserved",
        ),
        (
            |v| v["subsystems"][0]["namespaces"][0]["p2pmem"] = "yes".into(),
            "not a p2pmem setting",
        ),
        (
            |v| v["ports"][0]["subsystems"] = serde_json::json!(["nqn.t"]),
            "nqn.t",
        ),
        (
            |v| v["ports"][0]["attrs"]["addr_traddr"] = "a\nb".into(),
            "newline",
        ),
        (|v| v["extra"] = 1.into(), "unknown field"),
    ];
    for (edit, want) in cases {
        let mut v = saved_json();
        edit(&mut v);
        let e = load(v).unwrap_err();
        assert!(e.contains(want), "{want:?} not in {e:?}");
    }
}

proptest::proptest! {
    #[test]
    fn log_lines_and_transports_never_panic(s in "\\PC*") {
        let _ = parse_using_line(&s);
        let _ = parse_using_line(&format!("nvmet: using p2pmem on {s} for nsid {s}"));
        let t = Transport::parse(&s);
        proptest::prop_assert_eq!(t.as_str(), s.trim());
    }
}
