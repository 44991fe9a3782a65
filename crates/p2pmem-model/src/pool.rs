//! A first-fit sub-allocator over offsets in one region `[0, len)`.
//!
//! A program maps one contiguous p2pmem allocation (`p2pmem/allocate`) and carves
//! buffers out of it. This is the arithmetic half of that: it hands out `u64` offsets,
//! never touches memory, and behaves like the kernel's genalloc (first fit in address
//! order, sizes rounded up to a granule, freed neighbours merged). See `POOL-DESIGN.md`.

use serde::Serialize;
use std::collections::BTreeMap;

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

/// A first-fit allocator over `[0, len)`.
///
/// Invariants (checked by the property tests): free blocks and live allocations tile
/// `[0, len)` exactly; no two free blocks touch (they are merged); every start and length
/// is a multiple of the granule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    len: u64,
    granule: u64,
    /// Free blocks, start -> length, in address order.
    free: BTreeMap<u64, u64>,
    /// Live allocations, start -> length.
    live: BTreeMap<u64, u64>,
}

/// `x` rounded up to a multiple of the power of two `align`, or `None` on overflow.
fn align_up(x: u64, align: u64) -> Option<u64> {
    let mask = align - 1;
    x.checked_add(mask).map(|v| v & !mask)
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
        Ok(Self {
            len,
            granule,
            free: BTreeMap::from([(0, len)]),
            live: BTreeMap::new(),
        })
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
    /// `align` (a power of two; values below the granule mean the granule). Takes the
    /// lowest-addressed free block that fits, as genalloc's first fit does.
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
        let fit = self.free.iter().find_map(|(&start, &len)| {
            let at = align_up(start, align)?;
            let end = at.checked_add(size)?;
            (end <= start + len).then_some((start, len, at))
        });
        let Some((block, block_len, at)) = fit else {
            let stats = self.stats();
            return Err(PoolError::NoSpace {
                size,
                align,
                free: stats.free,
                largest_free: stats.largest_free,
            });
        };
        self.free.remove(&block);
        if at > block {
            self.free.insert(block, at - block);
        }
        let tail = at + size;
        let block_end = block + block_len;
        if tail < block_end {
            self.free.insert(tail, block_end - tail);
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
            return Err(match self.live.range(..offset).next_back() {
                Some((&start, &len)) if start + len > offset => {
                    PoolError::InsideAllocation { offset, start, len }
                }
                _ => PoolError::NotAllocated { offset },
            });
        };
        let mut start = offset;
        let mut merged = len;
        if let Some((&prev, &prev_len)) = self.free.range(..offset).next_back() {
            if prev + prev_len == offset {
                self.free.remove(&prev);
                start = prev;
                merged += prev_len;
            }
        }
        if let Some(next_len) = self.free.remove(&(offset + len)) {
            merged += next_len;
        }
        self.free.insert(start, merged);
        Ok(())
    }

    /// Free blocks in address order.
    pub fn free_blocks(&self) -> impl Iterator<Item = Range> + '_ {
        self.free.iter().map(|(&start, &len)| Range { start, len })
    }

    /// Live allocations in address order.
    pub fn allocations(&self) -> impl Iterator<Item = Range> + '_ {
        self.live.iter().map(|(&start, &len)| Range { start, len })
    }

    /// Totals, computed from the free list and the allocation table.
    pub fn stats(&self) -> PoolStats {
        let free = self.free.values().sum();
        PoolStats {
            total: self.len,
            free,
            used: self.live.values().sum(),
            largest_free: self.free.values().copied().max().unwrap_or(0),
            free_blocks: self.free.len(),
            allocations: self.live.len(),
        }
    }
}

#[cfg(test)]
mod tests;
