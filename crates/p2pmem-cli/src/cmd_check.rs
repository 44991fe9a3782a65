//! `p2pmem check PROVIDER CLIENT...` and `p2pmem find CLIENT...`.

use crate::output::{load_scoped, lspci_name, names, opt_size, pci_name, print_json};
use crate::Common;
use anyhow::Context;
use clap::Args;
use p2pmem_linux::pci_names::PciNames;
use p2pmem_linux::resolve::{resolve_client, Client};
use p2pmem_linux::system::{Scope, System};
use p2pmem_model::distance::{MapType, PairVerdict, RuleH, Side};
use p2pmem_model::errno;
use p2pmem_model::select::{check, find, Check};
use p2pmem_model::Bdf;
use p2pmem_wire::check::CheckReport;
use std::fmt::Write as _;

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The provider: a PCI address (or a device name of the function) with `p2pmem/`.
    pub provider: String,
    /// One or more clients: PCI address, block device (nvme0n1, /dev/nvme0n1), NVMe
    /// controller (nvme0) or RDMA device (mlx5_0).
    #[arg(required = true)]
    pub clients: Vec<String>,
    /// What if the system booted differently.
    #[command(flatten)]
    pub what_if: crate::whatif::WhatIfArgs,
}

/// Arguments of `find`.
#[derive(Debug, Args)]
pub struct FindArgs {
    /// One or more clients (as for `check`).
    #[arg(required = true)]
    pub clients: Vec<String>,
    /// What if the system booted differently.
    #[command(flatten)]
    pub what_if: crate::whatif::WhatIfArgs,
}

fn resolve_all(sys: &System, names: &[String]) -> anyhow::Result<Vec<Client>> {
    names
        .iter()
        .map(|n| resolve_client(sys, n).map_err(anyhow::Error::from))
        .collect()
}

fn describe(sys: &System, names: &PciNames, bdf: Bdf) -> String {
    let Some(f) = sys.topology.get(&bdf) else {
        return bdf.to_string();
    };
    let mut parts = vec![lspci_name(names, f)];
    if let Some(pt) = f.port_type() {
        parts.push(pt.label().to_string());
    }
    for c in sys.nvme.iter().filter(|c| c.bdf == Some(bdf)) {
        parts.push(c.name.clone());
    }
    for b in sys.block.iter().filter(|b| b.bdfs == [bdf]) {
        parts.push(b.name.clone());
    }
    if let Some(m) = f.p2pmem {
        parts.push(format!(
            "p2pmem {} ({} available, {})",
            opt_size(m.size),
            opt_size(m.available),
            match m.published {
                Some(true) => "published",
                Some(false) => "not published",
                None => "published: ?",
            }
        ));
    }
    format!("{bdf} ({})", parts.join(", "))
}

fn verdict_word(s: Option<bool>) -> &'static str {
    match s {
        Some(true) => "ALLOWED",
        Some(false) => "REFUSED",
        None => "CANNOT TELL",
    }
}

fn map_word(m: Option<MapType>) -> &'static str {
    m.map(MapType::as_str).unwrap_or("unknown")
}

fn print_pair(sys: &System, names: &PciNames, p: &PairVerdict, is_provider: bool) {
    println!("client   {}", describe(sys, names, p.client));
    match p.common_upstream {
        Some(c) if c == p.client && c == p.provider => {
            println!("  path: the provider is the client (distance 0)")
        }
        Some(c) => println!(
            "  path: common upstream device {}, distance {}",
            describe(sys, names, c),
            p.walk_distance
        ),
        None => println!(
            "  path: no common upstream device; through the host bridge (distance {})",
            p.walk_distance
        ),
    }
    if !p.acs_tests.is_empty() {
        let list: Vec<String> = p
            .acs_tests
            .iter()
            .map(|t| {
                let side = match t.side {
                    Side::Provider => "",
                    Side::Common => "common ",
                    Side::Client => "client-side ",
                };
                let state = match t.acs.redirects_p2p() {
                    Some(true) => "REDIRECT",
                    Some(false) => "ok",
                    None => "unknown",
                };
                format!("{side}{} {state}", t.bdf)
            })
            .collect();
        println!("  ACS tested (RR/CR/EC): {}", list.join(", "));
    }
    if let Some(h) = &p.rule_h {
        let text = match h {
            RuleH::AmdZen { cpu } => format!("allowed: {cpu} is AMD Zen or later"),
            RuleH::Whitelisted { bridges }
            | RuleH::Refused { bridges }
            | RuleH::Unknown { bridges } => {
                let word = match h.allowed() {
                    Some(true) => "allowed",
                    Some(false) => "refused",
                    None => "unknown",
                };
                let why: Vec<&str> = bridges.iter().map(|b| b.why.as_str()).collect();
                format!("{word}: {}", why.join("; "))
            }
        };
        println!("  host bridge: {text}");
    }
    if is_provider {
        println!(
            "  result: {} (map type {})",
            verdict_word(p.supported),
            map_word(p.map_type)
        );
    } else {
        println!(
            "  path alone would give: {} (map type {}), but there is no p2pmem to use",
            verdict_word(p.supported),
            map_word(p.map_type)
        );
    }
    for u in &p.unknowns {
        println!("  unknown: {u}");
    }
}

