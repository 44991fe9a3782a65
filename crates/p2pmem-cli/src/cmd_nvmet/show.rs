//! `nvmet status` and `nvmet check`: what the target holds and whether its P2P memory is
//! used, and the pre-flight of each namespace and RDMA port.

use super::{open, system};
use crate::output::{opt_size, print_json};
use crate::Common;
use anyhow::{bail, Context};
use clap::Args;
use p2pmem_linux::bounded;
use p2pmem_linux::klog::{KernelLog, Syslog};
use p2pmem_linux::nvmet::facts::{
    all_backing, all_port_facts, backing, connections, p2pmem_log, P2pLogLine,
};
use p2pmem_linux::nvmet::Extra;
use p2pmem_linux::system::{read_system, System};
use p2pmem_model::nvmet_attr::{parse_user_setting, P2pmemSetting};
use p2pmem_model::nvmet_plan::connections::Connections;
use p2pmem_model::nvmet_plan::facts::Transport;
use p2pmem_model::nvmet_plan::ports::{CtrlOutcome, PortPlan};
use p2pmem_model::nvmet_plan::preflight::{namespace, AttrWrite, ProviderInfo};
use p2pmem_model::nvmet_plan::{
    plan_target, BackingFacts, BlockDriver, EnableOutcome, Env, NsPreflight,
};
use p2pmem_model::{limits, Bdf};
use serde::Serialize;
use std::path::Path;

/// Arguments of `nvmet check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Only this subsystem.
    pub nqn: Option<String>,
    /// Only this namespace of it.
    #[arg(requires = "nqn")]
    pub nsid: Option<u32>,
    /// Check this setting (off, auto or a PCI address) instead of the namespace's own,
    /// as if it were written now.
    #[arg(long, value_name = "SETTING", requires = "nsid")]
    pub p2pmem: Option<String>,
}

fn describe_backing(b: &BackingFacts) -> String {
    match b {
        BackingFacts::Unset => "device_path unset".into(),
        BackingFacts::Missing => "missing".into(),
        BackingFacts::File => "a file (file backend)".into(),
        BackingFacts::Block { name, driver, pci } => {
            let d = match driver {
                BlockDriver::NvmePci => "nvme-pci".to_string(),
                BlockDriver::NvmeFabrics { transport } => format!("nvme over {transport}"),
                BlockDriver::NvmeMultipathHead { .. } => "nvme multipath head".into(),
                BlockDriver::Md { level, .. } => format!("md {level}"),
                BlockDriver::Loop => "loop".into(),
                BlockDriver::VirtioBlk => "virtio-blk".into(),
                BlockDriver::Scsi => "scsi".into(),
                BlockDriver::DeviceMapper => "device-mapper".into(),
                BlockDriver::Other { name } => name.clone(),
            };
            match pci {
                Some(p) => format!("{name}, {d}, PCI {p}"),
                None => format!("{name}, {d}, no PCI function"),
            }
        }
        BackingFacts::Other { what } => what.clone(),
        BackingFacts::Unknown { why } => format!("unknown: {why}"),
    }
}

fn provider_text(p: &ProviderInfo) -> String {
    let dist = p
        .distance
        .map(|d| format!(" at distance {d}"))
        .unwrap_or_default();
    format!(
        "{}{dist}, {} of {} available",
        p.bdf,
        opt_size(p.available),
        opt_size(p.size)
    )
}

