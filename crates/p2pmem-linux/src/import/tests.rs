use super::lspci_text::tests::cut_dump;
use super::*;
use crate::system::{read_system, System};
use p2pmem_model::acs::AcsState;
use p2pmem_model::select::check;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn text(name: &str) -> String {
    std::fs::read_to_string(repo("fixtures/lspci").join(name)).unwrap()
}

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

/// The facts of fixtures/truth/lab_multifunction_acs: 6.12.117, AMD family 15, the two
/// functions of its NVMe device publishing 16 MiB.
fn acs_facts() -> Facts {
    Facts {
        kernel: Some("6.12.117".into()),
        cpu: Some(("AuthenticAMD".into(), 15)),
        providers: vec![
            (bdf("0000:01:00.0"), Some(16 << 20)),
            (bdf("0000:01:00.1"), Some(16 << 20)),
        ],
        source: None,
    }
}

fn same_verdicts(a: &System, b: &System) {
    // lspci does not know the CPU's model name; the rules use vendor and family only.
    assert_eq!(a.rules.kernel, b.rules.kernel);
    assert_eq!(a.rules.cpu.vendor_id, b.rules.cpu.vendor_id);
    assert_eq!(a.rules.cpu.family, b.rules.cpu.family);
    let mut pairs = 0;
    for p in a.topology.providers() {
        for c in a.topology.functions() {
            let x = check(&a.topology, &a.rules, p.bdf, &[c.bdf]).unwrap();
            let y = check(&b.topology, &b.rules, p.bdf, &[c.bdf]).unwrap();
            assert_eq!(x, y, "{} -> {}", p.bdf, c.bdf);
            pairs += 1;
        }
    }
    assert!(pairs >= 14, "{pairs}");
}

#[test]
fn an_import_of_a_lab_guests_lspci_gives_the_captures_verdicts() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("cap");
    let rep = lspci(
        &text("lab_multifunction_acs.vvv-xxxx.txt"),
        &acs_facts(),
        &out,
    )
    .unwrap();
    assert_eq!(rep.functions, 7);
    let orig = read_system(&repo("fixtures/truth/lab_multifunction_acs/root")).unwrap();
    let imp = read_system(&out).unwrap();
    assert!(imp.problems.is_empty(), "{:?}", imp.problems);
    assert_eq!(
        imp.topology.get(&bdf("0000:01:00.1")).unwrap().path,
        orig.topology.get(&bdf("0000:01:00.1")).unwrap().path
    );
    same_verdicts(&orig, &imp);
    let note = imp.import.unwrap();
    assert_eq!(note.form, LspciForm::Dump { bytes: 4096 });
    assert!(note.extended_config_unknown.is_empty());
    let line = note.describe();
    assert!(
        line.contains("kernel version given as 6.12.117")
            && line.contains("AuthenticAMD family 15")
            && line.contains("0000:01:00.0=16777216"),
        "{line}"
    );
    // A capture of it keeps the note.
    let again = d.path().join("again");
    crate::capture::capture(&out, &again).unwrap();
    assert_eq!(read_system(&again).unwrap().import, Some(note));
    assert!(
        read_system(&repo("fixtures/truth/lab_multifunction_acs/root"))
            .unwrap()
            .import
            .is_none()
    );
}

#[test]
fn a_256_byte_dump_leaves_pcie_acs_unknown_and_conventional_absent() {
    let d = tempfile::tempdir().unwrap();
    let short = cut_dump(&text("lab_multifunction_acs.vvv-xxxx.txt"), 0x100);
    lspci(&short, &acs_facts(), d.path()).unwrap();
    let sys = read_system(d.path()).unwrap();
    let acs = |s: &str| {
        sys.topology
            .get(&bdf(s))
            .unwrap()
            .config
            .as_ref()
            .unwrap()
            .acs()
    };
    assert!(matches!(acs("0000:00:07.0"), AcsState::Unknown { .. }));
    assert!(matches!(acs("0000:00:00.0"), AcsState::Absent));
    let note = sys.import.unwrap();
    assert!(note
        .extended_config_unknown
        .contains(&"0000:00:07.0".to_string()));
    assert!(
        note.describe().contains("ACS unknown"),
        "{}",
        note.describe()
    );
}

