//! `p2pmem doctor`: is P2PDMA usable here, and what to do about each finding.

use crate::output::{load, lspci_name, names, opt_size, print_json};
use crate::Common;
use p2pmem_linux::pci_names::PciNames;
use p2pmem_linux::resource::read_bars;
use p2pmem_linux::rootfs::RootFs;
use p2pmem_linux::system::System;
use p2pmem_model::boot_params::{dev_str_match, DeviceIds, Finding as BootFinding};
use p2pmem_model::cmb::{self, CmbLoc, CmbOutcome, CmbSz};
use p2pmem_model::errno::USERSPACE_P2P;
use p2pmem_model::kernel_version::VersionRange;
use p2pmem_model::{whitelist, Bdf, KernelVersion};
use serde::Serialize;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Fine.
    Ok,
    /// Worth knowing.
    Info,
    /// Limits what works.
    Warning,
    /// P2PDMA cannot work until fixed.
    Problem,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// How much it matters.
    pub level: Level,
    /// The area.
    pub topic: &'static str,
    /// What was found.
    pub finding: String,
    /// What to do, if anything.
    pub action: Option<String>,
}

/// x86-64's `memremap_compat_align()`: the memory-hotplug subsection size.
const COMPAT_ALIGN_X86_64: u64 = 2 << 20;
/// nvme multipath head disks gained P2PDMA in the 7.2 cycle (fb0eeeed91f3).
const MULTIPATH_HEAD_P2P: VersionRange = VersionRange::since(7, 2);
/// The dma-direct THRU_HOST_BRIDGE scatterlist bug: from 6.16 until the June 2026 fix
/// (560000d619ef), taken into stable; the exact stable releases are not known.
const DMA_DIRECT_BUG: VersionRange = VersionRange::between((6, 16), (7, 2));

fn f(level: Level, topic: &'static str, finding: String, action: Option<String>) -> Finding {
    Finding {
        level,
        topic,
        finding,
        action,
    }
}

/// Everything the doctor checks, in order.
pub fn diagnose(sys: &System, names: &PciNames) -> Vec<Finding> {
    let mut out = Vec::new();
    let k = sys.rules.kernel;
    kernel_findings(sys, k, &mut out);
    provider_findings(sys, names, &mut out);
    cmb_findings(sys, names, &mut out);
    iommu_acs_findings(sys, &mut out);
    cmdline_findings(sys, &mut out);
    host_bridge_findings(sys, names, k, &mut out);
    caveat_findings(sys, k, &mut out);
    out.push(f(
        Level::Info,
        "pci.ids",
        format!("device names from {}", names.source()),
        None,
    ));
    for p in &sys.problems {
        out.push(f(
            Level::Warning,
            "read",
            format!("{}: {}", p.path, p.what),
            None,
        ));
    }
    out
}

fn kernel_findings(sys: &System, k: KernelVersion, out: &mut Vec<Finding>) {
    if sys.kernel_version_assumed {
        out.push(f(
            Level::Warning,
            "kernel",
            format!("kernel version unknown; applying the rules of {k}"),
            None,
        ));
    } else if k < KernelVersion::OLDEST_MODELLED {
        out.push(f(
            Level::Warning,
            "kernel",
            format!("kernel {k} is older than 5.4, the oldest whose rules p2pmem models"),
            Some("treat every prediction as approximate".into()),
        ));
    } else {
        out.push(f(
            Level::Ok,
            "kernel",
            format!("kernel {k}: P2PDMA rules of this version applied"),
            None,
        ));
    }
    if !USERSPACE_P2P.contains(k) {
        out.push(f(
            Level::Warning,
            "kernel",
            format!("kernel {k} has no p2pmem/allocate: userspace P2P buffers need 6.2 or later"),
            Some("upgrade to 6.2+ for `p2pmem copy` through p2pmem".into()),
        ));
    }
    let has_providers = sys.topology.providers().next().is_some();
    match sys.kernel_config.as_ref().and_then(|c| c.enabled("PCI_P2PDMA").map(|e| (e, c.source.clone()))) {
        Some((true, src)) => out.push(f(Level::Ok, "kernel", format!("CONFIG_PCI_P2PDMA=y ({src})"), None)),
        Some((false, src)) => out.push(f(Level::Problem, "kernel", format!("CONFIG_PCI_P2PDMA is not set ({src}): this kernel has no P2PDMA; NVMe CMBs log `failed to register the CMB`"), Some("use a kernel built with CONFIG_PCI_P2PDMA=y (and ZONE_DEVICE); `p2pmem lab` builds one to try it".into()))),
        None if has_providers => out.push(f(Level::Ok, "kernel", "P2PDMA is built in (providers exist; kernel config not readable)".into(), None)),
        None => out.push(f(Level::Info, "kernel", "kernel config not readable (no /proc/config.gz or /boot/config-<release>) and no providers: cannot tell whether CONFIG_PCI_P2PDMA is set".into(), None)),
    }
}

