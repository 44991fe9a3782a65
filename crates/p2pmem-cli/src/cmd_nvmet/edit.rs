//! `nvmet subsys|port|host ...`: changes to the target (namespaces are in `ns.rs`).
//! Each edits a copy of the configuration and applies the model's plan from the current
//! one, so a repeated command changes nothing, and the order is always one the kernel
//! accepts.

use super::{apply, open, plan_guarded, print_blocked, Applied, ChangeJson};
use crate::output::print_json;
use crate::Common;
use anyhow::bail;
use clap::{Subcommand, ValueEnum};
use p2pmem_linux::nvmet::{Backing, Snapshot, Target};
use p2pmem_model::nvmet_attr::P2pmemSetting;
use p2pmem_model::nvmet_plan::config::{check_nqn, Namespace, Port, Subsystem, TargetConfig};
use p2pmem_model::nvmet_plan::facts::Transport;
use p2pmem_model::nvmet_plan::{NsPreflight, Step};
use std::collections::BTreeMap;

/// `nvmet subsys ...`.
#[derive(Debug, Subcommand)]
pub enum SubsysCmd {
    /// Create subsystem NQN. No host may connect until one is allowed (`host allow`),
    /// unless --allow-any-host is given.
    Add {
        /// Subsystem NQN.
        nqn: String,
        /// Let any host connect (sets attr_allow_any_host; never set otherwise).
        #[arg(long)]
        allow_any_host: bool,
        /// Serial number (attr_serial).
        #[arg(long)]
        serial: Option<String>,
        /// Model number (attr_model).
        #[arg(long)]
        model: Option<String>,
    },
    /// Change a subsystem's settings.
    Set {
        /// Subsystem NQN.
        nqn: String,
        /// Let any host connect, or only allowed hosts.
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        allow_any_host: Option<bool>,
        /// Serial number (fixed once a host has discovered the subsystem).
        #[arg(long)]
        serial: Option<String>,
        /// Model number (fixed once a host has discovered the subsystem).
        #[arg(long)]
        model: Option<String>,
    },
    /// Remove a subsystem with its namespaces and links. Refused while hosts are, or
    /// may be, connected to it, unless --force.
    Rm {
        /// Subsystem NQN.
        nqn: String,
        /// Remove it even if hosts are connected (they are disconnected).
        #[arg(long)]
        force: bool,
    },
}

/// Transports a port can use.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TrType {
    /// NVMe over RDMA: the only transport that uses p2pmem.
    Rdma,
    /// NVMe over TCP: never uses p2pmem.
    Tcp,
    /// The loop transport (this machine): never uses p2pmem.
    Loop,
}

/// `nvmet port ...`.
#[derive(Debug, Subcommand)]
pub enum PortCmd {
    /// Create port ID.
    Add {
        /// Port id (0 ..= 65535).
        id: u16,
        /// Transport.
        #[arg(long, value_enum)]
        trtype: TrType,
        /// Address family (default: ipv4, or ipv6 for an address with ':').
        #[arg(long)]
        adrfam: Option<String>,
        /// Address to listen on (rdma, tcp).
        #[arg(long)]
        traddr: Option<String>,
        /// Service id (default 4420 for rdma and tcp).
        #[arg(long)]
        trsvcid: Option<String>,
    },
    /// Offer subsystem NQN on port ID (the first link enables the port).
    Link {
        /// Port id.
        id: u16,
        /// Subsystem NQN.
        nqn: String,
    },
    /// Stop offering NQN on port ID: its controllers there are disconnected, so this is
    /// refused while hosts are, or may be, connected, unless --force.
    Unlink {
        /// Port id.
        id: u16,
        /// Subsystem NQN.
        nqn: String,
        /// Do it even if hosts are connected.
        #[arg(long)]
        force: bool,
    },
    /// Remove port ID with its links (same rule as unlink).
    Rm {
        /// Port id.
        id: u16,
        /// Do it even if hosts are connected.
        #[arg(long)]
        force: bool,
    },
}

/// `nvmet host ...`.
#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// Allow HOSTNQN to connect to NQN (creating the host entry if needed).
    Allow {
        /// Subsystem NQN.
        nqn: String,
        /// Host NQN.
        hostnqn: String,
    },
    /// Stop allowing HOSTNQN (connected controllers stay until they disconnect).
    Disallow {
        /// Subsystem NQN.
        nqn: String,
        /// Host NQN.
        hostnqn: String,
    },
    /// Remove host HOSTNQN from every subsystem and from the host list.
    Rm {
        /// Host NQN.
        hostnqn: String,
    },
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "1" | "yes" => Ok(true),
        "off" | "0" | "no" => Ok(false),
        _ => Err(format!("'{s}': expected on or off")),
    }
}

