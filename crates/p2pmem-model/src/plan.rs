//! `p2pmem plan`: where a set of flows puts its bytes, and how fast they can all go.
//!
//! Each flow (a copy between two NVMe through a buffer, or an nvmet-rdma target flow)
//! is routed as the kernel routes it ([`routing`]): through the provider its verdicts
//! allow, below the common upstream device or through the host bridge, or bounced
//! through host memory (twice the payload) when the kernel refuses P2P. The bytes are
//! added up per link and direction ([`fabric`]); link capacity comes from generation and
//! width ([`link`]). The answer is every link's load and utilisation, host-memory load,
//! the bottleneck, the largest factor all rates can be scaled by together, the same with
//! P2P disabled, and suggestions that follow from the numbers.

pub mod design;
pub mod fabric;
pub mod flow;
pub mod link;
pub mod routing;
mod suggest;
pub mod synth;

#[cfg(test)]
mod tests;

use crate::bdf::Bdf;
use crate::distance::matrix::PairIndex;
use crate::distance::{MapType, Rules};
use crate::dma_accounting::DmaFigures;
use crate::topology::Topology;
use fabric::{Edge, Fabric};
use flow::{FlowKind, FlowSpec, DEFAULT_RATE};
use routing::{walk_leg, Place, Route, Router};
use serde::Serialize;
use std::collections::BTreeMap;

/// Knobs of a plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanOptions {
    /// Share of a link's encoded rate left for payload ([`link::DEFAULT_EFFICIENCY`]).
    pub efficiency: f64,
    /// Host memory bandwidth per host in bytes per second, when known (a design's
    /// `memory_bandwidth`): then host memory can be the bottleneck too.
    pub memory_bandwidth: Option<f64>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            efficiency: link::DEFAULT_EFFICIENCY,
            memory_bandwidth: None,
        }
    }
}

/// One link's load.
#[derive(Debug, Clone, Serialize)]
pub struct LinkLoad {
    /// The node above: a port's address (or design name) or `pciDDDD:BB`.
    pub upstream: String,
    /// The function below.
    pub downstream: String,
    /// Its address.
    pub downstream_bdf: Option<Bdf>,
    /// Generation and width used, e.g. `gen4x16`; `None` when unknown.
    pub speed: Option<String>,
    /// The speed is the `--link-default` assumption.
    pub speed_assumed: bool,
    /// `max_link_speed`/`max_link_width`, when known.
    pub max_speed: Option<String>,
    /// Payload bytes per second in each direction; `None` when the speed is unknown.
    pub capacity_bytes_per_s: Option<u64>,
    /// Bytes per second towards the host bridge.
    pub up_bytes_per_s: u64,
    /// Bytes per second away from it.
    pub down_bytes_per_s: u64,
    /// The busier direction's load over capacity; `None` when the speed is unknown.
    pub utilisation: Option<f64>,
}

/// Host memory load of one host.
#[derive(Debug, Clone, Serialize)]
pub struct HostMemory {
    /// The host (a design's `host`, else `host`).
    pub host: String,
    /// Bytes per second into and out of its memory, added.
    pub bytes_per_s: u64,
    /// Over `memory_bandwidth`, when given.
    pub utilisation: Option<f64>,
}

/// What saturates first.
#[derive(Debug, Clone, Serialize)]
pub struct Bottleneck {
    /// `link` or `host_memory`.
    pub kind: &'static str,
    /// The link's upstream end.
    pub upstream: Option<String>,
    /// The link's downstream end.
    pub downstream: Option<String>,
    /// `up`, `down` (links) or `memory`.
    pub direction: &'static str,
    /// The host, for host memory.
    pub host: Option<String>,
    /// Its utilisation at the given rates.
    pub utilisation: f64,
}

