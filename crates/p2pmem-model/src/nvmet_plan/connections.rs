//! Who is connected: removing a port-subsystem link or a subsystem drops its
//! controllers (`nvmet_port_del_ctrls`, `nvmet_subsys_del_ctrls`), so those steps are
//! refused while hosts are connected, or while nobody can tell.
//!
//! nvmet lists controllers only in debugfs (6.9+, `CONFIG_NVME_TARGET_DEBUGFS`). Without
//! it, a loop port's only possible host is this machine, which shows its own
//! controllers in `/sys/class/nvme`; rdma and tcp ports stay unknown.

use super::config::{Port, TargetConfig};
use super::facts::Transport;
use super::restore::Step;
use serde::Serialize;

/// A controller nvmet shows in debugfs (`<nqn>/ctrl<cntlid>/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Controller {
    /// Subsystem NQN.
    pub nqn: String,
    /// `ctrl<cntlid>`.
    pub name: String,
    /// The port it came in on.
    pub port: Option<u16>,
    /// The host's NQN.
    pub hostnqn: Option<String>,
}

/// What is known about connected hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Connections {
    /// Controllers from nvmet's debugfs; `None` when it is not visible.
    pub debugfs: Option<Vec<Controller>>,
    /// Why debugfs is not visible.
    pub hidden_because: Option<String>,
    /// Subsystems this machine itself is connected to over the loop transport
    /// (`/sys/class/nvme/*` with transport `loop`).
    pub local_loop: Vec<String>,
}

/// Whether hosts are connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "connected", content = "detail", rename_all = "snake_case")]
pub enum Connected {
    /// None can be.
    No,
    /// These are.
    Yes(Vec<String>),
    /// Cannot be told.
    Unknown(String),
}

impl Connected {
    fn merge(self, other: Self) -> Self {
        match (self, other) {
            (Self::Yes(mut a), Self::Yes(b)) => {
                a.extend(b);
                a.dedup();
                Self::Yes(a)
            }
            (y @ Self::Yes(_), _) | (_, y @ Self::Yes(_)) => y,
            (u @ Self::Unknown(_), _) | (_, u @ Self::Unknown(_)) => u,
            (Self::No, Self::No) => Self::No,
        }
    }
}

/// Hosts connected to `nqn` through port `port` (of the current configuration).
pub fn connected_link(conns: &Connections, port: &Port, nqn: &str) -> Connected {
    if let Some(ctrls) = &conns.debugfs {
        let list: Vec<String> = ctrls
            .iter()
            .filter(|c| c.nqn == nqn && c.port.is_none_or(|p| p == port.id))
            .map(|c| {
                format!(
                    "{} ({} on port {})",
                    c.hostnqn.as_deref().unwrap_or("unknown host"),
                    c.name,
                    port.id
                )
            })
            .collect();
        return if list.is_empty() {
            Connected::No
        } else {
            Connected::Yes(list)
        };
    }
    if port.transport() == Transport::Loop {
        return if conns.local_loop.iter().any(|n| n == nqn) {
            Connected::Yes(vec![format!("this machine, over loop port {}", port.id)])
        } else {
            Connected::No
        };
    }
    Connected::Unknown(format!(
        "nvmet does not show its controllers here ({}), so hosts on {} port {} cannot be seen",
        conns
            .hidden_because
            .as_deref()
            .unwrap_or("no nvmet debugfs"),
        port.transport().as_str(),
        port.id
    ))
}

/// Hosts connected to a subsystem through any of its ports.
pub fn connected_subsystem(config: &TargetConfig, conns: &Connections, nqn: &str) -> Connected {
    config
        .ports_of(nqn)
        .map(|p| connected_link(conns, p, nqn))
        .fold(Connected::No, Connected::merge)
}

/// Hosts connected through a port to any of its subsystems.
pub fn connected_port(config: &TargetConfig, conns: &Connections, id: u16) -> Connected {
    config.port(id).map_or(Connected::No, |p| {
        p.subsystems
            .iter()
            .map(|n| connected_link(conns, p, n))
            .fold(Connected::No, Connected::merge)
    })
}

/// A step that would disconnect hosts, or might.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    /// The step.
    pub step: Step,
    /// Who is (or may be) connected.
    #[serde(flatten)]
    pub connected: Connected,
}

/// The steps of `steps` that remove a port-subsystem link, a port or a subsystem that
/// hosts are (or may be) connected to, judged on `current` before any step runs.
pub fn guard(current: &TargetConfig, conns: &Connections, steps: &[Step]) -> Vec<Blocked> {
    steps
        .iter()
        .filter_map(|s| {
            let c = match s {
                Step::UnlinkPort { id, nqn } => current
                    .port(*id)
                    .map_or(Connected::No, |p| connected_link(conns, p, nqn)),
                Step::RmPort { id } => connected_port(current, conns, *id),
                Step::RmSubsystem { nqn } => connected_subsystem(current, conns, nqn),
                _ => return None,
            };
            (c != Connected::No).then(|| Blocked {
                step: s.clone(),
                connected: c,
            })
        })
        .collect()
}
