//! Read a whole system (live or captured) into the model's terms: PCI functions with
//! their config space and p2pmem state, NVMe controllers and namespaces, RDMA devices,
//! CPU 0, the kernel version, command line and config.
//!
//! Only a missing root or PCI device directory is fatal. Everything else that is missing
//! or malformed becomes a [`Problem`] naming the path, and the answer is partial.

use crate::kconfig::KernelConfig;
use crate::rootfs::{Dir, FsError, RootFs};
use p2pmem_model::config_space::ConfigSpace;
use p2pmem_model::cpu::CpuInfo;
use p2pmem_model::distance::Rules;
use p2pmem_model::limits;
use p2pmem_model::topology::{Function, P2pmemInfo, Topology};
use p2pmem_model::{Bdf, HostBridgeId, KernelVersion};
use serde::Serialize;
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where PCI functions are listed, relative to the root.
pub const PCI_DEVICES: &str = "sys/bus/pci/devices";

/// Something that could not be read; the rest of the answer stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The path concerned (as seen from the root, e.g. `/sys/bus/...`).
    pub path: String,
    /// What is wrong.
    pub what: String,
}

/// Why a system could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The root directory does not exist.
    #[error("root directory {0} does not exist or is not a directory")]
    NoRoot(PathBuf),
    /// No PCI devices directory.
    #[error("{0} does not exist: no PCI bus in this system or capture")]
    NoPci(PathBuf),
    /// An I/O error on something essential.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The functions found do not form a topology.
    #[error("the PCI functions found do not form a tree: {0}")]
    Topology(#[from] p2pmem_model::topology::TopologyError),
}

/// An NVMe controller (`/sys/class/nvme/nvmeN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NvmeController {
    /// `nvme0`.
    pub name: String,
    /// Its PCI function, when it is an nvme-pci controller.
    pub bdf: Option<Bdf>,
    /// `transport` (`pcie`, `rdma`, `tcp`, `loop`...), when readable.
    pub transport: Option<String>,
    /// `cmbloc` and `cmbsz` register values, when the controller has a CMB.
    pub cmb: Option<(u32, u32)>,
}

/// A block device whose DMA is done by a PCI function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockDevice {
    /// `nvme0n1`.
    pub name: String,
    /// The PCI function(s) doing its DMA: one, or one per path of a multipath head.
    pub bdfs: Vec<Bdf>,
    /// Is it an NVMe multipath head disk (no PCI parent of its own)?
    pub multipath_head: bool,
    /// Is it a partition of another block device?
    pub partition: bool,
}

/// An RDMA device (`/sys/class/infiniband/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RdmaDevice {
    /// `mlx5_0`.
    pub name: String,
    /// Its PCI function, if it has one (soft-RoCE has none).
    pub bdf: Option<Bdf>,
}

/// Everything p2pmem knows about a system.
#[derive(Debug, Clone, Serialize)]
pub struct System {
    /// The root it was read from.
    pub root: PathBuf,
    /// The PCI functions.
    pub topology: Topology,
    /// Kernel version and CPU: the rules that apply.
    pub rules: Rules,
    /// `osrelease` as read.
    pub kernel_release: Option<String>,
    /// Whether the version was known or assumed.
    pub kernel_version_assumed: bool,
    /// `/proc/cmdline`.
    pub cmdline: Option<String>,
    /// The kernel config, where exposed.
    pub kernel_config: Option<KernelConfig>,
    /// NVMe controllers.
    pub nvme: Vec<NvmeController>,
    /// Block devices backed by PCI functions.
    pub block: Vec<BlockDevice>,
    /// RDMA devices.
    pub rdma: Vec<RdmaDevice>,
    /// Functions whose config space read was cut to 64 bytes (not root).
    pub truncated_config: Vec<Bdf>,
    /// IOMMU instances (`/sys/class/iommu`).
    pub iommus: Vec<String>,
    /// What could not be read.
    pub problems: Vec<Problem>,
    /// When the capture was made by `p2pmem import` (from lspci output): what it was
    /// made from and what was given or unknown; every answer says so.
    pub import: Option<crate::import::ImportNote>,
    /// Functions a scoped read took for decisions only (a provider for `find`, or a bridge
    /// above one): their vendor, device and class are config space's, their driver and
    /// p2pmem size and available bytes unread, until [`complete_ids`].
    #[serde(skip)]
    pub ids_from_config: Vec<Bdf>,
}

