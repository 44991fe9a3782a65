//! `p2pmem plan`: each flow's bytes on each link and through host memory as the kernel
//! would route them, the bottleneck, how far all rates can scale together, the same
//! with P2P disabled, and suggestions (the planner is `p2pmem_model::plan`).

use crate::output::{load, print_json};
use crate::Common;
use anyhow::{bail, Context};
use clap::Args;
use p2pmem_linux::bounded;
use p2pmem_linux::link_speed::read_link_speeds;
use p2pmem_linux::resolve::resolve_client;
use p2pmem_model::limits;
use p2pmem_model::plan::design::parse_design;
use p2pmem_model::plan::fabric::{Fabric, FabricFacts};
use p2pmem_model::plan::flow::{by_names, parse_flow, parse_flows, DeviceRef, FlowSpec};
use p2pmem_model::plan::link::{human_rate, LinkSpeed, DEFAULT_EFFICIENCY};
use p2pmem_model::plan::{plan, Loading, Plan, PlanOptions};
use p2pmem_model::Bdf;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Arguments of `plan`.
#[derive(Debug, Args)]
#[command(
    after_help = "Flows:\n  SRC:DST[:via=auto|host|DEV][:rate=SIZE/s]\n      \
a copy: SRC is read into a buffer and the buffer written to DST, the buffer in the provider \
the kernel picks (auto, the default), host memory, or DEV's p2pmem\n  \
nvmet:NIC:NS[:transport=rdma|tcp][:p2pmem=1|0|DEV][:dir=write|read][:initiator=NIC][:rate=SIZE/s]\n      \
an nvmet target flow from the target's NIC to a namespace's controller, with the namespace's \
p2pmem setting (default 1); transport=tcp (default rdma) never uses p2pmem, so its bytes \
always bounce through the target's host memory\n\
Devices are PCI addresses, a design's names, or (on a system) nvme0, nvme0n1, mlx5_0. Rates \
are bytes per second with binary suffixes: rate=1G/s is 2^30 bytes/s (default 1G/s).\n\n\
Examples:\n  p2pmem plan --design examples/designs/box24-x4.toml\n  \
p2pmem plan --flow nvme0n1:nvme1n1:rate=2G/s --link-default gen3x4\n  \
p2pmem plan --design box.toml --flows flows.txt --json\n  \
p2pmem plan --design box.toml --dot | dot -Tsvg > plan.svg\n\n\
Exit status: 0 when all flows fit at their rates (max_scale >= 1 or no known limit), 1 when \
they do not, 2 on error."
)]
pub struct PlanArgs {
    /// Plan a box described in FILE (TOML: host bridges, root ports, switches, endpoints
    /// with links and p2pmem, ACS, CPU, flows; see examples/designs/) instead of the
    /// system below --root.
    #[arg(long, value_name = "FILE")]
    pub design: Option<PathBuf>,
    /// A flow (repeatable); see the syntax below.
    #[arg(long = "flow", value_name = "FLOW")]
    pub flow: Vec<String>,
    /// Flows from FILE, one per line in the --flow syntax (`#` comments).
    #[arg(long = "flows", value_name = "FILE")]
    pub flows_file: Option<PathBuf>,
    /// Share of a link's encoded rate left for payload (TLP headers, DLLPs, flow
    /// control). Default 0.85, or the design's `efficiency`.
    #[arg(long, value_name = "FACTOR")]
    pub efficiency: Option<f64>,
    /// Assume this speed (e.g. gen3x4) for links whose speed cannot be read; the plan
    /// says which are assumed. Without it such links are "unknown speed".
    #[arg(long, value_name = "LINK")]
    pub link_default: Option<LinkSpeed>,
    /// Draw the fabric for Graphviz (`| dot -Tsvg`), links thicker and redder with load.
    #[arg(long, conflicts_with = "json")]
    pub dot: bool,
    /// List every link in the text table, not only the loaded ones.
    #[arg(long)]
    pub all_links: bool,
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = bounded::read_file(path, limits::PLAN_INPUT)
        .with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// `p2pmem plan`.
pub fn run(common: &Common, args: &PlanArgs) -> anyhow::Result<i32> {
    let mut specs: Vec<FlowSpec> = Vec::new();
    for f in &args.flow {
        specs.push(parse_flow(f).map_err(anyhow::Error::msg)?);
    }
    if let Some(p) = &args.flows_file {
        let text = read_text(p)?;
        specs.extend(parse_flows(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?);
    }
    let (topology, rules, mut facts, efficiency, memory, flows, source) = match &args.design {
        Some(path) => {
            let text = read_text(path)?;
            let d = parse_design(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let mut all = d.flows.clone();
            all.extend(specs);
            let flows = all
                .iter()
                .map(|f| f.resolve(by_names(&d.names)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            (
                d.topology,
                d.rules,
                d.facts,
                d.efficiency,
                d.memory_bandwidth,
                flows,
                path.display().to_string(),
            )
        }
        None => {
            let sys = load(common)?;
            let read = read_link_speeds(&common.root, &sys.topology);
            if !common.json {
                for p in &read.problems {
                    eprintln!("p2pmem: warning: {p}");
                }
            }
            let flows = specs
                .iter()
                .map(|f| {
                    f.resolve(|d| match d {
                        DeviceRef::Bdf(b) => Ok(*b),
                        DeviceRef::Name(n) => resolve_client(&sys, n)
                            .map(|c| c.bdf)
                            .map_err(|e| e.to_string()),
                    })
                })
                .collect::<Result<Vec<FlowSpec<Bdf>>, _>>()
                .map_err(anyhow::Error::msg)?;
            let facts = FabricFacts {
                links: read.links,
                ..FabricFacts::default()
            };
            (
                sys.topology,
                sys.rules,
                facts,
                None,
                None,
                flows,
                format!("the system below {}", common.root.display()),
            )
        }
    };
    if flows.is_empty() {
        bail!("no flows: give --flow SRC:DST[:rate=SIZE/s] (repeatable), --flows FILE, or flows in the design");
    }
    let efficiency = args.efficiency.or(efficiency).unwrap_or(DEFAULT_EFFICIENCY);
    if !(efficiency > 0.0 && efficiency <= 1.0) {
        bail!("--efficiency {efficiency} is not in (0, 1]");
    }
    facts.link_default = args.link_default;
    let fabric = Fabric::new(&topology, &facts);
    let opts = PlanOptions {
        efficiency,
        memory_bandwidth: memory,
    };
    let p = plan(&topology, &rules, &fabric, &flows, opts)?;
    if common.json {
        print_json("plan", &p)?;
    } else if args.dot {
        print!("{}", dot(&fabric, &p));
    } else {
        print!("{}", text(&p, &source, args.all_links));
    }
    Ok(if p.with_p2p.max_scale.is_some_and(|s| s < 1.0) {
        1
    } else {
        0
    })
}

fn pct(u: Option<f64>) -> String {
    u.map_or("?".into(), |u| format!("{:.0}%", u * 100.0))
}

fn scale(s: Option<f64>) -> String {
    s.map_or("unbounded (no loaded link of known speed)".into(), |s| {
        format!("{s:.2}x")
    })
}

fn bottleneck(l: &Loading) -> String {
    match &l.bottleneck {
        None => "none known".into(),
        Some(b) if b.kind == "host_memory" => format!(
            "host memory of {} ({})",
            b.host.as_deref().unwrap_or("host"),
            pct(Some(b.utilisation))
        ),
        Some(b) => format!(
            "{} -> {} {} ({})",
            b.upstream.as_deref().unwrap_or("?"),
            b.downstream.as_deref().unwrap_or("?"),
            b.direction,
            pct(Some(b.utilisation))
        ),
    }
}

const MAX_FLOW_LINES: usize = 40;
const MAX_LINK_LINES: usize = 30;

/// The text report.
fn text(p: &Plan, source: &str, all_links: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "p2pmem plan: {} flows on {source} (protocol efficiency {})\n",
        p.flows.len(),
        p.efficiency
    );
    let _ = writeln!(
        o,
        "{:<34} {:>11} {:<12} {:<14} WHY",
        "FLOW", "RATE", "PATH", "PROVIDER"
    );
    for f in p.flows.iter().take(MAX_FLOW_LINES) {
        let _ = writeln!(
            o,
            "{:<34} {:>11} {:<12} {:<14} {}",
            f.flow,
            human_rate(f.rate_bytes_per_s as f64),
            f.path,
            f.provider_name.as_deref().unwrap_or("-"),
            f.why
        );
    }
    if p.flows.len() > MAX_FLOW_LINES {
        let _ = writeln!(
            o,
            "... {} more flows (--json lists all)",
            p.flows.len() - MAX_FLOW_LINES
        );
    }
    let loaded = |l: &p2pmem_model::plan::LinkLoad| l.up_bytes_per_s > 0 || l.down_bytes_per_s > 0;
    let mut links: Vec<_> = p
        .with_p2p
        .links
        .iter()
        .zip(&p.without_p2p.links)
        .filter(|(l, w)| all_links || loaded(l) || loaded(w))
        .collect();
    let key = |(l, w): &(&p2pmem_model::plan::LinkLoad, &p2pmem_model::plan::LinkLoad)| {
        l.utilisation
            .unwrap_or(-1.0)
            .max(w.utilisation.unwrap_or(-1.0))
    };
    links.sort_by(|a, b| key(b).total_cmp(&key(a)));
    let _ = writeln!(
        o,
        "\nLinks{}, busiest first:",
        if all_links {
            ""
        } else {
            " under load (with or without P2P)"
        }
    );
    let _ = writeln!(
        o,
        "  {:<30} {:<9} {:>11} {:>11} {:>11} {:>5}  UTIL WITHOUT P2P",
        "UPSTREAM -> DOWNSTREAM", "SPEED", "CAPACITY", "UP", "DOWN", "UTIL"
    );
    for (l, w) in links.iter().take(if all_links {
        usize::MAX
    } else {
        MAX_LINK_LINES
    }) {
        let without = w.utilisation;
        let _ = writeln!(
            o,
            "  {:<30} {:<9} {:>11} {:>11} {:>11} {:>5}  {}",
            format!("{} -> {}", l.upstream, l.downstream),
            format!(
                "{}{}",
                l.speed.as_deref().unwrap_or("unknown"),
                if l.speed_assumed { "*" } else { "" }
            ),
            l.capacity_bytes_per_s
                .map_or("?".into(), |c| human_rate(c as f64)),
            human_rate(l.up_bytes_per_s as f64),
            human_rate(l.down_bytes_per_s as f64),
            pct(l.utilisation),
            pct(without)
        );
    }
    if !all_links && links.len() > MAX_LINK_LINES {
        let _ = writeln!(
            o,
            "  ... {} more loaded links (--all-links or --json)",
            links.len() - MAX_LINK_LINES
        );
    }
    let (w, wo) = (&p.with_p2p, &p.without_p2p);
    let _ = writeln!(o, "\n{:<22} {:<44} WITHOUT P2P", "", "WITH P2P");
    let _ = writeln!(
        o,
        "{:<22} {:<44} {}",
        "host memory",
        human_rate(w.host_memory_bytes_per_s as f64),
        human_rate(wo.host_memory_bytes_per_s as f64)
    );
    let _ = writeln!(
        o,
        "{:<22} {:<44} {}",
        "bottleneck",
        bottleneck(w),
        bottleneck(wo)
    );
    let _ = writeln!(
        o,
        "{:<22} {:<44} {}",
        "max_scale",
        scale(w.max_scale),
        scale(wo.max_scale)
    );
    if w.cross_host_bridge_bytes_per_s > 0 {
        let _ = writeln!(
            o,
            "{:<22} {}",
            "between host bridges",
            human_rate(w.cross_host_bridge_bytes_per_s as f64)
        );
    }
    if !p.suggestions.is_empty() {
        let _ = writeln!(o, "\nSuggestions:");
        for s in &p.suggestions {
            let _ = writeln!(o, "  - {s}");
        }
    }
    let _ = writeln!(o, "\nNotes:");
    for n in &p.notes {
        let _ = writeln!(o, "  - {n}");
    }
    o
}

/// Graphviz: every node of the fabric, links drawn by load.
fn dot(fabric: &Fabric, p: &Plan) -> String {
    let mut o = String::from(
        "digraph plan {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    for (i, n) in fabric.nodes.iter().enumerate() {
        let _ = writeln!(o, "  n{i} [label=\"{}\"];", n.label.replace('"', "'"));
    }
    let bottleneck = p
        .with_p2p
        .bottleneck
        .as_ref()
        .and_then(|b| b.downstream.clone());
    let mut li = p.with_p2p.links.iter();
    for (i, n) in fabric.nodes.iter().enumerate() {
        let Some(parent) = n.parent else { continue };
        let attrs = match n.edge {
            p2pmem_model::plan::fabric::Edge::Link { .. } => {
                let Some(l) = li.next() else { continue };
                let load = l.up_bytes_per_s.max(l.down_bytes_per_s);
                let u = l.utilisation.unwrap_or(0.0).min(1.0);
                let colour = if Some(&l.downstream) == bottleneck.as_ref() {
                    "red".to_string()
                } else if load == 0 {
                    "gray".into()
                } else {
                    format!("\"{:.3} 1.0 0.8\"", (1.0 - u) * 0.33)
                };
                format!(
                    "label=\"{} {}\\nup {} down {}\", penwidth={:.1}, color={colour}",
                    l.speed.as_deref().unwrap_or("?"),
                    pct(l.utilisation),
                    human_rate(l.up_bytes_per_s as f64),
                    human_rate(l.down_bytes_per_s as f64),
                    1.0 + 7.0 * u
                )
            }
            _ => "style=dotted, arrowhead=none".into(),
        };
        let _ = writeln!(o, "  n{parent} -> n{i} [{attrs}];");
    }
    let _ = writeln!(
        o,
        "  mem [shape=cylinder, label=\"host memory\\n{}\"];",
        human_rate(p.with_p2p.host_memory_bytes_per_s as f64)
    );
    for (i, n) in fabric.nodes.iter().enumerate() {
        if n.parent.is_none() {
            let _ = writeln!(o, "  n{i} -> mem [style=dashed, arrowhead=none];");
        }
    }
    o.push_str("}\n");
    o
}
