//! The target configuration: subsystems with their namespaces and allowed hosts, ports
//! with their linked subsystems, and hosts. It is what configfs holds below
//! `/sys/kernel/config/nvmet`, and (as [`SavedConfig`]) what `nvmet save` writes.
//!
//! Attributes are kept as the strings the kernel shows, under their configfs file names,
//! so a saved value is written back verbatim. Only the attributes listed in
//! [`facts::SUBSYS_ATTRS`] and [`facts::PORT_ATTRS`] are accepted from a file: a restore
//! never writes a file this module does not know.

use super::facts::{self, Transport};
use crate::nvmet_attr::{parse_user_setting, P2pmemSetting};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};

/// The `format` field of a saved configuration.
pub const FORMAT: &str = "p2pmem-nvmet";
/// The `version` field this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Longest NQN the kernel accepts (`NVMF_NQN_SIZE`, 223 bytes).
pub const NQN_MAX: usize = 223;
/// The well-known discovery NQN; configfs refuses to create it.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// Longest attribute value accepted from a file (configfs hands a store one page).
pub const VALUE_MAX: usize = 4095;

/// The whole target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetConfig {
    /// Host NQNs (`hosts/<hostnqn>`), sorted.
    pub hosts: Vec<String>,
    /// Subsystems, sorted by NQN.
    pub subsystems: Vec<Subsystem>,
    /// Ports, sorted by id.
    pub ports: Vec<Port>,
}

/// One subsystem (`subsystems/<nqn>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subsystem {
    /// Its NQN (the directory name).
    pub nqn: String,
    /// `attr_allow_any_host`: any host may connect (then `allowed_hosts` must be empty).
    #[serde(default)]
    pub allow_any_host: bool,
    /// The other `attr_*` files, as shown (`attr_serial` → `8c1e...`).
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
    /// Host NQNs linked in `allowed_hosts/`, sorted.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Namespaces, sorted by nsid.
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
}

/// One namespace (`subsystems/<nqn>/namespaces/<nsid>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// Namespace id, 1 ..= 0xfffffffe.
    pub nsid: u32,
    /// `device_path`: a block device or a file; empty when unset.
    #[serde(default)]
    pub device_path: String,
    /// `device_uuid`, as shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_uuid: Option<String>,
    /// `device_nguid`, as shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_nguid: Option<String>,
    /// `buffered_io` (file backend only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffered_io: Option<bool>,
    /// `p2pmem` in this tool's spelling (`off`, `auto`, a BDF); absent when the kernel
    /// has no such attribute (built without `CONFIG_PCI_P2PDMA`).
    #[serde(
        default,
        serialize_with = "ser_setting",
        deserialize_with = "de_setting",
        skip_serializing_if = "Option::is_none"
    )]
    pub p2pmem: Option<P2pmemSetting>,
    /// `enable`.
    #[serde(default)]
    pub enable: bool,
}

impl Namespace {
    /// A disabled namespace on `device_path` with nothing else set.
    pub fn new(nsid: u32, device_path: impl Into<String>) -> Self {
        Self {
            nsid,
            device_path: device_path.into(),
            device_uuid: None,
            device_nguid: None,
            buffered_io: None,
            p2pmem: None,
            enable: false,
        }
    }

    /// The setting, `off` when the attribute is absent.
    pub fn setting(&self) -> P2pmemSetting {
        self.p2pmem.unwrap_or(P2pmemSetting::Off)
    }
}

/// One port (`ports/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Port id (the directory name, a 16-bit number).
    pub id: u16,
    /// `addr_*` and `param_*` files, as shown; empty values are unset.
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
    /// Subsystem NQNs linked in `subsystems/`, sorted.
    #[serde(default)]
    pub subsystems: Vec<String>,
}

impl Port {
    /// An attribute's value, `""` when absent.
    pub fn attr(&self, name: &str) -> &str {
        self.attrs.get(name).map_or("", String::as_str)
    }

    /// The transport (`addr_trtype`).
    pub fn transport(&self) -> Transport {
        Transport::parse(self.attr("addr_trtype"))
    }
}

impl TargetConfig {
    /// Sorts every list, so that equal configurations compare equal.
    pub fn normalize(&mut self) {
        self.hosts.sort();
        self.hosts.dedup();
        self.subsystems.sort_by(|a, b| a.nqn.cmp(&b.nqn));
        for s in &mut self.subsystems {
            s.allowed_hosts.sort();
            s.allowed_hosts.dedup();
            s.namespaces.sort_by_key(|n| n.nsid);
        }
        self.ports.sort_by_key(|p| p.id);
        for p in &mut self.ports {
            p.subsystems.sort();
            p.subsystems.dedup();
        }
    }

