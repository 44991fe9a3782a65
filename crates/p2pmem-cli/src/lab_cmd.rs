//! `p2pmem lab ...`: the virtual P2PDMA lab. Builds the P2PDMA kernel, boots lab
//! topologies under QEMU (TCG) with this binary inside the guest, and runs commands,
//! captures and the prediction-versus-kernel demo there. Progress goes to stderr; the
//! guest's output and results go to stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::lab_kernel::KernelOpts;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use p2pmem_lab::plans::dma::demo_copies;
use p2pmem_lab::plans::pairs::{dma_steps, pairs_plan, PairsOptions, PairsResult};
use p2pmem_lab::reports::demo::{demo, DemoPair, DemoSummary};
use p2pmem_lab::reports::truth::{build_truth, scratch_script, TruthContext};
use p2pmem_lab::run::lab::unpack_tar;
use p2pmem_lab::run::parallel;
use p2pmem_lab::{Lab, PlanRun, Topology};
use p2pmem_model::bdf::Bdf;
use p2pmem_model::dma_accounting::Window;
use p2pmem_wire::plan::{Arg, Dev, Plan, Step};
use p2pmem_wire::report::{Output, StepResult};

/// `p2pmem lab`.
#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
    /// JSON output, from the global `--json` (see [`LabArgs::with_json`]).
    #[arg(skip)]
    json: bool,
}

