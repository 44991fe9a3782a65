//! `--verify`: read the source range and the destination range again into host memory
//! with O_DIRECT (so the destination is read from the device, not the page cache), hash
//! each chunk with BLAKE3 and compare. Device memory is never read by the CPU: a P2P
//! copy's buffer plays no part here.

use super::plan::ByteRange;
use crate::dio::{Access, DioError, DirectFile};
use crate::p2pbuf::{HostBuffer, HostBufferError, Pages};
use crate::sys;
use serde::Serialize;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Bytes compared.
    pub bytes: u64,
    /// Chunks hashed on each side.
    pub chunks: u64,
    /// Hash chunk size.
    pub chunk: u64,
    /// Destination ranges whose hash differs from the source's.
    pub mismatches: Vec<ByteRange>,
    /// Hash function.
    pub hash: &'static str,
}

impl VerifyReport {
    /// No mismatch.
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Why a verification could not finish.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// O_DIRECT open or read failed.
    #[error(transparent)]
    Dio(#[from] DioError),
    /// The host buffers could not be allocated.
    #[error(transparent)]
    Buffer(#[from] HostBufferError),
    /// A buffered read of the sub-block tail failed.
    #[error("buffered read of {len} bytes at offset {offset} of {path} failed ({errno})")]
    Tail {
        /// The path.
        path: PathBuf,
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Errno name.
        errno: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// Ctrl-C.
    #[error("verification interrupted after {0} bytes")]
    Interrupted(u64),
}

/// Reads up to `len` bytes at `off` into `buf[..len]`, following short reads of whole
/// blocks; returns the bytes read (fewer at end of file).
fn read_full(
    f: &DirectFile,
    buf: &mut HostBuffer,
    len: usize,
    off: u64,
    block: u64,
) -> Result<usize, DioError> {
    let mut got = 0;
    while got < len {
        let n = f.pread_into(buf, got, len - got, off + got as u64)?;
        got += n;
        if n == 0 || !(n as u64).is_multiple_of(block) {
            // End of file (a file that ends mid-block included).
            break;
        }
    }
    Ok(got)
}

fn tail_bytes(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, VerifyError> {
    let err = |source: std::io::Error| VerifyError::Tail {
        path: path.to_path_buf(),
        offset,
        len,
        errno: sys::io_error_label(&source),
        source,
    };
    let f = std::fs::File::open(path).map_err(err)?;
    let mut v = vec![0u8; usize::try_from(len).unwrap_or(0)];
    let mut got = 0;
    while got < v.len() {
        match f.read_at(&mut v[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
    v.truncate(got);
    Ok(v)
}

/// Compares `len` bytes of `src` at `src_off` with `dst` at `dst_off`, chunk by chunk
/// (`chunk` is rounded up to the block size). The whole blocks are read with O_DIRECT;
/// a sub-block tail at the end (a source file that ends mid-block) with buffered reads.
pub fn verify_ranges(
    src: &Path,
    src_off: u64,
    dst: &Path,
    dst_off: u64,
    len: u64,
    chunk: u64,
    cancel: &AtomicBool,
) -> Result<VerifyReport, VerifyError> {
    let s = DirectFile::open(src, Access::Read)?;
    let d = DirectFile::open(dst, Access::Read)?;
    let block = u64::from(s.logical_block_size().max(d.logical_block_size()).max(512));
    let chunk = chunk.max(block).div_ceil(block) * block;
    let chunk_len = usize::try_from(chunk).unwrap_or(usize::MAX);
    let mut sb = HostBuffer::with_pages(chunk_len, Pages::Huge)?;
    let mut db = HostBuffer::with_pages(chunk_len, Pages::Huge)?;
    // O_DIRECT needs whole blocks; a tail at the end of the source is read buffered.
    let tail = if src_off.is_multiple_of(block) && dst_off.is_multiple_of(block) {
        len % block
    } else {
        len
    };
    let direct = len - tail;
    let mut report = VerifyReport {
        bytes: len,
        chunks: 0,
        chunk,
        mismatches: Vec::new(),
        hash: "blake3",
    };
    let mut at = 0;
    while at < direct {
        if cancel.load(Ordering::Relaxed) {
            return Err(VerifyError::Interrupted(at));
        }
        let n = chunk.min(direct - at);
        let nz = usize::try_from(n).unwrap_or(chunk_len);
        let got_s = read_full(&s, &mut sb, nz, src_off + at, block)?;
        let got_d = read_full(&d, &mut db, nz, dst_off + at, block)?;
        let hs = blake3::hash(&sb.as_slice()[..got_s]);
        let hd = blake3::hash(&db.as_slice()[..got_d]);
        if got_s != nz || hs != hd {
            report.mismatches.push(ByteRange {
                start: dst_off + at,
                end: dst_off + at + n,
            });
        }
        report.chunks += 1;
        at += n;
    }
    if tail > 0 {
        let a = tail_bytes(src, src_off + direct, tail)?;
        let b = tail_bytes(dst, dst_off + direct, tail)?;
        if a.len() as u64 != tail || blake3::hash(&a) != blake3::hash(&b) {
            report.mismatches.push(ByteRange {
                start: dst_off + direct,
                end: dst_off + len,
            });
        }
        report.chunks += 1;
    }
    // Neighbouring bad chunks read better as one range.
    report.mismatches.dedup_by(|b, a| {
        if a.end == b.start {
            a.end = b.end;
            true
        } else {
            false
        }
    });
    Ok(report)
}
