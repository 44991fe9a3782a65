//! `p2pmem agent plan FILE`: runs a lab plan (`p2pmem_wire::plan`) inside the guest and
//! answers on stdout (the serial console) with frames: the kernel log before the first
//! step, one typed [`StepReport`] per step as soon as it ends (with a tar attachment
//! before it for a capture), the kernel log after the last step, and a [`PlanEnd`].
//! Every step runs through the same code as the command it stands for (`check`,
//! `copy`, `provider bind`, the DMA probe, `capture`), reading the system with the
//! reader `topo` uses; nothing goes through a shell.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use p2pmem_linux::dio::{Access, DirectFile};
use p2pmem_linux::dma_probe::dma_probe;
use p2pmem_linux::klog::{dmesg_lines, KernelLog, Syslog};
use p2pmem_linux::nvmet::probe::nvmet_probe;
use p2pmem_linux::p2pbuf::HostBuffer;
use p2pmem_linux::provider::BindOptions;
use p2pmem_linux::system::{read_system, System};
use p2pmem_model::dma_accounting::MARKER_BLOCKS;
use p2pmem_model::ratelimit;
use p2pmem_model::Bdf;
use p2pmem_wire::frame::encode_frame;
use p2pmem_wire::plan::{
    Arg, CopyStep, Dev, Oracle, PickRule, Plan, Role, Step, Via, GUEST_MODULE,
};
use p2pmem_wire::report::{
    frame_id, AddressMap, BindAttempt, Captured, Connected, CopyOutcome, ExecResult, GuestNvme,
    HashResult, HostRequest, Inventory, Output, PairRecord, Picked, PlanEnd, StepReport,
    StepResult, MAX_CAPTURED,
};
use sha2::{Digest, Sha256};

use crate::cmd_copy::{CopyArgs, Ended};
use crate::cmd_provider::{bind_report, release, BindEnd};

/// Arguments of `p2pmem agent plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The plan (JSON, `p2pmem_wire::plan::Plan`).
    pub file: PathBuf,
}

/// The largest plan file read.
const MAX_PLAN_BYTES: u64 = 16 << 20;
/// The logical block size the DMA-trace markers assume (QEMU nvme's default).
const MARKER_LBA_BYTES: u64 = 512;
/// Where spawned programs' output goes.
const SPAWN_DIR: &str = "/tmp/.agent-spawn";

/// Runs the plan; 0 when it ran (whatever its steps found), 2 when it could not be read.
pub fn run(a: &PlanArgs) -> anyhow::Result<i32> {
    let mut out = Frames::stdout();
    let klog = Syslog.read_all().map(|b| dmesg_lines(&b));
    out.text(frame_id::BOOT_LOG, &klog.unwrap_or_default().join("\n"))?;
    let plan = match read_plan(&a.file) {
        Ok(p) => p,
        Err(e) => {
            let end = PlanEnd {
                steps: 0,
                failed: 0,
                error: Some(format!("{e:#}")),
            };
            out.json(frame_id::END, &end)?;
            return Ok(2);
        }
    };
    let mut agent = Agent::new(Path::new("/"));
    let mut failed = 0;
    for (index, s) in plan.steps.iter().enumerate() {
        let started = Instant::now();
        agent.index = index;
        let (result, attachment) = agent.step(&s.name, &s.step);
        if matches!(result, StepResult::Failed { .. }) {
            failed += 1;
        }
        if let Some(data) = attachment {
            out.bytes(&frame_id::data(index), &data)?;
        }
        let report = StepReport {
            index,
            name: s.name.clone(),
            seconds: started.elapsed().as_secs_f64(),
            result,
        };
        out.json(&frame_id::step(index), &report)?;
    }
    let klog = Syslog.read_all().map(|b| dmesg_lines(&b));
    out.text(frame_id::DMESG, &klog.unwrap_or_default().join("\n"))?;
    out.json(
        frame_id::END,
        &PlanEnd {
            steps: plan.steps.len(),
            failed,
            error: None,
        },
    )?;
    Ok(0)
}

fn read_plan(path: &Path) -> anyhow::Result<Plan> {
    let text = read_bounded(path, MAX_PLAN_BYTES)?;
    let plan: Plan = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a lab plan", path.display()))?;
    if plan.version != p2pmem_wire::plan::PLAN_VERSION {
        bail!(
            "{}: plan version {} (this agent runs version {})",
            path.display(),
            plan.version,
            p2pmem_wire::plan::PLAN_VERSION
        );
    }
    Ok(plan)
}

