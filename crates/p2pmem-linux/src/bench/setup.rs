//! What a bench needs before its first request besides the buffers (placed as a copy's
//! are, `copy::placement`): the device opened (for writes after the in-use refusal,
//! never created), the region checked against its block size and size, and the data a
//! write bench writes.

use super::{params, shares, BenchError, BenchRequest, JobShare, Offsets, Region};
use crate::copy::{refuse_in_use, stat_error, Endpoint, MAX_CHUNK};
use crate::p2pbuf::{CpuAccessError, DmaBuffer};
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
            stat_error(&req.path, e).into()
        }
    })?;
    refuse_in_use(root, &req.path, &st, req.force, notes)?;
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

/// The region, checked against the device, and each job's share of it.
pub(super) fn region(
    req: &BenchRequest,
    ep: &Endpoint,
) -> Result<(Region, Vec<JobShare>), BenchError> {
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
    let requests = len / req.bs;
    if requests == 0 {
        return Err(params(format!(
            "the region {}..{} ({len} bytes) holds no whole {}-byte request",
            region.start, region.end, req.bs
        )));
    }
    let shares = shares(region, req.bs, req.jobs, req.rw.random(), req.seed).ok_or_else(|| {
        params(format!(
            "the region {}..{} holds {requests} whole {}-byte request(s), fewer than the {} \
             jobs: each sequential job walks its own slice of the region; lower --jobs or \
             --bs, or give a larger --size",
            region.start, region.end, req.bs, req.jobs
        ))
    })?;
    Ok((region, shares))
}

/// One job's offsets.
pub(super) fn offsets(req: &BenchRequest, share: JobShare) -> Result<Offsets, BenchError> {
    Offsets::new(share.region, req.bs, req.rw.random(), share.seed).ok_or_else(|| {
        params(format!(
            "the job's region {}..{} holds no whole {}-byte request",
            share.region.start, share.region.end, req.bs
        ))
    })
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
