//! The bench loop: keeps `depth` requests of `bs` bytes in flight on one device, each in
//! its own slot of the one buffer, until the time is up; times every request from its
//! push to the reaping of its completion.
//!
//! Every request in flight is in a table by its buffer slot, which is its `user_data`
//! (offset, start time), until its completion is reaped. When the time is up, on an error
//! or a cancellation, no new request is started and every request in flight is reaped
//! first.
//!
//! A request that fails in the kernel is counted, as fio's `continue_on_error=io` does,
//! and its slot reused: a device with a few bad sectors is measured, and the report says
//! how many requests failed and where the first ones were. Only [`GIVE_UP_AFTER`]
//! failures in a row with none completing in between (a path the kernel refuses, a
//! device gone) stop the loop with the last error.
//!
//! Each job of a bench runs this loop on its own thread and queue. The jobs share two
//! flags: the cancel flag (Ctrl-C) and `halt`, which a job that stops on an error sets so
//! that the others start nothing more and end too, instead of running out their time.

use super::histogram::Histogram;
use super::offsets::Offsets;
use crate::copy::{Completion, Dir, PushError, Queue};
use rustix::fd::BorrowedFd;
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

/// A failed request the loop kept the details of.
#[derive(Debug)]
pub struct Failed {
    /// Its file offset.
    pub file_off: u64,
    /// The error.
    pub source: io::Error,
    /// When its completion was reaped (to order the failures of several jobs).
    pub at: Instant,
}

/// The flags a loop shares with the other jobs of its bench and the signal handler.
#[derive(Debug, Clone, Copy)]
pub struct Flags<'a> {
    /// Set by SIGINT/SIGTERM: stop starting requests, reap, report `interrupted`.
    pub cancel: &'a AtomicBool,
    /// Set by a loop that stopped on an error: the others stop starting requests too.
    pub halt: &'a AtomicBool,
}

/// What the loop did.
#[derive(Debug)]
pub struct Outcome {
    /// Requests that failed in the kernel (counted, not stopping the loop).
    pub errors: u64,
    /// The first [`KEPT_ERRORS`] of them.
    pub first_errors: Vec<Failed>,
    /// Bytes moved by completed requests.
    pub bytes: u64,
    /// Requests completed.
    pub ios: u64,
    /// Their latencies in nanoseconds.
    pub latency_ns: Histogram,
    /// When the first request was pushed.
    pub started: Instant,
    /// From the first push to the last completion.
    pub elapsed: Duration,
    /// Why it stopped early, if it did.
    pub stop: Option<Stop>,
    /// The cancel flag stopped it.
    pub interrupted: bool,
}

/// A request in flight (in its slot's entry of the table).
#[derive(Debug, Clone, Copy)]
struct InFlight {
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
    /// When to stop starting requests (one instant for all the jobs of a bench).
    pub until: Instant,
}

