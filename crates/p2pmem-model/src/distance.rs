//! `calc_map_type_and_dist()`: the distance and map type of one (provider, client) pair.
//!
//! The walk (5.4 .. pci tree after 7.3-rc1): climb the provider's chain; at each node
//! first test its ACS, then look for it in the client's chain. The first node found is
//! the common upstream device; the distance is the two step counts added. The ACS test
//! covers the provider's chain up to *and including* the common device and the client's
//! chain below it. No common device, or any RR/CR/EC on a tested node, sends the path
//! through the host bridge, which rule H (AMD Zen CPU, else the whitelist) allows or not.

use crate::acs::AcsState;
use crate::bdf::{Bdf, HostBridgeId};
use crate::cpu::CpuInfo;
use crate::kernel_version::KernelVersion;
use crate::messages::{self, KernelMessage, MessageKind};
use crate::topology::Topology;
use crate::whitelist;
use serde::{Deserialize, Serialize};

/// The kernel's `enum pci_p2pdma_map_type` outcomes a decision can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapType {
    /// Below a common switch or port with no redirect: the PCI bus address is used.
    BusAddr,
    /// Through an allowed host bridge: a normal DMA mapping.
    ThruHostBridge,
    /// Refused.
    NotSupported,
}

impl MapType {
    /// The name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BusAddr => "bus_addr",
            Self::ThruHostBridge => "thru_host_bridge",
            Self::NotSupported => "not_supported",
        }
    }
}

/// The facts of the running kernel that the decision depends on besides topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rules {
    /// Kernel version whose rules apply.
    pub kernel: KernelVersion,
    /// CPU 0, for the AMD Zen test.
    pub cpu: CpuInfo,
}

/// Where a tested node sits on the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// On the provider's chain below the common device.
    Provider,
    /// The common upstream device (tested on the provider's side).
    Common,
    /// On the client's chain below the common device.
    Client,
}

/// One ACS test the kernel makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcsTest {
    /// The device tested.
    pub bdf: Bdf,
    /// Its place on the path.
    pub side: Side,
    /// What its registers say.
    pub acs: AcsState,
}

/// How rule H was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum RuleH {
    /// `cpu_supports_p2pdma()`: AMD family >= 0x17 (5.9+).
    AmdZen {
        /// The CPU.
        cpu: String,
    },
    /// The whitelist allowed it.
    Whitelisted {
        /// Each host bridge consulted, with the entry that matched.
        bridges: Vec<BridgeCheck>,
    },
    /// The whitelist refused it.
    Refused {
        /// Each host bridge consulted (the kernel stops at the first refusal).
        bridges: Vec<BridgeCheck>,
    },
    /// Cannot be decided from what was read.
    Unknown {
        /// Each host bridge consulted.
        bridges: Vec<BridgeCheck>,
    },
}

impl RuleH {
    /// `Some(allowed)` or `None` when unknown.
    pub fn allowed(&self) -> Option<bool> {
        match self {
            Self::AmdZen { .. } | Self::Whitelisted { .. } => Some(true),
            Self::Refused { .. } => Some(false),
            Self::Unknown { .. } => None,
        }
    }
}

/// One host bridge's whitelist check (`__host_bridge_whitelist`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeCheck {
    /// The host bridge.
    pub host_bridge: HostBridgeId,
    /// Its representative, if usable.
    pub representative: Option<Bdf>,
    /// Vendor:device of the representative.
    pub ids: Option<String>,
    /// `Some(true)` allowed, `Some(false)` refused, `None` unknown.
    pub allowed: Option<bool>,
    /// The reason in words.
    pub why: String,
}

/// The kernel's decision for one (provider, client) pair, with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairVerdict {
    /// The provider.
    pub provider: Bdf,
    /// The client.
    pub client: Bdf,
    /// The map type; `None` when unreadable ACS registers leave it open.
    pub map_type: Option<MapType>,
    /// Whether the kernel allows the pair; `None` when it cannot be known.
    pub supported: Option<bool>,
    /// The walk distance (the kernel computes it for refused pairs too).
    pub walk_distance: u32,
    /// The common upstream device, if any.
    pub common_upstream: Option<Bdf>,
    /// Every ACS test the kernel makes for this pair, in its order.
    pub acs_tests: Vec<AcsTest>,
    /// Tested devices with RR, CR or EC set, in the kernel's list order.
    pub acs_redirect: Vec<Bdf>,
    /// Tested devices whose ACS could not be read.
    pub acs_unknown: Vec<Bdf>,
    /// Whether the path goes through the host bridge; `None` when unknown.
    pub through_host_bridge: Option<bool>,
    /// Rule H, when the path needs the host bridge (or might).
    pub rule_h: Option<RuleH>,
    /// What the kernel logs on the first verbose evaluation (the DMA-map path).
    pub messages: Vec<KernelMessage>,
    /// The boot parameter that removes the redirect, when ACS is the cause.
    pub fix: Option<String>,
    /// What could not be known, in words.
    pub unknowns: Vec<String>,
}

