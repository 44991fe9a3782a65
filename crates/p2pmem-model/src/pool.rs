//! A sub-allocator over offsets in one region `[0, len)`.
//!
//! A program maps one contiguous p2pmem allocation (`p2pmem/allocate`) and carves
//! buffers out of it. This is the arithmetic half of that: it hands out `u64` offsets and
//! never touches memory. Sizes are rounded up to a granule as in the kernel's genalloc,
//! freed neighbours are merged, and a request goes to the smallest size class of free
//! blocks that holds it (segregated free lists with a bitmap index, as in TLSF), so an
//! allocation and a free each cost a few hash-table steps however fragmented the pool
//! is. See `POOL-DESIGN.md`.

mod class;
mod hash;

use class::{class_ceil, class_of, FreeLists};
use hash::BuildOffsetHasher;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// A half-open run of offsets `[start, start + len)` inside a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Range {
    /// First offset.
    pub start: u64,
    /// Length in bytes (a multiple of the pool's granule).
    pub len: u64,
}

impl Range {
    /// One past the last offset. Exact for every range a pool hands out (they lie inside
    /// `[0, len)`); saturates for a hand-built range that would overflow.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// Totals of a pool, as `p2pmem/size` and `p2pmem/available` would show them for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Length of the region.
    pub total: u64,
    /// Bytes not allocated.
    pub free: u64,
    /// Bytes allocated (after rounding to the granule).
    pub used: u64,
    /// The largest contiguous free block: the biggest allocation that can succeed at the
    /// granule's alignment.
    pub largest_free: u64,
    /// Number of free blocks (1 for an empty pool, more when fragmented).
    pub free_blocks: usize,
    /// Number of live allocations.
    pub allocations: usize,
}

/// Why a pool cannot be made, or an allocation or free was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum PoolError {
    /// The granule (minimum alignment) is zero or not a power of two.
    #[error("pool granule {granule} is not a power of two")]
    BadGranule {
        /// What was given.
        granule: u64,
    },
    /// The region length is zero or not a multiple of the granule.
    #[error("pool length {len} is not a non-zero multiple of the granule {granule}")]
    BadLength {
        /// What was given.
        len: u64,
        /// The pool's granule.
        granule: u64,
    },
    /// A zero-byte allocation was asked for.
    #[error("cannot allocate 0 bytes")]
    ZeroSize,
    /// The requested alignment is not a power of two.
    #[error("alignment {align} is not a power of two")]
    BadAlign {
        /// What was given.
        align: u64,
    },
    /// Rounding the size up to the granule does not fit in a `u64`.
    #[error("size {size} overflows when rounded up to the granule {granule}")]
    SizeOverflow {
        /// What was asked for.
        size: u64,
        /// The pool's granule.
        granule: u64,
    },
    /// No free block can hold the request. With `free >= size` this is fragmentation.
    #[error(
        "no free block holds {size} bytes aligned to {align} \
         ({free} bytes free in total, largest free block {largest_free} bytes)"
    )]
    NoSpace {
        /// Size after rounding to the granule.
        size: u64,
        /// Alignment used (at least the granule).
        align: u64,
        /// Free bytes in the whole pool.
        free: u64,
        /// Largest contiguous free block.
        largest_free: u64,
    },
    /// The offset lies in free space: freed twice, or never allocated.
    #[error("offset {offset} is not a live allocation: it lies in free space (freed already, or never allocated)")]
    NotAllocated {
        /// The offset given to `free`.
        offset: u64,
    },
    /// The offset lies inside an allocation but is not its start.
    #[error("offset {offset} is inside the allocation at {start} (length {len}); free takes the start offset")]
    InsideAllocation {
        /// The offset given to `free`.
        offset: u64,
        /// Start of the allocation that holds it.
        start: u64,
        /// Length of that allocation.
        len: u64,
    },
    /// The offset is past the end of the pool.
    #[error("offset {offset} is outside the pool [0, {len})")]
    OutOfPool {
        /// The offset given to `free`.
        offset: u64,
        /// The pool's length.
        len: u64,
    },
}

