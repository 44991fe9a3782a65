use super::*;
use crate::topology::tests::{bdf, func};
use crate::topology::{Function, P2pmemInfo};

const V6_12: KernelVersion = KernelVersion::new(6, 12, 117);

fn rules(family: u32) -> Rules {
    Rules {
        kernel: V6_12,
        cpu: CpuInfo {
            vendor_id: Some("AuthenticAMD".into()),
            family: Some(family),
            model_name: None,
        },
    }
}

fn provider(mut f: Function) -> Function {
    f.p2pmem = Some(P2pmemInfo {
        size: Some(16 << 20),
        available: Some(16 << 20),
        published: Some(true),
    });
    f
}

/// q35-like: host bridge 00:00.0 (8086:29c0), a switch below root port 00:04.0 with
/// endpoints 03:00.0 and 04:00.0, an endpoint on root port 00:05.0, a multi-function
/// pair 06:00.0/.1 under root port 00:07.0 whose ACS control is `rp7_acs`.
fn q35(rp7_acs: u16) -> Topology {
    let mut hb = func(&["00:00.0"], None, None);
    hb.vendor = 0x8086;
    hb.device = 0x29c0;
    let mut mf0 = func(&["00:07.0", "06:00.0"], Some(0), None);
    let mut mf1 = func(&["00:07.0", "06:00.1"], Some(0), None);
    mf0.driver = Some("nvme".into());
    mf1.driver = Some("nvme".into());
    Topology::new(vec![
        hb,
        func(&["00:04.0"], Some(4), Some(0)),
        func(&["00:04.0", "01:00.0"], Some(5), None),
        func(&["00:04.0", "01:00.0", "02:00.0"], Some(6), None),
        func(&["00:04.0", "01:00.0", "02:01.0"], Some(6), None),
        provider(func(
            &["00:04.0", "01:00.0", "02:00.0", "03:00.0"],
            Some(0),
            None,
        )),
        provider(func(
            &["00:04.0", "01:00.0", "02:01.0", "04:00.0"],
            Some(0),
            None,
        )),
        func(&["00:05.0"], Some(4), Some(0)),
        provider(func(&["00:05.0", "05:00.0"], Some(0), None)),
        func(&["00:07.0"], Some(4), Some(rp7_acs)),
        provider(mf0),
        mf1,
    ])
    .unwrap()
}

#[test]
fn distances_follow_the_kernel_table() {
    let t = q35(0);
    let r = rules(15);
    let d = |p: &str, c: &str| decide(&t, &r, bdf(p), bdf(c)).unwrap();
    assert_eq!(d("03:00.0", "03:00.0").walk_distance, 0);
    assert_eq!(d("06:00.0", "06:00.1").walk_distance, 2);
    assert_eq!(d("03:00.0", "04:00.0").walk_distance, 4);
    assert_eq!(
        d("03:00.0", "05:00.0").walk_distance,
        6,
        "4 + 2, no common device"
    );
    let same_switch = d("03:00.0", "04:00.0");
    assert_eq!(same_switch.map_type, Some(MapType::BusAddr));
    assert_eq!(same_switch.common_upstream, Some(bdf("01:00.0")));
    assert!(same_switch.messages.is_empty());
}

#[test]
fn cross_root_port_needs_zen_on_q35() {
    let t = q35(0);
    let v = decide(&t, &rules(15), bdf("05:00.0"), bdf("04:00.0")).unwrap();
    assert_eq!(v.map_type, Some(MapType::NotSupported));
    assert_eq!(v.supported, Some(false));
    assert_eq!(
        v.messages.len(),
        1,
        "no whitelist warning without an ACS redirect"
    );
    assert_eq!(v.messages[0].line, "nvme 0000:04:00.0: cannot be used for peer-to-peer DMA as the client and provider (0000:05:00.0) do not share an upstream bridge or whitelisted host bridge");
    let v = decide(&t, &rules(23), bdf("05:00.0"), bdf("04:00.0")).unwrap();
    assert_eq!(v.map_type, Some(MapType::ThruHostBridge));
    assert!(v.messages.is_empty());
    assert!(matches!(v.rule_h, Some(RuleH::AmdZen { .. })));
}

