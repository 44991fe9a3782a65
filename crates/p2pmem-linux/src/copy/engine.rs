//! The copy pipeline: each chunk is read from the source into a range of the buffer,
//! then written from that range to the destination, and the range goes back to the
//! pool. Up to `depth` reads and `depth` writes are in flight at once, as many as
//! `buffer / chunk` chunks allow, so reads of later chunks overlap writes of earlier
//! ones: a chunk read while `depth` writes are in flight waits, in the buffer, for the
//! next write to finish. With a buffer of twice `depth` chunks the destination has as many
//! writes in flight as fio's write job at `iodepth=depth` while the next chunks are read.
//!
//! The one buffer (a single p2pmem mmap, or host memory) is cut into chunk ranges with
//! the model's [`Pool`]. Every request in flight is in a table keyed by
//! `user_data` with its chunk and buffer range until its completion is reaped. On an
//! error or a cancellation no new request is started, every request in flight is
//! reaped, and the exact set of destination bytes written is returned.

use super::plan::{Chunk, Plan, Written};
use super::queue::{Completion, Dir, PushError, Queue};
use p2pmem_model::pool::{Pool, PoolError, Range};
use rustix::fd::BorrowedFd;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why the pipeline stopped early.
#[derive(Debug)]
pub enum Stop {
    /// A request failed in the kernel.
    Io {
        /// Which way.
        dir: Dir,
        /// File offset of the failed request.
        file_off: u64,
        /// Its length.
        len: u64,
        /// The error.
        source: io::Error,
    },
    /// The source ended before the planned range (a read returned 0).
    ShortSource {
        /// Where.
        file_off: u64,
    },
    /// A short transfer ended mid-block.
    UnalignedShort {
        /// Which way.
        dir: Dir,
        /// File offset of the request.
        file_off: u64,
        /// Bytes it moved.
        got: usize,
    },
    /// The queue refused a request (a bug if it happens).
    Push(PushError),
    /// Waiting for completions failed.
    Wait(io::Error),
    /// The pool refused the buffer geometry.
    Pool(PoolError),
    /// The cancel flag was set.
    Cancelled,
}

/// What the pipeline did.
#[derive(Debug)]
pub struct Outcome {
    /// Destination bytes written.
    pub written: Written,
    /// Why it stopped early, if it did.
    pub stop: Option<Stop>,
    /// Most requests that were in flight at once.
    pub max_in_flight: usize,
    /// Most reads, and most writes, that were in flight at once (each at most the depth).
    #[cfg(test)]
    pub max_by_dir: [usize; 2],
}

/// A request in flight.
#[derive(Debug, Clone, Copy)]
struct Op {
    chunk: Chunk,
    buf: Range,
    dir: Dir,
    /// Bytes of the chunk already moved in this direction.
    done: u64,
}

impl Op {
    fn file_off(&self) -> u64 {
        self.done
            + match self.dir {
                Dir::Read => self.chunk.src,
                Dir::Write => self.chunk.dst,
            }
    }
}

struct Pipeline<'q, 'a> {
    queue: &'q mut dyn Queue,
    src: BorrowedFd<'a>,
    dst: BorrowedFd<'a>,
    block: u64,
    pool: Pool,
    /// Most reads, and most writes, in flight at once.
    depth: usize,
    ops: BTreeMap<u64, Op>,
    /// Requests in flight by direction: `[reads, writes]`.
    flying: [usize; 2],
    /// Most of each at once.
    most: [usize; 2],
    /// Chunks read and waiting in the buffer for a write slot, in the order they were read.
    ready: VecDeque<Op>,
    next_tag: u64,
    written: Written,
    stop: Option<Stop>,
    max_in_flight: usize,
}

fn slot(dir: Dir) -> usize {
    match dir {
        Dir::Read => 0,
        Dir::Write => 1,
    }
}

impl Pipeline<'_, '_> {
    fn submit(&mut self, op: Op) {
        let (fd, file_off) = match op.dir {
            Dir::Read => (self.src, op.chunk.src + op.done),
            Dir::Write => (self.dst, op.chunk.dst + op.done),
        };
        let tag = self.next_tag;
        self.next_tag += 1;
        let (Ok(buf_off), Ok(len)) = (
            usize::try_from(op.buf.start + op.done),
            usize::try_from(op.chunk.len - op.done),
        ) else {
            self.release(op);
            self.fail(Stop::Push(PushError::TooLong(usize::MAX)));
            return;
        };
        match self.queue.push(op.dir, fd, buf_off, len, file_off, tag) {
            Ok(()) => {
                self.ops.insert(tag, op);
                self.max_in_flight = self.max_in_flight.max(self.ops.len());
                let i = slot(op.dir);
                self.flying[i] += 1;
                self.most[i] = self.most[i].max(self.flying[i]);
            }
            Err(e) => {
                self.release(op);
                self.fail(Stop::Push(e));
            }
        }
    }

    fn release(&mut self, op: Op) {
        // The range came from this pool and is freed once: this cannot fail.
        let _ = self.pool.free(op.buf.start);
    }

    fn fail(&mut self, why: Stop) {
        if self.stop.is_none() {
            self.stop = Some(why);
        }
    }

    fn stopping(&self) -> bool {
        self.stop.is_some()
    }