fn print_preflight(p: &NsPreflight) {
    let state = if p.enabled { "enabled" } else { "disabled" };
    println!(
        "{} nsid {}: {} ({}), p2pmem {}, {state}",
        p.nqn,
        p.nsid,
        p.device_path,
        describe_backing(&p.backing),
        if p.attribute_present {
            p.setting.to_string()
        } else {
            "absent (kernel without CONFIG_PCI_P2PDMA)".into()
        }
    );
    if let Some(q) = p.queue_supports_p2pdma {
        println!(
            "  queue accepts P2P pages: {}",
            if q { "yes" } else { "no" }
        );
    }
    match &p.attr_write {
        Some(AttrWrite::Accepted) => println!("  writing p2pmem {}: accepted", p.setting),
        Some(AttrWrite::Refused { error }) => {
            println!("  writing p2pmem {}: REFUSED: {error}", p.setting)
        }
        Some(AttrWrite::NoAttribute) => {
            println!("  writing p2pmem: fails with ENOENT: this kernel has no p2pmem attribute")
        }
        None => {}
    }
    match &p.enable {
        EnableOutcome::NotRequested => {
            println!("  enable: no P2P check (p2pmem off); data buffers come from host memory")
        }
        EnableOutcome::Passes => println!("  enable: succeeds"),
        EnableOutcome::Undetermined { why } => println!("  enable: cannot tell: {why}"),
        EnableOutcome::Fails { failure, .. } => println!("  enable: FAILS: {failure}"),
        EnableOutcome::BackendFails { errno, why } => println!(
            "  enable: FAILS{}: {why}",
            errno
                .map(|e| format!(" with {}", e.name))
                .unwrap_or_default()
        ),
    }
    for prov in &p.providers {
        println!("  provider: {}", provider_text(prov));
    }
    for l in &p.kernel_log {
        println!("  kernel log: {l}");
    }
    for n in &p.notes {
        println!("  note: {n}");
    }
    if p.enabled && p.attr_write.is_none() && p.enable.succeeds() == Some(false) {
        println!("  note: the namespace is enabled although the model predicts enable fails: please report this");
    }
}

fn print_port(p: &PortPlan) {
    let addr = if p.traddr.is_empty() {
        String::new()
    } else {
        format!(" {}", p.traddr)
    };
    let tr = if p.trtype.is_empty() {
        "no transport"
    } else {
        &p.trtype
    };
    println!("port {} ({tr}{addr}):", p.port);
    if let Some(why) = p.never {
        println!("  {why}");
        return;
    }
    if let Some(m) = &p.matched_by {
        println!("  RDMA devices: {m}");
    }
    if p.controllers.is_empty() {
        println!("  no RDMA device: no controller can connect");
    }
    for c in &p.controllers {
        let bdf = c.rdma_bdf.map(|b| format!(" ({b})")).unwrap_or_default();
        if let Some(why) = c.no_p2p_client {
            println!("  {}{bdf}: {why}", c.rdma_device);
            continue;
        }
        if c.namespaces.is_empty() {
            println!("  {}{bdf}: no namespace here has p2pmem set", c.rdma_device);
        }
        for n in &c.namespaces {
            let what = match &n.outcome {
                CtrlOutcome::Uses {
                    provider,
                    kernel_log,
                } => format!("uses {provider} (\"{kernel_log}\")"),
                CtrlOutcome::Random {
                    providers,
                    distance,
                } => format!(
                    "one of {} at random (tie at distance {})",
                    join(providers),
                    distance.map_or("?".into(), |d| d.to_string())
                ),
                CtrlOutcome::Skipped {
                    provider,
                    kernel_log,
                } => format!(
                    "host memory: {provider} cannot reach the RDMA device, so the kernel skips it silently{}",
                    if kernel_log.is_empty() {
                        String::new()
                    } else {
                        format!(" (logs only: {})", kernel_log.join(" / "))
                    }
                ),
                CtrlOutcome::NoProvider { kernel_log } => {
                    format!("host memory (\"{kernel_log}\")")
                }
                CtrlOutcome::NotEnabled { why } => format!("nothing: the namespace cannot be enabled ({why})"),
                CtrlOutcome::Undetermined { why } => format!("cannot tell: {why}"),
            };
            println!(
                "  controllers via {}{bdf}: {} nsid {}: {what}",
                c.rdma_device, n.nqn, n.nsid
            );
        }
    }
}

fn join(b: &[Bdf]) -> String {
    b.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Serialize)]
struct CheckJson<'a> {
    kernel: String,
    namespaces: Vec<&'a NsPreflight>,
    ports: Vec<&'a PortPlan>,
    verdict: &'static str,
}

