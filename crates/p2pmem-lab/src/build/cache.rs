//! Where the lab keeps what it builds and runs: `$P2PMEM_LAB_CACHE`, else
//! `$XDG_CACHE_HOME/p2pmem-lab`, else `~/.cache/p2pmem-lab`.
//!
//! Layout: `kernels/<hash>/bzImage` (one directory per kernel cache key, created by an
//! atomic rename) and `runs/<stamp>/` (one directory per guest boot, holding its console
//! log and QEMU command; only the newest [`KEEP_RUNS`] are kept).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{io_err, Result};

/// Environment variable overriding the cache directory.
pub const CACHE_ENV: &str = "P2PMEM_LAB_CACHE";

/// How many run directories are kept.
pub const KEEP_RUNS: usize = 20;

/// Run directories younger than this are never pruned (a concurrent run may be using
/// them).
pub const MIN_RUN_AGE_SECS: u64 = 2 * 3600;

/// The lab cache root.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache at an explicit root.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache chosen by the environment (see the module doc).
    pub fn from_env() -> Self {
        Self::at(resolve(
            std::env::var_os(CACHE_ENV),
            std::env::var_os("XDG_CACHE_HOME"),
            std::env::var_os("HOME"),
        ))
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding kernels by cache key.
    pub fn kernels(&self) -> PathBuf {
        self.root.join("kernels")
    }

    /// Creates a fresh run directory `runs/<unix-seconds>-<pid>-<n>` and prunes old ones.
    pub fn new_run_dir(&self) -> Result<PathBuf> {
        let runs = self.root.join("runs");
        std::fs::create_dir_all(&runs).map_err(io_err("cannot create", &runs))?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        prune_runs(&runs, secs.saturating_sub(MIN_RUN_AGE_SECS));
        let pid = std::process::id();
        let mut n = 0u32;
        loop {
            let dir = runs.join(format!("{secs}-{pid}-{n}"));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(io_err("cannot create", &dir)(e)),
            }
        }
    }
}

/// Chooses the cache root from the three environment values (pure, for tests).
pub fn resolve(
    explicit: Option<std::ffi::OsString>,
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    let non_empty = |v: Option<std::ffi::OsString>| v.filter(|v| !v.is_empty());
    if let Some(dir) = non_empty(explicit) {
        return PathBuf::from(dir);
    }
    if let Some(xdg) = non_empty(xdg) {
        return PathBuf::from(xdg).join("p2pmem-lab");
    }
    match non_empty(home) {
        Some(home) => PathBuf::from(home).join(".cache").join("p2pmem-lab"),
        None => std::env::temp_dir().join("p2pmem-lab"),
    }
}

/// Removes the oldest run directories beyond [`KEEP_RUNS`] that started before
/// `older_than` (unix seconds); failures are ignored.
fn prune_runs(runs: &Path, older_than: u64) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    let mut dirs: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let secs = name.split('-').next()?.parse::<u64>().ok()?;
            Some((secs, e.path()))
        })
        .collect();
    if dirs.len() < KEEP_RUNS {
        return;
    }
    dirs.sort();
    let excess = dirs.len() + 1 - KEEP_RUNS;
    for (secs, dir) in dirs.into_iter().take(excess) {
        if secs < older_than {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_wins_then_xdg_then_home() {
        assert_eq!(
            resolve(Some("/c".into()), Some("/x".into()), Some("/h".into())),
            PathBuf::from("/c")
        );
        assert_eq!(
            resolve(None, Some("/x".into()), Some("/h".into())),
            PathBuf::from("/x/p2pmem-lab")
        );
        assert_eq!(
            resolve(Some("".into()), None, Some("/h".into())),
            PathBuf::from("/h/.cache/p2pmem-lab")
        );
    }

    #[test]
    fn run_dirs_are_unique_and_old_ones_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = tmp.path().join("runs");
        // Old runs (1970) beyond the limit go; recent ones stay even beyond it.
        for i in 0..(KEEP_RUNS + 5) {
            std::fs::create_dir_all(runs.join(format!("{}-1-0", 1000 + i))).unwrap();
        }
        let cache = Cache::at(tmp.path());
        let first = cache.new_run_dir().unwrap();
        let count = || std::fs::read_dir(&runs).unwrap().count();
        assert_eq!(count(), KEEP_RUNS);
        assert!(!runs.join("1000-1-0").exists());
        let mut made = vec![first];
        for _ in 0..KEEP_RUNS {
            made.push(cache.new_run_dir().unwrap());
        }
        assert!(
            made.iter().all(|d| d.is_dir()),
            "a recent run dir was pruned"
        );
        let unique: std::collections::HashSet<_> = made.iter().collect();
        assert_eq!(unique.len(), made.len());
    }
}
