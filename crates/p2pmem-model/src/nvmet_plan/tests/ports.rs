//! Provider choice per RDMA controller, and transports that never use p2pmem.

use super::*;

fn port(id: u16, trtype: &str, subs: &[&str]) -> Port {
    Port {
        id,
        attrs: [("addr_trtype", trtype), ("addr_traddr", "10.0.0.1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        subsystems: subs.iter().map(|s| s.to_string()).collect(),
    }
}

fn target(namespaces: Vec<Namespace>, ports: Vec<Port>) -> TargetConfig {
    TargetConfig {
        hosts: vec![],
        subsystems: vec![Subsystem {
            nqn: "nqn.s".into(),
            allow_any_host: true,
            attrs: BTreeMap::new(),
            allowed_hosts: vec![],
            namespaces,
        }],
        ports,
    }
}

fn plan(family: u32, cfg: &TargetConfig, devices: Vec<RdmaDevice>) -> TargetPlan {
    let t = topo();
    let r = rules(family, K612);
    let backing = cfg
        .subsystems
        .iter()
        .flat_map(|s| {
            s.namespaces
                .iter()
                .map(|n| ((s.nqn.clone(), n.nsid), nvme_block("05:00.0")))
        })
        .collect();
    let facts: Vec<PortFacts> = cfg
        .ports
        .iter()
        .map(|p| PortFacts {
            id: p.id,
            devices: devices.clone(),
            matched_by: "test".into(),
        })
        .collect();
    plan_target(
        Env {
            topo: &t,
            rules: &r,
        },
        cfg,
        &backing,
        &facts,
    )
}

fn nic(name: &str, b: Option<&str>) -> RdmaDevice {
    RdmaDevice {
        name: name.into(),
        bdf: b.map(bdf),
    }
}

#[test]
fn rdma_controllers_get_a_provider_per_namespace() {
    let cfg = target(
        vec![
            ns(1, dev("03:00.0"), true),
            ns(2, P2pmemSetting::Auto, true),
            ns(3, dev("06:00.0"), false),
            ns(4, P2pmemSetting::Off, true),
        ],
        vec![port(1, "rdma", &["nqn.s"])],
    );
    let p = plan(
        15,
        &cfg,
        vec![nic("mlx5_0", Some("08:00.0")), nic("rxe0", None)],
    );
    let ctrls = &p.ports[0].controllers;
    assert_eq!(p.ports[0].never, None);
    assert_eq!(p.ports[0].p2pmem_namespaces, 3);
    let out: Vec<&CtrlOutcome> = ctrls[0].namespaces.iter().map(|n| &n.outcome).collect();
    assert_eq!(
        out[0],
        &CtrlOutcome::Uses {
            provider: bdf("03:00.0"),
            kernel_log: "nvmet: using p2pmem on 0000:03:00.0 for nsid 1".into()
        }
    );
    assert_eq!(
        out[1],
        &CtrlOutcome::Random {
            providers: vec![bdf("03:00.0"), bdf("04:00.0")],
            distance: Some(8)
        }
    );
    assert!(
        matches!(out[2], CtrlOutcome::NotEnabled { .. }),
        "{:?}",
        out[2]
    );
    assert_eq!(ctrls[1].no_p2p_client, Some(SOFT_RDMA));
    assert!(ctrls[1].namespaces.is_empty());
}

#[test]
fn a_chosen_provider_out_of_the_nics_reach_is_skipped_silently() {
    // Enabled already (e.g. under another CPU rule), NIC on another root port.
    let cfg = target(
        vec![ns(1, dev("03:00.0"), true)],
        vec![port(1, "rdma", &["nqn.s"])],
    );
    let p = plan(15, &cfg, vec![nic("mlx5_1", Some("07:00.0"))]);
    let CtrlOutcome::Skipped {
        provider,
        kernel_log,
    } = &p.ports[0].controllers[0].namespaces[0].outcome
    else {
        panic!("{:?}", p.ports[0])
    };
    assert_eq!(*provider, bdf("03:00.0"));
    assert_eq!(kernel_log.len(), 1, "{kernel_log:?}");
    let cfg = target(
        vec![ns(1, P2pmemSetting::Auto, true)],
        vec![port(1, "rdma", &["nqn.s"])],
    );
    let p = plan(15, &cfg, vec![nic("mlx5_1", Some("07:00.0"))]);
    assert_eq!(
        p.ports[0].controllers[0].namespaces[0].outcome,
        CtrlOutcome::NoProvider {
            kernel_log: "nvmet: no peer-to-peer memory is available that's supported by mlx5_1 and /dev/nvme2n1".into()
        }
    );
}

#[test]
fn tcp_and_loop_ports_never_use_p2pmem() {
    let cfg = target(
        vec![ns(1, P2pmemSetting::Auto, true)],
        vec![port(1, "tcp", &["nqn.s"]), port(2, "loop", &["nqn.s"])],
    );
    let p = plan(15, &cfg, vec![nic("mlx5_0", Some("08:00.0"))]);
    for pp in &p.ports {
        assert!(
            pp.never.is_some_and(|w| w.contains("never use p2pmem")),
            "{pp:?}"
        );
        assert!(pp.controllers.is_empty());
    }
}
