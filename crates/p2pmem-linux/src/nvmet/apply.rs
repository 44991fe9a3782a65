//! Applying one [`Step`] with the syscall configfs expects: `mkdir`, `rmdir`, a single
//! `write(2)` of the value and a newline (as `echo` does), `symlink` with an absolute
//! target, `unlink`. Every failure carries the path, the errno and what it means for
//! that operation.

use super::{Backing, NvmetError, Target};
use p2pmem_model::nvmet_plan::restore::Step;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Default groups configfs creates with an object, as (object kind, group path).
const DEFAULT_GROUPS: &[(&str, &str)] = &[
    ("subsystem", "namespaces"),
    ("subsystem", "allowed_hosts"),
    ("port", "subsystems"),
    ("port", "referrals"),
    ("port", "ana_groups"),
    ("port", "ana_groups/1"),
];

fn is_default_group(rel_in_object: &Path) -> bool {
    DEFAULT_GROUPS
        .iter()
        .any(|(_, g)| Path::new(g) == rel_in_object)
}

impl Target {
    /// Performs `step`.
    pub fn apply(&self, step: &Step) -> Result<(), NvmetError> {
        let path = self.path(&step.path());
        let refused = |action: &str, e: io::Error| {
            NvmetError::refused(step.op(), action.to_string(), path.clone(), e)
        };
        match step {
            Step::MkHost { .. } | Step::MkNamespace { .. } => {
                std::fs::create_dir(&path).map_err(|e| refused("mkdir", e))
            }
            Step::MkSubsystem { .. } | Step::MkPort { .. } => {
                std::fs::create_dir(&path).map_err(|e| refused("mkdir", e))?;
                if self.backing == Backing::PlainDir {
                    let kind = if matches!(step, Step::MkPort { .. }) {
                        "port"
                    } else {
                        "subsystem"
                    };
                    for (_, g) in DEFAULT_GROUPS.iter().filter(|(k, _)| *k == kind) {
                        std::fs::create_dir_all(path.join(g)).map_err(|e| refused("mkdir", e))?;
                    }
                }
                Ok(())
            }
            Step::RmHost { .. }
            | Step::RmSubsystem { .. }
            | Step::RmNamespace { .. }
            | Step::RmPort { .. } => {
                if self.backing == Backing::PlainDir {
                    if blocked_plain(&path, Path::new("")).map_err(|e| refused("rmdir", e))? {
                        // What configfs says for an object with children or links.
                        return Err(refused("rmdir", io::Error::from_raw_os_error(39)));
                    }
                    clear_plain(&path, Path::new("")).map_err(|e| refused("rmdir", e))?;
                }
                std::fs::remove_dir(&path).map_err(|e| refused("rmdir", e))
            }
            Step::SetSubsystem { value, .. }
            | Step::SetNamespace { value, .. }
            | Step::SetPort { value, .. } => {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(self.backing == Backing::PlainDir)
                    .truncate(self.backing == Backing::PlainDir)
                    .open(&path)
                    .map_err(|e| refused("open", e))?;
                f.write_all(format!("{value}\n").as_bytes())
                    .map_err(|e| refused(&format!("write {value} to"), e))
            }
            Step::AllowHost { .. } | Step::LinkPort { .. } => {
                let target = step.link_target().unwrap_or_default();
                let target = self.link_target(&step.path(), &target);
                std::os::unix::fs::symlink(&target, &path).map_err(|e| refused("link", e))
            }
            Step::DisallowHost { .. } | Step::UnlinkPort { .. } => {
                std::fs::remove_file(&path).map_err(|e| refused("unlink", e))
            }
        }
    }

    /// What a link at `link_rel` to `target_rel` (both relative to the nvmet directory)
    /// contains: an absolute path on configfs, a relative one in a plain directory.
    fn link_target(&self, link_rel: &str, target_rel: &str) -> PathBuf {
        match self.backing {
            Backing::Configfs => {
                let p = self.path(target_rel);
                std::path::absolute(&p).unwrap_or(p)
            }
            Backing::PlainDir => {
                let depth = link_rel.split('/').count().saturating_sub(1);
                let mut p = PathBuf::new();
                for _ in 0..depth {
                    p.push("..");
                }
                p.join(target_rel)
            }
        }
    }
}

/// In a plain directory: does anything besides attribute files and default groups (a
/// child object, a link) keep the object from going away?
fn blocked_plain(dir: &Path, rel: &Path) -> io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let sub = rel.join(entry.file_name());
        let blocks = if ft.is_file() {
            false
        } else if ft.is_dir() && is_default_group(&sub) {
            blocked_plain(&entry.path(), &sub)?
        } else {
            true
        };
        if blocks {
            return Ok(true);
        }
    }
    Ok(false)
}

/// In a plain directory, removes what configfs removes with an object: its attribute
/// files and its default groups (checked empty by [`blocked_plain`]).
fn clear_plain(dir: &Path, rel: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let sub = rel.join(entry.file_name());
        if entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
        } else if is_default_group(&sub) {
            clear_plain(&entry.path(), &sub)?;
            std::fs::remove_dir(entry.path())?;
        }
    }
    Ok(())
}
