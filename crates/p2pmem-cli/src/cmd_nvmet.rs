//! `p2pmem nvmet ...`: the NVMe target through configfs, with P2P memory per namespace.
//!
//! Every change is planned by the model (`nvmet_plan`): the edited configuration is
//! diffed against what configfs holds and applied in the order the kernel requires
//! (p2pmem before enable, disable before changing, links last). A change the pre-flight
//! predicts the kernel will refuse is not attempted unless `--write-anyway`; then the
//! kernel's answer is compared with the prediction. Exit 0 done, 1 refused (predicted
//! or by the kernel), 2 error.

mod edit;
mod file;
mod ns;
mod show;

use crate::Common;
use anyhow::Context;
use clap::{Args, Subcommand};
use p2pmem_linux::killpoint;
use p2pmem_linux::nvmet::{NvmetError, Snapshot, Target};
use p2pmem_linux::system::{read_system, System};
use p2pmem_model::nvmet_plan::config::TargetConfig;
use p2pmem_model::nvmet_plan::facts::{errno_name, Op};
use p2pmem_model::nvmet_plan::preflight::NsPreflight;
use p2pmem_model::nvmet_plan::{guard, plan_restore, Blocked, Connected, Step};
use serde::Serialize;
use std::path::PathBuf;

/// `p2pmem nvmet`.
#[derive(Debug, Args)]
pub struct NvmetArgs {
    #[command(subcommand)]
    command: NvmetCommand,
}

#[derive(Debug, Subcommand)]
enum NvmetCommand {
    /// Subsystems, namespaces with their p2pmem setting and whether it is in use (the
    /// kernel's `using p2pmem on` lines), the providers' free memory, ports, hosts.
    Status {
        /// Read nvmet's log lines from FILE (dmesg output) instead of the kernel log.
        #[arg(long, value_name = "FILE")]
        klog: Option<PathBuf>,
    },
    /// Pre-flight: will enabling each namespace with p2pmem succeed, and which provider
    /// would each RDMA controller get? Exit 0 yes, 1 some enable fails, 2 unknown.
    Check(show::CheckArgs),
    /// Create, change or remove subsystems.
    #[command(subcommand)]
    Subsys(edit::SubsysCmd),
    /// Create, change, enable or remove namespaces; set their p2pmem.
    #[command(subcommand)]
    Ns(ns::NsCmd),
    /// Create, link or remove ports (rdma, tcp, loop).
    #[command(subcommand)]
    Port(edit::PortCmd),
    /// Allow hosts into subsystems, or remove them.
    #[command(subcommand)]
    Host(edit::HostCmd),
    /// Save the whole target configuration (p2pmem included) as JSON to FILE (`-` for
    /// stdout).
    Save {
        /// Output file.
        file: PathBuf,
    },
    /// Make the target match a saved FILE: create, change and remove what differs, in
    /// the order the kernel needs. Running it twice changes nothing the second time.
    Restore(file::RestoreArgs),
}

/// Run `nvmet`.
pub fn run(common: &Common, args: &NvmetArgs) -> anyhow::Result<i32> {
    match &args.command {
        NvmetCommand::Status { klog } => show::status(common, klog.as_deref()),
        NvmetCommand::Check(a) => show::check(common, a),
        NvmetCommand::Subsys(c) => edit::subsys(common, c),
        NvmetCommand::Ns(c) => ns::ns(common, c),
        NvmetCommand::Port(c) => edit::port(common, c),
        NvmetCommand::Host(c) => edit::host(common, c),
        NvmetCommand::Save { file } => file::save(common, file),
        NvmetCommand::Restore(a) => file::restore(common, a),
    }
}

/// The target below `--root` and what it holds now.
fn open(common: &Common) -> anyhow::Result<(Target, Snapshot)> {
    let t = Target::open(&common.root)?;
    let snap = t.read().with_context(|| {
        format!(
            "cannot read the nvmet configuration below {}",
            common.root.display()
        )
    })?;
    Ok((t, snap))
}

/// The PCI system below `--root`, when readable (pre-flight needs it).
fn system(common: &Common) -> anyhow::Result<System> {
    read_system(&common.root).with_context(|| {
        format!(
            "cannot read the PCI system below {} (the pre-flight needs it)",
            common.root.display()
        )
    })
}

/// A failed operation, for JSON.
#[derive(Debug, Serialize)]
struct Failure {
    step: String,
    path: String,
    errno: Option<String>,
    code: Option<i32>,
    error: String,
}

impl Failure {
    fn new(step: &Step, e: &NvmetError) -> Self {
        let path = match e {
            NvmetError::Refused { path, .. } => path.display().to_string(),
            _ => step.path(),
        };
        Self {
            step: step.to_string(),
            path,
            errno: e.errno_name().map(str::to_string),
            code: e.errno_code(),
            error: e.to_string(),
        }
    }
}

