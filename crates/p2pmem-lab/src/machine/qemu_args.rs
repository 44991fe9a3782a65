//! Translates a [`Topology`] into the `qemu-system-x86_64` command line, in the exact form
//! the ground-truth captures were recorded with (`shared/truth/*/qemu.sh`): q35, TCG,
//! one CPU, no default devices, serial console, and the PCIe tree emitted depth-first
//! with chassis numbers in emission order.

use std::collections::HashSet;
use std::path::Path;

use p2pmem_model::dma_accounting::trace_line::event;

use crate::machine::nic::NetLink;
use crate::machine::q35::ROOT_BUS;
use crate::machine::topology::{Nvme, Topology};

/// The QEMU binary the lab runs.
pub const QEMU: &str = "qemu-system-x86_64";

/// Paths and knobs that are not part of the topology.
#[derive(Debug, Clone)]
pub struct MachineFiles<'a> {
    /// The kernel `bzImage`.
    pub kernel: &'a Path,
    /// The initramfs (a cpio archive).
    pub initrd: &'a Path,
    /// The directory holding `<serial>.img` disk images.
    pub images: &'a Path,
    /// The `-serial` backend, e.g. `stdio`.
    pub serial: &'a str,
}

/// The full argv, starting with [`QEMU`]. `cpu` overrides the topology's CPU model. A
/// topology's network card, if any, has no peer.
pub fn qemu_args(topo: &Topology, files: &MachineFiles<'_>, cpu: Option<&str>) -> Vec<String> {
    qemu_args_linked(topo, files, cpu, None)
}

/// [`qemu_args`] with the topology's network card wired to `link` (one end of a wire to
/// another guest). The card comes after every PCIe device, at its own slot on `pcie.0`,
/// so no other BDF moves.
pub fn qemu_args_linked(
    topo: &Topology,
    files: &MachineFiles<'_>,
    cpu: Option<&str>,
    link: Option<&NetLink>,
) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let mem = topo.memory_mib.to_string();
    push(&[
        QEMU,
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        cpu.unwrap_or(&topo.cpu),
    ]);
    push(&[
        "-smp",
        "1",
        "-m",
        &mem,
        "-M",
        "q35",
        "-nodefaults",
        "-no-reboot",
    ]);
    push(&["-display", "none", "-vga", "none", "-serial", files.serial]);
    let kernel = files.kernel.display().to_string();
    let initrd = files.initrd.display().to_string();
    let append = topo.kernel_cmdline();
    push(&["-kernel", &kernel, "-initrd", &initrd, "-append", &append]);

    let mut w = Walker {
        topo,
        images: files.images,
        chassis: 0,
        devices: Vec::new(),
    };
    // QEMU wants the IOMMU before the devices it translates for. It is not a PCI
    // function, so no BDF moves.
    if let Some(iommu) = topo.iommu {
        w.device(iommu.qemu_device().to_string());
    }
    let mut bridges_done: HashSet<&str> = HashSet::new();
    for rp in &topo.root_port {
        if rp.host_bridge != ROOT_BUS && bridges_done.insert(&rp.host_bridge) {
            if let Some(hb) = topo.host_bridge.iter().find(|h| h.id == rp.host_bridge) {
                w.device(format!(
                    "pxb-pcie,id={},bus_nr={:#x},bus={ROOT_BUS},addr={:#x}",
                    hb.id, hb.bus_nr, hb.addr
                ));
            }
        }
        w.chassis += 1;
        w.device(format!(
            "pcie-root-port,id={},bus={},addr={:#x},chassis={},slot=0",
            rp.id, rp.host_bridge, rp.addr, w.chassis
        ));
        w.children(&rp.id, 0);
    }
    for shm in topo.ivshmem_on(ROOT_BUS) {
        w.devices.extend(shm.qemu_args(false));
    }
    if let Some(nic) = &topo.nic {
        if let Some(link) = link {
            w.devices.extend(link.qemu_args());
        }
        w.device(nic.qemu_device(link.is_some()));
    }
    a.extend(w.devices);
    a
}

struct Walker<'t> {
    topo: &'t Topology,
    images: &'t Path,
    chassis: u32,
    devices: Vec<String>,
}

