//! Kernel log lines that say a device's DMA went wrong below the block layer: IOMMU
//! translation faults (Intel VT-d `DMAR:`, AMD-Vi `IO_PAGE_FAULT`, Arm SMMU) and PCIe
//! Advanced Error Reporting. `p2pmem probe` shows them next to a transfer whose data came
//! back wrong, since the transfer itself may complete without an error.
//!
//! Line shapes (the prefixes have been stable across every line p2pmem supports, 6.1 to
//! 7.3; verified on a booted kernel for `DMAR:` only, 7.3 in the lab's `switch_iommu`
//! topology): `DMAR: [DMA Read NO_PASID] Request device [03:00.0] fault addr 0x...
//! [fault reason 0x05] ...` and `DMAR: DRHD: handling fault status reg 2`
//! (drivers/iommu/intel/dmar.c); `nvme 0000:03:00.0: AMD-Vi: Event logged
//! [IO_PAGE_FAULT domain=... address=... flags=...]` (drivers/iommu/amd/iommu.c);
//! `arm-smmu-v3 ...: event 0x10 received` (drivers/iommu/arm/arm-smmu-v3);
//! `pcieport 0000:00:01.0: AER: ...` and `... PCIe Bus Error: severity=...`
//! (drivers/pci/pcie/aer.c).

use serde::{Deserialize, Serialize};

/// Which mechanism reported the fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DmaFault {
    /// Intel VT-d (`DMAR:` fault lines).
    IntelIommu,
    /// AMD-Vi (`IO_PAGE_FAULT` and other events).
    AmdIommu,
    /// Arm SMMU events.
    ArmSmmu,
    /// PCIe Advanced Error Reporting.
    Aer,
}

/// What kind of DMA fault `line` (level and timestamp stripped) reports, if any.
pub fn dma_fault(line: &str) -> Option<DmaFault> {
    if line.contains("DMAR:")
        && (line.contains("fault") || line.contains("Fault") || line.contains("Request device"))
    {
        return Some(DmaFault::IntelIommu);
    }
    if line.contains("AMD-Vi:") && (line.contains("Event logged") || line.contains("PAGE_FAULT")) {
        return Some(DmaFault::AmdIommu);
    }
    if line.contains("arm-smmu") && line.contains("event") {
        return Some(DmaFault::ArmSmmu);
    }
    if (line.contains(" AER: ") && line.to_ascii_lowercase().contains("error"))
        || line.contains("PCIe Bus Error")
    {
        return Some(DmaFault::Aer);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lines_of_each_mechanism_are_recognised() {
        for (line, kind) in [
            ("DMAR: DRHD: handling fault status reg 2", DmaFault::IntelIommu),
            ("DMAR: [DMA Read NO_PASID] Request device [03:00.0] fault addr 0xfe000000 [fault reason 0x05] PTE Write access is not set", DmaFault::IntelIommu),
            ("nvme 0000:03:00.0: AMD-Vi: Event logged [IO_PAGE_FAULT domain=0x000e address=0xfe000000 flags=0x0020]", DmaFault::AmdIommu),
            ("arm-smmu-v3 arm-smmu-v3.0.auto: event 0x10 received:", DmaFault::ArmSmmu),
            ("pcieport 0000:00:01.0: AER: Uncorrected (Non-Fatal) error received: 0000:01:00.0", DmaFault::Aer),
            ("nvme 0000:01:00.0: PCIe Bus Error: severity=Uncorrected (Non-Fatal), type=Transaction Layer, (Requester ID)", DmaFault::Aer),
        ] {
            assert_eq!(dma_fault(line), Some(kind), "{line}");
        }
    }

    #[test]
    fn ordinary_lines_are_not_faults() {
        for line in [
            "DMAR: IOMMU enabled",
            "DMAR: Host address width 39",
            "AMD-Vi: Interrupt remapping enabled",
            "nvme 0000:03:00.0: added peer-to-peer DMA memory 0xf9000000-0xf9ffffff",
            "pcieport 0000:00:01.0: AER: enabled with IRQ 24",
        ] {
            assert_eq!(dma_fault(line), None, "{line}");
        }
    }
}
