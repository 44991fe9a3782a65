//! A pinned kernel source from Debian's archive, fetched with the host's `apt-get` but
//! never with the host's apt configuration, and never installed.
//!
//! The lab keeps its own apt state under `<cache>/apt/`: a `sources.list` naming the
//! suites of [`SUITES`], the index lists and apt's cache. `apt-get update` and
//! `apt-get download PACKAGE=VERSION` run with `-o Dir::Etc::sourcelist=...`,
//! `-o Dir::Etc::sourceparts=/nonexistent`, `-o Dir::State::Lists=...` and
//! `-o Dir::Cache=...`; the `.deb` lands in a staging directory, its sha256 is checked
//! against the pin, `dpkg-deb -x` unpacks it there and the `.deb` is deleted. The entry,
//! `<cache>/sources/<package>_<version>/usr/src/<package>.tar.xz`, is renamed into place
//! whole (`staged.rs`), so a second run downloads nothing.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::build::cache::Cache;
use crate::build::lines::{Pin, SUITES};
use crate::build::process::run_captured;
use crate::build::staged::build_staged;
use crate::error::{io_err, LabError, Result};
use crate::progress::Progress;

/// The keyring that signs Debian's archives (package `debian-archive-keyring`).
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The lab's `sources.list`: one line per suite, component `main`, Packages indices only.
pub fn sources_list() -> String {
    let mut s = String::from(
        "# Written by the p2pmem lab: its own apt sources, for kernel sources only.\n",
    );
    for suite in SUITES {
        s.push_str(&format!(
            "deb [signed-by={KEYRING} target=Packages] {} {} main\n",
            suite.archive, suite.name
        ));
    }
    s
}

/// Where the lab's apt state lives.
#[derive(Debug, Clone)]
struct AptDirs {
    root: PathBuf,
}

impl AptDirs {
    fn sources_list(&self) -> PathBuf {
        self.root.join("sources.list")
    }
    fn lists(&self) -> PathBuf {
        self.root.join("lists")
    }
    fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// `apt-get` with the lab's configuration in place of the host's.
    fn apt_get(&self) -> Command {
        let mut cmd = Command::new("apt-get");
        let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
        for o in [
            opt("Dir::Etc::sourcelist", &self.sources_list()),
            "Dir::Etc::sourceparts=/nonexistent".to_string(),
            opt("Dir::State::Lists", &self.lists()),
            opt("Dir::Cache", &self.cache()),
        ] {
            cmd.arg("-o").arg(o);
        }
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// Writes `sources.list` and the directories apt expects.
    fn prepare(&self) -> Result<()> {
        for d in [
            self.lists().join("partial"),
            self.cache().join("archives/partial"),
        ] {
            fs::create_dir_all(&d).map_err(io_err("cannot create", &d))?;
        }
        let list = self.sources_list();
        fs::write(&list, sources_list()).map_err(io_err("cannot write", &list))
    }
}

/// The cache directory of a pinned source.
pub fn source_dir(cache: &Cache, pin: &Pin) -> PathBuf {
    cache
        .root()
        .join("sources")
        .join(format!("{}_{}", pin.package, pin.version))
}

/// The pinned source's tarball, downloaded, checked and unpacked first if it is not in
/// the cache.
pub fn ensure_source(cache: &Cache, pin: &Pin, progress: Progress) -> Result<PathBuf> {
    let dest = source_dir(cache, pin);
    let tarball = dest.join(pin.tarball());
    if tarball.is_file() {
        return Ok(tarball);
    }
    let apt = AptDirs {
        root: cache.root().join("apt"),
    };
    apt.prepare()?;
    progress.phase(&format!(
        "kernel source: apt-get update of the lab's own sources ({}; about 5 s)",
        apt.sources_list().display()
    ));
    let mut update = apt.apt_get();
    update.args(["-q", "update"]).current_dir(&apt.root);
    run_captured(update)?;
    progress.phase(&format!(
        "kernel source: apt-get download {} ({} MB from {})",
        pin.apt_spec(),
        pin.size / 1_000_000,
        pin.suite
    ));
    let started = Instant::now();
    build_staged(&dest, &pin.tarball(), None, |work| {
        fetch_into(&apt, pin, work)
    })?;
    progress.phase(&format!(
        "kernel source: {} checked (sha256 {}) and unpacked in {:.0} s: {}",
        pin.apt_spec(),
        &pin.sha256[..16],
        started.elapsed().as_secs_f64(),
        tarball.display()
    ));
    Ok(tarball)
}

/// Downloads the pinned `.deb` into `work`, checks it and unpacks it there.
fn fetch_into(apt: &AptDirs, pin: &Pin, work: &Path) -> Result<()> {
    let mut download = apt.apt_get();
    download
        .args(["-q", "download"])
        .arg(pin.apt_spec())
        .current_dir(work);
    match run_captured(download) {
        Ok(_) => {}
        Err(LabError::Command { tail, .. }) if tail.contains("was not found") => {
            return Err(LabError::Source {
                origin: pin.apt_spec(),
                why: format!(
                    "that version is not in the archive's index any more (Debian drops superseded versions from {}): pin a current one in crates/p2pmem-lab/src/build/lines.rs, or fetch the .deb from snapshot.debian.org\n{tail}",
                    pin.suite
                ),
            })
        }
        Err(e) => return Err(e),
    }
    let deb = find_deb(work)?;
    let actual = sha256_file(&deb)?;
    if actual != pin.sha256 {
        return Err(LabError::Source {
            origin: pin.apt_spec(),
            why: format!(
                "sha256 mismatch: the downloaded {} has {actual}, the lab pins {} (crates/p2pmem-lab/src/build/lines.rs); the file was deleted",
                deb.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                pin.sha256
            ),
        });
    }
    let mut unpack = Command::new("dpkg-deb");
    unpack.arg("-x").arg(&deb).arg(work);
    run_captured(unpack)?;
    fs::remove_file(&deb).map_err(io_err("cannot remove", &deb))?;
    let tarball = work.join(pin.tarball());
    if !tarball.is_file() {
        return Err(LabError::Source {
            origin: pin.apt_spec(),
            why: format!("the package holds no {}", pin.tarball()),
        });
    }
    Ok(())
}

/// The one `.deb` in `dir`.
fn find_deb(dir: &Path) -> Result<PathBuf> {
    let mut debs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("cannot list", dir))? {
        let path = entry.map_err(io_err("cannot list", dir))?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            debs.push(path);
        }
    }
    match debs.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(LabError::Missing {
            what: "the downloaded .deb",
            path: dir.to_path_buf(),
            hint: "apt-get download reported success but left no single .deb",
        }),
    }
}

/// Hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(io_err("cannot open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err("cannot read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_list_names_every_suite_signed_and_packages_only() {
        let list = sources_list();
        let lines: Vec<&str> = list.lines().filter(|l| l.starts_with("deb ")).collect();
        assert_eq!(
            lines,
            [
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg target=Packages] http://deb.debian.org/debian bookworm main",
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg target=Packages] http://deb.debian.org/debian sid main",
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg target=Packages] http://deb.debian.org/debian trixie-backports main",
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg target=Packages] http://deb.debian.org/debian-security bookworm-security main",
            ]
        );
    }

    #[test]
    fn apt_runs_with_the_labs_configuration_only() {
        let apt = AptDirs {
            root: PathBuf::from("/c/apt"),
        };
        let cmd = apt.apt_get();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-o",
                "Dir::Etc::sourcelist=/c/apt/sources.list",
                "-o",
                "Dir::Etc::sourceparts=/nonexistent",
                "-o",
                "Dir::State::Lists=/c/apt/lists",
                "-o",
                "Dir::Cache=/c/apt/cache",
            ]
        );
    }

    #[test]
    fn a_cached_source_is_used_without_apt() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path());
        let pin = crate::build::lines::PINS[0];
        let tarball = source_dir(&cache, &pin).join(pin.tarball());
        fs::create_dir_all(tarball.parent().unwrap()).unwrap();
        fs::write(&tarball, b"xz").unwrap();
        // No apt state is created: nothing was fetched.
        assert_eq!(
            ensure_source(&cache, &pin, Progress::quiet()).unwrap(),
            tarball
        );
        assert!(!tmp.path().join("apt").exists());
    }

    #[test]
    fn sha256_of_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("x");
        fs::write(&f, b"abc").unwrap();
        assert_eq!(
            sha256_file(&f).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn one_deb_is_found_and_none_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(find_deb(tmp.path()).is_err());
        fs::write(tmp.path().join("a_1_all.deb"), b"").unwrap();
        fs::write(tmp.path().join("note"), b"").unwrap();
        assert_eq!(
            find_deb(tmp.path()).unwrap(),
            tmp.path().join("a_1_all.deb")
        );
    }
}
