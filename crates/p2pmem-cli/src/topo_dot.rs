//! `p2pmem topo --dot`: the capture as a Graphviz picture a person can read.
//!
//! The default view keeps what matters for P2P: the providers, the clients (NVMe, RDMA)
//! and the ports, switches and host bridges on their paths, top to bottom, with one edge
//! per pair (allowed: its map type and distance; refused: the kernel's reason, dashed
//! red). Past [`MAX_PAIR_EDGES`] bus-address edges, or [`MAX_REFUSED_EDGES`] through the
//! host bridge or refused, pairs with one verdict are grouped: below one switch, as a note
//! on the device they meet at; across top-level ports, where the host bridges decide, once
//! per pair of host bridges, with the count and the range of distances. Every verdict is the model's
//! ([`decide`], as `check`), never a second set of rules. `--all` draws every function.

use crate::cmd_topo::{host_bridge_json, line};
use crate::output::opt_size;
use p2pmem_linux::pci_names::PciNames;
use p2pmem_linux::system::System;
use p2pmem_model::distance::matrix::PairIndex;
use p2pmem_model::distance::{decide, MapType, PairVerdict};
use p2pmem_model::topology::Function;
use p2pmem_model::{Bdf, HostBridgeId};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// The most allowed pair edges drawn one by one; past it, they are grouped.
pub const MAX_PAIR_EDGES: usize = 12;

/// The most pair edges through the host bridge, and the most refused (or unknown) ones,
/// drawn one by one; past it, they are grouped. Both depend on the host bridges more
/// than on the pair, and a reader needs first where P2P stays below a switch.
pub const MAX_REFUSED_EDGES: usize = 4;

/// Longest line of a node label before it wraps (keeps the picture narrow).
const WRAP: usize = 26;

fn dot_id(b: Bdf) -> String {
    format!("\"{b}\"")
}

fn hb_id(hb: HostBridgeId) -> String {
    format!("\"{hb}\"")
}

/// A string for a double-quoted Graphviz label (`\n` stays a line break).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Words joined into lines of at most [`WRAP`] characters (longer words stay whole).
fn wrap(s: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for w in s.split_whitespace() {
        match lines.last_mut() {
            Some(l) if l.len() + 1 + w.len() <= WRAP => {
                l.push(' ');
                l.push_str(w);
            }
            _ => lines.push(w.to_string()),
        }
    }
    lines
}

/// What the pair edge says: the verdict in words.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    /// Allowed, with the map type's words and the distance.
    Allowed { bus: bool, distance: u32 },
    /// Refused, with the reason.
    Refused(String),
    /// Cannot be known (unreadable ACS).
    Unknown,
}

impl Verdict {
    fn label(&self) -> String {
        match self {
            Self::Allowed {
                bus: true,
                distance,
            } => format!("bus address, distance {distance}"),
            Self::Allowed {
                bus: false,
                distance,
            } => format!("through host bridge, distance {distance}"),
            Self::Refused(why) => format!("REFUSED: {why}"),
            Self::Unknown => "unknown: ACS unreadable (run as root)".to_string(),
        }
    }

    fn style(&self) -> &'static str {
        match self {
            Self::Allowed { bus: true, .. } => "color=green4, fontcolor=green4, penwidth=2",
            Self::Allowed { bus: false, .. } => "color=blue, fontcolor=blue, penwidth=2",
            Self::Refused(_) => "color=red, fontcolor=red, style=dashed",
            Self::Unknown => "color=orange, fontcolor=orange, style=dotted",
        }
    }
}

/// Addresses for a label: the first two, then how many more.
fn bdf_list(bdfs: &[Bdf]) -> String {
    let mut s: Vec<String> = bdfs.iter().take(2).map(Bdf::to_string).collect();
    if bdfs.len() > 2 {
        s.push(format!("{} more", bdfs.len() - 2));
    }
    s.join(", ")
}

