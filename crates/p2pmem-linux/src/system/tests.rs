use super::*;
use std::os::unix::fs::symlink;

/// The repository's copy of the ground-truth captures (scripts/import-truth).
pub(crate) fn truth_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/truth")
}

fn s01() -> PathBuf {
    truth_dir().join("s01_switch_cmbmix_fam15/root")
}

/// Copy a fixture root into a temp dir (symlinks kept) so a test can break it.
pub(crate) fn scratch_copy(src: &Path) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(d.path())
        .status()
        .unwrap();
    assert!(status.success());
    std::process::Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(d.path())
        .status()
        .unwrap();
    d
}

#[test]
fn reads_the_s01_capture() {
    let s = read_system(&s01()).unwrap();
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(s.rules.kernel, KernelVersion::new(6, 12, 117));
    assert_eq!(s.rules.cpu.family, Some(15));
    assert_eq!(s.topology.functions().count(), 17);
    let providers: Vec<String> = s.topology.providers().map(|f| f.bdf.to_string()).collect();
    assert_eq!(
        providers,
        [
            "0000:03:00.0",
            "0000:04:00.0",
            "0000:06:00.0",
            "0000:81:00.0"
        ]
    );
    let p = s.topology.get(&"0000:03:00.0".parse().unwrap()).unwrap();
    let m = p.p2pmem.unwrap();
    assert_eq!(
        (m.size, m.available, m.published),
        (Some(16 << 20), Some((16 << 20) - (64 << 10)), Some(true))
    );
    assert_eq!(
        s.topology
            .upstream_chain(&p.bdf)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "0000:03:00.0",
            "0000:02:00.0",
            "0000:01:00.0",
            "0000:00:04.0"
        ]
    );
    let e = s.topology.get(&"0000:81:00.0".parse().unwrap()).unwrap();
    assert_eq!(e.host_bridge.to_string(), "pci0000:80");
    assert!(s.truncated_config.is_empty());
}

