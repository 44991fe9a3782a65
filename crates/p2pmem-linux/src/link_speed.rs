//! PCIe link speed and width from sysfs: `current_link_speed`, `current_link_width`,
//! `max_link_speed` and `max_link_width` of each PCI function (the link to its parent
//! for an endpoint or an upstream port; the link below for a root or downstream port).
//! Missing files (conventional PCI, some emulated devices, captures made before
//! `p2pmem capture` copied them) leave the link unknown; the text is parsed by the model.

use crate::rootfs::RootFs;
use crate::system::PCI_DEVICES;
use p2pmem_model::plan::link::{LinkFacts, LinkSpeed};
use p2pmem_model::topology::Topology;
use p2pmem_model::Bdf;
use std::collections::BTreeMap;
use std::path::Path;

/// The files read, in the order `p2pmem capture` copies them.
pub const LINK_FILES: [&str; 4] = [
    "current_link_speed",
    "current_link_width",
    "max_link_speed",
    "max_link_width",
];

/// What was read: facts per function, and the functions without any.
#[derive(Debug, Clone, Default)]
pub struct LinkRead {
    /// Per function with at least one readable pair.
    pub links: BTreeMap<Bdf, LinkFacts>,
    /// Functions whose files are missing or unreadable.
    pub unknown: Vec<Bdf>,
    /// Unreadable files (not missing ones), with why.
    pub problems: Vec<String>,
}

/// Read the link files of every function of `topo` below `root`.
pub fn read_link_speeds(root: &Path, topo: &Topology) -> LinkRead {
    let fs = RootFs::new(root);
    let mut out = LinkRead::default();
    for f in topo.functions() {
        let mut text = |name: &str| -> Option<String> {
            match fs.read_opt_string(format!("{PCI_DEVICES}/{}/{name}", f.bdf)) {
                Ok(v) => v,
                Err(e) => {
                    out.problems.push(e.to_string());
                    None
                }
            }
        };
        let pair = |s: Option<String>, w: Option<String>| {
            LinkSpeed::from_sysfs(s.as_deref()?, w.as_deref()?)
        };
        let current = pair(text(LINK_FILES[0]), text(LINK_FILES[1]));
        let max = pair(text(LINK_FILES[2]), text(LINK_FILES[3]));
        if current.is_none() && max.is_none() {
            out.unknown.push(f.bdf);
        } else {
            out.links.insert(f.bdf, LinkFacts { current, max });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pmem_model::topology::Function;

    fn func(bdf: &str) -> Function {
        let b: Bdf = bdf.parse().unwrap();
        Function {
            bdf: b,
            host_bridge: p2pmem_model::HostBridgeId { domain: 0, bus: 0 },
            path: vec![b],
            vendor: 0x1b36,
            device: 0x10,
            class: 0x010802,
            config: None,
            driver: None,
            p2pmem: None,
            acs_override: None,
        }
    }

    #[test]
    fn speeds_are_read_and_missing_ones_are_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("sys/bus/pci/devices/0000:00:03.0");
        std::fs::create_dir_all(&d).unwrap();
        for (f, v) in LINK_FILES
            .iter()
            .zip(["16.0 GT/s PCIe\n", "4\n", "32.0 GT/s PCIe\n", "16\n"])
        {
            std::fs::write(d.join(f), v).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("sys/bus/pci/devices/0000:00:04.0")).unwrap();
        let topo = Topology::new(vec![func("00:03.0"), func("00:04.0")]).unwrap();
        let r = read_link_speeds(dir.path(), &topo);
        let l = r.links[&"00:03.0".parse().unwrap()];
        assert_eq!(l.current, Some("gen4x4".parse().unwrap()));
        assert_eq!(l.max, Some("gen5x16".parse().unwrap()));
        assert_eq!(r.unknown, vec!["00:04.0".parse().unwrap()]);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }
}
