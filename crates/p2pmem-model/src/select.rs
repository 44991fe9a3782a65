//! Many clients and provider choice: `pci_p2pdma_distance_many()` and
//! `pci_p2pmem_find_many()`.
//!
//! Over many clients the result fails if any client fails, else it is the sum of the
//! distances. `find` considers published providers only, keeps those at the smallest
//! total distance (at most `PAGE_SIZE / sizeof(void *)` = 512 of them) and picks one
//! uniformly at random, so ties are listed, never resolved.

use crate::bdf::Bdf;
use crate::distance::matrix::{Outcome, PairIndex};
use crate::distance::{decide, DecideError, MapType, PairVerdict, Rules};
use crate::messages::KernelMessage;
use crate::topology::Topology;
use serde::Serialize;

/// Most tied providers the kernel keeps (4 KiB pages, 64-bit pointers).
pub const MAX_TIED: usize = 4096 / 8;

/// The decision for one provider and a set of clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The provider.
    pub provider: Bdf,
    /// The clients, in the order given.
    pub clients: Vec<Bdf>,
    /// Worst map type over the clients; `None` when unknown.
    pub map_type: Option<MapType>,
    /// Sum of distances when supported, else `None`.
    pub distance: Option<u32>,
    /// Whether the kernel allows it; `None` when it cannot be known.
    pub supported: Option<bool>,
    /// Whether the provider has `p2pmem/` at all.
    pub is_provider: bool,
    /// Whether the provider is published (needed by `find` and nvmet, not by mmap).
    pub published: bool,
    /// The kernel's messages for a verbose evaluation, in order.
    pub messages: Vec<String>,
    /// Per client.
    pub pairs: Vec<PairVerdict>,
    /// Boot parameters that would remove ACS redirects on the paths.
    pub fixes: Vec<String>,
    /// What could not be known.
    pub unknowns: Vec<String>,
}

/// Decide a provider against several clients as a verbose distance computation does.
pub fn check(
    topo: &Topology,
    rules: &Rules,
    provider: Bdf,
    clients: &[Bdf],
) -> Result<Check, DecideError> {
    let pairs = clients
        .iter()
        .map(|c| decide(topo, rules, provider, *c))
        .collect::<Result<Vec<_>, _>>()?;
    let p = topo.get(&provider);
    let is_provider = p.is_some_and(|f| f.p2pmem.is_some());
    let published = p.and_then(|f| f.p2pmem).is_some_and(|m| m.is_published());
    let mut c = combine(provider, clients, pairs);
    c.is_provider = is_provider;
    c.published = published;
    if !is_provider {
        c.supported = Some(false);
        c.map_type = Some(MapType::NotSupported);
        c.distance = None;
        c.unknowns.clear();
        c.messages.clear();
    }
    Ok(c)
}

/// [`combine`]'s verdict and distance from outcomes alone.
fn combine_outcomes(outcomes: &[Outcome]) -> (Option<bool>, Option<u32>) {
    let supported = if outcomes.iter().any(|o| o.supported == Some(false)) {
        Some(false)
    } else if !outcomes.is_empty() && outcomes.iter().all(|o| o.supported == Some(true)) {
        Some(true)
    } else {
        None
    };
    let distance =
        (supported == Some(true)).then(|| outcomes.iter().map(|o| o.walk_distance).sum());
    (supported, distance)
}

fn combine(provider: Bdf, clients: &[Bdf], pairs: Vec<PairVerdict>) -> Check {
    let any_no = pairs.iter().any(|p| p.supported == Some(false));
    let all_yes = pairs.iter().all(|p| p.supported == Some(true));
    let supported = if any_no {
        Some(false)
    } else if all_yes && !pairs.is_empty() {
        Some(true)
    } else {
        None
    };
    let map_type = if any_no {
        Some(MapType::NotSupported)
    } else if pairs.iter().any(|p| p.map_type.is_none()) {
        None
    } else if pairs
        .iter()
        .any(|p| p.map_type == Some(MapType::ThruHostBridge))
    {
        Some(MapType::ThruHostBridge)
    } else if pairs.is_empty() {
        None
    } else {
        Some(MapType::BusAddr)
    };
    let distance = (supported == Some(true)).then(|| pairs.iter().map(|p| p.walk_distance).sum());
    let messages = pairs
        .iter()
        .flat_map(|p| p.messages.iter().map(|m: &KernelMessage| m.line.clone()))
        .collect();
    let mut fixes: Vec<String> = pairs.iter().filter_map(|p| p.fix.clone()).collect();
    fixes.dedup();
    let unknowns = pairs
        .iter()
        .flat_map(|p| p.unknowns.iter().cloned())
        .collect();
    Check {
        provider,
        clients: clients.to_vec(),
        map_type,
        distance,
        supported,
        is_provider: true,
        published: true,
        messages,
        pairs,
        fixes,
        unknowns,
    }
}

