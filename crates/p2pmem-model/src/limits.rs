//! How big each kind of file p2pmem reads can be, and why. Every file is read with one
//! of these bounds, so an endless or huge input (`/dev/urandom`, a FIFO's writer, a
//! corrupt capture) is a clear error naming the file and the bound instead of a hang
//! or an exhausted memory. The bounds are the kernel's own sizes where it has one, with
//! room to spare; the reading itself is the Linux and lab crates' business.

use serde::Serialize;

/// The most bytes a kind of file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bound {
    /// The limit in bytes: a file of exactly this size is read, one byte more is an error.
    pub max: u64,
    /// What kind of file, for the error message ("a sysfs attribute").
    pub what: &'static str,
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// A sysfs or configfs attribute: the kernel's `show` fills at most one page
/// (`PAGE_SIZE`, 4 KiB on x86; 64 KiB pages on some arm64 and ppc64 kernels).
pub const SYSFS_ATTR: Bound = Bound {
    max: 64 * KIB,
    what: "a sysfs attribute (one page)",
};

/// A PCI function's `config`: 256 bytes of conventional or 4096 of extended config space.
pub const CONFIG_SPACE: Bound = Bound {
    max: 4096,
    what: "PCI config space (4096 bytes)",
};

/// A small procfs file: `/proc/cmdline` (`COMMAND_LINE_SIZE` is at most 4096 bytes) and
/// `/proc/sys/kernel/osrelease` (65 bytes).
pub const PROC_SMALL: Bound = Bound {
    max: 64 * KIB,
    what: "a small procfs file (one page)",
};

/// `/proc/cpuinfo`: about 1.5 KiB a CPU, and `NR_CPUS` is at most 8192.
pub const CPUINFO: Bound = Bound {
    max: 32 * MIB,
    what: "/proc/cpuinfo",
};

/// A procfs table (`/proc/self/mountinfo`, `/proc/net/route`, `/proc/net/if_inet6`):
/// one line per mount, route or address, a few hundred bytes each.
pub const PROC_TABLE: Bound = Bound {
    max: 64 * MIB,
    what: "a procfs table (one line per entry)",
};

/// A kernel `.config`, plain or gunzipped from `/proc/config.gz`: about 300 KiB.
pub const KERNEL_CONFIG: Bound = Bound {
    max: 16 * MIB,
    what: "a kernel .config",
};

/// A kernel-log capture: the ring buffer is at most 32 MiB (`CONFIG_LOG_BUF_SHIFT` 25),
/// and `dmesg` text adds timestamps and prefixes.
pub const KERNEL_LOG: Bound = Bound {
    max: 128 * MIB,
    what: "a kernel log",
};

/// A saved nvmet configuration (`p2pmem nvmet save`): a few KiB a subsystem.
pub const NVMET_SAVED: Bound = Bound {
    max: 16 * MIB,
    what: "a saved nvmet configuration",
};

/// A lab topology file (TOML): a few KiB.
pub const TOPOLOGY: Bound = Bound {
    max: MIB,
    what: "a lab topology file",
};

/// A `p2pmem plan` design file (TOML; a 4,096-device design is about 100 KiB) or flows
/// file (10,000 flows are about 400 KiB).
pub const PLAN_INPUT: Bound = Bound {
    max: 64 * MIB,
    what: "a plan design or flows file",
};

/// One line of a QEMU trace: the longest `pci_nvme_*` event is under 200 bytes.
pub const TRACE_LINE: Bound = Bound {
    max: 64 * KIB,
    what: "a QEMU trace line",
};

/// A whole QEMU trace of one lab run: a few hundred MiB for the largest plans.
pub const TRACE: Bound = Bound {
    max: 16 * 1024 * MIB,
    what: "a QEMU trace",
};

/// The longest symbolic link target (`PATH_MAX`).
pub const LINK_TARGET: Bound = Bound {
    max: 4096,
    what: "a symbolic link target (PATH_MAX)",
};

/// `lspci -D -vvv -xxxx` text given to `p2pmem import lspci`: about 40 KiB a function
/// (256 hex dump lines and the decoded capabilities), for a few thousand functions.
pub const LSPCI_TEXT: Bound = Bound {
    max: 256 * MIB,
    what: "lspci output",
};

/// The note `p2pmem import` leaves at a capture's top (`p2pmem-import.json`): a few
/// hundred bytes and one line per provider and per function whose dump was short.
pub const IMPORT_NOTE: Bound = Bound {
    max: 16 * MIB,
    what: "an import note (p2pmem-import.json)",
};

/// Every bound, for the documentation and the tests.
pub const ALL: [Bound; 15] = [
    SYSFS_ATTR,
    CONFIG_SPACE,
    PROC_SMALL,
    CPUINFO,
    PROC_TABLE,
    KERNEL_CONFIG,
    KERNEL_LOG,
    NVMET_SAVED,
    TOPOLOGY,
    PLAN_INPUT,
    TRACE_LINE,
    TRACE,
    LINK_TARGET,
    LSPCI_TEXT,
    IMPORT_NOTE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_holds_what_the_kernel_writes_and_names_itself() {
        for b in ALL {
            assert!(b.max >= 4096, "{} is below a page", b.what);
            assert!(!b.what.is_empty());
        }
        // The sizes the kernel fixes.
        const {
            assert!(CONFIG_SPACE.max == 4096);
            assert!(SYSFS_ATTR.max >= 4096 && PROC_SMALL.max > 4096);
            assert!(KERNEL_LOG.max > 32 * MIB);
        }
    }
}