    /// The subsystem called `nqn`.
    pub fn subsystem(&self, nqn: &str) -> Option<&Subsystem> {
        self.subsystems.iter().find(|s| s.nqn == nqn)
    }

    /// The port `id`.
    pub fn port(&self, id: u16) -> Option<&Port> {
        self.ports.iter().find(|p| p.id == id)
    }

    /// The ports `nqn` is linked to.
    pub fn ports_of<'a>(&'a self, nqn: &'a str) -> impl Iterator<Item = &'a Port> + 'a {
        self.ports
            .iter()
            .filter(move |p| p.subsystems.iter().any(|s| s == nqn))
    }

    /// Checks what the kernel would refuse, or what this tool will not write.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = BTreeSet::new();
        for h in &self.hosts {
            check_nqn("host", h)?;
            if !seen.insert(h.as_str()) {
                return Err(ConfigError::Duplicate {
                    what: format!("host {h}"),
                });
            }
        }
        let mut nqns = BTreeSet::new();
        for s in &self.subsystems {
            check_nqn("subsystem", &s.nqn)?;
            if !nqns.insert(s.nqn.as_str()) {
                return Err(ConfigError::Duplicate {
                    what: format!("subsystem {}", s.nqn),
                });
            }
            check_subsystem(s, &seen)?;
        }
        let mut ids = BTreeSet::new();
        for p in &self.ports {
            if !ids.insert(p.id) {
                return Err(ConfigError::Duplicate {
                    what: format!("port {}", p.id),
                });
            }
            for (k, v) in &p.attrs {
                check_attr(&format!("port {}", p.id), facts::PORT_ATTRS, k, v)?;
            }
            for n in &p.subsystems {
                if !nqns.contains(n.as_str()) {
                    return Err(ConfigError::Missing {
                        owner: format!("port {}", p.id),
                        what: format!("subsystem {n}"),
                    });
                }
            }
        }
        Ok(())
    }
}

fn check_subsystem(s: &Subsystem, hosts: &BTreeSet<&str>) -> Result<(), ConfigError> {
    let owner = format!("subsystem {}", s.nqn);
    for (k, v) in &s.attrs {
        check_attr(&owner, facts::SUBSYS_ATTRS, k, v)?;
    }
    if s.allow_any_host && !s.allowed_hosts.is_empty() {
        return Err(ConfigError::AnyHostWithHosts { nqn: s.nqn.clone() });
    }
    for h in &s.allowed_hosts {
        if !hosts.contains(h.as_str()) {
            return Err(ConfigError::Missing {
                owner: owner.clone(),
                what: format!("host {h} (list it under hosts)"),
            });
        }
    }
    let mut nsids = BTreeSet::new();
    for ns in &s.namespaces {
        if ns.nsid == 0 || ns.nsid == u32::MAX {
            return Err(ConfigError::Nsid {
                nqn: s.nqn.clone(),
                nsid: ns.nsid,
            });
        }
        if !nsids.insert(ns.nsid) {
            return Err(ConfigError::Duplicate {
                what: format!("namespace {} of {}", ns.nsid, s.nqn),
            });
        }
        let ns_owner = format!("namespace {} of {}", ns.nsid, s.nqn);
        for (k, v) in [
            ("device_path", Some(&ns.device_path)),
            ("device_uuid", ns.device_uuid.as_ref()),
            ("device_nguid", ns.device_nguid.as_ref()),
        ] {
            if let Some(v) = v {
                check_value(&ns_owner, k, v)?;
            }
        }
        if ns.enable && ns.device_path.is_empty() {
            return Err(ConfigError::Value {
                owner: ns_owner,
                attr: "device_path".into(),
                why: "an enabled namespace needs a device path",
            });
        }
    }
    Ok(())
}

/// Is `nqn` a name configfs can create? (Not empty, at most 223 bytes, no `/`, no
/// control characters, not `.`/`..`, not the discovery NQN.)
pub fn check_nqn(what: &'static str, nqn: &str) -> Result<(), ConfigError> {
    let why = if nqn.is_empty() {
        Some("it is empty")
    } else if nqn.len() > NQN_MAX {
        Some("it is longer than 223 bytes")
    } else if nqn.contains('/') {
        Some("it contains '/'")
    } else if nqn.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if nqn == "." || nqn == ".." {
        Some("it is not a name")
    } else if nqn == DISCOVERY_NQN {
        Some("it is the discovery NQN, which configfs cannot create")
    } else {
        None
    };
    match why {
        Some(why) => Err(ConfigError::Nqn {
            what,
            nqn: nqn.chars().take(240).collect(),
            why,
        }),
        None => Ok(()),
    }
}

