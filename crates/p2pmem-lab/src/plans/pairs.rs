//! The plan behind `lab capture` and `lab demo`: bind every QEMU `ivshmem` to the
//! `p2pmem_pci` driver (so its BAR is a provider like an NVMe CMB), take the inventory,
//! optionally capture sysfs, then every (provider, client) pair once (the prediction
//! first, for the demo), and for the demo two verified copies: 1 MiB between two NVMe
//! through a CMB (and the same MiB through a host buffer, each between the DMA-trace
//! markers of its window, see [`crate::plans::dma`]), and 2 MiB through an ivshmem the driver
//! published. [`PairsResult::from_run`] reads the answers back, typed.

use p2pmem_model::dma_accounting::Window;
use p2pmem_wire::plan::{CopyStep, Dev, Oracle, PickRule, Plan, Role, Step, Via, IVSHMEM_IDS};
use p2pmem_wire::report::{BindAttempt, Captured, CopyOutcome, Inventory, PairRecord, Picked};

use crate::error::Result;
use crate::run::lab::PlanRun;

/// What the pairs plan does besides the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairsOptions {
    /// Capture sysfs with `p2pmem capture` before any probe.
    pub capture: bool,
    /// Predict each pair with `p2pmem check` before its probe.
    pub check: bool,
    /// After the probes, the demo's verified copies.
    pub copy: bool,
}

/// Bytes the CMB copy moves.
pub const COPY_BYTES: u64 = 1 << 20;
/// Destination offset of the CMB copy (a scratch area past the pattern).
pub const COPY_DST_OFFSET: u64 = 4 << 20;
/// Destination offset of the same copy through host memory.
pub const HOST_COPY_DST_OFFSET: u64 = 5 << 20;
/// Bytes the driver copy moves: the whole sector pattern of a lab disk.
pub const DRIVER_COPY_BYTES: u64 = 2 << 20;
/// Destination offset of the driver copy (past the pattern, the CMB copy's 4 MiB and the
/// host copy's 5 MiB; the lab's disks are 8 MiB).
pub const DRIVER_COPY_DST_OFFSET: u64 = 6 << 20;

/// Step names, spelled once.
mod name {
    pub const INVENTORY: &str = "inventory";
    pub const BIND: &str = "bind-ivshmem";
    pub const CAPTURE: &str = "capture";
    pub const PAIRS: &str = "pairs";
    pub const MAP: &str = "address-map";
    pub const PICK: &str = "pick-cmb-pair";
    pub const CMB_BEGIN: &str = "mark-cmb-begin";
    pub const CMB_COPY: &str = "copy-through-cmb";
    pub const CMB_END: &str = "mark-cmb-end";
    pub const HOST_BEGIN: &str = "mark-host-begin";
    pub const HOST_COPY: &str = "copy-through-host";
    pub const HOST_END: &str = "mark-host-end";
    pub const CMB_SRC: &str = "hash-cmb-src";
    pub const CMB_DST: &str = "hash-cmb-dst";
    pub const DRIVER_PICK: &str = "pick-driver-pair";
    pub const DRIVER_COPY: &str = "copy-through-driver";
    pub const DRIVER_SRC: &str = "hash-driver-src";
    pub const DRIVER_DST: &str = "hash-driver-dst";
}

