//! Pre-flight: what writing a namespace's `p2pmem` and then `enable` will do.
//!
//! The write replays `pci_p2pdma_enable_store` ([`nvmet_attr::store_p2pmem_attr`]).
//! Enabling replays `nvmet_p2pmem_ns_enable` ([`nvmet_attr::preflight`]) with the
//! distance and provider search answered by [`select::check`] and [`select::find`] with
//! the namespace's PCI function as the client; the backing queue's P2P support comes
//! from [`facts::queue_supports_p2pdma`].

use super::config::Namespace;
use super::facts::{self, BlockDriver};
use crate::bdf::Bdf;
use crate::distance::Rules;
use crate::errno::Errno;
use crate::messages::{self, MessageKind};
use crate::nvmet_attr::{
    self, HasP2pmem, NamespaceFacts, NsBackend, NvmetAttrError, P2pmemSetting, PreflightFailure,
    PreflightPass,
};
use crate::select;
use crate::topology::Topology;
use serde::{Serialize, Serializer};

/// What the Linux layer found at a namespace's `device_path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackingFacts {
    /// `device_path` is empty.
    Unset,
    /// Nothing exists at `device_path`.
    Missing,
    /// A regular file: nvmet's file backend.
    File,
    /// A block device.
    Block {
        /// Its name (`nvme0n1`).
        name: String,
        /// What does its DMA.
        driver: BlockDriver,
        /// The PCI function doing its DMA, when it has one (the client the kernel uses).
        pci: Option<Bdf>,
    },
    /// Something else (a directory, a character device).
    Other {
        /// What it is.
        what: String,
    },
    /// It could not be examined.
    Unknown {
        /// Why.
        why: String,
    },
}

/// The system the plan is for.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// PCI functions and providers.
    pub topo: &'a Topology,
    /// Kernel version and CPU.
    pub rules: &'a Rules,
}

/// What writing the `p2pmem` attribute will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AttrWrite {
    /// The kernel takes it.
    Accepted,
    /// The kernel refuses it.
    Refused {
        /// Why, with the errno and the kernel's log line.
        error: NvmetAttrError,
    },
    /// The attribute does not exist (no `CONFIG_PCI_P2PDMA`): ENOENT.
    NoAttribute,
}

/// What writing 1 to `enable` will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum EnableOutcome {
    /// `p2pmem` is off: no P2P check (the backend must still open).
    NotRequested,
    /// Every P2P check passes.
    Passes,
    /// A check depends on something unknown.
    Undetermined {
        /// What.
        why: String,
    },
    /// A P2P check fails: EINVAL.
    Fails {
        /// The errno (EINVAL).
        errno: Errno,
        /// Which check, with the `nvmet: ` line.
        failure: PreflightFailure,
    },
    /// The backend cannot be opened, before any P2P check.
    BackendFails {
        /// The errno, when known.
        errno: Option<Errno>,
        /// Why.
        why: String,
    },
}

impl EnableOutcome {
    /// `Some(true)`: enable succeeds; `Some(false)`: it fails; `None`: unknown.
    pub fn succeeds(&self) -> Option<bool> {
        match self {
            Self::NotRequested | Self::Passes => Some(true),
            Self::Fails { .. } | Self::BackendFails { .. } => Some(false),
            Self::Undetermined { .. } => None,
        }
    }
}

/// A provider that the namespace would use, with its pool state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderInfo {
    /// The provider.
    pub bdf: Bdf,
    /// Distance to the namespace's PCI function, when allowed.
    pub distance: Option<u32>,
    /// `p2pmem/size`.
    pub size: Option<u64>,
    /// `p2pmem/available`.
    pub available: Option<u64>,
}

/// The pre-flight of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NsPreflight {
    /// The subsystem.
    pub nqn: String,
    /// The namespace.
    pub nsid: u32,
    /// `device_path`.
    pub device_path: String,
    /// Whether it is enabled now.
    pub enabled: bool,
    /// The setting checked (the current one, or the one about to be written).
    #[serde(serialize_with = "ser_display")]
    pub setting: P2pmemSetting,
    /// Whether the kernel has the `p2pmem` attribute.
    pub attribute_present: bool,
    /// What backs the namespace.
    pub backing: BackingFacts,
    /// Whether the backing queue accepts P2P pages, when it is a block device.
    pub queue_supports_p2pdma: Option<bool>,
    /// Writing the setting, when a new one is about to be written.
    pub attr_write: Option<AttrWrite>,
    /// Writing 1 to `enable`.
    pub enable: EnableOutcome,
    /// The provider(s) enable's check found (a chosen device, or `find`'s best).
    pub providers: Vec<ProviderInfo>,
    /// Lines the kernel logs on the way (`nvmet: `, `pci-p2pdma: ` and PCI warnings).
    pub kernel_log: Vec<String>,
    /// Anything else worth saying.
    pub notes: Vec<String>,
}

