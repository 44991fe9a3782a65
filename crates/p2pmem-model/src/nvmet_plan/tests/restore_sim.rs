//! The restore planner against a configfs simulator that refuses what the kernel
//! refuses (EBUSY, EACCES, EINVAL, ENOTEMPTY...): every plan must apply cleanly and
//! reach the desired configuration, and a plan onto itself is empty.

use crate::nvmet_attr::{parse_p2pmem_show, P2pmemSetting};
use crate::nvmet_plan::config::*;
use crate::nvmet_plan::connections::*;
use crate::nvmet_plan::restore::*;
use crate::topology::tests::bdf;
use proptest::prelude::*;
use std::collections::BTreeMap;

struct Sim(TargetConfig);

impl Sim {
    fn sub(&mut self, nqn: &str) -> Result<&mut Subsystem, &'static str> {
        self.0
            .subsystems
            .iter_mut()
            .find(|s| s.nqn == nqn)
            .ok_or("ENOENT")
    }

    fn port(&mut self, id: u16) -> Result<&mut Port, &'static str> {
        self.0.ports.iter_mut().find(|p| p.id == id).ok_or("ENOENT")
    }

    fn apply(&mut self, step: &Step) -> Result<(), &'static str> {
        let c = &mut self.0;
        match step {
            Step::MkHost { host } => {
                if c.hosts.contains(host) {
                    return Err("EEXIST");
                }
                c.hosts.push(host.clone());
            }
            Step::RmHost { host } => {
                if c.subsystems.iter().any(|s| s.allowed_hosts.contains(host)) {
                    return Err("EBUSY");
                }
                c.hosts.retain(|h| h != host);
            }
            Step::MkSubsystem { nqn } => {
                if c.subsystem(nqn).is_some() {
                    return Err("EEXIST");
                }
                c.subsystems.push(Subsystem {
                    nqn: nqn.clone(),
                    allow_any_host: false,
                    attrs: BTreeMap::new(),
                    allowed_hosts: vec![],
                    namespaces: vec![],
                });
            }
            Step::RmSubsystem { nqn } => {
                if c.ports.iter().any(|p| p.subsystems.contains(nqn)) {
                    return Err("EBUSY");
                }
                let s = self.sub(nqn)?;
                if !s.namespaces.is_empty() || !s.allowed_hosts.is_empty() {
                    return Err("ENOTEMPTY");
                }
                self.0.subsystems.retain(|s| &s.nqn != nqn);
            }
            Step::SetSubsystem {
                nqn, attr, value, ..
            } => {
                let s = self.sub(nqn)?;
                if attr == "attr_allow_any_host" {
                    if value == "1" && !s.allowed_hosts.is_empty() {
                        return Err("EINVAL");
                    }
                    s.allow_any_host = value == "1";
                } else {
                    s.attrs.insert(attr.clone(), value.clone());
                }
            }
            Step::AllowHost { nqn, host } => {
                if !self.0.hosts.contains(host) {
                    return Err("ENOENT");
                }
                let s = self.sub(nqn)?;
                if s.allow_any_host {
                    return Err("EINVAL");
                }
                if s.allowed_hosts.contains(host) {
                    return Err("EEXIST");
                }
                s.allowed_hosts.push(host.clone());
            }
            Step::DisallowHost { nqn, host } => {
                let s = self.sub(nqn)?;
                if !s.allowed_hosts.contains(host) {
                    return Err("ENOENT");
                }
                s.allowed_hosts.retain(|h| h != host);
            }
            Step::MkNamespace { nqn, nsid } => {
                let s = self.sub(nqn)?;
                if s.namespaces.iter().any(|n| n.nsid == *nsid) {
                    return Err("EEXIST");
                }
                s.namespaces.push(Namespace {
                    p2pmem: Some(P2pmemSetting::Off),
                    buffered_io: Some(false),
                    ..Namespace::new(*nsid, "")
                });
            }
            Step::RmNamespace { nqn, nsid } => {
                let s = self.sub(nqn)?;
                s.namespaces.retain(|n| n.nsid != *nsid);
            }
            Step::SetNamespace {
                nqn,
                nsid,
                attr,
                value,
                ..
            } => {
                let s = self.sub(nqn)?;
                let n = s
                    .namespaces
                    .iter_mut()
                    .find(|n| n.nsid == *nsid)
                    .ok_or("ENOENT")?;
                match attr.as_str() {
                    "enable" => {
                        if value == "1" && n.device_path.is_empty() {
                            return Err("ENOENT");
                        }
                        n.enable = value == "1";
                    }
                    _ if n.enable => {
                        return Err(if attr == "buffered_io" {
                            "EINVAL"
                        } else {
                            "EBUSY"
                        });
                    }
                    "device_path" => n.device_path = value.clone(),
                    "device_uuid" => n.device_uuid = Some(value.clone()),
                    "device_nguid" => n.device_nguid = Some(value.clone()),
                    "buffered_io" => n.buffered_io = Some(value == "1"),
                    "p2pmem" => {
                        n.p2pmem = Some(parse_p2pmem_show(value.as_bytes()).map_err(|_| "ENODEV")?)
                    }
                    _ => return Err("ENOENT"),
                }
            }
            Step::MkPort { id } => {
                if c.port(*id).is_some() {
                    return Err("EEXIST");
                }
                c.ports.push(Port {
                    id: *id,
                    attrs: BTreeMap::new(),
                    subsystems: vec![],
                });
            }
            Step::RmPort { id } => {
                if !self.port(*id)?.subsystems.is_empty() {
                    return Err("ENOTEMPTY");
                }
                self.0.ports.retain(|p| p.id != *id);
            }
            Step::SetPort {
                id, attr, value, ..
            } => {
                let p = self.port(*id)?;
                if !p.subsystems.is_empty() {
                    return Err("EACCES");
                }
                p.attrs.insert(attr.clone(), value.clone());
            }
            Step::LinkPort { id, nqn } => {
                if self.0.subsystem(nqn).is_none() {
                    return Err("ENOENT");
                }
                let p = self.port(*id)?;
                if p.subsystems.contains(nqn) {
                    return Err("EEXIST");
                }
                p.subsystems.push(nqn.clone());
            }
            Step::UnlinkPort { id, nqn } => {
                let p = self.port(*id)?;
                if !p.subsystems.contains(nqn) {
                    return Err("ENOENT");
                }
                p.subsystems.retain(|n| n != nqn);
            }
        }
        Ok(())
    }
}

