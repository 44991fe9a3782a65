//! `p2pmem import lspci FILE DIR`: a capture directory made from a bug report's
//! `lspci -D -vvv -xxxx` output, which every command reads with `--root DIR`.
//!
//! lspci gives each function's address and config space; the tree (which bus is behind
//! which bridge) follows from the bridges' secondary bus numbers. What lspci cannot tell
//! (the kernel version, the CPU, which functions publish p2pmem) comes from the caller's
//! [`Facts`], and a note at DIR's top ([`NOTE_FILE`]) says what was given and what is
//! unknown, so that every answer made from the capture can say so.

pub mod lspci_text;

use crate::rootfs::FsError;
use crate::system::PCI_DEVICES;
use lspci_text::{Lspci, LspciError, LspciForm, LspciFunction};
use p2pmem_model::{Bdf, KernelVersion};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

/// The note an import leaves at the top of the capture.
pub const NOTE_FILE: &str = "p2pmem-import.json";

/// What the caller knows that lspci does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The kernel release (`6.12.117`), else unknown.
    pub kernel: Option<String>,
    /// CPU 0's vendor and family (`AuthenticAMD`, 23), else unknown.
    pub cpu: Option<(String, u32)>,
    /// Functions publishing p2pmem, with the size when known.
    pub providers: Vec<(Bdf, Option<u64>)>,
    /// Where the text came from, for the note (a file name).
    pub source: Option<String>,
}

/// A provider as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GivenProvider {
    /// Its address.
    pub bdf: String,
    /// Its p2pmem size, when given.
    pub size: Option<u64>,
}

/// The note at the top of an imported capture: what it was made from and what was
/// given or unknown (docs/json.md, `imported`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportNote {
    /// The tool whose output it was made from: `lspci`.
    pub from: String,
    /// Which form of its output.
    pub form: LspciForm,
    /// The file it was read from, when named.
    pub source: Option<String>,
    /// The kernel release given (`--kernel`); `None`: unknown (newest rules assumed).
    pub kernel: Option<String>,
    /// CPU 0's vendor given (`--cpu`); `None`: unknown.
    pub cpu_vendor: Option<String>,
    /// CPU 0's family given (`--cpu`).
    pub cpu_family: Option<u32>,
    /// The providers given (`--provider`); nothing else publishes p2pmem here.
    pub providers: Vec<GivenProvider>,
    /// PCI Express functions whose dump stopped before the extended config space they
    /// have (`-xxx` or less): their ACS is unknown.
    pub extended_config_unknown: Vec<String>,
}

impl ImportNote {
    /// One line for humans: `made from lspci output (...): kernel version given as ...`.
    pub fn describe(&self) -> String {
        let kernel = match &self.kernel {
            Some(k) => format!("kernel version given as {k}"),
            None => "kernel version unknown (the newest rules assumed)".into(),
        };
        let cpu = match (&self.cpu_vendor, self.cpu_family) {
            (Some(v), Some(f)) => format!("CPU given as {v} family {f}"),
            _ => "CPU unknown (not an AMD Zen: the host-bridge whitelist applies)".into(),
        };
        let providers = if self.providers.is_empty() {
            "no providers (none given by --provider)".to_string()
        } else {
            let list: Vec<String> = self
                .providers
                .iter()
                .map(|p| match p.size {
                    Some(s) => format!("{}={s}", p.bdf),
                    None => format!("{} (size unknown)", p.bdf),
                })
                .collect();
            format!("providers given by --provider: {}", list.join(", "))
        };
        format!(
            "made from {} output, {}: {kernel}, {cpu}, {providers}",
            self.from,
            self.form.describe()
        )
    }
}

