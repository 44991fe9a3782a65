//! Everything a bench needs before its first request: the device opened (for writes
//! after the in-use refusal, never created), the region checked against its block size
//! and size, and the buffers mapped (p2pmem, halving the depth while the pool is short,
//! or host memory) behind the engine.

use super::{params, BenchError, BenchRequest, Offsets, Region};
use crate::copy::{block_device_in_use, CopyError, Endpoint, MAX_CHUNK};
use crate::p2pbuf::{CpuAccessError, DmaBuffer, HostBuffer, P2pBuffer};
use crate::sys;
use p2pmem_model::Bdf;
use rustix::fs::FileType;
use rustix::io::Errno;
use std::path::Path;

/// Opens the device for reading, or for writing after the in-use refusal.
pub(super) fn open(
    root: &Path,
    req: &BenchRequest,
    notes: &mut Vec<String>,
) -> Result<Endpoint, BenchError> {
    if !req.rw.writes() {
        return Ok(Endpoint::open_source(&req.path)?);
    }
    let st = rustix::fs::stat(&req.path).map_err(|e| {
        if e == Errno::NOENT {
            BenchError::Missing {
                path: req.path.clone(),
            }
        } else {
            CopyError::Stat {
                path: req.path.clone(),
                errno: sys::errno_label(e.raw_os_error()),
                source: e.into(),
            }
            .into()
        }
    })?;
    if FileType::from_raw_mode(st.st_mode) == FileType::BlockDevice {
        let dev = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
        let used = block_device_in_use(root, dev);
        if !used.is_free() {
            if !req.force {
                return Err(CopyError::InUse {
                    path: req.path.clone(),
                    why: used.describe(),
                }
                .into());
            }
            notes.push(format!(
                "--force: writing to {} although it is {}",
                req.path.display(),
                used.describe()
            ));
        }
    }
    let ep = Endpoint::open_destination(&req.path, !req.force)?;
    if ep.created() {
        // It vanished between the stat and the open; do not leave an empty file behind.
        let _ = std::fs::remove_file(&req.path);
        return Err(BenchError::Missing {
            path: req.path.clone(),
        });
    }
    Ok(ep)
}

/// The region and its offsets, checked against the device.
pub(super) fn region(req: &BenchRequest, ep: &Endpoint) -> Result<(Region, Offsets), BenchError> {
    let block = u64::from(ep.alignment().offset_align.max(1));
    if req.bs == 0 || req.bs > MAX_CHUNK || !req.bs.is_multiple_of(block) {
        return Err(params(format!(
            "block size {} must be a non-zero multiple of {block} (the logical block size of {}) \
             of at most {MAX_CHUNK}",
            req.bs,
            req.path.display()
        )));
    }
    if !req.offset.is_multiple_of(block) {
        return Err(params(format!(
            "offset {} is not a multiple of {block} (the logical block size): O_DIRECT moves whole blocks",
            req.offset
        )));
    }
    let size = ep.size();
    if req.offset >= size {
        return Err(params(format!(
            "offset {} is at or past the end of {} ({size} bytes)",
            req.offset,
            req.path.display()
        )));
    }
    let len = req.size.unwrap_or(size - req.offset);
    let end = req
        .offset
        .checked_add(len)
        .filter(|&e| e <= size)
        .ok_or_else(|| {
            params(format!(
                "{} has {size} bytes: {len} bytes at offset {} run past its end",
                req.path.display(),
                req.offset
            ))
        })?;
    let region = Region {
        start: req.offset,
        end,
    };
    let offsets = Offsets::new(region, req.bs, req.rw.random(), req.seed).ok_or_else(|| {
        params(format!(
            "the region {}..{} ({len} bytes) holds no whole {}-byte request",
            region.start, region.end, req.bs
        ))
    })?;
    Ok((region, offsets))
}

/// Maps `depth * bs` bytes of `provider`'s p2pmem, halving the depth while the pool
/// cannot supply one contiguous piece (ENOMEM).
pub(super) fn map_p2p(
    root: &Path,
    provider: Bdf,
    bs: u64,
    depth: usize,
    notes: &mut Vec<String>,
) -> Result<(P2pBuffer, usize), CopyError> {
    let mut d = depth;
    loop {
        let len = usize::try_from(bs.saturating_mul(d as u64)).unwrap_or(usize::MAX);
        match P2pBuffer::map(root, provider, len) {
            Ok(b) => {
                if d != depth {
                    notes.push(format!(
                        "the p2pmem pool of {provider} could not supply {depth} buffers in one \
                         piece; using depth {d}"
                    ));
                }
                return Ok((b, d));
            }
            Err(e) if e.mmap_errno() == Some(Errno::NOMEM.raw_os_error()) && d > 1 => d /= 2,
            Err(e) => return Err(e.into()),
        }
    }
}

pub(super) fn host_buffer(bs: u64, depth: usize) -> Result<HostBuffer, CopyError> {
    let len = usize::try_from(bs.saturating_mul(depth as u64)).unwrap_or(usize::MAX);
    Ok(HostBuffer::new(len)?)
}

/// Fills the buffer with pseudo-random bytes (what a write bench writes), a MiB at a
/// time. For p2pmem these are volatile CPU stores to device memory: slow, done once (and
/// an error when the provider went away: its pages raise SIGBUS).
pub(super) fn fill_random(buf: &mut dyn DmaBuffer, seed: u64) -> Result<(), CpuAccessError> {
    let mut x = seed | 1;
    let mut piece = vec![0u8; (1 << 20).min(buf.len())];
    let mut off = 0;
    while off < buf.len() {
        for b in piece.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
        let n = piece.len().min(buf.len() - off);
        buf.copy_from_host(off, &piece[..n])?;
        off += n;
    }
    Ok(())
}

pub(super) use crate::copy::open_queue;
