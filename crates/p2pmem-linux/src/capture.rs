//! `p2pmem capture DIR`: copy what the model reads into DIR, in the same layout, so
//! anyone can replay it with `--root DIR` and attach it to a bug report.
//!
//! Device directories are copied at their real sysfs paths and every link the reader
//! follows (`sys/bus/pci/devices/<BDF>`, `driver`, class links) is recreated as a
//! relative symlink, as the kernel lays them out. `p2pmem/allocate` becomes an empty
//! placeholder. Nothing outside DIR is written, and DIR must be new or empty.

use crate::rootfs::{FsError, RootFs};
use crate::system::PCI_DEVICES;
use p2pmem_model::limits::{self, Bound};
use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};

/// Per-function files copied when present.
pub const FUNCTION_FILES: &[&str] = &[
    "vendor",
    "device",
    "class",
    "subsystem_vendor",
    "subsystem_device",
    "revision",
    "config",
    "resource",
    "numa_node",
    "local_cpulist",
    // The link's speed and width, for `p2pmem plan` (crate::link_speed).
    "current_link_speed",
    "current_link_width",
    "max_link_speed",
    "max_link_width",
];

/// Files of `p2pmem/` copied (allocate is a placeholder).
pub const P2PMEM_FILES: &[&str] = &["size", "available", "published"];

/// Files of an NVMe controller copied.
pub const NVME_FILES: &[&str] = &[
    "cmb",
    "cmbloc",
    "cmbsz",
    "transport",
    "model",
    "serial",
    "subsysnqn",
];

/// Top-level files copied.
pub const PROC_FILES: &[&str] = &[
    "proc/cpuinfo",
    "proc/cmdline",
    "proc/sys/kernel/osrelease",
    "proc/config.gz",
];

