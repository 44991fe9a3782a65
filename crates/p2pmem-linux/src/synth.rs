//! Synthetic captures at fabric scale, cloned from a real one, for tests and benchmarks.
//!
//! A real capture has a dozen PCI functions; a fabric has thousands. [`write()`] builds a
//! capture tree of any size by copying the sysfs files of a few real functions (config
//! space, class, IDs, resources, `p2pmem/`) into a larger layout: several PCI domains,
//! each with a host bridge and root ports, each root port leading to a switch whose
//! downstream ports hold one NVMe each, every other NVMe a published provider. Only the
//! bus numbers in the bridges' config headers are rewritten so that they agree with the
//! tree. The result is read like any capture (`--root DIR`).
//!
//! ```text
//! pciDDDD:00 ── DDDD:00:00.0 host bridge (clone of 0000:00:00.0)
//!            ├─ DDDD:00:RR.0 root port (0000:00:04.0)
//!            │  └─ DDDD:B:00.0 switch upstream port (0000:01:00.0)
//!            │     ├─ DDDD:B+1:00.0 downstream port (0000:02:00.0) ── DDDD:B+2:00.0 NVMe
//!            │     ├─ DDDD:B+1:01.0 downstream port ── DDDD:B+3:00.0 NVMe
//!            │     └─ ... (`ports_per_switch` of them)
//!            └─ ... (root ports dealt round-robin over the domains)
//! ```

use crate::rootfs::RootFs;
use crate::system::PCI_DEVICES;
use p2pmem_model::Bdf;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// The capture the functions are cloned from: QEMU q35 with a TI switch and CMB NVMe.
pub const TEMPLATE: &str = "fixtures/truth/s01_switch_cmbmix_fam15/root";

/// The template's functions, as paths below `sys/devices` of [`TEMPLATE`].
const HOST_BRIDGE: &str = "pci0000:00/0000:00:00.0";
const ROOT_PORT: &str = "pci0000:00/0000:00:04.0";
const UPSTREAM: &str = "pci0000:00/0000:00:04.0/0000:01:00.0";
const DOWNSTREAM: &str = "pci0000:00/0000:00:04.0/0000:01:00.0/0000:02:00.0";
/// An NVMe with a CMB published as p2pmem.
const NVME_PROVIDER: &str = "pci0000:00/0000:00:04.0/0000:01:00.0/0000:02:00.0/0000:03:00.0";
/// An NVMe without p2pmem.
const NVME_PLAIN: &str = "pci0000:00/0000:00:04.0/0000:01:00.0/0000:02:02.0/0000:05:00.0";
/// The files of `proc` the capture needs (kernel version, CPU, command line).
const PROC_FILES: [&str; 3] = ["proc/sys/kernel/osrelease", "proc/cpuinfo", "proc/cmdline"];

/// The size and layout of a synthetic capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// PCI functions in all (the last switch gets fewer ports to hit it exactly).
    pub functions: usize,
    /// PCI domains, one host bridge each.
    pub domains: u16,
    /// Downstream ports per switch, one NVMe below each.
    pub ports_per_switch: u8,
}

impl Shape {
    /// The fabric of issue 15: 4,096 functions in 10 domains, 30-port switches.
    pub const FABRIC: Self = Self {
        functions: 4096,
        domains: 10,
        ports_per_switch: 30,
    };
}

/// What [`write()`] made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Made {
    /// Every function, in the order written.
    pub functions: Vec<Bdf>,
    /// The NVMe functions with a published `p2pmem/`.
    pub providers: Vec<Bdf>,
    /// The NVMe functions without `p2pmem/`.
    pub plain_nvme: Vec<Bdf>,
}

/// Why a synthetic capture could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// Reading the template or writing the tree failed.
    #[error("{path}: {what}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The shape does not fit PCI's numbering.
    #[error("shape {0:?} does not fit: {1}")]
    Shape(Shape, &'static str),
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> SynthError + 'a {
    move |source| SynthError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// The [`TEMPLATE`] capture in this source tree (for tests, benches and examples).
pub fn template_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(TEMPLATE)
}

/// One function's files, read once from the template.
struct Template {
    /// Regular files of the function's directory: name and content.
    files: Vec<(String, Vec<u8>)>,
    /// Files of its `p2pmem/` directory, if it has one.
    p2pmem: Vec<(String, Vec<u8>)>,
}

fn read_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, SynthError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir, "cannot list"))? {
        let e = e.map_err(io_err(dir, "cannot list"))?;
        let path = e.path();
        let ft = e.file_type().map_err(io_err(&path, "cannot stat"))?;
        if ft.is_file() {
            let bytes = std::fs::read(&path).map_err(io_err(&path, "cannot read"))?;
            out.push((e.file_name().to_string_lossy().into_owned(), bytes));
        }
    }
    out.sort();
    Ok(out)
}

impl Template {
    fn read(fs: &RootFs, rel: &str) -> Result<Self, SynthError> {
        let dir = fs.path(Path::new("sys/devices").join(rel));
        let p2pmem_dir = dir.join("p2pmem");
        let p2pmem = if p2pmem_dir.is_dir() {
            read_files(&p2pmem_dir)?
        } else {
            Vec::new()
        };
        Ok(Self {
            files: read_files(&dir)?,
            p2pmem,
        })
    }
}

struct Writer<'a> {
    out: &'a Path,
    made: Made,
}