/// Loads with one routing (with P2P, or without).
#[derive(Debug, Clone, Serialize)]
pub struct Loading {
    /// Every PCIe link (internal switch buses and root-bus attachments are not links).
    pub links: Vec<LinkLoad>,
    /// All hosts' memory load.
    pub host_memory_bytes_per_s: u64,
    /// Per host.
    pub host_memory: Vec<HostMemory>,
    /// Device-to-device bytes between two host bridges (over the CPU interconnect).
    pub cross_host_bridge_bytes_per_s: u64,
    /// The busiest link or memory, when any has a known capacity and load.
    pub bottleneck: Option<Bottleneck>,
    /// The factor all rates can be multiplied by together before something saturates.
    pub max_scale: Option<f64>,
    /// Links under load whose speed is unknown (not in `max_scale`).
    pub unknown_speed_links: usize,
    #[serde(skip)]
    loads: Vec<[f64; 2]>,
}

/// DMA bytes of one flow per byte of payload, in the lab's accounting categories
/// ([`crate::dma_accounting`]): every DMA of the flow, whichever device masters it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Accounting {
    /// Bytes through host memory per payload byte (2 for a bounce, 0 through a provider).
    pub host_memory: u64,
    /// Bytes a device moved to or from its own BAR (a CMB used by its own controller).
    pub own_cmb: u64,
    /// Bytes a device moved to or from another device's BAR.
    pub other_device: u64,
    /// Bytes into or out of each device's BARs.
    pub devices: BTreeMap<Bdf, u64>,
}

/// One flow's route.
#[derive(Debug, Clone, Serialize)]
pub struct FlowPlan {
    /// As written.
    pub flow: String,
    /// `copy` or `nvmet`.
    pub kind: &'static str,
    /// An nvmet flow's transport (`rdma`, `tcp`); `None` for a copy.
    pub transport: Option<&'static str>,
    /// Payload bytes per second.
    pub rate_bytes_per_s: u64,
    /// `p2p` or `host_memory`.
    pub path: &'static str,
    /// The provider whose BAR holds the buffer.
    pub provider: Option<Bdf>,
    /// Its name in the design (else its address).
    pub provider_name: Option<String>,
    /// The provider's map type against each device.
    pub map_types: Vec<MapType>,
    /// Providers tied for `auto` (the kernel picks one at random; the worst is planned).
    pub tied: Vec<Bdf>,
    /// Why.
    pub why: String,
    /// Host-memory bytes per second of this flow.
    pub host_memory_bytes_per_s: u64,
    /// Per payload byte.
    pub accounting: Accounting,
    #[serde(skip)]
    route: Route,
    #[serde(skip)]
    without: Route,
}

/// The plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Protocol efficiency used.
    pub efficiency: f64,
    /// Loads as the kernel routes the flows.
    #[serde(flatten)]
    pub with_p2p: Loading,
    /// Loads with every flow through host memory.
    pub without_p2p: Loading,
    /// Host-memory bytes per second that P2P keeps off.
    pub p2p_saves_host_memory_bytes_per_s: u64,
    /// Each flow.
    pub flows: Vec<FlowPlan>,
    /// Suggestions that follow from the numbers.
    pub suggestions: Vec<String>,
    /// Assumptions and unknowns.
    pub notes: Vec<String>,
}

impl Plan {
    /// The lab's headline figures for flow `i` moving `payload_bytes` (a copy: the bytes
    /// written to the destination), with the device BAR bytes keyed as the lab keys
    /// them (`0000:03:00.0`). Queue traffic, read-back and unattributed bytes are 0.
    pub fn dma_figures(
        &self,
        i: usize,
        payload_bytes: u64,
    ) -> Option<(DmaFigures, BTreeMap<String, u64>)> {
        let a = &self.flows.get(i)?.accounting;
        let m = |k: u64| k.saturating_mul(payload_bytes);
        let host = m(a.host_memory);
        let figures = DmaFigures {
            payload_bytes,
            host_memory_bytes: host,
            peer_bytes: m(a.own_cmb).saturating_add(m(a.other_device)),
            own_cmb_bytes: m(a.own_cmb),
            other_device_bytes: m(a.other_device),
            unattributed_bytes: 0,
            host_memory_per_payload_byte: (payload_bytes > 0)
                .then(|| host as f64 / payload_bytes as f64),
            readback_bytes: 0,
            queue_bytes: 0,
        };
        let devices = a
            .devices
            .iter()
            .map(|(b, k)| (b.to_string(), m(*k)))
            .collect();
        Some((figures, devices))
    }
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A flow names something that cannot carry it.
    #[error("flow '{flow}': {why}")]
    Flow {
        /// The flow as written.
        flow: String,
        /// Why.
        why: String,
    },
}

