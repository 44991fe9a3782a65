//! The things built, each cached and renamed into place whole: the lab kernel (and the
//! Rust toolchain pieces it needs), the `p2pmem_pci` module, and each run's initramfs.

mod cache;
mod cpio;
mod driver;
mod elf;
mod initramfs;
mod kernel;
mod process;
mod staged;
mod toolchain;

pub use cache::Cache;
pub(crate) use driver::ensure_driver;
pub(crate) use elf::require_static;
pub(crate) use initramfs::{build_initramfs, InitramfsSpec, DEFAULT_BUSYBOX};
pub use kernel::{ensure_kernel, Kernel, KernelSpec};
