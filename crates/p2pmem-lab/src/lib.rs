//! The virtual P2PDMA lab: builds a Linux kernel with `CONFIG_PCI_P2PDMA`, an initramfs
//! holding busybox and the static `p2pmem` binary, and boots PCIe topologies described in
//! TOML under QEMU (TCG, never KVM). What runs in the guest is a typed plan
//! (`p2pmem_wire::plan`) that `p2pmem agent` executes; its typed answers come back over
//! the serial console in frames. See `TOPOLOGY.md` for the topology schema.
//!
//! The modules, with arrows one way: [`machine`] (the machine described) and [`build`]
//! (the things built) are used by [`run`] (running QEMU), which [`plans`] (the jobs)
//! use, which [`reports`] use.

#![forbid(unsafe_code)]

pub mod build;
pub mod error;
pub mod machine;
pub mod plans;
pub mod progress;
pub mod reports;
pub mod run;

pub use build::{ensure_kernel, Cache, Driver, Kernel, KernelSource, KernelSpec};
pub use error::{LabError, Result};
pub use machine::topology::Topology;
pub use progress::Progress;
pub use run::lab::{Guest, Lab, PlanRun};
