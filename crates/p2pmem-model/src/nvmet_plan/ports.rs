//! Which provider each RDMA controller would get for each namespace with `p2pmem` set,
//! replaying `nvmet_p2pmem_ns_add_p2p`: a chosen device is checked against the RDMA
//! device alone and silently skipped when out of reach; `auto` asks
//! `pci_p2pmem_find_many` for [RDMA device, namespace]. Every transport but rdma passes
//! no P2P client, and neither does a soft RDMA device.

use super::config::{Port, TargetConfig};
use super::facts;
use super::preflight::{join, namespace, BackingFacts, EnableOutcome, Env, NsPreflight};
use crate::bdf::Bdf;
use crate::nvmet_attr::{P2pmemSetting, NVMET_PREFIX};
use crate::select;
use serde::Serialize;
use std::collections::BTreeMap;

/// An RDMA device a port's connections can arrive on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RdmaDevice {
    /// `mlx5_0`, `rxe0`.
    pub name: String,
    /// Its PCI function; `None` for soft RDMA (rxe, siw).
    pub bdf: Option<Bdf>,
}

/// The RDMA devices behind one port, as the Linux layer matched them to `addr_traddr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortFacts {
    /// The port.
    pub id: u16,
    /// The devices a connection can arrive on.
    pub devices: Vec<RdmaDevice>,
    /// How they were matched (`traddr on eth0`, `any address: every RDMA device`).
    pub matched_by: String,
}

/// What one controller gets for one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CtrlOutcome {
    /// This provider: the kernel logs `nvmet: using p2pmem on <BDF> for nsid <n>`.
    Uses {
        /// The provider.
        provider: Bdf,
        /// The line.
        kernel_log: String,
    },
    /// One of these, at random (a tie in `pci_p2pmem_find_many`).
    Random {
        /// The tied providers.
        providers: Vec<Bdf>,
        /// Their total distance.
        distance: Option<u32>,
    },
    /// The chosen device cannot serve the RDMA device: silently skipped, host memory.
    Skipped {
        /// The chosen device.
        provider: Bdf,
        /// The PCI warnings, the only log.
        kernel_log: Vec<String>,
    },
    /// `auto` found nothing for both clients: host memory.
    NoProvider {
        /// The `nvmet: ` line.
        kernel_log: String,
    },
    /// The namespace's enable fails, so no controller sees it.
    NotEnabled {
        /// Why.
        why: String,
    },
    /// Depends on something unknown.
    Undetermined {
        /// What.
        why: String,
    },
}

/// One namespace on one controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CtrlNs {
    /// The subsystem.
    pub nqn: String,
    /// The namespace.
    pub nsid: u32,
    /// The outcome.
    #[serde(flatten)]
    pub outcome: CtrlOutcome,
}

/// The controllers created through one RDMA device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControllerPlan {
    /// The RDMA device.
    pub rdma_device: String,
    /// Its PCI function.
    pub rdma_bdf: Option<Bdf>,
    /// Why it passes no P2P client (soft RDMA), if so.
    pub no_p2p_client: Option<&'static str>,
    /// Each namespace with `p2pmem` set, of each subsystem on the port.
    pub namespaces: Vec<CtrlNs>,
}

/// One port's P2P picture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortPlan {
    /// The port.
    pub port: u16,
    /// `addr_trtype`.
    pub trtype: String,
    /// `addr_traddr`.
    pub traddr: String,
    /// Why controllers on this port never use p2pmem (every transport but rdma).
    pub never: Option<&'static str>,
    /// How RDMA devices were matched to the port's address.
    pub matched_by: Option<String>,
    /// One entry per RDMA device.
    pub controllers: Vec<ControllerPlan>,
    /// Namespaces with `p2pmem` set in the port's subsystems.
    pub p2pmem_namespaces: usize,
}

/// The pre-flight of a whole target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetPlan {
    /// Every namespace.
    pub namespaces: Vec<NsPreflight>,
    /// Every port.
    pub ports: Vec<PortPlan>,
}

/// Pre-flight of every namespace of `config` (with `backing` keyed by (nqn, nsid)) and
/// the provider choice on every port (`ports` gives the RDMA devices of rdma ports).
pub fn plan_target(
    env: Env<'_>,
    config: &TargetConfig,
    backing: &BTreeMap<(String, u32), BackingFacts>,
    ports: &[PortFacts],
) -> TargetPlan {
    let unknown = BackingFacts::Unknown {
        why: "not examined".into(),
    };
    let namespaces: Vec<NsPreflight> = config
        .subsystems
        .iter()
        .flat_map(|s| s.namespaces.iter().map(move |n| (s, n)))
        .map(|(s, n)| {
            let b = backing.get(&(s.nqn.clone(), n.nsid)).unwrap_or(&unknown);
            namespace(env, &s.nqn, n, b, None)
        })
        .collect();
    let plans = config
        .ports
        .iter()
        .map(|p| port_plan(env, p, &namespaces, ports.iter().find(|f| f.id == p.id)))
        .collect();
    TargetPlan {
        namespaces,
        ports: plans,
    }
}