impl LabArgs {
    /// Passes the global `--json` flag down (`lab demo --json` prints JSON Lines).
    pub fn with_json(mut self, json: bool) -> Self {
        self.json = json;
        self
    }
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Build the lab kernel (or reuse the cached one) and the p2pmem_pci module for it,
    /// and print the kernel's path.
    Kernel {
        #[command(flatten)]
        kernel: KernelOpts,
    },
    /// List the embedded topologies.
    Topologies,
    /// Boot a topology, run COMMAND in the guest, print its output, exit with its status.
    Run {
        #[command(flatten)]
        guest: GuestOpts,
        /// Also print the guest's kernel log (dmesg) on stderr.
        #[arg(long)]
        dmesg: bool,
        /// Measure where the command's DMA went (host memory, a CMB, another device)
        /// from QEMU's nvme trace; on by default when the command is `p2pmem copy`.
        #[arg(long, conflicts_with = "no_trace_dma")]
        trace_dma: bool,
        /// Do not measure a `p2pmem copy`'s DMA.
        #[arg(long)]
        no_trace_dma: bool,
        /// The command and its arguments (run in /tmp with standard input empty; for a
        /// shell pipeline, `-- sh -c '...'`). A word ending in `{nvme:BDF}` stands for the
        /// first namespace of the NVMe controller at that PCI function, found in the guest
        /// (`/dev/nvme0n1` or whichever number the kernel gave it: it numbers controllers
        /// in probe order), after the text before it: `{nvme:0000:03:00.0}`,
        /// `if={nvme:0000:03:00.0}`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Boot a topology and have `p2pmem agent` run a plan of typed steps in the guest
    /// (JSON, the `Plan` of the p2pmem-wire crate: copies, hashes, probes, binds, markers,
    /// commands). Prints one line per step (`NAME<TAB>STATUS<TAB>SECONDS<TAB>SUMMARY`), or
    /// with `--json` one step report per line. Exit 0 when every step ran, 1 when one
    /// failed or was skipped.
    Plan {
        #[command(flatten)]
        guest: GuestOpts,
        /// Measure DMA with QEMU's nvme trace (the plan brackets what it measures with
        /// `mark` steps); the trace stays in the run directory.
        #[arg(long)]
        trace_dma: bool,
        /// The plan file.
        file: PathBuf,
    },
    /// Every embedded topology on every pinned kernel line (or those named): for each,
    /// boot it and compare p2pmem's prediction with the kernel's verdict for every pair,
    /// as `lab demo` does (without its copies). One row per (kernel, topology), every
    /// disagreement verbatim; `--json`: one summary object per row. Exit 0 when every
    /// pair of every row agreed, 1 otherwise.
    Matrix {
        /// A kernel line (repeatable; default: every pinned line).
        #[arg(long = "kernel", value_name = "LINE", value_parser = crate::lab_kernel::pinned_line_arg)]
        kernels: Vec<p2pmem_lab::build::lines::Line>,
        /// A topology (repeatable; default: every embedded one).
        #[arg(long = "topology", value_name = "NAME")]
        topologies: Vec<String>,
        /// Guest time limit per boot in seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Boot a topology and record a ground-truth capture into DIR (root/, truth.json,
    /// boot_dmesg.txt, qemu.sh).
    Capture {
        #[command(flatten)]
        guest: GuestOpts,
        /// Output directory (must not exist or be empty).
        dir: PathBuf,
    },
    /// Boot the demo topology and compare p2pmem's predictions with the kernel's verdicts:
    /// the summary and a provider-by-client table first, then the pairs grouped by
    /// outcome with each distinct kernel message once, then the verified copies. With the
    /// global `--json`: JSON Lines, one object per pair, the summary object last.
    Demo {
        #[command(flatten)]
        guest: GuestOpts,
        /// Every pair on its own, with all of its kernel lines (as logged).
        #[arg(long, short)]
        verbose: bool,
    },
}

#[derive(Debug, Args)]
struct GuestOpts {
    /// Topology file, or the name of an embedded topology (see `p2pmem lab topologies`).
    #[arg(long, default_value = "default")]
    topology: String,
    /// QEMU CPU model, overriding the topology's (e.g. `max,family=23`).
    #[arg(long)]
    cpu: Option<String>,
    /// Guest time limit in seconds (default 300, or $P2PMEM_LAB_TIMEOUT).
    #[arg(long)]
    timeout: Option<u64>,
    #[command(flatten)]
    kernel: KernelOpts,
}

impl GuestOpts {
    fn lab_and_topology(&self) -> anyhow::Result<(Lab, Topology)> {
        let mut lab = Lab::from_env()?;
        lab.kernel = self.kernel.spec()?;
        if let Some(t) = self.timeout {
            lab.timeout = Duration::from_secs(t);
        }
        let topo = Topology::load(&self.topology)?;
        Ok((lab, topo))
    }

    fn cpu<'a>(&'a self, topo: &'a Topology) -> &'a str {
        self.cpu.as_deref().unwrap_or(&topo.cpu)
    }
}

/// Runs `p2pmem lab ...`; returns the process exit code.
pub fn run(args: LabArgs) -> anyhow::Result<i32> {
    match args.command {
        LabCommand::Kernel { kernel } => {
            let mut lab = Lab::from_env()?;
            lab.kernel = kernel.spec()?;
            let (k, _) = lab.kernel()?;
            println!("{}", k.bzimage.display());
            Ok(0)
        }
        LabCommand::Topologies => {
            for (name, _) in p2pmem_lab::machine::topology::EMBEDDED {
                let t = Topology::embedded(name)?;
                println!("{name:<26} cpu {:<14} {}", t.cpu, t.description);
            }
            Ok(0)
        }
        LabCommand::Run {
            guest,
            dmesg,
            trace_dma,
            no_trace_dma,
            command,
        } => {
            let argv = run_words(&command)?;
            let (lab, topo) = guest.lab_and_topology()?;
            let trace = !no_trace_dma && (trace_dma || is_p2pmem_copy(&command));
            let out = lab.run_plan(&topo, guest.cpu.as_deref(), &run_plan(argv, trace), trace)?;
            let r = out.exec(RUN_STEP)?;
            std::io::stdout().write_all(r.stdout.as_bytes())?;
            std::io::stdout().flush()?;
            std::io::stderr().write_all(r.stderr.as_bytes())?;
            if dmesg {
                eprintln!("{}", out.dmesg);
            }
            if trace {
                crate::lab_dma::report_run(&out, RUN_MAP_STEP, args.json)?;
            }
            Ok(match (r.exit, r.signal) {
                (Some(code), _) => code,
                (None, Some(sig)) => 128 + sig,
                (None, None) => 2,
            })
        }
        LabCommand::Plan {
            guest,
            trace_dma,
            file,
        } => plan_cmd(&guest, trace_dma, &file, args.json),
        LabCommand::Matrix {
            kernels,
            topologies,
            timeout,
        } => matrix(&kernels, &topologies, timeout, args.json),
        LabCommand::Capture { guest, dir } => capture(&guest, &dir),
        LabCommand::Demo { guest, verbose } => demo_cmd(&guest, args.json, verbose),
    }
}

/// The step of a `lab run` plan that runs the command.
const RUN_STEP: &str = "command";
/// The address-map step of a traced `lab run`.
const RUN_MAP_STEP: &str = "address-map";

/// The words of `lab run`'s command: each as it is, except one ending in
/// `{nvme:BDF}`, which the agent turns into that controller's first namespace after the
/// text before it.
fn run_words(command: &[String]) -> anyhow::Result<Vec<Arg>> {
    const OPEN: &str = "{nvme:";
    command
        .iter()
        .map(|w| {
            let Some((prefix, rest)) = w.rsplit_once(OPEN) else {
                return Ok(Arg::from(w.as_str()));
            };
            let Some(bdf) = rest.strip_suffix('}') else {
                bail!("{w:?}: `{OPEN}BDF}}` must end the word");
            };
            let bdf: Bdf = bdf.parse().map_err(|e| anyhow::anyhow!("{w:?}: {e}"))?;
            Ok(Arg::Dev {
                dev: Dev::Nvme(bdf),
                prefix: prefix.to_string(),
            })
        })
        .collect()
}

/// The plan of `lab run`: the command, and with `trace` the address map and the markers
/// of DMA window 0 around it.
fn run_plan(argv: Vec<Arg>, trace: bool) -> Plan {
    let mut plan = Plan::new();
    let exec = Step::Exec { argv };
    if !trace {
        plan.step(RUN_STEP, exec);
        return plan;
    }
    let w = Window::nth(0);
    plan.step(RUN_MAP_STEP, Step::AddressMap)
        .step("mark-begin", Step::Mark { lba: w.begin_lba })
        .step(RUN_STEP, exec)
        .step("mark-end", Step::Mark { lba: w.end_lba });
    plan
}

/// Is `argv` a `p2pmem [--json] [--root DIR] copy ...` command?
fn is_p2pmem_copy(argv: &[String]) -> bool {
    let Some((prog, rest)) = argv.split_first() else {
        return false;
    };
    if prog != "p2pmem" && !prog.ends_with("/p2pmem") {
        return false;
    }
    let mut words = rest.iter();
    while let Some(w) = words.next() {
        match w.as_str() {
            "--root" => {
                words.next();
            }
            w if w.starts_with('-') => {}
            w => return w == "copy",
        }
    }
    false
}

fn matrix(
    kernels: &[p2pmem_lab::build::lines::Line],
    topologies: &[String],
    timeout: Option<u64>,
    json: bool,
) -> anyhow::Result<i32> {
    use p2pmem_lab::build::lines::PINS;
    use p2pmem_lab::build::{KernelSource, KernelSpec};
    let lines: Vec<_> = if kernels.is_empty() {
        PINS.iter().map(|p| p.line).collect()
    } else {
        kernels.to_vec()
    };
    let topos: Vec<String> = if topologies.is_empty() {
        p2pmem_lab::machine::topology::EMBEDDED
            .iter()
            .map(|(n, _)| n.to_string())
            .collect()
    } else {
        topologies.to_vec()
    };
    let opts = PairsOptions {
        capture: false,
        check: true,
        copy: false,
    };
    // Each with the label of its progress lines (guests run side by side); the few
    // labels live as long as the process.
    let topos = topos
        .iter()
        .map(|name| {
            let topo = Topology::load(name)?;
            let label: &'static str = Box::leak(topo.name.clone().into_boxed_str());
            Ok((topo, label))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut all_agree = true;
    let mut stdout = std::io::stdout().lock();
    if !json {
        writeln!(
            stdout,
            "{:<6} {:<26} {:<10} {:>5} {:>6} {:>9} {:>10} {:>8}  oracle",
            "kernel",
            "topology",
            "release",
            "pairs",
            "agreed",
            "disagreed",
            "incomplete",
            "allowed"
        )?;
    }
    for line in &lines {
        let mut lab = Lab::from_env()?;
        lab.kernel = KernelSpec {
            source: KernelSource::line(*line)?,
            fragment: None,
        };
        if let Some(t) = timeout {
            lab.timeout = Duration::from_secs(t);
        }
        // The kernel first (built once if not cached), then the line's topologies booted
        // a few at a time, their rows printed in order.
        lab.kernel()?;
        let runs = parallel::map_ordered(&topos, parallel::guests_at_once(), |(topo, label)| {
            let mut lab = lab.clone();
            lab.progress = lab.progress.labelled(label);
            run_pairs(&lab, topo, &topo.cpu, opts)
        });
        for ((topo, _), run) in topos.iter().zip(runs) {
            let (_, res) = run?;
            let (name, cpu) = (&topo.name, &topo.cpu);
            let (pairs, summary) = demo(name, cpu, &res);
            all_agree &= summary.disagreed == 0 && summary.incomplete == 0;
            let oracles: std::collections::BTreeSet<&str> =
                pairs.iter().map(|p| p.oracle.as_str()).collect();
            if json {
                writeln!(
                    stdout,
                    "{}",
                    p2pmem_wire::doc::line("lab_demo_summary", &summary)?
                )?;
            } else {
                writeln!(
                    stdout,
                    "{:<6} {:<26} {:<10} {:>5} {:>6} {:>9} {:>10} {:>8}  {}",
                    line.to_string(),
                    name,
                    res.inventory.osrelease,
                    summary.pairs,
                    summary.agreed,
                    summary.disagreed,
                    summary.incomplete,
                    summary.kernel_ok,
                    oracles.into_iter().collect::<Vec<_>>().join(",")
                )?;
                for p in pairs.iter().filter(|p| p.agree != Some(true)) {
                    let why = p
                        .disagreement
                        .as_deref()
                        .or(p.kernel_error.as_deref())
                        .or(p.prediction_error.as_deref())
                        .unwrap_or("?");
                    writeln!(stdout, "    {} -> {}: {why}", p.provider, p.client)?;
                }
            }
        }
    }
    Ok(if all_agree { 0 } else { 1 })
}

/// The largest plan file `lab plan` reads.
const MAX_PLAN_BYTES: u64 = 16 << 20;

fn plan_cmd(guest: &GuestOpts, trace: bool, file: &Path, json: bool) -> anyhow::Result<i32> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_PLAN_BYTES + 1), &mut text)
        .with_context(|| format!("cannot read {}", file.display()))?;
    if text.len() as u64 > MAX_PLAN_BYTES {
        bail!("{} is larger than {MAX_PLAN_BYTES} bytes", file.display());
    }
    let plan: Plan = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a lab plan", file.display()))?;
    let (lab, topo) = guest.lab_and_topology()?;
    let out = lab.run_plan(&topo, guest.cpu.as_deref(), &plan, trace)?;
    let mut stdout = std::io::stdout().lock();
    let mut all_ran = true;
    for r in &out.steps {
        if json {
            writeln!(stdout, "{}", p2pmem_wire::doc::line("lab_step", r)?)?;
        }
        let (status, summary) = match &r.result {
            StepResult::Done { output } => ("done", output_summary(output)),
            StepResult::Failed { error } => ("failed", error.clone()),
            StepResult::Skipped { why } => ("skipped", why.clone()),
        };
        all_ran &= status == "done";
        if !json {
            let summary = summary.replace(['\t', '\n'], " ");
            writeln!(stdout, "{}\t{status}\t{:.6}\t{summary}", r.name, r.seconds)?;
        }
    }
    eprintln!("lab: run directory {}", out.run_dir.display());
    Ok(if all_ran { 0 } else { 1 })
}

/// One line about a step's output.
fn output_summary(o: &Output) -> String {
    match o {
        Output::Exec(e) => match (e.exit, e.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("signal {s}"),
            _ => "ended".into(),
        },
        Output::Copy(c) => match &c.report {
            Some(r) => format!("exit {}: {} bytes via {}", c.exit, r.report.bytes, r.via),
            None => format!("exit {}: {}", c.exit, c.messages.join(" ")),
        },
        Output::Hash(h) => format!("sha256 {}", h.sha256),
        Output::Pairs(p) => format!(
            "{} pairs, {} allowed",
            p.len(),
            p.iter().filter(|p| p.kernel_ok()).count()
        ),
        Output::Picked(p) => format!("{} -> {} via {}", p.src, p.dst, p.via),
        Output::Inventory(i) => format!("{} NVMe, {} providers", i.nvme.len(), i.providers.len()),
        Output::Binds(b) => format!(
            "{} bound of {}",
            b.iter().filter(|b| b.exit == 0).count(),
            b.len()
        ),
        Output::Check(c) => format!("supported {:?}", c.supported),
        Output::Probe(p) => format!("read {:?}, write {:?}", p.read, p.write),
        Output::Capture(c) => format!("{} bytes archived", c.archive_bytes),
        Output::AddressMap(m) => format!("{} functions", m.resources.len()),
        Output::Marked(lba) => format!("lba {lba}"),
        Output::Dmesg(l) => format!("{} lines", l.len()),
        Output::Spawned(pid) => format!("pid {pid}"),
        Output::Unplugged(secs) => format!("unplugged after {secs:.1} s"),
        Output::Connected(c) => format!(
            "{} (cntlid {}) after {} attempt(s), namespaces {:?}",
            c.controller, c.cntlid, c.attempts, c.namespaces
        ),
        Output::Waited(secs) => format!("seen after {secs:.1} s"),
        Output::Nothing => String::new(),
    }
}

/// Boots with the pairs plan and reads its answers.
fn run_pairs(
    lab: &Lab,
    topo: &Topology,
    cpu: &str,
    opts: PairsOptions,
) -> anyhow::Result<(PlanRun, PairsResult)> {
    // The demo's copies are measured from QEMU's DMA trace.
    let out = lab.run_plan(topo, Some(cpu), &pairs_plan(opts), opts.copy)?;
    let res = PairsResult::from_run(&out, opts)?;
    Ok((out, res))
}

fn qemu_version() -> String {
    std::process::Command::new(p2pmem_lab::machine::qemu_args::QEMU)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

fn capture(guest: &GuestOpts, dir: &Path) -> anyhow::Result<i32> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} exists and is not empty", dir.display());
    }
    let (lab, topo) = guest.lab_and_topology()?;
    let cpu = guest.cpu(&topo).to_string();
    let opts = PairsOptions {
        capture: true,
        check: false,
        copy: false,
    };
    let (out, res) = run_pairs(&lab, &topo, &cpu, opts)?;
    let captured = res.capture.as_ref().context("the guest did not capture")?;
    for w in &captured.warnings {
        eprintln!("lab: capture: {w}");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let root = dir.join("root");
    unpack_tar(out.attachment("capture")?, &root)?;
    let qemu = qemu_version();
    let truth = build_truth(
        &TruthContext {
            topo: &topo,
            cpu: &cpu,
            boot_dmesg: &out.boot_dmesg,
            kernel_key: &out.kernel.key,
            kernel_source: &out.kernel.source,
            qemu_version: &qemu,
        },
        &res,
    );
    let write = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, data).with_context(|| format!("cannot write {}", p.display()))
    };
    write(
        "truth.json",
        (serde_json::to_string_pretty(&truth)? + "\n").as_bytes(),
    )?;
    write("boot_dmesg.txt", out.boot_dmesg.as_bytes())?;
    write("qemu.sh", scratch_script(&topo, &cpu).as_bytes())?;
    let failed = truth
        .pairs
        .iter()
        .zip(&res.pairs)
        .filter(|(t, p)| match &p.probe {
            Some(_) => t.read.as_deref() != Some(p2pmem_wire::probe::OK),
            None => !p.kernel_ok(),
        })
        .count();
    eprintln!(
        "lab: captured {} ({} pairs, {} not ok) into {}",
        topo.name,
        truth.pairs.len(),
        failed,
        dir.display()
    );
    let missing = res
        .pairs
        .iter()
        .filter(|p| p.kernel_verdict().is_none())
        .count();
    if missing > 0 {
        eprintln!(
            "lab: {missing} pairs have no kernel verdict (see probe_error and nvmet in truth.json)"
        );
        return Ok(1);
    }
    Ok(0)
}

