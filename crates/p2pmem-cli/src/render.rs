//! Running Graphviz's `dot` to turn `topo --dot` into an SVG or PNG file.
//!
//! The picture is written to a temporary file in the destination's directory and renamed
//! over the destination only once `dot` has succeeded, so a failed run never leaves a
//! half-written file (or clobbers a good one).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use thiserror::Error;

/// The environment variable naming the `dot` program (default: `dot` on PATH).
pub const DOT_ENV: &str = "P2PMEM_DOT";

/// Why a picture could not be rendered.
#[derive(Debug, Error)]
pub enum RenderError {
    /// `dot` is not installed.
    #[error("cannot run Graphviz's `{program}`: it is not installed; install graphviz (apt install graphviz, dnf install graphviz; scripts/setup-host does) or print the source with --dot")]
    Missing {
        /// The program tried.
        program: String,
        /// The error from exec.
        #[source]
        source: std::io::Error,
    },
    /// `dot` could not be started or talked to.
    #[error("cannot run Graphviz's `{program}`")]
    Run {
        /// The program tried.
        program: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `dot` failed.
    #[error("Graphviz's `{program} -T{format}` failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// The output format.
        format: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The temporary file or the rename failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn program() -> String {
    std::env::var(DOT_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "dot".to_string())
}

/// Render `source` (Graphviz) as `format` (`svg`, `png`) into `file`.
pub fn render(source: &str, format: &str, file: &Path) -> Result<(), RenderError> {
    let program = program();
    let write_err = |source| RenderError::Write {
        path: file.to_path_buf(),
        source,
    };
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(write_err)?;
    // The source goes in a file, not a pipe: with SIGPIPE at its default (as p2pmem
    // runs), writing to a `dot` that exited early would kill p2pmem before it could say
    // why `dot` failed.
    let run_err = |source| RenderError::Run {
        program: program.clone(),
        source,
    };
    let mut input = tempfile::Builder::new()
        .prefix("p2pmem-topo.")
        .suffix(".dot")
        .tempfile()
        .map_err(run_err)?;
    input
        .write_all(source.as_bytes())
        .and_then(|()| input.flush())
        .map_err(run_err)?;
    let out = Command::new(&program)
        .arg(format!("-T{format}"))
        .arg("-o")
        .arg(tmp.path())
        .arg(input.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                RenderError::Missing {
                    program: program.clone(),
                    source,
                }
            } else {
                run_err(source)
            }
        })?;
    if !out.status.success() {
        return Err(RenderError::Failed {
            program,
            format: format.to_string(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    // A temporary file is private (0600); the picture is not.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .map_err(write_err)?;
    tmp.persist(file).map_err(|e| write_err(e.error))?;
    Ok(())
}