fn port_plan(
    env: Env<'_>,
    port: &Port,
    pre: &[NsPreflight],
    facts: Option<&PortFacts>,
) -> PortPlan {
    let mine: Vec<&NsPreflight> = pre
        .iter()
        .filter(|n| port.subsystems.contains(&n.nqn) && n.setting != P2pmemSetting::Off)
        .collect();
    let mut plan = PortPlan {
        port: port.id,
        trtype: port.attr("addr_trtype").to_string(),
        traddr: port.attr("addr_traddr").to_string(),
        never: port.transport().never_p2pmem(),
        matched_by: facts.map(|f| f.matched_by.clone()),
        controllers: Vec::new(),
        p2pmem_namespaces: mine.len(),
    };
    if plan.never.is_some() {
        return plan;
    }
    let Some(facts) = facts else {
        plan.matched_by = Some("the port's RDMA devices were not examined".into());
        return plan;
    };
    for dev in &facts.devices {
        let Some(client) = dev.bdf else {
            plan.controllers.push(ControllerPlan {
                rdma_device: dev.name.clone(),
                rdma_bdf: None,
                no_p2p_client: Some(facts::SOFT_RDMA),
                namespaces: Vec::new(),
            });
            continue;
        };
        let namespaces = mine
            .iter()
            .map(|n| CtrlNs {
                nqn: n.nqn.clone(),
                nsid: n.nsid,
                outcome: ctrl_outcome(env, dev, client, n),
            })
            .collect();
        plan.controllers.push(ControllerPlan {
            rdma_device: dev.name.clone(),
            rdma_bdf: Some(client),
            no_p2p_client: None,
            namespaces,
        });
    }
    plan
}

fn ctrl_outcome(env: Env<'_>, dev: &RdmaDevice, client: Bdf, n: &NsPreflight) -> CtrlOutcome {
    match (&n.enable, n.enabled) {
        (EnableOutcome::Fails { failure, .. }, false) => {
            return CtrlOutcome::NotEnabled {
                why: failure.to_string(),
            }
        }
        (EnableOutcome::BackendFails { why, .. }, false) => {
            return CtrlOutcome::NotEnabled { why: why.clone() }
        }
        _ => {}
    }
    let using = |b: Bdf| format!("{NVMET_PREFIX}{}", facts::using_p2pmem_line(b, n.nsid));
    match n.setting {
        P2pmemSetting::Off => CtrlOutcome::Undetermined {
            why: "p2pmem is off".into(),
        },
        P2pmemSetting::Device(dev_bdf) => {
            match select::check(env.topo, env.rules, dev_bdf, &[client]) {
                Ok(c) => match c.supported {
                    Some(true) => CtrlOutcome::Uses {
                        provider: dev_bdf,
                        kernel_log: using(dev_bdf),
                    },
                    Some(false) => CtrlOutcome::Skipped {
                        provider: dev_bdf,
                        kernel_log: c.messages,
                    },
                    None => CtrlOutcome::Undetermined {
                        why: c.unknowns.join("; "),
                    },
                },
                Err(e) => CtrlOutcome::Undetermined { why: e.to_string() },
            }
        }
        P2pmemSetting::Auto => {
            let no_provider = || CtrlOutcome::NoProvider {
                kernel_log: format!(
                    "{NVMET_PREFIX}{}",
                    facts::no_provider_for_ctrl_line(&dev.name, &n.device_path)
                ),
            };
            let ns_pci = match &n.backing {
                BackingFacts::Block { pci: Some(b), .. } => *b,
                BackingFacts::Block { pci: None, .. } => return no_provider(),
                _ => {
                    return CtrlOutcome::Undetermined {
                        why: "the namespace's device is not a known block device".into(),
                    }
                }
            };
            match select::find(env.topo, env.rules, &[client, ns_pci]) {
                Ok(f) => match f.best.as_slice() {
                    [one] => CtrlOutcome::Uses {
                        provider: *one,
                        kernel_log: using(*one),
                    },
                    [] if f.maybe.is_empty() => no_provider(),
                    [] => CtrlOutcome::Undetermined {
                        why: format!("ACS unreadable on the paths to {}", join(&f.maybe)),
                    },
                    many => CtrlOutcome::Random {
                        providers: many.to_vec(),
                        distance: f.best_distance,
                    },
                },
                Err(e) => CtrlOutcome::Undetermined { why: e.to_string() },
            }
        }
    }
}