/// Serializes a value with its `Display` (the tool's spelling of a setting).
pub fn ser_display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn has_p2pmem(topo: &Topology, name: &str) -> Option<HasP2pmem> {
    let bdf: Bdf = name.parse().ok()?;
    let f = topo.get(&bdf)?;
    Some(match f.p2pmem {
        Some(m) if m.is_published() => HasP2pmem::Yes,
        _ => HasP2pmem::No,
    })
}

fn provider_info(topo: &Topology, bdf: Bdf, distance: Option<u32>) -> ProviderInfo {
    let m = topo.get(&bdf).and_then(|f| f.p2pmem);
    ProviderInfo {
        bdf,
        distance,
        size: m.and_then(|m| m.size),
        available: m.and_then(|m| m.available),
    }
}

/// The warning the kernel prints on a client without a PCI ancestor (`dev_warn` on the
/// gendisk: prefix `block <name>: `).
fn not_pci_line(env: Env<'_>, disk: &str) -> String {
    format!(
        "block {disk}: {}",
        messages::text(&MessageKind::NotPci, env.rules.kernel)
    )
}

/// The pre-flight of `ns` in subsystem `nqn`, for `setting` when given (about to be
/// written) or else the namespace's own.
pub fn namespace(
    env: Env<'_>,
    nqn: &str,
    ns: &Namespace,
    backing: &BackingFacts,
    setting: Option<P2pmemSetting>,
) -> NsPreflight {
    let proposed = setting;
    let setting = proposed.unwrap_or_else(|| ns.setting());
    let mut p = NsPreflight {
        nqn: nqn.to_string(),
        nsid: ns.nsid,
        device_path: ns.device_path.clone(),
        enabled: ns.enable,
        setting,
        attribute_present: ns.p2pmem.is_some(),
        backing: backing.clone(),
        queue_supports_p2pdma: None,
        attr_write: None,
        enable: EnableOutcome::NotRequested,
        providers: Vec::new(),
        kernel_log: Vec::new(),
        notes: Vec::new(),
    };
    if proposed.is_some() {
        let w = if ns.p2pmem.is_none() {
            AttrWrite::NoAttribute
        } else {
            match nvmet_attr::store_p2pmem_attr(
                &setting.kernel_write(),
                ns.enable,
                |name| has_p2pmem(env.topo, name),
                env.rules.kernel,
            ) {
                Ok(_) => AttrWrite::Accepted,
                Err(error) => {
                    if let Some(l) = error.kernel_log() {
                        p.kernel_log.push(log_line(env, &l));
                    }
                    AttrWrite::Refused { error }
                }
            }
        };
        p.attr_write = Some(w);
    }
    p.enable = enable_outcome(env, &mut p);
    p
}

/// The whole line: a module prefix, or `pci_err`'s `<driver> <BDF>: ` (the bound
/// driver, `pci` for an unbound device).
fn log_line(env: Env<'_>, l: &nvmet_attr::KernelLog) -> String {
    match &l.prefix {
        nvmet_attr::LogPrefix::Module(m) => format!("{m}{}", l.text),
        nvmet_attr::LogPrefix::Device(bdf) => {
            let name = env.topo.get(bdf).map_or("pci", |f| f.log_prefix_name());
            format!("{name} {bdf}: {}", l.text)
        }
    }
}