/// What a run of steps did.
#[derive(Debug, Default, Serialize)]
struct Applied {
    /// Steps done, in order.
    changed: Vec<Step>,
    /// Steps skipped with why (an optional attribute this kernel lacks).
    skipped: Vec<(Step, String)>,
    /// The step that failed, which stopped the run.
    failed: Option<Failure>,
    /// Exit status for the failure: 1 refused, 2 error.
    #[serde(skip)]
    code: i32,
}

/// Exit status for a failed operation: 1 when nvmet refused it, 2 for permission and
/// I/O errors.
fn failure_code(op: Op, e: &NvmetError) -> i32 {
    match (op, e.errno_code().and_then(errno_name)) {
        (_, Some("EPERM")) | (_, None) => 2,
        (Op::PortAttr(_), Some("EACCES")) => 1,
        (_, Some("EACCES")) => 2,
        _ => 1,
    }
}

/// Applies `steps` in order, stopping at the first failure. With `tolerate_missing`, a
/// write to an attribute other than p2pmem and enable that does not exist (ENOENT on a
/// kernel without it) is skipped.
fn apply(t: &Target, steps: &[Step], tolerate_missing: bool, json: bool) -> Applied {
    let mut out = Applied::default();
    for s in steps {
        match t.apply(s) {
            Ok(()) => {
                if !json {
                    println!("changed: {s}");
                }
                out.changed.push(s.clone());
                killpoint::pass(killpoint::NVMET_STEP);
            }
            Err(e) => {
                let optional = match s {
                    Step::SetSubsystem { .. } | Step::SetPort { .. } => true,
                    Step::SetNamespace { attr, .. } => attr != "p2pmem" && attr != "enable",
                    _ => false,
                };
                if tolerate_missing && optional && e.errno_name() == Some("ENOENT") {
                    let why = "this kernel has no such attribute".to_string();
                    if !json {
                        eprintln!("p2pmem: warning: skipped `{s}`: {why}");
                    }
                    out.skipped.push((s.clone(), why));
                    continue;
                }
                if !json {
                    eprintln!("p2pmem: {e}");
                }
                out.code = failure_code(s.op(), &e);
                out.failed = Some(Failure::new(s, &e));
                break;
            }
        }
    }
    out
}

/// Steps from `current` to `desired`, refused (with the hosts named) when they would
/// disconnect hosts and `force` is not given.
fn plan_guarded(
    t: &Target,
    current: &TargetConfig,
    desired: &TargetConfig,
    force: bool,
) -> Result<Vec<Step>, Vec<Blocked>> {
    let steps = plan_restore(current, desired);
    if force {
        return Ok(steps);
    }
    let conns = p2pmem_linux::nvmet::facts::connections(t.fs(), kernel(t));
    let blocked = guard(current, &conns, &steps);
    if blocked.is_empty() {
        Ok(steps)
    } else {
        Err(blocked)
    }
}

/// The running kernel's version below the root (the newest rules when unknown).
fn kernel(t: &Target) -> p2pmem_model::KernelVersion {
    t.fs()
        .read_opt_string("proc/sys/kernel/osrelease")
        .ok()
        .flatten()
        .and_then(|r| r.parse().ok())
        .unwrap_or(p2pmem_model::KernelVersion::NEWEST_READ)
}

/// Prints why steps were not run because of connected hosts.
fn print_blocked(blocked: &[Blocked]) {
    for b in blocked {
        let who = match &b.connected {
            Connected::Yes(list) => format!("connected: {}", list.join(", ")),
            Connected::Unknown(why) => why.clone(),
            Connected::No => continue,
        };
        eprintln!(
            "p2pmem: refused: `{}` would disconnect hosts ({who}); pass --force to do it anyway",
            b.step
        );
    }
}

/// JSON of a change: what was done, what failed, the pre-flight, and whether the
/// kernel's answer matched the prediction.
#[derive(Debug, Serialize)]
struct ChangeJson<'a> {
    changed: &'a [Step],
    skipped: &'a [(Step, String)],
    failed: Option<&'a Failure>,
    refused_before_writing: Option<String>,
    blocked: &'a [Blocked],
    preflight: Option<&'a NsPreflight>,
    predicted_errno: Option<&'static str>,
    kernel_errno: Option<String>,
    prediction_matched: Option<bool>,
}

impl<'a> ChangeJson<'a> {
    fn new(applied: &'a Applied) -> Self {
        Self {
            changed: &applied.changed,
            skipped: &applied.skipped,
            failed: applied.failed.as_ref(),
            refused_before_writing: None,
            blocked: &[],
            preflight: None,
            predicted_errno: None,
            kernel_errno: applied.failed.as_ref().and_then(|f| f.errno.clone()),
            prediction_matched: None,
        }
    }
}
