//! The bare read loop of fio 3.33's io_uring engine, a baseline for `p2pmem bench`
//! (`scripts/bench` runs it beside fio):
//!
//! ```sh
//! cargo run --release -p p2pmem-linux --example uring_loop -- DEV read|randread BS DEPTH SECS SIZE [WORK_NS]
//! ```
//!
//! It makes the same system calls as fio's job, and nothing else: the ring set up with
//! `IORING_SETUP_COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN` and `CQSIZE` = DEPTH (fio's
//! `io_uring_setup`, seen with strace), falling back to no flags on EINVAL; DEPTH buffers
//! of BS bytes; each request handed to the kernel as it is queued with
//! `io_uring_enter(1, 0, GETEVENTS)`; when DEPTH are in flight, the completions already in
//! the ring are reaped, and only if there are none `io_uring_enter(0, 1, GETEVENTS)`
//! waits for one. No statistics, no checks beyond the result of each request. Reads
//! only, sequential (wrapping at SIZE) or uniformly random BS-aligned offsets below
//! SIZE; DEV is opened `O_RDONLY | O_DIRECT` and never written.
//!
//! Prints `MiB/s IOPS` on one line. Whatever `p2pmem bench` loses against this loop is
//! in its own code; whatever this loop loses against fio is outside the I/O calls.
//!
//! An optional seventh argument, WORK (nanoseconds, default 0, at most 1,000,000), makes
//! the loop spend that long on the CPU in user space after handing each request to the
//! kernel, as fio's job spends time on its own bookkeeping (its clocks, latency samples
//! and statistics: about 0.9 µs of user time per 4 KiB request on the README's machine).
//! It is an experiment, not a mode: it shows how the time a submitter spends between its
//! calls, not the calls, changes what a device served by a kernel thread delivers.

#![expect(
    unsafe_code,
    reason = "pushing io_uring entries whose buffers the kernel fills after the push"
)]

use io_uring::{opcode, types, IoUring};
use p2pmem_model::size::parse_size;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `IORING_ENTER_GETEVENTS` (include/uapi/linux/io_uring.h, Linux 5.1).
const GETEVENTS: u32 = 1;

const USAGE: &str = "usage: uring_loop DEV read|randread BS DEPTH SECS SIZE [WORK_NS]";

/// The ring fio sets up, or a plain one on a kernel that refuses those flags.
fn ring(depth: u32) -> std::io::Result<IoUring> {
    let fio = IoUring::builder()
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(depth)
        .build(depth);
    match fio {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::new(depth),
        other => other,
    }
}

/// A positive size (`4096`, `4K`, `1M`: binary units, as the CLI takes them).
fn number(s: Option<&String>, what: &str) -> Result<u64, String> {
    let n = parse_size(s.ok_or(USAGE)?).map_err(|e| format!("{what}: {e}"))?;
    if n == 0 {
        return Err(format!("{what}: must be more than 0"));
    }
    Ok(n)
}