/// The plan.
pub fn pairs_plan(opts: PairsOptions) -> Plan {
    let (vendor, device) = IVSHMEM_IDS;
    let mut p = Plan::new();
    p.step(name::BIND, Step::BindAll { vendor, device })
        .step(name::INVENTORY, Step::Inventory);
    if opts.capture {
        p.step(name::CAPTURE, Step::Capture);
    }
    p.step(
        name::PAIRS,
        Step::Pairs {
            check: opts.check,
            oracle: Oracle::Auto,
            // A capture records every kernel line of every pair; the demo compares the
            // decision lines, which the kernel does not rate-limit.
            pause_after_failure: opts.capture,
        },
    );
    if opts.copy {
        let (cmb, host) = (Window::nth(0), Window::nth(1));
        let (src, dst) = (Dev::Picked(Role::Src), Dev::Picked(Role::Dst));
        let hash = |dev: &Dev, offset, len| Step::Hash {
            dev: dev.clone(),
            offset,
            len,
        };
        let copy = |via, dst_offset, len| {
            let c = CopyStep::new(src.clone(), dst.clone(), via)
                .length(len)
                .dst_offset(dst_offset)
                .verify();
            Step::Copy(if via == Via::Picked {
                c.require_p2p()
            } else {
                c
            })
        };
        p.step(name::MAP, Step::AddressMap)
            .step(name::PICK, Step::Pick(PickRule::NvmeProviderToOtherNvme))
            .step(name::CMB_BEGIN, Step::Mark { lba: cmb.begin_lba })
            .step(
                name::CMB_COPY,
                copy(Via::Picked, COPY_DST_OFFSET, COPY_BYTES),
            )
            .step(name::CMB_END, Step::Mark { lba: cmb.end_lba })
            .step(
                name::HOST_BEGIN,
                Step::Mark {
                    lba: host.begin_lba,
                },
            )
            .step(
                name::HOST_COPY,
                copy(Via::Host, HOST_COPY_DST_OFFSET, COPY_BYTES),
            )
            .step(name::HOST_END, Step::Mark { lba: host.end_lba })
            .step(name::CMB_SRC, hash(&src, 0, COPY_BYTES))
            .step(name::CMB_DST, hash(&dst, COPY_DST_OFFSET, COPY_BYTES))
            .step(
                name::DRIVER_PICK,
                Step::Pick(PickRule::BoundProviderTwoClients),
            )
            .step(
                name::DRIVER_COPY,
                copy(Via::Picked, DRIVER_COPY_DST_OFFSET, DRIVER_COPY_BYTES),
            )
            .step(name::DRIVER_SRC, hash(&src, 0, DRIVER_COPY_BYTES))
            .step(
                name::DRIVER_DST,
                hash(&dst, DRIVER_COPY_DST_OFFSET, DRIVER_COPY_BYTES),
            );
    }
    p
}

/// A verified copy of the demo, as run in the guest.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyRun {
    /// The pair chosen.
    pub picked: Picked,
    /// What `p2pmem copy` gave.
    pub outcome: CopyOutcome,
    /// sha256 of the source range and of the destination range, read back by the lab
    /// (`None` when a hash step did not run).
    pub sha256: Option<(String, String)>,
}

impl CopyRun {
    /// Judge the run: verified when `p2pmem copy --verify` exited 0, its report names
    /// the picked provider as the buffer, and the lab's own sha256 of both ranges match.
    /// `what` describes the copy, `place` where the buffer was meant to be ("the CMB").
    pub fn verdict(&self, what: &str, place: &str) -> (String, Option<bool>) {
        let sha_ok = self
            .sha256
            .as_ref()
            .is_some_and(|(a, b)| a == b && a.len() == 64);
        let via = self.picked.via.to_string();
        let via_ok = self.outcome.report.as_ref().is_some_and(|r| r.via == via);
        if self.outcome.exit == 0 && sha_ok && via_ok {
            return (
                format!(
                    "verified: {what} (p2pmem copy --verify ok; the lab's sha256 of both ranges match)"
                ),
                Some(true),
            );
        }
        let why = self
            .outcome
            .messages
            .iter()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
            .unwrap_or("");
        (
            format!(
                "FAILED: {what}: exit status {}, sha256 {}, buffer {}in {place}{}",
                self.outcome.exit,
                if sha_ok { "match" } else { "differ" },
                if via_ok { "" } else { "not " },
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            ),
            Some(false),
        )
    }
}

/// A copy step of the demo: run, or why not.
pub type CopyStepResult = std::result::Result<CopyRun, String>;

/// Everything the pairs plan brought back.
#[derive(Debug, Clone)]
pub struct PairsResult {
    /// The guest.
    pub inventory: Inventory,
    /// The `p2pmem_pci` binds of the ivshmem devices.
    pub binds: Vec<BindAttempt>,
    /// The capture, when one was asked for.
    pub capture: Option<Captured>,
    /// The pairs in run order.
    pub pairs: Vec<PairRecord>,
    /// The copy through a CMB (`None` when not asked for).
    pub cmb_copy: Option<CopyStepResult>,
    /// The copy through a driver-published provider (`None` when not asked for).
    pub driver_copy: Option<CopyStepResult>,
    /// Why the guest had no `p2pmem_pci` module (`None`: it had one).
    pub driver_not_built: Option<String>,
    /// What QEMU printed on stderr during the run.
    pub qemu_messages: Vec<String>,
}