/// The reason of a refused verdict, from the model's own findings.
fn refusal(v: &PairVerdict) -> String {
    let hb = v.rule_h.as_ref().and_then(|h| match h {
        p2pmem_model::distance::RuleH::Refused { bridges } => bridges
            .iter()
            .find(|b| b.allowed == Some(false))
            .map(|b| b.host_bridge),
        _ => None,
    });
    let hb_words = match hb {
        Some(hb) => format!("host bridge {hb} not whitelisted"),
        None => "host bridge refuses".to_string(),
    };
    if !v.acs_redirect.is_empty() {
        format!("ACS redirect at {}; {hb_words}", bdf_list(&v.acs_redirect))
    } else if v.rule_h.as_ref().and_then(|h| h.allowed()) == Some(false) {
        if v.common_upstream.is_none() {
            format!("no common switch, {hb_words}")
        } else {
            hb_words
        }
    } else {
        "refused (see p2pmem check)".to_string()
    }
}

/// Most full evaluations made for the reasons of refusals by ACS redirect (each names
/// its devices); past it, on a fabric, such refusals say only "ACS redirect".
const MAX_DECIDES: usize = 4096;

/// Verdicts with their reasons for many pairs: the outcomes from [`PairIndex`], the
/// reasons from [`decide`] (as `check`). A refusal without ACS redirect is rule H alone,
/// which depends only on the two host bridges: its reason is evaluated once per pair of
/// host bridges.
struct Verdicts<'t> {
    sys: &'t System,
    index: PairIndex<'t>,
    by_host_bridges: BTreeMap<(HostBridgeId, HostBridgeId), String>,
    decides: usize,
}

impl<'t> Verdicts<'t> {
    fn new(sys: &'t System) -> Self {
        Self {
            sys,
            index: PairIndex::new(&sys.topology, &sys.rules),
            by_host_bridges: BTreeMap::new(),
            decides: 0,
        }
    }

    fn reason(&mut self, p: Bdf, c: Bdf) -> Option<String> {
        self.decides += 1;
        let v = decide(&self.sys.topology, &self.sys.rules, p, c).ok()?;
        Some(refusal(&v))
    }

    fn of(&mut self, p: Bdf, c: Bdf) -> Option<Verdict> {
        let o = self.index.outcome(p, c).ok()?;
        Some(match (o.supported, o.map_type) {
            (Some(true), Some(m)) => Verdict::Allowed {
                bus: m == MapType::BusAddr,
                distance: o.walk_distance,
            },
            (Some(false), _) if !o.acs_redirect => {
                let hb = |b| self.sys.topology.get(&b).map(|f| f.host_bridge);
                let key = (hb(p)?, hb(c)?);
                let why = match self.by_host_bridges.get(&key) {
                    Some(why) => why.clone(),
                    None => {
                        let why = self.reason(p, c)?;
                        self.by_host_bridges.insert(key, why.clone());
                        why
                    }
                };
                Verdict::Refused(why)
            }
            (Some(false), _) if self.decides < MAX_DECIDES => Verdict::Refused(self.reason(p, c)?),
            (Some(false), _) => {
                Verdict::Refused("ACS redirect on the path; host bridge refuses".to_string())
            }
            _ => Verdict::Unknown,
        })
    }
}

/// A node an edge ends at: a function, or a host bridge (for groups across its ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Function(Bdf),
    HostBridge(HostBridgeId),
}

impl Node {
    fn id(self) -> String {
        match self {
            Self::Function(b) => dot_id(b),
            Self::HostBridge(h) => hb_id(h),
        }
    }

    /// What a note hanging from it says the pairs are.
    fn below(self) -> String {
        match self {
            Self::Function(b) => format!("pairs below {b}"),
            Self::HostBridge(h) => format!("pairs across the ports of {h}"),
        }
    }
}

/// One edge of the picture: a pair, or a group of pairs.
struct Edge {
    from: Node,
    to: Node,
    both: bool,
    verdict: Verdict,
    pairs: usize,
    /// For a group: the range of its pairs' distances.
    distances: Option<(u32, u32)>,
}

