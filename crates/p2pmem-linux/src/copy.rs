//! `p2pmem copy`: read from one block device (or file) into a buffer and write from it to
//! another, with the buffer in a provider's p2pmem so that the payload never crosses
//! host memory, or in host memory when there is no P2P path.
//!
//! [`prepare`] opens both ends, runs the safety checks (destination in use, overlapping
//! ranges), plans the chunks, decides with the model where the buffer lives, maps it once
//! and picks the I/O engine (io_uring, or `pread`/`pwrite` when io_uring is
//! unavailable). [`Prepared::run`] then pipelines the chunks and reports exactly which
//! destination bytes were written if anything stops it. [`verify_ranges`] compares the
//! two ranges afterwards through host memory.

mod endpoint;
mod engine;
mod error;
pub(crate) mod placement;
mod plan;
mod queue;
mod route;
mod safety;
mod uring;
mod verify;

#[cfg(test)]
mod tests;

pub(crate) use endpoint::stat_error;
pub use endpoint::{DevNo, Endpoint, EndpointError, Ident};
pub use error::{CopyError, Progress, TransferError};
pub use placement::PlacementError;
pub(crate) use placement::{open_queue, place_buffer, place_buffers, BufferSpec};
pub use plan::{ByteRange, Chunk, Plan, PlanError, Side, Written, MAX_CHUNK};
pub use queue::{Completion, Dir, PushError, Queue, SyncQueue};
pub use route::{client_of, explain_check, explain_refusal, ClientInfo, Route, Via};
pub(crate) use route::{explain_choice, refusal_explanation, routing_system, unchecked, vet_named};
pub(crate) use safety::refuse_in_use;
pub use safety::{block_device_in_use, common_object, parse_mountinfo, InUse, MountEntry};
pub use uring::{unavailable_hint, Ring, Submit, UringQueue, MAX_DEPTH};
pub use verify::{verify_ranges, VerifyError, VerifyReport};

use crate::dio::{DirectKind, Op};
use crate::p2pbuf::{Location, Pages};
use crate::sys;
use crate::system::System;
use p2pmem_model::Bdf;
use serde::Serialize;
use std::fmt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// Which I/O engine to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineChoice {
    /// io_uring when available, else synchronous `pread`/`pwrite` (said once).
    Auto,
    /// io_uring or an error (a diagnostic choice).
    Uring,
    /// `pread`/`pwrite`, one request at a time (a diagnostic choice).
    Sync,
}

impl std::str::FromStr for EngineChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "uring" | "io_uring" => Ok(Self::Uring),
            "sync" => Ok(Self::Sync),
            other => Err(format!("'{other}' is not an engine: auto, uring or sync")),
        }
    }
}

/// The most reads, and the most writes, a copy keeps in flight ([`CopyRequest::depth`]):
/// its io_uring queue holds both, and io_uring's is [`MAX_DEPTH`].
pub const MAX_COPY_DEPTH: usize = MAX_DEPTH / 2;

/// The default depth of a copy whose buffer is in host memory: at most this many reads
/// and this many writes in flight...
pub const HOST_DEPTH: usize = 32;

/// ...and a buffer (twice the depth in chunks) of at most this many bytes. Measured
/// (README, Benchmarks): with the buffer faulted in before the first request, 4 KiB and
/// 64 KiB chunks gained with every doubling of the buffer up to 64 chunks; 1 MiB chunks
/// moved as much with 16 MiB of buffer as with 32, and with 32 MiB the process took
/// 55-97 ms longer end to end than its copy in 4 of 11 rounds (making 16 huge pages),
/// with 16 MiB 7-8 ms in 6.
pub const HOST_BUFFER: u64 = 16 << 20;

/// The default depth of a copy through a provider's p2pmem: at most this many reads and
/// this many writes in flight...
pub const P2PMEM_DEPTH: usize = 4;

/// ...and a buffer of at most this many bytes. A CMB is small (the lab's are 16 MiB) and
/// shared by every user of its provider: the default takes no more of it than the first
/// releases did (8 chunks of 1 MiB, verified in the lab), and a pool too short for even
/// that halves it (`copy`'s placement).
pub const P2PMEM_BUFFER: u64 = 16 << 20;

/// The default depth for `chunk`-byte chunks in a buffer at `location`: its most reads
/// and writes in flight ([`HOST_DEPTH`], [`P2PMEM_DEPTH`]), lowered so that the buffer,
/// [`buffer_chunks`] of the depth, stays within its most bytes ([`HOST_BUFFER`],
/// [`P2PMEM_BUFFER`]), but never below 1 (one read and one write in flight, two chunks
/// of buffer).
pub fn default_depth(chunk: u64, location: Location) -> usize {
    let (most, buffer) = match location {
        Location::Host => (HOST_DEPTH, HOST_BUFFER),
        Location::P2p(_) => (P2PMEM_DEPTH, P2PMEM_BUFFER),
    };
    let fits = buffer / chunk.max(1) / 2;
    usize::try_from(fits).map_or(most, |n| n.clamp(1, most))
}

