//! Shared output helpers: loading the system, JSON printing, sizes, problem reports.

use crate::Common;
use anyhow::Context;
use p2pmem_linux::import::ImportNote;
use p2pmem_linux::pci_names::PciNames;
use p2pmem_linux::system::{read_system_scoped, Scope, System};
use p2pmem_model::topology::Function;
use p2pmem_model::Bdf;
use p2pmem_wire::pci::PciName;
use std::sync::OnceLock;

/// Read the system below `--root`, reporting partial-read problems on stderr (text mode)
/// so stdout stays clean.
pub fn load(common: &Common) -> anyhow::Result<System> {
    load_scoped(common, &Scope::All)
}

/// [`load`], reading in full only the PCI functions `scope` asks for (see
/// [`read_system_scoped`]).
pub fn load_scoped(common: &Common, scope: &Scope) -> anyhow::Result<System> {
    let sys = read_system_scoped(&common.root, scope)
        .with_context(|| format!("cannot read the system below {}", common.root.display()))?;
    if !common.json {
        for p in &sys.problems {
            eprintln!("p2pmem: warning: {}: {}", p.path, p.what);
        }
    }
    if let Some(note) = &sys.import {
        // Once per run: the first load states it, every JSON document carries it.
        if IMPORTED.set(note.clone()).is_ok() && !common.json {
            eprintln!("p2pmem: note: {}", note.describe());
        }
    }
    Ok(sys)
}

/// The import note of the capture read (`p2pmem import`), once read.
static IMPORTED: OnceLock<ImportNote> = OnceLock::new();

/// A document with the import note added as `imported` (docs/json.md).
#[derive(serde::Serialize)]
struct WithImport<'a, T: ?Sized> {
    #[serde(flatten)]
    body: &'a T,
    imported: &'a ImportNote,
}

/// The PCI ID database, read once per run (from `--pci-ids`, the system's `pci.ids` or
/// the bundled snapshot). A system file that cannot be used is reported on stderr.
pub fn names(common: &Common) -> anyhow::Result<&'static PciNames> {
    static NAMES: OnceLock<PciNames> = OnceLock::new();
    if let Some(n) = NAMES.get() {
        return Ok(n);
    }
    let (n, warnings) = PciNames::load(&common.root, common.pci_ids.as_deref())
        .context("--pci-ids: cannot use this PCI ID database")?;
    for w in warnings {
        eprintln!("p2pmem: warning: {w}");
    }
    Ok(NAMES.get_or_init(|| n))
}

/// lspci -nn's words for a function: `Red Hat, Inc. QEMU NVM Express Controller
/// [1b36:0010]`.
pub fn lspci_name(names: &PciNames, f: &Function) -> String {
    format!(
        "{} [{:04x}:{:04x}]",
        names.describe(f.vendor, f.device),
        f.vendor,
        f.device
    )
}

/// The `--json` names of a function (none when `bdf` is not in the topology).
pub fn pci_name(sys: &System, names: &PciNames, bdf: Bdf) -> Option<PciName> {
    let f = sys.topology.get(&bdf)?;
    Some(PciName {
        bdf,
        vendor: format!("{:04x}", f.vendor),
        device: format!("{:04x}", f.device),
        vendor_name: names.vendor(f.vendor).map(str::to_string),
        device_name: names.device(f.vendor, f.device).map(str::to_string),
    })
}

/// Print one JSON Lines document on stdout: `{"schema":1,"document":KIND,...v's fields}`
/// on one line (the convention of every `--json` output; see docs/json.md).
pub fn print_json<T: serde::Serialize>(document: &str, v: &T) -> anyhow::Result<()> {
    let line = match IMPORTED.get() {
        Some(imported) => p2pmem_wire::doc::line(document, &WithImport { body: v, imported }),
        None => p2pmem_wire::doc::line(document, v),
    }
    .with_context(|| format!("serialising the {document} document"))?;
    println!("{line}");
    Ok(())
}

/// Bytes for humans: `16.0 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// An optional size for humans.
pub fn opt_size(bytes: Option<u64>) -> String {
    bytes.map(size).unwrap_or_else(|| "?".to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::size(512), "512 B");
        assert_eq!(super::size(16 << 20), "16.0 MiB");
        assert_eq!(super::size((16 << 20) - (64 << 10)), "15.9 MiB");
    }
}