/// The model's decision for `provider` and `clients` (names as `check` takes them) on
/// `sys`: the report `check --json` prints and the lab agent returns.
pub fn check_report(
    sys: &System,
    provider: &str,
    clients: &[String],
) -> anyhow::Result<(CheckReport, Check)> {
    let provider = resolve_client(sys, provider).context("provider")?;
    let clients = resolve_all(sys, clients)?;
    let bdfs: Vec<Bdf> = clients.iter().map(|c| c.bdf).collect();
    let c: Check = check(&sys.topology, &sys.rules, provider.bdf, &bdfs)?;
    let refused_errno = errno::o_direct_not_supported(sys.rules.kernel).map(|e| e.name);
    let report = CheckReport {
        provider: c.provider,
        clients: c.clients.clone(),
        client_names: clients.into_iter().map(|c| c.name).collect(),
        map_type: c.map_type.map(|m| m.as_str().to_string()),
        distance: c.distance,
        supported: c.supported,
        messages: c.messages.clone(),
        fixes: c.fixes.clone(),
        unknowns: c.unknowns.clone(),
        kernel: sys.rules.kernel.to_string(),
        refused_errno: refused_errno.map(str::to_string),
        is_provider: c.is_provider,
        published: c.published,
        pairs: c.pairs.clone(),
        what_if: None,
        proven_fixes: Vec::new(),
        devices: Vec::new(),
    };
    Ok((report, c))
}

/// `check`'s exit status for a verdict: 0 allowed, 1 refused, 2 unknown.
pub fn check_exit(supported: Option<bool>) -> i32 {
    match supported {
        Some(true) => 0,
        Some(false) => 1,
        None => 2,
    }
}

/// Run `check`.
pub fn run_check(common: &Common, args: &CheckArgs) -> anyhow::Result<i32> {
    // The pair's functions, their bridges and host bridges: all a decision reads.
    let wanted = std::iter::once(&args.provider)
        .chain(&args.clients)
        .cloned()
        .collect();
    let scope = Scope::For {
        names: wanted,
        providers: false,
    };
    let mut sys = load_scoped(common, &scope)?;
    let names = names(common)?;
    let what_if = crate::whatif::apply_to(&mut sys, &args.what_if);
    let (mut report, c) = check_report(&sys, &args.provider, &args.clients)?;
    report.devices = std::iter::once(c.provider)
        .chain(c.clients.iter().copied())
        .filter_map(|b| pci_name(&sys, names, b))
        .collect();
    let refused_errno = report.refused_errno.clone();
    let boot = crate::whatif::boot_of(&sys, what_if.as_ref());
    let fixes: Vec<crate::whatif::ProvenFix> = c
        .clients
        .iter()
        .flat_map(|client| crate::whatif::prove_fix(&sys, &boot, c.provider, *client))
        .collect();
    report.what_if = what_if.clone();
    report.proven_fixes = fixes
        .iter()
        .map(|f| p2pmem_wire::check::ProvenFix {
            parameter: f.parameter.clone(),
            cmdline: f.cmdline.clone(),
            allowed: f.allowed,
            map_type: f.map_type.clone(),
        })
        .collect();
    if common.json {
        print_json("check", &report)?;
    } else {
        if let Some(w) = &what_if {
            crate::whatif::print_header(w);
        }
        println!("provider {}", describe(&sys, names, c.provider));
        if !c.is_provider {
            println!(
                "  {} has no p2pmem/ directory: it is not a P2PDMA provider",
                c.provider
            );
        }
        for p in &c.pairs {
            print_pair(&sys, names, p, c.is_provider);
        }
        if !c.messages.is_empty() {
            println!("kernel messages (printed on the first DMA mapping of each pair):");
            for m in &c.messages {
                println!("  {m}");
            }
        }
        if fixes.is_empty() {
            for f in &c.fixes {
                println!("fix: add to the kernel command line (boot time only): {f}");
            }
        } else {
            crate::whatif::print_fixes(&fixes);
        }
        if c.is_provider && c.fixes.is_empty() {
            if let Some(advice) = crate::whatif::host_bridge_advice(c.map_type) {
                println!("what would change it: {advice}");
            }
        }
        let dist = c
            .distance
            .map(|d| format!(", distance {d}"))
            .unwrap_or_default();
        println!(
            "verdict: {} (map type {}{dist}) on kernel {}",
            verdict_word(c.supported),
            map_word(c.map_type),
            sys.rules.kernel
        );
        if c.supported == Some(false) && c.is_provider {
            match refused_errno {
                Some(e) => {
                    println!("an O_DIRECT transfer through this provider's p2pmem fails with {e}")
                }
                None => println!(
                    "(kernel {} has no userspace P2P I/O: `p2pmem/allocate` arrived in 6.2)",
                    sys.rules.kernel
                ),
            }
        }
        if c.supported.is_none() {
            if sys.import.is_some() {
                println!(
                    "the answer depends on config space the lspci output did not show: import `lspci -D -vvv -xxxx` run as root"
                );
            } else {
                println!("the answer depends on config space this user cannot read: run as root");
            }
        }
    }
    Ok(check_exit(c.supported))
}

