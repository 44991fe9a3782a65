//! The lab's one way to run a host program (`make`, `tar`, `rustc`, `rustup`, `cargo`):
//! either its output is captured, or it is appended to a log file. A program that
//! cannot start becomes [`LabError::Spawn`] naming it; one that exits non-zero becomes
//! [`LabError::Command`] with the command line, the exit status and the tail of its
//! output (and the log's path). QEMU is not run here: `qemu.rs` streams its console.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{io_err, tail_lines, LabError, Result};
use crate::progress::Heartbeat;

/// Lines of captured stderr an error shows.
pub const CAPTURED_TAIL: usize = 20;

/// Lines of a log file an error shows.
pub const LOG_TAIL: usize = 40;

/// How often a logged run calls its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);

/// The command line of `cmd` for a user to rerun: `cd DIR && VAR=value program args`,
/// unquoted.
pub fn describe(cmd: &Command) -> String {
    format!("{cmd:?}").replace('"', "")
}

fn program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// What a captured run printed.
#[derive(Debug)]
pub struct Captured {
    /// The command line ([`describe`]).
    pub command: String,
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output, lossily decoded.
    pub stdout: String,
    /// Its standard error, lossily decoded.
    pub stderr: String,
}

impl Captured {
    /// The error for this run: for a caller that finds a run which exited 0 did not do
    /// its job (its product is missing), and for [`run_captured`] on a non-zero exit.
    pub fn failure(&self) -> LabError {
        LabError::Command {
            command: self.command.clone(),
            status: self.status.to_string(),
            log: None,
            tail: tail_lines(&self.stderr, CAPTURED_TAIL),
        }
    }
}

/// Runs `cmd` with no stdin and its stdout and stderr captured; a non-zero exit is an
/// error carrying the tail of stderr.
pub fn run_captured(mut cmd: Command) -> Result<Captured> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            program: program(&cmd),
            source,
        })?;
    let captured = Captured {
        command: describe(&cmd),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if captured.status.success() {
        Ok(captured)
    } else {
        Err(captured.failure())
    }
}

/// Runs `cmd` with no stdin and its stdout and stderr appended to `log` (which must
/// exist); a non-zero exit is an error naming `log` and carrying its tail. With a
/// heartbeat, stdout lines are counted and `heartbeat(lines, elapsed)` is called every
/// [`HEARTBEAT_EVERY`] while the program runs.
pub fn run_logged(
    mut cmd: Command,
    log: &Path,
    heartbeat: Option<&dyn Fn(usize, Duration)>,
) -> Result<()> {
    let command = describe(&cmd);
    let program = program(&cmd);
    let open = || {
        OpenOptions::new()
            .append(true)
            .open(log)
            .map_err(io_err("cannot open", log))
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(open()?));
    let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
        program: program.clone(),
        source,
    })?;
    let lines = Arc::new(AtomicUsize::new(0));
    let copier = child.stdout.take().map(|stdout| {
        let lines = Arc::clone(&lines);
        let sink = open();
        std::thread::spawn(move || {
            let Ok(mut sink) = sink else { return };
            for line in BufReader::new(stdout).split(b'\n').map_while(|l| l.ok()) {
                let _ = sink.write_all(&line);
                let _ = sink.write_all(b"\n");
                lines.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    let mut beat = Heartbeat::new(HEARTBEAT_EVERY);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError::Spawn { program, source });
            }
        }
        if let Some(heartbeat) = heartbeat {
            if beat.due() {
                heartbeat(lines.load(Ordering::Relaxed), beat.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if let Some(copier) = copier {
        let _ = copier.join();
    }
    if status.success() {
        return Ok(());
    }
    let text = crate::error::read_tail(log, crate::error::LOG_TAIL_BYTES);
    Err(LabError::Command {
        command,
        status: status.to_string(),
        log: Some(log.to_path_buf()),
        tail: tail_lines(&text, LOG_TAIL),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    #[test]
    fn captured_output_comes_back() {
        let out = run_captured(sh("echo out; echo err >&2")).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn captured_failure_names_the_command_status_and_stderr_tail() {
        let script = "for i in $(seq 1 30); do echo line$i >&2; done; exit 3";
        let err = run_captured(sh(script)).unwrap_err();
        let LabError::Command {
            command,
            status,
            log,
            tail,
        } = &err
        else {
            panic!("not a Command error: {err:?}");
        };
        assert!(command.contains("sh -c"), "{command}");
        assert!(status.contains('3'), "{status}");
        assert_eq!(*log, None);
        assert_eq!(tail.lines().count(), CAPTURED_TAIL);
        assert!(
            tail.starts_with("line11\n") && tail.ends_with("line30"),
            "{tail}"
        );
        let text = err.to_string();
        assert!(text.contains("failed (exit status: 3)"), "{text}");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error_naming_it() {
        let cmd = Command::new("p2pmem-lab-no-such-program");
        for err in [
            run_captured(Command::new("p2pmem-lab-no-such-program")).unwrap_err(),
            run_logged(cmd, Path::new("/dev/null"), None).unwrap_err(),
        ] {
            match &err {
                LabError::Spawn { program, source } => {
                    assert_eq!(program, "p2pmem-lab-no-such-program");
                    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
                }
                other => panic!("not a Spawn error: {other:?}"),
            }
        }
    }

    #[test]
    fn logged_output_lands_in_the_log_and_a_failure_shows_its_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("build.log");
        fs::write(&log, "earlier\n").unwrap();
        run_logged(sh("echo one; echo two >&2"), &log, None).unwrap();
        let text = fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("earlier\n"), "{text}");
        assert!(text.contains("one\n") && text.contains("two\n"), "{text}");

        let script = "for i in $(seq 1 50); do echo l$i; done; exit 2";
        let err = run_logged(sh(script), &log, None).unwrap_err();
        let LabError::Command {
            status,
            log: named,
            tail,
            ..
        } = &err
        else {
            panic!("not a Command error: {err:?}");
        };
        assert!(status.contains('2'), "{status}");
        assert_eq!(named.as_deref(), Some(log.as_path()));
        assert_eq!(tail.lines().count(), LOG_TAIL);
        assert!(tail.ends_with("l50"), "{tail}");
    }

    #[test]
    fn a_missing_log_is_an_io_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("absent/build.log");
        match run_logged(sh("true"), &log, None).unwrap_err() {
            LabError::Io { path, .. } => assert_eq!(path, log),
            other => panic!("not an Io error: {other:?}"),
        }
    }

    #[test]
    fn describe_is_a_rerunnable_unquoted_line() {
        let mut cmd = Command::new("make");
        cmd.arg("-C").arg("/src").env("KBUILD_BUILD_USER", "p2pmem");
        let line = describe(&cmd);
        assert!(!line.contains('"'), "{line}");
        assert!(line.contains("KBUILD_BUILD_USER=p2pmem"), "{line}");
        assert!(line.ends_with("make -C /src"), "{line}");
    }
}