impl PairVerdict {
    /// The messages a non-verbose evaluation prints (`pci_p2pmem_find`, the nvmet
    /// controller set-up): only the host-bridge warning, which ignores `verbose`.
    pub fn quiet_messages(&self) -> impl Iterator<Item = &KernelMessage> {
        self.messages
            .iter()
            .filter(|m| matches!(m.kind, MessageKind::HostBridgeNotWhitelisted { .. }))
    }
}

/// Why a pair cannot be evaluated at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// The address is not in the topology.
    #[error("{role} {bdf} is not a PCI function of this system")]
    NoSuchFunction {
        /// "provider" or "client".
        role: &'static str,
        /// The address.
        bdf: Bdf,
    },
}

fn bridge_check(
    topo: &Topology,
    hb: HostBridgeId,
    same_host_bridge: bool,
    warn: bool,
    rules: &Rules,
    messages: &mut Vec<KernelMessage>,
) -> BridgeCheck {
    let rep = topo.representative(hb, rules.kernel);
    let ids = rep.ids.map(|(v, d)| format!("{v:04x}:{d:04x}"));
    let mut check = BridgeCheck {
        host_bridge: hb,
        representative: rep.bdf,
        ids,
        allowed: Some(false),
        why: rep.why.clone(),
    };
    match rep.usable {
        Some(true) => {}
        Some(false) => return check,
        None => {
            check.allowed = None;
            return check;
        }
    }
    let (Some(rep_bdf), Some((vendor, device))) = (rep.bdf, rep.ids) else {
        return check;
    };
    match whitelist::lookup(rules.kernel, vendor, device) {
        Some(entry) if entry.req_same_host_bridge && !same_host_bridge => {
            check.why = format!(
                "{rep_bdf} ({vendor:04x}:{device:04x}, {}) is whitelisted for P2P within one host bridge only",
                entry.comment
            );
        }
        Some(entry) => {
            check.allowed = Some(true);
            check.why = format!(
                "{rep_bdf} ({vendor:04x}:{device:04x}) is on the whitelist: {}",
                entry.comment
            );
        }
        None => {
            check.why = format!(
                "{rep_bdf} ({vendor:04x}:{device:04x}) is not on kernel {}'s host-bridge whitelist",
                rules.kernel
            );
            if warn && messages::HOST_BRIDGE_WARNING.contains(rules.kernel) {
                let driver = topo.get(&rep_bdf).map(|f| f.log_prefix_name().to_string());
                messages.push(KernelMessage::new(
                    MessageKind::HostBridgeNotWhitelisted { vendor, device },
                    rep_bdf,
                    driver.as_deref(),
                    rules.kernel,
                ));
            }
        }
    }
    check
}

/// `host_bridge_whitelist()` after the CPU test: rule H.
fn rule_h(
    topo: &Topology,
    provider: Bdf,
    client: Bdf,
    warn: bool,
    rules: &Rules,
    messages: &mut Vec<KernelMessage>,
) -> RuleH {
    if rules.cpu.supports_p2pdma(rules.kernel) {
        return RuleH::AmdZen {
            cpu: rules.cpu.describe(),
        };
    }
    let hb = |b: &Bdf| topo.get(b).map(|f| f.host_bridge);
    let (Some(ha), Some(hc)) = (hb(&provider), hb(&client)) else {
        return RuleH::Refused { bridges: vec![] };
    };
    let mut bridges = Vec::new();
    if ha == hc {
        bridges.push(bridge_check(topo, ha, true, warn, rules, messages));
    } else {
        let first = bridge_check(topo, ha, false, warn, rules, messages);
        let go_on = first.allowed != Some(false);
        bridges.push(first);
        if go_on {
            bridges.push(bridge_check(topo, hc, false, warn, rules, messages));
        }
    }
    if bridges.iter().any(|b| b.allowed == Some(false)) {
        RuleH::Refused { bridges }
    } else if bridges.iter().all(|b| b.allowed == Some(true)) {
        RuleH::Whitelisted { bridges }
    } else {
        RuleH::Unknown { bridges }
    }
}