fn enable_outcome(env: Env<'_>, p: &mut NsPreflight) -> EnableOutcome {
    let backend = match &p.backing {
        BackingFacts::Unset => {
            return EnableOutcome::BackendFails {
                errno: None,
                why: "device_path is empty: set it before enabling".into(),
            }
        }
        BackingFacts::Missing => {
            return EnableOutcome::BackendFails {
                errno: Some(facts_errno(2)),
                why: format!("{} does not exist", p.device_path),
            }
        }
        BackingFacts::Other { what } => {
            return EnableOutcome::BackendFails {
                errno: None,
                why: format!(
                    "{} is {what}, neither a block device nor a file",
                    p.device_path
                ),
            }
        }
        BackingFacts::Unknown { why } => {
            if p.setting == P2pmemSetting::Off {
                return EnableOutcome::NotRequested;
            }
            return EnableOutcome::Undetermined {
                why: format!("the backing device could not be examined: {why}"),
            };
        }
        BackingFacts::File => NsBackend::File,
        BackingFacts::Block { driver, .. } => {
            let q = facts::queue_supports_p2pdma(driver, env.rules.kernel);
            p.queue_supports_p2pdma = Some(q);
            NsBackend::Block {
                queue_supports_p2pdma: q,
            }
        }
    };
    let (disk, pci) = match &p.backing {
        BackingFacts::Block { name, pci, .. } => (name.clone(), *pci),
        _ => (String::new(), None),
    };
    let mut distance_ok = None;
    let mut provider_found = None;
    let mut undetermined = String::new();
    match (p.setting, pci) {
        (P2pmemSetting::Off, _) => {}
        (P2pmemSetting::Device(dev), Some(client)) => {
            match select::check(env.topo, env.rules, dev, &[client]) {
                Ok(c) => {
                    distance_ok = c.supported;
                    if c.supported == Some(true) {
                        p.providers.push(provider_info(env.topo, dev, c.distance));
                    } else {
                        p.kernel_log.extend(c.messages.iter().cloned());
                        undetermined = c.unknowns.join("; ");
                    }
                }
                Err(e) => undetermined = e.to_string(),
            }
        }
        (P2pmemSetting::Auto, Some(client)) => match select::find(env.topo, env.rules, &[client]) {
            Ok(f) => {
                provider_found = if !f.best.is_empty() {
                    Some(true)
                } else if f.maybe.is_empty() {
                    Some(false)
                } else {
                    undetermined = format!(
                        "ACS of the path to {} could not be read: run as root",
                        join(&f.maybe)
                    );
                    None
                };
                for b in &f.best {
                    p.providers
                        .push(provider_info(env.topo, *b, f.best_distance));
                }
                if f.best.len() > 1 {
                    p.notes.push(format!(
                        "{} providers tie; enable only checks that one exists",
                        f.best.len()
                    ));
                }
            }
            Err(e) => undetermined = e.to_string(),
        },
        (P2pmemSetting::Device(_), None) => {
            distance_ok = Some(false);
            if !disk.is_empty() {
                p.kernel_log.push(not_pci_line(env, &disk));
            }
        }
        (P2pmemSetting::Auto, None) => provider_found = Some(false),
    }
    if pci.is_none()
        && matches!(backend, NsBackend::Block { .. })
        && p.setting != P2pmemSetting::Off
    {
        p.notes.push(format!(
            "{disk} has no PCI function of its own, so the kernel's P2P checks cannot use it as a client"
        ));
    }
    let facts = NamespaceFacts {
        device_path: p.device_path.clone(),
        backend,
        setting: p.setting,
        distance_ok,
        provider_found,
    };
    match nvmet_attr::preflight(&facts) {
        Ok(PreflightPass::NotRequested) => EnableOutcome::NotRequested,
        Ok(PreflightPass::Passes) => EnableOutcome::Passes,
        Ok(PreflightPass::Undetermined { check }) => EnableOutcome::Undetermined {
            why: if undetermined.is_empty() {
                format!("{check:?} could not be decided")
            } else {
                undetermined
            },
        },
        Err(failure) => {
            if let Some(l) = failure.kernel_log() {
                p.kernel_log.push(log_line(env, &l));
            }
            EnableOutcome::Fails {
                errno: failure.errno(),
                failure,
            }
        }
    }
}

fn facts_errno(code: i32) -> Errno {
    Errno {
        name: facts::errno_name(code).unwrap_or("errno"),
        code,
    }
}

pub(super) fn join(b: &[Bdf]) -> String {
    b.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The errno of an attribute write refusal (EBUSY or ENODEV), for callers comparing with
/// the kernel's answer.
pub fn attr_write_errno(w: &AttrWrite) -> Option<Errno> {
    match w {
        AttrWrite::Accepted => None,
        AttrWrite::Refused { error } => Some(error.errno()),
        AttrWrite::NoAttribute => Some(facts_errno(2)),
    }
}

/// The errno `enable` is predicted to fail with, if it fails.
pub fn enable_errno(e: &EnableOutcome) -> Option<Errno> {
    match e {
        EnableOutcome::Fails { errno, .. } => Some(*errno),
        EnableOutcome::BackendFails { errno, .. } => *errno,
        _ => None,
    }
}