/// The endpoints: providers, NVMe and RDMA functions.
fn endpoints(sys: &System) -> Vec<&Function> {
    sys.topology
        .functions()
        .filter(|f| {
            f.p2pmem.is_some() || f.is_nvme() || sys.rdma.iter().any(|r| r.bdf == Some(f.bdf))
        })
        .collect()
}

/// The top-level function (on the root bus) above `bdf`.
fn top(sys: &System, bdf: Bdf) -> Bdf {
    sys.topology
        .get(&bdf)
        .and_then(|f| f.path.first())
        .copied()
        .unwrap_or(bdf)
}

/// The deepest device above both (or `a`'s top-level function when none is common).
fn meeting(sys: &System, a: Bdf, b: Bdf) -> Bdf {
    let ca = sys.topology.upstream_chain(&a);
    let cb = sys.topology.upstream_chain(&b);
    ca.iter()
        .skip(1)
        .find(|x| cb.contains(x))
        .copied()
        .unwrap_or_else(|| top(sys, a))
}

/// The pairs of one kind (allowed, or not): one by one while there are few, and grouped
/// by (two top-level ports, verdict) all along, for when there are many.
#[derive(Default)]
struct Class {
    pairs: BTreeMap<(Bdf, Bdf), Verdict>,
    counted: usize,
    /// Count and distance range per (ports, verdict without its distance).
    groups: BTreeMap<(Bdf, Bdf, Verdict), (usize, u32, u32)>,
}

/// Pairs counted together, with the range of their distances.
fn tally(entry: &mut (usize, u32, u32), pairs: usize, lo: u32, hi: u32) {
    *entry = if entry.0 == 0 {
        (pairs, lo, hi)
    } else {
        (entry.0 + pairs, entry.1.min(lo), entry.2.max(hi))
    };
}

impl Class {
    fn add(&mut self, sys: &System, max: usize, p: Bdf, c: Bdf, v: Verdict) {
        self.counted += 1;
        // Both directions of an unordered pair: twice the edges, then merged.
        if self.counted <= 2 * max {
            self.pairs.insert((p, c), v.clone());
        } else {
            self.pairs.clear();
        }
        let d = match v {
            Verdict::Allowed { distance, .. } => distance,
            _ => 0,
        };
        let v = match v {
            Verdict::Allowed { bus, .. } => Verdict::Allowed { bus, distance: 0 },
            other => other,
        };
        let (a, b) = (top(sys, p), top(sys, c));
        let key = if a == b {
            let m = meeting(sys, p, c);
            (m, m, v)
        } else {
            (a.min(b), a.max(b), v)
        };
        tally(self.groups.entry(key).or_default(), 1, d, d);
    }

    /// `(grouped, edges)`.
    fn edges(self, sys: &System, max: usize) -> (bool, Vec<Edge>) {
        if self.counted <= 2 * max {
            let mut edges = Vec::new();
            for ((p, c), v) in &self.pairs {
                match self.pairs.get(&(*c, *p)) {
                    // Drawn once, from the lower address, when both directions agree.
                    Some(back) if back == v && c < p => continue,
                    back => edges.push(Edge {
                        from: Node::Function(*p),
                        to: Node::Function(*c),
                        both: back == Some(v),
                        verdict: v.clone(),
                        pairs: 1,
                        distances: None,
                    }),
                }
            }
            if edges.len() <= max {
                return (false, edges);
            }
        }
        // Pairs across two top-level ports: their verdict is the host bridges' (rule H,
        // or the same path through them), so they are said once per pair of host bridges.
        let hb = |b: Bdf| sys.topology.get(&b).map(|f| f.host_bridge);
        let mut groups: BTreeMap<(Node, Node, Verdict), (usize, u32, u32)> = BTreeMap::new();
        for ((from, to, verdict), (pairs, lo, hi)) in self.groups {
            let key = match (from == to, hb(from), hb(to)) {
                (false, Some(a), Some(b)) => (
                    Node::HostBridge(a.min(b)),
                    Node::HostBridge(a.max(b)),
                    verdict,
                ),
                _ => (Node::Function(from), Node::Function(to), verdict),
            };
            tally(groups.entry(key).or_default(), pairs, lo, hi);
        }
        let groups = groups
            .into_iter()
            .map(|((from, to, verdict), (pairs, lo, hi))| Edge {
                from,
                to,
                both: true,
                verdict,
                pairs,
                distances: Some((lo, hi)),
            })
            .collect();
        (true, groups)
    }
}