fn demo_cmd(guest: &GuestOpts, json: bool, verbose: bool) -> anyhow::Result<i32> {
    let (lab, topo) = guest.lab_and_topology()?;
    let cpu = guest.cpu(&topo).to_string();
    let opts = PairsOptions {
        capture: false,
        check: true,
        copy: true,
    };
    let (out, res) = run_pairs(&lab, &topo, &cpu, opts)?;
    let (pairs, mut summary) = demo(&topo.name, &cpu, &res);
    if let Some(Ok(c)) = &res.cmb_copy {
        let exit = |step: &str| out.copy(step).ok().map(|o| o.exit);
        let copies = [
            (c.picked.via.to_string(), exit(dma_steps::CMB_COPY)),
            ("host".to_string(), exit(dma_steps::HOST_COPY)),
        ];
        match out
            .address_map(dma_steps::MAP)
            .and_then(|map| demo_copies(&out.run_dir, map, copies))
        {
            Ok(copies) => summary.dma = copies,
            Err(e) => summary.dma_error = Some(e.to_string()),
        }
    }
    if json {
        let mut stdout = std::io::stdout().lock();
        for p in &pairs {
            writeln!(stdout, "{}", p2pmem_wire::doc::line("lab_demo_pair", p)?)?;
        }
        writeln!(
            stdout,
            "{}",
            p2pmem_wire::doc::line("lab_demo_summary", &summary)?
        )?;
    } else {
        print_demo(&topo, &res, &pairs, &summary, verbose);
    }
    Ok(if summary.agreed == summary.pairs {
        0
    } else {
        1
    })
}

