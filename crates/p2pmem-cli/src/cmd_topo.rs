//! `p2pmem topo [--dot]`: the PCI tree as P2PDMA sees it.

use crate::output::{load, lspci_name, names, opt_size, print_json};
use crate::Common;
use clap::Args;
use p2pmem_linux::pci_names::PciNames;
use p2pmem_linux::system::System;
use p2pmem_model::acs::AcsState;
use p2pmem_model::topology::{Function, P2pmemInfo};
use p2pmem_model::whitelist;
use p2pmem_model::{Bdf, HostBridgeId};
use serde::Serialize;
use std::path::PathBuf;

/// Arguments of `topo`.
#[derive(Debug, Args)]
pub struct TopoArgs {
    /// Print a Graphviz picture (`| dot -Tsvg`), top to bottom: the providers, the NVMe
    /// and RDMA clients, and the ports, switches and host bridges on the paths between
    /// them. An edge per pair: allowed ones with their map type and distance (green: bus
    /// address, blue: through the host bridge), refused ones dashed red with the kernel's
    /// reason. Past 12 bus-address edges, or 4 through the host bridge or 4 refused, they
    /// are grouped: pairs below one switch as a note on it, pairs across ports as one
    /// edge (or note) per pair of host bridges, saying how many. --all draws every
    /// function.
    #[arg(long, conflicts_with_all = ["json", "matrix"])]
    pub dot: bool,
    /// Run Graphviz's `dot` and write the picture to FILE as SVG (written to a temporary
    /// file next to it, then renamed). Needs graphviz installed (`dot` on PATH, or
    /// P2PMEM_DOT=/path/to/dot).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["json", "matrix"])]
    pub svg: Option<PathBuf>,
    /// As --svg, as PNG.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["json", "matrix"])]
    pub png: Option<PathBuf>,
    /// With --dot, --svg or --png: draw every PCI function (bridges, SATA, SMBus...),
    /// grouped by host bridge and top-level port, not only the P2P endpoints and their paths.
    #[arg(long)]
    pub all: bool,
    /// Providers by clients in one table, as `nvidia-smi topo -m`: each cell is what
    /// `check PROVIDER CLIENT` decides, in a few letters (B4 bus address at distance 4,
    /// H7 through the host bridge, xA refused by ACS redirect, xH refused by the host
    /// bridge, ? unknown), with a legend. At most 64 endpoints as text; narrow it with
    /// --provider and --client. With --json, one document with every cell.
    #[arg(long)]
    pub matrix: bool,
    /// With --matrix: only this provider as a row (repeatable; PCI address or device name).
    #[arg(long, value_name = "NAME", requires = "matrix")]
    pub provider: Vec<String>,
    /// With --matrix: only this client as a column (repeatable; PCI address, nvme0,
    /// nvme0n1, mlx5_0).
    #[arg(long, value_name = "NAME", requires = "matrix")]
    pub client: Vec<String>,
    /// What if the system booted differently.
    #[command(flatten)]
    pub what_if: crate::whatif::WhatIfArgs,
}

#[derive(Serialize)]
pub(crate) struct HostBridgeJson {
    pub(crate) id: HostBridgeId,
    pub(crate) representative: Option<Bdf>,
    pub(crate) representative_ids: Option<String>,
    pub(crate) representative_name: Option<String>,
    pub(crate) whitelisted: Option<bool>,
    pub(crate) why: String,
}

#[derive(Serialize)]
struct FunctionJson<'a> {
    bdf: Bdf,
    parent: Option<Bdf>,
    host_bridge: HostBridgeId,
    vendor: String,
    device: String,
    class: String,
    vendor_name: Option<&'a str>,
    device_name: Option<&'a str>,
    class_name: Option<&'a str>,
    port_type: Option<&'static str>,
    driver: Option<&'a str>,
    acs: AcsState,
    p2pmem: Option<P2pmemInfo>,
    nvme: Vec<&'a str>,
    block: Vec<&'a str>,
    rdma: Vec<&'a str>,
}

#[derive(Serialize)]
struct TopoJson<'a> {
    kernel: String,
    kernel_version_assumed: bool,
    cpu: String,
    cpu_allows_host_bridge_p2p: bool,
    host_bridges: Vec<HostBridgeJson>,
    functions: Vec<FunctionJson<'a>>,
    acs_unknown_config_truncated: &'a [Bdf],
    problems: &'a [p2pmem_linux::system::Problem],
}