fn converge(from: &TargetConfig, to: &TargetConfig) -> Vec<Step> {
    let steps = plan_restore(from, to);
    let mut sim = Sim(from.clone());
    for s in &steps {
        if let Err(e) = sim.apply(s) {
            panic!("step `{s}` fails with {e}; plan:\n{steps:#?}");
        }
    }
    sim.0.normalize();
    assert_eq!(&sim.0, to, "plan:\n{steps:#?}");
    assert!(plan_restore(to, to).is_empty());
    steps
}

fn attrs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn full() -> TargetConfig {
    let mut c = TargetConfig {
        hosts: vec!["nqn.h1".into(), "nqn.h2".into()],
        subsystems: vec![
            Subsystem {
                nqn: "nqn.a".into(),
                allow_any_host: false,
                attrs: attrs(&[
                    ("attr_serial", "s1"),
                    ("attr_cntlid_min", "1"),
                    ("attr_cntlid_max", "100"),
                ]),
                allowed_hosts: vec!["nqn.h1".into()],
                namespaces: vec![Namespace {
                    p2pmem: Some(P2pmemSetting::Device(bdf("03:00.0"))),
                    buffered_io: Some(false),
                    device_uuid: Some("u1".into()),
                    enable: true,
                    ..Namespace::new(1, "/dev/nvme1n1")
                }],
            },
            Subsystem {
                nqn: "nqn.b".into(),
                allow_any_host: true,
                attrs: BTreeMap::new(),
                allowed_hosts: vec![],
                namespaces: vec![],
            },
        ],
        ports: vec![Port {
            id: 1,
            attrs: attrs(&[
                ("addr_trtype", "rdma"),
                ("addr_traddr", "10.0.0.1"),
                ("addr_tsas", "connected"),
            ]),
            subsystems: vec!["nqn.a".into(), "nqn.b".into()],
        }],
    };
    c.normalize();
    c
}