/// The chunks of buffer for `depth` reads and `depth` writes in flight: twice the depth,
/// so that while `depth` chunks are being written the next `depth` are read, but never
/// more than the copy has (`chunks`), which would never be used.
pub fn buffer_chunks(depth: usize, chunks: usize) -> usize {
    depth.saturating_mul(2).min(chunks).max(1)
}

/// The depth a copy asks for: `asked`, else [`default_depth`] for the plan's chunk where
/// the route puts the buffer (`provider`'s p2pmem, or host memory); never more than the
/// plan has chunks.
fn copy_depth(asked: Option<usize>, plan: &Plan, provider: Option<Bdf>) -> usize {
    let depth = asked.unwrap_or_else(|| {
        default_depth(plan.chunk, provider.map_or(Location::Host, Location::P2p))
    });
    depth.min(plan.chunk_count())
}

/// The depth a buffer of `mapped` chunks allows when `wanted` were asked of the p2pmem
/// pool for `depth` (a short pool maps fewer): half the chunks mapped, at least 1.
fn depth_for_buffer(depth: usize, wanted: usize, mapped: usize) -> usize {
    if mapped < wanted {
        (mapped / 2).clamp(1, depth)
    } else {
        depth
    }
}

/// What to copy and how.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    /// Source: block device or regular file.
    pub src: PathBuf,
    /// Destination: block device or regular file (created when missing).
    pub dst: PathBuf,
    /// First source byte (block-aligned).
    pub offset: u64,
    /// First destination byte (block-aligned); `None`: the same as `offset`.
    pub dst_offset: Option<u64>,
    /// Bytes to copy; `None`: to the end of the source.
    pub length: Option<u64>,
    /// Chunk size (a multiple of the logical block size).
    pub chunk: u64,
    /// Reads, and writes, in flight at once (1 to [`MAX_COPY_DEPTH`]), with a buffer of
    /// [`buffer_chunks`]: as fio's read job and write job at this `iodepth` together;
    /// `None`: [`default_depth`] for the chunk and where the route puts the buffer.
    pub depth: Option<usize>,
    /// Where the buffer lives.
    pub via: Via,
    /// Fail instead of falling back to host memory.
    pub require_p2p: bool,
    /// Skip the in-use and overlap refusals; try a P2P path the model refuses.
    pub force: bool,
    /// I/O engine.
    pub engine: EngineChoice,
}

/// A copy ready to run: both ends open, the buffer mapped, the engine set up.
pub struct Prepared {
    // Field order matters: the queue (which owns the buffer and drains in-flight
    // requests on drop) goes before the endpoints whose descriptors those requests use.
    queue: Box<dyn Queue>,
    src: Endpoint,
    dst: Endpoint,
    plan: Plan,
    route: Route,
    depth: usize,
    buffer_chunks: usize,
    sys: Option<System>,
    notes: Vec<String>,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("src", &self.src)
            .field("dst", &self.dst)
            .field("plan", &self.plan)
            .field("engine", &self.queue.name())
            .finish()
    }
}

pub use p2pmem_wire::copy::CopyReport;

/// Removes a destination file this copy created when preparing fails.
struct CreatedGuard<'a>(Option<&'a Path>);