pub(super) fn sub_mut<'a>(c: &'a mut TargetConfig, nqn: &str) -> anyhow::Result<&'a mut Subsystem> {
    match c.subsystems.iter_mut().find(|s| s.nqn == nqn) {
        Some(s) => Ok(s),
        None => bail!("no subsystem {nqn} in the target (see `p2pmem nvmet status`)"),
    }
}

pub(super) fn ns_mut<'a>(
    c: &'a mut TargetConfig,
    nqn: &str,
    nsid: u32,
) -> anyhow::Result<&'a mut Namespace> {
    let s = sub_mut(c, nqn)?;
    match s.namespaces.iter_mut().find(|n| n.nsid == nsid) {
        Some(n) => Ok(n),
        None => bail!("subsystem {nqn} has no namespace {nsid}"),
    }
}

/// Plans `desired` from the current configuration and applies it.
pub(super) fn change(
    common: &Common,
    t: &Target,
    snap: &Snapshot,
    mut desired: TargetConfig,
    force: bool,
) -> anyhow::Result<i32> {
    desired.normalize();
    desired.validate()?;
    let steps = match plan_guarded(t, &snap.config, &desired, force) {
        Ok(s) => s,
        Err(blocked) => {
            if common.json {
                let none = Applied::default();
                let mut j = ChangeJson::new(&none);
                j.blocked = &blocked;
                j.refused_before_writing = Some("hosts are or may be connected; --force".into());
                print_json("nvmet_change", &j)?;
            } else {
                print_blocked(&blocked);
            }
            return Ok(1);
        }
    };
    run_steps(common, t, &steps, None, None)
}

/// Applies `steps` and reports them with the pre-flight and the prediction.
pub(super) fn run_steps(
    common: &Common,
    t: &Target,
    steps: &[Step],
    pre: Option<&NsPreflight>,
    predicted: Option<Option<&'static str>>,
) -> anyhow::Result<i32> {
    if steps.is_empty() && !common.json {
        println!("nothing to change");
    }
    let applied = apply(t, steps, false, common.json);
    let kernel = applied.failed.as_ref().and_then(|f| f.errno.clone());
    // Only configfs answers; a plain directory takes every write.
    let judged = t.backing() == Backing::Configfs;
    let matched = predicted
        .filter(|_| judged)
        .map(|p| p.map(str::to_string) == kernel);
    if common.json {
        let mut j = ChangeJson::new(&applied);
        j.preflight = pre;
        j.predicted_errno = predicted.flatten();
        j.prediction_matched = matched;
        print_json("nvmet_change", &j)?;
    } else if let Some(m) = matched {
        let p = predicted.flatten().unwrap_or("success");
        let k = kernel.as_deref().unwrap_or("success");
        if m {
            println!("the kernel answered {k}, as predicted");
        } else {
            println!("MISMATCH: predicted {p}, the kernel answered {k}: please report this");
        }
    }
    Ok(applied.code)
}

/// Run `nvmet subsys`.
pub fn subsys(common: &Common, cmd: &SubsysCmd) -> anyhow::Result<i32> {
    let (t, snap) = open(common)?;
    let mut want = snap.config.clone();
    match cmd {
        SubsysCmd::Add {
            nqn,
            allow_any_host,
            serial,
            model,
        } => {
            check_nqn("subsystem", nqn)?;
            if want.subsystem(nqn).is_some() {
                bail!("subsystem {nqn} exists already");
            }
            let mut attrs = BTreeMap::new();
            for (k, v) in [("attr_serial", serial), ("attr_model", model)] {
                if let Some(v) = v {
                    attrs.insert(k.to_string(), v.clone());
                }
            }
            want.subsystems.push(Subsystem {
                nqn: nqn.clone(),
                allow_any_host: *allow_any_host,
                attrs,
                allowed_hosts: Vec::new(),
                namespaces: Vec::new(),
            });
            change(common, &t, &snap, want, false)
        }
        SubsysCmd::Set {
            nqn,
            allow_any_host,
            serial,
            model,
        } => {
            let s = sub_mut(&mut want, nqn)?;
            if let Some(a) = allow_any_host {
                if *a && !s.allowed_hosts.is_empty() {
                    eprintln!("p2pmem: not written: {nqn} lists allowed hosts ({}); the kernel refuses allow_any_host with EINVAL until they are removed (`nvmet host disallow`)", s.allowed_hosts.join(", "));
                    return Ok(1);
                }
                s.allow_any_host = *a;
            }
            for (k, v) in [("attr_serial", serial), ("attr_model", model)] {
                if let Some(v) = v {
                    s.attrs.insert(k.to_string(), v.clone());
                }
            }
            change(common, &t, &snap, want, false)
        }
        SubsysCmd::Rm { nqn, force } => {
            sub_mut(&mut want, nqn)?;
            want.subsystems.retain(|s| &s.nqn != nqn);
            for p in &mut want.ports {
                p.subsystems.retain(|s| s != nqn);
            }
            change(common, &t, &snap, want, *force)
        }
    }
}

