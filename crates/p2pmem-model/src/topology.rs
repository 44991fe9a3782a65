//! The PCI topology as P2PDMA sees it: functions, upstream chains, host bridges.
//!
//! A function's upstream chain is itself, then each bridge above it, ending at the device
//! on the root bus (a root port or an RCiEP); the host bridge is never in the chain. In
//! sysfs the chain is the list of `DDDD:BB:DD.F` components of the function's real path
//! after `pciDDDD:BB`, read from the end. A host bridge is judged by its representative:
//! the first device on its root bus (lowest devfn at boot).

use crate::acs::{AcsState, AcsUnknown};
use crate::bdf::{Bdf, HostBridgeId};
use crate::config_space::{ConfigSpace, PortType};
use crate::kernel_version::KernelVersion;
use crate::whitelist;
use serde::Serialize;
use std::collections::BTreeMap;

/// A function's `p2pmem/` directory: it is a P2PDMA provider with a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct P2pmemInfo {
    /// `p2pmem/size` in bytes (`None` when unreadable or malformed).
    pub size: Option<u64>,
    /// `p2pmem/available` in bytes.
    pub available: Option<u64>,
    /// `p2pmem/published`.
    pub published: Option<bool>,
}

impl P2pmemInfo {
    /// Published for in-kernel users (`find`, nvmet). Unknown counts as not published.
    pub fn is_published(&self) -> bool {
        self.published == Some(true)
    }
}

/// One PCI function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Function {
    /// Its address.
    pub bdf: Bdf,
    /// The host bridge it sits below.
    pub host_bridge: HostBridgeId,
    /// The functions from the root-bus device down to this one (inclusive).
    pub path: Vec<Bdf>,
    /// Vendor ID (from sysfs `vendor`, or config space).
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// 24-bit class code.
    pub class: u32,
    /// Config space, when readable.
    #[serde(skip)]
    pub config: Option<ConfigSpace>,
    /// Bound driver name, if known.
    pub driver: Option<String>,
    /// P2PDMA provider state, if it has `p2pmem/`.
    pub p2pmem: Option<P2pmemInfo>,
    /// ACS as a what-if (`crate::whatif`) set it, instead of the config space's.
    #[serde(skip)]
    pub acs_override: Option<AcsState>,
}

impl Function {
    /// ACS as far as the config space shows it.
    pub fn acs(&self) -> AcsState {
        if let Some(a) = self.acs_override {
            return a;
        }
        match &self.config {
            Some(cs) => cs.acs(),
            None => AcsState::Unknown {
                reason: AcsUnknown::ConfigUnreadable,
            },
        }
    }

    /// PCIe port type, if readable and PCIe.
    pub fn port_type(&self) -> Option<PortType> {
        self.config.as_ref().and_then(ConfigSpace::port_type)
    }

    /// Is it a PCI-to-PCI bridge (class 0x0604)?
    pub fn is_bridge(&self) -> bool {
        self.class >> 8 == 0x0604
    }

    /// Is it an NVMe controller (class 0x010802)?
    pub fn is_nvme(&self) -> bool {
        self.class == 0x010802
    }

    /// The name the kernel prints before this device's messages: the bound driver, else
    /// the driver the kernel binds to this class (nvme for NVMe, pcieport for PCIe
    /// ports), else `pci` (an unbound device prints its bus name).
    pub fn log_prefix_name(&self) -> &str {
        if let Some(d) = &self.driver {
            return d;
        }
        if self.is_nvme() {
            return "nvme";
        }
        match self.port_type() {
            Some(PortType::RootPort | PortType::UpstreamPort | PortType::DownstreamPort) => {
                "pcieport"
            }
            _ => "pci",
        }
    }
}

/// Why a topology could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// Two functions with one address.
    #[error("function {0} appears twice")]
    Duplicate(Bdf),
    /// A function's path does not end with itself.
    #[error("function {bdf}: its path does not end with itself")]
    BadPath {
        /// The function.
        bdf: Bdf,
    },
}

/// A host bridge's representative device and whether the whitelist can use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Representative {
    /// The device, if the root bus has any.
    pub bdf: Option<Bdf>,
    /// Vendor and device IDs of it.
    pub ids: Option<(u16, u16)>,
    /// Can the whitelist use it (devfn 00.0, or a root port from 5.19)? `None` when its
    /// port type cannot be read.
    pub usable: Option<bool>,
    /// Why, in words.
    pub why: String,
}

/// All functions of a system.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Topology {
    functions: BTreeMap<Bdf, Function>,
    /// The functions directly below each bridge, in address order (an index, so that
    /// walking a tree of thousands of functions is not quadratic).
    #[serde(skip)]
    children: BTreeMap<Bdf, Vec<Bdf>>,
}

