//! Reading the target configuration from the nvmet tree: subsystems with their
//! attributes, namespaces and allowed hosts, ports with their attributes and links, and
//! hosts. What the save format does not hold (ANA groups, referrals, passthru, host
//! keys) is listed so that `save` can say so.

use super::{NvmetError, Target, NVMET_DIR};
use crate::rootfs::FsError;
use p2pmem_model::limits;
use p2pmem_model::nvmet_attr::parse_p2pmem_show;
use p2pmem_model::nvmet_plan::config::{Namespace, Port, Subsystem, TargetConfig};
use p2pmem_model::nvmet_plan::facts::{PORT_ATTRS, SUBSYS_ATTRS};
use serde::Serialize;
use std::io;

/// Something present in the tree that the configuration does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Extra {
    /// Path relative to the nvmet directory.
    pub path: String,
    /// What it is.
    pub what: String,
}

/// The configuration as read, and what it leaves out.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The configuration (normalized).
    pub config: TargetConfig,
    /// Present but not part of the configuration.
    pub not_saved: Vec<Extra>,
}

impl Target {
    /// A file's content without its trailing newline; `None` when it does not exist.
    pub fn value(&self, rel: &str) -> Result<Option<String>, NvmetError> {
        match self
            .fs
            .read(format!("{NVMET_DIR}/{rel}"), limits::SYSFS_ATTR)
        {
            Ok(b) => {
                let s = String::from_utf8_lossy(&b);
                Ok(Some(s.strip_suffix('\n').unwrap_or(&s).to_string()))
            }
            Err(FsError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn flag(&self, rel: &str) -> Result<Option<bool>, NvmetError> {
        match self.value(rel)?.as_deref() {
            None => Ok(None),
            Some("0") => Ok(Some(false)),
            Some("1") => Ok(Some(true)),
            Some(other) => Err(NvmetError::Parse {
                path: self.path(rel),
                content: other.chars().take(40).collect(),
                why: "expected 0 or 1".into(),
            }),
        }
    }

    /// Entries of a directory that are directories (not links), sorted.
    fn dirs(&self, rel: &str) -> Result<Vec<String>, NvmetError> {
        let base = self.path(rel);
        Ok(self
            .fs
            .list(format!("{NVMET_DIR}/{rel}"))?
            .into_iter()
            .filter(|n| {
                std::fs::symlink_metadata(base.join(n)).is_ok_and(|m| m.file_type().is_dir())
            })
            .collect())
    }

    /// The names of the objects the links in a directory point to, sorted.
    fn links(&self, rel: &str) -> Result<Vec<String>, NvmetError> {
        let base = self.path(rel);
        let mut out = Vec::new();
        for n in self.fs.list(format!("{NVMET_DIR}/{rel}"))? {
            let p = base.join(&n);
            let Ok(target) = std::fs::read_link(&p) else {
                continue;
            };
            let name = target
                .file_name()
                .map_or(n, |t| t.to_string_lossy().into_owned());
            out.push(name);
        }
        out.sort();
        Ok(out)
    }

    /// Reads the whole configuration.
    pub fn read(&self) -> Result<Snapshot, NvmetError> {
        let mut extras = Vec::new();
        let mut config = TargetConfig {
            hosts: self.dirs("hosts")?,
            ..TargetConfig::default()
        };
        for h in &config.hosts {
            for key in ["dhchap_key", "dhchap_ctrl_key"] {
                if self
                    .value(&format!("hosts/{h}/{key}"))?
                    .is_some_and(|v| !v.is_empty())
                {
                    extras.push(Extra {
                        path: format!("hosts/{h}/{key}"),
                        what: "a DH-HMAC-CHAP secret (never saved)".into(),
                    });
                }
            }
        }
        for nqn in self.dirs("subsystems")? {
            config.subsystems.push(self.subsystem(&nqn, &mut extras)?);
        }
        for name in self.dirs("ports")? {
            let Ok(id) = name.parse::<u16>() else {
                extras.push(Extra {
                    path: format!("ports/{name}"),
                    what: "a port whose name is not a decimal number (not saved)".into(),
                });
                continue;
            };
            config.ports.push(self.port(id, &mut extras)?);
        }
        config.normalize();
        Ok(Snapshot {
            config,
            not_saved: extras,
        })
    }

    fn subsystem(&self, nqn: &str, extras: &mut Vec<Extra>) -> Result<Subsystem, NvmetError> {
        let base = format!("subsystems/{nqn}");
        let mut attrs = std::collections::BTreeMap::new();
        for a in SUBSYS_ATTRS {
            // Empty means unset; a restore never writes an empty value.
            if let Some(v) = self.value(&format!("{base}/{}", a.name))? {
                if !v.is_empty() {
                    attrs.insert(a.name.to_string(), v);
                }
            }
        }
        if self.flag(&format!("{base}/passthru/enable"))? == Some(true) {
            extras.push(Extra {
                path: format!("{base}/passthru"),
                what: "a passthru controller (not saved)".into(),
            });
        }
        let mut namespaces = Vec::new();
        for name in self.dirs(&format!("{base}/namespaces"))? {
            let Ok(nsid) = name.parse::<u32>() else {
                extras.push(Extra {
                    path: format!("{base}/namespaces/{name}"),
                    what: "a namespace whose name is not a decimal number (not saved)".into(),
                });
                continue;
            };
            namespaces.push(self.namespace(&format!("{base}/namespaces/{name}"), nsid, extras)?);
        }
        Ok(Subsystem {
            nqn: nqn.to_string(),
            allow_any_host: self
                .flag(&format!("{base}/attr_allow_any_host"))?
                .unwrap_or(false),
            attrs,
            allowed_hosts: self.links(&format!("{base}/allowed_hosts"))?,
            namespaces,
        })
    }

    fn namespace(
        &self,
        base: &str,
        nsid: u32,
        extras: &mut Vec<Extra>,
    ) -> Result<Namespace, NvmetError> {
        let p2pmem = match self.value(&format!("{base}/p2pmem"))? {
            None => None,
            Some(v) => Some(
                parse_p2pmem_show(v.as_bytes()).map_err(|e| NvmetError::Parse {
                    path: self.path(&format!("{base}/p2pmem")),
                    content: v.chars().take(40).collect(),
                    why: e.to_string(),
                })?,
            ),
        };
        if let Some(g) = self.value(&format!("{base}/ana_grpid"))? {
            if g != "1" {
                extras.push(Extra {
                    path: format!("{base}/ana_grpid"),
                    what: format!(
                        "ANA group {g} (ANA groups are not saved; restore leaves group 1)"
                    ),
                });
            }
        }
        Ok(Namespace {
            nsid,
            device_path: self
                .value(&format!("{base}/device_path"))?
                .unwrap_or_default(),
            device_uuid: self.value(&format!("{base}/device_uuid"))?,
            device_nguid: self.value(&format!("{base}/device_nguid"))?,
            buffered_io: self.flag(&format!("{base}/buffered_io"))?,
            p2pmem,
            enable: self.flag(&format!("{base}/enable"))?.unwrap_or(false),
        })
    }

    fn port(&self, id: u16, extras: &mut Vec<Extra>) -> Result<Port, NvmetError> {
        let base = format!("ports/{id}");
        let mut attrs = std::collections::BTreeMap::new();
        for a in PORT_ATTRS {
            if let Some(v) = self.value(&format!("{base}/{}", a.name))? {
                if !v.is_empty() {
                    attrs.insert(a.name.to_string(), v);
                }
            }
        }
        if !self.dirs(&format!("{base}/referrals"))?.is_empty() {
            extras.push(Extra {
                path: format!("{base}/referrals"),
                what: "discovery referrals (not saved)".into(),
            });
        }
        for g in self.dirs(&format!("{base}/ana_groups"))? {
            if g != "1" {
                extras.push(Extra {
                    path: format!("{base}/ana_groups/{g}"),
                    what: "an ANA group (not saved)".into(),
                });
            }
        }
        Ok(Port {
            id,
            attrs,
            subsystems: self.links(&format!("{base}/subsystems"))?,
        })
    }
}