impl Walker<'_> {
    fn device(&mut self, spec: String) {
        self.devices.push("-device".into());
        self.devices.push(spec);
    }

    fn children(&mut self, port: &str, depth: usize) {
        // Validation forbids cycles; the depth bound keeps a bad value from recursing forever.
        if depth > 64 {
            return;
        }
        let topo = self.topo;
        for sw in topo.switch.iter().filter(|s| s.parent == port) {
            self.device(format!("x3130-upstream,id={},bus={port}", sw.id));
            for (i, dn) in sw.downstream.iter().enumerate() {
                self.chassis += 1;
                self.device(format!(
                    "xio3130-downstream,id={dn},bus={},addr={i:#x},chassis={},slot=0",
                    sw.id, self.chassis
                ));
            }
            for dn in &sw.downstream {
                self.children(dn, depth + 1);
            }
        }
        let devs = topo.nvme_on(port);
        let shms = topo.ivshmem_on(port);
        let multi = devs
            .iter()
            .map(|d| d.function)
            .chain(shms.iter().map(|s| s.function))
            .any(|f| f.is_some_and(|f| f > 0));
        for n in devs {
            self.nvme(n, port, multi);
        }
        for shm in shms {
            self.devices.extend(shm.qemu_args(multi));
        }
    }

    fn nvme(&mut self, n: &Nvme, port: &str, multi: bool) {
        let image = self.images.join(format!("{}.img", n.serial));
        self.devices.push("-drive".into());
        // With injected errors the image sits behind QEMU's blkdebug driver.
        let file = if n.io_errors.is_empty() {
            image.display().to_string()
        } else {
            format!(
                "blkdebug:{}:{}",
                crate::machine::disk::blkdebug_config(self.images, &n.serial).display(),
                image.display()
            )
        };
        let mut drive = format!("file={file},if=none,id=drv_{},format=raw", n.serial);
        if let Some(mib) = n.throttle_read_mib_s {
            drive.push_str(&format!(",throttling.bps-read={}", u64::from(mib) << 20));
        }
        self.devices.push(drive);
        let mut spec = format!("nvme,serial={s},drive=drv_{s},bus={port}", s = n.serial);
        if let Some(f) = n.function {
            spec.push_str(&format!(",addr=0.{f}"));
            if f == 0 && multi {
                spec.push_str(",multifunction=on");
            }
        }
        if let Some(mb) = n.cmb_mb {
            spec.push_str(&format!(",cmb_size_mb={mb}"));
        }
        self.device(spec);
    }
}

/// A `qemu.sh` script that reruns `args` (each argument single-quoted when needed).
pub fn qemu_script(args: &[String], comment: &str) -> String {
    let mut s = String::from("#!/bin/sh\n");
    for line in comment.lines() {
        s.push_str(&format!("# {line}\n"));
    }
    let mut first = true;
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        let quoted = shell_quote(arg);
        if first {
            s.push_str(&quoted);
            first = false;
        } else if arg.starts_with('-') {
            s.push_str(&format!(" \\\n  {quoted}"));
            if let Some(val) = iter.next_if(|v| !v.starts_with('-')) {
                s.push(' ');
                s.push_str(&shell_quote(val));
            }
        } else {
            s.push(' ');
            s.push_str(&quoted);
        }
    }
    s.push('\n');
    s
}

/// Quotes `s` for a POSIX shell when it holds anything but safe characters. `$VAR`
/// prefixes are kept unquoted so scripts can use `$SCRATCH` placeholders.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_=,./:@+%$".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The trace file in the run directory.
pub const TRACE_FILE: &str = "dma-trace.log";

/// `-trace enable=EVENT` for every event the accounting reads, and `-trace file=FILE`
/// (QEMU 7.2's `log` trace backend writes there).
pub fn qemu_trace_args(file: &Path) -> Vec<String> {
    let mut a = Vec::new();
    for e in event::ALL {
        a.push("-trace".to_string());
        a.push(format!("enable={e}"));
    }
    a.push("-trace".to_string());
    // QEMU's option syntax doubles a comma inside a value.
    a.push(format!(
        "file={}",
        file.display().to_string().replace(',', ",,")
    ));
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn trace_args_enable_every_event_and_escape_commas() {
        let a = qemu_trace_args(Path::new("/runs/a,b/dma-trace.log"));
        assert_eq!(a.len(), 2 * (event::ALL.len() + 1));
        assert!(a.contains(&"enable=pci_nvme_map_addr_cmb".to_string()));
        assert_eq!(
            a.last().map(String::as_str),
            Some("file=/runs/a,,b/dma-trace.log")
        );
    }
}