impl Topology {
    /// Build from functions; each path must end with the function itself.
    pub fn new(functions: Vec<Function>) -> Result<Self, TopologyError> {
        let mut map = BTreeMap::new();
        for f in functions {
            if f.path.last() != Some(&f.bdf) {
                return Err(TopologyError::BadPath { bdf: f.bdf });
            }
            let bdf = f.bdf;
            if map.insert(bdf, f).is_some() {
                return Err(TopologyError::Duplicate(bdf));
            }
        }
        let mut children: BTreeMap<Bdf, Vec<Bdf>> = BTreeMap::new();
        for f in map.values() {
            if let [.., up, _] = f.path.as_slice() {
                children.entry(*up).or_default().push(f.bdf);
            }
        }
        Ok(Self {
            functions: map,
            children,
        })
    }

    /// Set what identifies a function (vendor, device, class, driver), read after the
    /// rest; `false` when there is no such function. Nothing a decision reads changes.
    pub fn set_identity(
        &mut self,
        bdf: &Bdf,
        (vendor, device, class): (u16, u16, u32),
        driver: Option<String>,
    ) -> bool {
        let Some(f) = self.functions.get_mut(bdf) else {
            return false;
        };
        (f.vendor, f.device, f.class, f.driver) = (vendor, device, class, driver);
        true
    }

    /// Set a function's p2pmem state, read after the rest; `false` when there is no such
    /// function.
    pub fn set_p2pmem(&mut self, bdf: &Bdf, p2pmem: P2pmemInfo) -> bool {
        let Some(f) = self.functions.get_mut(bdf) else {
            return false;
        };
        f.p2pmem = Some(p2pmem);
        true
    }

    /// A function by address.
    pub fn get(&self, bdf: &Bdf) -> Option<&Function> {
        self.functions.get(bdf)
    }

    /// All functions in address order.
    pub fn functions(&self) -> impl Iterator<Item = &Function> {
        self.functions.values()
    }

    /// Functions with `p2pmem/` (providers), in address order.
    pub fn providers(&self) -> impl Iterator<Item = &Function> {
        self.functions.values().filter(|f| f.p2pmem.is_some())
    }

    /// `pci_upstream_bridge()`: the bridge directly above, `None` on the root bus.
    pub fn upstream_bridge(&self, bdf: &Bdf) -> Option<Bdf> {
        let f = self.functions.get(bdf)?;
        let n = f.path.len();
        (n >= 2).then(|| f.path[n - 2])
    }

    /// The upstream chain: the function, then each bridge above it, up to the root bus.
    pub fn upstream_chain(&self, bdf: &Bdf) -> Vec<Bdf> {
        self.functions
            .get(bdf)
            .map(|f| f.path.iter().rev().copied().collect())
            .unwrap_or_default()
    }