/// How many free blocks a search may look at in classes where only some blocks fit (an
/// alignment above the granule, or a size between two class boundaries) before it takes
/// a block from a class where every block fits. A refusal always looks at them all.
const SCAN_BUDGET: usize = 32;

/// A free block's length and its slot in its class's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Free {
    len: u64,
    slot: usize,
}

/// A good-fit allocator over `[0, len)`: segregated free lists by size class, the
/// smallest class that holds the request wins (see `POOL-DESIGN.md`).
///
/// Invariants (checked by the property tests): free blocks and live allocations tile
/// `[0, len)` exactly; no two free blocks touch (they are merged); every start and length
/// is a multiple of the granule; every free block is in `free`, `free_ends` and, once, in
/// the list of its size class; a request is refused only when no free block holds it.
#[derive(Clone)]
pub struct Pool {
    len: u64,
    granule: u64,
    /// `granule.trailing_zeros()`: bytes to granules.
    shift: u32,
    /// Live allocations, start -> length.
    live: HashMap<u64, u64, BuildOffsetHasher>,
    /// Free blocks, start -> length and slot. Kept apart from `live` because it is small
    /// (free blocks are merged) and every free touches it three times: it stays in cache.
    free: HashMap<u64, Free, BuildOffsetHasher>,
    /// Free blocks, end -> start: the free block just below a freed allocation.
    free_ends: HashMap<u64, u64, BuildOffsetHasher>,
    /// Free blocks by size class.
    lists: FreeLists,
    /// Sum of the free blocks' lengths.
    free_bytes: u64,
}

/// `x` rounded up to a multiple of the power of two `align`, or `None` on overflow.
fn align_up(x: u64, align: u64) -> Option<u64> {
    let mask = align - 1;
    x.checked_add(mask).map(|v| v & !mask)
}

/// Where `size` bytes at an `align`ed offset go in the free block `[start, start + len)`,
/// if they fit.
fn fit(start: u64, len: u64, size: u64, align: u64) -> Option<u64> {
    let at = align_up(start, align)?;
    (at.checked_add(size)? <= start.saturating_add(len)).then_some(at)
}

impl Pool {
    /// A pool over `[0, len)` whose allocations are rounded to, and aligned to at least,
    /// `granule` bytes (genalloc's `1 << min_alloc_order`; the kernel's p2pmem pool uses
    /// PAGE_SIZE).
    pub fn new(len: u64, granule: u64) -> Result<Self, PoolError> {
        if !granule.is_power_of_two() {
            return Err(PoolError::BadGranule { granule });
        }
        if len == 0 || len & (granule - 1) != 0 {
            return Err(PoolError::BadLength { len, granule });
        }
        let shift = granule.trailing_zeros();
        let mut pool = Self {
            len,
            granule,
            shift,
            live: HashMap::default(),
            free: HashMap::default(),
            free_ends: HashMap::default(),
            lists: FreeLists::new(len >> shift),
            free_bytes: 0,
        };
        pool.put_free(0, len);
        Ok(pool)
    }

    /// Length of the region.
    pub fn capacity(&self) -> u64 {
        self.len
    }

    /// The granule sizes are rounded to.
    pub fn granule(&self) -> u64 {
        self.granule
    }

