//! A cache entry that appears whole or not at all. The lab's kernels
//! (`kernels/<key>/`), `p2pmem_pci` modules (`kernels/<key>/driver-<key>/`) and
//! `bindgen` (`tools/bindgen-cli-<version>/`) are each built in a staging directory next
//! to their final one, `<name>.tmp-<pid>-<n>`, and renamed into place only when
//! complete: an interrupted build never leaves half an entry behind, and concurrent
//! builds (other processes, other threads) never share a staging directory.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{io_err, LabError, Result};

/// Staging directories made by this process so far (the `<n>` of their names).
static STAGED: AtomicU32 = AtomicU32::new(0);

/// Builds the directory `dest` through a fresh staging directory next to it.
///
/// `fill` gets the empty staging directory and fills it. When it succeeds, the staging
/// directory is renamed to `dest`; if that rename fails but `dest/<product>` is a file,
/// another build finished first and its entry is as good as this one, so that is a
/// success too. On any failure the staging directory is removed; with `log`, the file
/// of that name in it is first kept as `<dest>.failed.log`, and a
/// [`LabError::Command`] that named it names the kept file instead.
///
/// The caller checks first whether `dest` is already complete.
pub fn build_staged(
    dest: &Path,
    product: &str,
    log: Option<&str>,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let staging = create_staging(dest)?;
    let result = fill(&staging).and_then(|()| match fs::rename(&staging, dest) {
        Ok(()) => Ok(()),
        Err(_) if dest.join(product).is_file() => Ok(()),
        Err(e) => Err(io_err("cannot rename into", dest)(e)),
    });
    let result = match (result, log) {
        (Err(e), Some(log)) => Err(keep_log(
            e,
            &staging.join(log),
            &sibling(dest, ".failed.log"),
        )),
        (result, _) => result,
    };
    // After a successful rename this finds nothing; after a lost race it drops our copy.
    let _ = fs::remove_dir_all(&staging);
    result
}

/// `<dest><suffix>`, next to `dest`.
fn sibling(dest: &Path, suffix: &str) -> PathBuf {
    let mut name = dest.file_name().map(OsString::from).unwrap_or_default();
    name.push(suffix);
    dest.with_file_name(name)
}

/// Creates `<dest>.tmp-<pid>-<n>` (and `dest`'s parent), skipping names that exist (left
/// by a dead process that had our pid).
fn create_staging(dest: &Path) -> Result<PathBuf> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
    }
    let pid = std::process::id();
    loop {
        let n = STAGED.fetch_add(1, Ordering::Relaxed);
        let staging = sibling(dest, &format!(".tmp-{pid}-{n}"));
        match fs::create_dir(&staging) {
            Ok(()) => return Ok(staging),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < u32::MAX => {}
            Err(e) => return Err(io_err("cannot create", &staging)(e)),
        }
    }
}