/// One candidate considered by `find`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The provider.
    pub provider: Bdf,
    /// Total distance when supported.
    pub distance: Option<u32>,
    /// Whether all clients can use it; `None` when unknown.
    pub supported: Option<bool>,
    /// Published?
    pub published: bool,
}

/// What `pci_p2pmem_find_many()` would return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    /// The clients.
    pub clients: Vec<Bdf>,
    /// The providers the kernel picks among at random (empty: it returns NULL).
    pub best: Vec<Bdf>,
    /// Their common distance.
    pub best_distance: Option<u32>,
    /// Providers whose answer is unknown and that might tie or win.
    pub maybe: Vec<Bdf>,
    /// Every provider considered or skipped, with why.
    pub candidates: Vec<Candidate>,
    /// Messages printed during the search (non-verbose: host-bridge warnings only).
    pub messages: Vec<String>,
}

/// The provider(s) the kernel would choose for `clients`.
///
/// Each published provider is weighed through [`PairIndex`] (outcomes only, no words);
/// a provider whose path to some client has an ACS redirect is decided in full, since
/// only then may the kernel print the host-bridge warning `find` reports.
pub fn find(topo: &Topology, rules: &Rules, clients: &[Bdf]) -> Result<Found, DecideError> {
    find_indexed(&mut PairIndex::new(topo, rules), clients)
}

/// [`find`] with an index built once, for callers that search for many client sets
/// (the planner: one search per flow).
pub fn find_indexed(index: &mut PairIndex<'_>, clients: &[Bdf]) -> Result<Found, DecideError> {
    let mut candidates = Vec::new();
    let mut messages = Vec::new();
    let providers = index.take_providers();
    let weighed = weigh(index, &providers, clients, &mut candidates, &mut messages);
    index.put_providers(providers);
    weighed?;
    let best_distance = candidates
        .iter()
        .filter(|c| c.supported == Some(true))
        .filter_map(|c| c.distance)
        .min();
    let best: Vec<Bdf> = candidates
        .iter()
        .filter(|c| c.supported == Some(true) && c.distance == best_distance)
        .map(|c| c.provider)
        .take(MAX_TIED)
        .collect();
    let maybe = candidates
        .iter()
        .filter(|c| c.published && c.supported.is_none())
        .map(|c| c.provider)
        .collect();
    Ok(Found {
        clients: clients.to_vec(),
        best,
        best_distance,
        maybe,
        candidates,
        messages,
    })
}

