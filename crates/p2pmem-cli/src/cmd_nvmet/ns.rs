//! `nvmet ns ...`: namespaces and their p2pmem. A write the pre-flight predicts the
//! kernel refuses (EBUSY while enabled, ENODEV for a device without p2pmem, EINVAL from
//! enable) is not attempted unless `--write-anyway`; then the kernel's answer is
//! compared with the prediction.

use super::edit::{change, ns_mut, run_steps, sub_mut};
use super::{open, system, Applied, ChangeJson};
use crate::output::print_json;
use crate::Common;
use anyhow::bail;
use clap::Subcommand;
use p2pmem_linux::nvmet::facts::backing;
use p2pmem_linux::nvmet::Target;
use p2pmem_model::nvmet_attr::{parse_user_setting, P2pmemSetting};
use p2pmem_model::nvmet_plan::config::Namespace;
use p2pmem_model::nvmet_plan::preflight::{attr_write_errno, enable_errno, namespace, AttrWrite};
use p2pmem_model::nvmet_plan::{Env, NsPreflight, Step};

/// `nvmet ns ...`.
#[derive(Debug, Subcommand)]
pub enum NsCmd {
    /// Create namespace NSID of NQN on DEVICE (a block device such as nvme0n1 or
    /// /dev/nvme0n1, or a file).
    Add {
        /// Subsystem NQN.
        nqn: String,
        /// Namespace id (1 ..= 4294967294).
        nsid: u32,
        /// Block device or file.
        device: String,
        /// P2P memory for its data buffers: off, auto (any suitable provider) or a
        /// provider's PCI address. Written before enable.
        #[arg(long, value_name = "off|auto|BDF")]
        p2pmem: Option<String>,
        /// Enable the namespace.
        #[arg(long)]
        enable: bool,
        /// Buffered I/O (file backend).
        #[arg(long)]
        buffered_io: bool,
        /// Write even if the pre-flight predicts the kernel refuses.
        #[arg(long)]
        write_anyway: bool,
    },
    /// Set a namespace's p2pmem (off, auto or a provider's PCI address).
    SetP2pmem {
        /// Subsystem NQN.
        nqn: String,
        /// Namespace id.
        nsid: u32,
        /// off, auto or a PCI address.
        setting: String,
        /// If the namespace is enabled: disable it, write, enable it again (the kernel
        /// refuses the write with EBUSY while it is enabled).
        #[arg(long)]
        reenable: bool,
        /// Write even if the pre-flight predicts the kernel refuses.
        #[arg(long)]
        write_anyway: bool,
    },
    /// Enable a namespace (the kernel then checks its p2pmem setting).
    Enable {
        /// Subsystem NQN.
        nqn: String,
        /// Namespace id.
        nsid: u32,
        /// Write even if the pre-flight predicts the kernel refuses.
        #[arg(long)]
        write_anyway: bool,
    },
    /// Disable a namespace.
    Disable {
        /// Subsystem NQN.
        nqn: String,
        /// Namespace id.
        nsid: u32,
    },
    /// Remove a namespace (disabling it first).
    Rm {
        /// Subsystem NQN.
        nqn: String,
        /// Namespace id.
        nsid: u32,
    },
}

/// Refuses before writing: prints the pre-flight and why.
fn refuse(
    common: &Common,
    pre: &NsPreflight,
    errno: Option<&'static str>,
    why: &str,
) -> anyhow::Result<i32> {
    if common.json {
        let none = Applied::default();
        let mut j = ChangeJson::new(&none);
        j.preflight = Some(pre);
        j.predicted_errno = errno;
        j.refused_before_writing = Some(why.to_string());
        print_json("nvmet_change", &j)?;
    } else {
        for l in &pre.kernel_log {
            println!("predicted kernel log: {l}");
        }
        eprintln!("p2pmem: not written: {why} (--write-anyway to let the kernel answer)");
    }
    Ok(1)
}

fn preflight(
    common: &Common,
    t: &Target,
    nqn: &str,
    ns: &Namespace,
    set: Option<P2pmemSetting>,
) -> Option<NsPreflight> {
    match system(common) {
        Ok(sys) => {
            let env = Env {
                topo: &sys.topology,
                rules: &sys.rules,
            };
            Some(namespace(
                env,
                nqn,
                ns,
                &backing(t.fs(), &ns.device_path),
                set,
            ))
        }
        Err(e) => {
            if !common.json {
                eprintln!("p2pmem: warning: no pre-flight: {e:#}");
            }
            None
        }
    }
}

fn errno_of_write(pre: Option<&NsPreflight>) -> Option<&'static str> {
    pre.and_then(|p| p.attr_write.as_ref())
        .and_then(attr_write_errno)
        .map(|e| e.name)
}

fn errno_of_enable(pre: Option<&NsPreflight>) -> Option<&'static str> {
    pre.and_then(|p| enable_errno(&p.enable)).map(|e| e.name)
}

