//! Runs QEMU: spawns `qemu-system-x86_64` with the serial console on a pipe, copies the
//! console to `console.log` as it arrives, and watches it for the guest protocol's
//! markers, a kernel panic, or a timeout. The child is always killed and reaped: on
//! timeout, on error, and when the [`QemuChild`] guard drops.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use p2pmem_wire::frame::{ConsoleReport, Decoder, Event as FrameEvent, Frame};

use crate::error::{io_err, tail_lines, LabError, Result};
use crate::progress::Progress;

/// Default limit for one guest run (TCG is slow; most runs take 10-60 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long QEMU may take to exit after the guest sent everything.
const POWEROFF_GRACE: Duration = Duration::from_secs(20);

/// Console lines shown with an error.
const TAIL: usize = 30;

/// A running QEMU that is killed and reaped on drop.
#[derive(Debug)]
pub struct QemuChild {
    child: Option<Child>,
}

impl QemuChild {
    fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }
}

impl Drop for QemuChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a finished run left behind.
#[derive(Debug, Clone)]
pub struct ConsoleCapture {
    /// The full console text.
    pub text: String,
    /// The guest's frames, decoded as they arrived.
    pub report: ConsoleReport,
    /// Where it was saved.
    pub console_log: PathBuf,
    /// Seconds from spawn to `/init` starting (`@@P2PMEM:START@@`), if seen.
    pub init_secs: Option<f64>,
    /// Seconds from spawn to the end of the run.
    pub total_secs: f64,
}

enum Event {
    Data(Vec<u8>),
    Eof,
}

/// Runs `args` (argv, program first) until the guest prints `@@P2PMEM:DONE@@` and QEMU
/// exits, saving the console to `console_log` and QEMU's stderr next to it. The console
/// goes through the frame [`Decoder`] as it arrives; `on_frame` sees each payload when
/// it is complete, and a malformed frame stops the run.
pub fn run_qemu(
    args: &[String],
    console_log: &Path,
    timeout: Duration,
    progress: Progress,
    on_frame: &mut dyn FnMut(&Frame),
) -> Result<ConsoleCapture> {
    let (program, rest) = args.split_first().ok_or_else(|| LabError::Spawn {
        program: String::new(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    let stderr_path = console_log.with_file_name("qemu.stderr");
    let stderr_file = File::create(&stderr_path).map_err(io_err("cannot create", &stderr_path))?;
    let mut log = File::create(console_log).map_err(io_err("cannot create", console_log))?;
    let started = Instant::now();
    let child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr_file))
        .spawn()
        .map_err(|source| LabError::Spawn {
            program: program.clone(),
            source,
        })?;
    let mut guard = QemuChild { child: Some(child) };
    let stdout = guard.child.as_mut().and_then(|c| c.stdout.take());
    let (tx, rx) = mpsc::channel();
    if let Some(mut stdout) = stdout {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Event::Eof);
                        break;
                    }
                    Ok(n) => {
                        if tx.send(Event::Data(buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }

    let mut bytes: Vec<u8> = Vec::new();
    let mut decoder = Decoder::new();
    let mut init_secs = None;
    let mut done_at: Option<Instant> = None;
    let mut panic_at: Option<Instant> = None;
    let mut eof = false;
    let fail = |why: String, bytes: &[u8], guard: &mut QemuChild| -> LabError {
        guard.kill();
        let text = String::from_utf8_lossy(bytes);
        let stderr = crate::error::read_tail(&stderr_path, crate::error::LOG_TAIL_BYTES);
        let why = if stderr.trim().is_empty() {
            why
        } else {
            format!("{why}\nQEMU stderr:\n{}", tail_lines(&stderr, 10))
        };
        LabError::Guest {
            why,
            console: console_log.to_path_buf(),
            tail: tail_lines(&text, TAIL),
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Event::Data(chunk)) => {
                log.write_all(&chunk)
                    .map_err(io_err("cannot write", console_log))?;
                let from = bytes.len().saturating_sub(64);
                bytes.extend_from_slice(&chunk);
                let window = String::from_utf8_lossy(&bytes[from..]);
                let events = match decoder.feed(&chunk) {
                    Ok(events) => events,
                    Err(e) => {
                        let why = format!("the guest's frame stream is broken: {e}");
                        return Err(fail(why, &bytes, &mut guard));
                    }
                };
                for event in events {
                    match event {
                        FrameEvent::Started => {
                            let secs = started.elapsed().as_secs_f64();
                            init_secs = Some(secs);
                            progress.phase(&format!("guest /init started after {secs:.1} s"));
                        }
                        FrameEvent::Ready(have, want) => progress.phase(&format!(
                            "guest devices ready after {:.1} s ({have} of {want} NVMe); running the plan",
                            started.elapsed().as_secs_f64()
                        )),
                        FrameEvent::Frame(i) => {
                            if let Some(f) = decoder.report().frames.get(i) {
                                on_frame(f);
                            }
                        }
                        FrameEvent::Done => done_at = Some(Instant::now()),
                    }
                }
                if panic_at.is_none() && window.contains("Kernel panic") {
                    panic_at = Some(Instant::now());
                }
            }
            Ok(Event::Eof) => eof = true,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => eof = true,
        }
        if let Some(at) = panic_at {
            // Let the panic's backtrace reach the log, then stop.
            if at.elapsed() > Duration::from_secs(1) || eof {
                return Err(fail("the guest kernel panicked".into(), &bytes, &mut guard));
            }
        }
        let exited = guard.try_wait().map(|s| s.to_string()).or_else(|| {
            // The guest sent everything but did not power off: stop it, keep the result.
            let stuck = done_at.is_some_and(|at| at.elapsed() > POWEROFF_GRACE);
            stuck.then(|| {
                guard.kill();
                "killed after the guest finished".to_string()
            })
        });
        if let Some(status) = exited {
            // Drain what is still in the pipe.
            while let Ok(Event::Data(chunk)) = rx.recv_timeout(Duration::from_millis(500)) {
                log.write_all(&chunk)
                    .map_err(io_err("cannot write", console_log))?;
                bytes.extend_from_slice(&chunk);
                if let Err(e) = decoder.feed(&chunk) {
                    let why = format!("the guest's frame stream is broken: {e}");
                    return Err(fail(why, &bytes, &mut guard));
                }
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if text.contains("Kernel panic") {
                return Err(fail("the guest kernel panicked".into(), &bytes, &mut guard));
            }
            let report = match decoder.finish() {
                Ok(r) => r,
                Err(e) => {
                    let why = format!("the guest's frame stream is broken: {e}");
                    return Err(fail(why, &bytes, &mut guard));
                }
            };
            if !report.done {
                return Err(fail(
                    format!("QEMU exited ({status}) before the guest finished"),
                    &bytes,
                    &mut guard,
                ));
            }
            return Ok(ConsoleCapture {
                text,
                report,
                console_log: console_log.to_path_buf(),
                init_secs,
                total_secs: started.elapsed().as_secs_f64(),
            });
        }
        if started.elapsed() > timeout {
            return Err(fail(
                format!(
                    "timed out after {} s (raise it with --timeout)",
                    timeout.as_secs()
                ),
                &bytes,
                &mut guard,
            ));
        }
    }
}
