//! The configfs steps that turn one target configuration into another, in an order the
//! kernel accepts, and which of them would disconnect hosts.
//!
//! The kernel's ordering rules: a namespace's `device_path`, `device_uuid`,
//! `device_nguid`, `buffered_io` and `p2pmem` change only while it is disabled; a port's
//! attributes change only while it is disabled (no subsystem linked); hosts can be
//! linked into `allowed_hosts` only while `attr_allow_any_host` is 0 and it can become 1
//! only with no hosts linked; objects are removed after their links and children.
//! Removing a port-subsystem link or a subsystem drops the controllers on it.
//! [`plan_restore`] of a configuration onto itself is empty, so a restore is idempotent.

use super::config::{Namespace, Port, Subsystem, TargetConfig};
use super::facts::{self, Op, Transport};
use crate::nvmet_attr::P2pmemSetting;
use serde::Serialize;
use std::fmt;

/// One configfs operation. Paths are relative to the nvmet directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// `mkdir hosts/<host>`.
    MkHost {
        /// Host NQN.
        host: String,
    },
    /// `rmdir hosts/<host>`.
    RmHost {
        /// Host NQN.
        host: String,
    },
    /// `mkdir subsystems/<nqn>`.
    MkSubsystem {
        /// Subsystem NQN.
        nqn: String,
    },
    /// `rmdir subsystems/<nqn>` (drops its controllers).
    RmSubsystem {
        /// Subsystem NQN.
        nqn: String,
    },
    /// Write a subsystem attribute.
    SetSubsystem {
        /// Subsystem NQN.
        nqn: String,
        /// File name.
        attr: String,
        /// Value written.
        value: String,
        /// Value before, when known.
        old: Option<String>,
    },
    /// `ln -s hosts/<host> subsystems/<nqn>/allowed_hosts/<host>`.
    AllowHost {
        /// Subsystem NQN.
        nqn: String,
        /// Host NQN.
        host: String,
    },
    /// Remove that link.
    DisallowHost {
        /// Subsystem NQN.
        nqn: String,
        /// Host NQN.
        host: String,
    },
    /// `mkdir subsystems/<nqn>/namespaces/<nsid>`.
    MkNamespace {
        /// Subsystem NQN.
        nqn: String,
        /// Namespace id.
        nsid: u32,
    },
    /// `rmdir` of that namespace.
    RmNamespace {
        /// Subsystem NQN.
        nqn: String,
        /// Namespace id.
        nsid: u32,
    },
    /// Write a namespace attribute.
    SetNamespace {
        /// Subsystem NQN.
        nqn: String,
        /// Namespace id.
        nsid: u32,
        /// File name.
        attr: String,
        /// Value written (for `p2pmem` the kernel's form: `0`, `1` or a BDF).
        value: String,
        /// Value before, when known.
        old: Option<String>,
    },
    /// `mkdir ports/<id>`.
    MkPort {
        /// Port id.
        id: u16,
    },
    /// `rmdir ports/<id>`.
    RmPort {
        /// Port id.
        id: u16,
    },
    /// Write a port attribute.
    SetPort {
        /// Port id.
        id: u16,
        /// File name.
        attr: String,
        /// Value written.
        value: String,
        /// Value before, when known.
        old: Option<String>,
    },
    /// `ln -s subsystems/<nqn> ports/<id>/subsystems/<nqn>` (the first link enables
    /// the port).
    LinkPort {
        /// Port id.
        id: u16,
        /// Subsystem NQN.
        nqn: String,
    },
    /// Remove that link (drops the controllers of that subsystem on that port).
    UnlinkPort {
        /// Port id.
        id: u16,
        /// Subsystem NQN.
        nqn: String,
    },
}

fn static_name(name: &str) -> &'static str {
    facts::SUBSYS_ATTRS
        .iter()
        .chain(facts::PORT_ATTRS)
        .map(|a| a.name)
        .chain(facts::NS_LOCKED_ATTRS.iter().copied())
        .chain(["enable", "attr_allow_any_host"])
        .find(|n| *n == name)
        .unwrap_or("other")
}

