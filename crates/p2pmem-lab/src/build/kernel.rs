//! The lab kernel: a kernel line's source (a pinned Debian package by default, or a
//! user's tree, see `source.rs`) built with `tinyconfig` plus the options of the fragment
//! `kernel/p2pmem-lab.config` that hold for that line (`fragment.rs`): P2PDMA, NVMe,
//! ACPI/MMCONFIG, the Intel IOMMU (built in, off unless `intel_iommu=on`), modules, and
//! Rust where the `p2pmem_pci` driver is built. A user's prebuilt image is used as it is,
//! its config checked against the same options.
//!
//! A kernel is cached under `kernels/<key>/bzImage`, where the key hashes
//! [`RECIPE_VERSION`], the source's identity (for a pin: package, version and the
//! `.deb`'s sha256), the fragment's options for its line and, for a Rust build, the
//! `rustc` and libclang versions. A build runs in a staging
//! directory `kernels/<key>.tmp-<pid>-<n>/` and is renamed into place only when complete
//! (`staged.rs`), so an interrupted build never leaves a half kernel behind; a failed one
//! leaves its log as `kernels/<key>.failed.log`. The build tree is kept for the
//! `p2pmem_pci` module (`driver.rs`): `kernels/<key>/build/out`, and for a pinned source
//! `build/src`, slimmed to what module builds read (a user's tree stays where it is).

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::build::cache::Cache;
use crate::build::debian::ensure_source;
use crate::build::fragment::{unmet, Fragment, Requirement, FRAGMENT};
use crate::build::lines::Line;
use crate::build::process::run_logged;
use crate::build::source::{short_hash, KernelSource};
use crate::build::staged::build_staged;
use crate::error::{io_err, LabError, Result};
use crate::progress::Progress;

/// Bumped whenever the build steps change in a way that changes the kernel.
pub const RECIPE_VERSION: &str = "p2pmem-lab-kernel-recipe-3";

/// Lines `make bzImage modules` prints for a clean build of this config (measured), for
/// the percentage in the heartbeat.
const EXPECTED_BUILD_LINES: usize = 2150;

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct KernelSpec {
    /// Where the kernel comes from.
    pub source: KernelSource,
    /// The config fragment text (default: [`FRAGMENT`]).
    pub fragment: Option<String>,
}

impl KernelSpec {
    /// The fragment text this spec builds with.
    pub fn fragment(&self) -> &str {
        self.fragment.as_deref().unwrap_or(FRAGMENT)
    }
}

/// A built (or adopted) kernel.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Kernel {
    /// The `bzImage`.
    pub bzimage: PathBuf,
    /// The `.config` it was built with.
    pub config: PathBuf,
    /// The cache key.
    pub key: String,
    /// True when this call built it, false when it came from the cache.
    pub built: bool,
    /// Its cache directory (modules built for it are cached below).
    pub dir: PathBuf,
    /// Its line (6.12).
    pub line: Line,
    /// Where it came from, in words.
    pub source: String,
    /// Where modules for it are built, if anywhere.
    pub modules: Option<ModuleTree>,
}

/// A kernel build tree that external modules build against: `make -C src [O=out] M=dir`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModuleTree {
    /// The source tree.
    pub src: PathBuf,
    /// The output tree, for an out-of-tree build.
    pub out: Option<PathBuf>,
}

impl ModuleTree {
    /// Where the build's generated files are: `out`, else `src`.
    pub fn objects(&self) -> &Path {
        self.out.as_deref().unwrap_or(&self.src)
    }
}

/// The cache key of a spec: hex sha256 (first 16 digits) of the recipe version, the
/// source's identity, the options of the fragment that hold for the spec's line (a change
/// for one line leaves the others' kernels cached) and `toolchain`: for a Rust build the
/// `rustc` and libclang versions ([`rust_toolchain`]), for one without Rust nothing.
pub fn cache_key(spec: &KernelSpec, toolchain: &str) -> Result<String> {
    let line = spec.source.kernel_line()?;
    let reqs = Fragment::parse(spec.fragment())?.for_line(line)?;
    Ok(key_of(&spec.source.identity()?, &reqs, toolchain))
}

