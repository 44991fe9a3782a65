//! Facts the nvmet pre-flight needs, read below the root: what backs each namespace's
//! `device_path` (block device or file; which driver; which PCI function), which RDMA
//! devices a port's address lives on, which hosts are connected, and the kernel's
//! `nvmet:` lines about p2pmem.
//!
//! A block device is found by `stat` inside the root and `sys/dev/block/MAJ:MIN`; a
//! capture has no `/dev`, so `/dev/<name>` falls back to `sys/class/block/<name>`.

use crate::klog;
use crate::rootfs::{FsError, RootFs};
use crate::system::{pci_function_of, System};
use p2pmem_model::limits;
use p2pmem_model::nvmet_plan::config::{Port, TargetConfig};
use p2pmem_model::nvmet_plan::connections::{Connections, Controller};
use p2pmem_model::nvmet_plan::facts::{parse_using_line, Transport, CTRL_DEBUGFS};
use p2pmem_model::nvmet_plan::{BackingFacts, BlockDriver, PortFacts, RdmaDevice};
use p2pmem_model::{Bdf, KernelVersion};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

fn last(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What is at `device_path` (a path as nvmet sees it, e.g. `/dev/nvme0n1`).
pub fn backing(fs: &RootFs, device_path: &str) -> BackingFacts {
    if device_path.is_empty() {
        return BackingFacts::Unset;
    }
    let name = last(Path::new(device_path));
    let by_name = || {
        let rel = format!("sys/class/block/{name}");
        (device_path.starts_with("/dev/") && fs.exists(&rel))
            .then(|| fs.resolve(&rel).map(|r| classify(fs, &r)).ok())
            .flatten()
    };
    let not_found = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let resolved = match fs.resolve(device_path) {
        Ok(r) => r,
        Err(FsError::Io { source, .. }) if not_found(&source) => {
            return by_name().unwrap_or(BackingFacts::Missing)
        }
        Err(e) => return BackingFacts::Unknown { why: e.to_string() },
    };
    let meta = match std::fs::metadata(fs.path(&resolved)) {
        Ok(m) => m,
        Err(e) if not_found(&e) => return by_name().unwrap_or(BackingFacts::Missing),
        Err(e) => {
            return BackingFacts::Unknown {
                why: format!("cannot stat {device_path}: {e}"),
            }
        }
    };
    let ft = meta.file_type();
    if ft.is_block_device() {
        let rdev = meta.rdev();
        let (maj, min) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
        let rel = format!("sys/dev/block/{maj}:{min}");
        match fs.resolve(&rel) {
            Ok(r) => classify(fs, &r),
            Err(_) => by_name().unwrap_or_else(|| BackingFacts::Unknown {
                why: format!("block device {maj}:{min} has no {rel}"),
            }),
        }
    } else if ft.is_file() {
        BackingFacts::File
    } else if ft.is_dir() {
        BackingFacts::Other {
            what: "a directory".into(),
        }
    } else {
        BackingFacts::Other {
            what: "neither a block device nor a regular file".into(),
        }
    }
}

/// A block device from its resolved sysfs directory (relative to the root).
fn classify(fs: &RootFs, resolved: &Path) -> BackingFacts {
    let name = last(resolved);
    let disk = if fs.exists(resolved.join("partition")) {
        resolved.parent().unwrap_or(resolved).to_path_buf()
    } else {
        resolved.to_path_buf()
    };
    let disk_name = last(&disk);
    let pci = pci_function_of(resolved);
    let text = resolved.to_string_lossy();
    let is_nvme_pci = |rel: &Path| pci_function_of(rel).is_some() && last(rel).starts_with("nvme");
    let members_all = |dir: PathBuf| {
        let list = fs.list(&dir).unwrap_or_default();
        !list.is_empty()
            && list
                .iter()
                .all(|m| fs.resolve(dir.join(m)).is_ok_and(|r| is_nvme_pci(&r)))
    };
    let driver = if disk_name.starts_with("nvme") {
        if text.contains("/nvme-subsystem/") {
            BlockDriver::NvmeMultipathHead {
                paths_support: members_all(disk.join("multipath")),
            }
        } else if pci.is_some() {
            BlockDriver::NvmePci
        } else {
            // The namespace's directory sits in its controller's.
            let ctrl = disk.parent().unwrap_or(&disk);
            BlockDriver::NvmeFabrics {
                transport: fs
                    .read_opt_string(ctrl.join("transport"))
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| "unknown".into()),
            }
        }
    } else if disk_name.starts_with("loop") {
        BlockDriver::Loop
    } else if disk_name.starts_with("md") {
        BlockDriver::Md {
            level: fs
                .read_opt_string(disk.join("md/level"))
                .ok()
                .flatten()
                .unwrap_or_default(),
            members_support: members_all(disk.join("slaves")),
        }
    } else if disk_name.starts_with("dm-") {
        BlockDriver::DeviceMapper
    } else if disk_name.starts_with("vd") || text.contains("/virtio") {
        BlockDriver::VirtioBlk
    } else if disk_name.starts_with("sd") {
        BlockDriver::Scsi
    } else {
        BlockDriver::Other { name: disk_name }
    };
    BackingFacts::Block { name, driver, pci }
}