pub(crate) fn host_bridge_json(sys: &System, names: &PciNames, hb: HostBridgeId) -> HostBridgeJson {
    let rep = sys.topology.representative(hb, sys.rules.kernel);
    let entry = rep
        .ids
        .and_then(|(v, d)| whitelist::lookup(sys.rules.kernel, v, d));
    let whitelisted = match rep.usable {
        Some(true) => Some(entry.is_some()),
        Some(false) => Some(false),
        None => None,
    };
    HostBridgeJson {
        id: hb,
        representative: rep.bdf,
        representative_ids: rep.ids.map(|(v, d)| format!("{v:04x}:{d:04x}")),
        representative_name: rep.ids.map(|(v, d)| names.describe(v, d)),
        whitelisted,
        why: match entry {
            Some(e) if rep.usable == Some(true) => format!(
                "{}{}",
                e.comment,
                if e.req_same_host_bridge {
                    " (within this host bridge only)"
                } else {
                    ""
                }
            ),
            None if rep.usable == Some(true) => format!(
                "{} is not on kernel {}'s P2PDMA host-bridge whitelist",
                rep.ids
                    .map(|(v, d)| format!("{v:04x}:{d:04x}"))
                    .unwrap_or_default(),
                sys.rules.kernel
            ),
            _ => rep.why,
        },
    }
}

fn names_of(sys: &System, bdf: Bdf) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    let nvme = sys
        .nvme
        .iter()
        .filter(|c| c.bdf == Some(bdf))
        .map(|c| c.name.as_str())
        .collect();
    let block = sys
        .block
        .iter()
        .filter(|b| b.bdfs.contains(&bdf) && !b.partition)
        .map(|b| b.name.as_str())
        .collect();
    let rdma = sys
        .rdma
        .iter()
        .filter(|r| r.bdf == Some(bdf))
        .map(|r| r.name.as_str())
        .collect();
    (nvme, block, rdma)
}

/// ACS in words (without the leading space of the tree's lines).
pub fn acs_words(acs: &AcsState) -> String {
    match acs {
        AcsState::Absent => "no ACS capability".to_string(),
        other => acs_text(other).trim_start().to_string(),
    }
}

fn acs_text(acs: &AcsState) -> String {
    match acs {
        AcsState::Absent => String::new(),
        AcsState::Present {
            control,
            capability,
            ..
        } => {
            let redirect = if control.redirects_p2p() {
                " REDIRECT"
            } else {
                ""
            };
            format!(
                " ACS ctrl {control}{redirect} [cap {}]",
                capability.names().join(" ")
            )
        }
        AcsState::Unknown { reason } => format!(" ACS unknown: {}", reason.explain()),
    }
}

pub(crate) fn line(sys: &System, names: &PciNames, f: &Function) -> String {
    let kind = match f.port_type() {
        Some(pt) => pt.label().to_string(),
        None if f.is_nvme() => "NVMe".to_string(),
        None => match names.class(f.class) {
            Some(c) => format!("{c} [{:06x}]", f.class),
            None => format!("class {:06x}", f.class),
        },
    };
    let kind = if f.is_nvme() {
        "NVMe".to_string()
    } else {
        kind
    };
    let mut s = format!("{} {kind}: {}", f.bdf, lspci_name(names, f));
    if let Some(d) = &f.driver {
        s.push_str(&format!(" ({d})"));
    }
    s.push_str(&acs_text(&f.acs()));
    let (nvme, block, rdma) = names_of(sys, f.bdf);
    let names: Vec<&str> = nvme.into_iter().chain(block).chain(rdma).collect();
    if !names.is_empty() {
        s.push_str(&format!(" {}", names.join(" ")));
    }
    if let Some(m) = f.p2pmem {
        s.push_str(&format!(
            "  p2pmem {} ({} available{})",
            opt_size(m.size),
            opt_size(m.available),
            match m.published {
                Some(true) => ", published",
                Some(false) => ", NOT published",
                None => ", published ?",
            }
        ));
    }
    s
}

fn print_tree(
    sys: &System,
    names: &PciNames,
    f: &Function,
    prefix: &str,
    last: bool,
    out: &mut String,
) {
    let (branch, next) = if last {
        ("└─ ", "   ")
    } else {
        ("├─ ", "│  ")
    };
    out.push_str(&format!("{prefix}{branch}{}\n", line(sys, names, f)));
    let kids: Vec<&Function> = sys.topology.children(&f.bdf).collect();
    for (i, k) in kids.iter().enumerate() {
        print_tree(
            sys,
            names,
            k,
            &format!("{prefix}{next}"),
            i + 1 == kids.len(),
            out,
        );
    }
}

