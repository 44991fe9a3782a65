//! One guest run, end to end: kernel (cached), disk images, initramfs holding the
//! [`Plan`], QEMU, and the typed answer. [`Lab`] holds the host-side settings;
//! [`Lab::run_plan`] boots a topology, has `p2pmem agent` run the plan in the guest and
//! returns a [`PlanRun`]: one [`StepReport`] per step, read by name with typed
//! accessors. Each run gets its own directory under the cache's `runs/` holding
//! `console.log`, `qemu.sh` and `qemu.stderr`; disk images and the initramfs are deleted
//! when the run ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::build::{
    build_initramfs, ensure_kernel, lines::Line, Cache, Driver, InitramfsSpec, Kernel,
    KernelSource, KernelSpec, DEFAULT_BUSYBOX,
};
use crate::error::{io_err, LabError, Result};
use crate::machine::create_images;
use crate::machine::nic::NetLink;
use crate::machine::qemu_args::{qemu_args_linked, qemu_script, MachineFiles};
use crate::machine::topology::Topology;
use crate::progress::Progress;
use crate::run::qemu::{run_qemu, DEFAULT_TIMEOUT};
use p2pmem_wire::check::CheckReport;
use p2pmem_wire::frame::{ConsoleReport, Frame};
use p2pmem_wire::plan::Plan;
use p2pmem_wire::probe::DmaProbeResult;
use p2pmem_wire::report::{
    frame_id, AddressMap, BindAttempt, Captured, Connected, CopyOutcome, ExecResult, HashResult,
    HostRequest, Inventory, Output, PairRecord, Picked, PlanEnd, StepReport, StepResult,
};

/// Environment variable naming the `p2pmem` binary to put in the guest (default: the
/// running executable; a dynamically linked one comes with its libraries).
pub const BIN_ENV: &str = "P2PMEM_LAB_BIN";

/// Environment variable overriding the guest timeout in seconds.
pub const TIMEOUT_ENV: &str = "P2PMEM_LAB_TIMEOUT";

/// The environment variable naming the kernel line a lab boots by default (`7.3`):
/// `scripts/test` runs the driver's lab tests once per line the driver is built for.
pub const KERNEL_ENV: &str = "P2PMEM_LAB_KERNEL";

/// Host-side settings of the lab.
#[derive(Debug, Clone)]
pub struct Lab {
    /// Where kernels and runs go.
    pub cache: Cache,
    /// The kernel to build.
    pub kernel: KernelSpec,
    /// The `p2pmem` binary for the guest (static, or with its libraries).
    pub p2pmem: PathBuf,
    /// The static busybox for the guest.
    pub busybox: PathBuf,
    /// Limit for one guest run.
    pub timeout: Duration,
    /// Phase lines.
    pub progress: Progress,
}

/// What a plan run brought back (serialisable: the lab tests share one guest's run
/// between their processes).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PlanRun {
    /// The run directory (console log, QEMU command, DMA trace).
    pub run_dir: PathBuf,
    /// The console log.
    pub console_log: PathBuf,
    /// The full QEMU argv.
    pub qemu_args: Vec<String>,
    /// The kernel used.
    pub kernel: Kernel,
    /// The `p2pmem_pci` module the guest had, or why it had none.
    pub driver: Driver,
    /// The guest's kernel log before the first step (`dmesg` lines, with timestamps).
    pub boot_dmesg: String,
    /// The guest's kernel log after the last step. A step that clears the ring buffer
    /// (the DMA probe) leaves only what came after.
    pub dmesg: String,
    /// One report per step, in plan order.
    pub steps: Vec<StepReport>,
    /// Attachments (a capture's tar stream) by step index.
    pub attachments: Vec<(usize, Vec<u8>)>,
    /// NVMe block devices found / expected.
    pub nvme_ready: Option<(u32, u32)>,
    /// Seconds from QEMU start to `/init`.
    pub init_secs: Option<f64>,
    /// Seconds the whole QEMU run took.
    pub qemu_secs: f64,
    /// What QEMU printed on stderr (at most [`QEMU_MESSAGES`] lines), e.g. an emulated
    /// IOMMU's translation faults: a device's DMA that QEMU dropped.
    pub qemu_messages: Vec<String>,
    /// What the host did to the machine when steps asked
    /// ([`p2pmem_wire::plan::Step::Unplug`]), one line each, `FAILED: ...` when it could
    /// not.
    pub host_actions: Vec<String>,
}