/// The chain of PCI functions in a resolved device path: the components after the last
/// `pciDDDD:BB` host-bridge component that parse as addresses, and that host bridge.
pub fn chain_from_path(resolved: &Path) -> Option<(HostBridgeId, Vec<Bdf>)> {
    // One pass over the components (a 4,096-function capture has some 25,000): a host
    // bridge starts the chain anew, the addresses after it extend it, anything else
    // ends it. A component that is not UTF-8 is no address.
    let mut found: Option<(HostBridgeId, Vec<Bdf>)> = None;
    let mut open = false;
    for c in resolved.as_os_str().as_bytes().split(|&b| b == b'/') {
        if c.is_empty() || c == b"." {
            continue;
        }
        let c = std::str::from_utf8(c).unwrap_or("");
        if let Some(hb) = c.starts_with("pci").then(|| c.parse().ok()).flatten() {
            found = Some((hb, Vec::new()));
            open = true;
            continue;
        }
        let Some((_, chain)) = found.as_mut().filter(|_| open) else {
            continue;
        };
        match c.parse::<Bdf>() {
            Ok(b) if c.len() >= 12 => chain.push(b),
            _ => open = false,
        }
    }
    let (hb, chain) = found?;
    (!chain.is_empty()).then_some((hb, chain))
}

/// The last PCI function in a resolved device path (the device doing the DMA).
pub fn pci_function_of(resolved: &Path) -> Option<Bdf> {
    chain_from_path(resolved).and_then(|(_, c)| c.last().copied())
}

/// A function's place, before its files are read.
struct Located {
    bdf: Bdf,
    /// Its directory, relative to the root, symlinks resolved.
    dir: PathBuf,
    host_bridge: HostBridgeId,
    path: Vec<Bdf>,
    /// Whether it has `p2pmem/`, when already looked at.
    has_p2pmem: Option<bool>,
    /// Read only what decisions use: IDs and class from config space, no driver.
    for_decision: bool,
}

struct Reader {
    fs: RootFs,
    problems: Vec<Problem>,
    /// Directories already resolved (see [`RootFs::resolve_with`]).
    known_dirs: crate::rootfs::KnownDirs,
    /// Functions whose config space was cut short ([`System::truncated_config`]).
    truncated: Vec<Bdf>,
    /// Where config space is read, one function after the other.
    config_buf: Vec<u8>,
    /// An imported capture: functions whose config space the source showed only in part
    /// (their 4096 bytes are exposed, fewer known), and p2pmem sizes may be unknown.
    imported: Option<Imported>,
}

/// What an import note changes in reading.
#[derive(Debug, Clone, Default)]
struct Imported {
    /// PCI Express functions whose extended config space the source did not show.
    extended_unknown: HashSet<Bdf>,
}

impl Imported {
    fn from_note(n: &crate::import::ImportNote) -> Self {
        Self {
            extended_unknown: n
                .extended_config_unknown
                .iter()
                .filter_map(|b| b.parse().ok())
                .collect(),
        }
    }
}

impl Reader {
    fn new(fs: RootFs, imported: Option<Imported>) -> Self {
        Self {
            fs,
            problems: Vec::new(),
            known_dirs: crate::rootfs::KnownDirs::default(),
            truncated: Vec::new(),
            config_buf: Vec::new(),
            imported,
        }
    }

    fn problem(&mut self, path: impl AsRef<Path>, what: impl Into<String>) {
        self.problems.push(Problem {
            path: format!("/{}", path.as_ref().display()),
            what: what.into(),
        });
    }