#[test]
fn missing_root_or_pci_is_an_error() {
    let e = read_system(Path::new("/nonexistent/p2pmem-root")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/p2pmem-root"));
    let d = tempfile::tempdir().unwrap();
    let e = read_system(d.path()).unwrap_err();
    assert!(e.to_string().contains("sys/bus/pci/devices"), "{e}");
}

#[test]
fn malformed_trees_give_problems_naming_the_path() {
    let d = scratch_copy(&s01());
    let root = d.path();
    let dev =
        root.join("sys/devices/pci0000:00/0000:00:04.0/0000:01:00.0/0000:02:00.0/0000:03:00.0");
    std::fs::write(dev.join("p2pmem/size"), "garbage\n").unwrap();
    std::fs::remove_file(dev.join("vendor")).unwrap();
    // Truncated config (as an unprivileged reader sees it, file size kept small).
    let cfg = root.join("sys/devices/pci0000:00/0000:00:05.0/config");
    let bytes = std::fs::read(&cfg).unwrap();
    std::fs::write(&cfg, &bytes[..64]).unwrap();
    // A config shorter than the header.
    let cfg6 = root.join("sys/devices/pci0000:00/0000:00:05.0/0000:06:00.0/config");
    std::fs::write(&cfg6, [0u8; 10]).unwrap();
    // Dangling and looping links, a link to a non-function, a stray file.
    let devs = root.join("sys/bus/pci/devices");
    symlink(
        "../../../devices/pci0000:00/0000:00:09.0",
        devs.join("0000:00:09.0"),
    )
    .unwrap();
    symlink("0000:00:0b.0", devs.join("0000:00:0a.0")).unwrap();
    symlink("0000:00:0a.0", devs.join("0000:00:0b.0")).unwrap();
    symlink("../../../devices/pci0000:00", devs.join("0000:00:0c.0")).unwrap();
    std::fs::write(devs.join("not-a-bdf"), "").unwrap();

    let s = read_system(root).unwrap();
    let has = |frag: &str, what: &str| {
        s.problems
            .iter()
            .any(|p| p.path.contains(frag) && p.what.contains(what))
    };
    assert!(
        has("0000:03:00.0/p2pmem/size", "garbage"),
        "{:#?}",
        s.problems
    );
    assert!(
        has("0000:03:00.0/vendor", "cannot read"),
        "{:#?}",
        s.problems
    );
    assert!(
        has("0000:06:00.0/config", "64-byte header"),
        "{:#?}",
        s.problems
    );
    assert!(
        has("bus/pci/devices/0000:00:09.0", "dangling symbolic link"),
        "the problem names the link: {:#?}",
        s.problems
    );
    assert!(has("0000:00:0", "loop"), "{:#?}", s.problems);
    assert!(has("not-a-bdf", "not a PCI address"), "{:#?}", s.problems);
    assert!(
        has("pci0000:00", "no pciDDDD:BB host bridge component"),
        "{:#?}",
        s.problems
    );
    // The rest is still there; what was broken is unknown, not guessed.
    let p = s.topology.get(&"0000:03:00.0".parse().unwrap()).unwrap();
    assert_eq!(p.p2pmem.unwrap().size, None);
    assert_eq!(p.vendor, 0x1b36, "vendor falls back to config space");
    assert_eq!(s.truncated_config, vec!["0000:00:05.0".parse().unwrap()]);
    let rp = s.topology.get(&"0000:00:05.0".parse().unwrap()).unwrap();
    assert!(rp.acs().redirects_p2p().is_none());
    assert!(s
        .topology
        .get(&"0000:06:00.0".parse().unwrap())
        .unwrap()
        .config
        .is_none());
}

#[test]
fn a_capture_is_a_sandbox_and_problems_name_the_link() {
    let d = scratch_copy(&s01());
    let root = d.path();
    let sw = "sys/devices/pci0000:00/0000:00:04.0/0000:01:00.0";
    let dev = root.join(format!("{sw}/0000:02:00.0/0000:03:00.0"));
    // Files that are links out of the capture: absolute, and climbing above the root.
    std::fs::remove_file(dev.join("config")).unwrap();
    symlink("/dev/zero", dev.join("config")).unwrap();
    std::fs::remove_file(dev.join("p2pmem/size")).unwrap();
    let up = "../".repeat(root.components().count() + 8);
    symlink(format!("{up}dev/urandom"), dev.join("p2pmem/size")).unwrap();
    // A whole function directory reached through an absolute link.
    let devs = root.join("sys/bus/pci/devices");
    std::fs::remove_file(devs.join("0000:01:00.0")).unwrap();
    symlink(format!("/{sw}"), devs.join("0000:01:00.0")).unwrap();
    // A FIFO where a file is read would block; /proc/cpuinfo endless.
    let cpuinfo = root.join("proc/cpuinfo");
    std::fs::remove_file(&cpuinfo).unwrap();
    symlink(
        "../../../../../../../../../../../../../../../../dev/zero",
        &cpuinfo,
    )
    .unwrap();
    let vendor = root.join("sys/devices/pci0000:00/0000:00:05.0/vendor");
    std::fs::remove_file(&vendor).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(&vendor)
        .status()
        .is_ok_and(|s| s.success());

    let s = read_system(root).unwrap();
    let has = |frag: &str, what: &str| {
        s.problems
            .iter()
            .any(|p| p.path.ends_with(frag) && p.what.contains(what))
    };
    let out = "leads out of the root";
    assert!(has("0000:03:00.0/config", out), "{:#?}", s.problems);
    assert!(has("0000:03:00.0/p2pmem/size", out), "{:#?}", s.problems);
    assert!(
        has("/sys/bus/pci/devices/0000:01:00.0", out),
        "{:#?}",
        s.problems
    );
    assert!(has("/proc/cpuinfo", out), "{:#?}", s.problems);
    if fifo {
        assert!(has("0000:00:05.0/vendor", "FIFO"), "{:#?}", s.problems);
    }
    let p = s.topology.get(&"0000:03:00.0".parse().unwrap()).unwrap();
    assert!(p.config.is_none() && p.p2pmem.unwrap().size.is_none());
}

#[test]
fn chains_from_paths() {
    let (hb, chain) = chain_from_path(Path::new(
        "sys/devices/pci0000:00/0000:00:0e.0/pci10000:e0/10000:e0:06.0/10000:e1:00.0/nvme/nvme0",
    ))
    .unwrap();
    assert_eq!(
        hb.to_string(),
        "pci10000:e0",
        "VMD: the innermost host bridge counts"
    );
    assert_eq!(chain.len(), 2);
    assert_eq!(
        pci_function_of(Path::new(
            "sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1"
        )),
        None
    );
}

/// Every fixture capture: a scoped read decides every (provider, function) pair, and
/// `find` for every function, as the full read does.
#[test]
fn scoped_reads_decide_as_the_full_read() {
    use p2pmem_model::distance::decide;
    use p2pmem_model::select::find;
    let mut roots: Vec<PathBuf> = std::fs::read_dir(truth_dir())
        .unwrap()
        .map(|e| e.unwrap().path().join("root"))
        .filter(|p| p.is_dir())
        .collect();
    roots.sort();
    assert!(roots.len() >= 10, "{roots:?}");
    for root in &roots {
        let full = read_system(root).unwrap();
        let all: Vec<Bdf> = full.topology.functions().map(|f| f.bdf).collect();
        let providers: Vec<Bdf> = full.topology.providers().map(|f| f.bdf).collect();
        for p in &providers {
            for c in &all {
                let scope = Scope::For {
                    names: vec![p.to_string(), c.to_string()],
                    providers: false,
                };
                let part = read_system_scoped(root, &scope).unwrap();
                assert!(part.topology.functions().count() <= all.len());
                assert_eq!(
                    decide(&part.topology, &part.rules, *p, *c),
                    decide(&full.topology, &full.rules, *p, *c),
                    "{}: {p} -> {c}",
                    root.display()
                );
            }
        }
        for c in &all {
            let scope = Scope::For {
                names: vec![c.to_string()],
                providers: true,
            };
            let mut part = read_system_scoped(root, &scope).unwrap();
            assert_eq!(
                find(&part.topology, &part.rules, &[*c]),
                find(&full.topology, &full.rules, &[*c]),
                "{}: find for {c}",
                root.display()
            );
            // Completed, what identifies each function is what the full read says.
            complete_ids(&mut part, &all);
            assert!(part.ids_from_config.is_empty());
            for f in part.topology.functions() {
                let g = full.topology.get(&f.bdf).unwrap();
                assert_eq!(
                    (f.vendor, f.device, f.class, &f.driver, f.p2pmem),
                    (g.vendor, g.device, g.class, &g.driver, g.p2pmem),
                    "{}: {}",
                    root.display(),
                    f.bdf
                );
            }
        }
    }
}

/// Names that are not addresses (block, NVMe, RDMA devices) scope to their functions.
#[test]
fn scoped_reads_follow_device_names() {
    let d = scratch_copy(&s01());
    let root = d.path();
    let ctrl = "sys/devices/pci0000:00/0000:00:05.0/0000:06:00.0/nvme/nvme3";
    std::fs::create_dir_all(root.join(ctrl).join("nvme3n1")).unwrap();
    std::fs::create_dir_all(root.join("sys/class/block")).unwrap();
    symlink(
        format!("../../../{ctrl}/nvme3n1"),
        root.join("sys/class/block/nvme3n1"),
    )
    .unwrap();
    let scope = Scope::For {
        names: vec!["/dev/nvme3n1".into()],
        providers: false,
    };
    let s = read_system_scoped(root, &scope).unwrap();
    let got: Vec<String> = s.topology.functions().map(|f| f.bdf.to_string()).collect();
    // The NVMe, its root port, and the root bus of its host bridge.
    assert_eq!(
        got,
        [
            "0000:00:00.0",
            "0000:00:04.0",
            "0000:00:05.0",
            "0000:00:10.0",
            "0000:00:1f.0",
            "0000:00:1f.2",
            "0000:00:1f.3",
            "0000:06:00.0"
        ]
    );
}

/// A capture large enough to be read in two threads: problems, truncated config spaces
/// and functions come out in the listing's order, as one thread gives them, and a
/// scoped `find` read locates the providers of both halves.
#[test]
fn a_large_capture_reads_in_the_listing_order() {
    use crate::synth::{self, Shape};
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("cap");
    let shape = Shape {
        functions: 2 * PARALLEL_FROM + 40,
        domains: 2,
        ports_per_switch: 30,
    };
    let made = synth::write(&synth::template_root(), &root, shape).unwrap();
    // One broken link and one cut config space in each half of the listing.
    let devices = root.join(PCI_DEVICES);
    for name in ["0000:00:00.7", "ffff:ff:1f.7"] {
        symlink("../../../devices/pci0000:00/nowhere", devices.join(name)).unwrap();
    }
    let mut sorted = made.functions.clone();
    sorted.sort();
    let (first, last) = (sorted[3], sorted[sorted.len() - 3]);
    for bdf in [first, last] {
        let dir = RootFs::new(&root).resolve(format!("{PCI_DEVICES}/{bdf}"));
        let config = root.join(dir.unwrap()).join("config");
        let bytes = std::fs::read(&config).unwrap();
        std::fs::write(&config, &bytes[..64]).unwrap();
    }
    let s = read_system(&root).unwrap();
    let dangling: Vec<&str> = s
        .problems
        .iter()
        .filter(|p| p.what.starts_with("dangling"))
        .map(|p| p.path.as_str())
        .collect();
    assert_eq!(
        dangling,
        [
            "/sys/bus/pci/devices/0000:00:00.7",
            "/sys/bus/pci/devices/ffff:ff:1f.7"
        ],
        "{:?}",
        s.problems
    );
    assert_eq!(s.truncated_config, [first, last]);
    let got: Vec<Bdf> = s.topology.functions().map(|f| f.bdf).collect();
    assert_eq!(got, sorted);
    // find: every provider of both domains is known as one.
    let scope = Scope::For {
        names: vec![made.plain_nvme[0].to_string()],
        providers: true,
    };
    let part = read_system_scoped(&root, &scope).unwrap();
    let providers: Vec<Bdf> = part.topology.providers().map(|f| f.bdf).collect();
    let mut want = made.providers.clone();
    want.sort();
    assert_eq!(providers, want);
}

/// `find` for clients spread over a fabric (a domain each, two behind one switch, one
/// alone): the scoped read, which reads a provider's bridges only where its path meets a
/// client's, decides every provider as the full read does, and reads fewer functions.
#[test]
fn a_scoped_find_over_a_fabric_decides_as_the_full_read() {
    use crate::synth::{self, Shape};
    use p2pmem_model::select::find;
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("cap");
    let shape = Shape {
        functions: 700,
        domains: 3,
        ports_per_switch: 30,
    };
    let made = synth::write(&synth::template_root(), &root, shape).unwrap();
    let full = read_system(&root).unwrap();
    let plain = &made.plain_nvme;
    let domain = |d: u32| plain.iter().copied().find(|b| b.domain == d).unwrap();
    for clients in [
        vec![domain(0), domain(1), domain(2)],
        vec![plain[0], plain[1]],
        vec![*plain.last().unwrap()],
    ] {
        let scope = Scope::For {
            names: clients.iter().map(Bdf::to_string).collect(),
            providers: true,
        };
        let part = read_system_scoped(&root, &scope).unwrap();
        let found = find(&part.topology, &part.rules, &clients).unwrap();
        assert_eq!(
            found,
            find(&full.topology, &full.rules, &clients).unwrap(),
            "{clients:?}"
        );
        assert_eq!(found.candidates.len(), made.providers.len());
        assert!(
            part.topology.functions().count() < full.topology.functions().count(),
            "{clients:?}"
        );
    }
}

/// A `p2pmem` that is a link (to another function's `p2pmem/`, inside the root) makes
/// no provider: the full read does not follow it, and neither does a scoped `find`'s
/// look for providers (which once did, and then read the linked `published`).
#[test]
fn a_p2pmem_link_is_no_provider_for_full_or_scoped_reads() {
    use p2pmem_model::select::find;
    let d = scratch_copy(&s01());
    let root = d.path();
    let dev = "sys/devices/pci0000:00/0000:00:04.0/0000:01:00.0/0000:02:02.0/0000:05:00.0";
    symlink(
        "../../0000:02:01.0/0000:04:00.0/p2pmem",
        root.join(dev).join("p2pmem"),
    )
    .unwrap();
    assert!(root.join(dev).join("p2pmem/published").is_file());
    let full = read_system(root).unwrap();
    let linked: Bdf = "0000:05:00.0".parse().unwrap();
    assert_eq!(full.topology.get(&linked).unwrap().p2pmem, None);
    let client: Bdf = "0000:03:00.0".parse().unwrap();
    let scope = Scope::For {
        names: vec![client.to_string()],
        providers: true,
    };
    let part = read_system_scoped(root, &scope).unwrap();
    assert_eq!(part.topology.get(&linked).and_then(|f| f.p2pmem), None);
    let (a, b) = (
        find(&part.topology, &part.rules, &[client]),
        find(&full.topology, &full.rules, &[client]),
    );
    assert_eq!(a, b);
    let candidates: Vec<Bdf> = b.unwrap().candidates.iter().map(|c| c.provider).collect();
    assert!(!candidates.contains(&linked), "{candidates:?}");
}

/// The one-pass `chain_from_path` against the plain reading it replaced: the last
/// host-bridge component, then the addresses after it up to the first that is not one.
#[test]
fn the_chain_of_a_path_is_read_as_the_plain_way_reads_it() {
    use proptest::prelude::*;
    fn plain(resolved: &Path) -> Option<(HostBridgeId, Vec<Bdf>)> {
        let comps: Vec<String> = resolved
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let hb_pos = comps
            .iter()
            .rposition(|c| c.parse::<HostBridgeId>().is_ok())?;
        let hb = comps[hb_pos].parse().ok()?;
        let mut chain = Vec::new();
        for c in &comps[hb_pos + 1..] {
            match c.parse::<Bdf>() {
                Ok(b) if c.len() >= 12 => chain.push(b),
                _ => break,
            }
        }
        (!chain.is_empty()).then_some((hb, chain))
    }
    let parts = [
        "sys",
        "devices",
        "pci0000:00",
        "pci0001:80",
        "pcizz",
        "0000:00:01.0",
        "0000:01:00.0",
        "01:00.0",
        "0000:02:1f.7",
        "nvme",
        ".",
        "..",
        "",
        "\u{fffd}",
    ];
    let path = prop::collection::vec(0..parts.len(), 0..12).prop_map(move |ix| {
        let lead = if ix.first() == Some(&0) { "/" } else { "" };
        let body: Vec<&str> = ix.iter().map(|&i| parts[i]).collect();
        PathBuf::from(format!("{lead}{}", body.join("/")))
    });
    proptest!(ProptestConfig::with_cases(4000), |(p in path)| {
        prop_assert_eq!(chain_from_path(&p), plain(&p), "{}", p.display());
    });
    let real = Path::new("sys/devices/pci0000:00/0000:00:04.0/0000:01:00.0/nvme/nvme0");
    let (hb, chain) = chain_from_path(real).unwrap();
    assert_eq!((hb.to_string(), chain.len()), ("pci0000:00".to_string(), 2));
}