#[test]
fn acs_redirect_on_the_common_root_port() {
    // pci=config_acs=11xx@0000:00:07.0 (RR + CR) as in the lab notes.
    let t = q35(0x000c);
    let v = decide(&t, &rules(15), bdf("06:00.0"), bdf("06:00.1")).unwrap();
    assert_eq!(v.common_upstream, Some(bdf("00:07.0")));
    assert_eq!(v.acs_redirect, vec![bdf("00:07.0")]);
    assert_eq!(v.map_type, Some(MapType::NotSupported));
    let lines: Vec<&str> = v.messages.iter().map(|m| m.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "nvme 0000:06:00.1: ACS redirect is set between the client and provider (0000:06:00.0)",
            "nvme 0000:06:00.1: to disable ACS redirect for this path, add the kernel parameter: pci=disable_acs_redir=0000:00:07.0",
            "pci 0000:00:00.0: Host bridge not in P2PDMA whitelist: 8086:29c0",
            "nvme 0000:06:00.1: cannot be used for peer-to-peer DMA as the client and provider (0000:06:00.0) do not share an upstream bridge or whitelisted host bridge",
        ]
    );
    assert_eq!(v.fix.as_deref(), Some("pci=disable_acs_redir=0000:00:07.0"));
    // Zen: allowed through the host bridge, with the ACS warnings only.
    let v = decide(&t, &rules(23), bdf("06:00.0"), bdf("06:00.1")).unwrap();
    assert_eq!(v.map_type, Some(MapType::ThruHostBridge));
    assert_eq!(v.messages.len(), 2);
    // Only EC counts too; SV/UF/TB/DT alone do not.
    let t = q35(0x0020);
    assert_eq!(
        decide(&t, &rules(15), bdf("06:00.0"), bdf("06:00.1"))
            .unwrap()
            .map_type,
        Some(MapType::NotSupported)
    );
    let t = q35(0x0053);
    assert_eq!(
        decide(&t, &rules(15), bdf("06:00.0"), bdf("06:00.1"))
            .unwrap()
            .map_type,
        Some(MapType::BusAddr)
    );
}

#[test]
fn acs_test_is_asymmetric() {
    // Redirect on the client's side below the common device counts; the provider's
    // side is tested up to and including the common device.
    let mut t = q35(0);
    let mut fns: Vec<Function> = t.functions().cloned().collect();
    for f in &mut fns {
        if f.bdf == bdf("02:01.0") {
            *f = func(&["00:04.0", "01:00.0", "02:01.0"], Some(6), Some(0x0004));
        }
    }
    t = Topology::new(fns).unwrap();
    let v = decide(&t, &rules(15), bdf("03:00.0"), bdf("04:00.0")).unwrap();
    assert_eq!(v.acs_redirect, vec![bdf("02:01.0")]);
    assert_eq!(
        v.acs_tests
            .iter()
            .filter(|a| a.side == Side::Client)
            .count(),
        2
    );
    let v = decide(&t, &rules(15), bdf("04:00.0"), bdf("03:00.0")).unwrap();
    assert_eq!(v.acs_redirect, vec![bdf("02:01.0")]);
    assert_eq!(
        v.acs_tests
            .iter()
            .filter(|a| a.side == Side::Provider)
            .count(),
        2
    );
}

#[test]
fn provider_with_acs_redirect_even_to_itself() {
    let t = Topology::new(vec![
        func(&["00:04.0"], Some(4), Some(0)),
        provider(func(&["00:04.0", "01:00.0"], Some(0), Some(0x0004))),
    ])
    .unwrap();
    let v = decide(&t, &rules(15), bdf("01:00.0"), bdf("01:00.0")).unwrap();
    assert_eq!(v.walk_distance, 0);
    assert_eq!(v.acs_redirect, vec![bdf("01:00.0")]);
    assert_eq!(
        v.map_type,
        Some(MapType::NotSupported),
        "no host bridge entry for an empty root bus 00.0"
    );
}