    fn fs_problem(&mut self, e: &FsError) {
        // An imported capture holds what its source showed; its note says what that
        // leaves unknown (no config space in a tree, no CPU or kernel not given).
        if self.imported.is_some() && e.is_not_found() {
            return;
        }
        let (path, what) = match e {
            FsError::Io { path, what, source } => (path.clone(), format!("{what}: {source}")),
            FsError::Loop { path } => (path.clone(), "symbolic link loop".to_string()),
            FsError::Escape { link, target } => (
                link.clone(),
                format!("symbolic link to {target:?} leads out of the root"),
            ),
            FsError::Dangling { link, target, .. } => (
                link.clone(),
                format!("dangling symbolic link to {target:?}"),
            ),
            FsError::TooLarge { path, bound } => (
                path.clone(),
                format!(
                    "more than {} bytes, larger than {} can be",
                    bound.max, bound.what
                ),
            ),
            FsError::NotAFile { path, kind } => {
                (path.clone(), format!("a {kind}, not a regular file"))
            }
            FsError::Parse { path, content, why } => (
                path.clone(),
                format!("unexpected content {content:?}: {why}"),
            ),
        };
        let rel = path
            .strip_prefix(self.fs.root())
            .map(Path::to_path_buf)
            .unwrap_or(path);
        self.problem(rel, what);
    }

    /// Where the function `name` of `sys/bus/pci/devices` is: its address, its resolved
    /// directory and its chain. Its link is read relative to `devices` (that directory,
    /// open) when given.
    fn locate(&mut self, name: &str, devices: Option<&Dir>) -> Option<Located> {
        let link = || format!("{PCI_DEVICES}/{name}");
        let bdf: Bdf = match name.parse() {
            Ok(b) => b,
            Err(_) => {
                self.problem(link(), "not a PCI address; skipped");
                return None;
            }
        };
        let dir = match devices {
            Some(d) => self.fs.resolve_in(d, name, &mut self.known_dirs),
            None => self.fs.resolve_with(link(), &mut self.known_dirs),
        };
        let dir = match dir {
            Ok(d) => d,
            Err(e) => {
                self.fs_problem(&e);
                return None;
            }
        };
        let Some((host_bridge, path)) = chain_from_path(&dir) else {
            self.problem(
                &dir,
                "device path has no pciDDDD:BB host bridge component; skipped",
            );
            return None;
        };
        if path.last() != Some(&bdf) {
            self.problem(&dir, format!("path does not end with {bdf}; skipped"));
            return None;
        }
        Some(Located {
            bdf,
            dir,
            host_bridge,
            path,
            has_p2pmem: None,
            for_decision: false,
        })
    }

    /// A located function read in full: config space, IDs, driver, p2pmem.
    fn function(&mut self, at: &Located) -> Option<Function> {
        let Located {
            bdf,
            ref dir,
            host_bridge,
            ref path,
            has_p2pmem,
            for_decision,
        } = *at;
        // One open directory, its files read relative to it: a 4,096-function capture
        // reads in a fraction of the time a walk from the root per file takes.
        let d = match self.fs.open_dir(dir) {
            Ok(d) => d,
            Err(e) => {
                self.fs_problem(&e);
                return None;
            }
        };
        let config = self.config(&d, bdf);
        let mut id = |file: &str, from_cfg: Option<u32>| -> u32 {
            if for_decision {
                return from_cfg.unwrap_or(0xffff);
            }
            match d.read_hex(file) {
                Ok(v) => v,
                Err(e) => {
                    self.fs_problem(&e);
                    from_cfg.unwrap_or(0xffff)
                }
            }
        };
        let vendor = id("vendor", config.as_ref().map(|c| u32::from(c.vendor_id())));
        let device = id("device", config.as_ref().map(|c| u32::from(c.device_id())));
        let class = id("class", config.as_ref().map(ConfigSpace::class_code));
        // Read even for decisions: on 7.x whether a port has a driver decides whether
        // the kernel writes its ACS Control (the what-if needs it).
        let driver = driver_of(&d);
        let p2pmem = self.p2pmem(&d, has_p2pmem, for_decision);
        Some(Function {
            bdf,
            host_bridge,
            path: path.clone(),
            vendor: (vendor & 0xffff) as u16,
            device: (device & 0xffff) as u16,
            class,
            config,
            driver,
            p2pmem,
            acs_override: None,
        })
    }

