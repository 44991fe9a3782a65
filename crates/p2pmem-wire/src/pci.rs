//! A PCI function's IDs with the names the PCI ID database gives them, as `--json`
//! documents carry them next to a PCI address (`vendor_name`, `device_name`).

use p2pmem_model::Bdf;
use serde::{Deserialize, Serialize};

/// A function's vendor and device, as numbers and (when the database knows them) names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciName {
    /// The function.
    pub bdf: Bdf,
    /// Vendor ID, four hex digits (`1b36`).
    pub vendor: String,
    /// Device ID, four hex digits (`0010`).
    pub device: String,
    /// The vendor's name (`Red Hat, Inc.`); null when the database does not know it.
    pub vendor_name: Option<String>,
    /// The device's name (`QEMU NVM Express Controller`); null when unknown.
    pub device_name: Option<String>,
}