fn key_of(identity: &str, reqs: &[Requirement], toolchain: &str) -> String {
    let options: String = reqs.iter().map(|r| format!("{r}\n")).collect();
    short_hash(&[
        RECIPE_VERSION.as_bytes(),
        identity.as_bytes(),
        options.as_bytes(),
        toolchain.as_bytes(),
    ])
}

/// What a Rust kernel's cache key says of the toolchain: `rustc --version` (modules need
/// the `rustc` whose metadata the `kernel` crate has) and the libclang `bindgen` loads
/// (the driver's bindings are generated with the kernel's recorded clang flags, which a
/// different libclang may reject).
fn rust_toolchain(cache: &Cache, path: &OsStr) -> Result<String> {
    let rustc = crate::build::toolchain::rustc_version(cache)?;
    let libclang = crate::build::toolchain::libclang_version(cache, path)?;
    Ok(format!("{rustc}\nlibclang {libclang}"))
}

/// [`crate::build::toolchain::ensure_rust_tools`]'s `PATH` and [`rust_toolchain`], found
/// once per process and cache: the probes spawn `rustc` twice and `bindgen`, which loads
/// libclang (about 0.7 s), and `lab matrix` asks before every guest, several at a time.
/// The lock also keeps two threads from probing (and writing its header) at once.
fn rust_tools_once(cache: &Cache, progress: Progress) -> Result<(OsString, String)> {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, PoisonError};
    static FOUND: Mutex<BTreeMap<PathBuf, (OsString, String)>> = Mutex::new(BTreeMap::new());
    let mut found = FOUND.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(hit) = found.get(cache.root()) {
        return Ok(hit.clone());
    }
    let path = crate::build::toolchain::ensure_rust_tools(cache, progress)?.path;
    let toolchain = rust_toolchain(cache, &path)?;
    found.insert(
        cache.root().to_path_buf(),
        (path.clone(), toolchain.clone()),
    );
    Ok((path, toolchain))
}

/// Where modules for a kernel of `source` cached in `dir` are built.
fn module_tree(source: &KernelSource, dir: &Path) -> Option<ModuleTree> {
    let build = dir.join("build");
    match source {
        KernelSource::Pinned(_) => Some(ModuleTree {
            src: build.join("src"),
            out: Some(build.join("out")),
        }),
        KernelSource::Tree(tree) => Some(ModuleTree {
            src: tree.clone(),
            out: Some(build.join("out")),
        }),
        KernelSource::Image { tree, .. } => tree.as_ref().map(|t| ModuleTree {
            src: t.clone(),
            out: None,
        }),
    }
}