    fn config(&mut self, d: &Dir, bdf: Bdf) -> Option<ConfigSpace> {
        let (read, exposed) = match d.read_with_len("config", &mut self.config_buf) {
            Ok(b) => b,
            Err(e) => {
                self.fs_problem(&e);
                return None;
            }
        };
        // An imported dump of 256 bytes of a PCI Express function: the device exposes
        // 4096, and what lies past 256 is unknown (not absent).
        let exposed = match &self.imported {
            Some(i) if i.extended_unknown.contains(&bdf) => exposed.max(4096),
            _ => exposed,
        };
        let bytes = self.config_buf.get(..read).unwrap_or_default();
        match ConfigSpace::new(bytes, exposed as usize) {
            Ok(cs) => {
                if cs.is_truncated() || cs.exposed_len() <= 64 {
                    self.truncated.push(bdf);
                }
                Some(cs)
            }
            Err(e) => {
                let rel = d.path().join("config");
                let rel = rel
                    .strip_prefix(self.fs.root())
                    .map(Path::to_path_buf)
                    .unwrap_or(rel);
                self.problem(&rel, e.to_string());
                None
            }
        }
    }

    /// `p2pmem/`; for decisions only, `published` alone (size and available unread).
    fn p2pmem(&mut self, d: &Dir, known: Option<bool>, decision: bool) -> Option<P2pmemInfo> {
        if !known.unwrap_or_else(|| d.is_dir("p2pmem")) {
            return None;
        }
        let imported = self.imported.is_some();
        let mut num = |f: &str| match d.read_u64(&format!("p2pmem/{f}")) {
            Ok(v) => Some(v),
            // An import given a provider without its size: unknown, as its note says.
            Err(e) if imported && e.is_not_found() && f != "published" => None,
            Err(e) => {
                self.fs_problem(&e);
                None
            }
        };
        let (size, available) = if decision {
            (None, None)
        } else {
            (num("size"), num("available"))
        };
        let published = match num("published") {
            Some(0) => Some(false),
            Some(1) => Some(true),
            Some(other) => {
                let rel = d.path().join("p2pmem/published");
                let rel = rel
                    .strip_prefix(self.fs.root())
                    .map(Path::to_path_buf)
                    .unwrap_or(rel);
                self.problem(rel, format!("expected 0 or 1, read {other}"));
                None
            }
            None => None,
        };
        Some(P2pmemInfo {
            size,
            available,
            published,
        })
    }

    fn class_dir_bdf(&mut self, rel: &str) -> Option<Bdf> {
        match self.fs.resolve(rel) {
            Ok(p) => pci_function_of(&p),
            Err(e) => {
                self.fs_problem(&e);
                None
            }
        }
    }

    fn list(&mut self, rel: &str) -> Vec<String> {
        match self.fs.list(rel) {
            Ok(v) => v,
            Err(e) => {
                self.fs_problem(&e);
                Vec::new()
            }
        }
    }
}

/// Read the system below `root`.
pub fn read_system(root: &Path) -> Result<System, ReadError> {
    read_system_scoped(root, &Scope::All)
}

