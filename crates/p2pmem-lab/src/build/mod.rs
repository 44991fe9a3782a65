//! The things built, each cached and renamed into place whole: the kernel sources
//! (pinned Debian packages), the lab kernel of each line (and the Rust toolchain pieces
//! it needs), the `p2pmem_pci` module, and each run's initramfs.

mod cache;
mod closure;
mod cpio;
mod debian;
mod driver;
mod elf;
mod fragment;
mod initramfs;
mod kernel;
pub mod lines;
mod process;
mod source;
mod staged;
mod toolchain;

pub use cache::Cache;
pub(crate) use driver::ensure_driver;
pub use driver::Driver;
pub use fragment::{FragmentError, Requirement, FRAGMENT};
pub(crate) use initramfs::{build_initramfs, InitramfsSpec, DEFAULT_BUSYBOX};
pub use kernel::{ensure_kernel, Kernel, KernelSpec, ModuleTree};
pub use source::KernelSource;
