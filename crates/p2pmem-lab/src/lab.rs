//! One guest run, end to end: kernel (cached), disk images, initramfs, QEMU, decoded
//! output. [`Lab`] holds the host-side settings; [`Lab::run`] boots a topology, runs a
//! [`Job`] and returns a [`RunOutcome`]. Each run gets its own directory under the
//! cache's `runs/` holding `console.log`, `qemu.sh` and `qemu.stderr`; disk images and
//! the initramfs are deleted when the run ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cache::Cache;
use crate::disk::create_images;
use crate::error::{io_err, LabError, Result};
use crate::guest::{parse_console, GuestReport};
use crate::initramfs::{build_initramfs, InitramfsSpec, DEFAULT_BUSYBOX};
use crate::kernel::{ensure_kernel, Kernel, KernelSpec};
use crate::progress::Progress;
use crate::qemu::{run_qemu, DEFAULT_TIMEOUT};
use crate::qemu_args::{qemu_args, qemu_script, MachineFiles};
use crate::topology::Topology;

/// Environment variable naming the static `p2pmem` binary to put in the guest (default:
/// the running executable).
pub const BIN_ENV: &str = "P2PMEM_LAB_BIN";

/// Environment variable overriding the guest timeout in seconds.
pub const TIMEOUT_ENV: &str = "P2PMEM_LAB_TIMEOUT";

/// Host-side settings of the lab.
#[derive(Debug, Clone)]
pub struct Lab {
    /// Where kernels and runs go.
    pub cache: Cache,
    /// The kernel to build.
    pub kernel: KernelSpec,
    /// The static `p2pmem` binary for the guest.
    pub p2pmem: PathBuf,
    /// The static busybox for the guest.
    pub busybox: PathBuf,
    /// Limit for one guest run.
    pub timeout: Duration,
    /// Phase lines.
    pub progress: Progress,
}

/// What to do in the guest.
#[derive(Debug, Clone, Default)]
pub struct Job {
    /// Shell script run by busybox `sh` in `/tmp`.
    pub script: String,
    /// Guest directories to bring back as tar streams (in [`RunOutcome::dirs`]).
    pub fetch_dirs: Vec<String>,
}

