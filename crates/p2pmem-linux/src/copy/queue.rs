//! The I/O queue the copy engine drives: it owns the one buffer, takes O_DIRECT reads
//! and writes between a file and a range of that buffer, and hands back completions
//! tagged with the caller's `user_data`.
//!
//! Two implementations: [`UringQueue`](super::uring::UringQueue) keeps many requests in
//! flight; [`SyncQueue`] runs each request at once with `pread`/`pwrite` (queue depth 1),
//! the fallback when io_uring is unavailable.

use crate::p2pbuf::{DmaBuffer, Location};
use crate::sys;
use rustix::fd::BorrowedFd;
use std::collections::VecDeque;
use std::io;

/// Which way a request moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// File to buffer.
    Read,
    /// Buffer to file.
    Write,
}

/// One finished request.
#[derive(Debug)]
pub struct Completion {
    /// The tag given at push.
    pub user_data: u64,
    /// Bytes moved, or the error.
    pub result: io::Result<usize>,
}

/// A request the queue refused before it reached the kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The buffer range is outside the buffer.
    #[error("buffer range of {len} bytes at {offset} is outside the {buf_len}-byte buffer")]
    OutOfBuffer {
        /// Offset in the buffer.
        offset: usize,
        /// Length.
        len: usize,
        /// Buffer length.
        buf_len: usize,
    },
    /// The range overlaps a request still in flight.
    #[error("buffer range of {len} bytes at {offset} overlaps a request still in flight")]
    Busy {
        /// Offset in the buffer.
        offset: usize,
        /// Length.
        len: usize,
    },
    /// The tag is already in flight.
    #[error("user_data {0} is already in flight")]
    DuplicateTag(u64),
    /// The length does not fit one request.
    #[error("a request of {0} bytes is too long")]
    TooLong(usize),
    /// The submission queue is full even after submitting.
    #[error("the io_uring submission queue is full")]
    Full,
}

/// An I/O queue over one owned buffer. `Send`: each job of a bench runs its own queue on
/// its own thread.
pub trait Queue: Send {
    /// Which engine this is, for reports.
    fn name(&self) -> &'static str;
    /// Where the buffer lives.
    fn location(&self) -> Location;
    /// The buffer's usable length.
    fn buffer_len(&self) -> usize;
    /// Queues a transfer of `len` bytes between `fd` at `file_off` and the buffer at
    /// `buf_off`. The range stays the kernel's until its completion is returned by
    /// [`wait`](Self::wait).
    fn push(
        &mut self,
        dir: Dir,
        fd: BorrowedFd<'_>,
        buf_off: usize,
        len: usize,
        file_off: u64,
        user_data: u64,
    ) -> Result<(), PushError>;
    /// Submits what was queued and waits for at least one completion (when any request
    /// is in flight), appending every completion available to `out`. `Interrupted`
    /// means a signal arrived: check for cancellation and call again.
    fn wait(&mut self, out: &mut Vec<Completion>) -> io::Result<()>;
    /// Requests pushed and not yet returned by `wait`.
    fn in_flight(&self) -> usize;
    /// Most requests the kernel can be working on at once through this queue.
    fn max_concurrency(&self) -> usize {
        usize::MAX
    }
}

/// Runs each request at once with `pread`/`pwrite` (retrying EINTR) and queues its
/// completion: the same interface at queue depth 1.
pub struct SyncQueue {
    buf: Box<dyn DmaBuffer>,
    done: VecDeque<Completion>,
}

impl SyncQueue {
    /// A queue over `buf`.
    pub fn new(buf: Box<dyn DmaBuffer>) -> Self {
        Self {
            buf,
            done: VecDeque::new(),
        }
    }
}

impl Queue for SyncQueue {
    fn name(&self) -> &'static str {
        "sync"
    }

    fn location(&self) -> Location {
        self.buf.location()
    }

    fn buffer_len(&self) -> usize {
        self.buf.len()
    }

    fn push(
        &mut self,
        dir: Dir,
        fd: BorrowedFd<'_>,
        buf_off: usize,
        len: usize,
        file_off: u64,
        user_data: u64,
    ) -> Result<(), PushError> {
        let buf_len = self.buf.len();
        let out_of_buffer = || PushError::OutOfBuffer {
            offset: buf_off,
            len,
            buf_len,
        };
        let result = match dir {
            Dir::Read => {
                let io = self.buf.io_mut(buf_off, len).map_err(|_| out_of_buffer())?;
                sys::pread(fd, io, file_off)
            }
            Dir::Write => {
                let io = self.buf.io(buf_off, len).map_err(|_| out_of_buffer())?;
                sys::pwrite(fd, io, file_off)
            }
        };
        self.done.push_back(Completion { user_data, result });
        Ok(())
    }

    fn wait(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        out.extend(self.done.drain(..));
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }

    fn max_concurrency(&self) -> usize {
        1
    }
}