/// Why an import failed. Nothing is written unless the text parsed and DIR was new or
/// empty.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The text is not lspci output it can read.
    #[error("{}", source_name.as_deref().unwrap_or("lspci output"))]
    Parse {
        /// The file, when named.
        source_name: Option<String>,
        /// The line and what is wrong.
        #[source]
        source: LspciError,
    },
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] FsError),
    /// A fact given does not fit (a provider not in the output, a bad kernel version).
    #[error("{0}")]
    Facts(String),
    /// DIR exists and is not empty.
    #[error("{0} exists and is not empty: choose a new directory (nothing was written)")]
    NotEmpty(PathBuf),
    /// Writing DIR failed.
    #[error("{path}: cannot write")]
    Write {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What an import wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// The directory written.
    pub dir: PathBuf,
    /// PCI functions written.
    pub functions: usize,
    /// The note written at its top.
    pub note: ImportNote,
}

/// Read lspci output from `file` (bounded: [`p2pmem_model::limits::LSPCI_TEXT`]) and
/// import it into `dir`.
pub fn lspci_file(file: &Path, facts: &Facts, dir: &Path) -> Result<ImportReport, ImportError> {
    let bytes = crate::bounded::read_file(file, p2pmem_model::limits::LSPCI_TEXT)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut facts = facts.clone();
    if facts.source.is_none() {
        facts.source = Some(file.display().to_string());
    }
    lspci(&text, &facts, dir)
}

/// Import lspci's `text` into the new or empty directory `dir`.
pub fn lspci(text: &str, facts: &Facts, dir: &Path) -> Result<ImportReport, ImportError> {
    let parsed = lspci_text::parse(text).map_err(|source| ImportError::Parse {
        source_name: facts.source.clone(),
        source,
    })?;
    if let Some(k) = &facts.kernel {
        k.parse::<KernelVersion>()
            .map_err(|e| ImportError::Facts(format!("--kernel {k}: {e}")))?;
    }
    let listed: HashSet<Bdf> = parsed.functions.iter().map(|(b, _)| *b).collect();
    for (p, _) in &facts.providers {
        if !listed.contains(p) {
            return Err(ImportError::Facts(format!(
                "--provider {p}: no such function in the lspci output"
            )));
        }
    }
    let paths = device_paths(&parsed);
    if let Ok(mut rd) = std::fs::read_dir(dir) {
        if rd.next().is_some() {
            return Err(ImportError::NotEmpty(dir.to_path_buf()));
        }
    }
    let w = Writer { dst: dir };
    w.mkdir(Path::new(PCI_DEVICES))?;
    let mut unknown_ext = Vec::new();
    for (bdf, f) in &parsed.functions {
        let Some(rel) = paths.get(bdf) else { continue };
        w.function(rel, f)?;
        if needs_extended(&parsed.form, &f.config) {
            unknown_ext.push(bdf.to_string());
        }
        if let Some((_, size)) = facts.providers.iter().find(|(p, _)| p == bdf) {
            let p2p = rel.join("p2pmem");
            w.mkdir(&p2p)?;
            if let Some(s) = size {
                w.write(&p2p.join("size"), format!("{s}\n"))?;
                w.write(&p2p.join("available"), format!("{s}\n"))?;
            }
            w.write(&p2p.join("published"), "1\n")?;
            w.write(&p2p.join("allocate"), "")?;
        }
        w.link(&Path::new(PCI_DEVICES).join(bdf.to_string()), rel)?;
    }
    if let Some(k) = &facts.kernel {
        w.write(Path::new("proc/sys/kernel/osrelease"), format!("{k}\n"))?;
    }
    if let Some((vendor, family)) = &facts.cpu {
        w.write(
            Path::new("proc/cpuinfo"),
            format!("processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\n\n"),
        )?;
    }
    let note = ImportNote {
        from: "lspci".into(),
        form: parsed.form,
        source: facts.source.clone(),
        kernel: facts.kernel.clone(),
        cpu_vendor: facts.cpu.as_ref().map(|c| c.0.clone()),
        cpu_family: facts.cpu.as_ref().map(|c| c.1),
        providers: facts
            .providers
            .iter()
            .map(|(b, s)| GivenProvider {
                bdf: b.to_string(),
                size: *s,
            })
            .collect(),
        extended_config_unknown: unknown_ext,
    };
    let json = serde_json::to_string_pretty(&note).map_err(|e| ImportError::Write {
        path: dir.join(NOTE_FILE),
        source: io::Error::other(e),
    })?;
    w.write(Path::new(NOTE_FILE), json + "\n")?;
    Ok(ImportReport {
        dir: dir.to_path_buf(),
        functions: paths.len(),
        note,
    })
}

