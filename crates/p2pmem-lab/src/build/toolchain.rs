//! The Rust toolchain a `CONFIG_RUST=y` kernel build needs, installed by the lab itself:
//! the standard library's source for the active `rustc` (`rustup component add
//! rust-src`) and `bindgen` (`cargo install bindgen-cli`, pinned, into the lab cache).
//! libclang and clang come from Debian (`clang libclang-dev libclang-19-dev`,
//! scripts/setup-host); bindgen loads the newest libclang it finds, and
//! [`libclang_version`] asks it which.
//!
//! Every kbuild call (configure, `bzImage modules`, `M=` module builds) runs with
//! [`RustTools::path`] as `PATH`: without `bindgen` there, kbuild turns
//! `RUST_IS_AVAILABLE` off and `olddefconfig` silently drops `CONFIG_RUST`.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::build::cache::Cache;
use crate::build::process::run_captured;
use crate::build::staged::build_staged;
use crate::error::{io_err, LabError, Result};
use crate::progress::Progress;

/// The `bindgen-cli` release the lab installs (Linux 6.12 needs at least 0.65.1).
pub const BINDGEN_VERSION: &str = "0.73.2";

/// What kbuild needs on `PATH` for a Rust-enabled build.
#[derive(Debug, Clone)]
pub struct RustTools {
    /// `PATH` with the lab's `bindgen` directory first.
    pub path: OsString,
}

/// `rustc --version`, run where the kernel build runs (the cache), so that it names the
/// toolchain kbuild will use. Part of the kernel cache key: a kernel's Rust metadata
/// only works with the `rustc` that built it.
pub fn rustc_version(cache: &Cache) -> Result<String> {
    let mut rustc = Command::new("rustc");
    rustc
        .arg("--version")
        .current_dir(existing_dir(cache.root()));
    Ok(run_captured(rustc)?.stdout.trim().to_string())
}

