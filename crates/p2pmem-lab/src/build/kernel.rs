//! The lab kernel: Debian's `linux-source-6.12` built with `tinyconfig` plus the fragment
//! `kernel/p2pmem-lab.config` (P2PDMA, NVMe, ACPI/MMCONFIG, no IOMMU, modules and Rust).
//!
//! A kernel is cached under `kernels/<key>/bzImage`, where the key hashes the source
//! tarball's identity (size and first MiB), the fragment text, [`RECIPE_VERSION`] and the
//! `rustc` version. A build runs in a staging directory `kernels/<key>.tmp-<pid>-<n>/` and
//! is renamed into place only when complete (`staged.rs`), so an interrupted build never
//! leaves a half kernel behind; a failed one leaves its log as `kernels/<key>.failed.log`.
//! The build tree is kept, slimmed to what module builds read, as `kernels/<key>/build/`
//! (`src/`, `out/`) for the `p2pmem_pci` module (`driver.rs`).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::build::cache::Cache;
use crate::build::process::run_logged;
use crate::build::staged::build_staged;
use crate::error::{io_err, LabError, Result};
use crate::progress::Progress;

/// The config fragment merged on top of `make tinyconfig`.
pub const FRAGMENT: &str = include_str!("../../kernel/p2pmem-lab.config");

/// Bumped whenever the build steps change in a way that changes the kernel.
pub const RECIPE_VERSION: &str = "p2pmem-lab-kernel-recipe-2";

/// Where Debian's `linux-source-6.12` package puts the source.
pub const DEFAULT_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";

/// Lines `make bzImage modules` prints for a clean build of this config (measured), for
/// the percentage in the heartbeat.
const EXPECTED_BUILD_LINES: usize = 2150;

/// What to build.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    /// The kernel source tarball (`.tar.xz`).
    pub tarball: PathBuf,
    /// The config fragment text.
    pub fragment: String,
}

impl Default for KernelSpec {
    fn default() -> Self {
        Self {
            tarball: PathBuf::from(DEFAULT_TARBALL),
            fragment: FRAGMENT.to_string(),
        }
    }
}

/// A built kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The `bzImage`.
    pub bzimage: PathBuf,
    /// The `.config` it was built with.
    pub config: PathBuf,
    /// The cache key.
    pub key: String,
    /// True when this call built it, false when it came from the cache.
    pub built: bool,
}

/// One line of the fragment that must hold in the final `.config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `CONFIG_X=value` must appear verbatim.
    Set(String),
    /// `# CONFIG_X is not set`: `CONFIG_X=` must not appear.
    Unset(String),
}

/// The requirements a fragment states, in order.
pub fn requirements(fragment: &str) -> Vec<Requirement> {
    fragment
        .lines()
        .map(str::trim)
        .filter_map(|l| {
            if let Some(rest) = l.strip_prefix("# ") {
                let sym = rest.strip_suffix(" is not set")?;
                sym.starts_with("CONFIG_")
                    .then(|| Requirement::Unset(sym.to_string()))
            } else if l.starts_with("CONFIG_") && l.contains('=') {
                Some(Requirement::Set(l.to_string()))
            } else {
                None
            }
        })
        .collect()
}

fn symbol(req: &Requirement) -> &str {
    match req {
        Requirement::Set(l) => l.split('=').next().unwrap_or(l),
        Requirement::Unset(s) => s,
    }
}