impl Step {
    /// The path the step acts on, relative to the nvmet directory.
    pub fn path(&self) -> String {
        match self {
            Self::MkHost { host } | Self::RmHost { host } => format!("hosts/{host}"),
            Self::MkSubsystem { nqn } | Self::RmSubsystem { nqn } => format!("subsystems/{nqn}"),
            Self::SetSubsystem { nqn, attr, .. } => format!("subsystems/{nqn}/{attr}"),
            Self::AllowHost { nqn, host } | Self::DisallowHost { nqn, host } => {
                format!("subsystems/{nqn}/allowed_hosts/{host}")
            }
            Self::MkNamespace { nqn, nsid } | Self::RmNamespace { nqn, nsid } => {
                format!("subsystems/{nqn}/namespaces/{nsid}")
            }
            Self::SetNamespace {
                nqn, nsid, attr, ..
            } => format!("subsystems/{nqn}/namespaces/{nsid}/{attr}"),
            Self::MkPort { id } | Self::RmPort { id } => format!("ports/{id}"),
            Self::SetPort { id, attr, .. } => format!("ports/{id}/{attr}"),
            Self::LinkPort { id, nqn } | Self::UnlinkPort { id, nqn } => {
                format!("ports/{id}/subsystems/{nqn}")
            }
        }
    }

    /// For a link, what it points to, relative to the nvmet directory.
    pub fn link_target(&self) -> Option<String> {
        match self {
            Self::AllowHost { host, .. } => Some(format!("hosts/{host}")),
            Self::LinkPort { nqn, .. } => Some(format!("subsystems/{nqn}")),
            _ => None,
        }
    }

    /// The operation, for [`facts::errno_meaning`].
    pub fn op(&self) -> Op {
        match self {
            Self::MkHost { .. } => Op::MkHost,
            Self::MkSubsystem { .. } => Op::MkSubsystem,
            Self::MkNamespace { .. } => Op::MkNamespace,
            Self::MkPort { .. } => Op::MkPort,
            Self::RmHost { .. }
            | Self::RmSubsystem { .. }
            | Self::RmNamespace { .. }
            | Self::RmPort { .. } => Op::Rmdir,
            Self::SetSubsystem { attr, .. } => Op::SubsysAttr(static_name(attr)),
            Self::SetNamespace { attr, .. } => Op::NsAttr(static_name(attr)),
            Self::SetPort { attr, .. } => Op::PortAttr(static_name(attr)),
            Self::AllowHost { .. } => Op::AllowHost,
            Self::LinkPort { .. } => Op::LinkPort,
            Self::DisallowHost { .. } | Self::UnlinkPort { .. } => Op::Unlink,
        }
    }

