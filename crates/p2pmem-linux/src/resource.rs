//! A function's `resource` file: one line per BAR, `start end flags` in hex.

use crate::rootfs::RootFs;
use crate::system::PCI_DEVICES;
use p2pmem_model::cmb::BarInfo;
use p2pmem_model::limits;
use p2pmem_model::Bdf;

/// `IORESOURCE_MEM` in the flags column.
pub const IORESOURCE_MEM: u64 = 0x0000_0200;

/// Parse the text of a `resource` file; malformed lines become empty BARs.
pub fn parse_resource(bytes: &[u8]) -> Vec<BarInfo> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|line| {
            let nums: Vec<u64> = line
                .split_whitespace()
                .filter_map(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).ok())
                .collect();
            match nums.as_slice() {
                [start, end, flags] if *end > *start || (*end == *start && *end != 0) => BarInfo {
                    start: *start,
                    len: end - start + 1,
                    is_mem: flags & IORESOURCE_MEM != 0,
                },
                _ => BarInfo {
                    start: 0,
                    len: 0,
                    is_mem: false,
                },
            }
        })
        .collect()
}

/// The BARs of `bdf` below `root`, or empty when unreadable.
pub fn read_bars(root: &RootFs, bdf: Bdf) -> Vec<BarInfo> {
    root.read(format!("{PCI_DEVICES}/{bdf}/resource"), limits::SYSFS_ATTR)
        .map(|b| parse_resource(&b))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_s01_nvme_resource() {
        let root = RootFs::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../fixtures/truth/s01_switch_cmbmix_fam15/root"),
        );
        let bars = read_bars(&root, "0000:03:00.0".parse().unwrap());
        assert!(bars.len() >= 6);
        assert!(bars[0].is_mem && bars[0].len >= 0x4000, "{:?}", bars[0]);
        let cmb = bars[2];
        assert!(cmb.is_mem && cmb.len == 16 << 20, "{cmb:?}");
        assert!(parse_resource(b"garbage\n0x0 0x0 0x0\n")
            .iter()
            .all(|b| b.len == 0));
    }
}