/// Merges the fragment into a `.config` text: every symbol the fragment mentions is
/// dropped from `base` and the fragment's lines appended (what `merge_config.sh` does).
pub fn merge_config(base: &str, fragment: &str) -> String {
    let reqs = requirements(fragment);
    let syms: std::collections::HashSet<&str> = reqs.iter().map(symbol).collect();
    let mut out = String::with_capacity(base.len() + fragment.len());
    for line in base.lines() {
        let t = line.trim();
        let sym = if let Some(rest) = t.strip_prefix("# ") {
            rest.strip_suffix(" is not set")
        } else {
            t.split('=').next().filter(|_| t.contains('='))
        };
        if sym.is_some_and(|s| syms.contains(s)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    for req in &reqs {
        match req {
            Requirement::Set(l) => out.push_str(l),
            Requirement::Unset(s) => out.push_str(&format!("# {s} is not set")),
        }
        out.push('\n');
    }
    out
}

/// The first requirement that `config` does not satisfy.
pub fn first_unmet<'a>(config: &str, reqs: &'a [Requirement]) -> Option<&'a Requirement> {
    let lines: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    reqs.iter().find(|req| match req {
        Requirement::Set(l) => !lines.contains(l.as_str()),
        Requirement::Unset(s) => {
            let prefix = format!("{s}=");
            lines.iter().any(|l| l.starts_with(&prefix))
        }
    })
}

/// The cache key of a spec: hex sha256 (first 16 digits) of the recipe version, the
/// tarball's size and first MiB, the fragment and the toolchain (`rustc --version`, whose
/// Rust metadata modules must match).
pub fn cache_key(spec: &KernelSpec, toolchain: &str) -> Result<String> {
    let mut file = File::open(&spec.tarball).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            LabError::Missing {
                what: "kernel source tarball",
                path: spec.tarball.clone(),
                hint: "install the Debian package linux-source-6.12 (scripts/setup-host)",
            }
        } else {
            io_err("cannot open", &spec.tarball)(source)
        }
    })?;
    let size = file
        .metadata()
        .map_err(io_err("cannot stat", &spec.tarball))?
        .len();
    let mut head = Vec::with_capacity(1 << 20);
    (&mut file)
        .take(1 << 20)
        .read_to_end(&mut head)
        .map_err(io_err("cannot read", &spec.tarball))?;
    Ok(key_of(size, &head, &spec.fragment, toolchain))
}

