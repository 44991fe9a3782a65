//! The bench loop: keeps `depth` requests of `bs` bytes in flight on one device, each in
//! its own slot of the one buffer, until the time is up; times every request from its
//! push to the reaping of its completion.
//!
//! Every request in flight is in a table keyed by `user_data` (slot, offset, start time)
//! until its completion is reaped. When the time is up, on an error or a cancellation,
//! no new request is started and every request in flight is reaped first.

use super::histogram::Histogram;
use super::offsets::Offsets;
use crate::copy::{Completion, Dir, PushError, Queue};
use rustix::fd::BorrowedFd;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Why the loop stopped before its time.
#[derive(Debug)]
pub enum Stop {
    /// A request failed in the kernel.
    Io {
        /// File offset of the failed request.
        file_off: u64,
        /// The error.
        source: io::Error,
    },
    /// A request moved 0 bytes (end of file, or a write the device did not take).
    Zero {
        /// File offset.
        file_off: u64,
    },
    /// The queue refused a request.
    Push(PushError),
    /// Waiting for completions failed.
    Wait(io::Error),
}

/// What the loop did.
#[derive(Debug)]
pub struct Outcome {
    /// Bytes moved by completed requests.
    pub bytes: u64,
    /// Requests completed.
    pub ios: u64,
    /// Their latencies in nanoseconds.
    pub latency_ns: Histogram,
    /// From the first push to the last completion.
    pub elapsed: Duration,
    /// Why it stopped early, if it did.
    pub stop: Option<Stop>,
    /// The cancel flag stopped it.
    pub interrupted: bool,
}

/// A request in flight.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    slot: usize,
    file_off: u64,
    started: Instant,
}

/// The loop's fixed inputs.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Read or write.
    pub dir: Dir,
    /// Bytes per request; slot `i` of the buffer is `[i*bs, (i+1)*bs)`.
    pub bs: usize,
    /// Requests in flight (and slots in the buffer).
    pub depth: usize,
    /// How long to keep starting requests.
    pub time: Duration,
}

/// Runs the loop on `fd` (open with O_DIRECT) through `queue`, whose buffer holds at
/// least `depth * bs` bytes. `cancel` is checked before each batch of pushes after the
/// first.
pub fn run(
    queue: &mut dyn Queue,
    fd: BorrowedFd<'_>,
    p: Params,
    offsets: &mut Offsets,
    cancel: &AtomicBool,
) -> Outcome {
    let concurrency = p.depth.min(queue.max_concurrency()).max(1);
    let mut free: Vec<usize> = (0..p.depth).rev().collect();
    let mut flight: HashMap<u64, InFlight> = HashMap::with_capacity(p.depth);
    let mut done: Vec<Completion> = Vec::with_capacity(p.depth);
    let mut out = Outcome {
        bytes: 0,
        ios: 0,
        latency_ns: Histogram::new(),
        elapsed: Duration::ZERO,
        stop: None,
        interrupted: false,
    };
    let mut tag = 0u64;
    let start = Instant::now();
    let deadline = start + p.time;
    loop {
        if cancel.load(Ordering::Relaxed) {
            out.interrupted = true;
        }
        // The first batch always goes out, so every bench moves at least one request.
        let issuing =
            out.stop.is_none() && (tag == 0 || (!out.interrupted && Instant::now() < deadline));
        while issuing && flight.len() < concurrency {
            let Some(slot) = free.pop() else { break };
            let file_off = offsets.next_offset();
            tag += 1;
            let started = Instant::now();
            match queue.push(p.dir, fd, slot * p.bs, p.bs, file_off, tag) {
                Ok(()) => {
                    flight.insert(
                        tag,
                        InFlight {
                            slot,
                            file_off,
                            started,
                        },
                    );
                }
                Err(e) => {
                    free.push(slot);
                    out.stop = Some(Stop::Push(e));
                    break;
                }
            }
        }
        if flight.is_empty() {
            break;
        }
        match queue.wait(&mut done) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Nothing more can be reaped; the queue's Drop deals with what is left.
                out.stop.get_or_insert(Stop::Wait(e));
                break;
            }
        }
        let now = Instant::now();
        for c in done.drain(..) {
            let Some(f) = flight.remove(&c.user_data) else {
                continue;
            };
            free.push(f.slot);
            match c.result {
                Ok(0) => {
                    out.stop.get_or_insert(Stop::Zero {
                        file_off: f.file_off,
                    });
                }
                Ok(n) => {
                    out.bytes += n as u64;
                    out.ios += 1;
                    let ns = now.duration_since(f.started).as_nanos();
                    out.latency_ns.record(u64::try_from(ns).unwrap_or(u64::MAX));
                }
                Err(source) => {
                    out.stop.get_or_insert(Stop::Io {
                        file_off: f.file_off,
                        source,
                    });
                }
            }
        }
    }
    out.elapsed = start.elapsed();
    out
}
