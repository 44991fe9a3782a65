//! The kernel ring buffer: read and clear it with `klogctl(2)`, and parse its records.
//!
//! `klogctl(SYSLOG_ACTION_READ_ALL)` returns records as `<P>[SSSSS.UUUUUU] text\n`, where
//! `P` is `facility << 3 | level`, the timestamp appears with `CONFIG_PRINTK_TIME` and a
//! caller id such as `[  T123]` follows it with `CONFIG_PRINTK_CALLER`. `dmesg` output
//! has the same shape without `<P>`. [`parse_klog`] is pure and takes bytes, so it is
//! tested on captured logs and fuzzed; the I/O half only moves bytes.

use crate::sys;
use rustix::io::Errno;
use std::io;

pub use p2pmem_model::klog::{dmesg_lines, klog_texts, parse_klog, KlogLine};

/// Why a `klogctl` call failed.
#[derive(Debug, thiserror::Error)]
#[error("klogctl({action}) failed ({errno}): {hint}")]
pub struct KlogError {
    /// `CLEAR` or `READ_ALL`.
    pub action: &'static str,
    /// The errno name.
    pub errno: String,
    /// What to do about it.
    pub hint: &'static str,
    /// The system error.
    #[source]
    pub source: io::Error,
}

impl KlogError {
    fn new(action: &'static str, source: io::Error) -> Self {
        let errno = source.raw_os_error().map(Errno::from_raw_os_error);
        let hint = match errno {
            Some(Errno::PERM | Errno::ACCESS) => {
                "reading or clearing the kernel log needs root (CAP_SYSLOG; kernel.dmesg_restrict)"
            }
            Some(Errno::NOSYS) => "this kernel has no syslog(2) (CONFIG_PRINTK off?)",
            _ => "unexpected error from syslog(2)",
        };
        Self {
            action,
            errno: sys::io_error_label(&source),
            hint,
            source,
        }
    }
}

/// Access to the kernel log. [`Syslog`] is the real one; tests script a fake.
pub trait KernelLog {
    /// Forget everything logged so far (`SYSLOG_ACTION_CLEAR`).
    fn clear(&mut self) -> Result<(), KlogError>;
    /// Everything logged since the last clear, raw (`SYSLOG_ACTION_READ_ALL`).
    fn read_all(&mut self) -> Result<Vec<u8>, KlogError>;
}

/// The running kernel's ring buffer, through `klogctl(2)`. Needs root.
#[derive(Debug, Default, Clone, Copy)]
pub struct Syslog;

impl KernelLog for Syslog {
    fn clear(&mut self) -> Result<(), KlogError> {
        sys::klog_clear().map_err(|e| KlogError::new("CLEAR", e))
    }

    fn read_all(&mut self) -> Result<Vec<u8>, KlogError> {
        sys::klog_read_all().map_err(|e| KlogError::new("READ_ALL", e))
    }
}

#[cfg(test)]
mod tests;