fn key_of(size: u64, head: &[u8], fragment: &str, toolchain: &str) -> String {
    let mut h = Sha256::new();
    h.update(RECIPE_VERSION.as_bytes());
    h.update(b"\0");
    h.update(size.to_le_bytes());
    h.update(Sha256::digest(head));
    h.update(fragment.as_bytes());
    h.update(b"\0");
    h.update(toolchain.as_bytes());
    let digest = h.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Returns the cached kernel for `spec`, building it first if needed.
pub fn ensure_kernel(cache: &Cache, spec: &KernelSpec, progress: Progress) -> Result<Kernel> {
    let toolchain = crate::build::toolchain::rustc_version(cache)?;
    let key = cache_key(spec, &toolchain)?;
    let dir = cache.kernels().join(&key);
    let bzimage = dir.join("bzImage");
    if bzimage.is_file() {
        progress.phase(&format!("kernel {key}: cached at {}", bzimage.display()));
        return Ok(Kernel {
            bzimage,
            config: dir.join("config"),
            key,
            built: false,
        });
    }
    let tools = crate::build::toolchain::ensure_rust_tools(cache, progress)?;
    let started = Instant::now();
    // A failed build keeps its log as `kernels/<key>.failed.log` and drops the (large)
    // tree.
    build_staged(&dir, "bzImage", Some("build.log"), |work| {
        build_in(work, spec, &key, &tools.path, progress)
    })?;
    progress.phase(&format!(
        "kernel {key}: built in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        bzimage.display()
    ));
    Ok(Kernel {
        bzimage,
        config: dir.join("config"),
        key,
        built: true,
    })
}

/// Builds the kernel in the empty directory `work`: the tree in `src/` and `out/` and the
/// log in `build.log`, then the cache entry's files: `bzImage`, `config` and the slimmed
/// tree as `build/`.
fn build_in(
    work: &Path,
    spec: &KernelSpec,
    key: &str,
    path: &OsStr,
    progress: Progress,
) -> Result<()> {
    let src = work.join("src");
    let out = work.join("out");
    fs::create_dir_all(&src).map_err(io_err("cannot create", &src))?;
    fs::create_dir_all(&out).map_err(io_err("cannot create", &out))?;
    let log = work.join("build.log");
    File::create(&log).map_err(io_err("cannot create", &log))?;

    progress.phase(&format!(
        "kernel {key}: unpacking {} (about 10 s)",
        spec.tarball.display()
    ));
    let mut tar = Command::new("tar");
    tar.arg("-xJf")
        .arg(&spec.tarball)
        .arg("-C")
        .arg(&src)
        .arg("--strip-components=1");
    run_logged(tar, &log, None)?;

    progress.phase(&format!(
        "kernel {key}: configuring (tinyconfig + fragment)"
    ));
    run_logged(make(&src, &out, path, &["tinyconfig"]), &log, None)?;
    // Fails with the reason (rustc, rust-src, bindgen or libclang) before olddefconfig
    // would silently drop CONFIG_RUST.
    run_logged(make(&src, &out, path, &["rustavailable"]), &log, None)?;
    let config = out.join(".config");
    let base = fs::read_to_string(&config).map_err(io_err("cannot read", &config))?;
    fs::write(&config, merge_config(&base, &spec.fragment))
        .map_err(io_err("cannot write", &config))?;
    run_logged(make(&src, &out, path, &["olddefconfig"]), &log, None)?;
    let final_config = fs::read_to_string(&config).map_err(io_err("cannot read", &config))?;
    if let Some(req) = first_unmet(&final_config, &requirements(&spec.fragment)) {
        let option = match req {
            Requirement::Set(l) => l.clone(),
            Requirement::Unset(s) => format!("# {s} is not set"),
        };
        return Err(LabError::KernelOption {
            option,
            config: config.clone(),
        });
    }

    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    progress.phase(&format!(
        "kernel {key}: building bzImage and modules (C and Rust) with make -j{jobs} (about 5-9 min on 2 cores; log {})",
        log.display()
    ));
    let j = format!("-j{jobs}");
    let heartbeat = |n: usize, elapsed: Duration| {
        let pct = (n * 100 / EXPECTED_BUILD_LINES).min(99);
        progress.phase(&format!(
            "kernel {key}: building: {n} steps, ~{pct}%, {:.0} s",
            elapsed.as_secs_f64()
        ));
    };
    run_logged(
        make(&src, &out, path, &[j.as_str(), "bzImage", "modules"]),
        &log,
        Some(&heartbeat),
    )?;

    let built = out.join("arch/x86/boot/bzImage");
    fs::copy(&built, work.join("bzImage")).map_err(io_err("cannot copy", &built))?;
    fs::copy(&config, work.join("config")).map_err(io_err("cannot copy", &config))?;
    keep_build_tree(&src, &out, &work.join("build"))
}

/// Top-level entries of the source tree that external module builds read (`make -C src
/// O=out M=dir`): the makefiles, `scripts/`, headers, `rust/` and `arch/x86`. The rest
/// (1.6 GB, mostly `drivers/`) is deleted once the kernel is built.
const KEEP_IN_SOURCE: &[&str] = &[
    "Makefile", "Kbuild", "Kconfig", "arch", "include", "rust", "scripts",
];

/// Moves the built tree to `dest` (`src/` and `out/`), slimmed to what module builds
/// need. Paths recorded inside it name the old location; module builds pass `-C` and
/// `O=` with the new one, and `driver/p2pmem_pci/bindgen.sh` rewrites the recorded
/// source path.
fn keep_build_tree(src: &Path, out: &Path, dest: &Path) -> Result<()> {
    for entry in fs::read_dir(src).map_err(io_err("cannot list", src))? {
        let entry = entry.map_err(io_err("cannot list", src))?;
        let name = entry.file_name();
        if !KEEP_IN_SOURCE.iter().any(|k| name == *k) {
            remove_any(&entry.path())?;
        }
    }
    let arch = src.join("arch");
    for entry in fs::read_dir(&arch).map_err(io_err("cannot list", &arch))? {
        let entry = entry.map_err(io_err("cannot list", &arch))?;
        if entry.file_name() != "x86" {
            remove_any(&entry.path())?;
        }
    }
    fs::create_dir_all(dest).map_err(io_err("cannot create", dest))?;
    fs::rename(src, dest.join("src")).map_err(io_err("cannot move", src))?;
    fs::rename(out, dest.join("out")).map_err(io_err("cannot move", out))?;
    Ok(())
}

fn remove_any(path: &Path) -> Result<()> {
    let result = if path.is_dir() && !path.is_symlink() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    result.map_err(io_err("cannot remove", path))
}

/// `make -C src O=out TARGETS...` with `PATH` (the lab's Rust tools first) and a fixed
/// build user and host, as every kbuild call of the lab runs it.
pub(crate) fn make(src: &Path, out: &Path, path: &OsStr, targets: &[&str]) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(src)
        .arg(format!("O={}", out.display()))
        .args(targets)
        .env("PATH", path)
        .env("KBUILD_BUILD_USER", "p2pmem")
        .env("KBUILD_BUILD_HOST", "lab");
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_requires_p2pdma_and_excludes_iommu() {
        let reqs = requirements(FRAGMENT);
        assert!(reqs.contains(&Requirement::Set("CONFIG_PCI_P2PDMA=y".into())));
        assert!(reqs.contains(&Requirement::Unset("CONFIG_IOMMU_SUPPORT".into())));
        assert!(reqs.contains(&Requirement::Set("CONFIG_PRINTK=y".into())));
        // The p2pmem_pci driver is a Rust module.
        assert!(reqs.contains(&Requirement::Set("CONFIG_RUST=y".into())));
        assert!(reqs.contains(&Requirement::Set("CONFIG_MODULE_UNLOAD=y".into())));
        assert!(reqs.contains(&Requirement::Unset("CONFIG_MODVERSIONS".into())));
        assert!(reqs.len() > 40);
    }

    #[test]
    fn merge_replaces_base_values() {
        let base = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_KERNEL_XZ=y\n";
        let frag = "# comment\nCONFIG_B=y\n# CONFIG_C is not set\n";
        let merged = merge_config(base, frag);
        assert_eq!(
            merged,
            "CONFIG_A=y\nCONFIG_KERNEL_XZ=y\nCONFIG_B=y\n# CONFIG_C is not set\n"
        );
    }

    #[test]
    fn unmet_option_is_named() {
        let reqs = requirements("CONFIG_PCI_P2PDMA=y\n# CONFIG_IOMMU_SUPPORT is not set\n");
        assert_eq!(
            first_unmet("CONFIG_PCI=y\n", &reqs),
            Some(&Requirement::Set("CONFIG_PCI_P2PDMA=y".into()))
        );
        assert_eq!(
            first_unmet("CONFIG_PCI_P2PDMA=y\nCONFIG_IOMMU_SUPPORT=y\n", &reqs),
            Some(&Requirement::Unset("CONFIG_IOMMU_SUPPORT".into()))
        );
        assert_eq!(first_unmet("CONFIG_PCI_P2PDMA=y\n", &reqs), None);
    }

    #[test]
    fn key_changes_with_fragment_and_source() {
        let r = "rustc 1.95.0";
        let a = key_of(10, b"abc", "CONFIG_X=y\n", r);
        assert_eq!(a.len(), 16);
        assert_ne!(a, key_of(11, b"abc", "CONFIG_X=y\n", r));
        assert_ne!(a, key_of(10, b"abd", "CONFIG_X=y\n", r));
        assert_ne!(a, key_of(10, b"abc", "CONFIG_Y=y\n", r));
        assert_ne!(a, key_of(10, b"abc", "CONFIG_X=y\n", "rustc 1.96.0"));
        assert_eq!(a, key_of(10, b"abc", "CONFIG_X=y\n", r));
    }

    #[test]
    fn missing_tarball_is_reported_with_a_hint() {
        let spec = KernelSpec {
            tarball: PathBuf::from("/nonexistent/linux.tar.xz"),
            fragment: FRAGMENT.into(),
        };
        let err = cache_key(&spec, "rustc").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/linux.tar.xz"), "{err}");
        assert!(err.contains("linux-source-6.12"), "{err}");
    }
}
