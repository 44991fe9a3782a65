//! Where each request of a bench goes: sequential offsets that wrap around at the end of
//! the region, or uniformly random block-size-aligned offsets inside it (as fio's
//! `randread`/`randwrite` with `blockalign=bs`, repeats allowed). Pure arithmetic.

use serde::Serialize;

/// The bytes a bench may touch: `[start, end)`, both multiples of the block size, at
/// least one request long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Region {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// The offset generator.
#[derive(Debug, Clone)]
pub struct Offsets {
    region: Region,
    bs: u64,
    /// Requests that fit the region.
    slots: u64,
    random: bool,
    next: u64,
    state: u64,
}

impl Offsets {
    /// Offsets of `bs`-byte requests in `region`, sequential or random (seeded, so runs
    /// repeat). `None` when not one request fits.
    pub fn new(region: Region, bs: u64, random: bool, seed: u64) -> Option<Self> {
        if bs == 0 || region.end <= region.start {
            return None;
        }
        let slots = region.len() / bs;
        if slots == 0 {
            return None;
        }
        Some(Self {
            region,
            bs,
            slots,
            random,
            next: 0,
            // splitmix64 never gets stuck; any seed works.
            state: seed,
        })
    }

    /// How many distinct request offsets there are.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    fn splitmix(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next request's offset.
    pub fn next_offset(&mut self) -> u64 {
        let slot = if self.random {
            // Multiply-shift: uniform enough for offsets, and no modulo bias worth
            // measuring at these sizes.
            ((u128::from(self.splitmix()) * u128::from(self.slots)) >> 64) as u64
        } else {
            let s = self.next;
            self.next = (self.next + 1) % self.slots;
            s
        };
        self.region.start + slot * self.bs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sequential_offsets_wrap_at_the_last_whole_request() {
        let r = Region {
            start: 4096,
            end: 4096 + 3 * 8192 + 4096,
        };
        let mut o = Offsets::new(r, 8192, false, 0).unwrap();
        assert_eq!(o.slots(), 3);
        let got: Vec<u64> = (0..7).map(|_| o.next_offset()).collect();
        assert_eq!(got, [4096, 12288, 20480, 4096, 12288, 20480, 4096]);
    }

    #[test]
    fn nothing_fits_is_none() {
        let r = Region {
            start: 0,
            end: 4096,
        };
        assert!(Offsets::new(r, 8192, false, 0).is_none());
        assert!(Offsets::new(r, 0, false, 0).is_none());
        assert!(Offsets::new(Region { start: 8, end: 8 }, 1, true, 0).is_none());
    }

    #[test]
    fn random_offsets_repeat_with_the_seed_and_cover_the_region() {
        let r = Region {
            start: 1 << 20,
            end: 2 << 20,
        };
        let mut a = Offsets::new(r, 4096, true, 7).unwrap();
        let mut b = Offsets::new(r, 4096, true, 7).unwrap();
        let xs: Vec<u64> = (0..4000).map(|_| a.next_offset()).collect();
        let ys: Vec<u64> = (0..4000).map(|_| b.next_offset()).collect();
        assert_eq!(xs, ys);
        let distinct: std::collections::BTreeSet<u64> = xs.iter().copied().collect();
        // 4000 draws from 256 slots: every slot is hit.
        assert_eq!(distinct.len(), 256);
        assert!(xs.windows(2).any(|w| w[1] < w[0]), "not sequential");
    }

    proptest! {
        #[test]
        fn every_offset_is_aligned_and_inside(
            start in 0u64..1 << 40, blocks in 1u64..10_000, extra in 0u64..4096,
            bs_shift in 9u32..21, random: bool, seed: u64,
        ) {
            let bs = 1u64 << bs_shift;
            let start = start / bs * bs;
            let r = Region { start, end: start + blocks * bs + extra };
            let mut o = Offsets::new(r, bs, random, seed).unwrap();
            for _ in 0..200 {
                let off = o.next_offset();
                prop_assert!(off >= r.start && off + bs <= r.end);
                prop_assert_eq!((off - r.start) % bs, 0);
            }
        }
    }
}
