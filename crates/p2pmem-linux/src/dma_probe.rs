//! The ground-truth method of `shared/truth/README.md` as a function: ask the running
//! kernel whether a p2pmem provider and an NVMe client can do peer-to-peer DMA by doing
//! it, and record the kernel's answers and log lines in the shape of a `truth.json` pair.
//!
//! Steps: `klogctl(CLEAR)`; mmap 1 MiB of the provider's `p2pmem/allocate` and fill it
//! with 0xA5; O_DIRECT `pread` 64 KiB of the client block device at offset 0 into it;
//! O_DIRECT `pwrite` 64 KiB from it to offset 1 MiB (a scratch area) and read that back
//! through host memory; `klogctl(READ_ALL)` after every phase. Runs as root, in the lab.

use crate::dio::{Access, DioError, DirectFile};
use crate::klog::{klog_texts, KernelLog, KlogError, Syslog};
use crate::p2pbuf::{
    AllocateFile, CpuAccessError, DmaBuffer, HostBuffer, HostBufferError, P2pBufferError,
};
use crate::sys;
use p2pmem_model::Bdf;
use std::path::{Path, PathBuf};

/// Bytes mapped from `allocate`.
pub const MAP_BYTES: usize = 1 << 20;
/// Bytes per transfer.
pub const IO_BYTES: usize = 64 << 10;
/// Device offset of the read.
pub const READ_OFFSET: u64 = 0;
/// Device offset of the write (scratch area).
pub const WRITE_OFFSET: u64 = 1 << 20;
/// The byte the P2P buffer is filled with after mmap.
pub const FILL_BYTE: u8 = 0xA5;
pub use p2pmem_wire::probe::{DataCheck, DmaProbeResult, PhaseLog, OK};