/// One guest of [`Lab::run_pair`]: what [`Lab::run_plan`] takes.
#[derive(Debug, Clone, Copy)]
pub struct Guest<'a> {
    /// The machine.
    pub topo: &'a Topology,
    /// Overrides the topology's CPU model.
    pub cpu: Option<&'a str>,
    /// What its agent runs.
    pub plan: &'a Plan,
    /// QEMU's nvme DMA trace into the run directory.
    pub trace: bool,
}

/// A guest thread's result; a panic in it is passed on.
fn join(t: std::thread::ScopedJoinHandle<'_, Result<PlanRun>>) -> Result<PlanRun> {
    t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// How many lines of QEMU's stderr a [`PlanRun`] keeps.
pub const QEMU_MESSAGES: usize = 20;

impl Lab {
    /// Settings from the environment: cache from `P2PMEM_LAB_CACHE` etc., the guest
    /// binary from `P2PMEM_LAB_BIN` or the running executable, the timeout from
    /// `P2PMEM_LAB_TIMEOUT`.
    pub fn from_env() -> Result<Self> {
        let p2pmem = match std::env::var_os(BIN_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => std::env::current_exe()
                .map_err(io_err("cannot locate", "the running executable"))?,
        };
        let timeout = std::env::var(TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        let kernel = match std::env::var(KERNEL_ENV) {
            Ok(text) if !text.is_empty() => {
                let line = Line::parse(&text).ok_or_else(|| LabError::Source {
                    origin: format!("{KERNEL_ENV}={text}"),
                    why: "not a kernel line (MAJOR.MINOR)".into(),
                })?;
                KernelSpec {
                    source: KernelSource::line(line)?,
                    fragment: None,
                }
            }
            _ => KernelSpec::default(),
        };
        Ok(Self {
            cache: Cache::from_env(),
            kernel,
            p2pmem,
            busybox: PathBuf::from(DEFAULT_BUSYBOX),
            timeout,
            progress: Progress::stderr(),
        })
    }

    /// Builds or reuses the kernel, and the `p2pmem_pci` module built against it (or
    /// says, as a phase line, why there is none).
    pub fn kernel(&self) -> Result<(Kernel, Driver)> {
        let kernel = ensure_kernel(&self.cache, &self.kernel, self.progress)?;
        let driver = self.driver(&kernel)?;
        if let Some(why) = driver.not_built() {
            self.progress.phase(why);
        }
        Ok((kernel, driver))
    }

    /// Builds or reuses the `p2pmem_pci` module for `kernel`, or says why it is not built
    /// (see [`Driver`]).
    pub fn driver(&self, kernel: &Kernel) -> Result<Driver> {
        crate::build::ensure_driver(&self.cache, kernel, self.progress)
    }

    /// Boots `topo` (with `cpu` overriding its CPU model) and has the guest agent run
    /// `plan`; with `trace`, QEMU's nvme DMA trace goes to
    /// `<run_dir>/`[`crate::machine::qemu_args::TRACE_FILE`]. What the steps found (failures
    /// included) is data, not an error; a guest that never finished the plan is one.
    pub fn run_plan(
        &self,
        topo: &Topology,
        cpu: Option<&str>,
        plan: &Plan,
        trace: bool,
    ) -> Result<PlanRun> {
        let (kernel, _) = self.kernel()?;
        let guest = Guest {
            topo,
            cpu,
            plan,
            trace,
        };
        self.run_guest(&kernel, &guest, None)
    }

    /// Boots two guests at once, each with its own topology and plan, their network
    /// cards (each topology's `[nic]`) joined by one wire ([`NetLink`]), and returns both
    /// runs, `a`'s first. The guests start together and run their plans independently:
    /// a plan that needs the other guest waits for it in a step
    /// ([`p2pmem_wire::plan::Step::Connect`] retries; [`p2pmem_wire::plan::Step::WaitForBlock`]
    /// polls), bounded by its own time limit and the lab's timeout. Progress lines say
    /// which guest they are about.
    pub fn run_pair(&self, a: &Guest<'_>, b: &Guest<'_>) -> Result<(PlanRun, PlanRun)> {
        for g in [a, b] {
            if g.topo.nic.is_none() {
                return Err(LabError::Topology {
                    path: PathBuf::from(&g.topo.name),
                    message: "key `nic`: a guest run beside another needs a network card".into(),
                });
            }
        }
        let (kernel, _) = self.kernel()?;
        let (la, lb) = NetLink::pair().map_err(io_err(
            "cannot find two free UDP ports on",
            Path::new("127.0.0.1"),
        ))?;
        self.progress.phase(&format!(
            "two guests on one wire: a = topology {} (udp {}), b = topology {} (udp {})",
            a.topo.name, la.local, b.topo.name, lb.local
        ));
        let mut lab_a = self.clone();
        lab_a.progress = self.progress.labelled("a");
        let mut lab_b = self.clone();
        lab_b.progress = self.progress.labelled("b");
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| lab_a.run_guest(&kernel, a, Some(&la)));
            let tb = s.spawn(|| lab_b.run_guest(&kernel, b, Some(&lb)));
            (join(ta), join(tb))
        });
        Ok((ra?, rb?))
    }

    /// One guest in its own run directory; images and initramfs are removed after.
    fn run_guest(&self, kernel: &Kernel, g: &Guest<'_>, link: Option<&NetLink>) -> Result<PlanRun> {
        let run_dir = self.cache.new_run_dir()?;
        let result = self.run_in(&run_dir, kernel, g, link);
        // Images and initramfs are large and per-run; logs stay.
        let _ = std::fs::remove_dir_all(run_dir.join("img"));
        let _ = std::fs::remove_file(run_dir.join("initramfs.cpio"));
        result
    }

    fn run_in(
        &self,
        run_dir: &Path,
        kernel: &Kernel,
        g: &Guest<'_>,
        link: Option<&NetLink>,
    ) -> Result<PlanRun> {
        let Guest {
            topo,
            cpu,
            plan,
            trace,
        } = *g;
        let images = run_dir.join("img");
        create_images(topo, &images)?;
        let initrd = run_dir.join("initramfs.cpio");
        let driver = self.driver(kernel)?;
        let plan_json = serde_json::to_string(plan).map_err(|source| LabError::Json {
            what: "the plan".into(),
            source,
        })?;
        build_initramfs(
            &InitramfsSpec {
                busybox: self.busybox.clone(),
                p2pmem: self.p2pmem.clone(),
                plan: plan_json,
                nvme_count: topo.nvme.len(),
                modules: driver.module().map(Path::to_path_buf).into_iter().collect(),
                host_files: plan.host_files.iter().map(PathBuf::from).collect(),
            },
            &initrd,
        )?;
        let files = MachineFiles {
            kernel: &kernel.bzimage,
            initrd: &initrd,
            images: &images,
            serial: "stdio",
        };
        let mut args = qemu_args_linked(topo, &files, cpu, link);
        let qmp_socket = run_dir.join(crate::run::qmp::QMP_SOCKET);
        if plan.needs_host_actions() {
            args.extend(crate::run::qmp::qmp_args(&qmp_socket));
        }
        if trace {
            args.extend(crate::machine::qemu_args::qemu_trace_args(
                &run_dir.join(crate::machine::qemu_args::TRACE_FILE),
            ));
        }
        let script = qemu_script(&args, &format!("p2pmem lab run of topology {}", topo.name));
        let script_path = run_dir.join("qemu.sh");
        std::fs::write(&script_path, script).map_err(io_err("cannot write", &script_path))?;
        self.progress.phase(&format!(
            "booting topology {} (cpu {}, {} NVMe{}) on kernel {} under QEMU/TCG; run dir {}",
            topo.name,
            cpu.unwrap_or(&topo.cpu),
            topo.nvme.len(),
            if topo.iommu.is_some() { ", IOMMU" } else { "" },
            kernel.line,
            run_dir.display()
        ));
        let console_log = run_dir.join("console.log");
        let total = plan.steps.len();
        let progress = self.progress;
        let mut host_actions: Vec<String> = Vec::new();
        let mut on_frame = |f: &Frame| {
            if f.id.starts_with(frame_id::HOST_PREFIX) {
                let done = match serde_json::from_slice::<HostRequest>(&f.data) {
                    Ok(HostRequest::UnplugNvme { serial }) => {
                        crate::run::qmp::Qmp::connect(&qmp_socket)
                            .and_then(|mut q| q.unplug_nvme(&serial))
                            .map(|path| format!("device_del {path} (NVMe serial {serial})"))
                    }
                    Err(e) => Err(format!("a host request the lab cannot read: {e}")),
                };
                let line = done.unwrap_or_else(|e| format!("FAILED: {e}"));
                progress.phase(&format!("host action for {}: {line}", f.id));
                host_actions.push(line);
            }
            if f.id.starts_with("step.") {
                if let Ok(r) = serde_json::from_slice::<StepReport>(&f.data) {
                    let how = match &r.result {
                        StepResult::Done { .. } => "done".to_string(),
                        StepResult::Failed { error } => format!("FAILED: {error}"),
                        StepResult::Skipped { why } => format!("skipped: {why}"),
                    };
                    progress.phase(&format!(
                        "step {}/{total} {}: {how} ({:.1} s)",
                        r.index + 1,
                        r.name,
                        r.seconds
                    ));
                }
            }
        };
        let cap = run_qemu(
            &args,
            &console_log,
            self.timeout,
            self.progress,
            &mut on_frame,
        )?;
        let guest_err = |why: String| LabError::Guest {
            why,
            console: cap.console_log.clone(),
            tail: crate::error::tail_lines(&cap.text, 30),
        };
        let answer = decode_answer(&cap.report, total).map_err(guest_err)?;
        let stderr =
            crate::error::read_tail(&run_dir.join("qemu.stderr"), crate::error::LOG_TAIL_BYTES);
        let qemu_messages: Vec<String> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(QEMU_MESSAGES)
            .map(str::to_string)
            .collect();
        for m in &qemu_messages {
            self.progress.phase(&format!("QEMU: {m}"));
        }
        self.progress.phase(&format!(
            "guest finished in {:.1} s ({total} steps, {} failed)",
            cap.total_secs, answer.failed
        ));
        Ok(PlanRun {
            run_dir: run_dir.to_path_buf(),
            console_log: cap.console_log,
            qemu_args: args,
            kernel: kernel.clone(),
            driver,
            boot_dmesg: answer.boot_dmesg,
            dmesg: answer.dmesg,
            steps: answer.steps,
            attachments: answer.attachments,
            nvme_ready: cap.report.ready,
            init_secs: cap.init_secs,
            qemu_secs: cap.total_secs,
            qemu_messages,
            host_actions,
        })
    }
}

