//! Lab tier: the fio job `p2pmem fio-job` prints runs with Debian's fio in the guest (the
//! plan asks for `/usr/bin/fio`, which goes into the initramfs with its libraries). On the
//! `default` topology swA's CMB (03:00.0) and swB (04:00.0) share a switch: the job reads
//! through p2pmem without an error. For 03:00.0 and rpC (05:00.0, on another root port of
//! q35's host bridge, which the kernel does not whitelist) the same job (`--force`) fails
//! with the kernel's refusal: the buffers really are the provider's p2pmem, since fio
//! with host buffers reads any device.

#![cfg(test)]

mod lab_common;

use p2pmem_wire::plan::{Arg, Dev, Plan, Step};
use p2pmem_wire::report::ExecResult;
use serde::Deserialize;

fn bdf(s: &str) -> p2pmem_model::Bdf {
    s.parse().expect("a PCI address")
}

/// The part of fio's JSON output the test reads.
#[derive(Debug, Deserialize)]
struct FioOutput {
    jobs: Vec<FioJob>,
}

#[derive(Debug, Deserialize)]
struct FioJob {
    error: i32,
    read: FioDir,
}

#[derive(Debug, Deserialize)]
struct FioDir {
    io_bytes: u64,
}

fn fio_step(client: &str, force: bool) -> Step {
    let force = if force { " --force" } else { "" };
    Step::Exec {
        argv: vec![
            Arg::from("sh"),
            Arg::from("-c"),
            Arg::from(
                format!(
                    "p2pmem fio-job 0000:03:00.0 \"$0\" --rw read --bs 64K --iodepth 4 --size 4M --runtime 2{force} > /tmp/job.fio || exit 100; \
                     cat /tmp/job.fio >&2; fio --output-format=json /tmp/job.fio"
                )
                .as_str(),
            ),
            Dev::Nvme(bdf(client)).into(),
        ],
    }
}

fn fio_json(e: &ExecResult) -> FioOutput {
    // fio may print notes before the JSON object.
    let start = e
        .stdout
        .find('{')
        .unwrap_or_else(|| panic!("no fio JSON:\n{e:?}"));
    serde_json::from_str(&e.stdout[start..]).unwrap_or_else(|err| panic!("{err}: {e:?}"))
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn fio_runs_the_job_through_p2pmem_and_the_kernel_refuses_it_where_p2p_is_refused() {
    let mut plan = Plan::new();
    plan.host_file("/usr/bin/fio");
    plan.step("allowed", fio_step("0000:04:00.0", false));
    plan.step("refused-without-force", fio_step("0000:05:00.0", false));
    plan.step("refused-forced", fio_step("0000:05:00.0", true));
    plan.step("dmesg", Step::Dmesg);
    let run = lab_common::run_plan("default", None, &plan);
    let allowed = run.exec("allowed").expect("fio ran");
    eprintln!("allowed: {allowed:?}");
    assert_eq!(allowed.exit, Some(0), "{allowed:?}");
    let out = fio_json(allowed);
    assert_eq!(out.jobs.len(), 1);
    assert_eq!(out.jobs[0].error, 0, "{out:?}");
    assert!(out.jobs[0].read.io_bytes >= 4 << 20, "{out:?}");

    let refused = run.exec("refused-without-force").expect("ran");
    assert_eq!(
        refused.exit,
        Some(100),
        "fio-job refuses a refused pair: {refused:?}"
    );

    let forced = run.exec("refused-forced").expect("fio ran");
    eprintln!("forced: {forced:?}");
    assert_ne!(
        forced.exit,
        Some(0),
        "the kernel refuses P2P there: {forced:?}"
    );
    let text = format!("{}{}", forced.stdout, forced.stderr);
    assert!(
        text.contains("Remote I/O error")
            || text.contains("Invalid argument")
            || text.contains("error="),
        "fio reports the refusal: {text}"
    );
}