    /// Functions directly below `bdf` (one level deeper in the path).
    pub fn children(&self, bdf: &Bdf) -> impl Iterator<Item = &Function> + '_ {
        self.children
            .get(bdf)
            .into_iter()
            .flatten()
            .filter_map(|b| self.functions.get(b))
    }

    /// Host bridges, in order.
    pub fn host_bridges(&self) -> Vec<HostBridgeId> {
        let mut v: Vec<HostBridgeId> = self.functions.values().map(|f| f.host_bridge).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Functions on the root bus of `hb`, in devfn order.
    pub fn root_bus_functions(&self, hb: HostBridgeId) -> impl Iterator<Item = &Function> + '_ {
        self.functions
            .values()
            .filter(move |f| f.host_bridge == hb && f.path.len() == 1)
    }

    /// The representative device of `hb` as `kernel` chooses it (§3.1): from 5.19 the
    /// first device on the root bus, usable if devfn 00.0 or a root port; before 5.19
    /// the device at devfn 00.0.
    pub fn representative(&self, hb: HostBridgeId, kernel: KernelVersion) -> Representative {
        let first = self
            .root_bus_functions(hb)
            .filter(|f| f.bdf.bus == hb.bus)
            .min_by_key(|f| f.bdf.devfn());
        let Some(first) = first else {
            return Representative {
                bdf: None,
                ids: None,
                usable: Some(false),
                why: format!("{hb} has no device on its root bus"),
            };
        };
        // Neither config space nor sysfs gave its IDs (read as ffff): what the whitelist
        // would say is unknown, not a refusal (an import of `lspci -tv` without -nn).
        if first.config.is_none() && first.vendor == 0xffff {
            return Representative {
                bdf: Some(first.bdf),
                ids: None,
                usable: None,
                why: format!(
                    "{} is the first device on the root bus of {hb}; its vendor and device IDs cannot be read",
                    first.bdf
                ),
            };
        }
        let ids = Some((first.vendor, first.device));
        if first.bdf.devfn() == 0 {
            return Representative {
                bdf: Some(first.bdf),
                ids,
                usable: Some(true),
                why: format!("{} is devfn 00.0 on the root bus of {hb}", first.bdf),
            };
        }
        if !whitelist::ROOT_PORT_REPRESENTATIVE.contains(kernel) {
            return Representative {
                bdf: None,
                ids: None,
                usable: Some(false),
                why: format!(
                    "{hb} has no device at devfn 00.0, and kernel {kernel} (before 5.19) looks only there"
                ),
            };
        }
        match first.port_type() {
            Some(PortType::RootPort) => Representative {
                bdf: Some(first.bdf),
                ids,
                usable: Some(true),
                why: format!("{} is the first device on the root bus of {hb} and a root port", first.bdf),
            },
            Some(_) => Representative {
                bdf: Some(first.bdf),
                ids,
                usable: Some(false),
                why: format!(
                    "{} is the first device on the root bus of {hb} but neither devfn 00.0 nor a root port, so the whitelist can never match",
                    first.bdf
                ),
            },
            None => Representative {
                bdf: Some(first.bdf),
                ids,
                usable: if first.config.as_ref().is_some_and(|c| !c.is_truncated()) {
                    Some(false)
                } else {
                    None
                },
                why: format!(
                    "{} is the first device on the root bus of {hb}; whether it is a root port cannot be read",
                    first.bdf
                ),
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config_space::tests::pcie_function;

    pub(crate) fn bdf(s: &str) -> Bdf {
        s.parse().unwrap()
    }

    /// A function at `path` (root-bus device first) with the given PCIe port type and
    /// optional ACS control value; `None` port = conventional 256-byte device.
    pub(crate) fn func(path: &[&str], port: Option<u8>, acs: Option<u16>) -> Function {
        let path: Vec<Bdf> = path.iter().map(|s| bdf(s)).collect();
        let me = *path.last().unwrap();
        let (config, class) = match port {
            Some(p) => {
                let bytes = pcie_function(p, acs);
                let class = if matches!(p, 4..=6) {
                    0x060400
                } else {
                    0x010802
                };
                (ConfigSpace::from_bytes(&bytes).ok(), class)
            }
            None => {
                let mut b = vec![0u8; 256];
                b[0] = 0x86;
                b[1] = 0x80;
                (ConfigSpace::from_bytes(&b).ok(), 0x060000)
            }
        };
        Function {
            bdf: me,
            host_bridge: HostBridgeId {
                domain: me.domain,
                bus: path[0].bus,
            },
            path,
            vendor: 0x1b36,
            device: 0x0010,
            class,
            config,
            driver: None,
            acs_override: None,
            p2pmem: None,
        }
    }

    #[test]
    fn chains_and_bridges() {
        let t = Topology::new(vec![
            func(&["00:04.0"], Some(4), Some(0)),
            func(&["00:04.0", "01:00.0"], Some(5), None),
            func(&["00:04.0", "01:00.0", "02:00.0"], Some(6), None),
            func(&["00:04.0", "01:00.0", "02:00.0", "03:00.0"], Some(0), None),
        ])
        .unwrap();
        let ep = bdf("03:00.0");
        assert_eq!(
            t.upstream_chain(&ep),
            vec![ep, bdf("02:00.0"), bdf("01:00.0"), bdf("00:04.0")]
        );
        assert_eq!(t.upstream_bridge(&ep), Some(bdf("02:00.0")));
        assert_eq!(t.upstream_bridge(&bdf("00:04.0")), None);
        assert_eq!(t.children(&bdf("01:00.0")).count(), 1);
        assert_eq!(t.host_bridges(), vec![HostBridgeId { domain: 0, bus: 0 }]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut f = func(&["00:04.0"], Some(4), None);
        f.path = vec![bdf("00:05.0")];
        assert!(Topology::new(vec![f]).is_err());
        let f = func(&["00:04.0"], Some(4), None);
        assert_eq!(
            Topology::new(vec![f.clone(), f]).unwrap_err(),
            TopologyError::Duplicate(bdf("00:04.0"))
        );
    }

    #[test]
    fn representative_rules_by_version() {
        let new = KernelVersion::new(6, 12, 0);
        let old = KernelVersion::new(5, 15, 0);
        // pxb-pcie style: the first device on bus 0x80 is a root port at 80:00.0.
        let t = Topology::new(vec![
            func(&["80:00.0"], Some(4), None),
            func(&["00:00.0"], None, None),
        ])
        .unwrap();
        let hb80 = HostBridgeId {
            domain: 0,
            bus: 0x80,
        };
        assert_eq!(t.representative(hb80, new).usable, Some(true));
        // A root port at a non-zero devfn counts only from 5.19.
        let t = Topology::new(vec![
            func(&["00:01.0"], Some(4), None),
            func(&["00:02.0"], Some(0), None),
        ])
        .unwrap();
        let hb0 = HostBridgeId { domain: 0, bus: 0 };
        let r = t.representative(hb0, new);
        assert_eq!((r.bdf, r.usable), (Some(bdf("00:01.0")), Some(true)));
        assert_eq!(t.representative(hb0, old).usable, Some(false));
        // An endpoint first at a non-zero devfn never matches.
        let t = Topology::new(vec![
            func(&["00:02.0"], Some(0), None),
            func(&["00:03.0"], Some(4), None),
        ])
        .unwrap();
        assert_eq!(t.representative(hb0, new).usable, Some(false));
    }
}