/// The agent's frames, decoded.
struct Answer {
    boot_dmesg: String,
    dmesg: String,
    steps: Vec<StepReport>,
    attachments: Vec<(usize, Vec<u8>)>,
    failed: usize,
}

/// Reads the agent's frames: every step of the plan answered, in order, and the plan's
/// end. Never trusts the guest: a missing or malformed frame is an error that says
/// which.
fn decode_answer(report: &ConsoleReport, total: usize) -> std::result::Result<Answer, String> {
    let text = |id: &str| {
        report
            .frame(id)
            .map(|f| String::from_utf8_lossy(&f.data).into_owned())
    };
    let end: PlanEnd = match report.frame(frame_id::END) {
        Some(f) => serde_json::from_slice(&f.data)
            .map_err(|e| format!("the agent's end-of-plan frame is not JSON: {e}"))?,
        None => {
            let got = report
                .frames
                .iter()
                .filter(|f| f.id.starts_with("step."))
                .count();
            return Err(format!(
                "the guest agent stopped after {got} of {total} steps (no end-of-plan frame)"
            ));
        }
    };
    if let Some(e) = end.error {
        return Err(format!("the guest agent could not run the plan: {e}"));
    }
    let mut steps = Vec::with_capacity(total);
    let mut attachments = Vec::new();
    for i in 0..total {
        let f = report
            .frame(&frame_id::step(i))
            .ok_or_else(|| format!("the guest agent sent no report for step {i}"))?;
        let r: StepReport = serde_json::from_slice(&f.data)
            .map_err(|e| format!("the report of step {i} is not a step report: {e}"))?;
        if r.index != i {
            return Err(format!(
                "frame step.{i} holds the report of step {}",
                r.index
            ));
        }
        steps.push(r);
        if let Some(d) = report.frame(&frame_id::data(i)) {
            attachments.push((i, d.data.clone()));
        }
    }
    Ok(Answer {
        boot_dmesg: text(frame_id::BOOT_LOG).unwrap_or_default(),
        dmesg: text(frame_id::DMESG).unwrap_or_default(),
        steps,
        attachments,
        failed: end.failed,
    })
}

