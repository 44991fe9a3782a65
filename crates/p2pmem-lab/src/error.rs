//! Errors of the lab: each names the file, the command or the topology key involved and
//! carries the underlying cause as `#[source]`, so a user can act on it.

use p2pmem_model::limits::Bound;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while building a kernel, an initramfs or running a guest.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A file-system operation failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done ("cannot read", "cannot create", ...).
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than anything of its kind can be (or endless).
    #[error("{}: more than {} bytes, larger than {} can be", path.display(), bound.max, bound.what)]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound it broke.
        bound: p2pmem_model::limits::Bound,
    },

    /// A host program could not be started.
    #[error("cannot start `{program}` (is it installed? run scripts/setup-host as root)")]
    Spawn {
        /// The program name.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A host program ran and failed.
    #[error("`{command}` failed ({status}){}", log_hint(log, tail))]
    Command {
        /// The command line, for the user to rerun.
        command: String,
        /// Its exit status, as text.
        status: String,
        /// The log file holding its full output, if any.
        log: Option<PathBuf>,
        /// The last lines of its output.
        tail: String,
    },

    /// A required host file is missing.
    #[error("{what} not found at {}: {hint}", path.display())]
    Missing {
        /// What it is ("kernel source tarball", "busybox").
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// How to get it.
        hint: &'static str,
    },

    /// Options of the kernel fragment did not survive `make olddefconfig`.
    #[error("kernel {line}: {} did not stick in {} (a dependency is missing from the fragment, or the option does not exist in {line}: give it a condition such as [<{line}])", options.join(", "), config.display())]
    KernelOption {
        /// The kernel line.
        line: String,
        /// The option lines, e.g. `CONFIG_PCI_P2PDMA=y`.
        options: Vec<String>,
        /// The resulting `.config`.
        config: PathBuf,
    },

    /// The kernel config fragment is malformed.
    #[error(transparent)]
    Fragment(#[from] crate::build::FragmentError),

    /// A kernel source cannot be used: a pinned package that cannot be fetched or does
    /// not match its pin, a tree or config that is not a kernel's.
    #[error("kernel source {origin}: {why}")]
    Source {
        /// The package (`linux-source-6.12=6.12.118-1~deb12u1`) or path.
        origin: String,
        /// What is wrong, and what to do.
        why: String,
    },

    /// A topology file is invalid.
    #[error("topology {}: {message}", path.display())]
    Topology {
        /// The file (or `<embedded>/NAME`).
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },

    /// The busybox to put in the guest is dynamically linked: `/init` runs it before
    /// anything else, so it must be static.
    #[error("{} is dynamically linked (it has an ELF interpreter); the guest's busybox must be static: install busybox-static (scripts/setup-host)", path.display())]
    NotStatic {
        /// The binary.
        path: PathBuf,
    },

    /// The shared libraries of a program for the guest cannot be listed.
    #[error("cannot put {} in the guest: {why}", path.display())]
    Libraries {
        /// The program.
        path: PathBuf,
        /// What `ldd` said, or what is wrong with the path.
        why: String,
    },

    /// A file is not a 64-bit little-endian ELF.
    #[error("{} is not an x86_64 ELF executable: {why}", path.display())]
    NotElf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },

    /// The guest panicked, hung or QEMU died: with the console tail.
    #[error("guest run failed: {why}\nconsole log: {}\n--- last console lines ---\n{tail}", console.display())]
    Guest {
        /// What happened.
        why: String,
        /// The full console log.
        console: PathBuf,
        /// Its last lines.
        tail: String,
    },

    /// The guest's framed output could not be decoded.
    #[error("guest protocol error at console line {line}: {why}")]
    Protocol {
        /// 1-based line of the console log.
        line: usize,
        /// What is wrong.
        why: String,
    },

    /// A plan step did not give what its caller needs.
    #[error("lab plan step `{step}`: {why}")]
    Step {
        /// The step's name.
        step: String,
        /// What is missing.
        why: String,
    },

    /// QEMU's DMA trace does not hold a complete measurement window.
    #[error("DMA trace {}: {why}", trace.display())]
    DmaTrace {
        /// The trace file.
        trace: PathBuf,
        /// What is missing.
        why: String,
    },

    /// A frame from the guest does not hold the document it should.
    #[error("cannot parse {what} from the guest")]
    Json {
        /// Which document.
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

fn log_hint(log: &Option<PathBuf>, tail: &str) -> String {
    let mut s = String::new();
    if let Some(log) = log {
        s.push_str(&format!("; full log: {}", log.display()));
    }
    if !tail.is_empty() {
        s.push_str("\n--- last lines ---\n");
        s.push_str(tail);
    }
    s
}

/// Shorthand for the lab's results.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

/// Reads all of `path`, refusing more than `bound.max` bytes (a FIFO or `/dev/zero`
/// named as a topology is an error, not a hang).
pub(crate) fn read_bounded(path: &Path, bound: Bound) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(io_err("cannot open", path))?;
    let mut buf = Vec::new();
    file.take(bound.max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io_err("cannot read", path))?;
    if buf.len() as u64 > bound.max {
        return Err(LabError::TooLarge {
            path: path.to_path_buf(),
            bound,
        });
    }
    Ok(buf)
}

/// The last `max` bytes of a log (a build log or QEMU's stderr can be huge; only its
/// tail is ever shown), as text; empty when it cannot be read.
pub(crate) fn read_tail(path: &Path, max: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    if len > max && file.seek(SeekFrom::Start(len - max)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = file.take(max).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The most of a log's end [`read_tail`] reads.
pub(crate) const LOG_TAIL_BYTES: u64 = 1 << 20;

/// Builds a closure that wraps an `io::Error` with a path and what was being done.
pub(crate) fn io_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> LabError {
    let path = path.into();
    move |source| LabError::Io { what, path, source }
}

/// The last `n` lines of `text`, joined with newlines.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_file_is_too_large_naming_it_and_the_bound() {
        let e = read_bounded(Path::new("/dev/zero"), p2pmem_model::limits::TOPOLOGY).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, LabError::TooLarge { .. }), "{text}");
        assert!(
            text.contains("/dev/zero") && text.contains("topology"),
            "{text}"
        );
    }

    #[test]
    fn only_the_tail_of_a_log_is_read() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("build.log");
        let mut text = "x".repeat(5000);
        text.push_str("\nerror: the end\n");
        std::fs::write(&log, &text).unwrap();
        let tail = read_tail(&log, 100);
        assert_eq!(tail.len(), 100);
        assert!(tail.ends_with("error: the end\n"));
        assert_eq!(read_tail(&d.path().join("missing"), 100), "");
    }
}
