//! Lab topologies: the PCIe tree a guest boots with, read from TOML (schema in
//! `TOPOLOGY.md`). A topology is a flat list of host bridges, root ports, switches and
//! NVMe devices, each naming its parent by id; [`Topology::parse`] checks the tree and
//! reports errors naming the key. Addresses are always explicit, so the guest's BDFs are
//! deterministic.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{read_bounded, LabError, Result};
use crate::machine::ivshmem::Ivshmem;
use crate::machine::nic::Nic;
use crate::machine::q35::ROOT_BUS;
use p2pmem_model::limits;

/// Default guest memory.
pub const DEFAULT_MEMORY_MIB: u32 = 1024;

/// Default size of each NVMe disk image.
pub const DEFAULT_DISK_MIB: u32 = 8;

/// A whole lab topology.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Scenario name (defaults to the file stem).
    #[serde(default)]
    pub name: String,
    /// One line saying what this topology is for.
    #[serde(default)]
    pub description: String,
    /// QEMU `-cpu` model, e.g. `max` (AMD family 15 under TCG) or `max,family=23` (Zen).
    pub cpu: String,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    /// Extra kernel command-line text, appended to `console=ttyS0 panic=-1`.
    #[serde(default)]
    pub cmdline: String,
    /// An emulated IOMMU, turned on in the guest kernel.
    #[serde(default)]
    pub iommu: Option<Iommu>,
    /// Extra host bridges (QEMU `pxb-pcie`).
    #[serde(default)]
    pub host_bridge: Vec<HostBridge>,
    /// PCIe root ports.
    #[serde(default)]
    pub root_port: Vec<RootPort>,
    /// PCIe switches.
    #[serde(default)]
    pub switch: Vec<Switch>,
    /// NVMe controllers (one namespace each).
    #[serde(default)]
    pub nvme: Vec<Nvme>,
    /// `ivshmem-plain` devices: memory BARs for the `p2pmem_pci` provider driver.
    #[serde(default)]
    pub ivshmem: Vec<Ivshmem>,
    /// A network card on `pcie.0`, wired to another guest's when two guests run
    /// together ([`crate::Lab::run_pair`]).
    #[serde(default)]
    pub nic: Option<Nic>,
}

/// An emulated IOMMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Iommu {
    /// QEMU's `intel-iommu` (VT-d; interrupt remapping off) and `intel_iommu=on` on the
    /// kernel command line. The kernel then asks for ACS before enumerating PCI, so every
    /// port with an ACS capability (QEMU's `pcie-root-port`) gets SV, RR, CR and UF.
    Intel,
}

impl Iommu {
    /// The QEMU `-device` value; it must come before every other device.
    pub fn qemu_device(self) -> &'static str {
        match self {
            Iommu::Intel => "intel-iommu,intremap=off",
        }
    }

    /// What the kernel command line needs to turn it on.
    pub fn kernel_param(self) -> &'static str {
        match self {
            Iommu::Intel => "intel_iommu=on",
        }
    }
}

/// An extra host bridge (`pxb-pcie`) plugged into `pcie.0`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostBridge {
    /// QEMU id, referenced by root ports' `host_bridge`.
    pub id: String,
    /// First bus number behind it (e.g. `0x80`).
    pub bus_nr: u8,
    /// Slot on `pcie.0`.
    pub addr: u8,
}

/// A PCIe root port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootPort {
    /// QEMU id, referenced by children's `parent`.
    pub id: String,
    /// Slot on its host bridge: `addr = 4` on `pcie.0` is `0000:00:04.0` in the guest.
    pub addr: u8,
    /// Host bridge id; `pcie.0` (the default) or a `[[host_bridge]]` id.
    #[serde(default = "default_bus")]
    pub host_bridge: String,
}