/// Reads at most `max` bytes; a larger file is an error.
fn read_bounded(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if buf.len() as u64 > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(buf)
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&read_bounded(path, 1 << 20)?).into_owned())
}

/// Frames on stdout, each written whole and flushed.
struct Frames {
    out: std::io::Stdout,
}

impl Frames {
    fn stdout() -> Self {
        Self {
            out: std::io::stdout(),
        }
    }

    fn bytes(&mut self, id: &str, data: &[u8]) -> anyhow::Result<()> {
        let mut out = self.out.lock();
        out.write_all(encode_frame(id, 0, data).as_bytes())
            .and_then(|()| out.flush())
            .context("writing a frame to the console")
    }

    fn text(&mut self, id: &str, text: &str) -> anyhow::Result<()> {
        self.bytes(id, text.as_bytes())
    }

    fn json<T: serde::Serialize>(&mut self, id: &str, v: &T) -> anyhow::Result<()> {
        let text = serde_json::to_string(v).context("serialising a step report")?;
        self.text(id, &text)
    }
}

/// A program started by a spawn step.
struct Spawned {
    child: Child,
    argv: Vec<String>,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// The agent's state between steps: the system's root, the last pairs, binds and pick,
/// the programs running in the background.
struct Agent {
    root: PathBuf,
    pairs: Option<Vec<PairRecord>>,
    binds: Option<Vec<BindAttempt>>,
    picked: Option<Picked>,
    /// The controller the last connect step made.
    connected: Option<Connected>,
    spawned: HashMap<String, Spawned>,
    /// The index of the step running (names its host-request frame).
    index: usize,
}

type StepOutcome = (StepResult, Option<Vec<u8>>);

fn done(output: Output) -> StepOutcome {
    (
        StepResult::Done {
            output: Box::new(output),
        },
        None,
    )
}

impl Agent {
    fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            pairs: None,
            binds: None,
            picked: None,
            connected: None,
            spawned: HashMap::new(),
            index: 0,
        }
    }

    fn step(&mut self, name: &str, step: &Step) -> StepOutcome {
        match self.try_step(name, step) {
            Ok(r) => r,
            Err(e) => match e.downcast::<Skip>() {
                Ok(skip) => (StepResult::Skipped { why: skip.0 }, None),
                Err(e) => (
                    StepResult::Failed {
                        error: format!("{e:#}"),
                    },
                    None,
                ),
            },
        }
    }

    fn try_step(&mut self, name: &str, step: &Step) -> anyhow::Result<StepOutcome> {
        Ok(match step {
            Step::Inventory => done(Output::Inventory(self.inventory()?)),
            Step::Capture => return self.capture(),
            Step::BindAll { vendor, device } => {
                let binds = self.bind_all(*vendor, *device)?;
                self.binds = Some(binds.clone());
                done(Output::Binds(binds))
            }
            Step::Bind { bdf } => done(Output::Binds(vec![self.bind(*bdf)])),
            Step::Pairs {
                check,
                oracle,
                pause_after_failure,
            } => {
                let pairs = self.pairs(*check, *oracle, *pause_after_failure)?;
                self.pairs = Some(pairs.clone());
                done(Output::Pairs(pairs))
            }
            Step::Probe { provider, client } => {
                let path = self.dev(client)?;
                let sys = self.system()?;
                let bdf = client_bdf(&sys, &path);
                let rec = dma_probe(&self.root, *provider, bdf, Path::new(&path))?;
                done(Output::Probe(rec))
            }
            Step::Check { provider, clients } => {
                let sys = self.system()?;
                let names: Vec<String> = clients.iter().map(Bdf::to_string).collect();
                let (report, _) =
                    crate::cmd_check::check_report(&sys, &provider.to_string(), &names)?;
                done(Output::Check(report))
            }
            Step::Pick(rule) => {
                self.picked = None;
                let picked = self.pick(*rule)?;
                self.picked = Some(picked.clone());
                done(Output::Picked(picked))
            }
            Step::Copy(c) => done(Output::Copy(self.copy(c)?)),
            Step::Hash { dev, offset, len } => {
                let path = self.dev(dev)?;
                done(Output::Hash(hash_range(Path::new(&path), *offset, *len)?))
            }
            Step::AddressMap => done(Output::AddressMap(self.address_map()?)),
            Step::Mark { lba } => {
                mark(*lba)?;
                done(Output::Marked(*lba))
            }
            Step::Dmesg => {
                let raw = Syslog.read_all().context("cannot read the kernel log")?;
                done(Output::Dmesg(dmesg_lines(&raw)))
            }
            Step::Sleep { ms } => {
                std::thread::sleep(Duration::from_millis(*ms));
                done(Output::Nothing)
            }
            Step::WriteFile { path, text } => {
                std::fs::write(path, text).with_context(|| format!("cannot write {path}"))?;
                done(Output::Nothing)
            }
            Step::Spawn {
                argv,
                ready,
                wait_ms,
            } => done(Output::Spawned(self.spawn(
                name,
                &self.words(argv)?,
                ready.as_deref(),
                *wait_ms,
            )?)),
            Step::Join { spawn, wait_ms } => done(Output::Exec(self.join(spawn, *wait_ms)?)),
            Step::Unplug { bdf, wait_ms } => done(Output::Unplugged(self.unplug(*bdf, *wait_ms)?)),
            Step::Connect(c) => {
                self.connected = None;
                let made = super::fabrics::connect(&self.root, c)?;
                self.connected = Some(made.clone());
                done(Output::Connected(made))
            }
            Step::WaitForBlock {
                dev,
                offset,
                text,
                wait_ms,
            } => {
                let path = self.dev(dev)?;
                done(Output::Waited(super::fabrics::wait_for_block(
                    Path::new(&path),
                    *offset,
                    text,
                    *wait_ms,
                )?))
            }
            Step::Exec { argv } => done(Output::Exec(exec(&self.words(argv)?)?)),
        })
    }

    /// The words of an argv, devices named by their guest paths.
    fn words(&self, argv: &[Arg]) -> anyhow::Result<Vec<String>> {
        argv.iter()
            .map(|a| match a {
                Arg::Text(t) => Ok(t.clone()),
                Arg::Dev { dev, prefix } => Ok(format!("{prefix}{}", self.dev(dev)?)),
            })
            .collect()
    }

    fn system(&self) -> anyhow::Result<System> {
        read_system(&self.root)
            .with_context(|| format!("cannot read the system below {}", self.root.display()))
    }

    fn inventory(&self) -> anyhow::Result<Inventory> {
        let sys = self.system()?;
        let proc = self.root.join("proc");
        Ok(Inventory {
            cpuinfo: read_text(&proc.join("cpuinfo"))?,
            cmdline: read_text(&proc.join("cmdline"))?.trim().to_string(),
            osrelease: read_text(&proc.join("sys/kernel/osrelease"))?
                .trim()
                .to_string(),
            nvme: self.nvme(&sys),
            providers: sys.topology.providers().map(|f| f.bdf).collect(),
        })
    }

    /// Every nvme-pci controller with its first namespace, in PCI order.
    fn nvme(&self, sys: &System) -> Vec<GuestNvme> {
        let mut out: Vec<GuestNvme> = sys
            .nvme
            .iter()
            .filter_map(|c| {
                let bdf = c.bdf?;
                let mut disks: Vec<&str> = sys
                    .block
                    .iter()
                    .filter(|b| b.bdfs == [bdf] && !b.partition && !b.multipath_head)
                    .map(|b| b.name.as_str())
                    .filter(|n| n.starts_with(&format!("{}n", c.name)))
                    .collect();
                disks.sort();
                let serial = read_text(
                    &self
                        .root
                        .join("sys/class/nvme")
                        .join(&c.name)
                        .join("serial"),
                )
                .map(|s| s.split_whitespace().collect::<String>())
                .unwrap_or_default();
                Some(GuestNvme {
                    serial,
                    ctrl: c.name.clone(),
                    bdf,
                    blkdev: format!("/dev/{}", disks.first()?),
                })
            })
            .collect();
        out.sort_by_key(|n| n.bdf);
        out
    }

    /// Asks the host for `device_del` of the controller at `bdf` and waits until the
    /// function has left sysfs; the seconds that took.
    fn unplug(&self, bdf: Bdf, wait_ms: u64) -> anyhow::Result<f64> {
        let sys = self.system()?;
        let serial = self
            .nvme(&sys)
            .into_iter()
            .find(|n| n.bdf == bdf)
            .map(|n| n.serial)
            .filter(|s| !s.is_empty())
            .with_context(|| format!("{bdf} is not an NVMe controller with a serial number"))?;
        let dir = self.root.join("sys/bus/pci/devices").join(bdf.to_string());
        let request = HostRequest::UnplugNvme { serial };
        Frames::stdout().json(&frame_id::host(self.index), &request)?;
        let started = Instant::now();
        while dir.exists() {
            if started.elapsed() > Duration::from_millis(wait_ms) {
                bail!(
                    "{bdf} was still present {:.1} s after the unplug request",
                    started.elapsed().as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(started.elapsed().as_secs_f64())
    }

    fn capture(&self) -> anyhow::Result<StepOutcome> {
        let dir = PathBuf::from("/tmp/.agent-capture");
        let _ = std::fs::remove_dir_all(&dir);
        let report = p2pmem_linux::capture::capture(&self.root, &dir)
            .with_context(|| format!("cannot capture into {}", dir.display()))?;
        let mut builder = tar::Builder::new(Vec::new());
        builder.follow_symlinks(false);
        builder
            .append_dir_all(".", &dir)
            .and_then(|()| builder.finish())
            .with_context(|| format!("cannot archive {}", dir.display()))?;
        let data = builder
            .into_inner()
            .with_context(|| format!("cannot archive {}", dir.display()))?;
        let mut warnings = report.problems.clone();
        warnings.extend(
            report
                .truncated_config
                .iter()
                .map(|b| format!("{b}: config space cut to 64 bytes")),
        );
        let out = Output::Capture(Captured {
            warnings,
            archive_bytes: data.len() as u64,
        });
        Ok((
            StepResult::Done {
                output: Box::new(out),
            },
            Some(data),
        ))
    }

    fn bind(&self, bdf: Bdf) -> BindAttempt {
        let opts = BindOptions {
            release: release(&self.root),
            ..BindOptions::default()
        };
        match bind_report(&self.root, bdf, &opts) {
            Ok(BindEnd::Bound(b)) => BindAttempt {
                bdf,
                exit: 0,
                report: Some(b.0),
                messages: Vec::new(),
            },
            Ok(BindEnd::Refused(why)) => BindAttempt {
                bdf,
                exit: 1,
                report: None,
                messages: vec![format!("p2pmem: {why}")],
            },
            Err(e) => BindAttempt {
                bdf,
                exit: 2,
                report: None,
                messages: vec![format!("p2pmem: error: {e:#}")],
            },
        }
    }

    fn bind_all(&self, vendor: u16, device: u16) -> anyhow::Result<Vec<BindAttempt>> {
        if !self
            .root
            .join(GUEST_MODULE.trim_start_matches('/'))
            .is_file()
        {
            return Ok(Vec::new());
        }
        let sys = self.system()?;
        let mut bdfs: Vec<Bdf> = sys
            .topology
            .functions()
            .filter(|f| f.vendor == vendor && f.device == device)
            .map(|f| f.bdf)
            .collect();
        bdfs.sort();
        Ok(bdfs.into_iter().map(|b| self.bind(b)).collect())
    }

    fn pairs(
        &self,
        check: bool,
        oracle: Oracle,
        pause_after_failure: bool,
    ) -> anyhow::Result<Vec<PairRecord>> {
        let sys = self.system()?;
        let clients = self.nvme(&sys);
        let mut providers: Vec<Bdf> = sys.topology.providers().map(|f| f.bdf).collect();
        providers.sort();
        let mut out = Vec::new();
        // The block layer rate-limits its I/O error lines, two for a failed pair (its read
        // and its write): with `pause_after_failure` a pair that could overflow the
        // current window waits for its end, so a capture records every line.
        let clock = Instant::now();
        let mut window = ratelimit::Window::default();
        let mut per_pair: u32 = 2;
        for &provider in &providers {
            for c in &clients {
                if pause_after_failure {
                    let wait = window.wait_before(clock.elapsed(), per_pair);
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                }
                let check = check.then(|| {
                    crate::cmd_check::check_report(
                        &sys,
                        &provider.to_string(),
                        &[c.bdf.to_string()],
                    )
                    .map(|(r, _)| r)
                    .map_err(|e| format!("{e:#}"))
                });
                let blkdev = Path::new(&c.blkdev);
                let userspace = self.has_allocate(provider);
                let (dma, nvmet) = match oracle {
                    Oracle::Auto => (userspace, true),
                    Oracle::Dma => (true, false),
                    Oracle::Nvmet => (false, true),
                    Oracle::Both => (true, true),
                };
                // The DMA probe first: the NVMe target's `pci_p2pdma_distance()` always
                // decides again and prints, a DMA mapping after it would find the
                // kernel's cached decision and print nothing.
                let probe = dma.then(|| {
                    dma_probe(&self.root, provider, Some(c.bdf), blkdev)
                        .map_err(|e| format!("{:#}", anyhow::Error::new(e)))
                });
                let nvmet = nvmet.then(|| {
                    nvmet_probe(&mut Syslog, &self.root, provider, Some(c.bdf), blkdev)
                        .map_err(|e| format!("{:#}", anyhow::Error::new(e)))
                });
                let rec = PairRecord {
                    provider,
                    client: c.bdf,
                    blkdev: c.blkdev.clone(),
                    check,
                    probe,
                    nvmet,
                };
                if pause_after_failure {
                    let printed = match &rec.probe {
                        Some(Ok(p)) => p
                            .kernel_log
                            .iter()
                            .filter(|l| ratelimit::is_request_error(l))
                            .count(),
                        // The probe failed as a whole: assume the most a pair printed.
                        Some(Err(_)) => per_pair as usize,
                        None => 0,
                    };
                    let printed = u32::try_from(printed).unwrap_or(u32::MAX);
                    per_pair = per_pair.max(printed);
                    window.printed(clock.elapsed(), printed);
                }
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Does `provider` offer userspace p2pmem (`p2pmem/allocate`, 6.2+)?
    fn has_allocate(&self, provider: Bdf) -> bool {
        p2pmem_linux::p2pbuf::pci_device_dir(&self.root, provider)
            .join("p2pmem/allocate")
            .exists()
    }

    fn pick(&self, rule: PickRule) -> anyhow::Result<Picked> {
        let pairs = self
            .pairs
            .as_ref()
            .ok_or_else(|| Skip::err("no pairs step ran before the pick"))?;
        let sys = self.system()?;
        let nvme = self.nvme(&sys);
        let found = match rule {
            PickRule::NvmeProviderToOtherNvme => pairs.iter().find_map(|p| {
                let read_ok = p
                    .dma()
                    .is_some_and(|r| r.read.as_deref() == Some(p2pmem_wire::probe::OK));
                if p.provider == p.client || !read_ok {
                    return None;
                }
                let src = nvme.iter().find(|n| n.bdf == p.provider)?;
                Some(Picked {
                    via: p.provider,
                    src: src.blkdev.clone(),
                    dst: p.blkdev.clone(),
                })
            }),
            PickRule::BoundProviderTwoClients => {
                let binds = self.binds.as_deref().unwrap_or_default();
                binds.iter().filter(|b| b.exit == 0).find_map(|b| {
                    let mut ok = pairs
                        .iter()
                        .filter(|p| p.provider == b.bdf && p.kernel_ok())
                        .map(|p| p.blkdev.clone());
                    Some(Picked {
                        via: b.bdf,
                        src: ok.next()?,
                        dst: ok.next()?,
                    })
                })
            }
        };
        found.ok_or_else(|| {
            Skip::err(match rule {
                PickRule::NvmeProviderToOtherNvme => {
                    "no working pair between two different NVMe with a CMB"
                }
                PickRule::BoundProviderTwoClients => "no p2pmem_pci provider is usable by two NVMe",
            })
        })
    }

    fn picked(&self) -> anyhow::Result<&Picked> {
        self.picked
            .as_ref()
            .ok_or_else(|| Skip::err("the pick before this step found no pair"))
    }

    fn dev(&self, dev: &Dev) -> anyhow::Result<String> {
        Ok(match dev {
            Dev::Path(p) => p.clone(),
            Dev::Nvme(bdf) => {
                let sys = self.system()?;
                self.nvme(&sys)
                    .into_iter()
                    .find(|n| n.bdf == *bdf)
                    .map(|n| n.blkdev)
                    .with_context(|| format!("{bdf} has no NVMe namespace"))?
            }
            Dev::Picked(Role::Src) => self.picked()?.src.clone(),
            Dev::Picked(Role::Dst) => self.picked()?.dst.clone(),
            Dev::Connected(nsid) => {
                let c = self.connected.as_ref().ok_or_else(|| {
                    Skip::err("no connect step before this one made a controller")
                })?;
                // Namespaces can appear after the connect: look again.
                super::fabrics::namespaces(&self.root, c.instance)
                    .into_iter()
                    .find(|(n, _)| n == nsid)
                    .map(|(_, dev)| dev)
                    .with_context(|| format!("{} has no namespace {nsid}", c.controller))?
            }
        })
    }

    fn copy(&self, c: &CopyStep) -> anyhow::Result<CopyOutcome> {
        let via = match c.via {
            Via::Auto => "auto".to_string(),
            Via::Host => "host".to_string(),
            Via::Provider(b) => b.to_string(),
            Via::Picked => self.picked()?.via.to_string(),
        };
        let mut argv = vec![
            "copy".to_string(),
            self.dev(&c.src)?,
            self.dev(&c.dst)?,
            format!("--via={via}"),
            format!("--offset={}", c.offset),
        ];
        let opt = |name: &str, v: Option<u64>| v.map(|v| format!("--{name}={v}"));
        argv.extend(opt("dst-offset", c.dst_offset));
        argv.extend(opt("length", c.length));
        argv.extend(opt("chunk", c.chunk));
        argv.extend(opt("depth", c.depth.map(|d| d as u64)));
        for (on, flag) in [
            (c.verify, "--verify"),
            (c.require_p2p, "--require-p2p"),
            (c.force, "--force"),
        ] {
            if on {
                argv.push(flag.to_string());
            }
        }
        let args = CopyCli::try_parse_from(&argv)
            .with_context(|| format!("bad copy step {argv:?}"))?
            .args;
        let mut messages = Vec::new();
        let cancel = AtomicBool::new(false);
        let ended = crate::cmd_copy::execute(
            &self.root,
            &args,
            &cancel,
            &mut |m| messages.push(m),
            &mut |_, _| {},
        );
        Ok(match ended {
            Ok(Ended::Finished(f)) => CopyOutcome {
                exit: f.exit(),
                report: Some(f.document()),
                messages,
            },
            Ok(Ended::NoP2pPath) => CopyOutcome {
                exit: 1,
                report: None,
                messages,
            },
            Err(e) => {
                messages.push(format!("p2pmem: error: {e:#}"));
                CopyOutcome {
                    exit: 2,
                    report: None,
                    messages,
                }
            }
        })
    }

    fn address_map(&self) -> anyhow::Result<AddressMap> {
        let iomem = read_text(&self.root.join("proc/iomem"))?;
        let sys = self.system()?;
        let mut bdfs: Vec<Bdf> = sys.topology.functions().map(|f| f.bdf).collect();
        bdfs.sort();
        let devices = self.root.join("sys/bus/pci/devices");
        let resources = bdfs
            .into_iter()
            .filter_map(|b| {
                let text = read_text(&devices.join(b.to_string()).join("resource")).ok()?;
                Some((b, text))
            })
            .collect();
        Ok(AddressMap { iomem, resources })
    }

    fn spawn(
        &mut self,
        name: &str,
        argv: &[String],
        ready: Option<&str>,
        wait_ms: u64,
    ) -> anyhow::Result<u32> {
        let (program, args) = argv.split_first().context("spawn of an empty argv")?;
        std::fs::create_dir_all(SPAWN_DIR).with_context(|| format!("cannot create {SPAWN_DIR}"))?;
        let n = self.spawned.len();
        let stdout = PathBuf::from(format!("{SPAWN_DIR}/{n}.out"));
        let stderr = PathBuf::from(format!("{SPAWN_DIR}/{n}.err"));
        let file = |p: &Path| {
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))
        };
        let child = Command::new(program)
            .args(args)
            .current_dir("/tmp")
            .stdin(Stdio::null())
            .stdout(file(&stdout)?)
            .stderr(file(&stderr)?)
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let pid = child.id();
        self.spawned.insert(
            name.to_string(),
            Spawned {
                child,
                argv: argv.to_vec(),
                stdout: stdout.clone(),
                stderr,
            },
        );
        if let Some(ready) = ready {
            let start = Instant::now();
            while !read_text(&stdout).unwrap_or_default().contains(ready) {
                if start.elapsed() > Duration::from_millis(wait_ms) {
                    bail!("{program} did not print {ready:?} within {wait_ms} ms");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(pid)
    }

    fn join(&mut self, spawn: &str, wait_ms: u64) -> anyhow::Result<ExecResult> {
        let mut s = self
            .spawned
            .remove(spawn)
            .with_context(|| format!("no spawn step named {spawn:?} is running"))?;
        let start = Instant::now();
        let status = loop {
            if let Some(status) = s
                .child
                .try_wait()
                .context("cannot wait for a spawned program")?
            {
                break status;
            }
            if start.elapsed() > Duration::from_millis(wait_ms) {
                let _ = s.child.kill();
                break s.child.wait().context("cannot reap a killed program")?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let read = |p: &Path| {
            read_bounded(p, MAX_CAPTURED as u64).map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        Ok(exec_result(
            &s.argv,
            status,
            read(&s.stdout)?,
            read(&s.stderr)?,
        ))
    }
}

/// `copy`'s arguments parsed as the command parses them, so a copy step has its
/// defaults.
#[derive(Debug, Parser)]
struct CopyCli {
    #[command(flatten)]
    args: CopyArgs,
}

/// A step that cannot run because an earlier one found nothing.
#[derive(Debug)]
struct Skip(String);

impl Skip {
    fn err(why: &str) -> anyhow::Error {
        anyhow::Error::new(Self(why.to_string()))
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

/// The client's PCI function from its block device, when the system knows it.
fn client_bdf(sys: &System, path: &str) -> Option<Bdf> {
    p2pmem_linux::resolve::resolve_client(sys, path)
        .ok()
        .map(|c| c.bdf)
}

/// The sha256 of `len` bytes at `offset`, read with O_DIRECT through host memory.
fn hash_range(path: &Path, offset: u64, len: u64) -> anyhow::Result<HashResult> {
    const CHUNK: usize = 1 << 20;
    let file = DirectFile::open(path, Access::Read)?;
    let mut buf = HostBuffer::new(CHUNK)?;
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from((len - done).min(CHUNK as u64)).unwrap_or(CHUNK);
        let got = file.pread_into(&mut buf, 0, want, offset + done)?;
        if got == 0 {
            bail!(
                "{}: end of file after {done} of {len} bytes at offset {offset}",
                path.display()
            );
        }
        hasher.update(&buf.as_slice()[..got]);
        done += got as u64;
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(HashResult { sha256, bytes: len })
}

/// The DMA-trace marker: [`MARKER_BLOCKS`] blocks at `lba` of the first NVMe namespace
/// (by name), read with O_DIRECT.
fn mark(lba: u64) -> anyhow::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .context("cannot list /sys/block")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("nvme"))
        .collect();
    names.sort();
    let first = names.first().context("no NVMe namespace for the marker")?;
    let path = PathBuf::from(format!("/dev/{first}"));
    let len = usize::try_from(MARKER_BLOCKS * MARKER_LBA_BYTES).unwrap_or(4096);
    let file = DirectFile::open(&path, Access::Read)?;
    let mut buf = HostBuffer::new(len)?;
    file.pread_into(&mut buf, 0, len, lba * MARKER_LBA_BYTES)?;
    Ok(())
}

/// Reads at most [`MAX_CAPTURED`] bytes of `r`, then drains the rest.
fn read_capped(mut r: impl Read) -> String {
    let mut buf = Vec::new();
    let _ = (&mut r).take(MAX_CAPTURED as u64).read_to_end(&mut buf);
    let _ = std::io::copy(&mut r, &mut std::io::sink());
    String::from_utf8_lossy(&buf).into_owned()
}

fn exec(argv: &[String]) -> anyhow::Result<ExecResult> {
    let (program, args) = argv.split_first().context("exec of an empty argv")?;
    let mut child = Command::new(program)
        .args(args)
        .current_dir("/tmp")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let err = child.stderr.take();
    let err = std::thread::spawn(move || err.map(read_capped).unwrap_or_default());
    let stdout = child.stdout.take().map(read_capped).unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for {program}"))?;
    Ok(exec_result(argv, status, stdout, stderr))
}

fn exec_result(
    argv: &[String],
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
) -> ExecResult {
    use std::os::unix::process::ExitStatusExt;
    ExecResult {
        argv: argv.to_vec(),
        exit: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
    }
}
