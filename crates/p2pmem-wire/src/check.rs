//! What `p2pmem check --json` prints, and what the lab agent's check step returns: the
//! model's decision for a provider and its clients.

use p2pmem_model::distance::PairVerdict;
use p2pmem_model::whatif::WhatIfReport;
use p2pmem_model::Bdf;
use serde::{Deserialize, Serialize};

/// The model's decision for one provider and its clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The provider.
    pub provider: Bdf,
    /// The clients' PCI functions.
    pub clients: Vec<Bdf>,
    /// The clients as named on the command line.
    pub client_names: Vec<String>,
    /// `bus_addr`, `thru_host_bridge` or `not_supported`; null when unknown.
    pub map_type: Option<String>,
    /// The kernel's distance, when supported.
    pub distance: Option<u32>,
    /// The verdict; null when it depends on registers that could not be read.
    pub supported: Option<bool>,
    /// The kernel's lines, without timestamps, in the order it prints them.
    pub messages: Vec<String>,
    /// Boot parameters that would change the answer.
    pub fixes: Vec<String>,
    /// What could not be known.
    pub unknowns: Vec<String>,
    /// The kernel version whose rules applied.
    pub kernel: String,
    /// The errno a refused O_DIRECT transfer gets on that kernel (null before 6.2).
    pub refused_errno: Option<String>,
    /// Whether the provider has `p2pmem/`.
    pub is_provider: bool,
    /// Whether its p2pmem is published.
    pub published: bool,
    /// Each client's decision, with every test the kernel makes.
    pub pairs: Vec<PairVerdict>,
    /// The boot asked about (`--cmdline`, `--iommu`, `--kernel`), when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub what_if: Option<WhatIfReport>,
    /// Every fix for an ACS-redirect refusal, checked by deciding the pair again with it.
    #[serde(default)]
    pub proven_fixes: Vec<ProvenFix>,
    /// The provider's and clients' vendor and device names from the PCI ID database
    /// (empty in documents from before the names were added).
    #[serde(default)]
    pub devices: Vec<crate::pci::PciName>,
}

/// A fix, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenFix {
    /// The parameter, as to add it.
    pub parameter: String,
    /// The whole command line the check decided with.
    pub cmdline: String,
    /// The pair's verdict with it (`null`: unknown).
    pub allowed: Option<bool>,
    /// The map type with it.
    pub map_type: Option<String>,
}
