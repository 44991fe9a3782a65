//! `lab capture` output in the ground-truth format of `shared/truth/README.md`:
//! `truth.json` (scenario, QEMU argv with `$SCRATCH` placeholders, CPU identity, command
//! line, NVMe list, filtered boot log, one record per (provider, client) pair),
//! `boot_dmesg.txt` and `qemu.sh`.

use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use crate::pairs::{cpu_identity, PairsResult};
use crate::qemu_args::{qemu_args, qemu_script, MachineFiles};
use crate::topology::Topology;

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
    pub method: Value,
    /// The NVMe devices, in topology order.
    pub nvme: Vec<Value>,
    /// Filtered boot-log lines, timestamps stripped.
    pub boot_log: Vec<String>,
    /// One record per (provider, client) pair.
    pub pairs: Vec<Value>,
}

/// The `$SCRATCH` form of the QEMU argv, as in `shared/truth/*/qemu.sh`.
pub fn scratch_args(topo: &Topology, cpu: &str) -> Vec<String> {
    let images = format!("$SCRATCH/img/{}", topo.name);
    qemu_args(
        topo,
        &MachineFiles {
            kernel: Path::new("$SCRATCH/bzImage"),
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

/// Strips `<level>` and `[timestamp]` prefixes from a kernel log line.
pub fn strip_klog_prefix(line: &str) -> &str {
    let mut l = line;
    if l.starts_with('<') {
        if let Some(end) = l.find('>') {
            l = &l[end + 1..];
        }
    }
    if l.starts_with('[') {
        if let Some(end) = l.find(']') {
            l = l[end + 1..].strip_prefix(' ').unwrap_or(&l[end + 1..]);
        }
    }
    l
}

/// The boot-log lines worth keeping.
pub fn filter_boot_log(boot_dmesg: &str) -> Vec<String> {
    boot_dmesg
        .lines()
        .map(strip_klog_prefix)
        .filter(|l| BOOT_LOG_PATTERNS.iter().any(|p| l.contains(p)))
        .map(str::to_string)
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
    /// QEMU's version line.
    pub qemu_version: &'a str,
}

/// Assembles `truth.json`.
pub fn build_truth(ctx: &TruthContext<'_>, res: &PairsResult) -> Truth {
    let (vendor, family) = cpu_identity(&res.cpuinfo);
    let nvme = ctx
        .topo
        .nvme
        .iter()
        .map(|n| {
            let g = res.nvme.iter().find(|g| g.serial == n.serial);
            json!({
                "serial": n.serial,
                "cmb_size_mb": n.cmb_mb,
                "desc": n.desc,
                "bdf": g.map(|g| g.bdf.clone()),
                "ctrl": g.map(|g| g.ctrl.clone()),
                "blkdev": g.map(|g| g.blkdev.clone()),
            })
        })
        .collect();
    let pairs = res
        .pairs
        .iter()
        .map(|p| {
            let probe = p.probe.clone().unwrap_or(Value::Null);
            let field = |k: &str| probe.get(k).cloned().unwrap_or(Value::Null);
            let mut rec = json!({
                "provider": p.provider,
                "client": p.client,
                "read": field("read"),
                "write": field("write"),
                "kernel_log": field("kernel_log"),
                "client_blkdev": p.blkdev,
                "mmap": field("mmap"),
                "read_data": field("read_data"),
                "write_data": field("write_data"),
                "kernel_log_phase": field("kernel_log_phase"),
            });
            if p.probe.is_none() {
                rec["probe_error"] = json!({
                    "exit": p.probe_rc,
                    "stderr": p.probe_err.trim(),
                });
            }
            rec
        })
        .collect();
    Truth {
        scenario: ctx.topo.name.clone(),
        summary: ctx.topo.description.clone(),
        qemu_args: scratch_args(ctx.topo, ctx.cpu),
        cpu: ctx.cpu.to_string(),
        cpu_vendor_id: vendor,
        cpu_family: family,
        cmdline: res.cmdline.clone(),
        kernel: format!(
            "Linux {} (Debian linux-source-6.12), tinyconfig + p2pmem-lab fragment (kernel cache key {}), no IOMMU, !SMP",
            res.osrelease, ctx.kernel_key
        ),
        qemu: ctx.qemu_version.to_string(),
        method: json!({
            "mmap_bytes": 1048576,
            "mmap_offset": 0,
            "io_bytes": 65536,
            "read": "O_DIRECT pread(client /dev/nvmeXn1, p2p buffer, 64 KiB, offset 0)",
            "write": "O_DIRECT pwrite(client /dev/nvmeXn1, p2p buffer, 64 KiB, offset 1 MiB)",
            "kernel_log": "klogctl CLEAR before the mmap, READ_ALL after; <level> and [timestamp] stripped",
            "result": "ok = full 64 KiB transferred; otherwise errno name",
            "tool": "p2pmem agent dma-probe, every pair once per boot, 2 s pause after a failing pair",
        }),
        nvme,
        boot_log: filter_boot_log(ctx.boot_dmesg),
        pairs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn klog_prefixes_are_stripped() {
        assert_eq!(
            strip_klog_prefix("[    0.000000] Linux version 6"),
            "Linux version 6"
        );
        assert_eq!(strip_klog_prefix("<4>[ 1.5] nvme x"), "nvme x");
        assert_eq!(strip_klog_prefix("plain"), "plain");
        assert_eq!(strip_klog_prefix("[unterminated"), "[unterminated");
    }

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
        let truth: Value = serde_json::from_str(&truth).unwrap();
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