/// Returns the cached kernel for `spec`, building (or adopting) it first if needed.
pub fn ensure_kernel(cache: &Cache, spec: &KernelSpec, progress: Progress) -> Result<Kernel> {
    let line = spec.source.kernel_line()?;
    let reqs = Fragment::parse(spec.fragment())?.for_line(line)?;
    let rust = reqs.contains(&Requirement::Set("CONFIG_RUST=y".into()));
    let (path, toolchain) = if rust {
        rust_tools_once(cache, progress)?
    } else {
        let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
        (path, String::new())
    };
    let key = cache_key(spec, &toolchain)?;
    let dir = cache.kernels().join(&key);
    let kernel = Kernel {
        bzimage: dir.join("bzImage"),
        config: dir.join("config"),
        key: key.clone(),
        built: false,
        dir: dir.clone(),
        line,
        source: spec.source.describe(),
        modules: module_tree(&spec.source, &dir),
    };
    if kernel.bzimage.is_file() {
        progress.phase(&format!(
            "kernel {line} ({}) {key}: cached at {}",
            kernel.source,
            kernel.bzimage.display()
        ));
        return Ok(kernel);
    }
    let from = match &spec.source {
        KernelSource::Image {
            bzimage, config, ..
        } => {
            adopt_image(&dir, bzimage, config, line, &reqs, progress)?;
            progress.phase(&format!(
                "kernel {line} ({}) {key}: copied into {}",
                kernel.source,
                dir.display()
            ));
            return Ok(Kernel {
                built: true,
                ..kernel
            });
        }
        KernelSource::Pinned(pin) => BuildFrom::Tarball(ensure_source(cache, pin, progress)?),
        KernelSource::Tree(tree) => BuildFrom::Tree(tree.clone()),
    };
    let started = Instant::now();
    let job = Job {
        from: &from,
        reqs: &reqs,
        rust,
        line,
        key: &key,
        path: &path,
        progress,
    };
    // A failed build keeps its log as `kernels/<key>.failed.log` and drops the (large)
    // tree.
    build_staged(&dir, "bzImage", Some("build.log"), |work| {
        job.build_in(work)
    })?;
    progress.phase(&format!(
        "kernel {line} {key}: built in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        kernel.bzimage.display()
    ));
    Ok(Kernel {
        built: true,
        ..kernel
    })
}

/// Copies a user's prebuilt image and config into the cache entry `dir`, warning about
/// every option of the fragment the config does not have.
fn adopt_image(
    dir: &Path,
    bzimage: &Path,
    config: &Path,
    line: Line,
    reqs: &[Requirement],
    progress: Progress,
) -> Result<()> {
    let text = fs::read_to_string(config).map_err(io_err("cannot read", config))?;
    let missing: Vec<String> = unmet(&text, reqs).iter().map(|r| r.to_string()).collect();
    if !missing.is_empty() {
        progress.phase(&format!(
            "kernel image {}: its config ({line}) lacks {} option(s) the lab's kernels have; the lab may not work with it: {}",
            bzimage.display(),
            missing.len(),
            missing.join(", ")
        ));
    }
    build_staged(dir, "bzImage", None, |work| {
        let (img, cfg) = (work.join("bzImage"), work.join("config"));
        fs::copy(bzimage, &img).map_err(io_err("cannot copy", bzimage))?;
        fs::copy(config, &cfg).map_err(io_err("cannot copy", config))?;
        Ok(())
    })
}

/// Where a build takes its source from.
enum BuildFrom {
    /// A `.tar.xz` unpacked into the build.
    Tarball(PathBuf),
    /// A user's tree, read in place.
    Tree(PathBuf),
}

/// One kernel build.
struct Job<'a> {
    from: &'a BuildFrom,
    reqs: &'a [Requirement],
    rust: bool,
    line: Line,
    key: &'a str,
    path: &'a OsStr,
    progress: Progress,
}