/// Run `nvmet check`.
pub fn check(common: &Common, args: &CheckArgs) -> anyhow::Result<i32> {
    let (t, snap) = open(common)?;
    let sys = system(common)?;
    let env = Env {
        topo: &sys.topology,
        rules: &sys.rules,
    };
    let mut config = snap.config.clone();
    let proposed = args.p2pmem.as_deref().map(parse_user_setting).transpose()?;
    if let Some(nqn) = &args.nqn {
        let Some(s) = config.subsystems.iter_mut().find(|s| &s.nqn == nqn) else {
            bail!("no subsystem {nqn} in the target (see `p2pmem nvmet status`)");
        };
        if let Some(nsid) = args.nsid {
            let Some(n) = s.namespaces.iter_mut().find(|n| n.nsid == nsid) else {
                bail!("subsystem {nqn} has no namespace {nsid}");
            };
            if let (Some(set), true) = (proposed, n.p2pmem.is_some()) {
                n.p2pmem = Some(set);
            }
        }
    }
    let backs = all_backing(t.fs(), &config);
    let ports = all_port_facts(t.fs(), &sys, &config);
    let mut plan = plan_target(env, &config, &backs, &ports);
    if let (Some(set), Some(nqn), Some(nsid)) = (proposed, &args.nqn, args.nsid) {
        // The write's own prediction, against the namespace as it is now.
        if let Some(orig) = snap
            .config
            .subsystem(nqn)
            .and_then(|s| s.namespaces.iter().find(|n| n.nsid == nsid))
        {
            let b = backing(t.fs(), &orig.device_path);
            if let Some(slot) = plan
                .namespaces
                .iter_mut()
                .find(|p| &p.nqn == nqn && p.nsid == nsid)
            {
                *slot = namespace(env, nqn, orig, &b, Some(set));
            }
        }
    }
    let selected: Vec<&NsPreflight> = plan
        .namespaces
        .iter()
        .filter(|p| args.nqn.as_ref().is_none_or(|n| &p.nqn == n))
        .filter(|p| args.nsid.is_none_or(|n| p.nsid == n))
        .filter(|p| args.nsid.is_some() || p.setting != P2pmemSetting::Off)
        .collect();
    let fails = selected.iter().any(|p| {
        p.enable.succeeds() == Some(false)
            || matches!(
                p.attr_write,
                Some(AttrWrite::Refused { .. } | AttrWrite::NoAttribute)
            )
    });
    let unknown = selected.iter().any(|p| p.enable.succeeds().is_none());
    let (verdict, code) = if fails {
        ("fails", 1)
    } else if unknown {
        ("undetermined", 2)
    } else {
        ("succeeds", 0)
    };
    let port_list: Vec<&PortPlan> = plan
        .ports
        .iter()
        .filter(|p| {
            args.nqn.as_ref().is_none_or(|n| {
                config
                    .port(p.port)
                    .is_some_and(|c| c.subsystems.contains(n))
            })
        })
        .collect();
    if common.json {
        print_json(
            "nvmet_check",
            &CheckJson {
                kernel: sys.rules.kernel.to_string(),
                namespaces: selected,
                ports: port_list,
                verdict,
            },
        )?;
        return Ok(code);
    }
    if selected.is_empty() {
        println!("no namespace has p2pmem set: nothing to check (name one with NQN NSID)");
    }
    for p in &selected {
        print_preflight(p);
    }
    for p in &port_list {
        print_port(p);
    }
    println!(
        "verdict: enabling {} on kernel {} (CPU family {})",
        match verdict {
            "fails" => "FAILS for at least one namespace",
            "undetermined" => "cannot be predicted for every namespace",
            _ => "succeeds for every namespace checked",
        },
        sys.rules.kernel,
        sys.rules
            .cpu
            .family
            .map_or_else(|| "?".to_string(), |f| f.to_string())
    );
    Ok(code)
}

#[derive(Serialize)]
struct NsStatus {
    nsid: u32,
    device_path: String,
    enabled: bool,
    p2pmem: String,
    backing: BackingFacts,
    in_use: &'static str,
    detail: String,
    providers: Vec<ProviderInfo>,
    log: Vec<String>,
}