/// Every provider-client pair as edges: allowed ones and the others, each one by one or
/// grouped past [`MAX_PAIR_EDGES`] and [`MAX_REFUSED_EDGES`].
fn pair_edges(sys: &System, ends: &[&Function]) -> Vec<(bool, Edge)> {
    let mut verdicts = Verdicts::new(sys);
    let (mut bus, mut host, mut refused) = (Class::default(), Class::default(), Class::default());
    for p in ends.iter().filter(|f| f.p2pmem.is_some()) {
        for c in ends.iter().filter(|c| c.bdf != p.bdf) {
            match verdicts.of(p.bdf, c.bdf) {
                Some(v @ Verdict::Allowed { bus: true, .. }) => {
                    bus.add(sys, MAX_PAIR_EDGES, p.bdf, c.bdf, v)
                }
                Some(v @ Verdict::Allowed { bus: false, .. }) => {
                    host.add(sys, MAX_REFUSED_EDGES, p.bdf, c.bdf, v)
                }
                Some(v) => refused.add(sys, MAX_REFUSED_EDGES, p.bdf, c.bdf, v),
                None => {}
            }
        }
    }
    let mut out = Vec::new();
    for (class, max) in [
        (bus, MAX_PAIR_EDGES),
        (host, MAX_REFUSED_EDGES),
        (refused, MAX_REFUSED_EDGES),
    ] {
        let (grouped, edges) = class.edges(sys, max);
        out.extend(edges.into_iter().map(|e| (grouped, e)));
    }
    out
}

fn node_label(sys: &System, names: &PciNames, f: &Function) -> String {
    let mut lines = vec![f.bdf.to_string()];
    // Ports say what they are; an endpoint is what its name says.
    if let Some(pt) = f.port_type().filter(|_| f.is_bridge()) {
        lines.push(pt.label().to_string());
    }
    let vendor = names
        .vendor(f.vendor)
        .map(str::to_string)
        .unwrap_or_else(|| format!("vendor {:04x}", f.vendor));
    let device = names
        .device(f.vendor, f.device)
        .map(str::to_string)
        .unwrap_or_else(|| format!("device {:04x}", f.device));
    lines.extend(wrap(&vendor));
    lines.extend(wrap(&format!(
        "{device} [{:04x}:{:04x}]",
        f.vendor, f.device
    )));
    let mut who: Vec<&str> = sys
        .nvme
        .iter()
        .filter(|c| c.bdf == Some(f.bdf))
        .map(|c| c.name.as_str())
        .collect();
    who.extend(
        sys.rdma
            .iter()
            .filter(|r| r.bdf == Some(f.bdf))
            .map(|r| r.name.as_str()),
    );
    if !who.is_empty() {
        lines.push(who.join(" "));
    }
    if let Some(m) = f.p2pmem {
        lines.push(format!("p2pmem {}", opt_size(m.size)));
        lines.push(format!(
            "{} free{}",
            opt_size(m.available),
            if m.published == Some(false) {
                ", NOT published"
            } else {
                ""
            }
        ));
    }
    if f.acs().redirects_p2p() == Some(true) {
        lines.push("ACS REDIRECT".to_string());
    }
    lines
        .iter()
        .map(|l| esc(l))
        .collect::<Vec<String>>()
        .join("\\n")
}