fn provider_findings(sys: &System, names: &PciNames, out: &mut Vec<Finding>) {
    let providers: Vec<_> = sys.topology.providers().collect();
    if providers.is_empty() {
        out.push(f(Level::Problem, "providers", "no P2P memory provider: no PCI function has p2pmem/".into(), Some("P2P memory comes from device BARs registered by a driver: NVMe CMBs (RDS+WDS set), or a provider driver; check the CMB findings below".into())));
    }
    for p in providers {
        let m = p.p2pmem.unwrap_or(p2pmem_model::topology::P2pmemInfo {
            size: None,
            available: None,
            published: None,
        });
        let (level, note, action) = match m.published {
            Some(true) => (Level::Ok, "published", None),
            Some(false) => (Level::Info, "NOT published: usable by mmap of p2pmem/allocate, never chosen by `find` or nvmet", Some("an NVMe CMB is published only when it supports both read and write data (CMBSZ.RDS and WDS)".to_string())),
            None => (Level::Warning, "published: unreadable", None),
        };
        out.push(f(
            level,
            "providers",
            format!(
                "{} {}: p2pmem {} ({} available), {note}",
                p.bdf,
                lspci_name(names, p),
                opt_size(m.size),
                opt_size(m.available)
            ),
            action,
        ));
    }
}

fn cmb_findings(sys: &System, names: &PciNames, out: &mut Vec<Finding>) {
    let fs = RootFs::new(&sys.root);
    for c in &sys.nvme {
        let (Some((loc, sz)), Some(bdf)) = (c.cmb, c.bdf) else {
            continue;
        };
        let bars = read_bars(&fs, bdf);
        let bar = bars.get(usize::from((loc & 7) as u8)).copied();
        let v = cmb::registration(CmbSz::from(sz), CmbLoc::from(loc), bar, COMPAT_ALIGN_X86_64);
        let has_p2pmem = sys.topology.get(&bdf).is_some_and(|f| f.p2pmem.is_some());
        let level = match (&v.outcome, has_p2pmem) {
            (CmbOutcome::Registered { .. }, true) => Level::Ok,
            (CmbOutcome::Registered { .. }, false) => Level::Problem,
            (CmbOutcome::NoCmb, _) => continue,
            _ => Level::Warning,
        };
        let who = match sys.topology.get(&bdf) {
            Some(func) => format!("{bdf} {}", lspci_name(names, func)),
            None => bdf.to_string(),
        };
        let mut finding = format!("{} ({who}) CMB: {}", c.name, v.explanation);
        if matches!(v.outcome, CmbOutcome::Registered { .. }) && !has_p2pmem {
            finding
                .push_str("; but it has no p2pmem/: registration failed or P2PDMA is not built in");
        }
        out.push(f(
            level,
            "nvme cmb",
            finding,
            v.kernel_log.map(|l| format!("look for `{l}` in dmesg")),
        ));
    }
}

fn iommu_acs_findings(sys: &System, out: &mut Vec<Finding>) {
    if sys.iommus.is_empty() {
        out.push(f(
            Level::Info,
            "iommu",
            "no IOMMU registered (sys/class/iommu is empty): ACS keeps its firmware settings"
                .into(),
            None,
        ));
    } else {
        out.push(f(Level::Info, "iommu", format!("IOMMU active ({}): the kernel enables ACS redirect (RR/CR) on ACS-capable ports, so P2P below a switch goes through the host bridge unless pci=disable_acs_redir= lists those ports", sys.iommus.join(", ")), None));
    }
    if let Some(cmd) = &sys.cmdline {
        for w in cmd
            .split_whitespace()
            .filter(|w| w.starts_with("pci=") || w.starts_with("iommu") || w.contains("_iommu="))
        {
            out.push(f(
                Level::Info,
                "cmdline",
                format!("kernel parameter {w}"),
                None,
            ));
        }
    }
    acs_redirect_findings(sys, out);
    if !sys.truncated_config.is_empty() {
        out.push(f(Level::Warning, "acs", format!("config space of {} functions could only be read in part (not root): ACS state unknown", sys.truncated_config.len()), Some("run as root for ACS-dependent answers".into())));
    }
}