/// The cache root if it exists, else the nearest existing ancestor, else `/`.
fn existing_dir(root: &Path) -> PathBuf {
    root.ancestors()
        .find(|p| p.is_dir())
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// The header whose only content makes clang say its version (the way the kernel's
/// `scripts/rust_is_available.sh` asks bindgen which libclang it loaded).
const LIBCLANG_PROBE: &str = "#pragma message(\"clang version \" __clang_version__)\n";

/// The version of the libclang `bindgen` loads with `path` as `PATH` (`19.1.7
/// (3~deb12u1)`): the kernel's Rust bindings and every module's must come from one
/// libclang, so it is part of a Rust kernel's cache key.
pub fn libclang_version(cache: &Cache, path: &OsStr) -> Result<String> {
    let tools = cache.root().join("tools");
    fs::create_dir_all(&tools).map_err(io_err("cannot create", &tools))?;
    let header = probe_header(&tools);
    fs::write(&header, LIBCLANG_PROBE).map_err(io_err("cannot write", &header))?;
    let mut bindgen = Command::new("bindgen");
    bindgen.arg(&header).env("PATH", path).current_dir(&tools);
    let ran = run_captured(bindgen);
    let _ = fs::remove_file(&header);
    let ran = ran?;
    clang_version_in(&format!("{}\n{}", ran.stderr, ran.stdout)).ok_or_else(|| ran.failure())
}

/// A probe header of this call's own in `tools`: lab builds run at once (the test runner
/// starts several) each ask, and clang refuses a header rewritten by another while it
/// reads it ("file ... modified since it was first processed"), as one shared name let
/// happen in a CI run.
fn probe_header(tools: &Path) -> PathBuf {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tools.join(format!("libclang-version.{}.{n}.h", std::process::id()))
}

/// The version in clang's `warning: clang version 19.1.7 (3~deb12u1) [-W#pragma-messages]`.
fn clang_version_in(text: &str) -> Option<String> {
    let rest = text.split("clang version ").nth(1)?;
    let line = rest.lines().next()?;
    let version = line.split(" [-W").next()?.trim();
    (!version.is_empty()).then(|| version.to_string())
}

/// Makes sure `rust-src` and `bindgen` are there, installing what is missing.
pub fn ensure_rust_tools(cache: &Cache, progress: Progress) -> Result<RustTools> {
    ensure_rust_src(cache, progress)?;
    let bindgen = ensure_bindgen(cache, progress)?;
    let dir = bindgen.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut dirs = vec![dir];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let path = std::env::join_paths(dirs).map_err(|e| LabError::Io {
        what: "cannot put bindgen on PATH:",
        path: bindgen.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    Ok(RustTools { path })
}

fn ensure_rust_src(cache: &Cache, progress: Progress) -> Result<()> {
    let dir = existing_dir(cache.root());
    let mut rustc = Command::new("rustc");
    rustc.args(["--print", "sysroot"]).current_dir(&dir);
    let sysroot = PathBuf::from(run_captured(rustc)?.stdout.trim());
    let core = sysroot.join("lib/rustlib/src/rust/library/core/src/lib.rs");
    if core.is_file() {
        return Ok(());
    }
    progress.phase(&format!(
        "rust-src is missing from {} (kbuild needs core's source): rustup component add rust-src",
        sysroot.display()
    ));
    let mut rustup = Command::new("rustup");
    rustup
        .args(["component", "add", "rust-src"])
        .current_dir(&dir);
    let added = run_captured(rustup)?;
    if !core.is_file() {
        return Err(added.failure());
    }
    Ok(())
}

/// Where the lab keeps its `bindgen`: `<cache>/tools/bindgen-cli-<version>/bin/bindgen`.
pub fn bindgen_path(cache: &Cache) -> PathBuf {
    cache
        .root()
        .join("tools")
        .join(format!("bindgen-cli-{BINDGEN_VERSION}"))
        .join("bin/bindgen")
}

fn ensure_bindgen(cache: &Cache, progress: Progress) -> Result<PathBuf> {
    let bin = bindgen_path(cache);
    if bin.is_file() {
        return Ok(bin);
    }
    let tools = cache.root().join("tools");
    let dest = tools.join(format!("bindgen-cli-{BINDGEN_VERSION}"));
    progress.phase(&format!(
        "installing bindgen-cli {BINDGEN_VERSION} into {} (cargo install --locked, about 1-2 min)",
        tools.display()
    ));
    build_staged(&dest, "bin/bindgen", None, |staging| {
        let mut cargo = Command::new("cargo");
        cargo
            .args(["install", "--locked", "--quiet", "bindgen-cli", "--version"])
            .arg(BINDGEN_VERSION)
            .arg("--root")
            .arg(staging)
            .current_dir(&tools);
        let installed = run_captured(cargo)?;
        if !staging.join("bin/bindgen").is_file() {
            return Err(installed.failure());
        }
        Ok(())
    })?;
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindgen_lives_in_the_cache_by_version() {
        let cache = Cache::at("/c");
        assert_eq!(
            bindgen_path(&cache),
            PathBuf::from(format!(
                "/c/tools/bindgen-cli-{BINDGEN_VERSION}/bin/bindgen"
            ))
        );
    }

    #[test]
    fn the_libclang_version_is_read_from_clangs_message() {
        let said = "/c/tools/libclang-version.h:1:9: warning: clang version 19.1.7 (3~deb12u1) [-W#pragma-messages]\n";
        assert_eq!(
            clang_version_in(said).as_deref(),
            Some("19.1.7 (3~deb12u1)")
        );
        assert_eq!(
            clang_version_in("warning: clang version 14.0.6\n").as_deref(),
            Some("14.0.6")
        );
        assert_eq!(clang_version_in("error: file not found\n"), None);
        assert_eq!(clang_version_in("clang version \n"), None);
    }

    #[test]
    fn every_libclang_probe_has_its_own_header() {
        let tools = Path::new("/c/tools");
        let mut seen: Vec<PathBuf> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..8).map(|_| probe_header(tools)).collect::<Vec<_>>()))
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        assert!(seen.iter().all(|p| p.parent() == Some(tools)));
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 32);
    }

    #[test]
    fn existing_dir_walks_up() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        assert_eq!(existing_dir(&deep), tmp.path());
    }
}