impl Job<'_> {
    /// Builds the kernel in the empty directory `work`: the tree in `src/` (unless it is
    /// a user's) and `out/`, the log in `build.log`, then the cache entry's files:
    /// `bzImage`, `config` and the slimmed tree as `build/`.
    fn build_in(&self, work: &Path) -> Result<()> {
        let (line, key, path, progress) = (self.line, self.key, self.path, self.progress);
        let out = work.join("out");
        fs::create_dir_all(&out).map_err(io_err("cannot create", &out))?;
        let log = work.join("build.log");
        File::create(&log).map_err(io_err("cannot create", &log))?;

        let src = match self.from {
            BuildFrom::Tarball(tarball) => {
                let src = work.join("src");
                fs::create_dir_all(&src).map_err(io_err("cannot create", &src))?;
                progress.phase(&format!(
                    "kernel {line} {key}: unpacking {} (about 10 s)",
                    tarball.display()
                ));
                let mut tar = Command::new("tar");
                tar.arg("-xJf")
                    .arg(tarball)
                    .arg("-C")
                    .arg(&src)
                    .arg("--strip-components=1");
                run_logged(tar, &log, None)?;
                src
            }
            BuildFrom::Tree(tree) => tree.clone(),
        };

        progress.phase(&format!(
            "kernel {line} {key}: configuring (tinyconfig + the fragment's {} options for {line}{})",
            self.reqs.len(),
            if self.rust { ", with Rust" } else { ", without Rust" }
        ));
        let o = Some(out.as_path());
        run_logged(make(&src, o, path, &["tinyconfig"]), &log, None)?;
        if self.rust {
            // Fails with the reason (rustc, rust-src, bindgen or libclang) before
            // olddefconfig would silently drop CONFIG_RUST.
            run_logged(make(&src, o, path, &["rustavailable"]), &log, None)?;
        }
        let config = out.join(".config");
        let base = fs::read_to_string(&config).map_err(io_err("cannot read", &config))?;
        fs::write(
            &config,
            crate::build::fragment::merge_config(&base, self.reqs),
        )
        .map_err(io_err("cannot write", &config))?;
        run_logged(make(&src, o, path, &["olddefconfig"]), &log, None)?;
        let final_config = fs::read_to_string(&config).map_err(io_err("cannot read", &config))?;
        let missing = unmet(&final_config, self.reqs);
        if !missing.is_empty() {
            return Err(LabError::KernelOption {
                line: line.to_string(),
                options: missing.iter().map(|r| r.to_string()).collect(),
                config: config.clone(),
            });
        }

        let jobs = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        progress.phase(&format!(
            "kernel {line} {key}: building bzImage and modules{} with make -j{jobs} (about 5-10 min on 2 cores; log {})",
            if self.rust { " (C and Rust)" } else { "" },
            log.display()
        ));
        let j = format!("-j{jobs}");
        let heartbeat = |n: usize, elapsed: Duration| {
            let pct = (n * 100 / EXPECTED_BUILD_LINES).min(99);
            progress.phase(&format!(
                "kernel {line} {key}: building: {n} steps, ~{pct}%, {:.0} s",
                elapsed.as_secs_f64()
            ));
        };
        run_logged(
            make(&src, o, path, &[j.as_str(), "bzImage", "modules"]),
            &log,
            Some(&heartbeat),
        )?;

        let built = out.join("arch/x86/boot/bzImage");
        fs::copy(&built, work.join("bzImage")).map_err(io_err("cannot copy", &built))?;
        fs::copy(&config, work.join("config")).map_err(io_err("cannot copy", &config))?;
        let build = work.join("build");
        match self.from {
            BuildFrom::Tarball(_) => keep_build_tree(&src, &out, &build),
            BuildFrom::Tree(_) => {
                fs::create_dir_all(&build).map_err(io_err("cannot create", &build))?;
                fs::rename(&out, build.join("out")).map_err(io_err("cannot move", &out))
            }
        }
    }
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

