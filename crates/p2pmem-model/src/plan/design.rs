//! Design files: a box described in TOML before it exists, turned into the model's own
//! topology (so the kernel's verdicts come from the same code as for a live system).
//!
//! ```toml
//! [system]
//! cpu = "intel"          # "intel", "amd-zen" (host-bridge P2P always allowed), "amd-pre-zen"
//! kernel = "6.12"
//! efficiency = 0.85      # optional protocol efficiency
//! memory_bandwidth = "100G/s"   # optional, per host
//! flows = ["nvme0:nvme1:rate=1G/s"]
//!
//! [[host_bridge]]
//! name = "cpu0"
//! ids = "8086:2030"      # optional vendor:device of its 00.0 device, for the whitelist
//! host = "target"        # optional: several hosts in one design
//!
//! [[root_port]]
//! name = "rp0"
//! parent = "cpu0"
//! acs = "off"            # "off" (default) or "redirect" (RR and CR set)
//!
//! [[switch]]
//! name = "sw0"
//! parent = "rp0"
//! link = "gen4x16"       # its upstream link; max_link = "..." optional
//! acs = "off"            # of its downstream ports
//!
//! [[endpoint]]
//! name = "nvme"          # with count = 24: nvme0 .. nvme23
//! count = 24
//! kind = "nvme"          # nvme, nic, memory (a p2pmem device), other
//! parent = "sw0"
//! link = "gen4x4"
//! p2pmem = true          # a published provider (a CMB, or a p2pmem device)
//! ```
//!
//! Each host bridge is its own PCI domain with its 00.0 device; root ports sit on its
//! root bus; a switch is an upstream port, an internal bus and one downstream port per
//! child; buses are numbered depth first. ACS is declared, not read: `redirect` sets
//! RR and CR in the port's ACS Control, which P2PDMA tests.

use super::fabric::FabricFacts;
use super::flow::{parse_flow, parse_rate, FlowSpec};
use super::link::{LinkFacts, LinkSpeed};
use crate::acs::{AcsFlags, AcsState};
use crate::bdf::{Bdf, HostBridgeId};
use crate::cpu::CpuInfo;
use crate::distance::Rules;
use crate::kernel_version::KernelVersion;
use crate::topology::Topology;
use layout::{function, Builder};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

mod layout;