    /// Allocates `size` bytes (rounded up to the granule) at an offset aligned to
    /// `align` (a power of two; values below the granule mean the granule). Takes a free
    /// block from the smallest size class that holds the request, and carves the
    /// allocation from its lowest aligned offset. Refuses only when no free block holds
    /// the request at any aligned offset.
    pub fn alloc(&mut self, size: u64, align: u64) -> Result<Range, PoolError> {
        if size == 0 {
            return Err(PoolError::ZeroSize);
        }
        if !align.is_power_of_two() {
            return Err(PoolError::BadAlign { align });
        }
        let align = align.max(self.granule);
        let size = align_up(size, self.granule).ok_or(PoolError::SizeOverflow {
            size,
            granule: self.granule,
        })?;
        let Some((start, at)) = self.find(size, align) else {
            return Err(PoolError::NoSpace {
                size,
                align,
                free: self.free_bytes,
                largest_free: self.largest_free(),
            });
        };
        let block_len = self.take_free(start).map_or(0, |b| b.len);
        // `find` checked that [at, at + size) lies inside the block.
        let (end, block_end) = (at + size, start + block_len);
        if at > start {
            self.put_free(start, at - start);
        }
        if end < block_end {
            self.put_free(end, block_end - end);
        }
        self.live.insert(at, size);
        Ok(Range {
            start: at,
            len: size,
        })
    }

    /// Frees the allocation that starts at `offset`, merging it with free neighbours.
    pub fn free(&mut self, offset: u64) -> Result<(), PoolError> {
        if offset >= self.len {
            return Err(PoolError::OutOfPool {
                offset,
                len: self.len,
            });
        }
        let Some(len) = self.live.remove(&offset) else {
            return Err(self.not_live(offset));
        };
        let (mut start, mut merged) = (offset, len);
        if let Some(&below) = self.free_ends.get(&offset) {
            if let Some(b) = self.take_free(below) {
                (start, merged) = (below, merged + b.len);
            }
        }
        if let Some(b) = self.take_free(offset + len) {
            merged += b.len;
        }
        self.put_free(start, merged);
        Ok(())
    }

