use super::*;
use crate::system::{read_system, System};
use p2pmem_model::distance::decide;
use p2pmem_model::distance::matrix::{Outcome, PairIndex};
use p2pmem_model::distance::Rules;
use p2pmem_model::select::{check, find, Candidate, Found, MAX_TIED};
use p2pmem_model::topology::Topology;

/// `find` the straightforward way, as it was before [`PairIndex`]: every published
/// provider decided in full against every client.
fn find_by_decide(topo: &Topology, rules: &Rules, clients: &[Bdf]) -> Found {
    let mut candidates = Vec::new();
    let mut messages = Vec::new();
    for f in topo.providers() {
        let published = f.p2pmem.is_some_and(|m| m.is_published());
        if !published {
            candidates.push(Candidate {
                provider: f.bdf,
                distance: None,
                supported: None,
                published,
            });
            continue;
        }
        let c = check(topo, rules, f.bdf, clients).unwrap();
        for p in &c.pairs {
            messages.extend(p.quiet_messages().map(|m| m.line.clone()));
            if p.supported == Some(false) {
                break;
            }
        }
        candidates.push(Candidate {
            provider: f.bdf,
            distance: c.distance,
            supported: c.supported,
            published,
        });
    }
    let ok = |c: &&Candidate| c.supported == Some(true);
    let best_distance = candidates
        .iter()
        .filter(ok)
        .filter_map(|c| c.distance)
        .min();
    let best = candidates
        .iter()
        .filter(|c| ok(c) && c.distance == best_distance)
        .map(|c| c.provider)
        .take(MAX_TIED)
        .collect();
    let maybe = candidates
        .iter()
        .filter(|c| c.published && c.supported.is_none())
        .map(|c| c.provider)
        .collect();
    Found {
        clients: clients.to_vec(),
        best,
        best_distance,
        maybe,
        candidates,
        messages,
    }
}

/// The fast path's matrix against `decide` for every pair of `providers` x `clients`.
fn assert_matrix_is_decide(sys: &System, providers: &[Bdf], clients: &[Bdf], what: &str) {
    let (t, r) = (&sys.topology, &sys.rules);
    let m = PairIndex::new(t, r).matrix(providers, clients).unwrap();
    for (i, p) in providers.iter().enumerate() {
        for (j, c) in clients.iter().enumerate() {
            let slow = Outcome::of(&decide(t, r, *p, *c).unwrap());
            assert_eq!(m.get(i, j), Some(&slow), "{what}: {p} -> {c}");
        }
    }
}

#[test]
fn the_fast_path_is_decide_on_every_fixture() {
    let truth = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/truth");
    let mut n = 0;
    for e in std::fs::read_dir(truth).unwrap() {
        let root = e.unwrap().path().join("root");
        if !root.is_dir() {
            continue;
        }
        let sys = read_system(&root).unwrap();
        let all: Vec<Bdf> = sys.topology.functions().map(|f| f.bdf).collect();
        assert_matrix_is_decide(&sys, &all, &all, &root.display().to_string());
        for c in &all {
            let (t, r) = (&sys.topology, &sys.rules);
            assert_eq!(find(t, r, &[*c]).unwrap(), find_by_decide(t, r, &[*c]));
        }
        assert_eq!(
            find(&sys.topology, &sys.rules, &all).unwrap(),
            find_by_decide(&sys.topology, &sys.rules, &all)
        );
        n += 1;
    }
    assert!(n >= 10, "{n} fixtures");
}

/// A scratch directory in memory when the machine has /dev/shm (40,000 small files are
/// written much faster there), else in the default temporary directory.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

/// A small fabric: 3 domains, 4-port switches, 64 functions.
const SMALL: Shape = Shape {
    functions: 64,
    domains: 3,
    ports_per_switch: 4,
};

