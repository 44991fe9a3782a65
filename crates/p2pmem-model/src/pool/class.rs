//! Size classes and the segregated free lists indexed by them.
//!
//! A free block of `g` granules belongs to one class. Below 128 granules every size has
//! its own class; above, each power of two is cut into 64 classes of equal width (so a
//! class spans under 1/64 of its sizes), as in TLSF. A two-level bitmap says which classes
//! hold a block, so the first non-empty class at or above a given one is two
//! `trailing_zeros` away.

/// Bits of subdivision per power of two: 64 classes per octave.
const SUB_BITS: u32 = 6;

/// The class of a block of `g` granules (`g >= 1`; 0 is treated as 1).
pub(super) fn class_of(g: u64) -> usize {
    let g = g.max(1);
    let fl = g.ilog2();
    if fl <= SUB_BITS {
        // Exact: one class per size below 2^(SUB_BITS + 1).
        g as usize
    } else {
        let shift = fl - SUB_BITS;
        // (g >> shift) is in [2^SUB_BITS, 2^(SUB_BITS + 1)): the position in the octave.
        ((shift as usize + 1) << SUB_BITS) + (g >> shift) as usize - (1 << SUB_BITS)
    }
}

/// The first class all of whose blocks hold at least `g` granules: `class_of(g)` when `g`
/// is the smallest size of its class, else the class after it.
pub(super) fn class_ceil(g: u64) -> usize {
    let g = g.max(1);
    let fl = g.ilog2();
    let c = class_of(g);
    if fl > SUB_BITS && g & ((1 << (fl - SUB_BITS)) - 1) != 0 {
        c + 1
    } else {
        c
    }
}

/// The smallest size (in granules) of class `c`; `u64::MAX` past the last class.
#[cfg(test)]
pub(super) fn class_floor(c: usize) -> u64 {
    let sub = 1usize << SUB_BITS;
    if c < 2 * sub {
        return c as u64;
    }
    let shift = (c >> SUB_BITS) - 1;
    let mantissa = (sub + c % sub) as u64;
    if shift + SUB_BITS as usize + 1 > 64 {
        return u64::MAX;
    }
    mantissa << shift
}

/// Per class, the starts of its free blocks, and the bitmap of non-empty classes.
///
/// A block's position in its class's list is its *slot*; the pool keeps each free block's
/// slot so that it can be taken out in O(1) (swap with the last, which changes that one's
/// slot: `remove` says which start moved).
#[derive(Debug, Clone)]
pub(super) struct FreeLists {
    lists: Vec<Vec<u64>>,
    /// Bit `c % 64` of `words[c / 64]`: class `c` is non-empty.
    words: Vec<u64>,
    /// Bit `w` of `top`: `words[w]` is non-zero. There are at most 3776 classes (blocks
    /// of up to `u64::MAX` granules), so 59 words and one `top` suffice.
    top: u64,
    /// Blocks in all lists.
    count: usize,
}

impl FreeLists {
    /// Lists for blocks of up to `max_granules` granules.
    pub(super) fn new(max_granules: u64) -> Self {
        let classes = class_of(max_granules) + 1;
        Self {
            lists: vec![Vec::new(); classes],
            words: vec![0; classes.div_ceil(64)],
            top: 0,
            count: 0,
        }
    }

    /// Number of classes (one past the highest).
    pub(super) fn classes(&self) -> usize {
        self.lists.len()
    }

    /// Number of free blocks.
    #[cfg(test)]
    pub(super) fn count(&self) -> usize {
        self.count
    }

    /// The starts in class `c` (empty past the table).
    pub(super) fn list(&self, c: usize) -> &[u64] {
        self.lists.get(c).map_or(&[], Vec::as_slice)
    }

    /// Adds `start` to class `c` and returns its slot. The table grows if `c` is past it
    /// (the pool never needs that: it sized the table for its own length).
    pub(super) fn push(&mut self, c: usize, start: u64) -> usize {
        if c >= self.lists.len() {
            self.lists.resize(c + 1, Vec::new());
            self.words.resize((c + 1).div_ceil(64), 0);
        }
        let slot = self.lists.get(c).map_or(0, Vec::len);
        if let Some(list) = self.lists.get_mut(c) {
            list.push(start);
        }
        if let Some(w) = self.words.get_mut(c / 64) {
            *w |= 1 << (c % 64);
        }
        self.top |= 1u64.checked_shl((c / 64) as u32).unwrap_or(0);
        self.count += 1;
        slot
    }

    /// Takes the block at `slot` out of class `c`. The last block of the class moves into
    /// the slot: its start is returned so the pool can record its new slot.
    pub(super) fn remove(&mut self, c: usize, slot: usize) -> Option<u64> {
        let list = self.lists.get_mut(c)?;
        if slot >= list.len() {
            return None;
        }
        list.swap_remove(slot);
        let moved = list.get(slot).copied();
        if list.is_empty() {
            if let Some(w) = self.words.get_mut(c / 64) {
                *w &= !(1 << (c % 64));
                if *w == 0 {
                    self.top &= !1u64.checked_shl((c / 64) as u32).unwrap_or(0);
                }
            }
        }
        self.count -= 1;
        moved
    }

    /// The first non-empty class at or above `c`.
    pub(super) fn first_at_or_above(&self, c: usize) -> Option<usize> {
        let w = c / 64;
        let here = self.words.get(w)? & (!0u64 << (c % 64));
        if here != 0 {
            return Some(w * 64 + here.trailing_zeros() as usize);
        }
        let above = self.top & (!0u64).checked_shl(w as u32 + 1).unwrap_or(0);
        if above == 0 {
            return None;
        }
        let w = above.trailing_zeros() as usize;
        Some(w * 64 + self.words.get(w)?.trailing_zeros() as usize)
    }