#[test]
fn empty_to_full_and_back() {
    let steps = converge(&TargetConfig::default(), &full());
    let text: Vec<String> = steps.iter().map(ToString::to_string).collect();
    // p2pmem is written before enable, hosts are made before they are allowed.
    let pos = |s: &str| {
        text.iter()
            .position(|t| t == s)
            .unwrap_or_else(|| panic!("{s} not in {text:#?}"))
    };
    assert!(
        pos("write 0000:03:00.0 to subsystems/nqn.a/namespaces/1/p2pmem")
            < pos("write 1 to subsystems/nqn.a/namespaces/1/enable (was 0)")
    );
    assert!(
        pos("mkdir hosts/nqn.h1")
            < pos("link subsystems/nqn.a/allowed_hosts/nqn.h1 -> hosts/nqn.h1")
    );
    converge(&full(), &TargetConfig::default());
}

#[test]
fn changing_p2pmem_of_an_enabled_namespace_disables_it_first() {
    let mut to = full();
    to.subsystems[0].namespaces[0].p2pmem = Some(P2pmemSetting::Auto);
    let steps = converge(&full(), &to);
    let text: Vec<String> = steps.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "write 0 to subsystems/nqn.a/namespaces/1/enable (was 1)",
            "write 1 (auto) to subsystems/nqn.a/namespaces/1/p2pmem (was 0000:03:00.0)",
            "write 1 to subsystems/nqn.a/namespaces/1/enable (was 0)",
        ]
    );
}

#[test]
fn changing_a_linked_port_unlinks_and_relinks() {
    let mut to = full();
    to.ports[0]
        .attrs
        .insert("addr_traddr".into(), "10.0.0.2".into());
    let steps = converge(&full(), &to);
    assert!(matches!(steps[0], Step::UnlinkPort { .. }));
    assert!(matches!(steps.last(), Some(Step::LinkPort { .. })));
    let mut to = full();
    to.ports[0].attrs.insert("addr_trtype".into(), "tcp".into());
    to.ports[0].attrs.insert("addr_tsas".into(), "none".into());
    converge(&full(), &to);
}

#[test]
fn allow_any_host_flips_both_ways_around_host_links() {
    let mut to = full();
    to.subsystems[0].allow_any_host = true;
    to.subsystems[0].allowed_hosts.clear();
    to.subsystems[1].allow_any_host = false;
    to.subsystems[1].allowed_hosts = vec!["nqn.h2".into()];
    converge(&full(), &to);
    converge(&to, &full());
}

#[test]
fn cntlid_range_moves_up_without_crossing() {
    let mut to = full();
    to.subsystems[0].attrs = attrs(&[
        ("attr_serial", "s1"),
        ("attr_cntlid_min", "200"),
        ("attr_cntlid_max", "300"),
    ]);
    let steps = converge(&full(), &to);
    let names: Vec<String> = steps.iter().map(Step::path).collect();
    assert_eq!(
        names,
        [
            "subsystems/nqn.a/attr_cntlid_max",
            "subsystems/nqn.a/attr_cntlid_min"
        ]
    );
}

#[test]
fn guard_names_connected_hosts_and_unknowns() {
    let cur = full();
    let steps = plan_restore(&cur, &TargetConfig::default());
    let none = Connections::default();
    let blocked = guard(&cur, &none, &steps);
    assert!(!blocked.is_empty());
    assert!(blocked
        .iter()
        .all(|b| matches!(b.connected, Connected::Unknown(_))));
    let seen = Connections {
        debugfs: Some(vec![Controller {
            nqn: "nqn.a".into(),
            name: "ctrl1".into(),
            port: Some(1),
            hostnqn: Some("nqn.h1".into()),
        }]),
        ..Connections::default()
    };
    let blocked = guard(&cur, &seen, &steps);
    assert!(blocked
        .iter()
        .any(|b| b.connected == Connected::Yes(vec!["nqn.h1 (ctrl1 on port 1)".into()])));
    assert!(blocked
        .iter()
        .all(|b| !matches!(b.connected, Connected::Unknown(_))));
    // Loop ports: the local host is the only possible one, and it is visible.
    let mut lp = full();
    lp.ports[0]
        .attrs
        .insert("addr_trtype".into(), "loop".into());
    assert!(guard(&lp, &none, &plan_restore(&lp, &TargetConfig::default())).is_empty());
    let local = Connections {
        local_loop: vec!["nqn.b".into()],
        ..Connections::default()
    };
    assert_eq!(connected_subsystem(&lp, &local, "nqn.a"), Connected::No);
    assert!(matches!(connected_port(&lp, &local, 1), Connected::Yes(_)));
}