fn verdict(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "p2p ok",
        Some(false) => "refused",
        None => "n/a",
    }
}

fn print_demo(
    topo: &Topology,
    res: &PairsResult,
    pairs: &[DemoPair],
    s: &DemoSummary,
    verbose: bool,
) {
    println!(
        "topology {} (cpu {}, kernel {}): {}",
        topo.name, s.cpu, res.inventory.osrelease, topo.description
    );
    println!(
        "{} pairs: {} agreed (the prediction made in the guest equals the kernel's verdict, errno and decision lines), {} disagreed, {} incomplete; the kernel allowed {}",
        s.pairs, s.agreed, s.disagreed, s.incomplete, s.kernel_ok
    );
    println!();
    print_pair_table(pairs);
    print_legend(pairs, &s.cpu);
    println!();
    if verbose {
        print_pairs_verbose(pairs);
    } else {
        print_pair_groups(pairs);
    }
    println!();
    println!("NVMe devices:");
    for n in &res.inventory.nvme {
        let cmb = topo
            .nvme
            .iter()
            .find(|t| t.serial == n.serial)
            .and_then(|t| t.cmb_mb)
            .map_or("no CMB (client only)".to_string(), |mb| {
                format!("CMB {mb} MiB (provider)")
            });
        println!("  {}  {:<6} {:<13} {cmb}", n.bdf, n.serial, n.blkdev);
    }
    crate::cmd_provider::print_demo_binds(&res.binds);
    println!();
    println!("verified copy through a CMB: {}", s.copy);
    crate::cmd_provider::print_demo_copy(s);
    for line in crate::lab_dma::demo_lines(&s.dma, s.dma_error.as_deref()) {
        println!("{line}");
    }
    for m in &s.qemu_messages {
        println!("QEMU: {m}");
    }
    if s.iommu_faults {
        println!("QEMU's IOMMU refused a device's DMA above: QEMU 7.2 translates peer-to-peer DMA too (real hardware routes it below the IOMMU), so a transfer the kernel reported as done may have moved no data; the verified copies tell.");
    }
    println!(
        "summary: {} pairs, {} agreed, {} disagreed, {} incomplete; the kernel allowed {}",
        s.pairs, s.agreed, s.disagreed, s.incomplete, s.kernel_ok
    );
}