fn run() -> Result<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dev = args.first().ok_or(USAGE)?;
    let random = match args.get(1).map(String::as_str) {
        Some("read") => false,
        Some("randread") => true,
        _ => return Err(USAGE.into()),
    };
    let bs = number(args.get(2), "BS")?;
    let depth = number(args.get(3), "DEPTH")?;
    let secs = args
        .get(4)
        .ok_or(USAGE)?
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .ok_or("SECS: not a positive number of seconds")?;
    let size = number(args.get(5), "SIZE")?;
    let work = match args.get(6) {
        None => Duration::ZERO,
        Some(w) => w
            .parse::<u64>()
            .ok()
            .filter(|ns| *ns <= 1_000_000)
            .map(Duration::from_nanos)
            .ok_or("WORK_NS: a whole number of nanoseconds up to 1000000")?,
    };
    if args.len() > 7 {
        return Err(USAGE.into());
    }
    if bs % 512 != 0 || bs > 64 << 20 || depth > 1024 || size < bs || secs > 3600.0 {
        return Err(format!(
            "BS must be a multiple of 512 up to 64M, DEPTH at most 1024, SIZE at least BS, \
             SECS at most 3600 (got {bs}, {depth}, {size}, {secs})"
        ));
    }
    let (bs, depth, blocks) = (bs as usize, depth as usize, size / bs);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .map_err(|e| format!("{dev}: {e}"))?;
    let mut ring = ring(depth as u32).map_err(|e| format!("io_uring_setup: {e}"))?;
    let layout = std::alloc::Layout::from_size_align(depth * bs, 4096)
        .map_err(|e| format!("buffer: {e}"))?;
    // SAFETY: the layout has a non-zero size (depth and bs are at least 1).
    let buf = unsafe { std::alloc::alloc_zeroed(layout) };
    if buf.is_null() {
        return Err(format!("cannot allocate {} bytes", depth * bs));
    }
    let fd = types::Fd(file.as_raw_fd());
    let mut free: Vec<usize> = (0..depth).rev().collect();
    let (mut next, mut seed, mut in_flight, mut ios) = (0u64, 0x9e37_79b9_7f4a_7c15u64, 0, 0u64);
    let mut failed = None;
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    loop {
        let going = failed.is_none() && Instant::now() < until;
        while going && in_flight < depth {
            let Some(slot) = free.pop() else { break };
            let block = if random {
                // xorshift64*, as good as fio's default for this purpose.
                seed ^= seed >> 12;
                seed ^= seed << 25;
                seed ^= seed >> 27;
                seed.wrapping_mul(0x2545_f491_4f6c_dd1d) % blocks
            } else {
                let b = next;
                next = (next + 1) % blocks;
                b
            };
            let entry = opcode::Read::new(fd, buf.wrapping_add(slot * bs), bs as u32)
                .offset(block * bs as u64)
                .build()
                .user_data(slot as u64);
            // SAFETY: the entry points at slot `slot` of `buf`, `bs` bytes inside the
            // allocation, which is freed only after every request in flight completed (or
            // leaked, below); a slot is not reused before its completion is reaped.
            unsafe { ring.submission().push(&entry) }.map_err(|_| "submission queue full")?;
            // SAFETY: no signal mask is passed; the ring's memory is owned by `ring`.
            unsafe {
                ring.submitter()
                    .enter::<libc::sigset_t>(1, 0, GETEVENTS, None)
            }
            .map_err(|e| format!("io_uring_enter: {e}"))?;
            in_flight += 1;
            if !work.is_zero() {
                let t = Instant::now();
                while t.elapsed() < work {
                    std::hint::spin_loop();
                }
            }
        }
        if in_flight == 0 {
            break;
        }
        let mut reaped = 0;
        for pass in 0..2 {
            for cqe in ring.completion() {
                free.push(cqe.user_data() as usize);
                reaped += 1;
                if cqe.result() == bs as i32 {
                    ios += 1;
                } else {
                    failed.get_or_insert(cqe.result());
                }
            }
            if reaped > 0 || pass == 1 {
                break;
            }
            // SAFETY: as above.
            match unsafe {
                ring.submitter()
                    .enter::<libc::sigset_t>(0, 1, GETEVENTS, None)
            } {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Requests may still be in flight: never free the buffer.
                    return Err(format!("io_uring_enter: {e}"));
                }
            }
        }
        in_flight -= reaped;
    }
    let seconds = start.elapsed().as_secs_f64();
    // SAFETY: nothing is in flight any more; `buf` came from `alloc_zeroed(layout)`.
    unsafe { std::alloc::dealloc(buf, layout) };
    if let Some(res) = failed {
        return Err(format!(
            "a read returned {res} (a negative errno, or a short read)"
        ));
    }
    let bytes = ios as f64 * bs as f64;
    Ok(format!(
        "{:.1} {:.0}",
        bytes / 1048576.0 / seconds,
        ios as f64 / seconds
    ))
}

fn main() -> ExitCode {
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("uring_loop: {e}");
            ExitCode::from(2)
        }
    }
}