fn accounting(fabric: &Fabric, r: &Route) -> Accounting {
    let mut a = Accounting::default();
    for leg in &r.legs {
        if matches!(leg.from, Place::Mem(_)) || matches!(leg.to, Place::Mem(_)) {
            a.host_memory += 1;
        }
        if let Some((p, master)) = leg.bar {
            if p == master {
                a.own_cmb += 1;
            } else {
                a.other_device += 1;
            }
            if let Some(b) = fabric.nodes[p as usize].bdf {
                *a.devices.entry(b).or_default() += 1;
            }
        }
    }
    a
}

/// Plan `flows` on `fabric` (built from `topo`) under `rules`.
pub fn plan(
    topo: &Topology,
    rules: &Rules,
    fabric: &Fabric,
    flows: &[FlowSpec<Bdf>],
    opts: PlanOptions,
) -> Result<Plan, PlanError> {
    let mut router = Router {
        fabric,
        index: PairIndex::new(topo, rules),
        efficiency: opts.efficiency,
    };
    let mut plans = Vec::with_capacity(flows.len());
    let mut notes = Vec::new();
    if flows.iter().any(|f| f.rate.is_none()) {
        notes.push(format!(
            "flows without rate= are planned at {DEFAULT_RATE} bytes/s (1G/s)"
        ));
    }
    for f in flows {
        let err = |why| PlanError::Flow {
            flow: f.text.clone(),
            why,
        };
        let route = router.route(f, true).map_err(err)?;
        let without = router.route(f, false).map_err(err)?;
        let rate = f.rate.unwrap_or(DEFAULT_RATE);
        let acc = accounting(fabric, &route);
        plans.push(FlowPlan {
            flow: f.text.clone(),
            kind: match f.kind {
                FlowKind::Copy { .. } => "copy",
                FlowKind::Nvmet { .. } => "nvmet",
            },
            transport: match f.kind {
                FlowKind::Copy { .. } => None,
                FlowKind::Nvmet { transport, .. } => Some(transport.as_str()),
            },
            rate_bytes_per_s: rate,
            path: if route.bounces() {
                "host_memory"
            } else {
                "p2p"
            },
            provider: route.provider,
            provider_name: route
                .provider
                .and_then(|b| fabric.node(&b))
                .map(|n| fabric.nodes[n as usize].label.clone()),
            map_types: route.map_types.clone(),
            tied: route.tied.clone(),
            why: route.why.clone(),
            host_memory_bytes_per_s: rate.saturating_mul(acc.host_memory),
            accounting: acc,
            route,
            without,
        });
    }
    let with_p2p = load(
        fabric,
        plans.iter().map(|p| (&p.route, p.rate_bytes_per_s)),
        opts,
    );
    let without_p2p = load(
        fabric,
        plans.iter().map(|p| (&p.without, p.rate_bytes_per_s)),
        opts,
    );
    if with_p2p.unknown_speed_links > 0 {
        notes.push(format!(
            "{} loaded links have unknown speed (no current_link_speed/width): they are left out of max_scale; --link-default gen3x4 assumes one",
            with_p2p.unknown_speed_links
        ));
    }
    if fabric
        .nodes
        .iter()
        .any(|n| matches!(n.edge, Edge::Link { assumed: true, .. }))
    {
        notes.push("some link speeds are the --link-default assumption, not read".into());
    }
    notes.push(format!(
        "capacity = GT/s x line code (8b/10b Gen1-2, 128b/130b Gen3-5, 242/256 FLIT Gen6) x lanes / 8 x protocol efficiency {}",
        opts.efficiency
    ));
    let mut plan = Plan {
        efficiency: opts.efficiency,
        p2p_saves_host_memory_bytes_per_s: without_p2p
            .host_memory_bytes_per_s
            .saturating_sub(with_p2p.host_memory_bytes_per_s),
        with_p2p,
        without_p2p,
        flows: plans,
        suggestions: Vec::new(),
        notes,
    };
    plan.suggestions = suggest::suggestions(fabric, &plan);
    Ok(plan)
}

