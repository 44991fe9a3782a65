//! The guest's physical address map as the accounting needs it: which ranges are RAM
//! (the top-level `System RAM` lines of `/proc/iomem`) and which are PCI memory BARs
//! (each device's `resource` file in sysfs). A DMA address is split byte-exactly over
//! those ranges; bytes in neither are "unattributed", never guessed.

use std::collections::BTreeMap;

/// The `IORESOURCE_MEM` flag of a sysfs `resource` line.
const IORESOURCE_MEM: u64 = 0x200;

/// Resource lines 0..=5 are the six BARs (6 is the ROM, 7.. bridge windows).
const BAR_LINES: usize = 6;

/// An inclusive address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First address.
    pub start: u64,
    /// Last address (inclusive).
    pub end: u64,
}

impl Range {
    /// Bytes of `[addr, addr + len)` inside this range (no overflow: u128 arithmetic).
    pub fn overlap(&self, addr: u64, len: u64) -> u64 {
        let lo = u128::from(addr).max(u128::from(self.start));
        let hi = (u128::from(addr) + u128::from(len)).min(u128::from(self.end) + 1);
        u64::try_from(hi.saturating_sub(lo)).unwrap_or(u64::MAX)
    }
}

/// One memory BAR of one PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// The function's address, as the directory name in sysfs (`0000:03:00.0`).
    pub bdf: String,
    /// BAR index (0..=5).
    pub index: u8,
    /// Its address range.
    pub range: Range,
}

/// Guest RAM and PCI BARs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryMap {
    /// RAM ranges.
    pub ram: Vec<Range>,
    /// Memory BARs.
    pub bars: Vec<Bar>,
}

/// Where the bytes of one DMA went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    /// Bytes in RAM.
    pub ram: u64,
    /// Bytes in each device's BARs.
    pub bars: BTreeMap<String, u64>,
    /// Bytes in neither.
    pub other: u64,
}

impl MemoryMap {
    /// Builds the map from the text of the guest's `/proc/iomem` (read as root: the
    /// addresses are zero otherwise) and `(bdf, text of .../<bdf>/resource)` pairs.
    /// Malformed lines are skipped.
    pub fn from_guest<'a>(
        iomem: &str,
        resources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let ram = iomem
            .lines()
            .filter(|l| !l.starts_with(char::is_whitespace))
            .filter_map(|l| {
                let (range, name) = l.split_once(" : ")?;
                (name.trim() == "System RAM").then_some(())?;
                let (a, b) = range.trim().split_once('-')?;
                let start = u64::from_str_radix(a, 16).ok()?;
                let end = u64::from_str_radix(b, 16).ok()?;
                (start <= end).then_some(Range { start, end })
            })
            .collect();
        let mut bars = Vec::new();
        for (bdf, text) in resources {
            for (i, line) in text.lines().take(BAR_LINES).enumerate() {
                let mut w = line.split_whitespace().map(|t| {
                    t.strip_prefix("0x")
                        .and_then(|h| u64::from_str_radix(h, 16).ok())
                });
                let (Some(Some(start)), Some(Some(end)), Some(Some(flags))) =
                    (w.next(), w.next(), w.next())
                else {
                    continue;
                };
                if flags & IORESOURCE_MEM != 0 && start != 0 && start <= end {
                    bars.push(Bar {
                        bdf: bdf.to_string(),
                        index: u8::try_from(i).unwrap_or(u8::MAX),
                        range: Range { start, end },
                    });
                }
            }
        }
        Self { ram, bars }
    }

    /// Splits `[addr, addr + len)` over RAM, BARs and the rest. Overlapping ranges in a
    /// bad map are never counted twice: RAM first, then BARs in order, capped at `len`.
    pub fn split(&self, addr: u64, len: u64) -> Split {
        let mut left = len;
        let mut out = Split::default();
        for r in &self.ram {
            let n = r.overlap(addr, len).min(left);
            out.ram = out.ram.saturating_add(n);
            left -= n;
        }
        for b in &self.bars {
            let n = b.range.overlap(addr, len).min(left);
            if n > 0 {
                let d = out.bars.entry(b.bdf.clone()).or_default();
                *d = d.saturating_add(n);
                left -= n;
            }
        }
        out.other = left;
        out
    }

    /// The device whose BAR holds `addr`.
    pub fn bar_owner(&self, addr: u64) -> Option<&str> {
        self.bars
            .iter()
            .find(|b| b.range.overlap(addr, 1) == 1)
            .map(|b| b.bdf.as_str())
    }

    /// Is `addr` in RAM?
    pub fn is_ram(&self, addr: u64) -> bool {
        self.ram.iter().any(|r| r.overlap(addr, 1) == 1)
    }
}
