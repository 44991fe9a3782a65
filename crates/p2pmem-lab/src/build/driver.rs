//! The `p2pmem_pci` kernel module (`driver/p2pmem_pci/`, Rust), built against the lab
//! kernel's own build tree and cached next to it.
//!
//! The driver's sources are embedded in this crate, so any `p2pmem` binary can build
//! them. A module is cached as `kernels/<kernel key>/driver-<source key>/p2pmem_pci.ko`,
//! where the source key hashes the files; a build runs `make -C <tree>/src O=<tree>/out
//! M=<dir> modules` (bindgen on `PATH`, which the driver's Kbuild uses to generate its
//! bindings from this exact kernel build) in a staging directory renamed into place when
//! complete (`staged.rs`); a failed build leaves its log as `driver-<key>.failed.log`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::build::cache::Cache;
use crate::build::kernel::{make, Kernel};
use crate::build::process::run_logged;
use crate::build::staged::build_staged;
use crate::build::toolchain::ensure_rust_tools;
use crate::error::{io_err, LabError, Result};
use crate::progress::Progress;

/// The module's name (`insmod p2pmem_pci.ko`, `/sys/module/p2pmem_pci`) and its PCI
/// driver's name (`/sys/bus/pci/drivers/p2pmem_pci`).
pub const MODULE_NAME: &str = "p2pmem_pci";

/// The driver's source files, by name.
pub const SOURCES: &[(&str, &str)] = &[
    (
        "Kbuild",
        include_str!("../../../../driver/p2pmem_pci/Kbuild"),
    ),
    (
        "p2pmem_pci.rs",
        include_str!("../../../../driver/p2pmem_pci/p2pmem_pci.rs"),
    ),
    (
        "logic.rs",
        include_str!("../../../../driver/p2pmem_pci/logic.rs"),
    ),
    (
        "pci_bindings.h",
        include_str!("../../../../driver/p2pmem_pci/pci_bindings.h"),
    ),
    (
        "bindgen.sh",
        include_str!("../../../../driver/p2pmem_pci/bindgen.sh"),
    ),
];

/// The kernel build tree kept with a cached kernel: `<kernel dir>/build/{src,out}`.
pub fn build_tree(kernel: &Kernel) -> PathBuf {
    kernel_dir(kernel).join("build")
}

fn kernel_dir(kernel: &Kernel) -> &Path {
    kernel.bzimage.parent().unwrap_or_else(|| Path::new("."))
}

/// Hex sha256 (first 16 digits) of the driver's file names and contents.
pub fn source_key(sources: &[(&str, &str)]) -> String {
    let mut h = Sha256::new();
    for (name, text) in sources {
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Returns the cached `p2pmem_pci.ko` for `kernel`, building it first if needed.
pub fn ensure_driver(cache: &Cache, kernel: &Kernel, progress: Progress) -> Result<PathBuf> {
    let key = source_key(SOURCES);
    let dir = kernel_dir(kernel).join(format!("driver-{key}"));
    let ko = dir.join(format!("{MODULE_NAME}.ko"));
    if ko.is_file() {
        return Ok(ko);
    }
    let tree = build_tree(kernel);
    let (src, out) = (tree.join("src"), tree.join("out"));
    if !out
        .join("rust/bindings/.bindings_generated.rs.cmd")
        .is_file()
    {
        return Err(LabError::Missing {
            what: "the lab kernel's Rust build tree",
            path: out,
            hint: "this kernel was cached without its build tree: delete its directory under kernels/ and run `p2pmem lab kernel`",
        });
    }
    let tools = ensure_rust_tools(cache, progress)?;
    // A failed build keeps its log as `driver-<key>.failed.log`.
    build_staged(
        &dir,
        &format!("{MODULE_NAME}.ko"),
        Some("build.log"),
        |work| build_in(work, &src, &out, &tools.path, progress),
    )?;
    Ok(ko)
}

/// Builds the module in the empty directory `work` (the module's `M=` directory).
fn build_in(
    work: &Path,
    src: &Path,
    out: &Path,
    path: &std::ffi::OsStr,
    progress: Progress,
) -> Result<()> {
    let started = Instant::now();
    for (name, text) in SOURCES {
        let p = work.join(name);
        fs::write(&p, text).map_err(io_err("cannot write", &p))?;
    }
    let log = work.join("build.log");
    fs::File::create(&log).map_err(io_err("cannot create", &log))?;
    progress.phase(&format!(
        "building the {MODULE_NAME} module (Rust) against {} (a few seconds)",
        out.display()
    ));
    let module_dir = format!("M={}", work.display());
    run_logged(make(src, out, path, &[&module_dir, "modules"]), &log, None)?;
    let ko = work.join(format!("{MODULE_NAME}.ko"));
    if !ko.is_file() {
        return Err(LabError::Missing {
            what: "the built module",
            path: ko,
            hint: "make reported success but produced no .ko; see build.log",
        });
    }
    progress.phase(&format!(
        "{MODULE_NAME}.ko built in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_key_covers_names_and_contents() {
        let a = source_key(&[("a.rs", "x")]);
        assert_eq!(a.len(), 16);
        assert_ne!(a, source_key(&[("b.rs", "x")]));
        assert_ne!(a, source_key(&[("a.rs", "y")]));
        assert_ne!(source_key(&[("ab", "c")]), source_key(&[("a", "bc")]));
        assert_eq!(a, source_key(&[("a.rs", "x")]));
    }

    #[test]
    fn embedded_sources_are_the_whole_driver() {
        let names: Vec<&str> = SOURCES.iter().map(|(n, _)| *n).collect();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../driver/p2pmem_pci");
        for entry in fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let is_source =
                name == "Kbuild" || [".rs", ".h", ".sh"].iter().any(|ext| name.ends_with(ext));
            // Build products of a manual `make M=` there are not sources.
            if is_source && name != "pci_bindings.rs" && !name.ends_with(".mod.c") {
                assert!(names.contains(&name.as_str()), "{name} is not embedded");
            }
        }
        let kbuild = SOURCES[0].1;
        assert!(kbuild.contains("obj-m := p2pmem_pci.o"));
    }
}
