//! What-if options (`--cmdline`, `--iommu`, `--kernel`) of `check`, `find` and `topo`,
//! and the proof of every fix `check` prints: the fix is applied as a what-if and the
//! pair decided again.

use clap::Args;
use p2pmem_linux::system::System;
use p2pmem_model::boot_params::parse_cmdline;
use p2pmem_model::distance::{decide, MapType};
use p2pmem_model::whatif::{
    add_disable_acs_redir, apply, clear_redirect_in_config_acs, Captured, WhatIf, WhatIfReport,
};
use p2pmem_model::{Bdf, KernelVersion};

/// What if the system booted differently.
#[derive(Debug, Clone, Default, Args)]
pub struct WhatIfArgs {
    /// What if the kernel booted with this command line: a whole one, or only `pci=`
    /// options (which then replace the captured `pci=` options). The ACS registers are
    /// recomputed as the kernel would set them (pci= split at commas, the last
    /// disable_acs_redir winning, config_acs after it).
    #[arg(long, value_name = "CMDLINE")]
    pub cmdline: Option<String>,
    /// What if the IOMMU were on or off (on, the kernel turns on ACS redirect on every
    /// port that implements it).
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub iommu: Option<bool>,
    /// What if the kernel were this version (its whitelist, errno and parameters).
    #[arg(long = "kernel", value_name = "VERSION")]
    pub kernel: Option<KernelVersion>,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("'{s}': say on or off")),
    }
}

/// The captured boot of `sys`.
fn captured(sys: &System) -> (String, bool) {
    (
        sys.cmdline.clone().unwrap_or_default().trim().to_string(),
        !sys.iommus.is_empty(),
    )
}

/// The new command line: `given` when it is a whole one, else the captured one with its
/// `pci=` options replaced by `given`'s.
fn full_cmdline(captured: &str, given: &str) -> String {
    let words: Vec<&str> = given.split_whitespace().collect();
    if words.is_empty() || !words.iter().all(|w| w.starts_with("pci=")) {
        return given.to_string();
    }
    let mut out: Vec<&str> = captured
        .split_whitespace()
        .filter(|w| !w.starts_with("pci="))
        .collect();
    out.extend(words);
    out.join(" ")
}

/// Applies the what-if to `sys` (its topology and rules), returning what changed; `None`
/// when nothing was asked.
pub fn apply_to(sys: &mut System, a: &WhatIfArgs) -> Option<WhatIfReport> {
    let w = WhatIf {
        cmdline: a
            .cmdline
            .as_ref()
            .map(|c| full_cmdline(&captured(sys).0, c)),
        iommu: a.iommu,
        kernel: a.kernel,
    };
    if w.is_empty() {
        return None;
    }
    let (cmdline, iommu) = captured(sys);
    let (topology, rules, report) = apply(
        &sys.topology,
        &sys.rules,
        &Captured {
            cmdline: &cmdline,
            iommu,
        },
        &w,
    );
    sys.topology = topology;
    sys.rules = rules;
    Some(report)
}

/// The what-if in words, for the top of the text output.
pub fn print_header(r: &WhatIfReport) {
    println!(
        "what if: kernel {}, IOMMU {}, command line `{}`",
        r.kernel,
        if r.iommu { "on" } else { "off" },
        r.cmdline
    );
    for c in &r.acs_changes {
        println!(
            "  ACS of {}: {} -> {}",
            c.bdf,
            crate::cmd_topo::acs_words(&c.before),
            crate::cmd_topo::acs_words(&c.after)
        );
    }
    if r.acs_changes.is_empty() {
        println!("  no port's ACS changes");
    }
    for l in &r.kernel_lines {
        println!("  kernel: {l}");
    }
    for f in &r.boot.findings {
        println!("  note: {}", finding_words(f));
    }
}

/// A mistake in the parameters, with the corrected one.
pub fn finding_words(f: &p2pmem_model::boot_params::Finding) -> String {
    use p2pmem_model::boot_params::Finding;
    match f {
        Finding::CommaSplit {
            option,
            kept,
            dropped,
            corrected,
        } => format!(
            "pci= is split at commas: {option} keeps only {kept}, and {} become unknown options; write {corrected}",
            dropped.join(", ")
        ),
        Finding::Overridden {
            option,
            earlier,
            later,
            corrected,
        } => format!(
            "a later pci={option}={later} replaces the earlier {earlier}; to keep both write {corrected}"
        ),
        Finding::Unsupported { option, kernel } => format!(
            "kernel {kernel} has no pci={option}= (6.11+): it is an unknown option there"
        ),
    }
}

/// A fix for a refused pair, checked by deciding the pair again as a what-if.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProvenFix {
    /// The parameter to add or the entry to change, in words for the user.
    pub parameter: String,
    /// The whole command line the check used.
    pub cmdline: String,
    /// The pair's verdict with it (`None`: still unknown).
    pub allowed: Option<bool>,
    /// The map type with it.
    pub map_type: Option<String>,
}