/// What a capture did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaptureReport {
    /// The directory written.
    pub dir: PathBuf,
    /// PCI functions captured.
    pub functions: usize,
    /// Files copied.
    pub files: usize,
    /// Symlinks created.
    pub links: usize,
    /// Functions whose config space was cut to 64 bytes (not root).
    pub truncated_config: Vec<String>,
    /// What could not be copied.
    pub problems: Vec<String>,
}

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// DIR exists and is not empty.
    #[error("{0} exists and is not empty: choose a new directory (nothing was written)")]
    NotEmpty(PathBuf),
    /// DIR is inside the root being captured.
    #[error("{dir} is inside the root {root} being captured: choose a directory outside it")]
    InsideRoot {
        /// The target.
        dir: PathBuf,
        /// The root.
        root: PathBuf,
    },
    /// An I/O error writing DIR.
    #[error("{path}: cannot write")]
    Write {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading the source failed fatally.
    #[error(transparent)]
    Read(#[from] FsError),
}

struct Writer {
    src: RootFs,
    dst: PathBuf,
    report: CaptureReport,
}

impl Writer {
    fn mkdir(&self, rel: &Path) -> Result<(), CaptureError> {
        let p = self.dst.join(rel);
        std::fs::create_dir_all(&p).map_err(|source| CaptureError::Write { path: p, source })
    }

    fn copy(&mut self, rel: &Path) -> Result<(), CaptureError> {
        let bytes = match self.src.read(rel, bound_of(rel)) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => {
                self.report.problems.push(e.to_string());
                return Ok(());
            }
        };
        if let Some(parent) = rel.parent() {
            self.mkdir(parent)?;
        }
        let p = self.dst.join(rel);
        std::fs::write(&p, bytes).map_err(|source| CaptureError::Write { path: p, source })?;
        self.report.files += 1;
        Ok(())
    }

    /// Create `link` (relative to DIR) pointing at `target` (relative to DIR), as a
    /// relative symlink.
    fn link(&mut self, link: &Path, target: &Path) -> Result<(), CaptureError> {
        let parent = link.parent().unwrap_or(Path::new(""));
        self.mkdir(parent)?;
        let depth = parent.components().count();
        let mut rel = PathBuf::new();
        for _ in 0..depth {
            rel.push("..");
        }
        rel.push(target);
        let p = self.dst.join(link);
        if p.symlink_metadata().is_ok() {
            return Ok(());
        }
        std::os::unix::fs::symlink(&rel, &p)
            .map_err(|source| CaptureError::Write { path: p, source })?;
        self.report.links += 1;
        Ok(())
    }

    fn function(&mut self, name: &str) -> Result<(), CaptureError> {
        let link = Path::new(PCI_DEVICES).join(name);
        let dir = match self.src.resolve(&link) {
            Ok(d) => d,
            Err(e) => {
                self.report.problems.push(e.to_string());
                return Ok(());
            }
        };
        self.mkdir(&dir)?;
        for f in FUNCTION_FILES {
            self.copy(&dir.join(f))?;
        }
        let cfg = dir.join("config");
        if let (Ok(len), Ok(bytes)) = (
            self.src.len(&cfg),
            self.src.read(&cfg, limits::CONFIG_SPACE),
        ) {
            if (bytes.len() as u64) < len {
                self.report.truncated_config.push(name.to_string());
            }
        }
        let p2p = dir.join("p2pmem");
        if self.src.is_dir(&p2p) {
            for f in P2PMEM_FILES {
                self.copy(&p2p.join(f))?;
            }
            let placeholder = self.dst.join(p2p.join("allocate"));
            std::fs::write(&placeholder, b"").map_err(|source| CaptureError::Write {
                path: placeholder,
                source,
            })?;
        }
        if let Some(drv) = self.src.link_name(dir.join("driver")) {
            let drv_dir = Path::new("sys/bus/pci/drivers").join(drv);
            self.mkdir(&drv_dir)?;
            self.link(&dir.join("driver"), &drv_dir)?;
        }
        self.link(&link, &dir)?;
        self.report.functions += 1;
        Ok(())
    }

    fn class_links(
        &mut self,
        class: &str,
        files: &[&str],
        sub: Option<&str>,
    ) -> Result<(), CaptureError> {
        for name in self.src.list(class).unwrap_or_default() {
            let link = Path::new(class).join(&name);
            let link = match sub {
                Some(s) => link.join(s),
                None => link,
            };
            let Ok(target) = self.src.resolve(&link) else {
                continue;
            };
            if !self.src.is_dir(&target) {
                continue;
            }
            self.mkdir(&target)?;
            for f in files {
                self.copy(&target.join(f))?;
            }
            self.link(&link, &target)?;
            // NVMe multipath heads list their paths; keep those links too.
            for p in self.src.list(target.join("multipath")).unwrap_or_default() {
                let l = target.join("multipath").join(&p);
                if let Ok(t) = self.src.resolve(&l) {
                    self.mkdir(&t)?;
                    self.link(&l, &t)?;
                }
            }
        }
        Ok(())
    }
}

/// The bound for a file copied into a capture, by its name.
fn bound_of(rel: &Path) -> Bound {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    match &*name {
        "config" => limits::CONFIG_SPACE,
        "cpuinfo" => limits::CPUINFO,
        "config.gz" => limits::KERNEL_CONFIG,
        crate::import::NOTE_FILE => limits::IMPORT_NOTE,
        n if n.starts_with("config-") => limits::KERNEL_CONFIG,
        _ => limits::SYSFS_ATTR,
    }
}

