//! Shared helpers of the lab tier: run the static `p2pmem` binary named by `P2PMEM_BIN`,
//! or boot a topology with a typed plan (`p2pmem_wire::plan`) that this binary's
//! `agent` runs in the guest.

#![cfg(test)]
#![expect(
    clippy::allow_attributes,
    reason = "dead_code varies: each lab test crate uses a part of this module"
)]

use p2pmem_lab::reports::demo::{DemoPair, DemoSummary};
use p2pmem_lab::{Lab, PlanRun, Topology};
use p2pmem_wire::plan::{Arg, Dev, Plan};
use std::path::PathBuf;
use std::process::{Command, Output};

/// The static binary under test (`scripts/build-static` prints its path).
pub fn bin() -> PathBuf {
    match std::env::var_os("P2PMEM_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "lab tier: set P2PMEM_BIN to the static p2pmem binary \
             (P2PMEM_BIN=$(scripts/build-static))"
        ),
    }
}

/// Runs `p2pmem ARGS...` and returns its output; progress (stderr) is echoed on failure.
#[allow(dead_code)]
pub fn p2pmem(args: &[&str]) -> Output {
    let out = Command::new(bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin().display()));
    eprintln!(
        "p2pmem {}: exit {:?}\n--- stderr ---\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `p2pmem lab run --topology TOPO -- sh -c SCRIPT`, asserting exit 0; returns stdout.
#[allow(dead_code)]
pub fn guest_sh(topology: &str, script: &str) -> String {
    let out = p2pmem(&[
        "lab",
        "run",
        "--topology",
        topology,
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(out.status.code(), Some(0), "guest script failed: {script}");
    String::from_utf8(out.stdout).expect("guest stdout is UTF-8")
}

/// Boots `topology` (with `cpu` overriding its CPU model) and has the binary under test
/// run `plan` in the guest.
#[allow(dead_code)]
pub fn run_plan(topology: &str, cpu: Option<&str>, plan: &Plan) -> PlanRun {
    let topo = Topology::load(topology).expect("topology");
    run_plan_topo(&topo, cpu, plan)
}

/// [`run_plan`] with a topology the test built or changed.
#[allow(dead_code)]
pub fn run_plan_topo(topo: &Topology, cpu: Option<&str>, plan: &Plan) -> PlanRun {
    run_plan_on(topo, cpu, None, plan)
}

/// [`run_plan_topo`] on a pinned kernel line (`"7.3"`; the default line when `None`),
/// with `cpu` or the topology's.
#[allow(dead_code)]
pub fn run_plan_on(topo: &Topology, cpu: Option<&str>, line: Option<&str>, plan: &Plan) -> PlanRun {
    let mut lab = Lab::from_env().expect("lab settings");
    lab.p2pmem = bin();
    if let Some(line) = line {
        let line = p2pmem_lab::build::lines::Line::parse(line).expect("a kernel line");
        lab.kernel = p2pmem_lab::KernelSpec {
            source: p2pmem_lab::KernelSource::line(line).expect("a pinned line"),
            fragment: None,
        };
    }
    lab.run_plan(topo, cpu, plan, false)
        .unwrap_or_else(|e| panic!("lab run of {} failed: {e}", topo.name))
}

/// One guest's run shared by the tests of a test binary: the tests of `lab_copy` (say) all
/// read the same guest, booted once. Under cargo test they are threads of one process and
/// the caller's `OnceLock` shares it; under cargo nextest every test is its own process,
/// so the first one to get here boots the guest (`boot`) and leaves the run in a file for
/// the others, which wait for it on a lock. The file lives as long as the nextest run (its
/// `NEXTEST_RUN_ID`); a process that dies while booting leaves no file, and the next test
/// boots again (and fails the same way, in its own name).
#[allow(dead_code)]
pub fn shared_guest(name: &str, boot: impl FnOnce() -> PlanRun) -> PlanRun {
    let Some(run_id) = std::env::var_os("NEXTEST_RUN_ID") else {
        return boot();
    };
    let root = std::env::temp_dir().join("p2pmem-lab-shared");
    let dir = root.join(&run_id);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    prune_other_runs(&root, &run_id);
    let lock_path = dir.join(format!("{name}.lock"));
    let lock = std::fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", lock_path.display()));
    let saved = dir.join(format!("{name}.json"));
    if let Ok(text) = std::fs::read_to_string(&saved) {
        eprintln!(
            "lab: {name}: the guest another test booted ({})",
            saved.display()
        );
        return serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not a plan run ({e})", saved.display()));
    }
    let run = boot();
    let text = serde_json::to_string(&run).expect("a plan run serialises");
    let tmp = dir.join(format!("{name}.json.tmp"));
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    std::fs::rename(&tmp, &saved).unwrap_or_else(|e| panic!("{}: {e}", saved.display()));
    run
}

/// Removes the shared runs of nextest runs older than a day (never the current one).
fn prune_other_runs(root: &std::path::Path, current: &std::ffi::OsStr) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let day = std::time::Duration::from_secs(24 * 3600);
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if old && e.file_name() != current {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// `p2pmem --json lab demo --topology TOPO [--cpu CPU]`, read back typed: the pairs, the
/// summary (the last line), and the exit status.
#[allow(dead_code)]
pub fn demo(topology: &str, cpu: Option<&str>) -> (Vec<DemoPair>, DemoSummary, Option<i32>) {
    demo_on(topology, cpu, None)
}

/// [`demo`] on a kernel line (`--kernel LINE`; the default line when `None`).
#[allow(dead_code)]
pub fn demo_on(
    topology: &str,
    cpu: Option<&str>,
    kernel: Option<&str>,
) -> (Vec<DemoPair>, DemoSummary, Option<i32>) {
    let mut args = vec!["--json", "lab", "demo", "--topology", topology];
    if let Some(cpu) = cpu {
        args.extend(["--cpu", cpu]);
    }
    if let Some(k) = kernel {
        args.extend(["--kernel", k]);
    }
    let out = p2pmem(&args);
    let text = String::from_utf8(out.stdout).expect("demo output is UTF-8");
    let mut lines: Vec<&str> = text.lines().collect();
    let last = lines.pop().expect("no demo output");
    let summary: DemoSummary =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("not a demo summary ({e}): {last}"));
    let pairs = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a demo pair ({e}): {l}")))
        .collect();
    (pairs, summary, out.status.code())
}

/// `argv` for the `default` topology's guest, with `{A}`, `{B}`, `{C}` standing for the
/// namespaces of 04:00.0, 05:00.0 and 06:00.1 (the agent names their block devices).
#[allow(dead_code)]
pub fn default_words(argv: &[&str]) -> Vec<Arg> {
    words(
        argv,
        &[
            ("{A}", "0000:04:00.0"),
            ("{B}", "0000:05:00.0"),
            ("{C}", "0000:06:00.1"),
        ],
    )
}

/// `argv` with each word of `nvme` standing for the namespace of its PCI address: the
/// agent names the block device, since the kernel probes NVMe controllers in no fixed
/// order (on 7.3 03:00.0 came up as `nvme2n1` once).
#[allow(dead_code)]
pub fn words(argv: &[&str], nvme: &[(&str, &str)]) -> Vec<Arg> {
    argv.iter()
        .map(|w| match nvme.iter().find(|(word, _)| word == w) {
            Some((_, bdf)) => Dev::Nvme(bdf.parse().expect("a PCI address")).into(),
            None => Arg::from(*w),
        })
        .collect()
}

/// The `Exec` step `name` of a plan run.
#[allow(dead_code)]
pub fn exec_step<'a>(run: &'a PlanRun, name: &str) -> &'a p2pmem_wire::report::ExecResult {
    run.exec(name).unwrap_or_else(|e| panic!("{e}"))
}

/// The `Exec` step `name`, which must have exited 0 (so no signal ended it).
#[allow(dead_code)]
pub fn exec_ok<'a>(run: &'a PlanRun, name: &str) -> &'a p2pmem_wire::report::ExecResult {
    let s = exec_step(run, name);
    assert_eq!(s.exit, Some(0), "{name} failed: {}\n{}", s.stdout, s.stderr);
    s
}
