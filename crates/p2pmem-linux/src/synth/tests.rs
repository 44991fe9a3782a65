use super::*;
use crate::system::read_system;
use p2pmem_model::topology::Topology;

/// A small fabric: 3 domains, 4-port switches, 64 functions.
const SMALL: Shape = Shape {
    functions: 64,
    domains: 3,
    ports_per_switch: 4,
};

#[test]
fn a_small_fabric_reads_back_as_written() {
    let d = tempfile::tempdir().unwrap();
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
    let d = tempfile::tempdir().unwrap();
    let made = write(&template_root(), d.path(), Shape::FABRIC).unwrap();
    assert_eq!(made.functions.len(), 4096);
    // 1,977 NVMe: every other one a provider, starting with one.
    assert_eq!(made.providers.len(), 989);
    assert_eq!(made.plain_nvme.len(), 988);
    let sys = read_system(d.path()).unwrap();
    assert!(sys.problems.is_empty(), "{:?}", sys.problems);
    assert_eq!(sys.topology.functions().count(), 4096);
    assert_eq!(sys.topology.host_bridges().len(), 10);
}

#[test]
fn shapes_that_do_not_fit_are_refused() {
    let d = tempfile::tempdir().unwrap();
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