/// [`backing`] of every namespace, keyed by (subsystem, nsid).
pub fn all_backing(fs: &RootFs, config: &TargetConfig) -> BTreeMap<(String, u32), BackingFacts> {
    config
        .subsystems
        .iter()
        .flat_map(|s| {
            s.namespaces
                .iter()
                .map(move |n| ((s.nqn.clone(), n.nsid), backing(fs, &n.device_path)))
        })
        .collect()
}

/// Network interfaces of an RDMA device: RoCE GID table netdevs, and netdevs on the
/// same PCI function.
fn rdma_netdevs(fs: &RootFs, name: &str, bdf: Option<Bdf>) -> Vec<String> {
    let mut out = Vec::new();
    let base = format!("sys/class/infiniband/{name}/ports");
    for p in fs.list(&base).unwrap_or_default() {
        let dir = format!("{base}/{p}/gid_attrs/ndevs");
        for i in fs.list(&dir).unwrap_or_default() {
            // Unused GID entries fail to read (EINVAL).
            if let Ok(Some(n)) = fs.read_opt_string(format!("{dir}/{i}")) {
                if !n.is_empty() {
                    out.push(n);
                }
            }
        }
    }
    if let Some(b) = bdf {
        for n in fs.list("sys/class/net").unwrap_or_default() {
            let dev = format!("sys/class/net/{n}/device");
            if fs
                .resolve(&dev)
                .is_ok_and(|r| pci_function_of(&r) == Some(b))
            {
                out.push(n);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Interfaces holding `addr`: exact for IPv6 (`/proc/net/if_inet6`); for IPv4 the
/// interfaces whose directly connected route covers it (`/proc/net/route`), since procfs
/// lists no IPv4 addresses per interface.
fn netdevs_with(fs: &RootFs, addr: IpAddr) -> Vec<String> {
    let text = |rel: &str| {
        fs.read(rel, limits::PROC_TABLE)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    match addr {
        IpAddr::V6(a) => {
            for line in text("proc/net/if_inet6").lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                let parsed = f
                    .first()
                    .and_then(|h| u128::from_str_radix(h, 16).ok())
                    .map(std::net::Ipv6Addr::from);
                if parsed == Some(a) {
                    if let Some(n) = f.get(5) {
                        out.push((*n).to_string());
                    }
                }
            }
        }
        IpAddr::V4(a) => {
            let a = u32::from(a);
            for line in text("proc/net/route").lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                // Destination, Gateway and Mask are the big-endian value printed as a
                // native u32.
                let hex = |i: usize| {
                    f.get(i)
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .map(u32::from_be)
                };
                if let (Some(iface), Some(dest), Some(0), Some(mask)) =
                    (f.first(), hex(1), hex(2), hex(7))
                {
                    if mask != 0 && a & mask == dest & mask {
                        out.push((*iface).to_string());
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The RDMA devices connections to `port` can arrive on.
pub fn port_facts(fs: &RootFs, sys: &System, port: &Port) -> PortFacts {
    // rxe and siw are virtual-DMA devices whatever their parent device is.
    let soft = |n: &str| n.starts_with("rxe") || n.starts_with("siw");
    let all: Vec<RdmaDevice> = sys
        .rdma
        .iter()
        .map(|r| RdmaDevice {
            name: r.name.clone(),
            bdf: r.bdf.filter(|_| !soft(&r.name)),
        })
        .collect();
    let traddr = port.attr("addr_traddr").trim();
    let every = |why: String| PortFacts {
        id: port.id,
        devices: all.clone(),
        matched_by: why,
    };
    let addr: IpAddr = match traddr.parse() {
        Ok(a) if !traddr.is_empty() && traddr != "0.0.0.0" && traddr != "::" => a,
        _ => {
            return every(format!(
                "traddr '{traddr}' is not one address: every RDMA device"
            ))
        }
    };
    let netdevs = netdevs_with(fs, addr);
    let devices: Vec<RdmaDevice> = all
        .iter()
        .filter(|d| {
            rdma_netdevs(fs, &d.name, d.bdf)
                .iter()
                .any(|n| netdevs.contains(n))
        })
        .cloned()
        .collect();
    if devices.is_empty() {
        return every(format!(
            "{traddr} was not found on an RDMA device's interface: every RDMA device"
        ));
    }
    PortFacts {
        id: port.id,
        devices,
        matched_by: format!("{traddr} is on {}", netdevs.join(", ")),
    }
}

/// [`port_facts`] of every rdma port.
pub fn all_port_facts(fs: &RootFs, sys: &System, config: &TargetConfig) -> Vec<PortFacts> {
    config
        .ports
        .iter()
        .filter(|p| p.transport() == Transport::Rdma)
        .map(|p| port_facts(fs, sys, p))
        .collect()
}

/// Who is connected: nvmet's debugfs controllers when visible, and this machine's own
/// loop connections.
pub fn connections(fs: &RootFs, kernel: KernelVersion) -> Connections {
    let mut c = Connections::default();
    let dbg = "sys/kernel/debug/nvmet";
    if fs.is_dir(dbg) {
        let mut list = Vec::new();
        let mut readable = true;
        for nqn in fs.list(dbg).unwrap_or_default() {
            let Ok(ctrls) = fs.list(format!("{dbg}/{nqn}")) else {
                readable = false;
                continue;
            };
            for name in ctrls.into_iter().filter(|n| n.starts_with("ctrl")) {
                let file = |f: &str| {
                    fs.read_opt_string(format!("{dbg}/{nqn}/{name}/{f}"))
                        .ok()
                        .flatten()
                };
                list.push(Controller {
                    nqn: nqn.clone(),
                    port: file("port").and_then(|p| p.parse().ok()),
                    hostnqn: file("hostnqn"),
                    name,
                });
            }
        }
        if readable {
            c.debugfs = Some(list);
        } else {
            c.hidden_because = Some("nvmet's debugfs is not readable: run as root".into());
        }
    } else if !CTRL_DEBUGFS.contains(kernel) {
        c.hidden_because = Some(format!(
            "kernel {kernel} is older than 6.9, the first whose nvmet lists controllers (in debugfs)"
        ));
    } else {
        c.hidden_because = Some(
            "no /sys/kernel/debug/nvmet: mount debugfs; the kernel needs CONFIG_NVME_TARGET_DEBUGFS"
                .into(),
        );
    }
    for name in fs.list("sys/class/nvme").unwrap_or_default() {
        let f = |x: &str| {
            fs.read_opt_string(format!("sys/class/nvme/{name}/{x}"))
                .ok()
                .flatten()
        };
        if f("transport").as_deref() == Some("loop") {
            if let Some(n) = f("subsysnqn") {
                c.local_loop.push(n);
            }
        }
    }
    c.local_loop.sort();
    c.local_loop.dedup();
    c
}

/// A kernel log line of nvmet about p2pmem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct P2pLogLine {
    /// The text, `nvmet: ` included.
    pub text: String,
    /// For `using p2pmem on <BDF> for nsid <n>`: the provider.
    pub provider: Option<Bdf>,
    /// ... and the nsid.
    pub nsid: Option<u32>,
}

/// nvmet's p2pmem lines in raw kernel log bytes (`klogctl` or `dmesg` output).
pub fn p2pmem_log(bytes: &[u8]) -> Vec<P2pLogLine> {
    klog::parse_klog(bytes)
        .into_iter()
        .filter(|l| {
            l.text.starts_with("nvmet: ")
                && (l.text.contains("using p2pmem on ") || l.text.contains("peer-to-peer"))
        })
        .map(|l| {
            let parsed = parse_using_line(&l.text);
            P2pLogLine {
                provider: parsed.map(|p| p.0),
                nsid: parsed.map(|p| p.1),
                text: l.text,
            }
        })
        .collect()
}