/// A PCIe switch: an upstream port and its downstream ports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    /// QEMU id of the upstream port (`x3130-upstream`).
    pub id: String,
    /// The root port or downstream port it is plugged into.
    pub parent: String,
    /// QEMU ids of its downstream ports (`xio3130-downstream`), at slots 0, 1, ...
    pub downstream: Vec<String>,
}

/// An NVMe controller with one namespace backed by a sparse raw image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nvme {
    /// Serial number; also names the drive and image (`[A-Za-z0-9_-]`, at most 20).
    pub serial: String,
    /// The root port or downstream port it is plugged into.
    pub parent: String,
    /// Controller memory buffer size in MiB (a p2pmem provider); absent = client only.
    #[serde(default)]
    pub cmb_mb: Option<u32>,
    /// PCI function number (0-7) for multi-function devices; absent = single function.
    #[serde(default)]
    pub function: Option<u8>,
    /// Disk image size in MiB.
    #[serde(default = "default_disk")]
    pub disk_mib: u32,
    /// Free text describing the device's place (goes into `truth.json`).
    #[serde(default)]
    pub desc: String,
    /// Limit the drive's reads to this many MiB per second (QEMU's
    /// `throttling.bps-read`): makes a copy last long enough for a fault injected in
    /// the middle of it (`Step::Unplug`). Absent: no limit.
    #[serde(default)]
    pub throttle_read_mib_s: Option<u32>,
    /// I/O errors QEMU's `blkdebug` injects: every read (or write) that touches one of
    /// these 512-byte sectors fails with EIO, every time (the device reports an
    /// unrecoverable error to the guest).
    #[serde(default)]
    pub io_errors: Vec<IoError>,
}

/// One injected I/O error ([`Nvme::io_errors`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoError {
    /// `read` or `write`.
    pub op: IoOp,
    /// The 512-byte sector whose requests fail.
    pub sector: u64,
}

/// Which requests an [`IoError`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoOp {
    /// Reads.
    Read,
    /// Writes.
    Write,
}

impl IoError {
    /// The rule in QEMU's blkdebug config format.
    pub fn blkdebug_rule(&self) -> String {
        let (event, iotype) = match self.op {
            IoOp::Read => ("read_aio", "read"),
            IoOp::Write => ("write_aio", "write"),
        };
        format!(
            "[inject-error]\nevent = \"{event}\"\niotype = \"{iotype}\"\nerrno = \"5\"\nsector = \"{}\"\nonce = \"off\"\n\n",
            self.sector
        )
    }
}

fn default_memory() -> u32 {
    DEFAULT_MEMORY_MIB
}
fn default_disk() -> u32 {
    DEFAULT_DISK_MIB
}
fn default_bus() -> String {
    ROOT_BUS.to_string()
}

/// The topologies shipped with the lab, by name.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("default", include_str!("../../topologies/default.toml")),
    ("switch", include_str!("../../topologies/switch.toml")),
    ("nested", include_str!("../../topologies/nested.toml")),
    (
        "rootports_max",
        include_str!("../../topologies/rootports_max.toml"),
    ),
    (
        "rootports_zen",
        include_str!("../../topologies/rootports_zen.toml"),
    ),
    (
        "multifunction_acs",
        include_str!("../../topologies/multifunction_acs.toml"),
    ),
    (
        "rootports_iommu",
        include_str!("../../topologies/rootports_iommu.toml"),
    ),
    (
        "switch_iommu",
        include_str!("../../topologies/switch_iommu.toml"),
    ),
    (
        "multifunction_iommu",
        include_str!("../../topologies/multifunction_iommu.toml"),
    ),
    ("provider", include_str!("../../topologies/provider.toml")),
    (
        "s01_switch_cmbmix_fam15",
        include_str!("../../topologies/s01_switch_cmbmix_fam15.toml"),
    ),
    (
        "s05_multifunction_fam15",
        include_str!("../../topologies/s05_multifunction_fam15.toml"),
    ),
];

