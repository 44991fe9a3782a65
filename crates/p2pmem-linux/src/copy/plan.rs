//! The arithmetic of a copy: which byte range, cut into which chunks, and which parts of
//! the destination were written. Pure: no I/O, so every rule is unit-tested.
//!
//! O_DIRECT moves whole logical blocks, so offsets and chunks are multiples of the larger
//! of the two devices' logical block sizes (both are powers of two, so the larger is also
//! their least common multiple). Only a source that ends mid-block (a regular file) may
//! leave a tail shorter than a block; it is copied separately with buffered I/O.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// The largest chunk: one O_DIRECT request stays far below the kernel's per-call limit
/// (`MAX_RW_COUNT`, just under 2 GiB) and an io_uring length (`u32`).
pub const MAX_CHUNK: u64 = 1 << 30;

/// Why a copy cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The chunk size is 0, too large, or not a multiple of the block size.
    #[error("chunk size {chunk} must be a non-zero multiple of {block} (the logical block size) of at most {MAX_CHUNK}")]
    BadChunk {
        /// Chunk size asked for.
        chunk: u64,
        /// Required multiple.
        block: u64,
    },
    /// The depth is 0 or too large.
    #[error("depth {depth} must be between 1 and {max}")]
    BadDepth {
        /// Depth asked for.
        depth: usize,
        /// The largest allowed.
        max: usize,
    },
    /// An offset is not block-aligned.
    #[error("{which} offset {offset} is not a multiple of {block} (the logical block size): O_DIRECT moves whole blocks")]
    Misaligned {
        /// `source` or `destination`.
        which: &'static str,
        /// The offset.
        offset: u64,
        /// The block size.
        block: u64,
    },
    /// The offset lies at or past the end of the source.
    #[error("nothing to copy: offset {offset} is at or past the end of the {size}-byte source")]
    Empty {
        /// The source offset.
        offset: u64,
        /// The source size.
        size: u64,
    },
    /// The range runs past the end of the source.
    #[error("the source has {size} bytes: {len} bytes at offset {offset} run past its end")]
    PastSource {
        /// The source offset.
        offset: u64,
        /// The length.
        len: u64,
        /// The source size.
        size: u64,
    },
    /// The range runs past the end of a block-device destination.
    #[error("the destination device has {size} bytes: {len} bytes at offset {offset} do not fit")]
    PastDestination {
        /// The destination offset.
        offset: u64,
        /// The length.
        len: u64,
        /// The destination size.
        size: u64,
    },
    /// The length ends mid-block somewhere other than the end of the source.
    #[error("length {len} is not a multiple of {block} (the logical block size); only a copy that runs to the end of the source may end mid-block")]
    UnalignedLength {
        /// The length.
        len: u64,
        /// The block size.
        block: u64,
    },
}

/// What the planner needs to know about one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    /// Size in bytes (file size, or device size).
    pub size: u64,
    /// Logical block size (O_DIRECT offset/length alignment).
    pub block: u64,
    /// A block device (fixed size) rather than a regular file (grows when written).
    pub fixed_size: bool,
}

/// A planned copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// First source byte.
    pub src_offset: u64,
    /// First destination byte.
    pub dst_offset: u64,
    /// Bytes to copy.
    pub len: u64,
    /// The block size every O_DIRECT request keeps.
    pub block: u64,
    /// Chunk size.
    pub chunk: u64,
    /// Bytes at the end shorter than a block, copied with buffered I/O (0 usually).
    pub tail: u64,
}

/// One chunk: `len` bytes from `src` to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Source offset.
    pub src: u64,
    /// Destination offset.
    pub dst: u64,
    /// Length (a multiple of the block size).
    pub len: u64,
}