/// Providers by clients, one cell per pair: the kernel's verdict in a few letters, `!`
/// where the prediction disagreed.
fn print_pair_table(pairs: &[DemoPair]) {
    let mut providers: Vec<&str> = Vec::new();
    let mut clients: Vec<&str> = Vec::new();
    for p in pairs {
        if !providers.contains(&p.provider.as_str()) {
            providers.push(&p.provider);
        }
        if !clients.contains(&p2pmem_lab::reports::grouped::disk(p)) {
            clients.push(p2pmem_lab::reports::grouped::disk(p));
        }
    }
    let width = clients.iter().map(|c| c.len()).max().unwrap_or(2).max(3);
    print!("{:<14}", "provider");
    for c in &clients {
        print!(" {c:>width$}");
    }
    println!();
    for prov in &providers {
        print!("{prov:<14}");
        for c in &clients {
            let cell = pairs
                .iter()
                .find(|p| p.provider == *prov && p2pmem_lab::reports::grouped::disk(p) == *c)
                .map_or("-".to_string(), |p| {
                    let v = match (p.kernel, p.map_type.as_deref()) {
                        (Some(true), Some("bus_addr")) => "B",
                        (Some(true), Some("thru_host_bridge")) => "H",
                        (Some(true), _) => "ok",
                        (Some(false), _) => "x",
                        (None, _) => "?",
                    };
                    let mark = if p.agree == Some(false) { "!" } else { "" };
                    format!("{v}{mark}")
                });
            print!(" {cell:>width$}");
        }
        println!();
    }
    println!("  B: p2p ok, bus address   H: p2p ok, through the host bridge   x: refused   ?: no kernel verdict   !: the prediction disagreed");
}