/// Moves the failed build's log to `kept` and points a command error at it.
fn keep_log(err: LabError, log: &Path, kept: &Path) -> LabError {
    if fs::rename(log, kept).is_err() {
        return err;
    }
    match err {
        LabError::Command {
            command,
            status,
            log: Some(named),
            tail,
        } if named == log => LabError::Command {
            command,
            status,
            log: Some(kept.to_path_buf()),
            tail,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_complete_build_is_renamed_into_place() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("cache/kernels/abc");
        build_staged(&dest, "bzImage", Some("build.log"), |dir| {
            assert_eq!(dir.parent(), dest.parent());
            assert!(entries(dir).is_empty());
            fs::write(dir.join("bzImage"), b"kernel").unwrap();
            fs::write(dir.join("build.log"), b"ok").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(entries(&dest), ["build.log", "bzImage"]);
        assert_eq!(entries(tmp.path().join("cache/kernels").as_path()), ["abc"]);
    }

    #[test]
    fn a_failed_build_leaves_only_its_log_and_the_error_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("abc");
        let err = build_staged(&dest, "bzImage", Some("build.log"), |dir| {
            let log = dir.join("build.log");
            fs::write(&log, b"error: boom\n").unwrap();
            Err(LabError::Command {
                command: "make".into(),
                status: "exit status: 2".into(),
                log: Some(log),
                tail: "error: boom".into(),
            })
        })
        .unwrap_err();
        let kept = tmp.path().join("abc.failed.log");
        match err {
            LabError::Command { log, .. } => assert_eq!(log, Some(kept.clone())),
            other => panic!("not a Command error: {other:?}"),
        }
        assert_eq!(fs::read_to_string(&kept).unwrap(), "error: boom\n");
        assert_eq!(entries(tmp.path()), ["abc.failed.log"]);
    }

    #[test]
    fn an_error_not_about_the_log_keeps_its_own_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("abc");
        let elsewhere = tmp.path().join("other.log");
        let err = build_staged(&dest, "bzImage", Some("build.log"), |dir| {
            fs::write(dir.join("build.log"), b"partial").unwrap();
            Err(LabError::Command {
                command: "rustup".into(),
                status: "exit status: 1".into(),
                log: Some(elsewhere.clone()),
                tail: String::new(),
            })
        })
        .unwrap_err();
        match err {
            LabError::Command { log, .. } => assert_eq!(log, Some(elsewhere)),
            other => panic!("not a Command error: {other:?}"),
        }
        // The log is still kept.
        assert_eq!(entries(tmp.path()), ["abc.failed.log"]);
    }

    #[test]
    fn without_a_log_a_failure_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("bindgen-cli-1");
        let err = build_staged(&dest, "bin/bindgen", None, |dir| {
            fs::create_dir_all(dir.join("bin")).unwrap();
            Err(LabError::Missing {
                what: "bindgen",
                path: dir.join("bin/bindgen"),
                hint: "test",
            })
        })
        .unwrap_err();
        assert!(matches!(err, LabError::Missing { .. }), "{err:?}");
        assert!(entries(tmp.path()).is_empty());
    }

    #[test]
    fn losing_the_race_to_a_complete_entry_is_success() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("abc");
        build_staged(&dest, "bzImage", None, |dir| {
            // Another build finishes while this one runs.
            fs::create_dir(&dest).unwrap();
            fs::write(dest.join("bzImage"), b"theirs").unwrap();
            fs::write(dest.join("x"), b"").unwrap();
            fs::write(dir.join("bzImage"), b"ours").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(fs::read_to_string(dest.join("bzImage")).unwrap(), "theirs");
        assert_eq!(entries(tmp.path()), ["abc"]);
    }

    #[test]
    fn an_incomplete_entry_in_the_way_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("abc");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("junk"), b"").unwrap();
        let err = build_staged(&dest, "bzImage", None, |dir| {
            fs::write(dir.join("bzImage"), b"ours").unwrap();
            Ok(())
        })
        .unwrap_err();
        match err {
            LabError::Io { what, path, .. } => {
                assert_eq!(what, "cannot rename into");
                assert_eq!(path, dest);
            }
            other => panic!("not an Io error: {other:?}"),
        }
        assert_eq!(entries(tmp.path()), ["abc"]);
    }

    #[test]
    fn staging_directories_are_unique_and_skip_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("abc");
        let next = STAGED.load(Ordering::Relaxed);
        let pid = std::process::id();
        for n in next..next + 3 {
            let leftover = tmp.path().join(format!("abc.tmp-{pid}-{n}"));
            fs::create_dir(&leftover).unwrap();
            fs::write(leftover.join("half-built"), b"").unwrap();
        }
        let a = create_staging(&dest).unwrap();
        let b = create_staging(&dest).unwrap();
        assert_ne!(a, b);
        for dir in [&a, &b] {
            assert!(dir.is_dir());
            assert!(entries(dir).is_empty());
            let name = dir.file_name().unwrap().to_string_lossy();
            assert!(name.starts_with(&format!("abc.tmp-{pid}-")), "{name}");
        }
    }
}