/// The result of one guest run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run directory (console log, QEMU command).
    pub run_dir: PathBuf,
    /// The console log.
    pub console_log: PathBuf,
    /// The full QEMU argv.
    pub qemu_args: Vec<String>,
    /// The kernel used.
    pub kernel: Kernel,
    /// The job's stdout.
    pub stdout: Vec<u8>,
    /// The job's stderr.
    pub stderr: Vec<u8>,
    /// The job's exit status.
    pub exit_code: i32,
    /// The guest's kernel log just before the job (`dmesg`, with timestamps).
    pub boot_dmesg: String,
    /// The guest's kernel log after the job (`dmesg`, with timestamps). A job that clears
    /// the ring buffer (klogctl CLEAR) leaves only what came after.
    pub dmesg: String,
    /// Tar streams of the fetched directories, in [`Job::fetch_dirs`] order, with
    /// tar's status.
    pub dirs: Vec<(i32, Vec<u8>)>,
    /// NVMe block devices found / expected.
    pub nvme_ready: Option<(u32, u32)>,
    /// Seconds from QEMU start to `/init`.
    pub init_secs: Option<f64>,
    /// Seconds the whole QEMU run took.
    pub qemu_secs: f64,
}

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
        Ok(Self {
            cache: Cache::from_env(),
            kernel: KernelSpec::default(),
            p2pmem,
            busybox: PathBuf::from(DEFAULT_BUSYBOX),
            timeout,
            progress: Progress::stderr(),
        })
    }

    /// Builds or reuses the kernel, and the `p2pmem_pci` module built against it.
    pub fn kernel(&self) -> Result<Kernel> {
        let kernel = ensure_kernel(&self.cache, &self.kernel, self.progress)?;
        self.driver(&kernel)?;
        Ok(kernel)
    }

    /// Builds or reuses the `p2pmem_pci` module for `kernel` (see [`crate::driver`]).
    pub fn driver(&self, kernel: &Kernel) -> Result<PathBuf> {
        crate::driver::ensure_driver(&self.cache, kernel, self.progress)
    }

    /// Boots `topo` (with `cpu` overriding its CPU model), runs `job`, and decodes the
    /// guest's output. The job's own exit status is data, not an error.
    pub fn run(&self, topo: &Topology, cpu: Option<&str>, job: &Job) -> Result<RunOutcome> {
        self.run_traced(topo, cpu, job, false)
    }

    /// [`Lab::run`] with QEMU's nvme DMA trace on, written to
    /// `<run_dir>/`[`crate::trace::TRACE_FILE`] (see [`crate::trace`]).
    pub fn run_with_dma_trace(
        &self,
        topo: &Topology,
        cpu: Option<&str>,
        job: &Job,
    ) -> Result<RunOutcome> {
        self.run_traced(topo, cpu, job, true)
    }

    fn run_traced(
        &self,
        topo: &Topology,
        cpu: Option<&str>,
        job: &Job,
        trace: bool,
    ) -> Result<RunOutcome> {
        crate::elf::require_static(&self.p2pmem)?;
        let kernel = self.kernel()?;
        let run_dir = self.cache.new_run_dir()?;
        let result = self.run_in(&run_dir, &kernel, topo, cpu, job, trace);
        // Images and initramfs are large and per-run; logs stay.
        let _ = std::fs::remove_dir_all(run_dir.join("img"));
        let _ = std::fs::remove_file(run_dir.join("initramfs.cpio.gz"));
        result
    }

    fn run_in(
        &self,
        run_dir: &Path,
        kernel: &Kernel,
        topo: &Topology,
        cpu: Option<&str>,
        job: &Job,
        trace: bool,
    ) -> Result<RunOutcome> {
        let images = run_dir.join("img");
        create_images(topo, &images)?;
        let initrd = run_dir.join("initramfs.cpio.gz");
        let module = self.driver(kernel)?;
        build_initramfs(
            &InitramfsSpec {
                busybox: self.busybox.clone(),
                p2pmem: self.p2pmem.clone(),
                job: job.script.clone(),
                nvme_count: topo.nvme.len(),
                send_dirs: job.fetch_dirs.clone(),
                modules: vec![module],
            },
            &initrd,
        )?;
        let files = MachineFiles {
            kernel: &kernel.bzimage,
            initrd: &initrd,
            images: &images,
            serial: "stdio",
        };
        let mut args = qemu_args(topo, &files, cpu);
        if trace {
            args.extend(crate::trace::qemu_trace_args(
                &run_dir.join(crate::trace::TRACE_FILE),
            ));
        }
        let script = qemu_script(&args, &format!("p2pmem lab run of topology {}", topo.name));
        let script_path = run_dir.join("qemu.sh");
        std::fs::write(&script_path, script).map_err(io_err("cannot write", &script_path))?;
        self.progress.phase(&format!(
            "booting topology {} (cpu {}, {} NVMe) under QEMU/TCG; run dir {}",
            topo.name,
            cpu.unwrap_or(&topo.cpu),
            topo.nvme.len(),
            run_dir.display()
        ));
        let console_log = run_dir.join("console.log");
        let cap = run_qemu(&args, &console_log, self.timeout, self.progress)?;
        let report = parse_console(&cap.text)?;
        let outcome = assemble(report, &cap.console_log, job).map_err(|why| LabError::Guest {
            why,
            console: cap.console_log.clone(),
            tail: crate::error::tail_lines(&cap.text, 30),
        })?;
        self.progress.phase(&format!(
            "guest finished in {:.1} s (job exit status {})",
            cap.total_secs, outcome.exit_code
        ));
        Ok(RunOutcome {
            run_dir: run_dir.to_path_buf(),
            console_log: cap.console_log,
            qemu_args: args,
            kernel: kernel.clone(),
            init_secs: cap.init_secs,
            qemu_secs: cap.total_secs,
            ..outcome
        })
    }
}

fn assemble(
    report: GuestReport,
    console: &Path,
    job: &Job,
) -> std::result::Result<RunOutcome, String> {
    let get = |id: &str| {
        report
            .frame(id)
            .cloned()
            .ok_or_else(|| format!("the guest sent no `{id}` payload"))
    };
    let stdout = get("stdout")?;
    let stderr = get("stderr")?;
    let dmesg = get("dmesg")?;
    let bootlog = get("bootlog")?;
    let mut dirs = Vec::new();
    for i in 0..job.fetch_dirs.len() {
        let f = get(&format!("dir{i}"))?;
        dirs.push((f.rc, f.data));
    }
    Ok(RunOutcome {
        run_dir: PathBuf::new(),
        console_log: console.to_path_buf(),
        qemu_args: Vec::new(),
        kernel: Kernel {
            bzimage: PathBuf::new(),
            config: PathBuf::new(),
            key: String::new(),
            built: false,
        },
        stdout: stdout.data,
        stderr: stderr.data,
        exit_code: stdout.rc,
        boot_dmesg: String::from_utf8_lossy(&bootlog.data).into_owned(),
        dmesg: String::from_utf8_lossy(&dmesg.data).into_owned(),
        dirs,
        nvme_ready: report.ready,
        init_secs: None,
        qemu_secs: 0.0,
    })
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

/// Quotes `args` into one shell command line for `/lab/job.sh`.
pub fn job_from_argv(args: &[String]) -> String {
    let words: Vec<String> = args.iter().map(|a| sh_word(a)).collect();
    format!("{}\n", words.join(" "))
}

fn sh_word(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_=,./:@+%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
