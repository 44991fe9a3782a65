//! `lab capture` output in the ground-truth format of `shared/truth/README.md`:
//! `truth.json` (scenario, QEMU argv with `$SCRATCH` placeholders, CPU identity, command
//! line, NVMe list, filtered boot log, one record per (provider, client) pair),
//! `boot_dmesg.txt` and `qemu.sh`.

use std::path::Path;

use p2pmem_model::cpu::CpuInfo;
use p2pmem_model::klog::klog_texts;
use p2pmem_model::Bdf;
use p2pmem_wire::probe::{DataCheck, NvmetVerdict, PhaseLog};
use p2pmem_wire::report::PairRecord;
use serde::Serialize;

use crate::machine::qemu_args::{qemu_args, qemu_script, MachineFiles};
use crate::machine::topology::Topology;
use crate::plans::pairs::PairsResult;

/// Boot-log lines kept in `truth.json` (substrings, as in the recorded truth).
pub const BOOT_LOG_PATTERNS: &[&str] = &[
    "Linux version ",
    "Command line:",
    "CPU: ",
    "PCI host bridge to bus",
    "root bus resource [bus",
    "nvme nvme",
    "added peer-to-peer DMA memory",
    "Configured ACS",
    "ACS",
    "P2PDMA",
    "peer-to-peer",
];

/// The record of one capture.
#[derive(Debug, Clone, Serialize)]
pub struct Truth {
    /// Topology name.
    pub scenario: String,
    /// Topology description.
    pub summary: String,
    /// QEMU argv with `$SCRATCH` placeholders.
    pub qemu_args: Vec<String>,
    /// The `-cpu` value.
    pub cpu: String,
    /// From the guest's `/proc/cpuinfo`.
    pub cpu_vendor_id: Option<String>,
    /// From the guest's `/proc/cpuinfo`.
    pub cpu_family: Option<u32>,
    /// The guest's `/proc/cmdline`.
    pub cmdline: String,
    /// Kernel identity.
    pub kernel: String,
    /// `qemu-system-x86_64 --version`, first line.
    pub qemu: String,
    /// How each pair was tested.
    pub method: Method,
    /// The NVMe devices, in topology order.
    pub nvme: Vec<TruthNvme>,
    /// Filtered boot-log lines, timestamps stripped.
    pub boot_log: Vec<String>,
    /// One record per (provider, client) pair.
    pub pairs: Vec<TruthPair>,
}

/// How each pair was tested (the `method` of `truth.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Method {
    mmap_bytes: u64,
    mmap_offset: u64,
    io_bytes: u64,
    read: &'static str,
    write: &'static str,
    kernel_log: &'static str,
    result: &'static str,
    tool: &'static str,
}

/// The method of the DMA probe, in words.
pub const METHOD: Method = Method {
    mmap_bytes: 1 << 20,
    mmap_offset: 0,
    io_bytes: 64 << 10,
    read: "O_DIRECT pread(client /dev/nvmeXn1, p2p buffer, 64 KiB, offset 0)",
    write: "O_DIRECT pwrite(client /dev/nvmeXn1, p2p buffer, 64 KiB, offset 1 MiB)",
    kernel_log: "klogctl CLEAR before the mmap, READ_ALL after; <level> and [timestamp] stripped",
    result: "ok = full 64 KiB transferred; otherwise errno name",
    tool:
        "p2pmem agent (plan step `pairs`), every pair once per boot, 2 s pause after a failing pair",
};

/// One NVMe device of the topology and where the guest found it.
#[derive(Debug, Clone, Serialize)]
pub struct TruthNvme {
    /// Serial number (the topology's name for it).
    pub serial: String,
    /// CMB size, when it has one.
    pub cmb_size_mb: Option<u32>,
    /// The topology's description.
    pub desc: String,
    /// Its PCI function in the guest.
    pub bdf: Option<Bdf>,
    /// Its controller.
    pub ctrl: Option<String>,
    /// Its first namespace.
    pub blkdev: Option<String>,
}

/// One pair's record, in the fields and order of the shared ground truth.
#[derive(Debug, Clone, Serialize)]
pub struct TruthPair {
    /// The provider.
    pub provider: Bdf,
    /// The client.
    pub client: Bdf,
    /// `ok` or the errno name (null when the probe did not run).
    pub read: Option<String>,
    /// Likewise for the write.
    pub write: Option<String>,
    /// The kernel's lines during the probe.
    pub kernel_log: Vec<String>,
    /// The client's block device.
    pub client_blkdev: String,
    /// `ok` or the mmap errno.
    pub mmap: Option<String>,
    /// Whether the bytes read through p2pmem match a host read.
    pub read_data: Option<DataCheck>,
    /// Whether the bytes written through p2pmem read back.
    pub write_data: Option<DataCheck>,
    /// The kernel's lines per phase.
    pub kernel_log_phase: Option<PhaseLog>,
    /// Why there is no probe record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_error: Option<String>,
    /// The NVMe target's verdict for the pair, when asked (the only oracle before 6.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvmet: Option<NvmetVerdict>,
}

/// The `$SCRATCH` form of the QEMU argv, as in `shared/truth/*/qemu.sh`.
pub fn scratch_args(topo: &Topology, cpu: &str) -> Vec<String> {
    let images = format!("$SCRATCH/img/{}", topo.name);
    qemu_args(
        topo,
        &MachineFiles {
            kernel: Path::new("$SCRATCH/bzImage"),
            // The name the shared/truth captures were recorded with.
            initrd: Path::new("$SCRATCH/build/initramfs.cpio.gz"),
            images: Path::new(&images),
            serial: "stdio",
        },
        Some(cpu),
    )
}