impl Drop for CreatedGuard<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Opens, checks, plans, routes and maps: everything before the first byte moves.
/// `root` is where sysfs and procfs are read (`/` on a live system).
pub fn prepare(root: &Path, req: &CopyRequest) -> Result<Prepared, CopyError> {
    if let Some(depth) = req.depth.filter(|&d| d == 0 || d > MAX_COPY_DEPTH) {
        return Err(PlanError::BadDepth {
            depth,
            max: MAX_COPY_DEPTH,
        }
        .into());
    }
    let mut notes = Vec::new();
    let src = Endpoint::open_source(&req.src)?;
    // A destination block device: refuse it when mounted or held, before opening it.
    if let Ok(st) = rustix::fs::stat(&req.dst) {
        refuse_in_use(root, &req.dst, &st, req.force, &mut notes)?;
    }
    let dst = Endpoint::open_destination(&req.dst, !req.force)?;
    let mut created = CreatedGuard(dst.created().then_some(req.dst.as_path()));
    let side = |e: &Endpoint| Side {
        size: e.size(),
        block: u64::from(e.alignment().offset_align.max(1)),
        fixed_size: e.kind() == DirectKind::BlockDevice,
    };
    let plan = Plan::new(
        side(&src),
        side(&dst),
        req.offset,
        req.dst_offset.unwrap_or(req.offset),
        req.length,
        req.chunk,
    )?;
    let src_range = ByteRange {
        start: plan.src_offset,
        end: plan.src_offset + plan.len,
    };
    if let Some((a, b)) = common_object(root, &src, src_range, &dst, plan.dst_range()) {
        if a.overlaps(&b) {
            let object = match src.ident() {
                Ident::File { .. } => "file",
                Ident::Block { .. } => "disk",
            };
            if !req.force {
                return Err(CopyError::Overlap {
                    src: req.src.clone(),
                    dst: req.dst.clone(),
                    src_range: a,
                    dst_range: b,
                    object,
                });
            }
            notes.push(format!(
                "--force: source {a} and destination {b} overlap on the same {object}; the result is undefined"
            ));
        }
    }
    let sys = routing_system(root, req.via);
    let mut route = route::decide(
        root,
        sys.as_ref().map_err(String::clone),
        req.via,
        &src,
        &dst,
        req.force,
        req.require_p2p,
    )?;
    let sys = sys.ok();
    let depth = copy_depth(req.depth, &plan, route.provider);
    let wanted = buffer_chunks(depth, plan.chunk_count());
    let placed = place_buffer(
        root,
        BufferSpec {
            provider: route.provider,
            unit: plan.chunk,
            depth: wanted,
            units: "chunks",
            host_fallback: (req.via == Via::Auto && !req.require_p2p).then_some(
                "Copying through HOST memory instead: the payload crosses host RAM \
                 (--require-p2p makes this an error)",
            ),
            host_pages: Pages::Huge,
        },
        &mut notes,
    )?;
    if let Some(fell) = placed.fell_back {
        route.warnings.push(fell.warning);
        route.provider = None;
        route.reason = fell.reason;
    }
    let buffer_chunks = placed.depth;
    let depth = depth_for_buffer(depth, wanted, buffer_chunks);
    // Room in the queue for every read and every write in flight.
    let queue = open_queue(
        req.engine,
        depth,
        depth * 2,
        Submit::Gathered,
        placed.buffer,
        &mut notes,
    )?;
    created.0 = None;
    Ok(Prepared {
        queue,
        src,
        dst,
        plan,
        route,
        depth,
        buffer_chunks,
        sys,
        notes,
    })
}

