//! The fabric as the planner sees it: one node per PCI function plus one per host
//! bridge, each node owning the edge to its parent. An edge is a physical PCIe link
//! (with a generation and width, or unknown) or internal (a switch's internal bus, a
//! root-bus device's attachment to its host bridge) with no capacity limit.

use super::link::{LinkFacts, LinkSpeed};
use crate::bdf::{Bdf, HostBridgeId};
use crate::config_space::PortType;
use crate::topology::Topology;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// What a function is, for deciding which edges are links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An endpoint (NVMe, NIC, p2pmem device).
    Endpoint,
    /// A root port.
    RootPort,
    /// A switch's upstream port.
    SwitchUpstream,
    /// A switch's downstream port.
    SwitchDownstream,
}

/// The edge from a node to its parent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Edge {
    /// A host bridge: no parent.
    Top,
    /// No capacity limit (switch internal bus, root-bus attachment).
    Internal,
    /// A PCIe link.
    Link {
        /// As trained (or assumed).
        speed: Option<LinkSpeed>,
        /// The most it could train to.
        max: Option<LinkSpeed>,
        /// `speed` is the `--link-default` assumption, not read.
        assumed: bool,
    },
}

/// One node.
#[derive(Debug, Clone)]
pub struct Node {
    /// The function, `None` for a host bridge.
    pub bdf: Option<Bdf>,
    /// What to call it: a design name, else the address (`pci0000:00` for a host bridge).
    pub label: String,
    /// The parent node.
    pub parent: Option<u32>,
    /// Its host bridge node.
    pub root: u32,
    /// Steps below its host bridge.
    pub depth: u32,
    /// Its role (`None` for a host bridge).
    pub role: Option<Role>,
    /// The edge to its parent.
    pub edge: Edge,
}

/// All nodes.
#[derive(Debug, Clone)]
pub struct Fabric {
    /// Nodes; a parent always comes before its children.
    pub nodes: Vec<Node>,
    index: HashMap<Bdf, u32>,
    /// The host each host-bridge node belongs to (a design's `host`, else `host`).
    pub host: HashMap<u32, String>,
    /// The node whose edge is each node's physical link: itself, or function 0 of its
    /// device (the functions of a multi-function device share one link).
    pub owner: Vec<u32>,
}

/// What the fabric is built from besides the topology.
#[derive(Debug, Clone, Default)]
pub struct FabricFacts {
    /// Link facts per function (the link to its parent, as the function's sysfs shows it).
    pub links: BTreeMap<Bdf, LinkFacts>,
    /// Roles where the config space does not show them (designs).
    pub roles: BTreeMap<Bdf, Role>,
    /// Names to show instead of addresses.
    pub labels: BTreeMap<Bdf, String>,
    /// The host of each host bridge (multi-host designs).
    pub hosts: BTreeMap<HostBridgeId, String>,
    /// The assumed speed of links whose speed is unknown.
    pub link_default: Option<LinkSpeed>,
}