/// Run `nvmet ns`.
pub fn ns(common: &Common, cmd: &NsCmd) -> anyhow::Result<i32> {
    let (t, snap) = open(common)?;
    let mut want = snap.config.clone();
    match cmd {
        NsCmd::Add {
            nqn,
            nsid,
            device,
            p2pmem,
            enable,
            buffered_io,
            write_anyway,
        } => {
            let setting = p2pmem.as_deref().map(parse_user_setting).transpose()?;
            let path = if device.starts_with('/') {
                device.clone()
            } else {
                format!("/dev/{device}")
            };
            let s = sub_mut(&mut want, nqn)?;
            if s.namespaces.iter().any(|n| n.nsid == *nsid) {
                bail!("subsystem {nqn} has a namespace {nsid} already");
            }
            let new = Namespace {
                p2pmem: setting,
                buffered_io: buffered_io.then_some(true),
                enable: *enable,
                ..Namespace::new(*nsid, path)
            };
            s.namespaces.push(new.clone());
            if setting.is_some() || *enable {
                // As the kernel will see it: created, disabled, attribute present.
                let fresh = Namespace {
                    p2pmem: Some(P2pmemSetting::Off),
                    enable: false,
                    ..new
                };
                let pre = preflight(common, &t, nqn, &fresh, setting);
                if let (Some(p), false) = (&pre, *write_anyway) {
                    if let Some(e) = errno_of_write(Some(p)) {
                        return refuse(
                            common,
                            p,
                            Some(e),
                            "the kernel will refuse this p2pmem value",
                        );
                    }
                    if *enable && p.enable.succeeds() == Some(false) {
                        return refuse(
                            common,
                            p,
                            errno_of_enable(Some(p)),
                            "the kernel will refuse to enable this namespace",
                        );
                    }
                }
            }
            change(common, &t, &snap, want, false)
        }
        NsCmd::SetP2pmem {
            nqn,
            nsid,
            setting,
            reenable,
            write_anyway,
        } => {
            let set = parse_user_setting(setting)?;
            let cur = ns_mut(&mut want, nqn, *nsid)?.clone();
            let write = Step::SetNamespace {
                nqn: nqn.clone(),
                nsid: *nsid,
                attr: "p2pmem".into(),
                value: set.kernel_write(),
                old: cur.p2pmem.map(|p| p.kernel_write()),
            };
            if cur.enable && *reenable {
                let off = Namespace {
                    enable: false,
                    ..cur.clone()
                };
                let pre = preflight(common, &t, nqn, &off, Some(set));
                if let (Some(p), false) = (&pre, *write_anyway) {
                    if let Some(e) = errno_of_write(Some(p)) {
                        return refuse(
                            common,
                            p,
                            Some(e),
                            "the kernel will refuse this p2pmem value; the namespace stays enabled",
                        );
                    }
                    if p.enable.succeeds() == Some(false) {
                        return refuse(common, p, errno_of_enable(Some(p)), "with this setting the kernel will refuse to enable the namespace again; it stays enabled as it is");
                    }
                }
                ns_mut(&mut want, nqn, *nsid)?.p2pmem = Some(set);
                return change(common, &t, &snap, want, false);
            }
            let pre = preflight(common, &t, nqn, &cur, Some(set));
            let predicted = errno_of_write(pre.as_ref());
            if !*write_anyway {
                if let (Some(p), Some(e)) = (&pre, predicted) {
                    let why = if matches!(p.attr_write, Some(AttrWrite::Refused { ref error }) if error.errno().name == "EBUSY")
                    {
                        "the namespace is enabled and the kernel refuses p2pmem writes with EBUSY until it is disabled; --reenable disables, writes and enables again"
                    } else {
                        "the kernel will refuse this p2pmem value"
                    };
                    return refuse(common, p, Some(e), why);
                }
                if cur.p2pmem == Some(set) {
                    return run_steps(common, &t, &[], pre.as_ref(), None);
                }
            }
            if let Some(p) = &pre {
                if !common.json && p.enable.succeeds() == Some(false) {
                    println!(
                        "note: with this setting, enabling the namespace will fail: {}",
                        errno_of_enable(Some(p)).unwrap_or("error")
                    );
                }
            }
            run_steps(
                common,
                &t,
                &[write],
                pre.as_ref(),
                pre.as_ref().map(|_| predicted),
            )
        }
        NsCmd::Enable {
            nqn,
            nsid,
            write_anyway,
        } => {
            let cur = ns_mut(&mut want, nqn, *nsid)?.clone();
            if cur.enable && !*write_anyway {
                return run_steps(common, &t, &[], None, None);
            }
            let pre = preflight(common, &t, nqn, &cur, None);
            let predicted = errno_of_enable(pre.as_ref());
            if let (Some(p), false) = (&pre, *write_anyway) {
                if p.enable.succeeds() == Some(false) {
                    return refuse(
                        common,
                        p,
                        predicted,
                        "the kernel will refuse to enable this namespace",
                    );
                }
            }
            let step = Step::SetNamespace {
                nqn: nqn.clone(),
                nsid: *nsid,
                attr: "enable".into(),
                value: "1".into(),
                old: Some(if cur.enable { "1" } else { "0" }.into()),
            };
            run_steps(
                common,
                &t,
                &[step],
                pre.as_ref(),
                pre.as_ref().map(|_| predicted),
            )
        }
        NsCmd::Disable { nqn, nsid } => {
            ns_mut(&mut want, nqn, *nsid)?.enable = false;
            change(common, &t, &snap, want, false)
        }
        NsCmd::Rm { nqn, nsid } => {
            ns_mut(&mut want, nqn, *nsid)?;
            sub_mut(&mut want, nqn)?
                .namespaces
                .retain(|n| n.nsid != *nsid);
            change(common, &t, &snap, want, false)
        }
    }
}