impl Plan {
    /// Plans copying `len` bytes (default: to the end of the source) from `src_offset`
    /// to `dst_offset` in chunks of `chunk` bytes.
    pub fn new(
        src: Side,
        dst: Side,
        src_offset: u64,
        dst_offset: u64,
        len: Option<u64>,
        chunk: u64,
    ) -> Result<Self, PlanError> {
        let block = src.block.max(dst.block).max(1);
        if chunk == 0 || chunk > MAX_CHUNK || !chunk.is_multiple_of(block) {
            return Err(PlanError::BadChunk { chunk, block });
        }
        for (which, offset) in [("source", src_offset), ("destination", dst_offset)] {
            if !offset.is_multiple_of(block) {
                return Err(PlanError::Misaligned {
                    which,
                    offset,
                    block,
                });
            }
        }
        if src_offset >= src.size {
            return Err(PlanError::Empty {
                offset: src_offset,
                size: src.size,
            });
        }
        let len = len.unwrap_or(src.size - src_offset);
        let end = src_offset.checked_add(len);
        if len == 0 {
            return Err(PlanError::Empty {
                offset: src_offset,
                size: src.size,
            });
        }
        if end.is_none_or(|e| e > src.size) {
            return Err(PlanError::PastSource {
                offset: src_offset,
                len,
                size: src.size,
            });
        }
        if dst.fixed_size && dst_offset.checked_add(len).is_none_or(|e| e > dst.size) {
            return Err(PlanError::PastDestination {
                offset: dst_offset,
                len,
                size: dst.size,
            });
        }
        let tail = len % block;
        if tail != 0 && end != Some(src.size) {
            return Err(PlanError::UnalignedLength { len, block });
        }
        Ok(Self {
            src_offset,
            dst_offset,
            len,
            block,
            chunk,
            tail,
        })
    }

    /// Bytes moved with O_DIRECT (everything but the tail).
    pub fn direct_len(&self) -> u64 {
        self.len - self.tail
    }

    /// The O_DIRECT chunks in order; the last may be shorter than `chunk` (still whole
    /// blocks).
    pub fn chunks(&self) -> impl Iterator<Item = Chunk> + '_ {
        let direct = self.direct_len();
        (0..direct.div_ceil(self.chunk)).map(move |i| {
            let at = i * self.chunk;
            Chunk {
                src: self.src_offset + at,
                dst: self.dst_offset + at,
                len: self.chunk.min(direct - at),
            }
        })
    }

    /// How many O_DIRECT chunks [`Plan::chunks`] yields, at least 1 (a copy that is all
    /// tail still sizes its buffer by one chunk).
    pub fn chunk_count(&self) -> usize {
        usize::try_from(self.direct_len().div_ceil(self.chunk))
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// The destination range `[dst_offset, dst_offset + len)`.
    pub fn dst_range(&self) -> ByteRange {
        ByteRange {
            start: self.dst_offset,
            end: self.dst_offset + self.len,
        }
    }
}

pub use p2pmem_wire::copy::ByteRange;

/// The set of destination bytes known to be written: completed writes, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// start -> end, disjoint and non-touching.
    runs: BTreeMap<u64, u64>,
}

impl Written {
    /// Records `[start, start + len)` as written.
    pub fn insert(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        let mut start = start;
        let mut end = start.saturating_add(len);
        // Merge with a run that starts before and reaches `start`.
        if let Some((&s, &e)) = self.runs.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.runs.remove(&s);
            }
        }
        // Swallow every run that starts inside the new one (or touches its end).
        let inside: Vec<(u64, u64)> = self
            .runs
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in inside {
            end = end.max(e);
            self.runs.remove(&s);
        }
        self.runs.insert(start, end);
    }

    /// The written runs in order.
    pub fn ranges(&self) -> Vec<ByteRange> {
        self.runs
            .iter()
            .map(|(&start, &end)| ByteRange { start, end })
            .collect()
    }

    /// Total bytes written.
    pub fn bytes(&self) -> u64 {
        self.runs.iter().map(|(s, e)| e - s).sum()
    }
}