impl Fabric {
    /// Build from a topology and its link facts.
    pub fn new(topo: &Topology, facts: &FabricFacts) -> Self {
        let mut nodes = Vec::new();
        let mut index = HashMap::new();
        let mut host = HashMap::new();
        let mut hb_node = HashMap::new();
        for hb in topo.host_bridges() {
            let n = nodes.len() as u32;
            hb_node.insert(hb, n);
            host.insert(
                n,
                facts
                    .hosts
                    .get(&hb)
                    .cloned()
                    .unwrap_or_else(|| "host".into()),
            );
            nodes.push(Node {
                bdf: None,
                label: format!("pci{:04x}:{:02x}", hb.domain, hb.bus),
                parent: None,
                root: n,
                depth: 0,
                role: None,
                edge: Edge::Top,
            });
        }
        // Shorter paths first, so that parents precede children.
        let mut fs: Vec<_> = topo.functions().collect();
        fs.sort_by_key(|f| f.path.len());
        for f in &fs {
            let root = hb_node.get(&f.host_bridge).copied().unwrap_or(0);
            let parent = match f.path.as_slice() {
                [.., up, _] => index.get(up).copied(),
                _ => Some(root),
            };
            let Some(parent) = parent else { continue };
            let role = facts
                .roles
                .get(&f.bdf)
                .copied()
                .or_else(|| role_of(topo, f.bdf));
            let parent_role = nodes[parent as usize].role;
            let internal = f.path.len() == 1 || role == Some(Role::SwitchDownstream);
            let edge = if internal {
                Edge::Internal
            } else {
                let mine = facts.links.get(&f.bdf).copied().unwrap_or_default();
                let theirs = nodes[parent as usize]
                    .bdf
                    .filter(|_| {
                        matches!(parent_role, Some(Role::RootPort | Role::SwitchDownstream))
                    })
                    .and_then(|b| facts.links.get(&b).copied())
                    .unwrap_or_default();
                let speed = mine.current.or(theirs.current);
                let max = mine.max.or(theirs.max);
                match (speed, facts.link_default) {
                    (Some(s), _) => Edge::Link {
                        speed: Some(s),
                        max,
                        assumed: false,
                    },
                    (None, d) => Edge::Link {
                        speed: d,
                        max,
                        assumed: d.is_some(),
                    },
                }
            };
            let n = nodes.len() as u32;
            index.insert(f.bdf, n);
            nodes.push(Node {
                bdf: Some(f.bdf),
                label: facts
                    .labels
                    .get(&f.bdf)
                    .cloned()
                    .unwrap_or_else(|| f.bdf.to_string()),
                parent: Some(parent),
                root,
                depth: nodes[parent as usize].depth + 1,
                role,
                edge,
            });
        }
        let owner = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                n.bdf
                    .filter(|b| b.function != 0)
                    .and_then(|b| index.get(&Bdf { function: 0, ..b }))
                    .filter(|f0| nodes[**f0 as usize].parent == n.parent)
                    .copied()
                    .unwrap_or(i as u32)
            })
            .collect();
        Self {
            nodes,
            index,
            host,
            owner,
        }
    }

    /// Does `n` own its link (not a second function sharing function 0's)?
    pub fn owns_link(&self, n: u32) -> bool {
        self.owner.get(n as usize) == Some(&n)
    }

    /// The node of a function.
    pub fn node(&self, bdf: &Bdf) -> Option<u32> {
        self.index.get(bdf).copied()
    }

    /// The lowest common ancestor of two nodes below one host bridge (the common
    /// upstream device, or the host bridge).
    pub fn common(&self, mut a: u32, mut b: u32) -> Option<u32> {
        if self.nodes[a as usize].root != self.nodes[b as usize].root {
            return None;
        }
        while self.nodes[a as usize].depth > self.nodes[b as usize].depth {
            a = self.nodes[a as usize].parent?;
        }
        while self.nodes[b as usize].depth > self.nodes[a as usize].depth {
            b = self.nodes[b as usize].parent?;
        }
        while a != b {
            a = self.nodes[a as usize].parent?;
            b = self.nodes[b as usize].parent?;
        }
        Some(a)
    }

    /// Calls `f(node)` for each edge from `from` up to (not including) `top`, naming
    /// each edge by the node that owns its link.
    pub fn climb(&self, mut from: u32, top: u32, mut f: impl FnMut(u32)) {
        while from != top {
            f(self.owner[from as usize]);
            match self.nodes[from as usize].parent {
                Some(p) => from = p,
                None => break,
            }
        }
    }

    /// The label of the node above `n`.
    pub fn parent_label(&self, n: u32) -> &str {
        self.nodes[n as usize]
            .parent
            .map(|p| self.nodes[p as usize].label.as_str())
            .unwrap_or("")
    }
}

/// The role from the config space's port type, else from the shape of the tree.
fn role_of(topo: &Topology, bdf: Bdf) -> Option<Role> {
    let f = topo.get(&bdf)?;
    match f.port_type() {
        Some(PortType::RootPort) => return Some(Role::RootPort),
        Some(PortType::UpstreamPort) => return Some(Role::SwitchUpstream),
        Some(PortType::DownstreamPort) => return Some(Role::SwitchDownstream),
        Some(PortType::Endpoint | PortType::LegacyEndpoint | PortType::RcIntegratedEndpoint) => {
            return Some(Role::Endpoint)
        }
        _ => {}
    }
    if !f.is_bridge() {
        return Some(Role::Endpoint);
    }
    // A bridge without a readable port type: a root port on the root bus; below a root
    // port or a downstream port an upstream port; below an upstream port a downstream port.
    if f.path.len() == 1 {
        return Some(Role::RootPort);
    }
    let up = topo.upstream_bridge(&bdf)?;
    match role_of(topo, up)? {
        Role::SwitchUpstream => Some(Role::SwitchDownstream),
        _ => Some(Role::SwitchUpstream),
    }
}