fn text(sys: &System, names: &PciNames) -> String {
    let mut out = String::new();
    let cpu_ok = sys.rules.cpu.supports_p2pdma(sys.rules.kernel);
    out.push_str(&format!(
        "kernel {}{}; CPU {}: {}\n",
        sys.rules.kernel,
        if sys.kernel_version_assumed {
            " (assumed)"
        } else {
            ""
        },
        sys.rules.cpu.describe(),
        if cpu_ok {
            "AMD Zen or later, every host-bridge path is allowed"
        } else {
            "host-bridge paths need a whitelisted host bridge"
        }
    ));
    for hb in sys.topology.host_bridges() {
        let j = host_bridge_json(sys, names, hb);
        let wl = match j.whitelisted {
            Some(true) => "whitelisted",
            Some(false) => "not whitelisted",
            None => "whitelist status unknown",
        };
        let rep_name = match (&j.representative_name, &j.representative_ids) {
            (Some(n), Some(ids)) => format!(" {n} [{ids}]"),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{hb} host bridge, representative {}{rep_name} ({wl}: {})\n",
            j.representative
                .map(|b| b.to_string())
                .unwrap_or_else(|| "none".into()),
            j.why
        ));
        let roots: Vec<&Function> = sys.topology.root_bus_functions(hb).collect();
        for (i, f) in roots.iter().enumerate() {
            print_tree(sys, names, f, "", i + 1 == roots.len(), &mut out);
        }
    }
    if !sys.truncated_config.is_empty() {
        out.push_str(&format!(
            "note: config space of {} functions was readable only in part (not root): their ACS state is unknown\n",
            sys.truncated_config.len()
        ));
    }
    if sys.topology.providers().next().is_none() {
        out.push_str("no P2P providers (no function has p2pmem/); see `p2pmem doctor`\n");
    }
    out
}

/// Run `topo`.
pub fn run(common: &Common, args: &TopoArgs) -> anyhow::Result<i32> {
    let mut sys = load(common)?;
    let names = names(common)?;
    let what_if = crate::whatif::apply_to(&mut sys, &args.what_if);
    let picture = args.dot || args.svg.is_some() || args.png.is_some();
    if args.all && !picture {
        anyhow::bail!(
            "--all goes with --dot, --svg FILE or --png FILE (it picks what the picture shows)"
        );
    }
    if let (Some(w), false, false) = (&what_if, common.json, picture) {
        crate::whatif::print_header(w);
    }
    if args.matrix {
        let m = crate::topo_matrix::build(&sys, names, &args.provider, &args.client)?;
        if common.json {
            print_json("topo_matrix", &m)?;
        } else {
            print!("{}", crate::topo_matrix::text(&sys, names, &m)?);
        }
        return Ok(0);
    }
    if common.json {
        let functions = sys
            .topology
            .functions()
            .map(|f| {
                let (nvme, block, rdma) = names_of(&sys, f.bdf);
                FunctionJson {
                    bdf: f.bdf,
                    parent: sys.topology.upstream_bridge(&f.bdf),
                    host_bridge: f.host_bridge,
                    vendor: format!("{:04x}", f.vendor),
                    device: format!("{:04x}", f.device),
                    class: format!("{:06x}", f.class),
                    vendor_name: names.vendor(f.vendor),
                    device_name: names.device(f.vendor, f.device),
                    class_name: names.class(f.class),
                    port_type: f.port_type().map(|p| p.label()),
                    driver: f.driver.as_deref(),
                    acs: f.acs(),
                    p2pmem: f.p2pmem,
                    nvme,
                    block,
                    rdma,
                }
            })
            .collect();
        print_json(
            "topo",
            &TopoJson {
                kernel: sys.rules.kernel.to_string(),
                kernel_version_assumed: sys.kernel_version_assumed,
                cpu: sys.rules.cpu.describe(),
                cpu_allows_host_bridge_p2p: sys.rules.cpu.supports_p2pdma(sys.rules.kernel),
                host_bridges: sys
                    .topology
                    .host_bridges()
                    .into_iter()
                    .map(|h| host_bridge_json(&sys, names, h))
                    .collect(),
                functions,
                acs_unknown_config_truncated: &sys.truncated_config,
                problems: &sys.problems,
            },
        )?;
    } else if picture {
        let picture = if args.all {
            crate::topo_dot::all(&sys, names)
        } else {
            crate::topo_dot::p2p(&sys, names)
        };
        if args.dot {
            print!("{picture}");
        }
        for (file, format) in [(&args.svg, "svg"), (&args.png, "png")] {
            if let Some(file) = file {
                crate::render::render(&picture, format, file)?;
                if !args.dot {
                    eprintln!("p2pmem: wrote {}", file.display());
                }
            }
        }
    } else {
        print!("{}", text(&sys, names));
    }
    Ok(0)
}
