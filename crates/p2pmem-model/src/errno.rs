//! Error numbers the kernel returns for P2PDMA outcomes, by version.
//!
//! A userspace O_DIRECT transfer whose (provider, client) pair is NOT_SUPPORTED fails
//! with EREMOTEIO through the scatterlist mapping (6.2 .. 6.16) and with EINVAL through
//! the block DMA iterator (6.17+). Userspace P2P O_DIRECT exists only from 6.2 (the
//! `allocate` file and FOLL_PCI_P2PDMA). The nvmet `enable` check fails with EINVAL.

use crate::kernel_version::{KernelVersion, VersionRange};
use serde::Serialize;

/// An errno, by name and number (x86-64 Linux values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Errno {
    /// Symbolic name, e.g. `EREMOTEIO`.
    pub name: &'static str,
    /// Number.
    pub code: i32,
}

/// EINVAL.
pub const EINVAL: Errno = Errno {
    name: "EINVAL",
    code: 22,
};
/// EREMOTEIO.
pub const EREMOTEIO: Errno = Errno {
    name: "EREMOTEIO",
    code: 121,
};
/// ENODEV.
pub const ENODEV: Errno = Errno {
    name: "ENODEV",
    code: 19,
};
/// EBUSY.
pub const EBUSY: Errno = Errno {
    name: "EBUSY",
    code: 16,
};
/// ENOMEM.
pub const ENOMEM: Errno = Errno {
    name: "ENOMEM",
    code: 12,
};

/// Versions with the `p2pmem/allocate` mmap file and GUP P2P gating (userspace P2P I/O).
pub const USERSPACE_P2P: VersionRange = VersionRange::since(6, 2);
/// Versions where nvme-pci maps P2P data with `dma_map_sgtable` (EREMOTEIO on refusal).
pub const SGTABLE_EREMOTEIO: VersionRange = VersionRange::between((6, 0), (6, 17));
/// Versions where nvme-pci uses the block DMA iterator (EINVAL on refusal).
pub const ITERATOR_EINVAL: VersionRange = VersionRange::since(6, 17);

/// The errno a userspace O_DIRECT transfer to nvme-pci gets when the pair is
/// NOT_SUPPORTED, or `None` when that kernel has no userspace P2P I/O.
pub fn o_direct_not_supported(kernel: KernelVersion) -> Option<Errno> {
    if !USERSPACE_P2P.contains(kernel) {
        None
    } else if ITERATOR_EINVAL.contains(kernel) {
        Some(EINVAL)
    } else {
        Some(EREMOTEIO)
    }
}

/// The errno of an O_DIRECT transfer with p2pmem to a queue without P2PDMA support
/// (GUP refuses the pages), for kernels with userspace P2P I/O.
pub fn o_direct_queue_lacks_p2pdma(kernel: KernelVersion) -> Option<Errno> {
    USERSPACE_P2P.contains(kernel).then_some(EREMOTEIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_supported_errno_by_version() {
        assert_eq!(o_direct_not_supported(KernelVersion::new(6, 1, 0)), None);
        assert_eq!(
            o_direct_not_supported(KernelVersion::new(6, 2, 0)),
            Some(EREMOTEIO)
        );
        assert_eq!(
            o_direct_not_supported(KernelVersion::new(6, 12, 117)),
            Some(EREMOTEIO)
        );
        assert_eq!(
            o_direct_not_supported(KernelVersion::new(6, 16, 9)),
            Some(EREMOTEIO)
        );
        assert_eq!(
            o_direct_not_supported(KernelVersion::new(6, 17, 0)),
            Some(EINVAL)
        );
        assert_eq!(
            o_direct_not_supported(KernelVersion::new(7, 3, 0)),
            Some(EINVAL)
        );
        assert_eq!(
            o_direct_queue_lacks_p2pdma(KernelVersion::new(6, 17, 0)),
            Some(EREMOTEIO)
        );
    }
}
