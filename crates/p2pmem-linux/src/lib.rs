//! The Linux side of p2pmem: reads a live or captured system from a root directory
//! (sysfs, procfs, the kernel config), maps p2pmem and does O_DIRECT I/O.
//!
//! Nothing here spells out `/sys` as an absolute path: every path is joined onto a root
//! directory (`/` on a live system, a capture elsewhere), so tests run against fixture
//! trees that are real captures.

pub mod bench;
pub mod bounded;
pub mod capture;
pub mod copy;
pub mod dio;
pub mod dma_probe;
pub mod import;
pub mod kconfig;
pub mod killpoint;
pub mod klog;
pub mod link_speed;
pub mod memctl;
pub mod nvmet;
pub mod p2pbuf;
pub mod path_probe;
pub mod pci_names;
pub mod provider;
pub mod resolve;
pub mod resource;
pub mod rootfs;
pub mod synth;
pub mod sys;
pub mod system;
pub mod testing;