/// Decide one pair as the first, verbose evaluation does (the O_DIRECT map path).
pub fn decide(
    topo: &Topology,
    rules: &Rules,
    provider: Bdf,
    client: Bdf,
) -> Result<PairVerdict, DecideError> {
    let lookup = |role, bdf| {
        topo.get(&bdf)
            .ok_or(DecideError::NoSuchFunction { role, bdf })
    };
    let client_fn = lookup("client", client)?;
    lookup("provider", provider)?;
    let chain_a = topo.upstream_chain(&provider);
    let chain_b = topo.upstream_chain(&client);

    let mut acs_tests = Vec::new();
    let mut common = None;
    let mut walk_distance = (chain_a.len() + chain_b.len()) as u32;
    for (dist_a, a) in chain_a.iter().enumerate() {
        if let Some(dist_b) = chain_b.iter().position(|b| b == a) {
            common = Some((*a, dist_b));
            walk_distance = (dist_a + dist_b) as u32;
            acs_tests.push(AcsTest {
                bdf: *a,
                side: Side::Common,
                acs: acs_of(topo, a),
            });
            break;
        }
        acs_tests.push(AcsTest {
            bdf: *a,
            side: Side::Provider,
            acs: acs_of(topo, a),
        });
    }

    let mut verdict = PairVerdict {
        provider,
        client,
        map_type: None,
        supported: None,
        walk_distance,
        common_upstream: common.map(|(c, _)| c),
        acs_tests: Vec::new(),
        acs_redirect: Vec::new(),
        acs_unknown: Vec::new(),
        through_host_bridge: None,
        rule_h: None,
        messages: Vec::new(),
        fix: None,
        unknowns: Vec::new(),
    };
    let client_name = client_fn.log_prefix_name().to_string();
    let msg = |kind| KernelMessage::new(kind, client, Some(&client_name), rules.kernel);

    let Some((_, dist_b)) = common else {
        // No common upstream device: ACS plays no part; the whitelist does not warn.
        verdict.through_host_bridge = Some(true);
        let mut msgs = Vec::new();
        let h = rule_h(topo, provider, client, false, rules, &mut msgs);
        finish_host_bridge(&mut verdict, h, msgs, msg);
        return Ok(verdict);
    };

    for b in &chain_b[..dist_b] {
        acs_tests.push(AcsTest {
            bdf: *b,
            side: Side::Client,
            acs: acs_of(topo, b),
        });
    }
    for t in &acs_tests {
        match t.acs.redirects_p2p() {
            Some(true) => verdict.acs_redirect.push(t.bdf),
            Some(false) => {}
            None => verdict.acs_unknown.push(t.bdf),
        }
    }
    verdict.acs_tests = acs_tests;

    if verdict.acs_redirect.is_empty() {
        if verdict.acs_unknown.is_empty() {
            verdict.map_type = Some(MapType::BusAddr);
            verdict.supported = Some(true);
            verdict.through_host_bridge = Some(false);
            return Ok(verdict);
        }
        // Unreadable ACS: either BUS_ADDR, or the ACS path through the host bridge.
        let mut scratch = Vec::new();
        let h = rule_h(topo, provider, client, true, rules, &mut scratch);
        verdict
            .unknowns
            .push(unknown_acs_text(topo, &verdict.acs_unknown));
        verdict.supported = match h.allowed() {
            Some(true) => Some(true),
            _ => None,
        };
        verdict.rule_h = Some(h);
        return Ok(verdict);
    }

    // ACS redirect: warn (verbose), then rule H with warn = acs_redirects = true.
    verdict.through_host_bridge = Some(true);
    let mut msgs = vec![
        msg(MessageKind::AcsRedirect { provider }),
        msg(MessageKind::AcsFix {
            devices: verdict.acs_redirect.clone(),
        }),
    ];
    let (list, overflow) = messages::acs_list(&verdict.acs_redirect);
    verdict.fix = Some(format!("pci=disable_acs_redir={list}"));
    if overflow {
        verdict.unknowns.push(format!(
            "the kernel's {}-byte ACS list buffer overflows with {} devices: its printed list is cut",
            messages::ACS_LIST_BUF,
            verdict.acs_redirect.len()
        ));
    }
    if !verdict.acs_unknown.is_empty() {
        verdict.unknowns.push(format!(
            "{} (the redirect already found decides the path; the printed ACS list may name more devices)",
            unknown_acs_text(topo, &verdict.acs_unknown)
        ));
    }
    let h = rule_h(topo, provider, client, true, rules, &mut msgs);
    finish_host_bridge(&mut verdict, h, msgs, msg);
    Ok(verdict)
}

fn finish_host_bridge(
    verdict: &mut PairVerdict,
    h: RuleH,
    mut msgs: Vec<KernelMessage>,
    msg: impl Fn(MessageKind) -> KernelMessage,
) {
    match h.allowed() {
        Some(true) => {
            verdict.map_type = Some(MapType::ThruHostBridge);
            verdict.supported = Some(true);
        }
        Some(false) => {
            verdict.map_type = Some(MapType::NotSupported);
            verdict.supported = Some(false);
            msgs.push(msg(MessageKind::NoPath {
                provider: verdict.provider,
            }));
        }
        None => {
            verdict.unknowns.push(
                "whether the host bridge is whitelisted cannot be read (its representative's port type is unreadable)".into(),
            );
        }
    }
    if verdict.supported.is_some() {
        verdict.messages = msgs;
    }
    verdict.rule_h = Some(h);
}

fn acs_of(topo: &Topology, bdf: &Bdf) -> AcsState {
    topo.get(bdf).map(|f| f.acs()).unwrap_or(AcsState::Unknown {
        reason: crate::acs::AcsUnknown::ConfigUnreadable,
    })
}

fn unknown_acs_text(topo: &Topology, unknown: &[Bdf]) -> String {
    let parts: Vec<String> = unknown
        .iter()
        .map(|b| match acs_of(topo, b) {
            AcsState::Unknown { reason } => format!("{b}: {}", reason.explain()),
            _ => b.to_string(),
        })
        .collect();
    format!("ACS state unknown for {}", parts.join("; "))
}

pub mod matrix;

#[cfg(test)]
mod tests;
