//! The virtual P2PDMA lab: builds a Linux kernel with `CONFIG_PCI_P2PDMA`, an initramfs
//! holding busybox and the static `p2pmem` binary, and boots PCIe topologies described in
//! TOML under QEMU (TCG, never KVM). What runs in the guest is a typed plan
//! (`p2pmem_wire::plan`) that `p2pmem agent` executes; its typed answers come back over
//! the serial console in frames. See `TOPOLOGY.md` for the topology schema.

#![forbid(unsafe_code)]

pub mod cache;
pub mod cpio;
pub mod demo;
pub mod disk;
pub mod driver;
pub mod elf;
pub mod error;
pub mod initramfs;
pub mod ivshmem;
pub mod kernel;
pub mod lab;
pub mod pairs;
mod process;
pub mod progress;
pub mod q35;
pub mod qemu;
pub mod qemu_args;
mod staged;
pub mod toolchain;
pub mod topology;
pub mod trace;
pub mod truth;

pub use cache::Cache;
pub use error::{LabError, Result};
pub use kernel::{ensure_kernel, Kernel, KernelSpec};
pub use lab::{Lab, PlanRun};
pub use progress::Progress;
pub use topology::Topology;
