//! The QEMU runner against stand-in programs (shell scripts printing what a guest would):
//! a finished guest, a kernel panic, a hang, a QEMU that fails to start, one that exits
//! early. Each failure carries the console tail.

#![cfg(test)]

use std::path::Path;
use std::time::{Duration, Instant};

use p2pmem_lab::run::qemu::run_qemu;
use p2pmem_lab::Progress;
use p2pmem_wire::frame::encode_frame;

fn fake(dir: &Path, body: &str) -> Vec<String> {
    let script = dir.join("fake-qemu.sh");
    std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
    vec!["/bin/sh".into(), script.display().to_string()]
}

/// Runs the stand-in; returns the result (errors as text) and the saved console log.
fn run(
    body: &str,
    timeout: u64,
) -> (
    Result<p2pmem_lab::run::qemu::ConsoleCapture, String>,
    String,
) {
    let tmp = tempfile::tempdir().unwrap();
    let args = fake(tmp.path(), body);
    let log = tmp.path().join("console.log");
    let r = run_qemu(
        &args,
        &log,
        Duration::from_secs(timeout),
        Progress::quiet(),
        &mut |_| {},
    )
    .map_err(|e| e.to_string());
    (r, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn finished_guest_returns_the_console() {
    let frame = encode_frame("stdout", 0, b"hi\n");
    let body = format!(
        "echo boot line; echo '@@P2PMEM:START@@'; printf '%s' '{frame}'; echo '@@P2PMEM:DONE@@'"
    );
    let (r, log) = run(&body, 30);
    let cap = r.unwrap();
    assert!(cap.text.contains("boot line"));
    assert!(cap.init_secs.is_some());
    assert_eq!(log, cap.text);
    // Decoded live, by the runner's own decoder.
    assert!(cap.report.done);
    assert_eq!(cap.report.frame("stdout").unwrap().data, b"hi\n");
}

#[test]
fn frames_reach_the_callback_as_they_arrive_and_a_broken_stream_stops_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        encode_frame("step.0", 0, b"one"),
        encode_frame("step.1", 0, b"two"),
    );
    let args = fake(
        tmp.path(),
        &format!("printf '%s' '{a}'; sleep 1; printf '%s' '{b}'; echo '@@P2PMEM:DONE@@'"),
    );
    let mut seen = Vec::new();
    let cap = run_qemu(
        &args,
        &tmp.path().join("c.log"),
        Duration::from_secs(30),
        Progress::quiet(),
        &mut |f| seen.push((f.id.clone(), f.data.clone())),
    )
    .unwrap();
    assert_eq!(
        seen,
        [
            ("step.0".to_string(), b"one".to_vec()),
            ("step.1".to_string(), b"two".to_vec())
        ]
    );
    assert_eq!(cap.report.frames.len(), 2);
    let start = Instant::now();
    let (r, _) = run(
        "echo '@@P2PMEM:BEGIN x@@'; echo 'not base64!'; sleep 60",
        120,
    );
    let err = r.unwrap_err();
    assert!(err.contains("frame stream is broken"), "{err}");
    assert!(err.contains("console line 2"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "not stopped at once"
    );
}

#[test]
fn kernel_panic_is_reported_with_the_tail_and_the_child_killed() {
    let start = Instant::now();
    let (r, _) = run(
        "echo line-before; echo 'Kernel panic - not syncing: Attempted to kill init!'; sleep 60",
        120,
    );
    let err = r.unwrap_err();
    assert!(err.contains("panicked"), "{err}");
    assert!(err.contains("line-before"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the panicked child was not killed"
    );
}

#[test]
fn hang_times_out_with_the_tail() {
    let start = Instant::now();
    let (r, _) = run("echo still-booting; sleep 60", 2);
    let err = r.unwrap_err();
    assert!(err.contains("timed out after 2 s"), "{err}");
    assert!(err.contains("still-booting"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn early_exit_reports_qemu_stderr() {
    let (r, _) = run(
        "echo 'qemu-system-x86_64: unable to find CPU model 'nope'' >&2; exit 1",
        30,
    );
    let err = r.unwrap_err();
    assert!(err.contains("before the guest finished"), "{err}");
    assert!(err.contains("unable to find CPU model"), "{err}");
}

#[test]
fn missing_program_is_a_spawn_error() {
    let tmp = tempfile::tempdir().unwrap();
    let args = vec!["/nonexistent/qemu-system-x86_64".to_string()];
    let err = run_qemu(
        &args,
        &tmp.path().join("c.log"),
        Duration::from_secs(5),
        Progress::quiet(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cannot start"), "{err}");
    assert!(err.contains("setup-host"), "{err}");
}