fn driver_of(d: &Dir) -> Option<String> {
    d.read_link("driver")
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// Items below which reading is not worth a second thread.
const PARALLEL_FROM: usize = 256;

/// `f` over `todo`, in order: on a large capture in up to two threads, each with its own
/// reader over a contiguous part, their answers, problems and truncated functions joined
/// in the same order as one thread's.
fn in_order<I: Send, T: Send>(
    r: &mut Reader,
    todo: Vec<I>,
    f: impl Fn(&mut Reader, I) -> Option<T> + Sync,
) -> Vec<T> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    if threads < 2 || todo.len() < PARALLEL_FROM {
        return todo.into_iter().filter_map(|i| f(r, i)).collect();
    }
    let mut todo = todo;
    let second = todo.split_off(todo.len().div_ceil(2));
    let f = &f;
    let part = |mut r: Reader, part: Vec<I>| {
        move || {
            let out: Vec<T> = part.into_iter().filter_map(|i| f(&mut r, i)).collect();
            (out, r.truncated, r.problems)
        }
    };
    let (a, b) = std::thread::scope(|s| {
        let other = s.spawn(part(Reader::new(r.fs.clone(), r.imported.clone()), second));
        let mine = part(Reader::new(r.fs.clone(), r.imported.clone()), todo)();
        (mine, other.join())
    });
    let b = b.unwrap_or_else(|e| std::panic::resume_unwind(e));
    let mut out = Vec::with_capacity(a.0.len() + b.0.len());
    for (items, truncated, problems) in [a, b] {
        out.extend(items);
        r.truncated.extend(truncated);
        r.problems.extend(problems);
    }
    out
}

/// NVMe controllers, block devices and RDMA devices.
type Classes = (Vec<NvmeController>, Vec<BlockDevice>, Vec<RdmaDevice>);

/// Read the system below `root`, the PCI functions that `scope` asks for in full: a
/// decision about a few functions of a 4,096-function fabric then reads a few dozen.
pub fn read_system_scoped(root: &Path, scope: &Scope) -> Result<System, ReadError> {
    if !root.is_dir() {
        return Err(ReadError::NoRoot(root.to_path_buf()));
    }
    let mut r = Reader::new(RootFs::new(root), None);
    if !r.fs.is_dir(PCI_DEVICES) {
        return Err(ReadError::NoPci(r.fs.path(PCI_DEVICES)));
    }
    let import = read_import_note(&mut r);
    r.imported = import.as_ref().map(Imported::from_note);
    // Where each function is and, for `find`, whether it is a provider: a walk of
    // every function's link, in two threads on a large capture.
    let providers = matches!(
        scope,
        Scope::For {
            providers: true,
            ..
        }
    );
    let names = r.fs.list(PCI_DEVICES)?;
    // The links are read relative to their directory, open (if it opens: else each the
    // long way, which names what is wrong).
    let devices =
        r.fs.resolve(PCI_DEVICES)
            .and_then(|d| r.fs.open_dir(d))
            .ok();
    // By reference: a name dropped in the other thread would be freed into this one's
    // malloc arena, under its lock, while this thread allocates from it.
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut located = in_order(&mut r, names, |r, name| {
        let mut at = r.locate(name, devices.as_ref())?;
        if providers {
            at.has_p2pmem = Some(r.fs.is_real_dir(&at.dir, "p2pmem"));
        }
        Some(at)
    });
    let classes = match scope {
        Scope::All => None,
        Scope::For { .. } => Some(read_classes(&mut r)),
    };
    let want = classes
        .as_ref()
        .and_then(|c| wanted(&mut located, scope, c));
    let todo: Vec<Located> = located
        .into_iter()
        .filter(|at| want.as_ref().is_none_or(|w| w.contains(&at.bdf)))
        .collect();
    let ids_from_config: Vec<Bdf> = todo
        .iter()
        .filter(|a| a.for_decision)
        .map(|a| a.bdf)
        .collect();
    // By reference, as the names above: what is dropped is dropped here, after.
    let functions = in_order(&mut r, todo.iter().collect(), Reader::function);
    let topology = Topology::new(functions)?;

    let release = match r.fs.read_opt_string("proc/sys/kernel/osrelease") {
        Ok(v) => v,
        Err(e) => {
            r.fs_problem(&e);
            None
        }
    };
    let parsed = release.as_deref().map(str::parse::<KernelVersion>);
    let (kernel, assumed) = match parsed {
        Some(Ok(v)) => (v, false),
        Some(Err(e)) => {
            r.problem(
                "proc/sys/kernel/osrelease",
                format!("{e}; assuming the newest rules"),
            );
            (KernelVersion::NEWEST_READ, true)
        }
        None => {
            if r.imported.is_none() {
                r.problem(
                    "proc/sys/kernel/osrelease",
                    "missing; assuming the newest rules",
                );
            }
            (KernelVersion::NEWEST_READ, true)
        }
    };
    let cpu = match r.fs.read("proc/cpuinfo", limits::CPUINFO) {
        Ok(b) => CpuInfo::parse(&b),
        Err(e) => {
            r.fs_problem(&e);
            CpuInfo::default()
        }
    };
    let cmdline = r.fs.read_opt_string("proc/cmdline").unwrap_or(None);
    let kernel_config = KernelConfig::read(&r.fs, release.as_deref());

    let (nvme, block, rdma) = match classes {
        Some(c) => c,
        None => read_classes(&mut r),
    };
    let iommus = r.list("sys/class/iommu");

    Ok(System {
        root: root.to_path_buf(),
        topology,
        rules: Rules { kernel, cpu },
        kernel_release: release,
        kernel_version_assumed: assumed,
        cmdline,
        kernel_config,
        nvme,
        block,
        rdma,
        truncated_config: r.truncated,
        iommus,
        problems: r.problems,
        import,
        ids_from_config,
    })
}

