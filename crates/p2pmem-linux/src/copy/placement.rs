//! The buffer a transfer moves data through, shared by `copy` and `bench`: mapped once
//! in the chosen provider's p2pmem (halving the depth while the pool cannot supply one
//! contiguous piece) or in host memory, falling back to host memory when the caller
//! allows it, and handed to the I/O queue that owns it from then on (io_uring, or
//! `pread`/`pwrite`).
//!
//! [`PlacementError`] is also what the route (`route.rs`) refuses a P2P path with,
//! so that both commands report these the same way.

use super::queue::{Queue, SyncQueue};
use super::uring::{unavailable_hint, Ring, UringQueue};
use super::EngineChoice;
use crate::p2pbuf::{DmaBuffer, HostBuffer, HostBufferError, P2pBuffer, P2pBufferError};
use crate::sys;
use p2pmem_model::Bdf;
use rustix::io::Errno;
use std::io;
use std::path::Path;

/// Why the buffer of a transfer cannot be placed: the P2P path is refused, the memory
/// cannot be mapped, or the engine asked for is unavailable. Nothing was moved.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// The model predicts that the kernel refuses the P2P path (or that it cannot work).
    #[error("refusing the P2P path through {provider}: {why}")]
    P2pRefused {
        /// The provider.
        provider: Bdf,
        /// The model's explanation.
        why: String,
    },
    /// The kernel has no userspace p2pmem (before 6.2): there is nothing to map,
    /// whatever `--force` says.
    #[error("kernel {kernel} has no userspace p2pmem: p2pmem/allocate arrived in 6.2, so no buffer in {provider}'s p2pmem can be mapped; --via host copies through host memory. {STILL_WORKS}")]
    NoUserspaceP2p {
        /// The running kernel.
        kernel: p2pmem_model::KernelVersion,
        /// The provider asked for.
        provider: Bdf,
    },
    /// The p2pmem buffer could not be mapped.
    #[error(transparent)]
    P2pBuffer(#[from] P2pBufferError),
    /// The host buffer could not be allocated.
    #[error(transparent)]
    HostBuffer(#[from] HostBufferError),
    /// io_uring was asked for (`--engine uring`) and is unavailable.
    #[error("io_uring is unavailable ({errno}): {hint}")]
    Uring {
        /// Errno name.
        errno: String,
        /// What it usually means.
        hint: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
}

/// What still works on a kernel without userspace p2pmem.
pub const STILL_WORKS: &str = "What still works on this kernel: the predictions (check, find, topo, doctor) and P2P memory for the NVMe target (p2pmem nvmet), which the kernel uses itself.";

/// Why userspace P2P cannot work on `sys`'s kernel, when it cannot (before 6.2).
pub(crate) fn no_userspace_p2p(sys: &crate::system::System) -> Option<p2pmem_model::KernelVersion> {
    let k = sys.rules.kernel;
    (!p2pmem_model::errno::USERSPACE_P2P.contains(k)).then_some(k)
}

/// What to map: `depth` pieces of `unit` bytes each, in one buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BufferSpec<'a> {
    /// The provider the route chose; `None`: host memory.
    pub provider: Option<Bdf>,
    /// Bytes per request (`copy`'s chunk, `bench`'s block size).
    pub unit: u64,
    /// Requests in flight, as asked.
    pub depth: usize,
    /// What the pieces are called in the note when the depth is reduced ("chunks").
    pub units: &'static str,
    /// When mapping the p2pmem fails: `Some(rest)` falls back to host memory with the
    /// warning `NO P2P BUFFER: <error>. <rest>`; `None` makes it an error.
    pub host_fallback: Option<&'a str>,
}

/// A placed buffer.
pub(crate) struct Placed {
    /// The buffer.
    pub buffer: Box<dyn DmaBuffer>,
    /// Requests in flight it holds (lower than asked when the p2pmem pool was short).
    pub depth: usize,
    /// Set when the p2pmem could not be mapped and the buffer is in host memory instead.
    pub fell_back: Option<FellBack>,
}

/// What a route says after falling back to host memory.
pub(crate) struct FellBack {
    /// The route's new one-line reason.
    pub reason: String,
    /// The loud warning.
    pub warning: String,
}

/// Maps the buffer `spec` describes; notes a reduced depth in `notes`.
pub(crate) fn place_buffer(
    root: &Path,
    spec: BufferSpec<'_>,
    notes: &mut Vec<String>,
) -> Result<Placed, PlacementError> {
    let host = |depth| -> Result<Box<dyn DmaBuffer>, PlacementError> {
        Ok(Box::new(host_buffer(spec.unit, depth)?))
    };
    let Some(provider) = spec.provider else {
        return Ok(Placed {
            buffer: host(spec.depth)?,
            depth: spec.depth,
            fell_back: None,
        });
    };
    match map_p2p(root, provider, spec.unit, spec.depth, spec.units, notes) {
        Ok((buffer, depth)) => Ok(Placed {
            buffer: Box::new(buffer),
            depth,
            fell_back: None,
        }),
        Err(e) => match spec.host_fallback {
            Some(rest) => Ok(Placed {
                buffer: host(spec.depth)?,
                depth: spec.depth,
                fell_back: Some(FellBack {
                    reason: format!("host memory: the p2pmem of {provider} could not be mapped"),
                    warning: format!("NO P2P BUFFER: {e}. {rest}"),
                }),
            }),
            None => Err(e),
        },
    }
}

/// Maps `depth * unit` bytes of `provider`'s p2pmem, halving the depth while the pool
/// cannot supply one contiguous piece (ENOMEM).
fn map_p2p(
    root: &Path,
    provider: Bdf,
    unit: u64,
    depth: usize,
    units: &str,
    notes: &mut Vec<String>,
) -> Result<(P2pBuffer, usize), PlacementError> {
    let (buffer, d) = halving_depth(
        depth,
        |d| P2pBuffer::map(root, provider, buffer_len(unit, d)),
        |e| e.mmap_errno() == Some(Errno::NOMEM.raw_os_error()),
    )?;
    if d != depth {
        notes.push(format!(
            "the p2pmem pool of {provider} could not supply {depth} {units} in one piece; \
             using depth {d}"
        ));
    }
    Ok((buffer, d))
}

/// Calls `map(d)` for `d = depth, depth / 2, ...` while it fails `short` (the pool has
/// no piece that large) and `d > 1`; returns the first success with its depth, or the
/// last error.
fn halving_depth<B, E>(
    depth: usize,
    mut map: impl FnMut(usize) -> Result<B, E>,
    short: impl Fn(&E) -> bool,
) -> Result<(B, usize), E> {
    let mut d = depth;
    loop {
        match map(d) {
            Ok(b) => return Ok((b, d)),
            Err(e) if short(&e) && d > 1 => d /= 2,
            Err(e) => return Err(e),
        }
    }
}

fn buffer_len(unit: u64, depth: usize) -> usize {
    usize::try_from(unit.saturating_mul(depth as u64)).unwrap_or(usize::MAX)
}

/// `depth * unit` bytes of host memory.
fn host_buffer(unit: u64, depth: usize) -> Result<HostBuffer, HostBufferError> {
    HostBuffer::new(buffer_len(unit, depth))
}

/// The I/O queue for `engine`, owning `buf` from now on: io_uring (said once in `notes`
/// when it falls back to pread/pwrite under `auto`), or pread/pwrite, which moves one
/// request at a time (also said, when `depth` asked for more).
pub(crate) fn open_queue(
    engine: EngineChoice,
    depth: usize,
    buf: Box<dyn DmaBuffer>,
    notes: &mut Vec<String>,
) -> Result<Box<dyn Queue>, PlacementError> {
    let queue: Box<dyn Queue> = if engine == EngineChoice::Sync {
        Box::new(SyncQueue::new(buf))
    } else {
        match Ring::open(depth) {
            Ok(ring) => Box::new(UringQueue::new(ring, buf)),
            Err(source) if engine == EngineChoice::Auto => {
                notes.push(format!(
                    "io_uring is unavailable ({}: {}); using synchronous pread/pwrite, one \
                     request at a time",
                    sys::io_error_label(&source),
                    unavailable_hint(&source)
                ));
                Box::new(SyncQueue::new(buf))
            }
            Err(source) => {
                return Err(PlacementError::Uring {
                    errno: sys::io_error_label(&source),
                    hint: unavailable_hint(&source),
                    source,
                })
            }
        }
    };
    if queue.name() == "sync" && depth > 1 {
        notes.push(format!(
            "the sync engine moves one request at a time: --depth {depth} only sizes the buffer"
        ));
    }
    Ok(queue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p2pbuf::Location;

    #[test]
    fn the_depth_halves_while_the_pool_is_short_and_not_below_one() {
        let mut tried = Vec::new();
        let got = halving_depth(
            16,
            |d| {
                tried.push(d);
                if d <= 4 {
                    Ok(d * 10)
                } else {
                    Err("short")
                }
            },
            |e| *e == "short",
        );
        assert_eq!(got, Ok((40, 4)));
        assert_eq!(tried, [16, 8, 4]);

        let mut tried = Vec::new();
        let got: Result<((), usize), _> = halving_depth(
            5,
            |d| {
                tried.push(d);
                Err("short")
            },
            |e| *e == "short",
        );
        assert_eq!(got, Err("short"));
        assert_eq!(tried, [5, 2, 1]);
    }

    #[test]
    fn another_error_stops_at_once() {
        let mut tried = Vec::new();
        let got: Result<((), usize), _> = halving_depth(
            8,
            |d| {
                tried.push(d);
                Err(if d == 8 { "short" } else { "gone" })
            },
            |e| *e == "short",
        );
        assert_eq!(got, Err("gone"));
        assert_eq!(tried, [8, 4]);
    }

    #[test]
    fn a_missing_provider_falls_back_only_when_allowed() {
        let root = tempfile::tempdir().unwrap();
        let provider: Bdf = "0000:03:00.0".parse().unwrap();
        let spec = BufferSpec {
            provider: Some(provider),
            unit: 4096,
            depth: 4,
            units: "chunks",
            host_fallback: None,
        };
        let mut notes = Vec::new();
        let e = place_buffer(root.path(), spec, &mut notes)
            .err()
            .expect("mapping a provider that is not there must fail");
        assert!(matches!(e, PlacementError::P2pBuffer(_)), "{e}");
        assert!(e.to_string().contains("0000:03:00.0"), "{e}");

        let placed = place_buffer(
            root.path(),
            BufferSpec {
                host_fallback: Some("Using HOST memory instead"),
                ..spec
            },
            &mut notes,
        )
        .unwrap();
        assert_eq!(placed.buffer.location(), Location::Host);
        assert_eq!(placed.buffer.len(), 4 * 4096);
        assert_eq!(placed.depth, 4);
        let fell = placed.fell_back.expect("the fallback must be reported");
        assert!(
            fell.warning.starts_with("NO P2P BUFFER: ")
                && fell.warning.ends_with(". Using HOST memory instead"),
            "{}",
            fell.warning
        );
        assert_eq!(
            fell.reason,
            "host memory: the p2pmem of 0000:03:00.0 could not be mapped"
        );
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn host_memory_is_depth_times_unit() {
        let root = tempfile::tempdir().unwrap();
        let placed = place_buffer(
            root.path(),
            BufferSpec {
                provider: None,
                unit: 8192,
                depth: 3,
                units: "buffers",
                host_fallback: None,
            },
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(placed.buffer.location(), Location::Host);
        assert_eq!(placed.buffer.len(), 3 * 8192);
        assert!(placed.fell_back.is_none());
    }

    #[test]
    fn the_sync_engine_says_that_depth_only_sizes_the_buffer() {
        let mut notes = Vec::new();
        let buf = Box::new(host_buffer(4096, 4).unwrap());
        let q = open_queue(EngineChoice::Sync, 4, buf, &mut notes).unwrap();
        assert_eq!(q.name(), "sync");
        assert_eq!(
            notes,
            ["the sync engine moves one request at a time: --depth 4 only sizes the buffer"]
        );
        let mut notes = Vec::new();
        let buf = Box::new(host_buffer(4096, 1).unwrap());
        open_queue(EngineChoice::Sync, 1, buf, &mut notes).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
    }
}
