//! The NVMe target as an oracle of the kernel's P2PDMA decision, for kernels without
//! userspace p2pmem (before 6.2, `p2pmem/allocate` does not exist): a scratch subsystem
//! with one namespace backed by the client's block device, `p2pmem` set to the provider,
//! then `enable`. `nvmet_ns_enable` asks `pci_p2pdma_distance()` (verbose) about the
//! provider and the namespace's device: the same decision, and the same lines, as an
//! O_DIRECT transfer through the provider's p2pmem. The scratch subsystem is removed
//! again whatever happened. Runs as root, in the lab.

use super::{NvmetError, Target};
use crate::klog::{klog_texts, KernelLog};
use p2pmem_model::nvmet_plan::restore::Step;
use p2pmem_model::Bdf;
use p2pmem_wire::probe::{NvmetVerdict, OK};
use std::path::Path;

/// The scratch subsystem's NQN.
pub const PROBE_NQN: &str = "nqn.2026-12.io.p2pmem:oracle";

/// Why the oracle could not give a verdict (as opposed to the kernel refusing the
/// provider, which is the verdict).
#[derive(Debug, thiserror::Error)]
pub enum NvmetProbeError {
    /// The target is missing, or setting up the scratch namespace failed.
    #[error("cannot set up the scratch nvmet namespace")]
    Setup(#[source] NvmetError),
    /// The kernel log could not be read or cleared.
    #[error("cannot use the kernel log")]
    Klog(#[source] crate::klog::KlogError),
}

/// Asks the kernel, through the NVMe target, whether `provider`'s p2pmem can serve the
/// namespace backed by `client_blkdev`.
pub fn nvmet_probe(
    log: &mut dyn KernelLog,
    root: &Path,
    provider: Bdf,
    client: Option<Bdf>,
    client_blkdev: &Path,
) -> Result<NvmetVerdict, NvmetProbeError> {
    let target = Target::open(root).map_err(NvmetProbeError::Setup)?;
    let nqn = PROBE_NQN.to_string();
    let set = |attr: &str, value: String| Step::SetNamespace {
        nqn: nqn.clone(),
        nsid: 1,
        attr: attr.to_string(),
        value,
        old: None,
    };
    // A subsystem left by an interrupted earlier probe goes first.
    cleanup(&target, &nqn);
    let setup = [
        Step::MkSubsystem { nqn: nqn.clone() },
        Step::MkNamespace {
            nqn: nqn.clone(),
            nsid: 1,
        },
        set("device_path", client_blkdev.display().to_string()),
    ];
    for step in &setup {
        if let Err(e) = target.apply(step) {
            cleanup(&target, &nqn);
            return Err(NvmetProbeError::Setup(e));
        }
    }
    let result = decide(&target, log, provider, &set);
    cleanup(&target, &nqn);
    let (enable, refused_at, kernel_log) = result?;
    Ok(NvmetVerdict {
        provider,
        client,
        client_blkdev: client_blkdev.display().to_string(),
        enable,
        refused_at,
        kernel_log,
    })
}

type Decision = (String, Option<String>, Vec<String>);

fn decide(
    target: &Target,
    log: &mut dyn KernelLog,
    provider: Bdf,
    set: &dyn Fn(&str, String) -> Step,
) -> Result<Decision, NvmetProbeError> {
    log.clear().map_err(NvmetProbeError::Klog)?;
    let mut outcome = (OK.to_string(), None);
    for (attr, value) in [
        ("p2pmem", provider.to_string()),
        ("enable", "1".to_string()),
    ] {
        match target.apply(&set(attr, value)) {
            Ok(()) => {}
            Err(e) => match e.errno_name() {
                Some(errno) => {
                    outcome = (errno.to_string(), Some(attr.to_string()));
                    break;
                }
                None => return Err(NvmetProbeError::Setup(e)),
            },
        }
    }
    let raw = log.read_all().map_err(NvmetProbeError::Klog)?;
    Ok((outcome.0, outcome.1, klog_texts(&raw)))
}

/// Disables and removes the scratch subsystem, ignoring what is not there.
fn cleanup(target: &Target, nqn: &str) {
    let steps = [
        Step::SetNamespace {
            nqn: nqn.to_string(),
            nsid: 1,
            attr: "enable".into(),
            value: "0".into(),
            old: None,
        },
        Step::RmNamespace {
            nqn: nqn.to_string(),
            nsid: 1,
        },
        Step::RmSubsystem {
            nqn: nqn.to_string(),
        },
    ];
    for s in &steps {
        let _ = target.apply(s);
    }
}