/// Loads of routes at rates.
fn load<'r>(
    fabric: &Fabric,
    routes: impl Iterator<Item = (&'r Route, u64)>,
    opts: PlanOptions,
) -> Loading {
    let mut loads = vec![[0.0f64; 2]; fabric.nodes.len()];
    let mut mem: BTreeMap<String, f64> = BTreeMap::new();
    for h in fabric.host.values() {
        mem.entry(h.clone()).or_default();
    }
    let mut cross = 0.0;
    for (r, rate) in routes {
        let rate = rate as f64;
        for leg in &r.legs {
            let crossed = walk_leg(fabric, leg, |n, up| {
                loads[n as usize][usize::from(!up)] += rate
            });
            if crossed {
                cross += rate;
            }
            for p in [leg.from, leg.to] {
                if let Place::Mem(h) = p {
                    let host = fabric
                        .host
                        .get(&h)
                        .cloned()
                        .unwrap_or_else(|| "host".into());
                    *mem.entry(host).or_default() += rate;
                }
            }
        }
    }
    let mut links = Vec::new();
    let mut best: Option<Bottleneck> = None;
    let mut unknown = 0;
    let mut consider = |b: Bottleneck| {
        if b.utilisation > 0.0 && best.as_ref().is_none_or(|x| b.utilisation > x.utilisation) {
            best = Some(b);
        }
    };
    for (i, n) in fabric.nodes.iter().enumerate() {
        let Edge::Link {
            speed,
            max,
            assumed,
        } = n.edge
        else {
            continue;
        };
        if !fabric.owns_link(i as u32) {
            continue;
        }
        let [up, down] = loads[i];
        let cap = speed.map(|s| s.capacity(opts.efficiency));
        let util = cap.map(|c| up.max(down) / c);
        if cap.is_none() && up.max(down) > 0.0 {
            unknown += 1;
        }
        let upstream = fabric.parent_label(i as u32).to_string();
        if let Some(u) = util {
            consider(Bottleneck {
                kind: "link",
                upstream: Some(upstream.clone()),
                downstream: Some(n.label.clone()),
                direction: if up >= down { "up" } else { "down" },
                host: None,
                utilisation: u,
            });
        }
        links.push(LinkLoad {
            upstream,
            downstream: n.label.clone(),
            downstream_bdf: n.bdf,
            speed: speed.map(|s| s.to_string()),
            speed_assumed: assumed,
            max_speed: max.map(|s| s.to_string()),
            capacity_bytes_per_s: cap.map(|c| c as u64),
            up_bytes_per_s: up as u64,
            down_bytes_per_s: down as u64,
            utilisation: util,
        });
    }
    let host_memory: Vec<HostMemory> = mem
        .iter()
        .map(|(h, b)| HostMemory {
            host: h.clone(),
            bytes_per_s: *b as u64,
            utilisation: opts.memory_bandwidth.map(|m| b / m),
        })
        .collect();
    for h in &host_memory {
        if let Some(u) = h.utilisation {
            consider(Bottleneck {
                kind: "host_memory",
                upstream: None,
                downstream: None,
                direction: "memory",
                host: Some(h.host.clone()),
                utilisation: u,
            });
        }
    }
    let max_scale = best.as_ref().map(|b| 1.0 / b.utilisation);
    Loading {
        links,
        host_memory_bytes_per_s: mem.values().sum::<f64>() as u64,
        host_memory,
        cross_host_bridge_bytes_per_s: cross as u64,
        bottleneck: best,
        max_scale,
        unknown_speed_links: unknown,
        loads,
    }
}

impl Loading {
    /// The load on the link above `node`: (up, down) bytes per second.
    pub fn node_load(&self, node: u32) -> Option<(f64, f64)> {
        self.loads.get(node as usize).map(|l| (l[0], l[1]))
    }
}