impl fmt::Display for Written {
    /// `nothing`, or `bytes [a, b)`, or `bytes [a, b), [c, d)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.runs.is_empty() {
            return f.write_str("nothing");
        }
        f.write_str("bytes ")?;
        for (i, r) in self.ranges().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64) -> Side {
        Side {
            size,
            block: 512,
            fixed_size: false,
        }
    }

    fn dev(size: u64, block: u64) -> Side {
        Side {
            size,
            block,
            fixed_size: true,
        }
    }

    #[test]
    fn whole_source_in_chunks_with_a_short_last_chunk() {
        let p = Plan::new(file(10 << 20), file(0), 0, 0, None, 4 << 20).unwrap();
        let c: Vec<Chunk> = p.chunks().collect();
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[2],
            Chunk {
                src: 8 << 20,
                dst: 8 << 20,
                len: 2 << 20
            }
        );
        assert_eq!(c.iter().map(|c| c.len).sum::<u64>(), 10 << 20);
        assert_eq!(p.tail, 0);
        assert_eq!(p.chunk_count(), 3);
    }

    #[test]
    fn offsets_and_lengths_shift_both_sides() {
        let p = Plan::new(file(1 << 20), file(0), 4096, 8192, Some(65536), 16384).unwrap();
        let c: Vec<Chunk> = p.chunks().collect();
        assert_eq!(c.len(), 4);
        assert_eq!(p.chunk_count(), 4);
        assert_eq!((c[0].src, c[0].dst), (4096, 8192));
        assert_eq!((c[3].src, c[3].dst), (4096 + 49152, 8192 + 49152));
        assert_eq!(
            p.dst_range(),
            ByteRange {
                start: 8192,
                end: 8192 + 65536
            }
        );
    }

    #[test]
    fn the_larger_block_size_rules() {
        let e = Plan::new(file(1 << 20), dev(1 << 20, 4096), 512, 0, None, 4096).unwrap_err();
        assert_eq!(
            e,
            PlanError::Misaligned {
                which: "source",
                offset: 512,
                block: 4096
            }
        );
        let e = Plan::new(file(1 << 20), dev(1 << 20, 4096), 0, 0, None, 2048).unwrap_err();
        assert!(matches!(e, PlanError::BadChunk { block: 4096, .. }));
        assert!(e.to_string().contains("2048"), "{e}");
    }

    #[test]
    fn ranges_must_fit() {
        assert!(matches!(
            Plan::new(file(4096), file(0), 4096, 0, None, 4096),
            Err(PlanError::Empty { .. })
        ));
        assert!(matches!(
            Plan::new(file(4096), file(0), 0, 0, Some(0), 4096),
            Err(PlanError::Empty { .. })
        ));
        assert!(matches!(
            Plan::new(file(4096), file(0), 0, 0, Some(8192), 4096),
            Err(PlanError::PastSource { .. })
        ));
        assert!(matches!(
            Plan::new(file(4096), file(0), 0, 0, Some(u64::MAX), 4096),
            Err(PlanError::PastSource { .. })
        ));
        assert!(matches!(
            Plan::new(file(1 << 20), dev(65536, 512), 0, 0, None, 4096),
            Err(PlanError::PastDestination { .. })
        ));
        // A regular-file destination grows.
        assert!(Plan::new(file(1 << 20), file(0), 0, 1 << 30, None, 4096).is_ok());
        assert_eq!(
            Plan::new(file(1 << 20), file(0), 0, 0, None, 0),
            Err(PlanError::BadChunk {
                chunk: 0,
                block: 512
            })
        );
    }

    #[test]
    fn only_the_end_of_the_source_may_be_mid_block() {
        let p = Plan::new(file(10_000), file(0), 0, 0, None, 4096).unwrap();
        assert_eq!((p.tail, p.direct_len()), (10_000 % 512, 9728));
        assert_eq!(p.chunks().map(|c| c.len).sum::<u64>(), 9728);
        let p = Plan::new(file(10_000), file(0), 512, 0, Some(10_000 - 512), 4096).unwrap();
        assert_eq!(p.tail, 10_000 % 512);
        assert_eq!(
            Plan::new(file(10_000), file(0), 0, 0, Some(1000), 4096),
            Err(PlanError::UnalignedLength {
                len: 1000,
                block: 512
            })
        );
        // A source smaller than one block is all tail.
        let p = Plan::new(file(100), file(0), 0, 0, None, 4096).unwrap();
        assert_eq!((p.tail, p.chunks().count()), (100, 0));
        assert_eq!(p.chunk_count(), 1, "one chunk's buffer all the same");
    }

    #[test]
    fn written_runs_merge_in_any_order() {
        let mut w = Written::default();
        assert_eq!(w.to_string(), "nothing");
        w.insert(8192, 4096);
        w.insert(0, 4096);
        assert_eq!(w.to_string(), "bytes [0, 4096), [8192, 12288)");
        w.insert(4096, 4096);
        assert_eq!(w.to_string(), "bytes [0, 12288)");
        w.insert(20000, 10);
        w.insert(16384, 100);
        w.insert(16000, 5000);
        assert_eq!(
            w.ranges(),
            vec![
                ByteRange {
                    start: 0,
                    end: 12288
                },
                ByteRange {
                    start: 16000,
                    end: 21000
                }
            ]
        );
        assert_eq!(w.bytes(), 12288 + 5000);
        w.insert(0, 0);
        assert_eq!(w.bytes(), 12288 + 5000);
    }

    #[test]
    fn overlap_is_strict() {
        let a = ByteRange { start: 0, end: 10 };
        assert!(a.overlaps(&ByteRange { start: 9, end: 20 }));
        assert!(!a.overlaps(&ByteRange { start: 10, end: 20 }));
        assert!(!a.overlaps(&ByteRange { start: 5, end: 5 }));
    }
}