impl PlanRun {
    /// The report of the step named `name`.
    pub fn report(&self, name: &str) -> Result<&StepReport> {
        self.steps
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| LabError::Step {
                step: name.to_string(),
                why: "no such step in the plan".into(),
            })
    }

    /// The output of a step that ran; an error saying why when it failed or was skipped.
    pub fn output(&self, name: &str) -> Result<&Output> {
        match &self.report(name)?.result {
            StepResult::Done { output } => Ok(output),
            StepResult::Failed { error } => Err(LabError::Step {
                step: name.to_string(),
                why: format!("failed in the guest: {error}"),
            }),
            StepResult::Skipped { why } => Err(LabError::Step {
                step: name.to_string(),
                why: format!("skipped: {why}"),
            }),
        }
    }

    /// The attachment of the step named `name`.
    pub fn attachment(&self, name: &str) -> Result<&[u8]> {
        let index = self.report(name)?.index;
        self.attachments
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, d)| d.as_slice())
            .ok_or_else(|| LabError::Step {
                step: name.to_string(),
                why: "the guest sent no attachment".into(),
            })
    }
}

/// Typed accessors: the output of step `name` as the type its kind of step gives.
macro_rules! accessor {
    ($(#[$doc:meta] $fn:ident => $variant:ident($ty:ty);)*) => {
        impl PlanRun {
            $(
                #[$doc]
                pub fn $fn(&self, name: &str) -> Result<&$ty> {
                    match self.output(name)? {
                        Output::$variant(v) => Ok(v),
                        other => Err(LabError::Step {
                            step: name.to_string(),
                            why: format!("gave {}, not {}", output_kind(other), stringify!($variant)),
                        }),
                    }
                }
            )*
        }
    };
}

accessor! {
    /// An inventory step's output.
    inventory => Inventory(Inventory);
    /// A bind step's attempts.
    binds => Binds(Vec<BindAttempt>);
    /// A pairs step's records.
    pairs => Pairs(Vec<PairRecord>);
    /// A probe step's record.
    probe => Probe(DmaProbeResult);
    /// A check step's report.
    check => Check(CheckReport);
    /// A pick step's choice.
    picked => Picked(Picked);
    /// A copy step's outcome.
    copy => Copy(CopyOutcome);
    /// A hash step's result.
    hash => Hash(HashResult);
    /// An address-map step's map.
    address_map => AddressMap(AddressMap);
    /// A dmesg step's lines.
    dmesg_lines => Dmesg(Vec<String>);
    /// An exec or join step's result.
    exec => Exec(ExecResult);
    /// A capture step's summary.
    captured => Capture(Captured);
    /// A connect step's controller.
    connected => Connected(Connected);
}

fn output_kind(o: &Output) -> &'static str {
    match o {
        Output::Inventory(_) => "Inventory",
        Output::Capture(_) => "Capture",
        Output::Binds(_) => "Binds",
        Output::Pairs(_) => "Pairs",
        Output::Probe(_) => "Probe",
        Output::Check(_) => "Check",
        Output::Picked(_) => "Picked",
        Output::Copy(_) => "Copy",
        Output::Hash(_) => "Hash",
        Output::AddressMap(_) => "AddressMap",
        Output::Marked(_) => "Marked",
        Output::Dmesg(_) => "Dmesg",
        Output::Nothing => "Nothing",
        Output::Spawned(_) => "Spawned",
        Output::Exec(_) => "Exec",
        Output::Unplugged(_) => "Unplugged",
        Output::Connected(_) => "Connected",
        Output::Waited(_) => "Waited",
    }
}

/// Unpacks a tar stream from the guest into `dest` (created if needed). Paths escaping
/// `dest` are refused by the `tar` crate.
pub fn unpack_tar(data: &[u8], dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(io_err("cannot create", dest))?;
    let mut archive = tar::Archive::new(data);
    archive.set_preserve_permissions(false);
    archive
        .unpack(dest)
        .map_err(io_err("cannot unpack the guest's tar stream into", dest))
}