/// The default picture: endpoints, the devices above them, pair edges.
pub fn p2p(sys: &System, names: &PciNames) -> String {
    let ends = endpoints(sys);
    let end_set: BTreeSet<Bdf> = ends.iter().map(|f| f.bdf).collect();
    let mut shown: BTreeSet<Bdf> = BTreeSet::new();
    for f in &ends {
        shown.extend(sys.topology.upstream_chain(&f.bdf));
    }
    let mut out = String::from(
        "digraph p2pmem {\n  rankdir=TB;\n  nodesep=0.25;\n  ranksep=0.45;\n  \
         node [shape=box, style=rounded, fontname=\"Helvetica\", fontsize=10];\n  \
         edge [fontname=\"Helvetica\", fontsize=9];\n  \
         label=\"blue: provider (p2pmem)   yellow: client   green edge: bus address   \
         blue edge: through the host bridge   dashed red: refused\";\n  \
         labelloc=b;\n  fontname=\"Helvetica\";\n  fontsize=9;\n",
    );
    let cpu_ok = sys.rules.cpu.supports_p2pdma(sys.rules.kernel);
    let mut hbs: BTreeSet<HostBridgeId> = BTreeSet::new();
    for b in &shown {
        if let Some(f) = sys.topology.get(b) {
            hbs.insert(f.host_bridge);
        }
    }
    for hb in &hbs {
        let j = host_bridge_json(sys, names, *hb);
        let mut lines = vec![format!("host bridge {hb}")];
        if let Some(n) = &j.representative_name {
            lines.extend(wrap(n));
        }
        lines.push(match (cpu_ok, j.whitelisted) {
            (true, _) => "AMD Zen: P2P allowed through it".to_string(),
            (false, Some(true)) => "whitelisted".to_string(),
            (false, Some(false)) => "NOT whitelisted".to_string(),
            (false, None) => "whitelist unknown".to_string(),
        });
        let label: Vec<String> = lines.iter().map(|l| esc(l)).collect();
        let _ = writeln!(
            out,
            "  {} [label=\"{}\", shape=box, style=\"filled\", fillcolor=\"#eeeeee\"];",
            hb_id(*hb),
            label.join("\\n")
        );
    }
    for b in &shown {
        let Some(f) = sys.topology.get(b) else {
            continue;
        };
        let style = if f.p2pmem.is_some() {
            ", style=\"rounded,filled\", fillcolor=\"#cde8ff\""
        } else if end_set.contains(b) {
            ", style=\"rounded,filled\", fillcolor=\"#fff3c4\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {} [label=\"{}\"{style}];",
            dot_id(*b),
            node_label(sys, names, f)
        );
    }
    for b in &shown {
        let Some(f) = sys.topology.get(b) else {
            continue;
        };
        let up = match sys.topology.upstream_bridge(b) {
            Some(up) if shown.contains(&up) => dot_id(up),
            _ => hb_id(f.host_bridge),
        };
        let _ = writeln!(
            out,
            "  {up} -> {} [arrowhead=none, color=gray50];",
            dot_id(*b)
        );
    }
    let edges = pair_edges(sys, &ends);
    for (i, (grouped, e)) in edges.iter().enumerate() {
        let mut label = e.verdict.label();
        if let (Some((lo, hi)), Verdict::Allowed { .. }) = (e.distances, &e.verdict) {
            let range = if lo == hi {
                format!("distance {lo}")
            } else {
                format!("distance {lo}-{hi}")
            };
            label = label.replace("distance 0", &range);
        }
        if *grouped {
            label = format!(
                "{} pair{}: {label}",
                e.pairs,
                if e.pairs == 1 { "" } else { "s" }
            );
        }
        let label = wrap(&label)
            .iter()
            .map(|l| esc(l))
            .collect::<Vec<String>>()
            .join("\\n");
        let dir = if e.both { ", dir=both" } else { "" };
        if e.from == e.to {
            // Pairs below one device: a note hanging from it.
            let note = format!("\"note{i}\"");
            let _ = writeln!(
                out,
                "  {note} [shape=note, style=\"\", label=\"{}:\\n{label}\", fontsize=9];",
                e.from.below()
            );
            let _ = writeln!(
                out,
                "  {} -> {note} [{}, arrowhead=none];",
                e.from.id(),
                e.verdict.style()
            );
        } else {
            let _ = writeln!(
                out,
                "  {} -> {} [{}{dir}, constraint=false, label=\"{label}\"];",
                e.from.id(),
                e.to.id(),
                e.verdict.style()
            );
        }
    }
    if ends.is_empty() {
        out.push_str(
            "  none [label=\"no P2P providers or clients (see p2pmem doctor)\", shape=plaintext];\n",
        );
    }
    out.push_str("}\n");
    out
}