#[test]
fn the_tree_alone_gives_the_topology_without_config_space() {
    let d = tempfile::tempdir().unwrap();
    let facts = Facts {
        providers: vec![(bdf("0000:01:00.0"), None)],
        ..Facts::default()
    };
    lspci(&text("lab_multifunction_acs.tv.txt"), &facts, d.path()).unwrap();
    let sys = read_system(d.path()).unwrap();
    let f = sys.topology.get(&bdf("0000:01:00.1")).unwrap();
    assert_eq!(f.path, vec![bdf("0000:00:07.0"), bdf("0000:01:00.1")]);
    assert!(f.config.is_none());
    let p = sys.topology.get(&bdf("0000:01:00.0")).unwrap();
    assert_eq!(p.p2pmem.as_ref().unwrap().published, Some(true));
    assert_eq!(p.p2pmem.as_ref().unwrap().size, None);
    assert!(
        !sys.problems.iter().any(|p| p.path.contains("p2pmem")),
        "{:?}",
        sys.problems
    );
    // Nothing is missing that the note does not say: no warning per file.
    assert!(sys.problems.is_empty(), "{:?}", sys.problems);
    // Without IDs (`-tv`, not `-tvnn`), whether the host bridge is whitelisted is
    // unknown, not refused.
    let rep = sys
        .topology
        .representative(p.host_bridge, KernelVersion::NEWEST_READ);
    assert_eq!(rep.usable, None, "{}", rep.why);
    let v = check(&sys.topology, &sys.rules, p.bdf, &[bdf("0000:00:1f.2")]).unwrap();
    assert_eq!(v.supported, None, "{v:?}");
    let note = sys.import.unwrap();
    assert_eq!(note.form, LspciForm::Tree);
    let line = note.describe();
    assert!(
        line.contains("kernel version unknown") && line.contains("CPU unknown"),
        "{line}"
    );
}

#[test]
fn this_hosts_lspci_imports_with_drivers_and_resources() {
    let d = tempfile::tempdir().unwrap();
    lspci(&text("host_vm.vvv-xxxx.txt"), &Facts::default(), d.path()).unwrap();
    let sys = read_system(d.path()).unwrap();
    assert_eq!(sys.topology.functions().count(), 6);
    let f = sys.topology.get(&bdf("0000:00:02.0")).unwrap();
    assert_eq!(f.driver.as_deref(), Some("virtio-pci"));
    let bars = crate::resource::read_bars(&crate::rootfs::RootFs::new(d.path()), f.bdf);
    assert!(bars.iter().any(|b| b.is_mem && b.len > 0), "{bars:?}");
}

#[test]
fn refuses_a_non_empty_dir_an_unknown_provider_and_a_bad_kernel() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("keep"), "x").unwrap();
    let t = text("lab_multifunction_acs.vvv-xxxx.txt");
    let e = lspci(&t, &acs_facts(), d.path()).unwrap_err();
    assert!(matches!(e, ImportError::NotEmpty(_)), "{e}");
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    let e2 = tempfile::tempdir().unwrap();
    let mut facts = acs_facts();
    facts.providers.push((bdf("0000:09:00.0"), None));
    let e = lspci(&t, &facts, e2.path()).unwrap_err();
    assert!(e.to_string().contains("0000:09:00.0"), "{e}");
    let facts = Facts {
        kernel: Some("banana".into()),
        ..Facts::default()
    };
    let e = lspci(&t, &facts, e2.path()).unwrap_err();
    assert!(e.to_string().contains("--kernel banana"), "{e}");
    assert_eq!(std::fs::read_dir(e2.path()).unwrap().count(), 0);
    let e = lspci("nonsense\n", &Facts::default(), e2.path()).unwrap_err();
    // The line and what is wrong are the cause, not repeated in the message.
    let cause = std::error::Error::source(&e).map(ToString::to_string);
    assert!(
        cause.as_deref().is_some_and(|c| c.starts_with("line 1: ")),
        "{e}: {cause:?}"
    );
}

#[test]
fn in_a_4096_byte_dump_a_256_byte_function_is_as_sysfs_exposes_it() {
    // The root port's dump stops at 0xff while the others' go to 0xff0: sysfs exposed 256
    // bytes for it (no extended config space reachable), so its ACS is absent for the
    // kernel too.
    let mut cur = String::new();
    let mut t = String::new();
    for l in text("lab_multifunction_acs.vvv-xxxx.txt").lines() {
        if l.starts_with("0000:") {
            cur = l.to_string();
        }
        // `100: 01 00 ...` to `ff0: ...`: the extended config space.
        let hex3 = l.len() > 4 && l.as_bytes()[3] == b':' && !l.starts_with('\t');
        if cur.starts_with("0000:00:07.0") && hex3 {
            continue;
        }
        t.push_str(l);
        t.push('\n');
    }
    let d = tempfile::tempdir().unwrap();
    let rep = lspci(&t, &acs_facts(), d.path()).unwrap();
    assert_eq!(rep.note.form, LspciForm::Dump { bytes: 4096 });
    assert!(rep.note.extended_config_unknown.is_empty());
    let sys = read_system(d.path()).unwrap();
    let port = sys.topology.get(&bdf("0000:00:07.0")).unwrap();
    assert_eq!(port.config.as_ref().unwrap().readable_len(), 256);
    assert!(matches!(
        port.config.as_ref().unwrap().acs(),
        AcsState::Absent
    ));
}