#[test]
fn unknown_acs_never_guesses() {
    let mut t = q35(0);
    let mut fns: Vec<Function> = t.functions().cloned().collect();
    for f in &mut fns {
        if let Some(cs) = &f.config {
            let bytes: Vec<u8> = (0..64).map(|_| 0).collect();
            let exposed = cs.exposed_len();
            let mut head = bytes;
            head[0] = 1;
            f.config = crate::config_space::ConfigSpace::new(&head, exposed).ok();
        }
    }
    t = Topology::new(fns).unwrap();
    let v = decide(&t, &rules(15), bdf("03:00.0"), bdf("04:00.0")).unwrap();
    assert_eq!(v.supported, None);
    assert_eq!(v.map_type, None);
    assert!(!v.acs_unknown.is_empty());
    assert!(v.unknowns[0].contains("run as root"), "{:?}", v.unknowns);
    // With a Zen CPU the pair is allowed either way; only the map type stays open.
    let v = decide(&t, &rules(23), bdf("03:00.0"), bdf("04:00.0")).unwrap();
    assert_eq!((v.supported, v.map_type), (Some(true), None));
    // Across root ports ACS does not matter: the answer is certain.
    let v = decide(&t, &rules(15), bdf("05:00.0"), bdf("04:00.0")).unwrap();
    assert_eq!(v.supported, Some(false));
}

#[test]
fn unknown_function_is_an_error() {
    let t = q35(0);
    let e = decide(&t, &rules(15), bdf("09:00.0"), bdf("03:00.0")).unwrap_err();
    assert!(e.to_string().contains("provider 0000:09:00.0"));
}

#[test]
fn whitelisted_host_bridges() {
    // An Intel Skylake-E host bridge allows cross-root-port P2P within it.
    let mut hb = func(&["00:00.0"], None, None);
    hb.vendor = 0x8086;
    hb.device = 0x2030;
    let mut t: Vec<Function> = q35(0)
        .functions()
        .filter(|f| f.bdf != bdf("00:00.0"))
        .cloned()
        .collect();
    t.push(hb);
    let t = Topology::new(t).unwrap();
    let v = decide(&t, &rules(15), bdf("05:00.0"), bdf("04:00.0")).unwrap();
    assert_eq!(v.map_type, Some(MapType::ThruHostBridge));
    assert!(matches!(v.rule_h, Some(RuleH::Whitelisted { .. })));
    // 0x2030 arrived in 5.6 (bc123a515cb7): refused on 5.5, allowed from 5.6.
    let on = |minor| {
        let r = Rules {
            kernel: KernelVersion::new(5, minor, 0),
            ..rules(15)
        };
        decide(&t, &r, bdf("05:00.0"), bdf("04:00.0"))
            .unwrap()
            .map_type
    };
    assert_eq!(on(5), Some(MapType::NotSupported));
    assert_eq!(on(6), Some(MapType::ThruHostBridge));
}

#[test]
fn same_host_bridge_only_entries_refuse_across_bridges_silently() {
    let mut hb0 = func(&["00:00.0"], None, None);
    hb0.vendor = 0x8086;
    hb0.device = 0x3c00;
    let mut hb80 = func(&["80:00.0"], None, None);
    hb80.vendor = 0x8086;
    hb80.device = 0x3c00;
    let t = Topology::new(vec![
        hb0,
        hb80,
        func(&["00:04.0"], Some(4), Some(0)),
        provider(func(&["00:04.0", "01:00.0"], Some(0), None)),
        func(&["00:05.0"], Some(4), Some(0)),
        func(&["00:05.0", "02:00.0"], Some(0), None),
        func(&["80:01.0"], Some(4), Some(0)),
        func(&["80:01.0", "81:00.0"], Some(0), None),
    ])
    .unwrap();
    let v = decide(&t, &rules(15), bdf("01:00.0"), bdf("02:00.0")).unwrap();
    assert_eq!(v.map_type, Some(MapType::ThruHostBridge));
    let v = decide(&t, &rules(15), bdf("01:00.0"), bdf("81:00.0")).unwrap();
    assert_eq!(v.map_type, Some(MapType::NotSupported));
    match v.rule_h {
        Some(RuleH::Refused { bridges }) => {
            assert_eq!(bridges.len(), 1, "the kernel stops at the first refusal")
        }
        other => panic!("{other:?}"),
    }
}
