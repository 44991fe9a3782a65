//! Test support shared by the workspace's tests: how a test that cannot run here says so.
//!
//! A test whose environment lacks something (root, losetup, a file system with O_DIRECT)
//! prints `SKIPPED: <why>` and returns. Under `scripts/test` (and so in CI), which sets
//! `P2PMEM_REQUIRE_ALL_TESTS=1` on a machine that has all of it, a skip is a failure
//! instead, so nothing passes there without having run.

/// The environment variable that turns skips into failures.
pub const REQUIRE_ALL: &str = "P2PMEM_REQUIRE_ALL_TESTS";

/// Report a test that cannot run here. Returns normally (the caller returns) unless
/// [`REQUIRE_ALL`] is set, in which case it panics with the reason.
#[doc(hidden)]
#[expect(
    clippy::panic,
    reason = "a required test that cannot run must fail the run"
)]
pub fn skipped(why: &str) {
    let why = why.strip_prefix("SKIPPED: ").unwrap_or(why);
    if std::env::var_os(REQUIRE_ALL).is_some_and(|v| v != "0") {
        panic!("{REQUIRE_ALL} is set, but this test cannot run here: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// Where a test may make scratch files that need O_DIRECT, in order of preference: the
/// cargo target directory (`CARGO_TARGET_DIR` when set, else the workspace's `target/`;
/// normally ext4, xfs or overlay), then `/var/tmp`. tmpfs, where `/tmp` often is, has no
/// O_DIRECT. Each caller probes its candidates and skips the ones where O_DIRECT fails.
pub fn scratch_bases() -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()) {
        v.push(std::path::PathBuf::from(t));
    }
    v.push(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    v.push(std::path::PathBuf::from("/var/tmp"));
    v
}

/// Scratch directories and loop devices shared by this crate's unit tests.
#[cfg(test)]
pub(crate) mod support {
    use std::path::PathBuf;
    use std::process::Command;

    /// A scratch directory on a file system that supports O_DIRECT (the target directory,
    /// else /var/tmp), or `None`.
    pub(crate) fn scratch() -> Option<tempfile::TempDir> {
        for dir in super::scratch_bases() {
            let Ok(tmp) = tempfile::tempdir_in(&dir) else {
                continue;
            };
            let probe = tmp.path().join("probe");
            std::fs::write(&probe, [0u8; 4096]).unwrap();
            if crate::dio::DirectFile::open(&probe, crate::dio::Access::Read).is_ok() {
                return Some(tmp);
            }
        }
        None
    }

    /// An attached loop device, detached on drop.
    pub(crate) struct Loop {
        pub(crate) dev: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        }
    }

    /// The device's read counters (`/sys/class/block/NAME/stat`): reads completed, reads
    /// merged, sectors read.
    pub(crate) fn read_counters(dev: &std::path::Path) -> [u64; 3] {
        let name = dev.file_name().unwrap().to_str().unwrap();
        let stat = std::fs::read_to_string(format!("/sys/class/block/{name}/stat")).unwrap();
        let f: Vec<u64> = stat
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        [f[0], f[1], f[2]]
    }

    /// [`loop_device`], or `None` after saying why the test is skipped.
    pub(crate) fn loop_or_skip(len: u64, sector: u32) -> Option<Loop> {
        loop_device(len, sector)
            .map_err(|why| {
                super::skipped(&format!(
                    "SKIPPED: loop device test needs root and losetup: {why}"
                ))
            })
            .ok()
    }

    /// A loop device of `len` bytes with `sector`-byte logical blocks (direct I/O on),
    /// or why there cannot be one here (not root, no losetup, no O_DIRECT scratch).
    pub(crate) fn loop_device(len: u64, sector: u32) -> Result<Loop, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not root".into());
        }
        let dir = scratch().ok_or("no O_DIRECT scratch directory")?;
        let img = dir.path().join("loop.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(len))
            .map_err(|e| e.to_string())?;
        let out = Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on"])
            .arg(format!("--sector-size={sector}"))
            .arg(&img)
            .output()
            .map_err(|e| format!("losetup: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Loop {
            dev: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
            _dir: dir,
        })
    }
}