/// Run `nvmet port`.
pub fn port(common: &Common, cmd: &PortCmd) -> anyhow::Result<i32> {
    let (t, snap) = open(common)?;
    let mut want = snap.config.clone();
    let (code, id) = match cmd {
        PortCmd::Add {
            id,
            trtype,
            adrfam,
            traddr,
            trsvcid,
        } => {
            if want.port(*id).is_some() {
                bail!("port {id} exists already");
            }
            let tr = match trtype {
                TrType::Rdma => "rdma",
                TrType::Tcp => "tcp",
                TrType::Loop => "loop",
            };
            let ip = !matches!(trtype, TrType::Loop);
            if ip && traddr.is_none() {
                bail!("{tr} ports need --traddr (an address of this machine)");
            }
            let fam = adrfam.clone().or_else(|| {
                ip.then(|| {
                    if traddr.as_deref().is_some_and(|a| a.contains(':')) {
                        "ipv6"
                    } else {
                        "ipv4"
                    }
                    .into()
                })
            });
            let svc = trsvcid.clone().or_else(|| ip.then(|| "4420".into()));
            let mut attrs = BTreeMap::new();
            for (k, v) in [
                ("addr_trtype", Some(tr.to_string())),
                ("addr_adrfam", fam),
                ("addr_traddr", traddr.clone()),
                ("addr_trsvcid", svc),
            ] {
                if let Some(v) = v {
                    attrs.insert(k.to_string(), v);
                }
            }
            want.ports.push(Port {
                id: *id,
                attrs,
                subsystems: Vec::new(),
            });
            (change(common, &t, &snap, want, false)?, *id)
        }
        PortCmd::Link { id, nqn } => {
            if want.subsystem(nqn).is_none() {
                bail!("no subsystem {nqn} in the target");
            }
            let Some(p) = want.ports.iter_mut().find(|p| p.id == *id) else {
                bail!("no port {id} in the target");
            };
            p.subsystems.push(nqn.clone());
            (change(common, &t, &snap, want, false)?, *id)
        }
        PortCmd::Unlink { id, nqn, force } => {
            let Some(p) = want.ports.iter_mut().find(|p| p.id == *id) else {
                bail!("no port {id} in the target");
            };
            p.subsystems.retain(|s| s != nqn);
            (change(common, &t, &snap, want, *force)?, *id)
        }
        PortCmd::Rm { id, force } => {
            if want.port(*id).is_none() {
                bail!("no port {id} in the target");
            }
            want.ports.retain(|p| p.id != *id);
            return change(common, &t, &snap, want, *force);
        }
    };
    if !common.json {
        port_note(&t, id);
    }
    Ok(code)
}

/// Says plainly when a port will never use the p2pmem its subsystems ask for.
fn port_note(t: &Target, id: u16) {
    let Ok(snap) = t.read() else { return };
    let Some(p) = snap.config.port(id) else {
        return;
    };
    let Some(why) = p.transport().never_p2pmem() else {
        if p.transport() == Transport::Rdma {
            println!("note: rdma controllers get P2P memory only through a PCI RDMA device; soft-RoCE (rxe) and siw never use p2pmem (`p2pmem nvmet check` shows each controller's provider)");
        }
        return;
    };
    println!("note: {why}");
    for nqn in &p.subsystems {
        if let Some(s) = snap.config.subsystem(nqn) {
            for n in s
                .namespaces
                .iter()
                .filter(|n| n.setting() != P2pmemSetting::Off)
            {
                println!(
                    "note: {nqn} nsid {} has p2pmem {}, which this port will not use",
                    n.nsid,
                    n.setting()
                );
            }
        }
    }
}

/// Run `nvmet host`.
pub fn host(common: &Common, cmd: &HostCmd) -> anyhow::Result<i32> {
    let (t, snap) = open(common)?;
    let mut want = snap.config.clone();
    match cmd {
        HostCmd::Allow { nqn, hostnqn } => {
            check_nqn("host", hostnqn)?;
            let s = sub_mut(&mut want, nqn)?;
            if s.allow_any_host {
                eprintln!("p2pmem: not written: {nqn} allows any host; the kernel refuses allowed_hosts links (EINVAL) until `nvmet subsys set {nqn} --allow-any-host off`");
                return Ok(1);
            }
            s.allowed_hosts.push(hostnqn.clone());
            if !want.hosts.contains(hostnqn) {
                want.hosts.push(hostnqn.clone());
            }
        }
        HostCmd::Disallow { nqn, hostnqn } => {
            sub_mut(&mut want, nqn)?
                .allowed_hosts
                .retain(|h| h != hostnqn);
        }
        HostCmd::Rm { hostnqn } => {
            want.hosts.retain(|h| h != hostnqn);
            for s in &mut want.subsystems {
                s.allowed_hosts.retain(|h| h != hostnqn);
            }
        }
    }
    change(common, &t, &snap, want, false)
}
