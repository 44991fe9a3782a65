//! NVMe disk images: sparse raw files (`File::set_len`, never `qemu-img`) whose first
//! [`PATTERN_MIB`] MiB carry a per-device pattern, so that a P2P read can be checked
//! against what the device really holds. Each 512-byte sector starts with
//! `p2pmem-lab serial=<serial> sector=<n>\n` and is filled with bytes derived from the
//! serial and the sector number.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{io_err, Result};
use crate::machine::topology::Topology;

/// Sector size of the pattern.
pub const SECTOR: usize = 512;

/// How much of each image is pre-filled.
pub const PATTERN_MIB: u64 = 2;

/// The pattern of sector `n` of the device with `serial`.
pub fn sector_pattern(serial: &str, n: u64) -> [u8; SECTOR] {
    let mut s = [0u8; SECTOR];
    let seed = serial.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    for (i, byte) in s.iter_mut().enumerate() {
        let x = seed
            .wrapping_add((n as u32).wrapping_mul(2_654_435_761))
            .wrapping_add(i as u32 * 31);
        *byte = (x >> 11) as u8;
    }
    let head = format!("p2pmem-lab serial={serial} sector={n}\n");
    let len = head.len().min(SECTOR);
    s[..len].copy_from_slice(&head.as_bytes()[..len]);
    s
}

/// Creates `<dir>/<serial>.img` of `mib` MiB with the pattern in its first MiBs.
pub fn create_image(dir: &Path, serial: &str, mib: u32) -> Result<PathBuf> {
    let path = dir.join(format!("{serial}.img"));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io_err("cannot create disk image", &path))?;
    let size = u64::from(mib) << 20;
    file.set_len(size)
        .map_err(io_err("cannot size disk image", &path))?;
    let sectors = (PATTERN_MIB << 20).min(size) / SECTOR as u64;
    let mut w = BufWriter::with_capacity(1 << 16, file);
    for n in 0..sectors {
        w.write_all(&sector_pattern(serial, n))
            .map_err(io_err("cannot write disk image", &path))?;
    }
    w.flush()
        .map_err(io_err("cannot write disk image", &path))?;
    Ok(path)
}

/// Creates the images of every NVMe device of `topo` in `dir`.
pub fn create_images(topo: &Topology, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    for n in topo.nvme.iter().filter(|n| !n.io_errors.is_empty()) {
        let path = blkdebug_config(dir, &n.serial);
        let rules: String = n.io_errors.iter().map(|e| e.blkdebug_rule()).collect();
        std::fs::write(&path, rules).map_err(io_err("cannot write", &path))?;
    }
    topo.nvme
        .iter()
        .map(|n| create_image(dir, &n.serial, n.disk_mib))
        .collect()
}

/// Where the blkdebug rules of the drive with `serial` go (next to its image).
pub fn blkdebug_config(dir: &Path, serial: &str) -> PathBuf {
    dir.join(format!("{serial}.blkdebug"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_names_device_and_sector_and_differs() {
        let a = sector_pattern("swA", 3);
        assert!(a.starts_with(b"p2pmem-lab serial=swA sector=3\n"));
        assert_ne!(a, sector_pattern("swB", 3));
        assert_ne!(a, sector_pattern("swA", 4));
        assert_eq!(a, sector_pattern("swA", 3));
    }

    #[test]
    fn image_is_sparse_sized_and_patterned() {
        let tmp = tempfile::tempdir().unwrap();
        let p = create_image(tmp.path(), "nvX", 8).unwrap();
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len(), 8 << 20);
        assert_eq!(&data[512 * 7..512 * 8], &sector_pattern("nvX", 7)[..]);
        let end = (PATTERN_MIB << 20) as usize;
        assert!(data[end..].iter().all(|&b| b == 0));
    }
}