/// Every function, grouped by host bridge and top-level port (`--all`).
pub fn all(sys: &System, names: &PciNames) -> String {
    let mut out = String::from(
        "digraph p2pmem {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    for hb in sys.topology.host_bridges() {
        let j = host_bridge_json(sys, names, hb);
        let _ = write!(
            out,
            "  subgraph \"cluster_{hb}\" {{\n    label=\"{hb} ({})\";\n    style=rounded;\n",
            if j.whitelisted == Some(true) {
                "whitelisted"
            } else {
                "not whitelisted"
            }
        );
        for root in sys.topology.root_bus_functions(hb) {
            let _ = write!(
                out,
                "    subgraph \"cluster_{}\" {{\n      label=\"P2P domain below {}\";\n      style=dashed;\n",
                root.bdf, root.bdf
            );
            for f in sys
                .topology
                .functions()
                .filter(|f| f.path.first() == Some(&root.bdf))
            {
                // The tree's line, wrapped (one line of it is wider than a screen).
                let label = wrap(&line(sys, names, f))
                    .iter()
                    .map(|l| esc(l))
                    .collect::<Vec<String>>()
                    .join("\\n");
                let style = if f.p2pmem.is_some() {
                    ", style=filled, fillcolor=\"#cde8ff\""
                } else {
                    ""
                };
                let _ = writeln!(out, "      {} [label=\"{label}\"{style}];", dot_id(f.bdf));
            }
            out.push_str("    }\n");
        }
        out.push_str("  }\n");
    }
    for f in sys.topology.functions() {
        if let Some(up) = sys.topology.upstream_bridge(&f.bdf) {
            let _ = writeln!(
                out,
                "  {} -> {} [arrowhead=none, color=gray];",
                dot_id(up),
                dot_id(f.bdf)
            );
        }
    }
    let ends = endpoints(sys);
    let mut verdicts = Verdicts::new(sys);
    for p in ends.iter().filter(|f| f.p2pmem.is_some()) {
        for c in ends.iter().filter(|c| c.bdf != p.bdf) {
            // As before the default view existed: the pairs that work, labelled with
            // their distance only (refusals and words would make a picture of every
            // function unreadably wide).
            let v = verdicts.of(p.bdf, c.bdf);
            let label = match &v {
                Some(Verdict::Allowed { distance, .. }) => distance.to_string(),
                Some(Verdict::Unknown) => "?".to_string(),
                _ => continue,
            };
            if let Some(v) = v {
                let _ = writeln!(
                    out,
                    "  {} -> {} [{}, constraint=false, label=\"{label}\"];",
                    dot_id(p.bdf),
                    dot_id(c.bdf),
                    v.style()
                );
            }
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_lines_short_and_words_whole() {
        let w = wrap("Red Hat, Inc. QEMU NVM Express Controller [1b36:0010]");
        assert!(w.iter().all(|l| l.len() <= WRAP), "{w:?}");
        assert_eq!(
            w.join(" "),
            "Red Hat, Inc. QEMU NVM Express Controller [1b36:0010]"
        );
        assert_eq!(wrap(""), Vec::<String>::new());
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(esc("a \"b\" \\c"), "a \\\"b\\\" \\\\c");
    }

    #[test]
    fn long_lists_are_cut() {
        let b: Vec<Bdf> = ["0000:00:01.0", "0000:00:02.0", "0000:00:03.0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(bdf_list(&b), "0000:00:01.0, 0000:00:02.0, 1 more");
    }
}