/// `find`'s weighing of each provider against the clients.
fn weigh(
    index: &mut PairIndex<'_>,
    providers: &[(Bdf, bool)],
    clients: &[Bdf],
    candidates: &mut Vec<Candidate>,
    messages: &mut Vec<String>,
) -> Result<(), DecideError> {
    let (topo, rules) = (index.topology(), index.rules());
    let mut outcomes = Vec::with_capacity(clients.len());
    for &(bdf, published) in providers {
        if !published {
            candidates.push(Candidate {
                provider: bdf,
                distance: None,
                supported: None,
                published,
            });
            continue;
        }
        outcomes.clear();
        for c in clients {
            outcomes.push(index.outcome(bdf, *c)?);
        }
        let (supported, distance) = if outcomes.iter().any(|o| o.acs_redirect) {
            let c = check(topo, rules, bdf, clients)?;
            // Non-verbose: stops at the first refused client; only the host-bridge
            // warning is printed (it ignores `verbose`).
            for p in &c.pairs {
                messages.extend(p.quiet_messages().map(|m| m.line.clone()));
                if p.supported == Some(false) {
                    break;
                }
            }
            (c.supported, c.distance)
        } else {
            combine_outcomes(&outcomes)
        };
        candidates.push(Candidate {
            provider: bdf,
            distance,
            supported,
            published,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuInfo;
    use crate::kernel_version::KernelVersion;
    use crate::topology::tests::{bdf, func};
    use crate::topology::{Function, P2pmemInfo};

    fn prov(mut f: Function, published: bool) -> Function {
        f.p2pmem = Some(P2pmemInfo {
            size: Some(1 << 24),
            available: Some(1 << 24),
            published: Some(published),
        });
        f
    }

    fn topo() -> Topology {
        Topology::new(vec![
            func(&["00:00.0"], None, None),
            func(&["00:04.0"], Some(4), Some(0)),
            func(&["00:04.0", "01:00.0"], Some(5), None),
            func(&["00:04.0", "01:00.0", "02:00.0"], Some(6), None),
            func(&["00:04.0", "01:00.0", "02:01.0"], Some(6), None),
            func(&["00:04.0", "01:00.0", "02:02.0"], Some(6), None),
            prov(
                func(&["00:04.0", "01:00.0", "02:00.0", "03:00.0"], Some(0), None),
                true,
            ),
            prov(
                func(&["00:04.0", "01:00.0", "02:01.0", "04:00.0"], Some(0), None),
                true,
            ),
            func(&["00:04.0", "01:00.0", "02:02.0", "05:00.0"], Some(0), None),
            func(&["00:05.0"], Some(4), Some(0)),
            prov(func(&["00:05.0", "06:00.0"], Some(0), None), true),
            func(&["00:06.0"], Some(4), Some(0)),
            prov(func(&["00:06.0", "07:00.0"], Some(0), None), false),
        ])
        .unwrap()
    }

    fn rules(family: u32) -> Rules {
        Rules {
            kernel: KernelVersion::new(6, 12, 0),
            cpu: CpuInfo {
                vendor_id: Some("AuthenticAMD".into()),
                family: Some(family),
                model_name: None,
            },
        }
    }

    #[test]
    fn many_clients_sum_or_fail() {
        let t = topo();
        let c = check(
            &t,
            &rules(15),
            bdf("03:00.0"),
            &[bdf("04:00.0"), bdf("05:00.0")],
        )
        .unwrap();
        assert_eq!(
            (c.supported, c.distance, c.map_type),
            (Some(true), Some(8), Some(MapType::BusAddr))
        );
        let c = check(
            &t,
            &rules(15),
            bdf("03:00.0"),
            &[bdf("04:00.0"), bdf("06:00.0")],
        )
        .unwrap();
        assert_eq!((c.supported, c.distance), (Some(false), None));
        assert_eq!(c.messages.len(), 1, "verbose: every client's warnings");
        let c = check(
            &t,
            &rules(23),
            bdf("03:00.0"),
            &[bdf("04:00.0"), bdf("06:00.0")],
        )
        .unwrap();
        assert_eq!(
            (c.map_type, c.distance),
            (Some(MapType::ThruHostBridge), Some(4 + 6))
        );
    }

    #[test]
    fn non_provider_is_refused() {
        let c = check(&topo(), &rules(15), bdf("05:00.0"), &[bdf("04:00.0")]).unwrap();
        assert!(!c.is_provider);
        assert_eq!(c.supported, Some(false));
    }

    #[test]
    fn find_picks_closest_and_lists_ties() {
        let t = topo();
        let f = find(&t, &rules(15), &[bdf("05:00.0")]).unwrap();
        assert_eq!(
            f.best,
            vec![bdf("03:00.0"), bdf("04:00.0")],
            "a tie: the kernel picks at random"
        );
        assert_eq!(f.best_distance, Some(4));
        let f = find(&t, &rules(15), &[bdf("03:00.0")]).unwrap();
        assert_eq!(f.best, vec![bdf("03:00.0")]);
        // Unpublished providers are never chosen.
        let f = find(&t, &rules(23), &[bdf("07:00.0")]).unwrap();
        assert!(!f.best.contains(&bdf("07:00.0")));
        // Zen: host-bridge paths cost no extra, so 06:00.0 (2 + 2) ties with nothing closer.
        let f = find(&t, &rules(23), &[bdf("07:00.0")]).unwrap();
        assert_eq!(f.best, vec![bdf("06:00.0")]);
        assert_eq!(f.best_distance, Some(4));
        // No path at all.
        let f = find(&t, &rules(15), &[bdf("07:00.0")]).unwrap();
        assert!(f.best.is_empty());
    }
}