/// The pairs grouped by outcome, each distinct kernel message once with the pairs it was
/// logged for (`PROVIDER`, `CLIENT` and `DISK` stand for each pair's own).
fn print_pair_groups(pairs: &[DemoPair]) {
    let name = |i: usize| {
        format!(
            "{} -> {}",
            pairs[i].provider,
            p2pmem_lab::reports::grouped::disk(&pairs[i])
        )
    };
    for g in p2pmem_lab::reports::grouped::group(pairs) {
        let agreed = match g.agreed {
            Some(true) => "all agreed",
            Some(false) => "DISAGREED",
            None => "some incomplete",
        };
        println!("{}: {} pairs, {agreed}", g.outcome, g.pairs.len());
        let mut by_provider: Vec<(&str, Vec<&str>)> = Vec::new();
        for &i in &g.pairs {
            let p = &pairs[i];
            match by_provider.iter_mut().find(|(prov, _)| *prov == p.provider) {
                Some((_, cs)) => cs.push(p2pmem_lab::reports::grouped::disk(p)),
                None => {
                    by_provider.push((&p.provider, vec![p2pmem_lab::reports::grouped::disk(p)]))
                }
            }
        }
        for (prov, cs) in by_provider {
            println!("  {prov} -> {}", cs.join(", "));
        }
        for &i in &g.pairs {
            let p = &pairs[i];
            if let Some(d) = &p.disagreement {
                println!("  DISAGREEMENT {}: {d}", name(i));
            }
            if let Some(e) = &p.prediction_error {
                println!("  prediction unavailable for {}: {e}", name(i));
            }
            if let Some(e) = &p.kernel_error {
                println!("  kernel probe unavailable for {}: {e}", name(i));
            }
        }
        if !g.messages.is_empty() {
            println!("  the kernel said (PROVIDER, CLIENT, DISK: each pair's own):");
        }
        for (message, who) in &g.messages {
            if who.len() == g.pairs.len() {
                println!("    {message}");
            } else {
                let names: Vec<String> = who.iter().map(|&i| name(i)).collect();
                println!("    {message}   [only {}]", names.join(", "));
            }
        }
    }
}