/// A probe that could not produce a record (as opposed to the kernel refusing a step,
/// which is recorded in the result).
#[derive(Debug, thiserror::Error)]
pub enum DmaProbeError {
    /// The client could not be opened with O_DIRECT.
    #[error("cannot use the client block device")]
    Client(#[source] DioError),
    /// The client's block size does not divide the fixed probe offsets and sizes.
    #[error("{path} has a logical block size of {block} bytes, which does not divide the {IO_BYTES}-byte transfers")]
    BlockSize {
        /// The client.
        path: PathBuf,
        /// Its logical block size.
        block: u32,
    },
    /// Host memory for the reference reads could not be allocated.
    #[error("cannot allocate host memory for the reference reads")]
    Host(#[source] HostBufferError),
    /// The kernel log could not be read or cleared.
    #[error("cannot use the kernel log")]
    Klog(#[source] KlogError),
    /// `allocate` could not be opened (missing, not root, a captured placeholder); found
    /// before the kernel log is cleared.
    #[error("cannot map p2pmem of {provider}")]
    Map {
        /// The provider.
        provider: Bdf,
        /// Why.
        #[source]
        source: P2pBufferError,
    },
    /// The fill, the snapshot or the write pattern could not be copied by the CPU: the
    /// provider went away during the probe (its pages raised SIGBUS), or the probe built
    /// a bad range (a bug).
    #[error("CPU access to the p2pmem buffer of {provider} failed")]
    CpuAccess {
        /// The provider.
        provider: Bdf,
        /// Why.
        #[source]
        source: CpuAccessError,
    },
    /// A request the probe built was refused before reaching the kernel (a bug).
    #[error("the probe built a request that was refused before reaching the kernel (a bug)")]
    Request(#[source] DioError),
}

/// Runs the probe against the running kernel (`klogctl`), with sysfs under `root`.
pub fn dma_probe(
    root: &Path,
    provider: Bdf,
    client: Option<Bdf>,
    client_blkdev: &Path,
) -> Result<DmaProbeResult, DmaProbeError> {
    dma_probe_with(&mut Syslog, root, provider, client, client_blkdev)
}

/// [`dma_probe`] with the kernel log supplied by the caller.
pub fn dma_probe_with(
    log: &mut dyn KernelLog,
    root: &Path,
    provider: Bdf,
    client: Option<Bdf>,
    client_blkdev: &Path,
) -> Result<DmaProbeResult, DmaProbeError> {
    let dev = DirectFile::open(client_blkdev, Access::ReadWrite).map_err(DmaProbeError::Client)?;
    let block = dev.logical_block_size().max(1);
    let align = block as usize;
    if !IO_BYTES.is_multiple_of(align) || !WRITE_OFFSET.is_multiple_of(u64::from(block)) {
        return Err(DmaProbeError::BlockSize {
            path: client_blkdev.to_path_buf(),
            block,
        });
    }
    let mut host = HostBuffer::new(IO_BYTES).map_err(DmaProbeError::Host)?;
    let mut snap = vec![0u8; IO_BYTES];
    let mut rec = DmaProbeResult {
        provider,
        client,
        read: None,
        write: None,
        kernel_log: Vec::new(),
        client_blkdev: client_blkdev.display().to_string(),
        mmap: OK.to_string(),
        read_data: None,
        write_data: None,
        kernel_log_phase: PhaseLog::default(),
        notes: Vec::new(),
    };
    let mut seen: Vec<String> = Vec::new();
    let allocate = AllocateFile::open(root, provider, MAP_BYTES)
        .map_err(|source| DmaProbeError::Map { provider, source })?;

    // Setup is done: from here on, every refusal is the kernel's answer.
    log.clear().map_err(DmaProbeError::Klog)?;

    // Phase mmap.
    let mut buf = match allocate.map() {
        Ok(mut b) => {
            b.fill(FILL_BYTE).map_err(cpu(provider))?;
            Some(b)
        }
        Err(e) => match e.mmap_errno() {
            Some(errno) => {
                rec.mmap = sys::errno_label(errno);
                rec.notes.push(format!("{e}"));
                None
            }
            None => {
                return Err(DmaProbeError::Map {
                    provider,
                    source: e,
                })
            }
        },
    };
    rec.kernel_log_phase.mmap = next_phase(log, &mut seen, &mut rec.notes)?;

    // Phase read: P2P read, then the host reference read of the same range.
    if let Some(b) = buf.as_mut() {
        let read = transfer(dev.pread_into(b, 0, IO_BYTES, READ_OFFSET))?;
        if read.as_deref() == Some(OK) {
            let reference = dev.pread_into(&mut host, 0, IO_BYTES, READ_OFFSET);
            match reference {
                Ok(n) if n == IO_BYTES => {
                    b.copy_to_host(0, &mut snap).map_err(cpu(provider))?;
                    rec.read_data = Some(check(&snap, host.as_slice()));
                }
                Ok(n) => rec.notes.push(format!(
                    "host reference read was short: {n} of {IO_BYTES} bytes"
                )),
                Err(e) => rec.notes.push(format!("host reference read failed: {e}")),
            }
        }
        rec.read = read;
    }
    rec.kernel_log_phase.read = next_phase(log, &mut seen, &mut rec.notes)?;

    // Phase write: a fresh pattern, so that stale scratch data cannot pass for a write.
    if let Some(b) = buf.as_mut() {
        let pattern = write_pattern(nonce());
        b.copy_from_host(0, &pattern).map_err(cpu(provider))?;
        let write = transfer(dev.pwrite_from(b, 0, IO_BYTES, WRITE_OFFSET))?;
        if write.as_deref() == Some(OK) {
            host.as_mut_slice().fill(0);
            match dev.pread_into(&mut host, 0, IO_BYTES, WRITE_OFFSET) {
                Ok(n) if n == IO_BYTES => rec.write_data = Some(check(&pattern, host.as_slice())),
                Ok(n) => rec
                    .notes
                    .push(format!("host read-back was short: {n} of {IO_BYTES} bytes")),
                Err(e) => rec.notes.push(format!("host read-back failed: {e}")),
            }
        }
        rec.write = write;
    }
    rec.kernel_log_phase.write = next_phase(log, &mut seen, &mut rec.notes)?;

    // Phase after: the buffer is unmapped and returns to the pool.
    drop(buf);
    rec.kernel_log_phase.after = next_phase(log, &mut seen, &mut rec.notes)?;
    rec.kernel_log = seen;
    Ok(rec)
}

fn cpu(provider: Bdf) -> impl Fn(CpuAccessError) -> DmaProbeError {
    move |source| DmaProbeError::CpuAccess { provider, source }
}

/// `ok`, `short:<n>`, or the errno name; a request refused before the kernel saw it is a
/// probe bug, not an answer.
fn transfer(r: Result<usize, DioError>) -> Result<Option<String>, DmaProbeError> {
    match r {
        Ok(n) if n == IO_BYTES => Ok(Some(OK.to_string())),
        Ok(n) => Ok(Some(format!("short:{n}"))),
        Err(DioError::Io { source, .. }) => Ok(Some(sys::io_error_label(&source))),
        Err(e) => Err(DmaProbeError::Request(e)),
    }
}

fn check(a: &[u8], b: &[u8]) -> DataCheck {
    if a == b {
        DataCheck::Match
    } else {
        DataCheck::Mismatch
    }
}

/// READ_ALL, and the lines that are new since the previous phase.
fn next_phase(
    log: &mut dyn KernelLog,
    seen: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Result<Vec<String>, DmaProbeError> {
    let now = klog_texts(&log.read_all().map_err(DmaProbeError::Klog)?);
    let (new, wrapped) = new_lines(seen, &now);
    if wrapped {
        notes.push("the kernel log no longer starts with the lines already seen (ring buffer wrapped or cleared by someone else); the phase holds the whole log".to_string());
    }
    *seen = now;
    Ok(new)
}

/// The lines of `now` after the prefix `prev`; when `prev` is not a prefix, all of `now`
/// and `true`.
pub fn new_lines(prev: &[String], now: &[String]) -> (Vec<String>, bool) {
    if now.starts_with(prev) {
        (now[prev.len()..].to_vec(), false)
    } else {
        (now.to_vec(), true)
    }
}

/// 64 KiB of [`pattern`]: different at every offset and every run.
pub fn write_pattern(nonce: u64) -> Vec<u8> {
    pattern(IO_BYTES, nonce)
}

/// `len` bytes of 8-byte words `seed ^ index * golden ratio`: no run of equal bytes,
/// different at every offset, and different for every seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len.div_ceil(8) as u64)
        .flat_map(|i| (seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes())
        .collect();
    v.truncate(len);
    v
}

/// A seed that differs from run to run (time and process ID).
pub fn nonce() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

#[cfg(test)]
mod tests;