/// The `qemu.sh` of a capture.
pub fn scratch_script(topo: &Topology, cpu: &str) -> String {
    qemu_script(
        &scratch_args(topo, cpu),
        &format!(
            "QEMU command of scenario {} (recorded by p2pmem lab capture).\n\
             Images are sparse raw files with a per-device pattern in their first 2 MiB;\n\
             kernel and initramfs come from p2pmem lab (see crates/p2pmem-lab).",
            topo.name
        ),
    )
}

/// The boot-log lines worth keeping.
pub fn filter_boot_log(boot_dmesg: &str) -> Vec<String> {
    klog_texts(boot_dmesg.as_bytes())
        .into_iter()
        .filter(|l| BOOT_LOG_PATTERNS.iter().any(|p| l.contains(p)))
        .collect()
}

/// Inputs of [`build_truth`] that are not in the guest's results.
#[derive(Debug, Clone)]
pub struct TruthContext<'a> {
    /// The topology booted.
    pub topo: &'a Topology,
    /// The `-cpu` value used.
    pub cpu: &'a str,
    /// The guest's boot log.
    pub boot_dmesg: &'a str,
    /// The kernel cache key.
    pub kernel_key: &'a str,
    /// Where the kernel came from, in words (`Debian linux-source-6.12 6.12.118-1~deb12u1`).
    pub kernel_source: &'a str,
    /// QEMU's version line.
    pub qemu_version: &'a str,
}

fn nvmet(p: &PairRecord) -> Option<NvmetVerdict> {
    p.nvmet.as_ref().and_then(|n| n.as_ref().ok()).cloned()
}

/// Assembles `truth.json`.
pub fn build_truth(ctx: &TruthContext<'_>, res: &PairsResult) -> Truth {
    let cpu = CpuInfo::parse(res.inventory.cpuinfo.as_bytes());
    let nvme = ctx
        .topo
        .nvme
        .iter()
        .map(|n| {
            let g = res.inventory.nvme.iter().find(|g| g.serial == n.serial);
            TruthNvme {
                serial: n.serial.clone(),
                cmb_size_mb: n.cmb_mb,
                desc: n.desc.clone(),
                bdf: g.map(|g| g.bdf),
                ctrl: g.map(|g| g.ctrl.clone()),
                blkdev: g.map(|g| g.blkdev.clone()),
            }
        })
        .collect();
    let pairs = res
        .pairs
        .iter()
        .map(|p| match &p.probe {
            Some(Ok(r)) => TruthPair {
                provider: p.provider,
                client: p.client,
                read: r.read.clone(),
                write: r.write.clone(),
                kernel_log: r.kernel_log.clone(),
                client_blkdev: p.blkdev.clone(),
                mmap: Some(r.mmap.clone()),
                read_data: r.read_data,
                write_data: r.write_data,
                kernel_log_phase: Some(r.kernel_log_phase.clone()),
                probe_error: None,
                nvmet: nvmet(p),
            },
            other => TruthPair {
                provider: p.provider,
                client: p.client,
                read: None,
                write: None,
                kernel_log: Vec::new(),
                client_blkdev: p.blkdev.clone(),
                mmap: None,
                read_data: None,
                write_data: None,
                kernel_log_phase: None,
                probe_error: match other {
                    Some(Err(e)) => Some(e.clone()),
                    _ => None,
                },
                nvmet: nvmet(p),
            },
        })
        .collect();
    Truth {
        scenario: ctx.topo.name.clone(),
        summary: ctx.topo.description.clone(),
        qemu_args: scratch_args(ctx.topo, ctx.cpu),
        cpu: ctx.cpu.to_string(),
        cpu_vendor_id: cpu.vendor_id,
        cpu_family: cpu.family,
        cmdline: res.inventory.cmdline.clone(),
        kernel: format!(
            "Linux {} ({}), tinyconfig + p2pmem-lab fragment (kernel cache key {}), {}, !SMP",
            res.inventory.osrelease,
            ctx.kernel_source,
            ctx.kernel_key,
            if ctx.topo.iommu.is_some() {
                "Intel IOMMU on"
            } else {
                "no IOMMU"
            }
        ),
        qemu: ctx.qemu_version.to_string(),
        method: METHOD,
        nvme,
        boot_log: filter_boot_log(ctx.boot_dmesg),
        pairs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_log_filter_matches_the_recorded_truth() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/truth/s01_switch_cmbmix_fam15"
        );
        let (Ok(dmesg), Ok(truth)) = (
            std::fs::read_to_string(format!("{dir}/boot_dmesg.txt")),
            std::fs::read_to_string(format!("{dir}/truth.json")),
        ) else {
            panic!("fixtures/truth/s01_switch_cmbmix_fam15 is missing (scripts/import-truth)");
        };
        let truth: serde_json::Value = serde_json::from_str(&truth).unwrap();
        let ours = filter_boot_log(&dmesg);
        for line in truth["boot_log"].as_array().unwrap() {
            assert!(
                ours.contains(&line.as_str().unwrap().to_string()),
                "missing {line}"
            );
        }
    }

    #[test]
    fn scratch_args_use_placeholders() {
        let t = Topology::embedded("switch").unwrap();
        let a = scratch_args(&t, "max,family=23");
        assert!(a.contains(&"$SCRATCH/bzImage".to_string()));
        assert!(a.contains(
            &"file=$SCRATCH/img/switch/swA.img,if=none,id=drv_swA,format=raw".to_string()
        ));
        assert!(a.contains(&"max,family=23".to_string()));
    }
}