    /// Free blocks in address order.
    pub fn free_blocks(&self) -> impl Iterator<Item = Range> + '_ {
        self.walk().filter(|&(_, free)| free).map(|(r, _)| r)
    }

    /// Live allocations in address order.
    pub fn allocations(&self) -> impl Iterator<Item = Range> + '_ {
        self.walk().filter(|&(_, free)| !free).map(|(r, _)| r)
    }

    /// Totals. `free` is kept as a running sum, the rest is read off the tables; the
    /// property tests recompute every field from the blocks after each step.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            total: self.len,
            free: self.free_bytes,
            used: self.len - self.free_bytes,
            largest_free: self.largest_free(),
            free_blocks: self.free.len(),
            allocations: self.live.len(),
        }
    }

    /// The free block an allocation of `size` bytes at `align` goes in: its start and
    /// the aligned offset inside it.
    ///
    /// Classes below the request's own class hold only smaller blocks. From the class
    /// where every block holds the request wherever it starts (`sure`) up, any block
    /// will do, and the bitmap finds the first non-empty such class at once. Classes in
    /// between hold some blocks that fit and some that do not: they are searched first
    /// (smaller blocks first), up to `SCAN_BUDGET` blocks, and fully before a refusal.
    fn find(&self, size: u64, align: u64) -> Option<(u64, u64)> {
        let g = size >> self.shift;
        let lo = class_of(g);
        if lo >= self.lists.classes() || size > self.free_bytes {
            return None;
        }
        // A block of `g + slack` granules holds the request even at the worst start.
        let slack = (align - self.granule) >> self.shift;
        let sure = g
            .checked_add(slack)
            .map_or(usize::MAX, class_ceil)
            .min(self.lists.classes());
        let mut budget = SCAN_BUDGET;
        if lo < sure {
            if let Some(hit) = self.scan(lo, sure, size, align, &mut budget) {
                return Some(hit);
            }
        }
        if let Some(c) = self.lists.first_at_or_above(sure) {
            let start = *self.lists.list(c).last()?;
            return Some((start, align_up(start, align)?));
        }
        if budget == 0 {
            let mut unbounded = usize::MAX;
            return self.scan(lo, sure, size, align, &mut unbounded);
        }
        None
    }

    /// The first free block in classes `[from, to)`, lowest class first and the most
    /// recently freed first within a class, that holds `size` at `align`. Gives up
    /// (`None`, with `budget` at 0) after looking at `budget` blocks.
    fn scan(
        &self,
        from: usize,
        to: usize,
        size: u64,
        align: u64,
        budget: &mut usize,
    ) -> Option<(u64, u64)> {
        let mut c = from;
        while let Some(class) = self.lists.first_at_or_above(c).filter(|&k| k < to) {
            for &start in self.lists.list(class).iter().rev() {
                if *budget == 0 {
                    return None;
                }
                *budget -= 1;
                let len = self.free.get(&start).map_or(0, |b| b.len);
                if let Some(at) = fit(start, len, size, align) {
                    return Some((start, at));
                }
            }
            c = class + 1;
        }
        None
    }

    /// Records `[start, start + len)` as free and lists it in its class.
    fn put_free(&mut self, start: u64, len: u64) {
        let slot = self.lists.push(class_of(len >> self.shift), start);
        self.free.insert(start, Free { len, slot });
        self.free_ends.insert(start + len, start);
        self.free_bytes += len;
    }

    /// Takes the free block at `start` out of every table, if there is one.
    fn take_free(&mut self, start: u64) -> Option<Free> {
        let b = self.free.remove(&start)?;
        // The last block of the class moves into the slot: tell it.
        if let Some(moved) = self.lists.remove(class_of(b.len >> self.shift), b.slot) {
            if let Some(m) = self.free.get_mut(&moved) {
                m.slot = b.slot;
            }
        }
        self.free_ends.remove(&(start + b.len));
        self.free_bytes -= b.len;
        Some(b)
    }

    /// The largest free block: the longest in the highest non-empty class.
    fn largest_free(&self) -> u64 {
        self.lists.highest().map_or(0, |c| {
            self.lists
                .list(c)
                .iter()
                .filter_map(|s| self.free.get(s))
                .map(|b| b.len)
                .max()
                .unwrap_or(0)
        })
    }

    /// Why `free(offset)` is refused for an offset in the pool that starts no live
    /// allocation. Looks at every allocation (the table is not ordered), which is fine on
    /// this error path.
    fn not_live(&self, offset: u64) -> PoolError {
        let holder = self
            .live
            .iter()
            .find(|&(&start, &len)| start < offset && offset - start < len);
        match holder {
            Some((&start, &len)) => PoolError::InsideAllocation { offset, start, len },
            None => PoolError::NotAllocated { offset },
        }
    }

    /// Every block in address order, following lengths from offset 0, with whether it
    /// is free.
    fn walk(&self) -> impl Iterator<Item = (Range, bool)> + '_ {
        let block = move |start: u64| {
            let (len, free) = match self.live.get(&start) {
                Some(&len) => (len, false),
                None => (self.free.get(&start)?.len, true),
            };
            Some((Range { start, len }, free))
        };
        std::iter::successors(block(0), move |(r, _)| {
            block(r.start.checked_add(r.len).filter(|_| r.len > 0)?)
        })
    }
}

/// Two pools are equal when they have the same geometry and the same blocks, free and
/// live; the order within a class list (a matter of history) does not count.
impl PartialEq for Pool {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self.granule == other.granule
            && self.live == other.live
            && self.free.len() == other.free.len()
            && self
                .free
                .iter()
                .all(|(s, b)| other.free.get(s).is_some_and(|o| o.len == b.len))
    }
}

impl Eq for Pool {}

/// The geometry, then the free blocks and the allocations as `start: len` in address
/// order (not the tables' layout).
impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges = |free: bool| {
            self.walk()
                .filter(|&(_, f)| f == free)
                .map(|(r, _)| (r.start, r.len))
                .collect::<BTreeMap<u64, u64>>()
        };
        f.debug_struct("Pool")
            .field("len", &self.len)
            .field("granule", &self.granule)
            .field("free", &ranges(true))
            .field("live", &ranges(false))
            .finish()
    }
}

#[cfg(test)]
mod tests;
