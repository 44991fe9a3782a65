//! What a scoped read takes in full: the functions some names stand for, with their
//! bridges and root buses, and (for `find`) every provider, read for decisions only, whose
//! identity is completed afterwards for what gets printed.

use super::{driver_of, Classes, Located, Reader, System};
use crate::rootfs::RootFs;
use p2pmem_model::topology::P2pmemInfo;
use p2pmem_model::{Bdf, HostBridgeId};
use rustc_hash::FxHashSet;

/// Which PCI functions [`read_system_scoped`](crate::system::read_system_scoped) reads in
/// full. Every function is located either way (its address and upstream chain, from its
/// sysfs link).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// All of them.
    #[default]
    All,
    /// What deciding for some functions needs: the functions these names stand for (as
    /// [`crate::resolve::resolve_client`] reads them), the bridges above them and the
    /// functions on the root bus of their host bridges (where the whitelist finds its
    /// representative); with `providers`, also every function with `p2pmem/`, the root
    /// bus of its host bridge and, when its path meets a named function's, the bridges
    /// above it (sharing no device with any, a provider maps through the host bridge
    /// whatever their ACS). Every P2PDMA decision among the named functions and the
    /// providers is the one the full read gives; problems with the files of other
    /// functions go unreported. Providers and their bridges that no name asked for are
    /// read for decisions only (see [`System::ids_from_config`]).
    For {
        /// Names of functions (PCI addresses, block, NVMe or RDMA device names).
        names: Vec<String>,
        /// Also every provider (`find`).
        providers: bool,
    },
}

/// The functions `scope` asks for among `located`, with their bridges and the functions
/// on the root buses of their host bridges. When it asks for providers, `located` says
/// whether each has `p2pmem/` (`read_system_scoped` looks as it locates them).
pub(super) fn wanted(
    located: &mut [Located],
    scope: &Scope,
    classes: &Classes,
) -> Option<FxHashSet<Bdf>> {
    let Scope::For { names, .. } = scope else {
        return None;
    };
    let mut seeds: FxHashSet<Bdf> = FxHashSet::default();
    for name in names {
        let trimmed = name.trim();
        if let Ok(bdf) = trimmed.parse::<Bdf>() {
            seeds.insert(bdf);
            continue;
        }
        let short = trimmed.strip_prefix("/dev/").unwrap_or(trimmed);
        let (nvme, block, rdma) = classes;
        for b in block.iter().filter(|b| b.name == short) {
            seeds.extend(&b.bdfs);
        }
        seeds.extend(
            nvme.iter()
                .filter(|c| c.name == short)
                .filter_map(|c| c.bdf),
        );
        seeds.extend(
            rdma.iter()
                .filter(|r| r.name == short)
                .filter_map(|r| r.bdf),
        );
    }
    // In full: the named functions, their bridges and the root buses; for decisions
    // only (no IDs beyond config space): providers and, where a provider's path meets a
    // named function's, its bridges. The kernel tests ACS on a pair's paths only up to
    // the device they share (`calc_map_type_and_dist`): a provider whose path shares
    // none with any named function's maps through the host bridge whatever its
    // bridges' ACS, and its distance is its path's length, known from where it is.
    let mut full: FxHashSet<Bdf> = FxHashSet::default();
    let mut decision: FxHashSet<Bdf> = FxHashSet::default();
    let mut bridges: FxHashSet<HostBridgeId> = FxHashSet::default();
    for l in located.iter().filter(|l| seeds.contains(&l.bdf)) {
        full.extend(&l.path);
        bridges.insert(l.host_bridge);
    }
    for l in located.iter() {
        if seeds.contains(&l.bdf) || l.has_p2pmem != Some(true) {
            continue;
        }
        if l.path.iter().any(|b| full.contains(b)) {
            decision.extend(&l.path);
        } else {
            decision.insert(l.bdf);
        }
        bridges.insert(l.host_bridge);
    }
    full.extend(
        located
            .iter()
            .filter(|l| l.path.len() == 1 && bridges.contains(&l.host_bridge))
            .map(|l| l.bdf),
    );
    for l in located.iter_mut() {
        l.for_decision = decision.contains(&l.bdf) && !full.contains(&l.bdf);
    }
    full.extend(decision);
    Some(full)
}

/// Read in full the functions of `bdfs` that a scoped read left with IDs from config
/// space ([`System::ids_from_config`]): their sysfs `vendor`, `device`, `class`,
/// driver and p2pmem size and available bytes, as a full read has them. For what is
/// printed about them.
pub fn complete_ids(sys: &mut System, bdfs: &[Bdf]) {
    let mut r = Reader::new(
        RootFs::new(&sys.root),
        sys.import.as_ref().map(super::Imported::from_note),
    );
    for bdf in bdfs {
        let Some(i) = sys.ids_from_config.iter().position(|b| b == bdf) else {
            continue;
        };
        let Some(at) = r.locate(&bdf.to_string(), None) else {
            continue;
        };
        let Ok(d) = r.fs.open_dir(&at.dir) else {
            continue;
        };
        let Some(f) = sys.topology.get(bdf) else {
            continue;
        };
        let (vendor, device, class, f_p2pmem) = (f.vendor, f.device, f.class, f.p2pmem);
        let id = |file: &str, v: u32| d.read_hex(file).unwrap_or(v);
        let ids = (
            (id("vendor", vendor.into()) & 0xffff) as u16,
            (id("device", device.into()) & 0xffff) as u16,
            id("class", class),
        );
        sys.topology.set_identity(bdf, ids, driver_of(&d));
        if let Some(m) = f_p2pmem {
            let num = |file: &str| d.read_u64(&format!("p2pmem/{file}")).ok();
            let m = P2pmemInfo {
                size: num("size"),
                available: num("available"),
                ..m
            };
            sys.topology.set_p2pmem(bdf, m);
        }
        sys.ids_from_config.swap_remove(i);
    }
}