fn bdfs_of_clients(clients: &[Client]) -> Vec<Bdf> {
    clients.iter().map(|c| c.bdf).collect()
}

/// Run `find`.
pub fn run_find(common: &Common, args: &FindArgs) -> anyhow::Result<i32> {
    let scope = Scope::For {
        names: args.clients.clone(),
        providers: true,
    };
    let mut sys = load_scoped(common, &scope)?;
    let names = names(common)?;
    if let Some(w) = crate::whatif::apply_to(&mut sys, &args.what_if) {
        if !common.json {
            crate::whatif::print_header(&w);
        }
    }
    let clients = resolve_all(&sys, &args.clients)?;
    let bdfs: Vec<Bdf> = clients.iter().map(|c| c.bdf).collect();
    let f = find(&sys.topology, &sys.rules, &bdfs)?;
    // What is printed about the chosen providers is what a full read says of them.
    p2pmem_linux::system::complete_ids(&mut sys, &f.best);
    if common.json {
        #[derive(serde::Serialize)]
        struct FindJson<'a> {
            #[serde(flatten)]
            find: &'a p2pmem_model::select::Found,
            devices: Vec<p2pmem_wire::pci::PciName>,
        }
        let mut bdfs: Vec<Bdf> = f.candidates.iter().map(|c| c.provider).collect();
        bdfs.extend(&f.best);
        bdfs.extend(&bdfs_of_clients(&clients));
        bdfs.sort();
        bdfs.dedup();
        print_json(
            "find",
            &FindJson {
                find: &f,
                devices: bdfs
                    .into_iter()
                    .filter_map(|b| pci_name(&sys, names, b))
                    .collect(),
            },
        )?;
    } else {
        // One write: a thousand candidates are a thousand lines.
        let mut out = String::new();
        let client_list: Vec<String> = clients
            .iter()
            .map(|c| format!("{} ({})", c.name, c.bdf))
            .collect();
        writeln!(out, "clients: {}", client_list.join(", "))?;
        match f.best.as_slice() {
            [] => writeln!(
                out,
                "the kernel finds no provider (pci_p2pmem_find returns NULL)"
            )?,
            [one] => writeln!(
                out,
                "the kernel chooses {} at distance {}",
                describe(&sys, names, *one),
                f.best_distance.unwrap_or(0)
            )?,
            many => {
                writeln!(
                    out,
                    "{} providers tie at distance {}; the kernel picks one at random:",
                    many.len(),
                    f.best_distance.unwrap_or(0)
                )?;
                for b in many {
                    writeln!(out, "  {}", describe(&sys, names, *b))?;
                }
            }
        }
        for m in &f.maybe {
            writeln!(
                out,
                "  unknown (ACS unreadable, run as root): {m} might also qualify"
            )?;
        }
        writeln!(out, "candidates:")?;
        for c in &f.candidates {
            let state = if !c.published {
                "not published: never chosen".to_string()
            } else {
                match (c.supported, c.distance) {
                    (Some(true), Some(d)) => format!("reachable, distance {d}"),
                    (Some(false), _) => "refused for at least one client".to_string(),
                    _ => "unknown".to_string(),
                }
            };
            let who = match sys.topology.get(&c.provider) {
                Some(func) => format!("{} {}", c.provider, lspci_name(names, func)),
                None => c.provider.to_string(),
            };
            writeln!(out, "  {who}: {state}")?;
        }
        if f.candidates.is_empty() {
            writeln!(out, "  none: no function here has p2pmem/")?;
        }
        for m in &f.messages {
            writeln!(out, "kernel message: {m}")?;
        }
        print!("{out}");
    }
    Ok(if !f.best.is_empty() {
        0
    } else if !f.maybe.is_empty() {
        2
    } else {
        1
    })
}
