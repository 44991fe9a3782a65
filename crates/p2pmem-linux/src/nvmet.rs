//! The NVMe target through configfs (`sys/kernel/config/nvmet` below the root): read the
//! configuration, apply the model's [`Step`](p2pmem_model::nvmet_plan::Step)s with the right syscalls, and gather the
//! facts its pre-flight needs (what backs each namespace, which RDMA devices serve each
//! port, who is connected, what the kernel logged).
//!
//! On configfs, `mkdir` creates an object with its attributes and default groups and
//! `rmdir` removes it; symlinks must name their target by absolute path (configfs
//! resolves a relative one against the caller's working directory). The same code runs
//! on a plain directory standing in for configfs (tests, captures): there `mkdir` also
//! creates the default groups, `rmdir` first removes attribute files, links are
//! relative, and a write creates its file. A plain directory shows ordering and
//! idempotence only; the kernel's refusals are seen only on real configfs (the lab).

mod apply;
pub mod facts;
pub mod probe;
mod read;

use crate::rootfs::{FsError, RootFs};
use crate::sys;
use p2pmem_model::nvmet_plan::facts::{errno_meaning, Op};
use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};

pub use read::{Extra, Snapshot};

/// Where nvmet lives, relative to the root.
pub const NVMET_DIR: &str = "sys/kernel/config/nvmet";

/// `CONFIGFS_MAGIC` from `include/uapi/linux/magic.h`.
pub const CONFIGFS_MAGIC: u64 = 0x6265_6570;

/// What the nvmet directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backing {
    /// The kernel's configfs: every write is judged by nvmet.
    Configfs,
    /// An ordinary directory standing in for it (a capture or a test tree).
    PlainDir,
}

/// The nvmet configfs tree below a root.
#[derive(Debug, Clone)]
pub struct Target {
    fs: RootFs,
    backing: Backing,
}

/// Why an nvmet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NvmetError {
    /// No nvmet directory.
    #[error("{path} does not exist: the nvmet target is not loaded or configfs is not mounted (modprobe nvmet; mount -t configfs none /sys/kernel/config)")]
    NoTarget {
        /// The path looked at.
        path: PathBuf,
    },
    /// The kernel (or the file system) refused an operation.
    #[error("{action} {path}: {errno}: {meaning}")]
    Refused {
        /// `mkdir`, `write 1 to`, `link`...
        action: String,
        /// The path.
        path: PathBuf,
        /// The errno's name (`EBUSY`).
        errno: String,
        /// The errno's number.
        code: Option<i32>,
        /// What it means for this operation.
        meaning: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A file could not be read.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A file holds something nvmet does not write.
    #[error("{path}: unexpected content {content:?}: {why}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// What was read (shortened).
        content: String,
        /// What was expected.
        why: String,
    },
}

impl NvmetError {
    /// The errno of a refused operation.
    pub fn errno_code(&self) -> Option<i32> {
        match self {
            Self::Refused { code, .. } => *code,
            _ => None,
        }
    }

    /// The errno's name of a refused operation.
    pub fn errno_name(&self) -> Option<&str> {
        match self {
            Self::Refused { errno, .. } => Some(errno),
            _ => None,
        }
    }

    pub(crate) fn refused(op: Op, action: String, path: PathBuf, source: io::Error) -> Self {
        let code = source.raw_os_error();
        let errno = sys::io_error_label(&source);
        let meaning = code
            .and_then(|c| errno_meaning(op, c))
            .map_or_else(|| source.to_string(), str::to_string);
        Self::Refused {
            action,
            path,
            errno,
            code,
            meaning,
            source,
        }
    }
}

impl Target {
    /// The target below `root`; fails when `root/sys/kernel/config/nvmet` is missing.
    pub fn open(root: &Path) -> Result<Self, NvmetError> {
        let fs = RootFs::new(root);
        let dir = fs.path(NVMET_DIR);
        if !dir.is_dir() {
            return Err(NvmetError::NoTarget { path: dir });
        }
        let backing = match rustix::fs::statfs(&dir) {
            Ok(st) if st.f_type as u64 == CONFIGFS_MAGIC => Backing::Configfs,
            _ => Backing::PlainDir,
        };
        Ok(Self { fs, backing })
    }

    /// Configfs or a plain directory.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// The root.
    pub fn fs(&self) -> &RootFs {
        &self.fs
    }

    /// `rel` (relative to the nvmet directory) as a path on this machine.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.fs.path(NVMET_DIR).join(rel)
    }
}

#[cfg(test)]
mod tests;