impl Prepared {
    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Where the buffer lives and why.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// Things to say once on stderr before the copy starts (engine fallback, depth
    /// reduced, `--force` overrides). The route's warnings are separate.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// `io_uring` or `sync`.
    pub fn engine(&self) -> &'static str {
        self.queue.name()
    }

    /// Reads, and writes, in flight at most (may be lower than asked when the p2pmem pool
    /// was short).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The source.
    pub fn src(&self) -> &Endpoint {
        &self.src
    }

    /// The destination.
    pub fn dst(&self) -> &Endpoint {
        &self.dst
    }

    fn progress(&self, written: &Written) -> Progress {
        Progress {
            dst: self.dst.path().to_path_buf(),
            planned: self.plan.dst_range(),
            written: written.clone(),
        }
    }

    /// Copies. `cancel` (set by a signal handler) is checked between chunks; `progress`
    /// receives the destination bytes written so far.
    pub fn run(
        mut self,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<CopyReport, CopyError> {
        let start = Instant::now();
        let location = self.queue.location();
        let mem_align = u64::from(
            self.src
                .alignment()
                .mem_align
                .max(self.dst.alignment().mem_align),
        );
        let outcome = engine::run(
            self.queue.as_mut(),
            self.depth,
            &self.plan,
            engine::Ends {
                src: self.src.fd(),
                dst: self.dst.fd(),
            },
            mem_align,
            cancel,
            progress,
        );
        let mut written = outcome.written;
        if let Some(stop) = outcome.stop {
            return Err(self.stop_error(stop, &written, location));
        }
        let mut tail_bytes_via_host = 0;
        if self.plan.tail > 0 {
            let at = self.plan.direct_len();
            self.copy_tail(at)
                .map_err(|(what, path, source)| CopyError::Finish {
                    what,
                    path,
                    errno: sys::io_error_label(&source),
                    progress: Box::new(self.progress(&written)),
                    source,
                })?;
            written.insert(self.plan.dst_offset + at, self.plan.tail);
            tail_bytes_via_host = self.plan.tail;
            progress(written.bytes());
        }
        rustix::fs::fdatasync(self.dst.fd()).map_err(|e| CopyError::Finish {
            what: "fdatasync",
            path: self.dst.path().to_path_buf(),
            errno: sys::errno_label(e.raw_os_error()),
            progress: Box::new(self.progress(&written)),
            source: e.into(),
        })?;
        let seconds = start.elapsed().as_secs_f64();
        let bytes = written.bytes();
        Ok(CopyReport {
            src: self.src.path().to_path_buf(),
            dst: self.dst.path().to_path_buf(),
            src_offset: self.plan.src_offset,
            dst_offset: self.plan.dst_offset,
            bytes,
            seconds,
            bytes_per_second: if seconds > 0.0 {
                bytes as f64 / seconds
            } else {
                0.0
            },
            location,
            engine: self.queue.name().to_string(),
            chunk: self.plan.chunk,
            depth: self.depth,
            buffer_chunks: self.buffer_chunks,
            max_in_flight: outcome.max_in_flight.min(self.queue.max_concurrency()),
            tail_bytes_via_host,
            created: self.dst.created(),
        })
    }

    /// Copies the sub-block tail at plan offset `at` with buffered I/O (O_DIRECT cannot
    /// move part of a block), then the caller's fdatasync makes it durable.
    fn copy_tail(&self, at: u64) -> Result<(), (&'static str, PathBuf, std::io::Error)> {
        let len = usize::try_from(self.plan.tail).unwrap_or(0);
        let src_path = self.src.path().to_path_buf();
        let dst_path = self.dst.path().to_path_buf();
        let src = std::fs::File::open(&src_path).map_err(|e| ("open", src_path.clone(), e))?;
        let mut bytes = vec![0u8; len];
        src.read_exact_at(&mut bytes, self.plan.src_offset + at)
            .map_err(|e| ("buffered read of the tail", src_path, e))?;
        let dst = std::fs::OpenOptions::new()
            .write(true)
            .open(&dst_path)
            .map_err(|e| ("open", dst_path.clone(), e))?;
        dst.write_all_at(&bytes, self.plan.dst_offset + at)
            .map_err(|e| ("buffered write of the tail", dst_path.clone(), e))?;
        dst.sync_data()
            .map_err(|e| ("fdatasync of the tail", dst_path, e))
    }

    fn stop_error(&self, stop: engine::Stop, written: &Written, location: Location) -> CopyError {
        let progress = self.progress(written);
        let boxed = || Box::new(self.progress(written));
        let side = |dir: Dir| match dir {
            Dir::Read => (Op::Read, self.src.path().to_path_buf(), &self.route.src),
            Dir::Write => (Op::Write, self.dst.path().to_path_buf(), &self.route.dst),
        };
        match stop {
            engine::Stop::Io {
                dir,
                file_off,
                len,
                source,
            } => {
                let (op, path, client) = side(dir);
                let errno = source.raw_os_error();
                let explanation =
                    refusal_explanation(location, errno, self.sys.as_ref(), client.as_ref());
                let endpoint = match dir {
                    Dir::Read => &self.src,
                    Dir::Write => &self.dst,
                };
                let hint = endpoint.io_hint(errno, location);
                CopyError::Transfer(Box::new(TransferError {
                    op,
                    path,
                    file_off,
                    len,
                    location,
                    errno: sys::io_error_label(&source),
                    hint,
                    explanation,
                    progress,
                    source,
                }))
            }
            engine::Stop::ShortSource { file_off } => CopyError::ShortSource {
                path: self.src.path().to_path_buf(),
                file_off,
                gone: self.src.vanished(),
                progress: boxed(),
            },
            engine::Stop::UnalignedShort { dir, file_off, got } => {
                let (op, path, _) = side(dir);
                CopyError::UnalignedShort {
                    op,
                    path,
                    file_off,
                    got,
                    block: self.plan.block,
                    progress: boxed(),
                }
            }
            engine::Stop::Push(e) => CopyError::Transfer(Box::new(TransferError {
                op: Op::Read,
                path: self.src.path().to_path_buf(),
                file_off: self.plan.src_offset,
                len: self.plan.chunk,
                location,
                errno: "none".to_string(),
                hint: "the I/O queue refused the request before it reached the kernel",
                explanation: None,
                progress,
                source: std::io::Error::other(e),
            })),
            engine::Stop::Wait(source) => CopyError::Wait {
                errno: sys::io_error_label(&source),
                progress: boxed(),
                source,
            },
            engine::Stop::Pool(source) => CopyError::Pool {
                len: self.queue.buffer_len(),
                source,
            },
            engine::Stop::Cancelled => CopyError::Interrupted { progress: boxed() },
        }
    }
}