#[derive(Serialize)]
struct SubsysStatus {
    nqn: String,
    allow_any_host: bool,
    allowed_hosts: Vec<String>,
    ports: Vec<u16>,
    namespaces: Vec<NsStatus>,
}

#[derive(Serialize)]
struct PortStatus {
    id: u16,
    trtype: String,
    traddr: String,
    trsvcid: String,
    subsystems: Vec<String>,
    p2pmem_never: Option<&'static str>,
}

#[derive(Serialize)]
struct StatusJson<'a> {
    backing: p2pmem_linux::nvmet::Backing,
    subsystems: Vec<SubsysStatus>,
    ports: Vec<PortStatus>,
    hosts: &'a [String],
    connections: &'a Connections,
    klog: String,
    not_saved: &'a [Extra],
}

fn info(sys: Option<&System>, bdf: Bdf) -> ProviderInfo {
    let m = sys
        .and_then(|s| s.topology.get(&bdf))
        .and_then(|f| f.p2pmem);
    ProviderInfo {
        bdf,
        distance: None,
        size: m.and_then(|m| m.size),
        available: m.and_then(|m| m.available),
    }
}

fn read_klog(common: &Common, file: Option<&Path>) -> (Option<Vec<P2pLogLine>>, String) {
    if let Some(f) = file {
        return match bounded::read_file(f, limits::KERNEL_LOG) {
            Ok(b) => (Some(p2pmem_log(&b)), format!("read from {}", f.display())),
            Err(e) => (None, e.to_string()),
        };
    }
    if common.root != Path::new("/") {
        return (
            None,
            "not read: --root names another system (use --klog FILE)".into(),
        );
    }
    match Syslog.read_all() {
        Ok(b) => (Some(p2pmem_log(&b)), "read from the kernel log".into()),
        Err(e) => (None, format!("unavailable: {e}")),
    }
}