/// Runs the loop on `fd` (open with O_DIRECT) through `queue`, whose buffer holds at
/// least `depth * bs` bytes. The flags are checked before each batch of pushes after
/// the first (`halt` before the first too); a stop sets `halt`.
pub fn run(
    queue: &mut dyn Queue,
    fd: BorrowedFd<'_>,
    p: Params,
    offsets: &mut Offsets,
    flags: Flags<'_>,
) -> Outcome {
    let concurrency = p.depth.min(queue.max_concurrency()).max(1);
    // The slots not in flight; the others are in `flight`, indexed by slot: a slot carries
    // one request at a time, so it is the request's tag.
    let mut free: Vec<usize> = (0..p.depth).rev().collect();
    let mut flight: Vec<Option<InFlight>> = vec![None; p.depth];
    let mut done: Vec<Completion> = Vec::with_capacity(p.depth);
    let mut in_a_row = 0u64;
    let mut out = Outcome {
        errors: 0,
        first_errors: Vec::new(),
        bytes: 0,
        ios: 0,
        latency_ns: Histogram::new(),
        started: Instant::now(),
        elapsed: Duration::ZERO,
        stop: None,
        interrupted: false,
    };
    let mut first = true;
    let start = Instant::now();
    out.started = start;
    let deadline = p.until;
    loop {
        if flags.cancel.load(Ordering::Relaxed) {
            out.interrupted = true;
        }
        // The first batch always goes out (unless another job failed already), so every
        // bench moves at least one request.
        let issuing = out.stop.is_none()
            && !flags.halt.load(Ordering::Relaxed)
            && (first || (!out.interrupted && Instant::now() < deadline));
        first = false;
        while issuing && p.depth - free.len() < concurrency {
            let Some(slot) = free.pop() else { break };
            let file_off = offsets.next_offset();
            let started = Instant::now();
            match queue.push(p.dir, fd, slot * p.bs, p.bs, file_off, slot as u64) {
                Ok(()) => {
                    flight[slot] = Some(InFlight { file_off, started });
                }
                Err(e) => {
                    free.push(slot);
                    out.stop = Some(Stop::Push(e));
                    break;
                }
            }
        }
        if free.len() == p.depth {
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
            let slot = usize::try_from(c.user_data).unwrap_or(usize::MAX);
            let Some(f) = flight.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            free.push(slot);
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
                        out.first_errors.push(Failed {
                            file_off: f.file_off,
                            source,
                            at: now,
                        });
                    }
                }
            }
        }
        if out.stop.is_some() {
            flags.halt.store(true, Ordering::Relaxed);
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

    /// One scripted job: [`run_jobs`] with a single entry.
    fn run_with(bad: Vec<u64>, time: Duration) -> Outcome {
        run_jobs(vec![bad], time).pop().expect("one job")
    }

    #[test]
    fn failed_requests_are_counted_and_the_bench_goes_on() {
        let out = run_with(vec![8192, 40960], Duration::from_millis(50));
        assert!(out.stop.is_none(), "{:?}", out.stop);
        assert!(out.ios > 100, "it went on: {}", out.ios);
        assert!(out.errors >= 2, "{}", out.errors);
        // Sequential offsets wrap around: every pass fails the same two.
        assert_eq!(out.first_errors.len(), KEPT_ERRORS.min(out.errors as usize));
        assert_eq!(out.first_errors[0].file_off, 8192);
        assert_eq!(out.first_errors[1].file_off, 40960);
        assert_eq!(out.bytes, out.ios * 4096);
    }

    /// Runs one scripted job per entry of `bad` on its own thread, sharing the flags.
    fn run_jobs(bad: Vec<Vec<u64>>, time: Duration) -> Vec<Outcome> {
        let (cancel, halt) = (AtomicBool::new(false), AtomicBool::new(false));
        let flags = Flags {
            cancel: &cancel,
            halt: &halt,
        };
        let null = std::fs::File::open("/dev/null").unwrap();
        let fd = rustix::fd::AsFd::as_fd(&null);
        let p = Params {
            dir: Dir::Read,
            bs: 4096,
            depth: 4,
            until: Instant::now() + time,
        };
        std::thread::scope(|s| {
            let jobs: Vec<_> = bad
                .into_iter()
                .map(|bad| {
                    s.spawn(move || {
                        let mut q = Scripted {
                            bad,
                            done: Vec::new(),
                        };
                        let region = Region {
                            start: 0,
                            end: 64 * 4096,
                        };
                        let mut offsets = Offsets::new(region, 4096, false, 1).unwrap();
                        run(&mut q, fd, p, &mut offsets, flags)
                    })
                })
                .collect();
            jobs.into_iter().map(|j| j.join().unwrap()).collect()
        })
    }

    #[test]
    fn errors_are_counted_per_job_and_a_job_with_bad_blocks_stops_no_one() {
        let out = run_jobs(
            vec![vec![], vec![8192], vec![], vec![4096, 12288]],
            Duration::from_millis(50),
        );
        for (i, o) in out.iter().enumerate() {
            assert!(o.stop.is_none(), "job {i}: {:?}", o.stop);
            assert!(o.ios > 100, "job {i} went on: {}", o.ios);
        }
        assert_eq!((out[0].errors, out[2].errors), (0, 0));
        assert!(out[1].errors >= 1 && out[3].errors >= 2);
        assert_eq!(out[3].first_errors[0].file_off, 4096);
        assert_eq!(out[3].first_errors[1].file_off, 12288);
    }

    #[test]
    fn a_job_that_gives_up_stops_the_others_at_once() {
        let all: Vec<u64> = (0..64).map(|i| i * 4096).collect();
        let started = Instant::now();
        let out = run_jobs(vec![vec![], all, vec![], vec![]], Duration::from_secs(30));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no job ran out its time"
        );
        assert!(
            matches!(out[1].stop, Some(Stop::Io { .. })),
            "{:?}",
            out[1].stop
        );
        assert_eq!(out[1].errors, GIVE_UP_AFTER);
        for i in [0, 2, 3] {
            assert!(out[i].stop.is_none(), "job {i}: {:?}", out[i].stop);
            assert_eq!(out[i].errors, 0);
            assert!(!out[i].interrupted, "halted, not interrupted");
        }
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