fn arb_config() -> impl Strategy<Value = TargetConfig> {
    let setting = prop_oneof![
        Just(P2pmemSetting::Off),
        Just(P2pmemSetting::Auto),
        Just(P2pmemSetting::Device(bdf("03:00.0"))),
    ];
    let ns = (
        1u32..4,
        prop::sample::select(vec!["/dev/a", "/dev/b"]),
        setting,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(nsid, path, s, en, bio)| Namespace {
            p2pmem: Some(s),
            buffered_io: Some(bio),
            enable: en,
            device_uuid: Some(format!("uuid-{path}")),
            ..Namespace::new(nsid, path)
        });
    let sub = (
        prop::sample::select(vec!["nqn.a", "nqn.b", "nqn.c"]),
        any::<bool>(),
        prop::sample::subsequence(vec!["nqn.h1", "nqn.h2"], 0..=2),
        prop::sample::select(vec!["s1", "s2"]),
        prop::collection::vec(ns, 0..3),
    )
        .prop_map(|(nqn, any_host, hosts, serial, namespaces)| Subsystem {
            nqn: nqn.into(),
            allow_any_host: any_host && hosts.is_empty(),
            attrs: attrs(&[("attr_serial", serial)]),
            allowed_hosts: hosts.into_iter().map(String::from).collect(),
            namespaces,
        });
    let port = (
        1u16..4,
        prop::sample::select(vec!["rdma", "tcp", "loop"]),
        prop::sample::select(vec!["10.0.0.1", "10.0.0.2"]),
        prop::sample::subsequence(vec!["nqn.a", "nqn.b", "nqn.c"], 0..=3),
    )
        .prop_map(|(id, t, a, subs)| Port {
            id,
            attrs: attrs(&[("addr_trtype", t), ("addr_traddr", a)]),
            subsystems: subs.into_iter().map(String::from).collect(),
        });
    (
        prop::collection::vec(sub, 0..3),
        prop::collection::vec(port, 0..3),
    )
        .prop_map(|(subs, ports)| {
            let mut c = TargetConfig {
                hosts: vec!["nqn.h1".into(), "nqn.h2".into()],
                subsystems: vec![],
                ports: vec![],
            };
            for mut s in subs {
                if c.subsystem(&s.nqn).is_none() {
                    s.namespaces.sort_by_key(|n| n.nsid);
                    s.namespaces.dedup_by_key(|n| n.nsid);
                    c.subsystems.push(s);
                }
            }
            for mut p in ports {
                if c.port(p.id).is_none() {
                    p.subsystems.retain(|n| c.subsystem(n).is_some());
                    c.ports.push(p);
                }
            }
            c.normalize();
            c
        })
}

proptest! {
    #[test]
    fn any_plan_applies_cleanly_and_converges(a in arb_config(), b in arb_config()) {
        prop_assert!(a.validate().is_ok() && b.validate().is_ok());
        converge(&a, &b);
    }

    /// `nvmet restore` killed after any number of its steps, then run again: the second
    /// run plans from wherever the first stopped and reaches the saved configuration
    /// (issue 13, interrupted configuration). The state a kill leaves is a prefix of the
    /// plan applied: each step is one syscall, which configfs completes or refuses whole.
    #[test]
    fn a_restore_interrupted_after_any_step_converges_when_run_again(
        a in arb_config(),
        b in arb_config(),
        cut in 0.0f64..=1.0,
    ) {
        let steps = plan_restore(&a, &b);
        let k = ((steps.len() as f64) * cut).floor() as usize;
        let mut sim = Sim(a.clone());
        for s in &steps[..k.min(steps.len())] {
            sim.apply(s).unwrap_or_else(|e| panic!("step `{s}` fails with {e}"));
        }
        sim.0.normalize();
        prop_assert!(sim.0.validate().is_ok(), "a half-restored target is still a valid configuration");
        converge(&sim.0, &b);
    }
}
