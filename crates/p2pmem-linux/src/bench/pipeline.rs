//! The bench loop: keeps `depth` requests of `bs` bytes in flight on one device, each in
//! its own slot of the one buffer, until the time is up; times every request from its
//! push to the reaping of its completion.
//!
//! Every request in flight is in a table keyed by `user_data` (slot, offset, start time)
//! until its completion is reaped. When the time is up, on an error or a cancellation,
//! no new request is started and every request in flight is reaped first.
//!
//! A request that fails in the kernel is counted, as fio's `continue_on_error=io` does,
//! and its slot reused: a device with a few bad sectors is measured, and the report says
//! how many requests failed and where the first ones were. Only [`GIVE_UP_AFTER`]
//! failures in a row with none completing in between (a path the kernel refuses, a
//! device gone) stop the loop with the last error.

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

/// Failed requests in a row (none completing between them) after which the loop stops.
pub const GIVE_UP_AFTER: u64 = 64;

/// How many failed requests an [`Outcome`] keeps the details of.
pub const KEPT_ERRORS: usize = 8;

/// What the loop did.
#[derive(Debug)]
pub struct Outcome {
    /// Requests that failed in the kernel (counted, not stopping the loop).
    pub errors: u64,
    /// The first [`KEPT_ERRORS`] of them: file offset and error.
    pub first_errors: Vec<(u64, io::Error)>,
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
    let mut in_a_row = 0u64;
    let mut out = Outcome {
        errors: 0,
        first_errors: Vec::new(),
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
                    in_a_row = 0;
                    out.bytes += n as u64;
                    out.ios += 1;
                    let ns = now.duration_since(f.started).as_nanos();
                    out.latency_ns.record(u64::try_from(ns).unwrap_or(u64::MAX));
                }
                Err(source) => {
                    out.errors += 1;
                    in_a_row += 1;
                    if in_a_row >= GIVE_UP_AFTER {
                        out.stop.get_or_insert(Stop::Io {
                            file_off: f.file_off,
                            source,
                        });
                    } else if out.first_errors.len() < KEPT_ERRORS {
                        out.first_errors.push((f.file_off, source));
                    }
                }
            }
        }
    }
    out.elapsed = start.elapsed();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::offsets::Region;
    use crate::p2pbuf::Location;

    /// Completes every request at once: with EIO when its offset is in `bad`, else whole.
    struct Scripted {
        bad: Vec<u64>,
        done: Vec<Completion>,
    }

    impl Queue for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn location(&self) -> Location {
            Location::Host
        }
        fn buffer_len(&self) -> usize {
            1 << 20
        }
        fn push(
            &mut self,
            _dir: Dir,
            _fd: BorrowedFd<'_>,
            _buf_off: usize,
            len: usize,
            file_off: u64,
            user_data: u64,
        ) -> Result<(), PushError> {
            let result = if self.bad.contains(&file_off) {
                Err(io::Error::from_raw_os_error(5))
            } else {
                Ok(len)
            };
            self.done.push(Completion { user_data, result });
            Ok(())
        }
        fn wait(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
            out.append(&mut self.done);
            Ok(())
        }
        fn in_flight(&self) -> usize {
            self.done.len()
        }
    }

    fn run_with(bad: Vec<u64>, time: Duration) -> Outcome {
        let mut q = Scripted {
            bad,
            done: Vec::new(),
        };
        let region = Region {
            start: 0,
            end: 64 * 4096,
        };
        let mut offsets = Offsets::new(region, 4096, false, 1).unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let p = Params {
            dir: Dir::Read,
            bs: 4096,
            depth: 4,
            time,
        };
        run(
            &mut q,
            rustix::fd::AsFd::as_fd(&null),
            p,
            &mut offsets,
            &AtomicBool::new(false),
        )
    }

    #[test]
    fn failed_requests_are_counted_and_the_bench_goes_on() {
        let out = run_with(vec![8192, 40960], Duration::from_millis(50));
        assert!(out.stop.is_none(), "{:?}", out.stop);
        assert!(out.ios > 100, "it went on: {}", out.ios);
        assert!(out.errors >= 2, "{}", out.errors);
        // Sequential offsets wrap around: every pass fails the same two.
        assert_eq!(out.first_errors.len(), KEPT_ERRORS.min(out.errors as usize));
        assert_eq!(out.first_errors[0].0, 8192);
        assert_eq!(out.first_errors[1].0, 40960);
        assert_eq!(out.bytes, out.ios * 4096);
    }

    #[test]
    fn a_device_that_fails_everything_stops_the_bench() {
        let all: Vec<u64> = (0..64).map(|i| i * 4096).collect();
        let out = run_with(all, Duration::from_secs(30));
        assert!(matches!(out.stop, Some(Stop::Io { .. })), "{:?}", out.stop);
        assert_eq!(out.errors, GIVE_UP_AFTER);
        assert_eq!(out.ios, 0);
        assert!(out.elapsed < Duration::from_secs(5), "it gave up at once");
    }
}