impl PairsResult {
    /// Reads a run of [`pairs_plan`] with `opts`.
    pub fn from_run(run: &PlanRun, opts: PairsOptions) -> Result<Self> {
        let copy = |pick: &str, copy: &str, src: &str, dst: &str| -> CopyStepResult {
            let picked = run.picked(pick).map_err(|e| why(&e))?.clone();
            let outcome = run.copy(copy).map_err(|e| why(&e))?.clone();
            let sha256 = match (run.hash(src), run.hash(dst)) {
                (Ok(a), Ok(b)) => Some((a.sha256.clone(), b.sha256.clone())),
                _ => None,
            };
            Ok(CopyRun {
                picked,
                outcome,
                sha256,
            })
        };
        Ok(Self {
            inventory: run.inventory(name::INVENTORY)?.clone(),
            binds: run.binds(name::BIND)?.clone(),
            capture: if opts.capture {
                Some(run.captured(name::CAPTURE)?.clone())
            } else {
                None
            },
            pairs: run.pairs(name::PAIRS)?.clone(),
            cmb_copy: opts
                .copy
                .then(|| copy(name::PICK, name::CMB_COPY, name::CMB_SRC, name::CMB_DST)),
            driver_copy: opts.copy.then(|| {
                copy(
                    name::DRIVER_PICK,
                    name::DRIVER_COPY,
                    name::DRIVER_SRC,
                    name::DRIVER_DST,
                )
            }),
            driver_not_built: run.driver.not_built().map(str::to_string),
            qemu_messages: run.qemu_messages.clone(),
        })
    }

    /// The devices the driver published.
    pub fn driver_providers(&self) -> Vec<String> {
        self.binds
            .iter()
            .filter(|b| b.exit == 0)
            .map(|b| b.bdf.to_string())
            .collect()
    }
}

/// The step names the demo's DMA accounting needs: the address map, and the exit
/// status of the copy measured in each window.
pub mod dma_steps {
    pub use super::name::{CMB_COPY, HOST_COPY, MAP};
}

/// Why a step gave nothing usable: the reason the guest gave, without the step name
/// (the caller says which copy it was).
fn why(e: &crate::error::LabError) -> String {
    match e {
        crate::error::LabError::Step { why, .. } => {
            why.strip_prefix("skipped: ").unwrap_or(why).to_string()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_runs_each_pair_once_and_brackets_each_measured_copy() {
        let plan = pairs_plan(PairsOptions {
            capture: true,
            check: true,
            copy: true,
        });
        let names: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
        let at = |n: &str| names.iter().position(|x| *x == n).unwrap_or(usize::MAX);
        // The ivshmem devices are providers before anything looks for providers.
        assert!(at(name::BIND) < at(name::INVENTORY));
        assert!(at(name::INVENTORY) < at(name::CAPTURE));
        assert!(at(name::CAPTURE) < at(name::PAIRS));
        // Each measured copy sits between the markers of its window, in window order.
        let order = [
            name::MAP,
            name::CMB_BEGIN,
            name::CMB_COPY,
            name::CMB_END,
            name::HOST_BEGIN,
            name::HOST_COPY,
            name::HOST_END,
        ];
        assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{names:?}");
        let marks: Vec<u64> = plan
            .steps
            .iter()
            .filter_map(|s| match s.step {
                Step::Mark { lba } => Some(lba),
                _ => None,
            })
            .collect();
        let (w0, w1) = (Window::nth(0), Window::nth(1));
        assert_eq!(marks, [w0.begin_lba, w0.end_lba, w1.begin_lba, w1.end_lba]);
        assert_eq!(
            plan.steps
                .iter()
                .filter(|s| matches!(s.step, Step::Pairs { check: true, .. }))
                .count(),
            1
        );
        // Only the CMB and driver copies must stay in p2pmem.
        let require: Vec<(&str, bool)> = plan
            .steps
            .iter()
            .filter_map(|s| match &s.step {
                Step::Copy(c) => Some((s.name.as_str(), c.require_p2p && c.verify)),
                _ => None,
            })
            .collect();
        assert_eq!(
            require,
            [
                (name::CMB_COPY, true),
                (name::HOST_COPY, false),
                (name::DRIVER_COPY, true)
            ]
        );
        let plain = pairs_plan(PairsOptions {
            capture: false,
            check: false,
            copy: false,
        });
        assert_eq!(plain.steps.len(), 3);
        assert!(plain
            .steps
            .iter()
            .any(|s| matches!(s.step, Step::Pairs { check: false, .. })));
        // Only a capture waits out the kernel's rate limit after a failed pair.
        let pauses = |p: &Plan| {
            p.steps.iter().find_map(|s| match s.step {
                Step::Pairs {
                    pause_after_failure,
                    ..
                } => Some(pause_after_failure),
                _ => None,
            })
        };
        assert_eq!(pauses(&plan), Some(true));
        assert_eq!(pauses(&plain), Some(false));
    }
}