/// Every pair on its own, with all its kernel lines (`--verbose`).
fn print_pairs_verbose(pairs: &[DemoPair]) {
    for p in pairs {
        let agree = match p.agree {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        println!(
            "provider {} -> client {} ({}): predicted {}, kernel {} (read {}, write {}), agree {agree}",
            p.provider,
            p.client,
            p.client_blkdev,
            verdict(p.predicted),
            verdict(p.kernel),
            p.read.as_deref().unwrap_or("-"),
            p.write.as_deref().unwrap_or("-"),
        );
        if let Some(e) = &p.prediction_error {
            println!("    prediction unavailable: {e}");
        }
        if let Some(e) = &p.kernel_error {
            println!("    kernel probe unavailable: {e}");
        }
        if let Some(d) = &p.disagreement {
            println!("    DISAGREEMENT: {d}");
        }
        for l in &p.kernel_log {
            println!("    kernel: {l}");
        }
    }
}

/// What the table means, for someone new to P2PDMA, from the map types seen.
fn print_legend(pairs: &[DemoPair], cpu: &str) {
    let seen = |m: &str| pairs.iter().any(|p| p.map_type.as_deref() == Some(m));
    println!("what this shows:");
    if seen("bus_addr") {
        println!("  p2p ok (bus_addr): provider and client share a switch, a port or a device with no ACS redirect, so the data turns around below that common device and never reaches the CPU's memory.");
    }
    if seen("thru_host_bridge") {
        println!("  p2p ok (thru_host_bridge): the path goes up through the host bridge, which the kernel allows on this CPU (AMD Zen or later) or for a whitelisted host bridge.");
    }
    if seen("not_supported") {
        println!("  refused: the path would need the host bridge (different root ports, or an ACS redirect on the way), and the kernel allows that only on AMD Zen or later CPUs or whitelisted host bridges; this guest's CPU (-cpu {cpu}) and q35's host bridge 8086:29c0 are neither, so O_DIRECT through that p2pmem fails with the errno shown.");
        println!("  try: p2pmem lab demo --cpu max,family=23   (a Zen CPU: the refused pairs go through the host bridge)");
    }
    println!("  ask the same questions about a real machine with: p2pmem topo, p2pmem check PROVIDER CLIENT, p2pmem doctor");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command, FromArgMatches};

    /// The lab subcommand next to global `--json`/`--root` flags like main.rs has.
    fn cli() -> Command {
        let lab = LabArgs::augment_args(Command::new("lab"));
        Command::new("p2pmem")
            .arg(
                Arg::new("json")
                    .long("json")
                    .global(true)
                    .action(ArgAction::SetTrue),
            )
            .arg(Arg::new("root").long("root").global(true))
            .subcommand(lab)
    }

    #[test]
    fn clap_definition_is_consistent() {
        cli().debug_assert();
    }

    #[test]
    fn run_takes_the_command_after_double_dash() {
        let m = cli()
            .try_get_matches_from([
                "p2pmem",
                "lab",
                "run",
                "--topology",
                "switch",
                "--",
                "sh",
                "-c",
                "exit 3",
            ])
            .unwrap();
        let (_, sub) = m.subcommand().unwrap();
        let args = LabArgs::from_arg_matches(sub).unwrap();
        match args.command {
            LabCommand::Run { guest, command, .. } => {
                assert_eq!(guest.topology, "switch");
                assert_eq!(command, ["sh", "-c", "exit 3"]);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn p2pmem_copy_commands_are_recognised() {
        assert!(is_p2pmem_copy(&argv("p2pmem copy a b")));
        assert!(is_p2pmem_copy(&argv("p2pmem --json copy a b --via host")));
        assert!(is_p2pmem_copy(&argv("/bin/p2pmem --root /x copy a b")));
        assert!(!is_p2pmem_copy(&argv("p2pmem --root copy topo")));
        assert!(!is_p2pmem_copy(&argv("p2pmem check a b")));
        assert!(!is_p2pmem_copy(&argv("sh -c p2pmem copy")));
        assert!(!is_p2pmem_copy(&[]));
    }

    #[test]
    fn a_word_ending_in_an_nvme_address_names_its_namespace() {
        let bdf: Bdf = "0000:03:00.0".parse().unwrap();
        let words = run_words(&argv(
            "dd if={nvme:0000:03:00.0} {nvme:0000:03:00.0} of=/dev/null {nvme} a{b}",
        ))
        .unwrap();
        assert_eq!(
            words,
            [
                super::Arg::from("dd"),
                super::Arg::Dev {
                    dev: Dev::Nvme(bdf),
                    prefix: "if=".into()
                },
                Dev::Nvme(bdf).into(),
                super::Arg::from("of=/dev/null"),
                super::Arg::from("{nvme}"),
                super::Arg::from("a{b}"),
            ]
        );
        for bad in [
            "{nvme:0000:03:00.0}x",
            "{nvme:03:00}",
            "{nvme:}",
            "{nvme:0000:03:00.0",
        ] {
            let e = run_words(&[bad.to_string()]).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{bad:?}: ")), "{bad}: {e}");
        }
    }

    #[test]
    fn a_traced_run_brackets_the_command_with_window_0() {
        let cmd = argv("p2pmem copy /dev/nvme0n1 /dev/nvme1n1");
        let words = run_words(&cmd).unwrap();
        let plain = run_plan(words.clone(), false);
        assert_eq!(plain.steps.len(), 1);
        let exec = Step::Exec {
            argv: cmd.iter().map(|a| a.as_str().into()).collect(),
        };
        assert_eq!(plain.steps[0].step, exec);
        let traced = run_plan(words, true);
        let w = Window::nth(0);
        let steps: Vec<&Step> = traced.steps.iter().map(|s| &s.step).collect();
        assert_eq!(
            steps,
            [
                &Step::AddressMap,
                &Step::Mark { lba: w.begin_lba },
                &exec,
                &Step::Mark { lba: w.end_lba },
            ]
        );
        assert_eq!(traced.steps[2].name, RUN_STEP);
        assert_eq!(traced.steps[0].name, RUN_MAP_STEP);
    }

    #[test]
    fn demo_json_comes_from_the_global_flag() {
        let m = cli()
            .try_get_matches_from(["p2pmem", "lab", "demo", "--json"])
            .unwrap();
        assert!(m.get_flag("json"));
        let (_, sub) = m.subcommand().unwrap();
        let args = LabArgs::from_arg_matches(sub).unwrap().with_json(true);
        assert!(args.json);
    }
}