/// The boot `sys` stands for: the what-if's when one was asked (its topology and rules
/// are already applied to `sys`), else the captured one.
pub fn boot_of(sys: &System, what_if: Option<&WhatIfReport>) -> (String, bool) {
    match what_if {
        Some(w) => (w.cmdline.clone(), w.iommu),
        None => captured(sys),
    }
}

/// For a pair refused because of ACS redirect: the kernel's suggestion merged into the
/// command line of `boot` (the one `sys` stands for), checked; when `config_acs` sets
/// the redirect again after it, the `config_acs` entry rewritten instead, checked. Empty
/// when the pair is not refused by an ACS redirect.
pub fn prove_fix(
    sys: &System,
    boot: &(String, bool),
    provider: Bdf,
    client: Bdf,
) -> Vec<ProvenFix> {
    let Ok(v) = decide(&sys.topology, &sys.rules, provider, client) else {
        return Vec::new();
    };
    if v.supported != Some(false) || v.acs_redirect.is_empty() {
        return Vec::new();
    }
    let (cmdline, iommu) = (boot.0.clone(), boot.1);
    let kernel = sys.rules.kernel;
    let verdict = |new: &str| -> (Option<bool>, Option<String>) {
        let (t, r, _) = apply(
            &sys.topology,
            &sys.rules,
            &Captured {
                cmdline: &cmdline,
                iommu,
            },
            &WhatIf {
                cmdline: Some(new.to_string()),
                iommu: None,
                kernel: None,
            },
        );
        match decide(&t, &r, provider, client) {
            Ok(v) => (v.supported, v.map_type.map(|m| m.as_str().to_string())),
            Err(_) => (None, None),
        }
    };
    let mut out = Vec::new();
    let with_disable = add_disable_acs_redir(&cmdline, kernel, &v.acs_redirect);
    let (allowed, map_type) = verdict(&with_disable);
    let param = parse_cmdline(&with_disable, kernel)
        .disable_acs_redir
        .map(|l| format!("pci=disable_acs_redir={l}"))
        .unwrap_or_default();
    out.push(ProvenFix {
        parameter: param,
        cmdline: with_disable,
        allowed,
        map_type,
    });
    if allowed != Some(true) {
        let devices: Vec<(Bdf, Vec<Bdf>)> = v
            .acs_redirect
            .iter()
            .map(|b| {
                let up = sys
                    .topology
                    .get(b)
                    .map(|f| f.path.iter().rev().skip(1).copied().collect())
                    .unwrap_or_default();
                (*b, up)
            })
            .collect();
        if let Some(rewritten) = clear_redirect_in_config_acs(&cmdline, kernel, &devices) {
            let (allowed, map_type) = verdict(&rewritten);
            let param = parse_cmdline(&rewritten, kernel)
                .config_acs
                .map(|l| format!("pci=config_acs={l} (instead of the current config_acs)"))
                .unwrap_or_default();
            out.push(ProvenFix {
                parameter: param,
                cmdline: rewritten,
                allowed,
                map_type,
            });
        }
    }
    out
}

/// The proven fixes in words.
pub fn print_fixes(fixes: &[ProvenFix]) {
    for f in fixes {
        let result = match (f.allowed, f.map_type.as_deref()) {
            (Some(true), Some(m)) => format!("allowed ({m})"),
            (Some(true), None) => "allowed".to_string(),
            (Some(false), _) => "still refused".to_string(),
            (None, _) => "unknown (the firmware's value is not in the capture)".to_string(),
        };
        println!("fix: {}", f.parameter);
        println!(
            "  checked: booting with `{}` the kernel decides {result}",
            f.cmdline
        );
    }
    if let Some(first) = fixes.first() {
        if first.allowed != Some(true) && fixes.len() > 1 {
            println!(
                "  (the kernel's own suggestion alone does not help here: pci=config_acs= is applied after disable_acs_redir and sets the redirect again)"
            );
        }
    }
}

/// What would change a host-bridge refusal (no boot parameter can).
pub fn host_bridge_advice(map: Option<MapType>) -> Option<&'static str> {
    (map == Some(MapType::NotSupported)).then_some(
        "no boot parameter changes a host-bridge refusal: it takes a common switch or root port for both devices, a host bridge on the kernel's whitelist, or an AMD Zen (family 0x17+) CPU",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_options_alone_replace_the_captured_ones() {
        let cap = "console=ttyS0 pci=config_acs=11xx@0000:00:07.0";
        assert_eq!(
            full_cmdline(cap, "pci=disable_acs_redir=0000:00:07.0"),
            "console=ttyS0 pci=disable_acs_redir=0000:00:07.0"
        );
        assert_eq!(full_cmdline(cap, "quiet"), "quiet");
        assert_eq!(full_cmdline(cap, ""), "");
    }
}
