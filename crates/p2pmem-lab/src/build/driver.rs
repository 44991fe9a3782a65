//! The `p2pmem_pci` kernel module (`driver/p2pmem_pci/`, Rust), built against the lab
//! kernel's own build tree and cached next to it, or the reason it is not built.
//!
//! The driver is written for the Rust support of the lines in [`DRIVER_LINES`] (6.12,
//! on a raw `pci_driver`, and 7.3, on the kernel crate's PCI driver abstractions; its
//! Kbuild picks the glue from the kernel's version); the lab's fragment enables Rust
//! there only. For another line, a kernel without
//! `CONFIG_RUST=y`, or a prebuilt image given without its tree, the answer is
//! [`Driver::NotBuilt`] with the reason, and the lab runs without the module.
//!
//! The driver's sources are embedded in this crate, so any `p2pmem` binary can build
//! them. A module is cached as `kernels/<kernel key>/driver-<source key>/p2pmem_pci.ko`,
//! where the source key hashes the files; a build runs `make -C <src> [O=<out>]
//! M=<dir> modules` (bindgen on `PATH`, which the driver's Kbuild uses to generate its
//! bindings from this exact kernel build) in a staging directory renamed into place when
//! complete (`staged.rs`); a failed build leaves its log as `driver-<key>.failed.log`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::build::cache::Cache;
use crate::build::fragment::config_has;
use crate::build::kernel::{make, Kernel, ModuleTree};
use crate::build::lines::Line;
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
    (
        "v6_12.rs",
        include_str!("../../../../driver/p2pmem_pci/v6_12.rs"),
    ),
    ("v7.rs", include_str!("../../../../driver/p2pmem_pci/v7.rs")),
];

/// The lines whose Rust support the driver's sources are written for: 6.12 (`v6_12.rs`)
/// and 7.3 (`v7.rs`). 6.1's Rust has no PCI and wants a rustc and bindgen too old for
/// the rest; 7.2 is built without Rust (one 7.x Rust kernel proves the 7.x glue).
pub const DRIVER_LINES: &[Line] = &[Line::new(6, 12), Line::new(7, 3)];

/// The `p2pmem_pci` module of a kernel, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Driver {
    /// The module file.
    Built(PathBuf),
    /// Why it is not built: `p2pmem_pci is not built for kernel 7.3: ...`.
    NotBuilt(String),
}

impl Driver {
    /// The module file, when built.
    pub fn module(&self) -> Option<&Path> {
        match self {
            Driver::Built(p) => Some(p),
            Driver::NotBuilt(_) => None,
        }
    }

    /// Why it is not built, when it is not.
    pub fn not_built(&self) -> Option<&str> {
        match self {
            Driver::Built(_) => None,
            Driver::NotBuilt(why) => Some(why),
        }
    }
}

/// The tree to build the driver in for a kernel of `line` (with or without
/// `CONFIG_RUST`, with or without a build tree), or why it cannot be built.
pub fn buildable(line: Line, rust: bool, tree: Option<&ModuleTree>) -> Result<&ModuleTree, String> {
    let head = format!("{MODULE_NAME} is not built for kernel {line}");
    let lines = DRIVER_LINES
        .iter()
        .map(Line::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    match tree {
        _ if !DRIVER_LINES.contains(&line) => Err(format!(
            "{head}: the driver is written for the Rust support of Linux {lines} only (the lab builds other lines without Rust)"
        )),
        _ if !rust => Err(format!("{head}: the kernel's config has no CONFIG_RUST=y")),
        None => Err(format!(
            "{head}: a prebuilt --kernel-image needs the tree it was built in (--kernel-source DIR) to build modules against"
        )),
        Some(tree) => Ok(tree),
    }
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

/// Returns the cached `p2pmem_pci.ko` for `kernel`, building it first if needed, or
/// why it is not built for that kernel.
pub fn ensure_driver(cache: &Cache, kernel: &Kernel, progress: Progress) -> Result<Driver> {
    let config =
        fs::read_to_string(&kernel.config).map_err(io_err("cannot read", &kernel.config))?;
    let rust = config_has(&config, "CONFIG_RUST");
    let tree = match buildable(kernel.line, rust, kernel.modules.as_ref()) {
        Ok(tree) => tree,
        Err(why) => return Ok(Driver::NotBuilt(why)),
    };
    let key = source_key(SOURCES);
    let dir = kernel.dir.join(format!("driver-{key}"));
    let ko = dir.join(format!("{MODULE_NAME}.ko"));
    if ko.is_file() {
        return Ok(Driver::Built(ko));
    }
    let generated = tree
        .objects()
        .join("rust/bindings/.bindings_generated.rs.cmd");
    if !generated.is_file() {
        return Err(LabError::Missing {
            what: "the kernel's Rust build tree",
            path: generated,
            hint: "a lab kernel cached without its build tree: delete its directory under kernels/ and run `p2pmem lab kernel`; a user's tree: build it (with CONFIG_RUST=y) first",
        });
    }
    let tools = ensure_rust_tools(cache, progress)?;
    // A failed build keeps its log as `driver-<key>.failed.log`.
    build_staged(
        &dir,
        &format!("{MODULE_NAME}.ko"),
        Some("build.log"),
        |work| build_in(work, tree, &tools.path, progress),
    )?;
    Ok(Driver::Built(ko))
}

/// Builds the module in the empty directory `work` (the module's `M=` directory).
fn build_in(
    work: &Path,
    tree: &ModuleTree,
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
        tree.objects().display()
    ));
    let module_dir = format!("M={}", work.display());
    run_logged(
        make(
            &tree.src,
            tree.out.as_deref(),
            path,
            &[&module_dir, "modules"],
        ),
        &log,
        None,
    )?;
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
    fn the_driver_is_built_only_where_it_can_be() {
        let l612 = Line::new(6, 12);
        let tree = ModuleTree {
            src: "/s".into(),
            out: None,
        };
        assert_eq!(buildable(l612, true, Some(&tree)), Ok(&tree));
        assert_eq!(buildable(Line::new(7, 3), true, Some(&tree)), Ok(&tree));
        for (line, rust, tree, why) in [
            ("7.2", true, Some(&tree), "for kernel 7.2: the driver is written for the Rust support of Linux 6.12, 7.3 only"),
            ("6.1", false, Some(&tree), "for kernel 6.1: the driver is written"),
            ("6.12", false, Some(&tree), "for kernel 6.12: the kernel's config has no CONFIG_RUST=y"),
            ("6.12", true, None, "for kernel 6.12: a prebuilt --kernel-image needs the tree it was built in (--kernel-source DIR)"),
        ] {
            let line = Line::parse(line).unwrap();
            let e = buildable(line, rust, tree).unwrap_err();
            assert!(e.starts_with("p2pmem_pci is not built "), "{e}");
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn the_fragment_enables_rust_exactly_where_the_driver_builds() {
        use crate::build::fragment::{Fragment, Requirement, FRAGMENT};
        let f = Fragment::parse(FRAGMENT).unwrap();
        for pin in crate::build::lines::PINS {
            let rust = f
                .for_line(pin.line)
                .unwrap()
                .contains(&Requirement::Set("CONFIG_RUST=y".into()));
            assert_eq!(rust, DRIVER_LINES.contains(&pin.line), "{}", pin.line);
        }
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
