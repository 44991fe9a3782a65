//! The buffer a transfer moves data through, shared by `copy` and `bench`: mapped once
//! in the chosen provider's p2pmem (halving the depth while the pool cannot supply one
//! contiguous piece) or in host memory, falling back to host memory when the caller
//! allows it, and handed to the I/O queue that owns it from then on (io_uring, or
//! `pread`/`pwrite`).
//!
//! [`PlacementError`] is also what the route (`route.rs`) refuses a P2P path with,
//! so that both commands report these the same way.

use super::queue::{Queue, SyncQueue};
use super::uring::{unavailable_hint, Ring, Submit, UringQueue};
use super::EngineChoice;
use crate::p2pbuf::{DmaBuffer, HostBuffer, HostBufferError, P2pBuffer, P2pBufferError, Pages};
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
    /// The provider's pool cannot supply one buffer per job (`bench --jobs`), even at
    /// depth 1.
    #[error(
        "the p2pmem of {provider} cannot hold {jobs} jobs' buffers: each job maps its own \
         (depth x {unit} bytes), and even {jobs} x 1 x {unit} bytes could not be mapped \
         (available: {}): lower --jobs, --depth or --bs, free the provider's memory, or use \
         --via host",
        available.map_or_else(|| "unknown".to_string(), |a| format!("{a} bytes"))
    )]
    JobsDoNotFit {
        /// The provider.
        provider: Bdf,
        /// Jobs asked for.
        jobs: usize,
        /// Bytes per request.
        unit: u64,
        /// The provider's `p2pmem/available` when it could be read.
        available: Option<u64>,
        /// The refused mapping.
        #[source]
        source: Box<P2pBufferError>,
    },
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
    /// The pages of a buffer in host memory: the copy's are huge (each chunk a few
    /// contiguous segments, neighbouring chunks mergeable); `bench`'s are
    /// [`Pages::for_requests`] of its block size, so that each request reaches the device
    /// as one request of that size.
    pub host_pages: Pages,
}

/// Placed buffers, one per job.
pub(crate) struct PlacedJobs {
    /// The buffers, each `depth * unit` bytes.
    pub buffers: Vec<Box<dyn DmaBuffer>>,
    /// Requests in flight each holds (lower than asked when the p2pmem pool was short).
    pub depth: usize,
    /// Set when the p2pmem could not be mapped and the buffers are in host memory instead.
    pub fell_back: Option<FellBack>,
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
    let PlacedJobs {
        mut buffers,
        depth,
        fell_back,
    } = place_buffers(root, spec, 1, notes)?;
    // One job: one buffer (an empty list cannot come back; said as the allocation).
    let buffer = buffers.pop().ok_or(HostBufferError {
        len: buffer_len(spec.unit, depth),
    })?;
    Ok(Placed {
        buffer,
        depth,
        fell_back,
    })
}