impl Topology {
    /// Loads `spec`: an existing file path, else the name of an embedded topology.
    pub fn load(spec: &str) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_file() {
            let bytes = read_bounded(path, limits::TOPOLOGY)?;
            let text = String::from_utf8(bytes).map_err(|_| LabError::Topology {
                path: path.to_path_buf(),
                message: "not UTF-8 text".into(),
            })?;
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Self::parse(&text, path, &stem);
        }
        Self::embedded(spec)
    }

    /// An embedded topology by name.
    pub fn embedded(name: &str) -> Result<Self> {
        match EMBEDDED.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Self::parse(text, &PathBuf::from(format!("<embedded>/{n}.toml")), n),
            None => Err(LabError::Topology {
                path: PathBuf::from(name),
                message: format!(
                    "no such file, and not an embedded topology (embedded: {})",
                    EMBEDDED
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// Parses and validates TOML text; `path` is only used in errors, `stem` is the
    /// default name.
    pub fn parse(text: &str, path: &Path, stem: &str) -> Result<Self> {
        let err = |message: String| LabError::Topology {
            path: path.to_path_buf(),
            message,
        };
        let mut topo: Topology = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if topo.name.is_empty() {
            topo.name = stem.to_string();
        }
        topo.validate().map_err(err)?;
        Ok(topo)
    }

    /// The kernel command line: `console=ttyS0 panic=-1`, the IOMMU's parameter when
    /// there is one, then `cmdline`.
    pub fn kernel_cmdline(&self) -> String {
        let mut line = "console=ttyS0 panic=-1".to_string();
        for extra in [
            self.iommu.map(Iommu::kernel_param).unwrap_or(""),
            self.cmdline.trim(),
        ] {
            if !extra.is_empty() {
                line.push(' ');
                line.push_str(extra);
            }
        }
        line
    }

    /// The ivshmem devices attached to `parent` (a port, or `pcie.0`).
    pub fn ivshmem_on(&self, parent: &str) -> Vec<&Ivshmem> {
        let mut v: Vec<&Ivshmem> = self.ivshmem.iter().filter(|s| s.parent == parent).collect();
        v.sort_by_key(|s| s.function.unwrap_or(0));
        v
    }

    /// The NVMe devices attached to `parent`, by function number.
    pub fn nvme_on(&self, parent: &str) -> Vec<&Nvme> {
        let mut v: Vec<&Nvme> = self.nvme.iter().filter(|n| n.parent == parent).collect();
        v.sort_by_key(|n| n.function.unwrap_or(0));
        v
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.cpu.trim().is_empty() {
            return Err(
                "key `cpu`: must name a QEMU CPU model, e.g. \"max\" or \"max,family=23\"".into(),
            );
        }
        if self.cpu.contains(char::is_whitespace) {
            return Err(format!("key `cpu`: {:?} contains whitespace", self.cpu));
        }
        if !(128..=65536).contains(&self.memory_mib) {
            return Err(format!(
                "key `memory_mib`: {} is outside 128..=65536",
                self.memory_mib
            ));
        }
        if self.cmdline.contains(['\n', '\'']) {
            return Err("key `cmdline`: must be one line without single quotes".into());
        }
        let mut ids: HashSet<String> = HashSet::from([ROOT_BUS.to_string()]);
        let mut claim = |key: &str, id: &str| -> std::result::Result<(), String> {
            if !valid_name(id, 32) {
                return Err(format!(
                    "key `{key}`: {id:?} is not a valid id ([A-Za-z0-9_-], 1-32 chars)"
                ));
            }
            if !ids.insert(id.to_string()) {
                return Err(format!("key `{key}`: id {id:?} is used twice"));
            }
            Ok(())
        };
        let mut slots: HashSet<(&str, u8)> = HashSet::new();
        let mut bus_nrs = HashSet::new();
        for (i, hb) in self.host_bridge.iter().enumerate() {
            claim(&format!("host_bridge[{i}].id"), &hb.id)?;
            check_slot(
                &format!("host_bridge[{i}].addr"),
                ROOT_BUS,
                hb.addr,
                &mut slots,
            )?;
            if hb.bus_nr == 0 || !bus_nrs.insert(hb.bus_nr) {
                return Err(format!(
                    "key `host_bridge[{i}].bus_nr`: {:#x} is 0 or used twice",
                    hb.bus_nr
                ));
            }
        }
        let hb_ids: HashSet<&str> = self.host_bridge.iter().map(|h| h.id.as_str()).collect();
        // Ports that can hold a child, and whether a child took them.
        let mut ports: HashMap<&str, Option<&str>> = HashMap::new();
        for (i, rp) in self.root_port.iter().enumerate() {
            claim(&format!("root_port[{i}].id"), &rp.id)?;
            if rp.host_bridge != ROOT_BUS && !hb_ids.contains(rp.host_bridge.as_str()) {
                return Err(format!(
                    "key `root_port[{i}].host_bridge`: {:?} is neither \"pcie.0\" nor a [[host_bridge]] id",
                    rp.host_bridge
                ));
            }
            check_slot(
                &format!("root_port[{i}].addr"),
                &rp.host_bridge,
                rp.addr,
                &mut slots,
            )?;
            ports.insert(&rp.id, None);
        }
        for (i, sw) in self.switch.iter().enumerate() {
            claim(&format!("switch[{i}].id"), &sw.id)?;
            if sw.downstream.is_empty() || sw.downstream.len() > 32 {
                return Err(format!(
                    "key `switch[{i}].downstream`: needs 1 to 32 port ids"
                ));
            }
            for (j, dn) in sw.downstream.iter().enumerate() {
                claim(&format!("switch[{i}].downstream[{j}]"), dn)?;
                ports.insert(dn, None);
            }
        }
        for (i, sw) in self.switch.iter().enumerate() {
            take_port(
                &mut ports,
                &format!("switch[{i}].parent"),
                &sw.parent,
                "switch",
            )?;
        }
        // A switch must not sit below itself.
        for (i, sw) in self.switch.iter().enumerate() {
            let mut at = sw.parent.as_str();
            for _ in 0..=self.switch.len() {
                match self
                    .switch
                    .iter()
                    .find(|s| s.downstream.iter().any(|d| d == at))
                {
                    Some(s) if s.id == sw.id => {
                        return Err(format!(
                            "key `switch[{i}].parent`: switch {:?} is below itself",
                            sw.id
                        ));
                    }
                    Some(s) => at = s.parent.as_str(),
                    None => break,
                }
            }
        }
        let mut serials = HashSet::new();
        for (i, n) in self.nvme.iter().enumerate() {
            let key = |k: &str| format!("key `nvme[{i}].{k}`");
            if !valid_name(&n.serial, 20) {
                return Err(format!(
                    "{}: {:?} is not a valid serial ([A-Za-z0-9_-], 1-20 chars)",
                    key("serial"),
                    n.serial
                ));
            }
            if !serials.insert(n.serial.as_str()) {
                return Err(format!("{}: {:?} is used twice", key("serial"), n.serial));
            }
            if let Some(mb) = n.cmb_mb {
                if !(1..=1024).contains(&mb) || !mb.is_power_of_two() {
                    return Err(format!(
                        "{}: {mb} must be a power of two in 1..=1024",
                        key("cmb_mb")
                    ));
                }
            }
            if let Some(f) = n.function {
                if f > 7 {
                    return Err(format!(
                        "{}: {f} is not a PCI function number (0-7)",
                        key("function")
                    ));
                }
            }
            if !(1..=65536).contains(&n.disk_mib) {
                return Err(format!(
                    "{}: {} is outside 1..=65536",
                    key("disk_mib"),
                    n.disk_mib
                ));
            }
            if n.desc.contains(['\n', '\r']) {
                return Err(format!("{}: must be one line", key("desc")));
            }
            match ports.get(n.parent.as_str()) {
                None => {
                    return Err(format!(
                        "{}: {:?} is not a root port or switch downstream port id",
                        key("parent"),
                        n.parent
                    ))
                }
                Some(Some("switch")) => {
                    return Err(format!(
                        "{}: port {:?} already holds a switch",
                        key("parent"),
                        n.parent
                    ))
                }
                Some(_) => {}
            }
        }
        for (i, shm) in self.ivshmem.iter().enumerate() {
            claim(&format!("ivshmem[{i}].id"), &shm.id)?;
            shm.check(i)?;
            match (shm.addr, ports.get(shm.parent.as_str())) {
                (Some(addr), _) => check_slot(
                    &format!("ivshmem[{i}].addr"),
                    ROOT_BUS,
                    addr,
                    &mut slots,
                )?,
                (None, None) => {
                    return Err(format!(
                        "key `ivshmem[{i}].parent`: {:?} is not pcie.0, a root port or a switch downstream port id",
                        shm.parent
                    ))
                }
                (None, Some(Some("switch"))) => {
                    return Err(format!(
                        "key `ivshmem[{i}].parent`: port {:?} already holds a switch",
                        shm.parent
                    ))
                }
                (None, Some(_)) => {}
            }
        }
        for port in ports.keys() {
            let devs: Vec<Option<u8>> = self
                .nvme_on(port)
                .iter()
                .map(|d| d.function)
                .chain(self.ivshmem_on(port).iter().map(|s| s.function))
                .collect();
            if devs.len() > 1 && devs.iter().any(Option::is_none) {
                return Err(format!(
                    "port {port:?} holds {} devices (NVMe or ivshmem): give each a distinct `function` (multi-function device)",
                    devs.len()
                ));
            }
            let funcs: Vec<u8> = devs.iter().filter_map(|d| *d).collect();
            let distinct: HashSet<u8> = funcs.iter().copied().collect();
            if distinct.len() != funcs.len() {
                return Err(format!(
                    "port {port:?}: two devices have the same `function`"
                ));
            }
            if !funcs.is_empty() && !distinct.contains(&0) {
                return Err(format!(
                    "port {port:?}: a multi-function device needs a `function = 0`"
                ));
            }
        }
        if let Some(nic) = &self.nic {
            nic.check()?;
            check_slot("nic.addr", ROOT_BUS, nic.addr, &mut slots)?;
        }
        if self.nvme.is_empty() {
            return Err("key `nvme`: the topology has no NVMe device".into());
        }
        Ok(())
    }
}

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_slot<'a>(
    key: &str,
    bus: &'a str,
    addr: u8,
    slots: &mut HashSet<(&'a str, u8)>,
) -> std::result::Result<(), String> {
    let reserved = bus == ROOT_BUS && (addr == 0 || addr == 0x1f);
    if addr > 0x1f || reserved {
        return Err(format!(
            "key `{key}`: slot {addr:#x} is not usable (0x00 and 0x1f on pcie.0 belong to the chipset; slots are 0x00-0x1f)"
        ));
    }
    if !slots.insert((bus, addr)) {
        return Err(format!(
            "key `{key}`: slot {addr:#x} on {bus} is used twice"
        ));
    }
    Ok(())
}

fn take_port<'a>(
    ports: &mut HashMap<&'a str, Option<&'a str>>,
    key: &str,
    parent: &str,
    what: &'a str,
) -> std::result::Result<(), String> {
    match ports.get_mut(parent) {
        None => Err(format!(
            "key `{key}`: {parent:?} is not a root port or switch downstream port id"
        )),
        Some(Some(_)) => Err(format!(
            "key `{key}`: port {parent:?} already holds a switch"
        )),
        Some(slot) => {
            *slot = Some(what);
            Ok(())
        }
    }
}
