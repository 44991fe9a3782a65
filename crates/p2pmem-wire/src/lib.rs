//! The types that cross the lab's host/guest boundary, defined once and read with serde
//! on both ends: the [`plan::Plan`] the host sends, the [`report::StepReport`] the guest
//! agent answers each step with, the reports of the commands that run in the guest
//! ([`check`], [`copy`], [`bind`], [`probe`]; the same documents those commands print
//! with `--json`), and the console [`frame`] stream that carries them.

#![forbid(unsafe_code)]

pub mod bind;
pub mod check;
pub mod copy;
pub mod doc;
pub mod frame;
pub mod pci;
pub mod plan;
pub mod probe;
pub mod report;

pub use plan::{Arg, CopyStep, Dev, Oracle, PickRule, Plan, Role, Step, Via};
pub use report::{Output, StepReport, StepResult};
