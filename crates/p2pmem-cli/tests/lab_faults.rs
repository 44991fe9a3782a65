//! Lab tier, faults: a device vanishes in the middle of `p2pmem copy`. On the `switch`
//! topology (swA 03:00.0 and swB 04:00.0 with CMBs, swC 05:00.0 without, all behind one
//! switch, each in a hot-pluggable downstream port), a 48 MiB copy swA -> swC through
//! swB's CMB runs in the background, its source reads throttled to 4 MiB/s by QEMU so it
//! lasts about 12 s; one second in, the host hot-unplugs one of the three (QMP
//! `device_del`; the guest's pciehp removes it about 5 s later). For each of provider,
//! source and destination: the copy ends (no hang) with exit 2 and an error that says
//! which destination bytes were written, and the kernel logged no oops. Where both ends
//! survive (the provider case) the test checks, MiB by MiB, that exactly the bytes the
//! copy says it wrote were written: each destination MiB equals the source's when
//! reported written and is unchanged otherwise.
//!
//! And provider memory running out: with both CMBs on the switch held almost whole by
//! another process, a copy through one of them says the mapping failed with the pool's
//! `available` and what to do, writes nothing, and moves nothing through host memory; the
//! same copy with `--via auto` falls back to host memory only saying so, and with
//! `--require-p2p` refuses.

#![cfg(test)]

mod lab_common;

use p2pmem_lab::{PlanRun, Topology};
use p2pmem_wire::plan::{Arg, Dev, Plan, Step};
use p2pmem_wire::report::ExecResult;

const MIB: u64 = 1 << 20;
/// The copy's length in MiB.
const COPY_MIB: u64 = 48;

fn bdf(s: &str) -> p2pmem_model::Bdf {
    s.parse().expect("a PCI address")
}

const SRC: &str = "0000:03:00.0";
const PROVIDER: &str = "0000:04:00.0";
const DST: &str = "0000:05:00.0";

fn topology() -> Topology {
    let mut topo = Topology::load("switch").expect("the switch topology");
    for n in &mut topo.nvme {
        n.disk_mib = 64;
        if n.serial == "swA" {
            n.throttle_read_mib_s = Some(4);
        }
    }
    topo
}

/// `sha256sum` of every MiB of `dev`'s first COPY_MIB MiB, one line each.
fn hashes(dev: &Dev) -> Step {
    Step::Exec {
        argv: vec![
            Arg::from("sh"),
            Arg::from("-c"),
            Arg::from(
                format!("i=0; while [ $i -lt {COPY_MIB} ]; do dd if=\"$0\" bs=1M skip=$i count=1 iflag=direct 2>/dev/null | sha256sum | cut -c1-64; i=$((i+1)); done")
                    .as_str(),
            ),
            dev.clone().into(),
        ],
    }
}

fn plan(victim: &str) -> Plan {
    let (src, dst) = (Dev::Nvme(bdf(SRC)), Dev::Nvme(bdf(DST)));
    let mut p = Plan::new();
    // A source that differs from the destination in every MiB.
    p.step(
        "fill",
        Step::Exec {
            argv: vec![
                Arg::from("sh"),
                Arg::from("-c"),
                Arg::from(
                    format!(
                        "dd if=/dev/urandom of=\"$0\" bs=1M count={COPY_MIB} oflag=direct 2>&1"
                    )
                    .as_str(),
                ),
                src.clone().into(),
            ],
        },
    );
    p.step("dst-before", hashes(&dst));
    let mut argv: Vec<Arg> = ["p2pmem", "copy"].map(Arg::from).to_vec();
    argv.push(src.clone().into());
    argv.push(dst.clone().into());
    argv.extend(
        [
            "--via", PROVIDER, "--length", "48M", "--chunk", "1M", "--depth", "4",
        ]
        .map(Arg::from),
    );
    p.step(
        "copy",
        Step::Spawn {
            argv,
            ready: None,
            wait_ms: 0,
        },
    );
    p.step("settle", Step::Sleep { ms: 1000 });
    p.step(
        "unplug",
        Step::Unplug {
            bdf: bdf(victim),
            wait_ms: 30_000,
        },
    );
    p.step(
        "copy-ended",
        Step::Join {
            spawn: "copy".into(),
            wait_ms: 60_000,
        },
    );
    if victim == PROVIDER {
        p.step("src-after", hashes(&src));
        p.step("dst-after", hashes(&dst));
    }
    p.step("dmesg", Step::Dmesg);
    p
}