/// The note `p2pmem import` leaves at the top of a capture, if any.
fn read_import_note(r: &mut Reader) -> Option<crate::import::ImportNote> {
    let bytes = match r.fs.read(crate::import::NOTE_FILE, limits::IMPORT_NOTE) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return None,
        Err(e) => {
            r.fs_problem(&e);
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(n) => Some(n),
        Err(e) => {
            r.problem(
                crate::import::NOTE_FILE,
                format!("not an import note ({e}); read as a plain capture"),
            );
            None
        }
    }
}

fn read_classes(r: &mut Reader) -> Classes {
    let mut nvme = Vec::new();
    for name in r.list("sys/class/nvme") {
        let base = format!("sys/class/nvme/{name}");
        let bdf = r.class_dir_bdf(&base);
        let transport =
            r.fs.read_opt_string(format!("{base}/transport"))
                .unwrap_or(None);
        let reg = |r: &mut Reader, f: &str| -> Option<u32> {
            r.fs.read_opt_string(format!("{base}/{f}"))
                .ok()
                .flatten()
                .and_then(|s| s.parse().ok())
        };
        let cmb = match (reg(r, "cmbloc"), reg(r, "cmbsz")) {
            (Some(l), Some(s)) => Some((l, s)),
            _ => None,
        };
        nvme.push(NvmeController {
            name,
            bdf,
            transport,
            cmb,
        });
    }

    let mut block = Vec::new();
    for name in r.list("sys/class/block") {
        let rel = format!("sys/class/block/{name}");
        let Ok(resolved) = r.fs.resolve(&rel) else {
            continue;
        };
        let partition = r.fs.exists(format!("{rel}/partition"));
        if let Some(bdf) = pci_function_of(&resolved) {
            block.push(BlockDevice {
                name,
                bdfs: vec![bdf],
                multipath_head: false,
                partition,
            });
            continue;
        }
        // An NVMe multipath head: its paths are listed under `multipath/`.
        let paths = r.fs.list(format!("{rel}/multipath")).unwrap_or_default();
        let bdfs: Vec<Bdf> = paths
            .iter()
            .filter_map(|p| r.fs.resolve(format!("{rel}/multipath/{p}")).ok())
            .filter_map(|p| pci_function_of(&p))
            .collect();
        if !bdfs.is_empty() {
            block.push(BlockDevice {
                name,
                bdfs,
                multipath_head: true,
                partition,
            });
        }
    }

    let mut rdma = Vec::new();
    for name in r.list("sys/class/infiniband") {
        let dev = format!("sys/class/infiniband/{name}/device");
        let bdf = if r.fs.exists(&dev) {
            r.class_dir_bdf(&dev)
        } else {
            None
        };
        rdma.push(RdmaDevice { name, bdf });
    }
    (nvme, block, rdma)
}

mod scope;
use scope::wanted;
pub use scope::{complete_ids, Scope};

#[cfg(test)]
mod tests;

/// Helpers shared by this crate's tests.
#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) use super::tests::scratch_copy;
}