/// Run `nvmet status`.
pub fn status(common: &Common, klog_file: Option<&Path>) -> anyhow::Result<i32> {
    let (t, snap) = open(common)?;
    let sys = read_system(&common.root).ok();
    let kernel = sys
        .as_ref()
        .map_or(p2pmem_model::KernelVersion::NEWEST_READ, |s| s.rules.kernel);
    let (log, log_state) = read_klog(common, klog_file);
    let conns = connections(t.fs(), kernel);
    let c = &snap.config;
    let mut subsystems = Vec::new();
    for s in &c.subsystems {
        let ports: Vec<u16> = c.ports_of(&s.nqn).map(|p| p.id).collect();
        let rdma = c.ports_of(&s.nqn).any(|p| p.transport() == Transport::Rdma);
        let mut namespaces = Vec::new();
        for n in &s.namespaces {
            let setting = n.setting();
            // The kernel logs only for namespaces with p2pmem set, and names no subsystem.
            let lines: Vec<&P2pLogLine> = log
                .iter()
                .flatten()
                .filter(|l| setting != P2pmemSetting::Off && l.nsid == Some(n.nsid))
                .collect();
            let (in_use, detail) = if setting == P2pmemSetting::Off {
                ("off", "host memory: p2pmem is off".to_string())
            } else if !n.enable {
                ("disabled", "the namespace is not enabled".to_string())
            } else if !rdma {
                (
                    "never",
                    "no rdma port serves this subsystem: tcp and loop never use p2pmem".to_string(),
                )
            } else if !lines.is_empty() {
                (
                    "in_use",
                    "the kernel logged `using p2pmem on` for this nsid (the line does not name the subsystem)"
                        .to_string(),
                )
            } else if log.is_none() {
                ("unknown", format!("kernel log {log_state}"))
            } else {
                (
                    "not_seen",
                    "no `using p2pmem on` line for this nsid: no RDMA controller has connected, or none could use a provider"
                        .to_string(),
                )
            };
            let mut providers: Vec<ProviderInfo> = match setting {
                P2pmemSetting::Device(b) => vec![info(sys.as_ref(), b)],
                _ => Vec::new(),
            };
            for l in &lines {
                if let Some(b) = l.provider {
                    if !providers.iter().any(|p| p.bdf == b) {
                        providers.push(info(sys.as_ref(), b));
                    }
                }
            }
            namespaces.push(NsStatus {
                nsid: n.nsid,
                device_path: n.device_path.clone(),
                enabled: n.enable,
                p2pmem: n.p2pmem.map_or("absent".into(), |p| p.to_string()),
                backing: backing(t.fs(), &n.device_path),
                in_use,
                detail,
                providers,
                log: lines.iter().map(|l| l.text.clone()).collect(),
            });
        }
        subsystems.push(SubsysStatus {
            nqn: s.nqn.clone(),
            allow_any_host: s.allow_any_host,
            allowed_hosts: s.allowed_hosts.clone(),
            ports,
            namespaces,
        });
    }
    let ports: Vec<PortStatus> = c
        .ports
        .iter()
        .map(|p| PortStatus {
            id: p.id,
            trtype: p.attr("addr_trtype").into(),
            traddr: p.attr("addr_traddr").into(),
            trsvcid: p.attr("addr_trsvcid").into(),
            subsystems: p.subsystems.clone(),
            p2pmem_never: p.transport().never_p2pmem(),
        })
        .collect();
    if common.json {
        print_json(
            "nvmet_status",
            &StatusJson {
                backing: t.backing(),
                subsystems,
                ports,
                hosts: &c.hosts,
                connections: &conns,
                klog: log_state,
                not_saved: &snap.not_saved,
            },
        )
        .context("cannot print JSON")?;
        return Ok(0);
    }
    if c.subsystems.is_empty() && c.ports.is_empty() {
        println!("the target is empty (no subsystems, no ports)");
    }
    for s in &subsystems {
        let access = if s.allow_any_host {
            "any host".to_string()
        } else if s.allowed_hosts.is_empty() {
            "no host allowed".to_string()
        } else {
            format!("hosts {}", s.allowed_hosts.join(", "))
        };
        let ports = s.ports.iter().map(u16::to_string).collect::<Vec<_>>();
        println!(
            "subsystem {} ({access}; ports {})",
            s.nqn,
            if ports.is_empty() {
                "none".into()
            } else {
                ports.join(", ")
            }
        );
        for n in &s.namespaces {
            println!(
                "  nsid {} {} ({}) {}, p2pmem {}: {}",
                n.nsid,
                n.device_path,
                describe_backing(&n.backing),
                if n.enabled { "enabled" } else { "disabled" },
                n.p2pmem,
                n.detail
            );
            for p in &n.providers {
                println!("    provider {}", provider_text(p));
            }
            for l in &n.log {
                println!("    kernel log: {l}");
            }
        }
    }
    for p in &ports {
        let addr = [p.traddr.as_str(), p.trsvcid.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(":");
        println!(
            "port {} {} {addr} -> {}",
            p.id,
            if p.trtype.is_empty() {
                "(no transport)"
            } else {
                &p.trtype
            },
            if p.subsystems.is_empty() {
                "no subsystem".into()
            } else {
                p.subsystems.join(", ")
            }
        );
        if let Some(n) = p.p2pmem_never {
            println!("  {n}");
        }
    }
    if !c.hosts.is_empty() {
        println!("hosts: {}", c.hosts.join(", "));
    }
    match (&conns.debugfs, &conns.hidden_because) {
        (Some(list), _) => println!("connected controllers (debugfs): {}", list.len()),
        (None, Some(why)) => println!("connected hosts: not visible ({why})"),
        (None, None) => {}
    }
    if !conns.local_loop.is_empty() {
        println!(
            "this machine is connected over loop to: {}",
            conns.local_loop.join(", ")
        );
    }
    println!("kernel log: {log_state}");
    for e in &snap.not_saved {
        println!("not saved by `nvmet save`: {}: {}", e.path, e.what);
    }
    Ok(0)
}