    /// What the kernel's `attr` write means to a reader, e.g. `1 (auto)` for p2pmem.
    fn shown(attr: &str, value: &str) -> String {
        if attr == "p2pmem" {
            match value {
                "0" => return "0 (off)".into(),
                "1" => return "1 (auto)".into(),
                _ => {}
            }
        }
        if value.is_empty() {
            "''".into()
        } else {
            value.to_string()
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path();
        match self {
            Self::MkHost { .. }
            | Self::MkSubsystem { .. }
            | Self::MkNamespace { .. }
            | Self::MkPort { .. } => write!(f, "mkdir {path}"),
            Self::RmHost { .. }
            | Self::RmSubsystem { .. }
            | Self::RmNamespace { .. }
            | Self::RmPort { .. } => write!(f, "rmdir {path}"),
            Self::SetSubsystem {
                attr, value, old, ..
            }
            | Self::SetNamespace {
                attr, value, old, ..
            }
            | Self::SetPort {
                attr, value, old, ..
            } => {
                write!(f, "write {} to {path}", Self::shown(attr, value))?;
                match old {
                    Some(o) => write!(f, " (was {})", Self::shown(attr, o)),
                    None => Ok(()),
                }
            }
            Self::AllowHost { .. } | Self::LinkPort { .. } => write!(
                f,
                "link {path} -> {}",
                self.link_target().unwrap_or_default()
            ),
            Self::DisallowHost { .. } | Self::UnlinkPort { .. } => write!(f, "unlink {path}"),
        }
    }
}

fn bool_str(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

/// The locked namespace attributes that differ, as (attr, new value, old value).
fn ns_diffs(
    cur: Option<&Namespace>,
    want: &Namespace,
) -> Vec<(&'static str, String, Option<String>)> {
    let mut out = Vec::new();
    let cur_path = cur.map(|c| c.device_path.clone());
    if !want.device_path.is_empty() && cur_path.as_deref() != Some(want.device_path.as_str()) {
        out.push(("device_path", want.device_path.clone(), cur_path));
    }
    for (attr, w, c) in [
        (
            "device_uuid",
            want.device_uuid.as_ref(),
            cur.and_then(|c| c.device_uuid.as_ref()),
        ),
        (
            "device_nguid",
            want.device_nguid.as_ref(),
            cur.and_then(|c| c.device_nguid.as_ref()),
        ),
    ] {
        if let Some(w) = w {
            if !w.is_empty() && c != Some(w) {
                out.push((attr, w.clone(), c.cloned()));
            }
        }
    }
    let cur_bio = cur.and_then(|c| c.buffered_io);
    if let Some(w) = want.buffered_io {
        if cur_bio != Some(w) {
            out.push(("buffered_io", bool_str(w), cur_bio.map(bool_str)));
        }
    }
    let cur_p2p = cur.and_then(|c| c.p2pmem);
    match want.p2pmem {
        // An existing namespace without the attribute is off already, and writing it
        // would fail (ENOENT) on a kernel without CONFIG_PCI_P2PDMA.
        Some(P2pmemSetting::Off) if cur.is_some() && cur_p2p.is_none() => {}
        Some(w) if cur_p2p != Some(w) => {
            out.push((
                "p2pmem",
                w.kernel_write(),
                cur_p2p.map(|c| c.kernel_write()),
            ));
        }
        _ => {}
    }
    out
}

fn subsys_attr_steps(cur: Option<&Subsystem>, want: &Subsystem, steps: &mut Vec<Step>) {
    let get = |k: &str| cur.and_then(|c| c.attrs.get(k));
    let mut order: Vec<&'static str> = facts::SUBSYS_ATTRS.iter().map(|a| a.name).collect();
    // Keep min <= max at every step: raise max first when the new min exceeds the old max.
    let num = |v: Option<&String>| v.and_then(|s| s.trim().parse::<u32>().ok());
    if let (Some(new_min), Some(old_max)) = (
        num(want.attrs.get("attr_cntlid_min")),
        num(get("attr_cntlid_max")),
    ) {
        if new_min > old_max {
            order.retain(|n| *n != "attr_cntlid_min");
            order.push("attr_cntlid_min");
        }
    }
    for name in order {
        let Some(v) = want.attrs.get(name) else {
            continue;
        };
        if v.is_empty() || get(name) == Some(v) {
            continue;
        }
        steps.push(Step::SetSubsystem {
            nqn: want.nqn.clone(),
            attr: name.to_string(),
            value: v.clone(),
            old: get(name).cloned(),
        });
    }
}

fn port_attr_steps(cur: Option<&Port>, want: &Port) -> Vec<Step> {
    let trtype_changes = cur.is_none_or(|c| c.transport() != want.transport());
    let mut steps = Vec::new();
    for a in facts::PORT_ATTRS {
        let Some(v) = want.attrs.get(a.name) else {
            continue;
        };
        let old = cur.map(|c| c.attr(a.name).to_string());
        // Writing the transport resets tsas and treq to its defaults.
        let reset = trtype_changes
            && matches!(a.name, "addr_tsas" | "addr_treq")
            && want.transport() != Transport::Unset;
        if v.is_empty() || (old.as_deref() == Some(v.as_str()) && !reset) {
            continue;
        }
        steps.push(Step::SetPort {
            id: want.id,
            attr: a.name.to_string(),
            value: v.clone(),
            old,
        });
    }
    steps
}

/// The steps that turn `current` into `desired` (both normalized). Empty when they are
/// equal.
pub fn plan_restore(current: &TargetConfig, desired: &TargetConfig) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut relink_all = Vec::new();
    let mut port_writes = Vec::new();
    // Phase 1: unlink, disable, remove what goes away.
    for p in &current.ports {
        let Some(want) = desired.port(p.id) else {
            for n in &p.subsystems {
                steps.push(Step::UnlinkPort {
                    id: p.id,
                    nqn: n.clone(),
                });
            }
            steps.push(Step::RmPort { id: p.id });
            continue;
        };
        let writes = port_attr_steps(Some(p), want);
        let must_disable = !writes.is_empty() && !p.subsystems.is_empty();
        for n in &p.subsystems {
            if must_disable || !want.subsystems.contains(n) {
                steps.push(Step::UnlinkPort {
                    id: p.id,
                    nqn: n.clone(),
                });
            }
        }
        if must_disable {
            relink_all.push(p.id);
        }
        port_writes.push((p.id, writes));
    }
    let mut reenable = Vec::new();
    for s in &current.subsystems {
        let want = desired.subsystem(&s.nqn);
        for h in &s.allowed_hosts {
            if want.is_none_or(|w| !w.allowed_hosts.contains(h)) {
                steps.push(Step::DisallowHost {
                    nqn: s.nqn.clone(),
                    host: h.clone(),
                });
            }
        }
        for ns in &s.namespaces {
            let want_ns = want.and_then(|w| w.namespaces.iter().find(|n| n.nsid == ns.nsid));
            let disable =
                ns.enable && want_ns.is_none_or(|w| !w.enable || !ns_diffs(Some(ns), w).is_empty());
            if disable {
                steps.push(Step::SetNamespace {
                    nqn: s.nqn.clone(),
                    nsid: ns.nsid,
                    attr: "enable".into(),
                    value: "0".into(),
                    old: Some("1".into()),
                });
                reenable.push((s.nqn.clone(), ns.nsid));
            }
            if want_ns.is_none() {
                steps.push(Step::RmNamespace {
                    nqn: s.nqn.clone(),
                    nsid: ns.nsid,
                });
            }
        }
        match want {
            None => steps.push(Step::RmSubsystem { nqn: s.nqn.clone() }),
            Some(w) if s.allow_any_host && !w.allow_any_host => {
                steps.push(Step::SetSubsystem {
                    nqn: s.nqn.clone(),
                    attr: "attr_allow_any_host".into(),
                    value: "0".into(),
                    old: Some("1".into()),
                });
            }
            Some(_) => {}
        }
    }
    // Phase 2: create and write.
    for h in &desired.hosts {
        if !current.hosts.contains(h) {
            steps.push(Step::MkHost { host: h.clone() });
        }
    }
    for w in &desired.subsystems {
        let cur = current.subsystem(&w.nqn);
        if cur.is_none() {
            steps.push(Step::MkSubsystem { nqn: w.nqn.clone() });
        }
        subsys_attr_steps(cur, w, &mut steps);
        if w.allow_any_host && !cur.is_some_and(|c| c.allow_any_host) {
            steps.push(Step::SetSubsystem {
                nqn: w.nqn.clone(),
                attr: "attr_allow_any_host".into(),
                value: "1".into(),
                old: Some("0".into()),
            });
        }
        for h in &w.allowed_hosts {
            if !cur.is_some_and(|c| c.allowed_hosts.contains(h)) {
                steps.push(Step::AllowHost {
                    nqn: w.nqn.clone(),
                    host: h.clone(),
                });
            }
        }
        for ns in &w.namespaces {
            let cur_ns = cur.and_then(|c| c.namespaces.iter().find(|n| n.nsid == ns.nsid));
            if cur_ns.is_none() {
                steps.push(Step::MkNamespace {
                    nqn: w.nqn.clone(),
                    nsid: ns.nsid,
                });
            }
            for (attr, value, old) in ns_diffs(cur_ns, ns) {
                steps.push(Step::SetNamespace {
                    nqn: w.nqn.clone(),
                    nsid: ns.nsid,
                    attr: attr.into(),
                    value,
                    old,
                });
            }
            let was_on =
                cur_ns.is_some_and(|c| c.enable) && !reenable.contains(&(w.nqn.clone(), ns.nsid));
            if ns.enable && !was_on {
                steps.push(Step::SetNamespace {
                    nqn: w.nqn.clone(),
                    nsid: ns.nsid,
                    attr: "enable".into(),
                    value: "1".into(),
                    old: Some("0".into()),
                });
            }
        }
    }
    for w in &desired.ports {
        let cur = current.port(w.id);
        if cur.is_none() {
            steps.push(Step::MkPort { id: w.id });
            steps.extend(port_attr_steps(None, w));
        } else if let Some((_, writes)) = port_writes.iter_mut().find(|(id, _)| *id == w.id) {
            steps.append(writes);
        }
        let unlinked = relink_all.contains(&w.id);
        for n in &w.subsystems {
            if unlinked || !cur.is_some_and(|c| c.subsystems.contains(n)) {
                steps.push(Step::LinkPort {
                    id: w.id,
                    nqn: n.clone(),
                });
            }
        }
    }
    // Phase 3: hosts nobody refers to any more.
    for h in &current.hosts {
        if !desired.hosts.contains(h) {
            steps.push(Step::RmHost { host: h.clone() });
        }
    }
    steps
}