#[test]
fn a_small_fabric_reads_back_as_written() {
    let d = scratch();
    let made = write(&template_root(), d.path(), SMALL).unwrap();
    assert_eq!(made.functions.len(), 64);
    let sys = read_system(d.path()).unwrap();
    assert!(sys.problems.is_empty(), "{:?}", sys.problems);
    let t: &Topology = &sys.topology;
    assert_eq!(t.functions().count(), 64);
    assert_eq!(t.host_bridges().len(), 3);
    let providers: Vec<Bdf> = t.providers().map(|f| f.bdf).collect();
    let mut expected = made.providers.clone();
    expected.sort();
    assert_eq!(providers, expected);
    assert!(t
        .providers()
        .all(|f| f.is_nvme() && f.p2pmem.is_some_and(|m| m.is_published())));
    // Every NVMe sits below a downstream port, an upstream port and a root port.
    for b in made.providers.iter().chain(&made.plain_nvme) {
        let f = t.get(b).unwrap();
        assert!(f.is_nvme(), "{b}");
        assert_eq!(f.path.len(), 4, "{b}: {:?}", f.path);
    }
    // Bridges' bus numbers agree with the tree.
    for f in t.functions().filter(|f| f.is_bridge()) {
        let config = d
            .path()
            .join(PCI_DEVICES)
            .join(f.bdf.to_string())
            .join("config");
        let cs = std::fs::read(config).unwrap();
        let (secondary, subordinate) = (cs[0x19], cs[0x1a]);
        for c in t.children(&f.bdf) {
            assert!(
                (secondary..=subordinate).contains(&c.bdf.bus),
                "{} below {}",
                c.bdf,
                f.bdf
            );
        }
    }
}

#[test]
fn the_fabric_shape_has_4096_functions_half_of_the_nvme_providers() {
    let d = scratch();
    let made = write(&template_root(), d.path(), Shape::FABRIC).unwrap();
    assert_eq!(made.functions.len(), 4096);
    // 1,977 NVMe: every other one a provider, starting with one.
    assert_eq!(made.providers.len(), 989);
    assert_eq!(made.plain_nvme.len(), 988);
    let sys = read_system(d.path()).unwrap();
    assert!(sys.problems.is_empty(), "{:?}", sys.problems);
    assert_eq!(sys.topology.functions().count(), 4096);
    assert_eq!(sys.topology.host_bridges().len(), 10);

    // The fast path against `decide` on a sample spread over the fabric: every
    // 31st function against every 29th (133 x 142 pairs), and `find` for 8 clients.
    let all: Vec<Bdf> = sys.topology.functions().map(|f| f.bdf).collect();
    let every = |k: usize| all.iter().step_by(k).copied().collect::<Vec<_>>();
    assert_matrix_is_decide(&sys, &every(31), &every(29), "fabric");
    let outcomes: Vec<Outcome> = PairIndex::new(&sys.topology, &sys.rules)
        .matrix(&every(31), &every(29))
        .unwrap()
        .cells;
    for kind in [MapTypeKind::BusAddr, MapTypeKind::Refused] {
        assert!(outcomes.iter().any(|o| kind.is(o)), "no {kind:?} pair");
    }
    let clients: Vec<Bdf> = made
        .plain_nvme
        .iter()
        .step_by(123)
        .take(8)
        .copied()
        .collect();
    assert_eq!(clients.len(), 8);
    let (t, r) = (&sys.topology, &sys.rules);
    assert_eq!(
        find(t, r, &clients).unwrap(),
        find_by_decide(t, r, &clients)
    );
    // Two NVMe behind one switch: the provider next to the client wins.
    let near = [made.plain_nvme[0]];
    let f = find(t, r, &near).unwrap();
    assert_eq!(f, find_by_decide(t, r, &near));
    assert_eq!(f.best_distance, Some(4));
}

/// The two outcomes the fabric must contain for the sample to mean something.
#[derive(Debug, Clone, Copy)]
enum MapTypeKind {
    BusAddr,
    Refused,
}

impl MapTypeKind {
    fn is(self, o: &Outcome) -> bool {
        match self {
            Self::BusAddr => o.map_type == Some(p2pmem_model::distance::MapType::BusAddr),
            Self::Refused => o.supported == Some(false),
        }
    }
}

#[test]
fn shapes_that_do_not_fit_are_refused() {
    let d = scratch();
    let too_many = Shape {
        functions: 100_000,
        domains: 1,
        ports_per_switch: 30,
    };
    let e = write(&template_root(), d.path(), too_many).unwrap_err();
    assert!(e.to_string().contains("ran out"), "{e}");
    let none = Shape {
        domains: 0,
        ..SMALL
    };
    assert!(write(&template_root(), d.path(), none).is_err());
}