    /// The highest non-empty class.
    pub(super) fn highest(&self) -> Option<usize> {
        let w = self.top.checked_ilog2()? as usize;
        Some(w * 64 + self.words.get(w)?.checked_ilog2()? as usize)
    }

    /// Every inconsistency between the lists and the bitmaps (for the property tests).
    #[cfg(test)]
    pub(super) fn check(&self) -> Result<(), String> {
        let mut count = 0;
        for (c, list) in self.lists.iter().enumerate() {
            count += list.len();
            let bit = self
                .words
                .get(c / 64)
                .is_some_and(|w| w >> (c % 64) & 1 == 1);
            if bit == list.is_empty() {
                return Err(format!("class {c}: bit {bit}, {} blocks", list.len()));
            }
        }
        for (w, &word) in self.words.iter().enumerate() {
            if (self.top >> w & 1 == 1) != (word != 0) {
                return Err(format!("top bit {w} disagrees with word {word:#x}"));
            }
        }
        if count != self.count {
            return Err(format!("count {} but {count} blocks listed", self.count));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Classes for sizes up to `u64::MAX` granules.
    const ALL: usize = 3776;

    #[test]
    fn exact_below_128_then_64_per_octave() {
        assert_eq!(class_of(0), 1);
        for g in 1..128 {
            assert_eq!((class_of(g), class_ceil(g)), (g as usize, g as usize));
        }
        // 128..256 in classes two sizes wide, 256..512 four wide.
        assert_eq!(
            [class_of(128), class_of(129), class_of(130)],
            [128, 128, 129]
        );
        assert_eq!(
            [class_ceil(128), class_ceil(129), class_ceil(130)],
            [128, 129, 129]
        );
        assert_eq!(
            [class_of(256), class_of(259), class_of(260)],
            [192, 192, 193]
        );
        assert_eq!(class_ceil(257), 193);
        assert_eq!(class_of(u64::MAX), ALL - 1);
        assert_eq!(class_floor(ALL - 1), 127 << 57);
        assert_eq!(class_floor(ALL), u64::MAX);
        assert_eq!(class_ceil(u64::MAX), ALL);
        // One `top` word covers every class.
        assert!(ALL.div_ceil(64) <= 64);
    }

    #[test]
    fn a_push_past_the_table_grows_it() {
        let mut l = FreeLists::new(4);
        assert_eq!(l.classes(), 5);
        assert_eq!(l.push(700, 9), 0);
        assert_eq!(l.classes(), 701);
        assert_eq!(l.first_at_or_above(5), Some(700));
        assert_eq!(l.highest(), Some(700));
        assert_eq!(l.remove(700, 0), None);
        assert_eq!((l.first_at_or_above(0), l.highest()), (None, None));
        assert_eq!(l.remove(700, 0), None);
        assert_eq!(l.remove(9999, 0), None);
        assert_eq!(l.check(), Ok(()));
    }

    /// Sizes spread over every octave.
    fn granules() -> impl Strategy<Value = u64> {
        (0u32..64, any::<u64>()).prop_map(|(e, m)| (1u64 << e) | (m & ((1u64 << e) - 1)))
    }

    proptest! {
        // As in the pool's tests: few cases under Miri, and no failure files (Miri
        // isolates the file system).
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 16 } else { 256 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn classes_partition_the_sizes_finely(g in granules()) {
            let c = class_of(g);
            prop_assert!(class_floor(c) <= g);
            if c + 1 < ALL {
                prop_assert!(g < class_floor(c + 1));
                // A class spans under 1/64 of its sizes.
                prop_assert!(class_floor(c + 1) - class_floor(c) <= class_floor(c) / 64 + 1);
            }
            // `class_ceil`: the first class whose smallest block holds `g`.
            let up = class_ceil(g);
            prop_assert!(class_floor(up) >= g);
            prop_assert!(class_floor(up - 1) < g);
            // Monotone.
            prop_assert!(class_of(g - 1) <= c);
        }

        #[test]
        fn free_lists_match_a_model(
            ops in prop::collection::vec((0usize..8, any::<bool>(), any::<prop::sample::Index>()), 0..300),
        ) {
            // Classes at and around word boundaries, and the last one.
            let mut l = FreeLists::new(1 << 12);
            let classes = [0, 1, 63, 64, 65, 127, 128, l.classes() - 1];
            let mut model: Vec<Vec<u64>> = vec![Vec::new(); l.classes()];
            for (n, (k, add, i)) in ops.into_iter().enumerate() {
                let c = classes[k];
                if add || model[c].is_empty() {
                    prop_assert_eq!(l.push(c, n as u64), model[c].len());
                    model[c].push(n as u64);
                } else {
                    let slot = i.index(model[c].len());
                    model[c].swap_remove(slot);
                    prop_assert_eq!(l.remove(c, slot), model[c].get(slot).copied());
                }
                l.check().map_err(TestCaseError::fail)?;
                let first = |from: usize| (from..model.len()).find(|&k| !model[k].is_empty());
                for from in [0, c, c + 1, 64, l.classes() - 1, l.classes()] {
                    prop_assert_eq!(l.first_at_or_above(from), first(from));
                }
                prop_assert_eq!(l.highest(), (0..model.len()).rev().find(|&k| !model[k].is_empty()));
                for &k in &classes {
                    prop_assert_eq!(l.list(k), model[k].as_slice());
                }
                prop_assert_eq!(l.count(), model.iter().map(Vec::len).sum::<usize>());
            }
        }
    }
}
