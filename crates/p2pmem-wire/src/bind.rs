//! What `p2pmem provider bind --json` prints, and what the lab agent's bind steps
//! return: the device bound to `p2pmem_pci`, what it published, and the model's verdict
//! for every client.

use p2pmem_model::Bdf;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What a bind did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindAction {
    /// Bound a device that had no driver.
    Bound,
    /// Unbound from `p2pmem_pci` and bound again, for a different region.
    Rebound,
    /// It was bound already (the module binds its ID table when it loads) and no region
    /// was asked for: nothing to change.
    AlreadyBound,
}

/// One line of the driver's `providers` file: what a bound device published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRegion {
    /// The device.
    pub bdf: Bdf,
    /// BAR index.
    pub bar: u8,
    /// Offset into the BAR.
    pub offset: u64,
    /// Bytes published.
    pub size: u64,
    /// CPU physical address of the first byte.
    pub start: u64,
    /// Length of the whole BAR.
    pub bar_len: u64,
}

/// The model's verdict for one client of a newly bound provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientVerdict {
    /// The client's PCI function.
    pub bdf: Bdf,
    /// Its names (controller, RDMA device, block devices).
    pub names: Vec<String>,
    /// The verdict (null when unknown).
    pub supported: Option<bool>,
    /// The map type.
    pub map_type: Option<String>,
    /// The distance, when supported.
    pub distance: Option<u32>,
    /// The kernel's lines.
    pub messages: Vec<String>,
}

/// `p2pmem provider bind --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindReport {
    /// The device.
    pub bdf: Bdf,
    /// The driver (`p2pmem_pci`).
    pub driver: String,
    /// What was done.
    pub action: BindAction,
    /// The module file this bind loaded, if it loaded one.
    pub module_loaded: Option<PathBuf>,
    /// What the device published.
    pub region: Option<ActiveRegion>,
    /// `p2pmem/size`.
    pub size: Option<u64>,
    /// `p2pmem/available`.
    pub available: Option<u64>,
    /// `p2pmem/published`.
    pub published: Option<bool>,
    /// The kernel version whose rules the verdicts use.
    pub kernel: String,
    /// Every NVMe and RDMA client with the model's verdict.
    pub clients: Vec<ClientVerdict>,
}