fn check_attr(
    owner: &str,
    known: &[facts::AttrFact],
    name: &str,
    value: &str,
) -> Result<(), ConfigError> {
    if !known.iter().any(|a| a.name == name) {
        return Err(ConfigError::UnknownAttr {
            owner: owner.to_string(),
            attr: name.chars().take(80).collect(),
        });
    }
    check_value(owner, name, value)
}

fn check_value(owner: &str, name: &str, value: &str) -> Result<(), ConfigError> {
    let why = if value.len() > VALUE_MAX {
        Some("longer than one page")
    } else if value.contains(['\n', '\0']) {
        Some("it contains a newline or NUL")
    } else {
        None
    };
    match why {
        Some(why) => Err(ConfigError::Value {
            owner: owner.to_string(),
            attr: name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not a usable NQN.
    #[error("{what} NQN '{nqn}' cannot be used: {why}")]
    Nqn {
        /// `subsystem` or `host`.
        what: &'static str,
        /// The NQN (shortened).
        nqn: String,
        /// Why.
        why: &'static str,
    },
    /// nsid 0 or 0xffffffff (the kernel refuses both).
    #[error("subsystem {nqn}: nsid {nsid} is reserved; use 1 ..= 4294967294")]
    Nsid {
        /// The subsystem.
        nqn: String,
        /// The nsid.
        nsid: u32,
    },
    /// Listed twice.
    #[error("{what} appears twice")]
    Duplicate {
        /// What.
        what: String,
    },
    /// An attribute this tool does not write.
    #[error("{owner}: unknown attribute '{attr}' (this tool writes only the attributes it knows)")]
    UnknownAttr {
        /// The object.
        owner: String,
        /// The attribute name (shortened).
        attr: String,
    },
    /// A value that cannot be written.
    #[error("{owner}: value of {attr} cannot be written: {why}")]
    Value {
        /// The object.
        owner: String,
        /// The attribute.
        attr: String,
        /// Why.
        why: &'static str,
    },
    /// A reference to something not in the configuration.
    #[error("{owner} refers to {what}, which is not in the configuration")]
    Missing {
        /// The referring object.
        owner: String,
        /// What it refers to.
        what: String,
    },
    /// `allow_any_host` with explicit hosts: the kernel refuses this (EINVAL).
    #[error("subsystem {nqn}: allow_any_host cannot be set while allowed_hosts lists hosts (the kernel refuses it with EINVAL)")]
    AnyHostWithHosts {
        /// The subsystem.
        nqn: String,
    },
    /// Not a file this tool wrote.
    #[error("not a p2pmem nvmet configuration: format is '{found}', expected '{FORMAT}'")]
    Format {
        /// The format field found.
        found: String,
    },
    /// A newer format.
    #[error("configuration format version {found} is not supported (this p2pmem reads version {FORMAT_VERSION})")]
    Version {
        /// The version found.
        found: u32,
    },
}

/// A configuration as a file: [`TargetConfig`] with a format tag and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedConfig {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Host NQNs.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Subsystems.
    #[serde(default)]
    pub subsystems: Vec<Subsystem>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<Port>,
}

impl SavedConfig {
    /// The file form of `config`.
    pub fn new(config: &TargetConfig) -> Self {
        Self {
            format: FORMAT.to_string(),
            version: FORMAT_VERSION,
            hosts: config.hosts.clone(),
            subsystems: config.subsystems.clone(),
            ports: config.ports.clone(),
        }
    }

    /// The configuration, normalized and validated.
    pub fn into_config(self) -> Result<TargetConfig, ConfigError> {
        if self.format != FORMAT {
            return Err(ConfigError::Format {
                found: self.format.chars().take(80).collect(),
            });
        }
        if self.version != FORMAT_VERSION {
            return Err(ConfigError::Version {
                found: self.version,
            });
        }
        let mut c = TargetConfig {
            hosts: self.hosts,
            subsystems: self.subsystems,
            ports: self.ports,
        };
        c.normalize();
        c.validate()?;
        Ok(c)
    }
}

// `Option` is handled by `default` + `skip_serializing_if`, so these see only `Some`.
#[expect(
    clippy::ref_option,
    reason = "serde's serialize_with hands over &Option<T>"
)]
fn ser_setting<S: Serializer>(v: &Option<P2pmemSetting>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(setting) => s.collect_str(setting),
        None => s.serialize_none(),
    }
}

fn de_setting<'de, D: Deserializer<'de>>(d: D) -> Result<Option<P2pmemSetting>, D::Error> {
    let text = String::deserialize(d)?;
    parse_user_setting(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}
