//! Name a P2P client the way users do: a PCI address, a block device (`nvme0n1`,
//! `/dev/nvme0n1`, a partition), an NVMe controller (`nvme0`) or an RDMA device
//! (`mlx5_0`); each resolves to the PCI function that does the DMA.

use crate::system::System;
use p2pmem_model::Bdf;
use serde::Serialize;

/// What a name turned out to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ClientKind {
    /// A PCI address.
    Pci,
    /// A block device (or partition) of an NVMe namespace.
    Block {
        /// Its name.
        name: String,
        /// An NVMe multipath head disk.
        multipath_head: bool,
    },
    /// An NVMe controller.
    NvmeController {
        /// Its name.
        name: String,
    },
    /// An RDMA device.
    Rdma {
        /// Its name.
        name: String,
    },
}

/// A resolved client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Client {
    /// What the user wrote.
    pub name: String,
    /// The PCI function doing the DMA.
    pub bdf: Bdf,
    /// What it is.
    #[serde(flatten)]
    pub kind: ClientKind,
}

/// Why a name does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Nothing by that name.
    #[error("'{0}' is not a PCI function, block device, NVMe controller or RDMA device of this system (see `p2pmem topo`)")]
    Unknown(String),
    /// It exists but has no PCI function.
    #[error("'{name}' has no PCI function doing its DMA ({why}): P2PDMA needs a PCI device")]
    NotPci {
        /// The name.
        name: String,
        /// Why.
        why: String,
    },
    /// A multipath head with several paths: which function does the DMA is not fixed.
    #[error("'{name}' is an NVMe multipath device with {n} paths ({paths}); name one controller's function instead")]
    Ambiguous {
        /// The name.
        name: String,
        /// Number of paths.
        n: usize,
        /// The functions.
        paths: String,
    },
}

/// Resolve `name` in `sys`.
pub fn resolve_client(sys: &System, name: &str) -> Result<Client, ResolveError> {
    let trimmed = name.trim();
    if let Ok(bdf) = trimmed.parse::<Bdf>() {
        if sys.topology.get(&bdf).is_some() {
            return Ok(Client {
                name: name.to_string(),
                bdf,
                kind: ClientKind::Pci,
            });
        }
        return Err(ResolveError::Unknown(name.to_string()));
    }
    let short = trimmed.strip_prefix("/dev/").unwrap_or(trimmed);
    if let Some(b) = sys.block.iter().find(|b| b.name == short) {
        return match b.bdfs.as_slice() {
            [one] => Ok(Client {
                name: name.to_string(),
                bdf: *one,
                kind: ClientKind::Block {
                    name: b.name.clone(),
                    multipath_head: b.multipath_head,
                },
            }),
            many => Err(ResolveError::Ambiguous {
                name: name.to_string(),
                n: many.len(),
                paths: many
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        };
    }
    if let Some(c) = sys.nvme.iter().find(|c| c.name == short) {
        return match c.bdf {
            Some(bdf) => Ok(Client {
                name: name.to_string(),
                bdf,
                kind: ClientKind::NvmeController {
                    name: c.name.clone(),
                },
            }),
            None => Err(ResolveError::NotPci {
                name: name.to_string(),
                why: format!(
                    "an NVMe controller over {}",
                    c.transport.as_deref().unwrap_or("a non-PCI transport")
                ),
            }),
        };
    }
    if let Some(r) = sys.rdma.iter().find(|r| r.name == short) {
        return match r.bdf {
            Some(bdf) => Ok(Client {
                name: name.to_string(),
                bdf,
                kind: ClientKind::Rdma {
                    name: r.name.clone(),
                },
            }),
            None => Err(ResolveError::NotPci {
                name: name.to_string(),
                why: "a software RDMA device (such as rxe or siw)".to_string(),
            }),
        };
    }
    Err(ResolveError::Unknown(name.to_string()))
}

/// The size in bytes of block device `name` (`nvme1n1`, a partition too) on the system
/// below `root`: its `sys/class/block/NAME/size`, which the kernel gives in 512-byte
/// sectors whatever the logical block size.
pub fn block_device_bytes(root: &std::path::Path, name: &str) -> Result<u64, String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!("'{name}' is not a block device name"));
    }
    let fs = crate::rootfs::RootFs::new(root);
    let sectors = fs
        .read_u64(format!("sys/class/block/{name}/size"))
        .map_err(|e| e.to_string())?;
    sectors
        .checked_mul(512)
        .ok_or_else(|| format!("{name}: {sectors} sectors overflow"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::read_system;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    #[test]
    fn resolves_every_kind_of_name() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/truth/s01_switch_cmbmix_fam15/root");
        let d = crate::system::tests_support::scratch_copy(&src);
        let root = d.path();
        let ctrl = "sys/devices/pci0000:00/0000:00:05.0/0000:06:00.0/nvme/nvme3";
        std::fs::create_dir_all(root.join(ctrl).join("nvme3n1")).unwrap();
        std::fs::create_dir_all(root.join("sys/class/nvme")).unwrap();
        std::fs::create_dir_all(root.join("sys/class/block")).unwrap();
        std::fs::create_dir_all(root.join("sys/class/infiniband/rxe0")).unwrap();
        std::fs::create_dir_all(root.join("sys/devices/virtual/infiniband/mlx5_0")).unwrap();
        symlink(
            format!("../../../{ctrl}"),
            root.join("sys/class/nvme/nvme3"),
        )
        .unwrap();
        symlink(
            format!("../../../{ctrl}/nvme3n1"),
            root.join("sys/class/block/nvme3n1"),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("sys/class/infiniband/mlx5_0")).unwrap();
        symlink(
            "../../../devices/pci0000:00/0000:00:05.0/0000:06:00.0",
            root.join("sys/class/infiniband/mlx5_0/device"),
        )
        .unwrap();
        let s = read_system(root).unwrap();
        let bdf: Bdf = "0000:06:00.0".parse().unwrap();
        for name in [
            "0000:06:00.0",
            "06:00.0",
            "nvme3n1",
            "/dev/nvme3n1",
            "nvme3",
            "mlx5_0",
        ] {
            let c = resolve_client(&s, name).unwrap();
            assert_eq!(c.bdf, bdf, "{name}");
        }
        let e = resolve_client(&s, "rxe0").unwrap_err();
        assert!(e.to_string().contains("software RDMA"), "{e}");
        let e = resolve_client(&s, "sda").unwrap_err();
        assert!(e.to_string().contains("'sda'"), "{e}");
        assert!(resolve_client(&s, "0000:09:00.0").is_err());
    }

    #[test]
    fn a_captured_disk_has_its_size_in_bytes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/truth/lab_default_k7.3/root");
        // The capture's nvme1n1 has 16384 sectors of 512 bytes.
        assert_eq!(block_device_bytes(&root, "nvme1n1"), Ok(16384 * 512));
        assert!(block_device_bytes(&root, "nvme9n9").is_err());
        assert!(block_device_bytes(&root, "../nvme1n1").is_err());
    }
}