/// `make -C src [O=out] TARGETS...` with `PATH` (the lab's Rust tools first when it
/// builds Rust) and a fixed build user and host, as every kbuild call of the lab runs it.
pub(crate) fn make(src: &Path, out: Option<&Path>, path: &OsStr, targets: &[&str]) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-C").arg(src);
    if let Some(out) = out {
        cmd.arg(format!("O={}", out.display()));
    }
    cmd.args(targets)
        .env("PATH", path)
        .env("KBUILD_BUILD_USER", "p2pmem")
        .env("KBUILD_BUILD_HOST", "lab");
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::lines::{Line, PINS};

    #[test]
    fn key_changes_with_source_options_and_toolchain() {
        let r = "rustc 1.95.0\nlibclang 19.1.7";
        let x = [Requirement::Set("CONFIG_X=y".into())];
        let y = [Requirement::Unset("CONFIG_X".into())];
        let a = key_of("debian linux-source-6.12 1", &x, r);
        assert_eq!(a.len(), 16);
        assert_ne!(a, key_of("debian linux-source-6.12 2", &x, r));
        assert_ne!(a, key_of("debian linux-source-6.12 1", &y, r));
        assert_ne!(
            a,
            key_of(
                "debian linux-source-6.12 1",
                &x,
                "rustc 1.96.0\nlibclang 19.1.7"
            )
        );
        assert_ne!(
            a,
            key_of(
                "debian linux-source-6.12 1",
                &x,
                "rustc 1.95.0\nlibclang 14.0.6"
            )
        );
        assert_eq!(a, key_of("debian linux-source-6.12 1", &x, r));
    }

    #[test]
    fn an_option_for_one_line_leaves_the_other_lines_keys_alone() {
        let key = |line: &str, fragment: &str| {
            let pin = PINS.iter().find(|p| p.line.to_string() == line).unwrap();
            let spec = KernelSpec {
                source: KernelSource::Pinned(*pin),
                fragment: Some(fragment.to_string()),
            };
            cache_key(&spec, "").unwrap()
        };
        let more = format!("{FRAGMENT}[7.3] CONFIG_EXTRA=y\n");
        assert_eq!(key("6.1", FRAGMENT), key("6.1", &more));
        assert_eq!(key("7.2", FRAGMENT), key("7.2", &more));
        assert_ne!(key("7.3", FRAGMENT), key("7.3", &more));
    }

    #[test]
    fn every_pinned_line_has_its_own_key() {
        let keys: std::collections::HashSet<String> = PINS
            .iter()
            .map(|p| {
                let spec = KernelSpec {
                    source: KernelSource::Pinned(*p),
                    fragment: None,
                };
                cache_key(&spec, "rustc").unwrap()
            })
            .collect();
        assert_eq!(keys.len(), PINS.len());
    }

    #[test]
    fn modules_build_in_the_kept_tree_or_the_users() {
        let dir = Path::new("/c/kernels/k");
        let pinned = module_tree(&KernelSource::default(), dir).unwrap();
        assert_eq!(pinned.src, dir.join("build/src"));
        assert_eq!(pinned.objects(), dir.join("build/out"));
        let tree = module_tree(&KernelSource::Tree("/u/linux".into()), dir).unwrap();
        assert_eq!(tree.src, Path::new("/u/linux"));
        assert_eq!(tree.out.as_deref(), Some(dir.join("build/out").as_path()));
        let image = |tree: Option<&str>| KernelSource::Image {
            bzimage: "/u/bzImage".into(),
            config: "/u/config".into(),
            tree: tree.map(PathBuf::from),
        };
        assert_eq!(module_tree(&image(None), dir), None);
        let with_tree = module_tree(&image(Some("/u/linux")), dir).unwrap();
        assert_eq!(with_tree.objects(), Path::new("/u/linux"));
    }

    #[test]
    fn a_prebuilt_image_is_adopted_into_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let (img, cfg) = (tmp.path().join("bzImage"), tmp.path().join("config"));
        fs::write(&img, "kernel").unwrap();
        fs::write(
            &cfg,
            "# Linux/x86 7.2.13 Kernel Configuration\nCONFIG_PCI_P2PDMA=y\n",
        )
        .unwrap();
        let dir = tmp.path().join("kernels/k");
        let reqs = [Requirement::Set("CONFIG_PCI_P2PDMA=y".into())];
        adopt_image(&dir, &img, &cfg, Line::new(7, 2), &reqs, Progress::quiet()).unwrap();
        assert_eq!(fs::read_to_string(dir.join("bzImage")).unwrap(), "kernel");
        assert!(dir.join("config").is_file());
    }

    #[test]
    fn make_runs_out_of_tree_when_asked() {
        let args = |cmd: Command| -> Vec<String> {
            cmd.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let path = OsStr::new("/bin");
        assert_eq!(
            args(make(
                Path::new("/s"),
                Some(Path::new("/o")),
                path,
                &["modules"]
            )),
            ["-C", "/s", "O=/o", "modules"]
        );
        assert_eq!(
            args(make(Path::new("/s"), None, path, &["M=/m", "modules"])),
            ["-C", "/s", "M=/m", "modules"]
        );
    }
}