/// The byte ranges the copy's error says were written (`[a, b)` pairs after "were
/// written"), or none when it says nothing was.
fn written_ranges(stderr: &str) -> Vec<(u64, u64)> {
    let line = stderr
        .lines()
        .find(|l| l.contains("were written") || l.contains("was written"))
        .unwrap_or_else(|| panic!("the error says which bytes were written:\n{stderr}"));
    if line.contains("nothing of the planned") {
        return Vec::new();
    }
    let part = line
        .split(", bytes ")
        .nth(1)
        .and_then(|rest| rest.split(" were written").next())
        .unwrap_or_else(|| panic!("cannot read the written ranges of `{line}`"));
    part.split("), ")
        .map(|r| {
            let r = r.trim_start_matches('[').trim_end_matches(')');
            let (a, b) = r.split_once(", ").expect("[a, b)");
            (a.parse().expect("a"), b.parse().expect("b"))
        })
        .collect()
}

fn lines(e: &ExecResult) -> Vec<String> {
    e.stdout.lines().map(str::to_string).collect()
}

fn run_with_unplug(victim: &str) -> (PlanRun, ExecResult) {
    let run = lab_common::run_plan_topo(&topology(), None, &plan(victim));
    eprintln!("host actions: {:?}", run.host_actions);
    let unplug = run.report("unplug").expect("the unplug step");
    eprintln!("unplug: {unplug:?}");
    assert!(
        run.host_actions.iter().all(|a| !a.starts_with("FAILED")),
        "{:?}",
        run.host_actions
    );
    run.output("unplug").expect("the device was removed");
    let copy = run.exec("copy-ended").expect("the copy ended").clone();
    eprintln!(
        "copy: exit {:?} signal {:?}\nstdout:\n{}\nstderr:\n{}",
        copy.exit, copy.signal, copy.stdout, copy.stderr
    );
    let dmesg = run.dmesg.clone();
    for bad in [
        "Oops",
        "BUG:",
        "general protection",
        "Call Trace",
        "hung_task",
    ] {
        assert!(!dmesg.contains(bad), "the kernel logged `{bad}`:\n{dmesg}");
    }
    assert_eq!(copy.signal, None, "the copy was killed by a signal");
    assert_eq!(copy.exit, Some(2), "a vanished device is an error");
    (run, copy)
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn the_provider_vanishes_mid_copy_and_exactly_the_reported_bytes_were_written() {
    let (run, copy) = run_with_unplug(PROVIDER);
    assert!(
        copy.stderr.contains(PROVIDER),
        "names the provider:\n{}",
        copy.stderr
    );
    assert!(copy.stderr.contains("no longer valid"), "{}", copy.stderr);
    let written = written_ranges(&copy.stderr);
    let before = lines(run.exec("dst-before").expect("hashes"));
    let src = lines(run.exec("src-after").expect("hashes"));
    let after = lines(run.exec("dst-after").expect("hashes"));
    assert_eq!(before.len() as u64, COPY_MIB);
    assert_eq!(src.len() as u64, COPY_MIB);
    assert_eq!(after.len() as u64, COPY_MIB);
    let copied = exactly_reported(&written, &src, &before, &after, COPY_MIB);
    assert!(copied < COPY_MIB, "the copy was interrupted before its end");
}

/// An end of the copy vanishes: the error says the device is gone, and less than the
/// plan was written.
fn an_end_vanishes(victim: &str) {
    let (_, copy) = run_with_unplug(victim);
    assert!(
        copy.stderr.contains("the device is gone"),
        "{}",
        copy.stderr
    );
    let written = written_ranges(&copy.stderr);
    let total: u64 = written.iter().map(|(a, b)| b - a).sum();
    assert!(total < COPY_MIB * MIB, "{written:?}");
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn the_source_vanishes_mid_copy() {
    an_end_vanishes(SRC);
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn the_destination_vanishes_mid_copy() {
    an_end_vanishes(DST);
}

fn holder(provider: &str) -> Step {
    Step::Spawn {
        argv: [
            "p2pmem",
            "agent",
            "hold-p2pmem",
            "--provider",
            provider,
            "--len",
            "15M",
            "--until",
            "/tmp/go",
        ]
        .map(Arg::from)
        .to_vec(),
        ready: Some("mapped".into()),
        wait_ms: 20_000,
    }
}

fn copy_step(via: &str, extra: &[&str]) -> Step {
    let mut argv: Vec<Arg> = ["p2pmem", "--json", "copy"].map(Arg::from).to_vec();
    argv.push(Dev::Nvme(bdf(SRC)).into());
    argv.push(Dev::Nvme(bdf(DST)).into());
    argv.extend(["--via", via, "--length", "4M"].map(Arg::from));
    argv.extend(extra.iter().map(|a| Arg::from(*a)));
    Step::Exec { argv }
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn when_provider_memory_runs_out_the_copy_says_so_and_never_bounces_unasked() {
    let mut p = Plan::new();
    p.step("hold-a", holder(SRC));
    p.step("hold-b", holder(PROVIDER));
    p.exec(
        "available",
        &[
            "cat",
            &format!("/sys/bus/pci/devices/{PROVIDER}/p2pmem/available"),
        ],
    );
    p.step("dst-before", hashes(&Dev::Nvme(bdf(DST))));
    p.step("named", copy_step(PROVIDER, &[]));
    p.step("dst-after-named", hashes(&Dev::Nvme(bdf(DST))));
    p.step("auto-required", copy_step("auto", &["--require-p2p"]));
    p.step("auto", copy_step("auto", &[]));
    p.step(
        "go",
        Step::WriteFile {
            path: "/tmp/go".into(),
            text: String::new(),
        },
    );
    for h in ["hold-a", "hold-b"] {
        p.step(
            format!("{h}-ended"),
            Step::Join {
                spawn: h.into(),
                wait_ms: 30_000,
            },
        );
    }
    let run = lab_common::run_plan_topo(&topology(), None, &p);
    let available = run.exec("available").expect("available");
    eprintln!("available while held: {}", available.stdout.trim());
    let available: u64 = available.stdout.trim().parse().expect("a number");
    assert!(available < 4 << 20, "the pool is nearly empty: {available}");

    let named = run.exec("named").expect("the named copy ran");
    eprintln!("named: {named:?}");
    assert_eq!(named.exit, Some(2), "{named:?}");
    assert!(
        named.stderr.contains("available"),
        "says what is available: {}",
        named.stderr
    );
    assert!(named.stderr.contains(PROVIDER), "{}", named.stderr);
    assert_eq!(
        lines(run.exec("dst-before").unwrap()),
        lines(run.exec("dst-after-named").unwrap()),
        "nothing was written"
    );

    let required = run.exec("auto-required").expect("ran");
    eprintln!("auto --require-p2p: {required:?}");
    assert_ne!(required.exit, Some(0), "{required:?}");
    assert!(required.stdout.trim().is_empty() || !required.stdout.contains("\"via\":\"host\""));

    let auto = run.exec("auto").expect("ran");
    eprintln!("auto: {auto:?}");
    assert_eq!(auto.exit, Some(0), "{auto:?}");
    let doc: serde_json::Value = serde_json::from_str(auto.stdout.trim()).expect("copy --json");
    assert_eq!(doc["via"], "host", "{doc}");
    assert!(
        auto.stderr.contains("host memory") || auto.stderr.contains("HOST memory"),
        "the fallback is said: {}",
        auto.stderr
    );
    for h in ["hold-a-ended", "hold-b-ended"] {
        assert_eq!(run.exec(h).expect("the holder ended").exit, Some(0));
    }
}

/// Per-MiB hashes of the destination before and after a copy: each MiB the copy says it
/// wrote equals the source's, every other MiB is unchanged.
fn exactly_reported(
    written: &[(u64, u64)],
    src: &[String],
    before: &[String],
    after: &[String],
    mib: u64,
) -> u64 {
    let mut copied = 0;
    for i in 0..mib {
        let (a, b) = (i * MIB, (i + 1) * MIB);
        let k = i as usize;
        if written.iter().any(|&(x, y)| x <= a && b <= y) {
            assert_eq!(
                after[k], src[k],
                "MiB {i} reported written but differs from the source"
            );
            copied += 1;
        } else {
            assert_eq!(
                after[k], before[k],
                "MiB {i} not reported written but changed"
            );
        }
    }
    copied
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn injected_io_errors_stop_the_copy_where_they_are_and_bench_counts_them() {
    use p2pmem_lab::machine::topology::{IoError, IoOp};
    let mut topo = topology();
    for n in &mut topo.nvme {
        n.throttle_read_mib_s = None;
        match n.serial.as_str() {
            // Reads of swA's fifth MiB fail; writes of swC's seventh MiB fail.
            "swA" => {
                n.io_errors = vec![IoError {
                    op: IoOp::Read,
                    sector: 8192,
                }]
            }
            "swC" => {
                n.io_errors = vec![IoError {
                    op: IoOp::Write,
                    sector: 12288,
                }]
            }
            _ => {}
        }
    }
    let (a, b, c) = (
        Dev::Nvme(bdf(SRC)),
        Dev::Nvme(bdf(PROVIDER)),
        Dev::Nvme(bdf(DST)),
    );
    let copy = |from: &Dev, to: &Dev, via: &str| {
        let mut argv: Vec<Arg> = ["p2pmem", "copy"].map(Arg::from).to_vec();
        argv.push(from.clone().into());
        argv.push(to.clone().into());
        argv.extend(["--via", via, "--length", "8M", "--chunk", "1M"].map(Arg::from));
        Step::Exec { argv }
    };
    let bench = |dev: &Dev, rw: &str| {
        let mut argv: Vec<Arg> = ["p2pmem", "--json", "bench"].map(Arg::from).to_vec();
        argv.push(dev.clone().into());
        argv.extend(
            [
                "--rw", rw, "--bs", "64K", "--size", "8M", "--time", "1", "--via", "host",
                "--force",
            ]
            .map(Arg::from),
        );
        Step::Exec { argv }
    };
    // One fault per copy: swA -> swB (through swB's CMB) meets the read error, swB ->
    // swC (through swA's CMB) the write error.
    let mut p = Plan::new();
    p.step("a-0", hashes(&a));
    p.step("b-0", hashes(&b));
    p.step("read-error", copy(&a, &b, PROVIDER));
    p.step("b-1", hashes(&b));
    p.step("c-0", hashes(&c));
    p.step("write-error", copy(&b, &c, SRC));
    p.step("c-1", hashes(&c));
    p.step("bench-read", bench(&a, "read"));
    p.step("bench-write", bench(&c, "write"));
    p.step("dmesg", Step::Dmesg);
    let run = lab_common::run_plan_topo(&topo, None, &p);
    let h = |name: &str| lines(run.exec(name).expect("hashes"));
    // The kernel reports an NVMe medium error (QEMU's answer to an EIO from blkdebug) as
    // ENODATA (BLK_STS_MEDIUM); EIO would do as well.
    let failed_at = |stderr: &str, offset: u64| {
        (stderr.contains("(ENODATA)") || stderr.contains("(EIO)"))
            && stderr.contains(&format!("at offset {offset} "))
    };

    let read = run.exec("read-error").expect("the copy ran");
    eprintln!("read error: {read:?}");
    assert_eq!(read.exit, Some(2), "{read:?}");
    assert!(failed_at(&read.stderr, 4 * MIB), "{}", read.stderr);
    assert!(read.stderr.contains("pread"), "{}", read.stderr);
    let written = written_ranges(&read.stderr);
    let copied = exactly_reported(&written, &h("a-0"), &h("b-0"), &h("b-1"), 8);
    assert!(copied < 8, "the failing MiB was not written");

    let write = run.exec("write-error").expect("the copy ran");
    eprintln!("write error: {write:?}");
    assert_eq!(write.exit, Some(2), "{write:?}");
    assert!(failed_at(&write.stderr, 6 * MIB), "{}", write.stderr);
    assert!(write.stderr.contains("pwrite"), "{}", write.stderr);
    let written = written_ranges(&write.stderr);
    assert!(
        !written.iter().any(|&(x, y)| x <= 6 * MIB && 7 * MIB <= y),
        "{written:?}"
    );
    exactly_reported(&written, &h("b-1"), &h("c-0"), &h("c-1"), 8);

    for (step, offset) in [("bench-read", 4 * MIB), ("bench-write", 6 * MIB)] {
        let e = run.exec(step).expect("the bench ran");
        eprintln!("{step}: {e:?}");
        assert_eq!(e.exit, Some(1), "measured, with failed requests: {e:?}");
        let doc: serde_json::Value = serde_json::from_str(e.stdout.trim()).expect("bench --json");
        assert!(doc["errors"].as_u64().unwrap() > 0, "{doc}");
        assert!(doc["ios"].as_u64().unwrap() > 0, "the bench went on: {doc}");
        assert_eq!(doc["first_errors"][0]["offset"], offset, "{doc}");
        let errno = doc["first_errors"][0]["errno"].as_str().unwrap_or_default();
        assert!(errno == "ENODATA" || errno == "EIO", "{doc}");
    }
}