/// Why a design cannot be used; the line when it can be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{what}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct DesignError {
    /// 1-based line.
    pub line: Option<usize>,
    /// What is wrong.
    pub what: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    system: SystemSection,
    #[serde(default)]
    host_bridge: Vec<HostBridgeSpec>,
    #[serde(default)]
    root_port: Vec<PortSpec>,
    #[serde(default)]
    switch: Vec<PortSpec>,
    #[serde(default)]
    endpoint: Vec<EndpointSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemSection {
    cpu: Option<String>,
    kernel: Option<String>,
    efficiency: Option<f64>,
    memory_bandwidth: Option<String>,
    #[serde(default)]
    flows: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostBridgeSpec {
    name: String,
    ids: Option<String>,
    host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortSpec {
    name: String,
    parent: String,
    link: Option<String>,
    max_link: Option<String>,
    acs: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointSpec {
    name: String,
    parent: String,
    kind: Option<String>,
    link: Option<String>,
    max_link: Option<String>,
    p2pmem: Option<bool>,
    count: Option<u32>,
}

/// A design turned into the model's inputs.
#[derive(Debug, Clone)]
pub struct Design {
    /// The functions.
    pub topology: Topology,
    /// CPU and kernel.
    pub rules: Rules,
    /// Links, roles, names, hosts.
    pub facts: FabricFacts,
    /// Each device name's address.
    pub names: BTreeMap<String, Bdf>,
    /// `[system] efficiency`.
    pub efficiency: Option<f64>,
    /// `[system] memory_bandwidth` in bytes per second.
    pub memory_bandwidth: Option<f64>,
    /// `[system] flows`.
    pub flows: Vec<FlowSpec>,
}

/// The line of the first `name = "<name>"` (for errors about a named entry).
fn line_of(text: &str, name: &str) -> Option<usize> {
    let quoted = format!("\"{name}\"");
    text.lines()
        .position(|l| l.trim_start().starts_with("name") && l.contains(&quoted))
        .map(|i| i + 1)
}

enum Kind {
    Root,
    Switch,
    Endpoint { class: u32, p2pmem: bool },
}

struct Entry {
    name: String,
    parent: String,
    kind: Kind,
    link: LinkFacts,
    redirect: bool,
}

/// The most devices (counts expanded) a design may describe: sixteen times the 4,096
/// the planner is benchmarked at. Found while writing the `plan_design` fuzz target:
/// `count = 4000000000` made four billion entries before any check.
pub const MAX_DEVICES: usize = 65_536;

/// Read a design from its text.
pub fn parse_design(text: &str) -> Result<Design, DesignError> {
    let file: File = toml::from_str(text).map_err(|e| DesignError {
        line: e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1)),
        what: e.message().to_string(),
    })?;
    let err = |name: &str, what: String| DesignError {
        line: line_of(text, name),
        what,
    };
    let link =
        |name: &str, field: &str, v: &Option<String>| -> Result<Option<LinkSpeed>, DesignError> {
            v.as_deref()
                .map(|s| {
                    s.parse::<LinkSpeed>()
                        .map_err(|e| err(name, format!("{name}: {field}: {e}")))
                })
                .transpose()
        };
    let acs = |name: &str, v: &Option<String>| -> Result<bool, DesignError> {
        match v.as_deref() {
            None | Some("off") => Ok(false),
            Some("redirect") => Ok(true),
            Some(o) => Err(err(
                name,
                format!("{name}: acs is \"off\" or \"redirect\", not \"{o}\""),
            )),
        }
    };
    let sys = &file.system;
    let cpu = match sys.cpu.as_deref().unwrap_or("intel") {
        "intel" => ("GenuineIntel", 6),
        "amd-zen" => ("AuthenticAMD", 0x19),
        "amd-pre-zen" => ("AuthenticAMD", 0x15),
        o => {
            return Err(DesignError {
                line: None,
                what: format!(
                    "[system] cpu is \"intel\", \"amd-zen\" or \"amd-pre-zen\", not \"{o}\""
                ),
            })
        }
    };
    let kernel: KernelVersion = sys
        .kernel
        .as_deref()
        .unwrap_or("6.12")
        .parse()
        .map_err(|e| DesignError {
            line: None,
            what: format!("[system] kernel: {e}"),
        })?;
    if let Some(e) = sys.efficiency {
        if !(e > 0.0 && e <= 1.0) {
            return Err(DesignError {
                line: None,
                what: format!("[system] efficiency {e} is not in (0, 1]"),
            });
        }
    }
    let memory_bandwidth = sys
        .memory_bandwidth
        .as_deref()
        .map(|m| parse_rate(m).map(|r| r as f64))
        .transpose()
        .map_err(|e| DesignError {
            line: None,
            what: format!("[system] memory_bandwidth: {e}"),
        })?;
    let mut flows = Vec::new();
    for f in &sys.flows {
        flows.push(parse_flow(f).map_err(|e| DesignError {
            line: None,
            what: format!("[system] flows: {e}"),
        })?);
    }

    // Entries by name, in file order, endpoints expanded.
    let mut entries: Vec<Entry> = Vec::new();
    for p in &file.root_port {
        let l = LinkFacts {
            current: link(&p.name, "link", &p.link)?,
            max: link(&p.name, "max_link", &p.max_link)?,
        };
        if l.current.is_some() {
            return Err(err(
                &p.name,
                format!(
                    "{}: a root port's link is given on the device below it",
                    p.name
                ),
            ));
        }
        entries.push(Entry {
            name: p.name.clone(),
            parent: p.parent.clone(),
            kind: Kind::Root,
            link: l,
            redirect: acs(&p.name, &p.acs)?,
        });
    }
    for s in &file.switch {
        let l = LinkFacts {
            current: link(&s.name, "link", &s.link)?,
            max: link(&s.name, "max_link", &s.max_link)?,
        };
        entries.push(Entry {
            name: s.name.clone(),
            parent: s.parent.clone(),
            kind: Kind::Switch,
            link: l,
            redirect: acs(&s.name, &s.acs)?,
        });
    }
    for e in &file.endpoint {
        let class = match e.kind.as_deref().unwrap_or("nvme") {
            "nvme" => 0x010802,
            "nic" => 0x020700,
            "memory" => 0x058000,
            "other" => 0x000000,
            o => {
                return Err(err(
                    &e.name,
                    format!(
                        "{}: kind is nvme, nic, memory or other, not \"{o}\"",
                        e.name
                    ),
                ))
            }
        };
        let l = LinkFacts {
            current: link(&e.name, "link", &e.link)?,
            max: link(&e.name, "max_link", &e.max_link)?,
        };
        let kind = || Kind::Endpoint {
            class,
            p2pmem: e.p2pmem.unwrap_or(false),
        };
        match e.count {
            None => entries.push(Entry {
                name: e.name.clone(),
                parent: e.parent.clone(),
                kind: kind(),
                link: l,
                redirect: false,
            }),
            Some(0) => return Err(err(&e.name, format!("{}: count is 0", e.name))),
            Some(n) if entries.len() + n as usize > MAX_DEVICES => {
                return Err(err(
                    &e.name,
                    format!(
                        "{}: count {n} makes the design larger than {MAX_DEVICES} devices",
                        e.name
                    ),
                ))
            }
            Some(n) => {
                for i in 0..n {
                    entries.push(Entry {
                        name: format!("{}{i}", e.name),
                        parent: e.parent.clone(),
                        kind: kind(),
                        link: l,
                        redirect: false,
                    });
                }
            }
        }
    }
    let mut hb_index: HashMap<&str, usize> = HashMap::new();
    for (i, h) in file.host_bridge.iter().enumerate() {
        if hb_index.insert(h.name.as_str(), i).is_some() {
            return Err(err(
                &h.name,
                format!("host bridge {} is defined twice", h.name),
            ));
        }
    }
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if by_name.insert(e.name.as_str(), i).is_some() || hb_index.contains_key(e.name.as_str()) {
            return Err(err(&e.name, format!("{} is defined twice", e.name)));
        }
        children.entry(e.parent.as_str()).or_default().push(i);
    }
    for e in &entries {
        let ok = match (
            &e.kind,
            by_name.get(e.parent.as_str()).map(|p| &entries[*p].kind),
        ) {
            (Kind::Root, _) => hb_index.contains_key(e.parent.as_str()),
            (_, Some(Kind::Root | Kind::Switch)) => true,
            _ => false,
        };
        if !ok {
            let want = if matches!(e.kind, Kind::Root) {
                "a host bridge"
            } else {
                "a root port or a switch"
            };
            return Err(err(
                &e.name,
                format!(
                    "{}: parent \"{}\" is not {want} of this design",
                    e.name, e.parent
                ),
            ));
        }
    }

    let mut functions = Vec::new();
    let mut facts = FabricFacts::default();
    let mut names = BTreeMap::new();
    let redirect = AcsState::Present {
        offset: 0x100,
        capability: AcsFlags(AcsFlags::RR | AcsFlags::CR | AcsFlags::SV | AcsFlags::UF),
        control: AcsFlags(AcsFlags::RR | AcsFlags::CR),
    };
    let off = AcsState::Present {
        offset: 0x100,
        capability: AcsFlags(AcsFlags::RR | AcsFlags::CR),
        control: AcsFlags(0),
    };
    for (d, h) in file.host_bridge.iter().enumerate() {
        let domain = d as u32;
        let hb = HostBridgeId { domain, bus: 0 };
        if let Some(host) = &h.host {
            facts.hosts.insert(hb, host.clone());
        }
        let (vendor, device) = match h.ids.as_deref() {
            None => (0x8086, 0x0000),
            Some(ids) => ids
                .split_once(':')
                .and_then(|(v, d)| {
                    Some((
                        u16::from_str_radix(v, 16).ok()?,
                        u16::from_str_radix(d, 16).ok()?,
                    ))
                })
                .ok_or_else(|| {
                    err(
                        &h.name,
                        format!("{}: ids \"{ids}\" is not vendor:device in hex", h.name),
                    )
                })?,
        };
        let me = Bdf {
            domain,
            bus: 0,
            device: 0,
            function: 0,
        };
        functions.push(function(
            me,
            hb,
            vec![me],
            (vendor, device, 0x060000),
            AcsState::Absent,
            None,
        ));
        facts.labels.insert(me, h.name.clone());
        names.insert(h.name.clone(), me);
        let mut next_bus = 1u32;
        let roots = children.get(h.name.as_str()).cloned().unwrap_or_default();
        for (k, r) in roots.iter().enumerate() {
            let (dev, func) = (1 + k % 31, k / 31);
            if func > 7 {
                return Err(err(
                    &entries[*r].name,
                    format!("host bridge {} has more than 248 root ports", h.name),
                ));
            }
            let rp = Bdf {
                domain,
                bus: 0,
                device: dev as u8,
                function: func as u8,
            };
            let mut b = Builder {
                entries: &entries,
                children: &children,
                functions: &mut functions,
                facts: &mut facts,
                names: &mut names,
                next_bus: &mut next_bus,
                hb,
                redirect,
                off,
            };
            b.place(*r, rp, vec![], text)?;
        }
    }
    if let Some(lost) = entries.iter().find(|e| !names.contains_key(&e.name)) {
        return Err(err(
            &lost.name,
            format!(
                "{} is not below any host bridge (its parents form a cycle)",
                lost.name
            ),
        ));
    }
    let topology = Topology::new(functions).map_err(|e| DesignError {
        line: None,
        what: e.to_string(),
    })?;
    Ok(Design {
        topology,
        rules: Rules {
            kernel,
            cpu: CpuInfo {
                vendor_id: Some(cpu.0.into()),
                family: Some(cpu.1),
                model_name: None,
            },
        },
        facts,
        names,
        efficiency: sys.efficiency,
        memory_bandwidth,
        flows,
    })
}