/// Each port with ACS redirect, who set it (the kernel for the IOMMU, a `config_acs`
/// entry, or the firmware), and what that means for P2P below it.
fn acs_redirect_findings(sys: &System, out: &mut Vec<Finding>) {
    use p2pmem_model::boot_params::parse_cmdline;
    use p2pmem_model::whatif::{redirect_origin, RedirectOrigin};
    let boot = parse_cmdline(sys.cmdline.as_deref().unwrap_or(""), sys.rules.kernel);
    let iommu = !sys.iommus.is_empty();
    let mut redirecting = Vec::new();
    for func in sys.topology.functions() {
        let Some(origin) = redirect_origin(func, &boot, iommu, sys.rules.kernel) else {
            continue;
        };
        let by = match origin {
            RedirectOrigin::Iommu => format!(
                "set by the kernel because the IOMMU is on ({})",
                sys.iommus.join(", ")
            ),
            RedirectOrigin::ConfigAcs { param } => format!("set by pci=config_acs={param}"),
            RedirectOrigin::Firmware => {
                "set by the firmware (the kernel wrote no redirect bit)".into()
            }
        };
        out.push(f(
            Level::Info,
            "acs",
            format!("ACS redirect on {}: {by}", func.bdf),
            None,
        ));
        redirecting.push(func.bdf.to_string());
    }
    if !redirecting.is_empty() {
        out.push(f(Level::Warning, "acs", format!("ACS redirect (RR/CR/EC) is set on {}: P2P between devices below these ports goes up to the host bridge (and through the IOMMU), which the kernel allows only for a whitelisted host bridge or an AMD Zen CPU", redirecting.join(", ")), Some(format!("if P2P below them is wanted: boot with pci=disable_acs_redir={} (this merges IOMMU groups)", redirecting.join(";")))));
    }
}

/// The running command line as the kernel read it: lists split at commas, a later
/// `pci=` option replacing an earlier one, entries that name no device here, and a
/// `disable_acs_redir` that the kernel's own suggestion already asks for.
fn cmdline_findings(sys: &System, out: &mut Vec<Finding>) {
    let Some(cmdline) = sys.cmdline.as_deref() else {
        return;
    };
    let k = sys.rules.kernel;
    let boot = p2pmem_model::boot_params::parse_cmdline(cmdline, k);
    for finding in &boot.findings {
        let corrected = match finding {
            BootFinding::CommaSplit { corrected, .. }
            | BootFinding::Overridden { corrected, .. } => Some(format!("boot with {corrected}")),
            BootFinding::Unsupported { .. } => {
                Some("use pci=disable_acs_redir= (4.19+), or a 6.11+ kernel".into())
            }
        };
        out.push(f(
            Level::Warning,
            "cmdline",
            crate::whatif::finding_words(finding),
            corrected,
        ));
    }
    for line in &boot.kernel_lines {
        out.push(f(
            Level::Warning,
            "cmdline",
            format!("the kernel logged (or will log) `{line}`"),
            None,
        ));
    }
    // Entries that match no device of this system.
    let devices: Vec<(Bdf, Vec<Bdf>, (u16, u16))> = sys
        .topology
        .functions()
        .map(|f| {
            (
                f.bdf,
                f.path.iter().rev().skip(1).copied().collect(),
                (f.vendor, f.device),
            )
        })
        .collect();
    // A fix already given that did not take: ports the list names that still redirect.
    if let Some(list) = &boot.disable_acs_redir {
        for func in sys.topology.functions() {
            if func.acs().redirects_p2p() != Some(true) {
                continue;
            }
            let up: Vec<Bdf> = func.path.iter().rev().skip(1).copied().collect();
            let d = DeviceIds {
                bdf: func.bdf,
                ids: (func.vendor, func.device),
                subsystem: None,
                upstream: &up,
            };
            let listed = list
                .split(';')
                .any(|spec| dev_str_match(spec, &d) == Some(true));
            if !listed {
                continue;
            }
            let why = match &boot.config_acs {
                Some(c) => format!(
                    "pci=config_acs={c} is applied after it and can set RR/CR again"
                ),
                None => "the running kernel did not apply it (a boot without it since, or a device quirk)".to_string(),
            };
            out.push(f(
                Level::Warning,
                "cmdline",
                format!(
                    "pci=disable_acs_redir= already lists {}, yet its ACS redirect is on: {why}",
                    func.bdf
                ),
                Some(
                    "ask p2pmem check PROVIDER CLIENT for a fix checked against this command line"
                        .to_string(),
                ),
            ));
        }
    }
    for (name, value, with_flags) in [
        ("disable_acs_redir", &boot.disable_acs_redir, false),
        ("config_acs", &boot.config_acs, true),
    ] {
        let Some(value) = value else { continue };
        for entry in value.split(';').filter(|e| !e.is_empty()) {
            let spec = if with_flags {
                entry.split_once('@').map_or(entry, |(_, s)| s)
            } else {
                entry
            };
            let matched = devices.iter().any(|(bdf, up, ids)| {
                let d = DeviceIds {
                    bdf: *bdf,
                    ids: *ids,
                    subsystem: None,
                    upstream: up,
                };
                dev_str_match(spec, &d) == Some(true)
            });
            if !matched {
                out.push(f(
                    Level::Warning,
                    "cmdline",
                    format!("pci={name}= entry `{entry}` matches no PCI function here"),
                    Some(
                        "check the address (lspci -D); it names nothing, so it changes nothing"
                            .to_string(),
                    ),
                ));
            }
        }
    }
}

