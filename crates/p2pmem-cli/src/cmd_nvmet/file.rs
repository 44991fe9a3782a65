//! `nvmet save FILE` and `nvmet restore FILE`: the whole target as JSON, and back.

use super::{apply, open, print_blocked, system};
use crate::output::print_json;
use crate::Common;
use anyhow::Context;
use clap::Args;
use p2pmem_linux::bounded;
use p2pmem_linux::nvmet::facts::{backing, connections};
use p2pmem_model::limits;
use p2pmem_model::nvmet_attr::P2pmemSetting;
use p2pmem_model::nvmet_plan::config::{Namespace, SavedConfig, TargetConfig};
use p2pmem_model::nvmet_plan::preflight::{namespace, AttrWrite};
use p2pmem_model::nvmet_plan::{guard, plan_restore, Blocked, Env, NsPreflight, Step};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of `nvmet restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file written by `nvmet save` (`-` for stdin).
    pub file: PathBuf,
    /// Print the steps and the pre-flight without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove subsystems, ports and links even if hosts are, or may be, connected.
    #[arg(long)]
    pub force: bool,
    /// Let the file turn on attr_allow_any_host (refused otherwise).
    #[arg(long)]
    pub allow_any_host: bool,
    /// Enable namespaces even when the pre-flight predicts the kernel refuses.
    #[arg(long)]
    pub write_anyway: bool,
}

#[derive(Serialize)]
struct SaveJson<'a> {
    file: &'a Path,
    hosts: usize,
    subsystems: usize,
    namespaces: usize,
    ports: usize,
    not_saved: &'a [p2pmem_linux::nvmet::Extra],
}

/// Run `nvmet save`.
pub fn save(common: &Common, file: &Path) -> anyhow::Result<i32> {
    let (_, snap) = open(common)?;
    let text = serde_json::to_string_pretty(&SavedConfig::new(&snap.config))? + "\n";
    let c = &snap.config;
    let namespaces = c.subsystems.iter().map(|s| s.namespaces.len()).sum();
    if file == Path::new("-") {
        std::io::stdout().write_all(text.as_bytes())?;
    } else {
        std::fs::write(file, &text).with_context(|| format!("cannot write {}", file.display()))?;
        if common.json {
            print_json(
                "nvmet_save",
                &SaveJson {
                    file,
                    hosts: c.hosts.len(),
                    subsystems: c.subsystems.len(),
                    namespaces,
                    ports: c.ports.len(),
                    not_saved: &snap.not_saved,
                },
            )?;
        } else {
            println!(
                "saved {} subsystem(s), {namespaces} namespace(s), {} port(s), {} host(s) to {}",
                c.subsystems.len(),
                c.ports.len(),
                c.hosts.len(),
                file.display()
            );
        }
    }
    for e in &snap.not_saved {
        eprintln!("p2pmem: warning: not saved: {}: {}", e.path, e.what);
    }
    Ok(0)
}

fn load(file: &Path) -> anyhow::Result<TargetConfig> {
    // Bounded: `restore /dev/urandom` (or a runaway pipe) is an error, not a hang.
    let bytes = if file == Path::new("-") {
        bounded::read_from(std::io::stdin(), Path::new("<stdin>"), limits::NVMET_SAVED)?
    } else {
        bounded::read_file(file, limits::NVMET_SAVED)?
    };
    let saved: SavedConfig = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a saved nvmet configuration", file.display()))?;
    Ok(saved.into_config()?)
}

/// The pre-flight of every namespace the plan enables with p2pmem set.
fn preflights(
    common: &Common,
    t: &p2pmem_linux::nvmet::Target,
    want: &TargetConfig,
    steps: &[Step],
) -> Vec<NsPreflight> {
    let enables: Vec<(&str, &Namespace)> = steps
        .iter()
        .filter_map(|s| match s {
            Step::SetNamespace {
                nqn,
                nsid,
                attr,
                value,
                ..
            } if attr == "enable" && value == "1" => {
                let ns = want
                    .subsystem(nqn)?
                    .namespaces
                    .iter()
                    .find(|n| n.nsid == *nsid)?;
                (ns.setting() != P2pmemSetting::Off).then_some((nqn.as_str(), ns))
            }
            _ => None,
        })
        .collect();
    if enables.is_empty() {
        return Vec::new();
    }
    let sys = match system(common) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("p2pmem: warning: no pre-flight: {e:#}");
            return Vec::new();
        }
    };
    let env = Env {
        topo: &sys.topology,
        rules: &sys.rules,
    };
    enables
        .into_iter()
        .map(|(nqn, ns)| {
            // As the kernel will see it when p2pmem is written: disabled.
            let before = Namespace {
                enable: false,
                p2pmem: Some(P2pmemSetting::Off),
                ..ns.clone()
            };
            namespace(
                env,
                nqn,
                &before,
                &backing(t.fs(), &ns.device_path),
                Some(ns.setting()),
            )
        })
        .collect()
}

#[derive(Serialize)]
struct RestoreJson<'a> {
    dry_run: bool,
    steps: &'a [Step],
    preflight: &'a [NsPreflight],
    blocked: &'a [Blocked],
    refused_before_writing: Option<String>,
    changed: &'a [Step],
    skipped: &'a [(Step, String)],
    failed: Option<&'a super::Failure>,
}

/// Run `nvmet restore`.
pub fn restore(common: &Common, args: &RestoreArgs) -> anyhow::Result<i32> {
    let want = load(&args.file)?;
    let (t, snap) = open(common)?;
    let steps = plan_restore(&snap.config, &want);
    let pre = preflights(common, &t, &want, &steps);
    let kernel = super::kernel(&t);
    let blocked = if args.force {
        Vec::new()
    } else {
        guard(&snap.config, &connections(t.fs(), kernel), &steps)
    };
    let any_host: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::SetSubsystem {
                nqn, attr, value, ..
            } if attr == "attr_allow_any_host" && value == "1" => Some(nqn.as_str()),
            _ => None,
        })
        .collect();
    let failing: Vec<&NsPreflight> = pre
        .iter()
        .filter(|p| {
            p.enable.succeeds() == Some(false)
                || matches!(p.attr_write, Some(AttrWrite::Refused { .. }))
        })
        .collect();
    let refusal = if !any_host.is_empty() && !args.allow_any_host {
        Some(format!(
            "the file lets any host connect to {}; pass --allow-any-host to restore that",
            any_host.join(", ")
        ))
    } else if !blocked.is_empty() {
        Some("it would disconnect hosts that are, or may be, connected; pass --force".into())
    } else if !failing.is_empty() && !args.write_anyway {
        Some(format!(
            "the pre-flight predicts the kernel refuses {}; pass --write-anyway to let it answer",
            failing
                .iter()
                .map(|p| format!("{} nsid {}", p.nqn, p.nsid))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        None
    };
    let mut applied = super::Applied::default();
    if refusal.is_none() && !args.dry_run {
        applied = apply(&t, &steps, true, common.json);
    }
    if common.json {
        print_json(
            "nvmet_restore",
            &RestoreJson {
                dry_run: args.dry_run,
                steps: &steps,
                preflight: &pre,
                blocked: &blocked,
                refused_before_writing: refusal.clone(),
                changed: &applied.changed,
                skipped: &applied.skipped,
                failed: applied.failed.as_ref(),
            },
        )?;
    } else {
        for p in &failing {
            eprintln!(
                "p2pmem: pre-flight: {} nsid {} will fail: {}",
                p.nqn,
                p.nsid,
                p.kernel_log.join(" / ")
            );
        }
        if args.dry_run || refusal.is_some() {
            for s in &steps {
                println!("would: {s}");
            }
        }
        print_blocked(&blocked);
        if let Some(r) = &refusal {
            eprintln!("p2pmem: not restored: {r}");
        } else if steps.is_empty() {
            println!(
                "the target already matches {}: nothing changed",
                args.file.display()
            );
        } else if !args.dry_run && applied.failed.is_none() {
            println!(
                "restored {}: {} change(s)",
                args.file.display(),
                applied.changed.len()
            );
        }
    }
    Ok(if refusal.is_some() { 1 } else { applied.code })
}
