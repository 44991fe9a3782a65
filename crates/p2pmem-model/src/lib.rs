//! The Linux kernel's PCI peer-to-peer DMA (P2PDMA) rules as a pure model.
//!
//! Everything here is arithmetic over values that the Linux layer read from a live or
//! captured system: no file system, no libc, no `unsafe`. Each kernel fact (whitelist
//! entry, ACS mask, message text, error code, register field) lives in exactly one module,
//! with the kernel versions it holds for.

#![forbid(unsafe_code)]

pub mod acs;
pub mod bdf;
pub mod boot_params;
pub mod cmb;
pub mod config_space;
pub mod cpu;
pub mod distance;
pub mod dma_accounting;
pub mod dma_faults;
pub mod errno;
pub mod kernel_version;
pub mod klog;
pub mod limits;
pub mod messages;
pub mod nvmet_attr;
pub mod nvmet_plan;
pub mod pci_ids;
pub mod plan;
pub mod pool;
pub mod ratelimit;
pub mod select;
pub mod size;
pub mod topology;
pub mod whatif;
pub mod whitelist;

pub use bdf::{Bdf, HostBridgeId};
pub use kernel_version::KernelVersion;