/// Capture the system below `root` into `dir`.
pub fn capture(root: &Path, dir: &Path) -> Result<CaptureReport, CaptureError> {
    if let Ok(mut rd) = std::fs::read_dir(dir) {
        if rd.next().is_some() {
            return Err(CaptureError::NotEmpty(dir.to_path_buf()));
        }
    }
    if let (Ok(r), Ok(d)) = (
        root.canonicalize(),
        dir.canonicalize().or_else(|_| {
            dir.parent()
                .map(|p| p.canonicalize())
                .unwrap_or_else(|| Ok(PathBuf::from("/nonexistent")))
        }),
    ) {
        if d.starts_with(&r) && r != Path::new("/") {
            return Err(CaptureError::InsideRoot {
                dir: dir.to_path_buf(),
                root: root.to_path_buf(),
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| CaptureError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut w = Writer {
        src: RootFs::new(root),
        dst: dir.to_path_buf(),
        report: CaptureReport {
            dir: dir.to_path_buf(),
            ..CaptureReport::default()
        },
    };
    w.mkdir(Path::new(PCI_DEVICES))?;
    for name in w.src.list(PCI_DEVICES)? {
        w.function(&name)?;
    }
    for f in PROC_FILES {
        w.copy(Path::new(f))?;
    }
    // A capture of an imported capture keeps what it was made from.
    w.copy(Path::new(crate::import::NOTE_FILE))?;
    if let Ok(Some(release)) = w.src.read_opt_string("proc/sys/kernel/osrelease") {
        w.copy(&Path::new("boot").join(format!("config-{release}")))?;
    }
    w.class_links("sys/class/nvme", NVME_FILES, None)?;
    w.class_links("sys/class/block", &["dev", "size"], None)?;
    w.class_links("sys/class/infiniband", &[], Some("device"))?;
    for name in w.src.list("sys/class/iommu").unwrap_or_default() {
        // An empty `.keep` in each, so that the IOMMU survives a capture committed to
        // git, which keeps no empty directory (the lab's IOMMU fixtures lost theirs).
        let dir = Path::new("sys/class/iommu").join(name);
        w.mkdir(&dir)?;
        let keep = w.dst.join(&dir).join(".keep");
        std::fs::write(&keep, b"").map_err(|source| CaptureError::Write { path: keep, source })?;
    }
    Ok(w.report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::read_system;
    use p2pmem_model::select::check;

    fn s01() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/truth/s01_switch_cmbmix_fam15/root")
    }

    #[test]
    fn a_capture_replays_to_the_same_answers() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("cap");
        let rep = capture(&s01(), &out).unwrap();
        assert_eq!(rep.functions, 17);
        assert!(rep.problems.is_empty(), "{:?}", rep.problems);
        assert!(out
            .join("sys/bus/pci/devices/0000:03:00.0")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink());
        let a = read_system(&s01()).unwrap();
        let b = read_system(&out).unwrap();
        assert!(b.problems.is_empty(), "{:?}", b.problems);
        assert_eq!(a.rules, b.rules);
        for p in a.topology.providers() {
            for c in a.topology.functions() {
                let x = check(&a.topology, &a.rules, p.bdf, &[c.bdf]).unwrap();
                let y = check(&b.topology, &b.rules, p.bdf, &[c.bdf]).unwrap();
                assert_eq!(x, y);
            }
        }
        assert_eq!(
            std::fs::read(out.join("sys/bus/pci/devices/0000:03:00.0/p2pmem/allocate"))
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn link_speeds_are_captured_when_present() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(s01())
            .arg(&src)
            .status()
            .unwrap();
        assert!(ok.success());
        let dev =
            src.join("sys/devices/pci0000:00/0000:00:04.0/0000:01:00.0/0000:02:00.0/0000:03:00.0");
        let files = crate::link_speed::LINK_FILES;
        for (f, v) in files
            .iter()
            .zip(["8.0 GT/s PCIe\n", "4\n", "16.0 GT/s PCIe\n", "4\n"])
        {
            std::fs::write(dev.join(f), v).unwrap();
        }
        let out = d.path().join("cap");
        capture(&src, &out).unwrap();
        let sys = read_system(&out).unwrap();
        let read = crate::link_speed::read_link_speeds(&out, &sys.topology);
        let l = read.links[&"0000:03:00.0".parse().unwrap()];
        assert_eq!(l.current.map(|s| s.to_string()).as_deref(), Some("gen3x4"));
        assert_eq!(l.max.map(|s| s.to_string()).as_deref(), Some("gen4x4"));
        // The fixture's other functions have none: unknown, not an error.
        assert!(read.unknown.len() > 10);
        assert!(read.problems.is_empty(), "{:?}", read.problems);
    }

    #[test]
    fn refuses_a_non_empty_dir_and_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("keep"), "x").unwrap();
        let e = capture(&s01(), d.path()).unwrap_err();
        assert!(matches!(e, CaptureError::NotEmpty(_)), "{e}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