impl Writer<'_> {
    /// Write `t` as function `bdf` at `sys/devices/<parent>/<bdf>`; `buses` sets a
    /// bridge's primary, secondary and subordinate bus numbers. Returns the new path.
    fn function(
        &mut self,
        t: &Template,
        parent: &Path,
        bdf: Bdf,
        buses: Option<[u8; 3]>,
    ) -> Result<PathBuf, SynthError> {
        let rel = parent.join(bdf.to_string());
        let dir = self.out.join("sys/devices").join(&rel);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir, "cannot create"))?;
        for (name, bytes) in &t.files {
            let path = dir.join(name);
            let mut bytes = bytes.clone();
            if let (Some(b), "config") = (buses, name.as_str()) {
                if bytes.len() >= 0x1b {
                    bytes[0x18..0x1b].copy_from_slice(&b);
                }
            }
            std::fs::write(&path, bytes).map_err(io_err(&path, "cannot write"))?;
        }
        if !t.p2pmem.is_empty() {
            let p = dir.join("p2pmem");
            std::fs::create_dir_all(&p).map_err(io_err(&p, "cannot create"))?;
            for (name, bytes) in &t.p2pmem {
                let path = p.join(name);
                std::fs::write(&path, bytes).map_err(io_err(&path, "cannot write"))?;
            }
        }
        let link = self.out.join(PCI_DEVICES).join(bdf.to_string());
        let target = Path::new("../../../devices").join(&rel);
        symlink(&target, &link).map_err(io_err(&link, "cannot link"))?;
        self.made.functions.push(bdf);
        Ok(rel)
    }
}

fn bdf(domain: u16, bus: u8, device: u8) -> Bdf {
    Bdf {
        domain: u32::from(domain),
        bus,
        device,
        function: 0,
    }
}

/// Write a capture of `shape` into `out` (created; must not hold a capture already),
/// cloning the functions of the capture at `template` (see [`template_root`]).
pub fn write(template: &Path, out: &Path, shape: Shape) -> Result<Made, SynthError> {
    if shape.domains == 0 || shape.ports_per_switch == 0 || shape.ports_per_switch > 32 {
        return Err(SynthError::Shape(
            shape,
            "needs at least one domain and 1-32 ports per switch",
        ));
    }
    if shape.functions < usize::from(shape.domains) {
        return Err(SynthError::Shape(shape, "fewer functions than domains"));
    }
    let fs = RootFs::new(template);
    let host = Template::read(&fs, HOST_BRIDGE)?;
    let root_port = Template::read(&fs, ROOT_PORT)?;
    let upstream = Template::read(&fs, UPSTREAM)?;
    let downstream = Template::read(&fs, DOWNSTREAM)?;
    let provider = Template::read(&fs, NVME_PROVIDER)?;
    let plain = Template::read(&fs, NVME_PLAIN)?;

    let devices = out.join(PCI_DEVICES);
    std::fs::create_dir_all(&devices).map_err(io_err(&devices, "cannot create"))?;
    for rel in PROC_FILES {
        let (from, to) = (fs.path(rel), out.join(rel));
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir, "cannot create"))?;
        }
        std::fs::copy(&from, &to).map_err(io_err(&from, "cannot copy"))?;
    }

    let mut w = Writer {
        out,
        made: Made::default(),
    };
    let domains: Vec<PathBuf> = (0..shape.domains)
        .map(|d| PathBuf::from(format!("pci{d:04x}:00")))
        .collect();
    for (d, hb) in (0u16..).zip(&domains) {
        w.function(&host, hb, bdf(d, 0, 0), None)?;
    }
    // Per domain: the next free bus and root-port device number.
    let mut next_bus = vec![1u16; domains.len()];
    let mut next_slot = vec![1u8; domains.len()];
    let mut nvme = 0usize;
    let mut tree = 0usize;
    while w.made.functions.len() < shape.functions {
        let d = tree % domains.len();
        tree += 1;
        let left = shape.functions - w.made.functions.len();
        // A root port, an upstream port, then pairs of downstream port and NVMe.
        let ports = usize::from(shape.ports_per_switch).min(left.saturating_sub(2) / 2);
        let (bus, slot) = (next_bus[d], next_slot[d]);
        let last_bus = bus + 1 + ports as u16;
        if slot > 31 || last_bus > 255 {
            return Err(SynthError::Shape(
                shape,
                "a domain ran out of root-port slots or bus numbers",
            ));
        }
        next_bus[d] = last_bus + 1;
        next_slot[d] = slot + 1;
        let domain = d as u16;
        let (b, last) = (bus as u8, last_bus as u8);
        let rp = w.function(
            &root_port,
            &domains[d],
            bdf(domain, 0, slot),
            Some([0, b, last]),
        )?;
        if left < 2 {
            continue;
        }
        let up = w.function(&upstream, &rp, bdf(domain, b, 0), Some([b, b + 1, last]))?;
        for port in 0..ports as u8 {
            let below = b + 2 + port;
            let dp = w.function(
                &downstream,
                &up,
                bdf(domain, b + 1, port),
                Some([b + 1, below, below]),
            )?;
            let dev = bdf(domain, below, 0);
            if nvme.is_multiple_of(2) {
                w.function(&provider, &dp, dev, None)?;
                w.made.providers.push(dev);
            } else {
                w.function(&plain, &dp, dev, None)?;
                w.made.plain_nvme.push(dev);
            }
            nvme += 1;
        }
    }
    Ok(w.made)
}

#[cfg(test)]
mod tests;
