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

/// Defines a constant per errno and [`KNOWN`], the table of them all: each name and
/// number is written once, here.
macro_rules! errnos {
    ($($name:ident = $code:literal,)*) => {
        $(
            #[doc = concat!("`", stringify!($name), "` (", stringify!($code), ").")]
            pub const $name: Errno = Errno {
                name: stringify!($name),
                code: $code,
            };
        )*
        /// Every errno the tools name: those met around P2PDMA, mmap, O_DIRECT, sysfs and
        /// nvmet's configfs. The numbers are Linux's asm-generic ones, which x86-64,
        /// arm64 and riscv64 use (MIPS, SPARC, Alpha and PA-RISC differ), plus the
        /// kernel-internal `ENOTSUPP` that configfs lets through.
        pub const KNOWN: &[Errno] = &[$($name,)*];
    };
}

errnos! {
    EPERM = 1,
    ENOENT = 2,
    ESRCH = 3,
    EINTR = 4,
    EIO = 5,
    ENXIO = 6,
    E2BIG = 7,
    EBADF = 9,
    EAGAIN = 11,
    ENOMEM = 12,
    EACCES = 13,
    EFAULT = 14,
    ENOTBLK = 15,
    EBUSY = 16,
    EEXIST = 17,
    EXDEV = 18,
    ENODEV = 19,
    ENOTDIR = 20,
    EISDIR = 21,
    EINVAL = 22,
    ENFILE = 23,
    EMFILE = 24,
    ENOTTY = 25,
    ETXTBSY = 26,
    EFBIG = 27,
    ENOSPC = 28,
    ESPIPE = 29,
    EROFS = 30,
    EPIPE = 32,
    ERANGE = 34,
    ENOSYS = 38,
    ENOTEMPTY = 39,
    ENODATA = 61,
    ETIME = 62,
    ENOLINK = 67,
    EPROTO = 71,
    EOVERFLOW = 75,
    EILSEQ = 84,
    EOPNOTSUPP = 95,
    EADDRINUSE = 98,
    EADDRNOTAVAIL = 99,
    ETIMEDOUT = 110,
    EREMOTEIO = 121,
    ENOMEDIUM = 123,
    EMEDIUMTYPE = 124,
    ECANCELED = 125,
    EHWPOISON = 133,
    ENOTSUPP = 524,
}

/// The errno with number `code`, when it is in [`KNOWN`].
pub fn by_code(code: i32) -> Option<Errno> {
    KNOWN.iter().copied().find(|e| e.code == code)
}

/// The symbolic name of errno `code` (`121` -> `EREMOTEIO`), when it is in [`KNOWN`].
pub fn name(code: i32) -> Option<&'static str> {
    by_code(code).map(|e| e.name)
}

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
    fn names_and_numbers_are_unique_and_found() {
        for (i, a) in KNOWN.iter().enumerate() {
            assert!(a.name.starts_with('E') && a.code > 0, "{a:?}");
            for b in &KNOWN[i + 1..] {
                assert_ne!(a.code, b.code, "{} and {} share a number", a.name, b.name);
                assert_ne!(a.name, b.name);
            }
            assert_eq!(by_code(a.code), Some(*a));
        }
        assert_eq!(name(121), Some("EREMOTEIO"));
        assert_eq!(name(22), Some("EINVAL"));
        assert_eq!(name(524), Some("ENOTSUPP"));
        assert_eq!(EREMOTEIO.code, 121);
        assert_eq!(name(0), None);
        assert_eq!(name(8), None);
        assert_eq!(name(-1), None);
    }

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