/// Maps one buffer per job, each as `spec` describes, all in the same place and at the
/// same depth: all in the provider's p2pmem (the depth halved for all while the pool
/// cannot supply one piece per job), or all in host memory. Notes a reduced depth.
pub(crate) fn place_buffers(
    root: &Path,
    spec: BufferSpec<'_>,
    jobs: usize,
    notes: &mut Vec<String>,
) -> Result<PlacedJobs, PlacementError> {
    let host = |depth| -> Result<Vec<Box<dyn DmaBuffer>>, PlacementError> {
        (0..jobs)
            .map(|_| {
                Ok(Box::new(host_buffer(spec.unit, depth, spec.host_pages)?) as Box<dyn DmaBuffer>)
            })
            .collect()
    };
    let Some(provider) = spec.provider else {
        return Ok(PlacedJobs {
            buffers: host(spec.depth)?,
            depth: spec.depth,
            fell_back: None,
        });
    };
    match map_p2p(
        root, provider, spec.unit, spec.depth, jobs, spec.units, notes,
    ) {
        Ok((buffers, depth)) => Ok(PlacedJobs {
            buffers: buffers
                .into_iter()
                .map(|b| Box::new(b) as Box<dyn DmaBuffer>)
                .collect(),
            depth,
            fell_back: None,
        }),
        Err(e) => match spec.host_fallback {
            Some(rest) => Ok(PlacedJobs {
                buffers: host(spec.depth)?,
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

/// Maps `jobs` buffers of `depth * unit` bytes of `provider`'s p2pmem, halving the depth
/// of all while the pool cannot supply one contiguous piece per job (ENOMEM).
fn map_p2p(
    root: &Path,
    provider: Bdf,
    unit: u64,
    depth: usize,
    jobs: usize,
    units: &str,
    notes: &mut Vec<String>,
) -> Result<(Vec<P2pBuffer>, usize), PlacementError> {
    let (buffers, d) = map_jobs(
        jobs,
        depth,
        |d| P2pBuffer::map(root, provider, buffer_len(unit, d)),
        |e| e.mmap_errno() == Some(Errno::NOMEM.raw_os_error()),
    )
    .map_err(|e| match e {
        P2pBufferError::Mmap { available, .. }
            if jobs > 1 && e.mmap_errno() == Some(Errno::NOMEM.raw_os_error()) =>
        {
            PlacementError::JobsDoNotFit {
                provider,
                jobs,
                unit,
                available,
                source: Box::new(e),
            }
        }
        e => e.into(),
    })?;
    if d != depth {
        notes.push(if jobs == 1 {
            format!(
                "the p2pmem pool of {provider} could not supply {depth} {units} in one piece; \
                 using {d}"
            )
        } else {
            format!(
                "the p2pmem pool of {provider} could not supply {jobs} pieces (one per job) of \
                 {depth} {units}; using {d} in every job"
            )
        });
    }
    Ok((buffers, d))
}

/// One `map(d)` per job for `d = depth, depth / 2, ...`: while one fails `short` and
/// `d > 1`, what was mapped is dropped and the depth halved. Every job gets the same
/// depth; the last error when even depth 1 does not fit.
fn map_jobs<B, E>(
    jobs: usize,
    depth: usize,
    mut map: impl FnMut(usize) -> Result<B, E>,
    short: impl Fn(&E) -> bool,
) -> Result<(Vec<B>, usize), E> {
    halving_depth(
        depth,
        |d| (0..jobs).map(|_| map(d)).collect::<Result<Vec<B>, E>>(),
        short,
    )
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

/// `depth * unit` bytes of host memory in `pages`.
fn host_buffer(unit: u64, depth: usize, pages: Pages) -> Result<HostBuffer, HostBufferError> {
    HostBuffer::with_pages(buffer_len(unit, depth), pages)
}

/// The I/O queue for `engine`, owning `buf` from now on: io_uring handing requests to
/// the kernel as `submit` says, with room for `in_flight` requests (said once in `notes`
/// when it falls back to pread/pwrite under `auto`), or pread/pwrite, which moves one
/// request at a time (also said, when `--depth` asked for more than 1: `depth`).
pub(crate) fn open_queue(
    engine: EngineChoice,
    depth: usize,
    in_flight: usize,
    submit: Submit,
    buf: Box<dyn DmaBuffer>,
    notes: &mut Vec<String>,
) -> Result<Box<dyn Queue>, PlacementError> {
    let queue: Box<dyn Queue> = if engine == EngineChoice::Sync {
        Box::new(SyncQueue::new(buf))
    } else {
        match Ring::open(in_flight) {
            Ok(ring) => Box::new(UringQueue::new(ring, buf, submit)),
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
    fn every_job_gets_a_buffer_at_one_depth_or_the_last_error() {
        // A pool of 20 units: 4 jobs fit at depth 4 (16), not at 8 (32); what was mapped
        // at depth 8 is given back before trying depth 4.
        let pool = std::cell::Cell::new(20usize);
        let mut tried = Vec::new();
        struct Piece<'a>(usize, &'a std::cell::Cell<usize>);
        impl Drop for Piece<'_> {
            fn drop(&mut self) {
                self.1.set(self.1.get() + self.0);
            }
        }
        // Takes `d` units from the pool, or fails when fewer are left.
        let take = |d: usize| {
            if pool.get() >= d {
                pool.set(pool.get() - d);
                Ok(Piece(d, &pool))
            } else {
                Err("short")
            }
        };
        let got = map_jobs(
            4,
            8,
            |d| {
                tried.push(d);
                take(d)
            },
            |e| *e == "short",
        )
        .unwrap();
        assert_eq!(got.1, 4);
        assert_eq!(got.0.len(), 4);
        assert!(got.0.iter().all(|p| p.0 == 4));
        assert_eq!(pool.get(), 4);
        // Two jobs fit at depth 8 (16 of 20), the third does not: all given back.
        assert_eq!(tried, [8, 8, 8, 4, 4, 4, 4]);
        drop(got);
        assert_eq!(pool.get(), 20, "everything given back");
        // 32 jobs do not fit even at depth 1: the error, and nothing kept.
        let r = map_jobs(32, 8, take, |e| *e == "short");
        assert!(matches!(r, Err("short")));
        assert_eq!(pool.get(), 20);
    }

    #[test]
    fn jobs_that_do_not_fit_say_available_and_what_to_lower() {
        let e = PlacementError::JobsDoNotFit {
            provider: "0000:03:00.0".parse().unwrap(),
            jobs: 8,
            unit: 1 << 20,
            available: Some(4 << 20),
            source: Box::new(P2pBufferError::ZeroLength { path: "/x".into() }),
        };
        let text = e.to_string();
        assert!(text.contains("cannot hold 8 jobs' buffers"), "{text}");
        assert!(text.contains("available: 4194304 bytes"), "{text}");
        assert!(text.contains("lower --jobs, --depth or --bs"), "{text}");
    }

    #[test]
    fn several_jobs_get_one_host_buffer_each() {
        let root = tempfile::tempdir().unwrap();
        let placed = place_buffers(
            root.path(),
            BufferSpec {
                provider: None,
                unit: 4096,
                depth: 2,
                units: "buffers",
                host_fallback: None,
                host_pages: Pages::Base,
            },
            3,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(placed.buffers.len(), 3);
        assert!(placed.buffers.iter().all(|b| b.len() == 2 * 4096));
        let addrs: std::collections::BTreeSet<usize> =
            placed.buffers.iter().map(|b| b.as_ptr() as usize).collect();
        assert_eq!(addrs.len(), 3, "separate buffers");
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
            host_pages: Pages::Huge,
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
                host_pages: Pages::Base,
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
        let buf = Box::new(host_buffer(4096, 4, Pages::Base).unwrap());
        let q = open_queue(EngineChoice::Sync, 4, 4, Submit::Each, buf, &mut notes).unwrap();
        assert_eq!(q.name(), "sync");
        assert_eq!(
            notes,
            ["the sync engine moves one request at a time: --depth 4 only sizes the buffer"]
        );
        let mut notes = Vec::new();
        let buf = Box::new(host_buffer(4096, 1, Pages::Base).unwrap());
        open_queue(EngineChoice::Sync, 1, 1, Submit::Each, buf, &mut notes).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
    }
}