    /// Room for one more request in `dir`.
    fn room(&self, dir: Dir) -> bool {
        self.flying[slot(dir)] < self.depth
    }

    /// Writes the chunks read so far while there is room for writes; once stopping, gives
    /// their buffer back instead (they were never written).
    fn start_writes(&mut self) {
        while self.stopping() || self.room(Dir::Write) {
            let Some(op) = self.ready.pop_front() else {
                break;
            };
            if self.stopping() {
                self.release(op);
            } else {
                self.submit(op);
            }
        }
    }

    fn complete(&mut self, c: Completion, progress: &mut dyn FnMut(u64)) {
        let Some(mut op) = self.ops.remove(&c.user_data) else {
            return;
        };
        self.flying[slot(op.dir)] -= 1;
        let want = op.chunk.len - op.done;
        let n = match c.result {
            Ok(n) => n as u64,
            Err(source) => {
                self.fail(Stop::Io {
                    dir: op.dir,
                    file_off: op.file_off(),
                    len: want,
                    source,
                });
                self.release(op);
                return;
            }
        };
        if op.dir == Dir::Write {
            self.written.insert(op.file_off(), n.min(want));
            progress(self.written.bytes());
        }
        if n == 0 {
            match op.dir {
                Dir::Read => self.fail(Stop::ShortSource {
                    file_off: op.file_off(),
                }),
                Dir::Write => self.fail(Stop::Io {
                    dir: Dir::Write,
                    file_off: op.file_off(),
                    len: want,
                    source: io::Error::from(io::ErrorKind::WriteZero),
                }),
            }
            self.release(op);
            return;
        }
        if n < want && !n.is_multiple_of(self.block) {
            self.fail(Stop::UnalignedShort {
                dir: op.dir,
                file_off: op.file_off(),
                got: usize::try_from(n).unwrap_or(usize::MAX),
            });
            self.release(op);
            return;
        }
        op.done += n.min(want);
        if self.stopping() {
            self.release(op);
            return;
        }
        if op.done < op.chunk.len {
            // A short transfer: ask for the rest.
            self.submit(op);
        } else if op.dir == Dir::Read {
            self.ready.push_back(Op {
                dir: Dir::Write,
                done: 0,
                ..op
            });
        } else {
            self.release(op);
        }
    }
}

/// The two ends of a copy, both open with O_DIRECT.
#[derive(Debug, Clone, Copy)]
pub struct Ends<'a> {
    /// Read from.
    pub src: BorrowedFd<'a>,
    /// Written to.
    pub dst: BorrowedFd<'a>,
}

/// Runs the pipeline over `plan`'s O_DIRECT chunks with `queue`'s buffer between `ends`,
/// with at most `depth` reads and `depth` writes in flight (at least one of each).
/// `progress` gets the number of destination bytes written after each write completes.
/// `cancel` is checked before each new chunk and after each wait.
pub fn run(
    queue: &mut dyn Queue,
    depth: usize,
    plan: &Plan,
    ends: Ends<'_>,
    mem_align: u64,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Outcome {
    let page = crate::sys::page_size() as u64;
    let usable = queue.buffer_len() as u64 / page * page;
    let pool = match Pool::new(usable, page) {
        Ok(p) => p,
        Err(e) => {
            return Outcome {
                written: Written::default(),
                stop: Some(Stop::Pool(e)),
                max_in_flight: 0,
                #[cfg(test)]
                max_by_dir: [0; 2],
            }
        }
    };
    let mut p = Pipeline {
        queue,
        src: ends.src,
        dst: ends.dst,
        block: plan.block,
        pool,
        depth: depth.max(1),
        ops: BTreeMap::new(),
        flying: [0; 2],
        most: [0; 2],
        ready: VecDeque::new(),
        next_tag: 1,
        written: Written::default(),
        stop: None,
        max_in_flight: 0,
    };
    let align = mem_align.max(page);
    let mut chunks = plan.chunks().peekable();
    let mut done = Vec::new();
    loop {
        if cancel.load(Ordering::Relaxed) {
            p.fail(Stop::Cancelled);
        }
        // Chunks already read go first: their buffer is taken until they are written.
        p.start_writes();
        while !p.stopping() && p.room(Dir::Read) {
            let Some(chunk) = chunks.peek().copied() else {
                break;
            };
            let buf = match p.pool.alloc(chunk.len, align) {
                Ok(r) => r,
                Err(e) if p.ops.is_empty() && p.ready.is_empty() => {
                    // Not even one chunk fits the buffer.
                    p.fail(Stop::Pool(e));
                    break;
                }
                Err(_) => break,
            };
            chunks.next();
            p.submit(Op {
                chunk,
                buf,
                dir: Dir::Read,
                done: 0,
            });
        }
        // Nothing in flight: nothing waits in `ready` either (with no write in flight,
        // `start_writes` wrote it, or gave it back when stopping).
        if p.ops.is_empty() {
            break;
        }
        match p.queue.wait(&mut done) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Nothing more can be reaped; the queue's Drop deals with what is left.
                p.fail(Stop::Wait(e));
                break;
            }
        }
        for c in done.drain(..) {
            p.complete(c, progress);
        }
    }
    Outcome {
        written: p.written,
        stop: p.stop,
        max_in_flight: p.max_in_flight,
        #[cfg(test)]
        max_by_dir: p.most,
    }
}