/// Does this function have extended config space the dump did not show? A PCI Express
/// function (it has the PCIe capability) has 4096 bytes; a dump of 256 or fewer leaves
/// its extended capabilities, ACS among them, unknown. (A dump of 64 bytes is short
/// enough for the reader to say so by itself; it is listed all the same.) In a `-xxxx`
/// dump (some function shows 4096 bytes), a function of 256 is one whose extended space
/// the kernel does not expose either, as sysfs would show it: none is listed.
fn needs_extended(form: &LspciForm, config: &[u8]) -> bool {
    let full = matches!(form, LspciForm::Dump { bytes } if *bytes >= 4096);
    if config.len() > 0x100 || *form == LspciForm::Tree || (full && config.len() == 0x100) {
        return false;
    }
    if config.len() < 0x100 {
        return true;
    }
    let cs = p2pmem_model::config_space::ConfigSpace::new(config, config.len());
    cs.is_ok_and(|c| c.pcie_cap_offset().is_some())
}

/// Each function's directory below the root: `sys/devices/pci0000:00/0000:00:1c.0/
/// 0000:02:00.0`. A function's parent is the bridge whose secondary bus is its bus
/// (config space for a dump, the drawing for a tree); a bus with no such bridge is a
/// root bus of its own host bridge.
fn device_paths(l: &Lspci) -> BTreeMap<Bdf, PathBuf> {
    let mut bridge_of: BTreeMap<(u32, u8), Bdf> = BTreeMap::new();
    let mut parent: BTreeMap<Bdf, Bdf> = BTreeMap::new();
    match l.form {
        LspciForm::Dump { .. } => {
            for (bdf, f) in &l.functions {
                if let Some(sec) = secondary_bus(f) {
                    // The first bridge to claim a bus keeps it. Enumeration numbers a
                    // bridge's secondary bus above its own; an unconfigured bridge (0)
                    // or a corrupt dump claims nothing.
                    if sec > bdf.bus {
                        bridge_of.entry((bdf.domain, sec)).or_insert(*bdf);
                    }
                }
            }
            for (bdf, _) in &l.functions {
                if let Some(b) = bridge_of.get(&(bdf.domain, bdf.bus)) {
                    parent.insert(*bdf, *b);
                }
            }
        }
        LspciForm::Tree => {
            for (bdf, f) in &l.functions {
                if let Some(p) = f.parent {
                    parent.insert(*bdf, p);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for (bdf, _) in &l.functions {
        let mut chain = vec![*bdf];
        let mut seen = HashSet::from([*bdf]);
        let mut at = *bdf;
        // A loop (bridges claiming each other's buses) ends the chain where it closes.
        while let Some(p) = parent.get(&at) {
            if !seen.insert(*p) {
                break;
            }
            chain.push(*p);
            at = *p;
        }
        let top = chain.last().copied().unwrap_or(*bdf);
        let mut path =
            PathBuf::from("sys/devices").join(format!("pci{:04x}:{:02x}", top.domain, top.bus));
        for b in chain.iter().rev() {
            path.push(b.to_string());
        }
        out.insert(*bdf, path);
    }
    out
}

/// A bridge's secondary bus (header type 1 or 2, byte 0x19).
fn secondary_bus(f: &LspciFunction) -> Option<u8> {
    let ht = f.config.get(0x0e)? & 0x7f;
    (ht == 1 || ht == 2).then(|| f.config.get(0x19).copied())?
}

struct Writer<'a> {
    dst: &'a Path,
}

impl Writer<'_> {
    fn mkdir(&self, rel: &Path) -> Result<(), ImportError> {
        let p = self.dst.join(rel);
        std::fs::create_dir_all(&p).map_err(|source| ImportError::Write { path: p, source })
    }

    fn write(&self, rel: &Path, content: impl AsRef<[u8]>) -> Result<(), ImportError> {
        if let Some(parent) = rel.parent() {
            self.mkdir(parent)?;
        }
        let p = self.dst.join(rel);
        std::fs::write(&p, content).map_err(|source| ImportError::Write { path: p, source })
    }

    /// `link` -> `target` (both relative to DIR), as a relative symlink.
    fn link(&self, link: &Path, target: &Path) -> Result<(), ImportError> {
        let parent = link.parent().unwrap_or(Path::new(""));
        self.mkdir(parent)?;
        let mut rel = PathBuf::new();
        for _ in parent.components() {
            rel.push("..");
        }
        rel.push(target);
        let p = self.dst.join(link);
        std::os::unix::fs::symlink(&rel, &p)
            .map_err(|source| ImportError::Write { path: p, source })
    }

    /// A function's files, as sysfs has them, from what lspci showed.
    fn function(&self, rel: &Path, f: &LspciFunction) -> Result<(), ImportError> {
        self.mkdir(rel)?;
        let c = &f.config;
        if !c.is_empty() {
            self.write(&rel.join("config"), c)?;
            let u16_at = |o: usize| u16::from_le_bytes([c[o], c[o + 1]]);
            self.write(&rel.join("vendor"), format!("0x{:04x}\n", u16_at(0)))?;
            self.write(&rel.join("device"), format!("0x{:04x}\n", u16_at(2)))?;
            let class = u32::from(c[0x09]) | u32::from(c[0x0a]) << 8 | u32::from(c[0x0b]) << 16;
            self.write(&rel.join("class"), format!("0x{class:06x}\n"))?;
            self.write(&rel.join("revision"), format!("0x{:02x}\n", c[0x08]))?;
            if c[0x0e] & 0x7f == 0 {
                self.write(
                    &rel.join("subsystem_vendor"),
                    format!("0x{:04x}\n", u16_at(0x2c)),
                )?;
                self.write(
                    &rel.join("subsystem_device"),
                    format!("0x{:04x}\n", u16_at(0x2e)),
                )?;
            }
        } else if let Some((v, d)) = f.ids {
            self.write(&rel.join("vendor"), format!("0x{v:04x}\n"))?;
            self.write(&rel.join("device"), format!("0x{d:04x}\n"))?;
        }
        if !f.regions.is_empty() {
            self.write(&rel.join("resource"), resource(&f.regions))?;
        }
        if let Some(d) = &f.driver {
            let drv = Path::new("sys/bus/pci/drivers").join(d);
            self.mkdir(&drv)?;
            self.link(&rel.join("driver"), &drv)?;
        }
        Ok(())
    }
}

/// The `resource` file: seven lines (six BARs and the ROM) of `start end flags`, the
/// regions lspci did not show as zeros.
fn resource(regions: &[lspci_text::Region]) -> String {
    const IORESOURCE_IO: u64 = 0x100;
    const IORESOURCE_MEM: u64 = 0x200;
    const IORESOURCE_PREFETCH: u64 = 0x2000;
    const IORESOURCE_MEM_64: u64 = 0x0010_0000;
    let mut out = String::new();
    for i in 0..7 {
        let line = match regions.iter().find(|r| r.index == i && r.size > 0) {
            Some(r) => {
                let mut flags = if r.memory {
                    IORESOURCE_MEM
                } else {
                    IORESOURCE_IO
                };
                if r.prefetchable {
                    flags |= IORESOURCE_PREFETCH;
                }
                if r.wide {
                    flags |= IORESOURCE_MEM_64;
                }
                let end = r.start.saturating_add(r.size - 1);
                format!("0x{:016x} 0x{end:016x} 0x{flags:016x}\n", r.start)
            }
            None => format!("0x{0:016x} 0x{0:016x} 0x{0:016x}\n", 0),
        };
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests;