fn host_bridge_findings(sys: &System, names: &PciNames, k: KernelVersion, out: &mut Vec<Finding>) {
    if sys.rules.cpu.supports_p2pdma(k) {
        out.push(f(
            Level::Ok,
            "host bridge",
            format!(
                "CPU {} is AMD Zen or later: P2P through the host bridge is allowed everywhere",
                sys.rules.cpu.describe()
            ),
            None,
        ));
        return;
    }
    for hb in sys.topology.host_bridges() {
        let rep = sys.topology.representative(hb, k);
        let entry = rep.ids.and_then(|(v, d)| whitelist::lookup(k, v, d));
        let hb_name = match rep.ids {
            Some((v, d)) => format!("{hb} ({} [{v:04x}:{d:04x}])", names.describe(v, d)),
            None => hb.to_string(),
        };
        let hb = hb_name;
        let (level, text) = match (rep.usable, entry) {
            (Some(true), Some(e)) if e.req_same_host_bridge => (Level::Info, format!("{hb}: whitelisted ({}) for P2P within this host bridge only", e.comment)),
            (Some(true), Some(e)) => (Level::Ok, format!("{hb}: whitelisted ({})", e.comment)),
            _ => (Level::Info, format!("{hb}: not whitelisted ({}); CPU {}: P2P across root ports or host bridges is refused, only paths below a common switch or port work", rep.why, sys.rules.cpu.describe())),
        };
        out.push(f(level, "host bridge", text, None));
    }
}

fn caveat_findings(sys: &System, k: KernelVersion, out: &mut Vec<Finding>) {
    let heads: Vec<&str> = sys
        .block
        .iter()
        .filter(|b| b.multipath_head && !b.partition)
        .map(|b| b.name.as_str())
        .collect();
    if !heads.is_empty() && !MULTIPATH_HEAD_P2P.contains(k) {
        out.push(f(Level::Warning, "multipath", format!("{} are NVMe multipath head disks: before 7.2 they lack P2PDMA, so O_DIRECT with p2pmem fails with EREMOTEIO", heads.join(", ")), Some("use a single-controller path, or boot with nvme_core.multipath=N".into())));
    }
    if DMA_DIRECT_BUG.contains(k) && sys.iommus.is_empty() {
        out.push(f(Level::Warning, "kernel bug", format!("kernel {k} may carry the dma-direct bug (6.16 until 560000d619ef, June 2026): scatterlist mappings through the host bridge without an IOMMU get no DMA address"), Some("prefer bus-address paths (common switch), or a kernel with the fix".into())));
    }
    out.push(f(Level::Info, "cache", "the kernel caches each (provider, client) decision until the provider's driver unbinds: a changed ACS setting does not affect pairs already used".into(), None));
}

/// Run `doctor`: exit 0 when P2PDMA is usable here, 1 when a problem prevents it.
pub fn run(common: &Common) -> anyhow::Result<i32> {
    let sys = load(common)?;
    let names = names(common)?;
    let findings = diagnose(&sys, names);
    let usable = !findings.iter().any(|x| x.level == Level::Problem);
    if common.json {
        #[derive(Serialize)]
        struct Out<'a> {
            usable: bool,
            findings: &'a [Finding],
            pci_ids: String,
        }
        print_json(
            "doctor",
            &Out {
                usable,
                findings: &findings,
                pci_ids: names.source(),
            },
        )?;
    } else {
        for x in &findings {
            let tag = match x.level {
                Level::Ok => "ok",
                Level::Info => "info",
                Level::Warning => "WARN",
                Level::Problem => "PROBLEM",
            };
            println!("[{tag:>7}] {}: {}", x.topic, x.finding);
            if let Some(a) = &x.action {
                println!("          -> {a}");
            }
        }
        println!(
            "{}",
            if usable {
                "P2PDMA is usable here."
            } else {
                "P2PDMA is not usable here until the problems above are fixed."
            }
        );
    }
    Ok(if usable { 0 } else { 1 })
}
