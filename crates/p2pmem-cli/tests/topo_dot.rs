//! `topo --dot/--svg/--png` against the ground-truth captures: the default picture keeps
//! the P2P endpoints and the ports between them (not the ISA bridge, SATA or SMBus),
//! allowed pairs carry their distance, refused ones the model's reason; `--all` draws
//! every function; Graphviz renders the files.

#![cfg(test)]

use p2pmem_linux::testing::skipped;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/truth")
        .join(name)
        .join("root")
}

fn topo(name: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .arg("--root")
        .arg(fixture(name))
        .arg("topo")
        .args(args)
        .output()
        .unwrap()
}

fn dot(name: &str, args: &[&str]) -> String {
    let o = topo(name, args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Whether a node for `bdf` is declared.
fn has_node(d: &str, bdf: &str) -> bool {
    d.contains(&format!("\"{bdf}\" [label="))
}

fn have_dot() -> bool {
    let prog = std::env::var("P2PMEM_DOT").unwrap_or_else(|_| "dot".into());
    Command::new(prog).arg("-V").output().is_ok()
}

#[test]
fn default_picture_keeps_endpoints_and_their_paths_only() {
    let d = dot("s01_switch_cmbmix_fam15", &["--dot"]);
    assert!(d.contains("rankdir=TB"), "{d}");
    // Providers, the client without p2pmem, the switch and root ports above them.
    for bdf in [
        "0000:03:00.0",
        "0000:04:00.0",
        "0000:05:00.0",
        "0000:06:00.0",
        "0000:81:00.0",
        "0000:01:00.0",
        "0000:02:00.0",
        "0000:00:04.0",
        "0000:80:00.0",
    ] {
        assert!(has_node(&d, bdf), "{bdf} missing:\n{d}");
    }
    // The host bridge, the ISA bridge, SATA and SMBus have nothing to do with P2P.
    for bdf in [
        "0000:00:00.0",
        "0000:00:1f.0",
        "0000:00:1f.2",
        "0000:00:1f.3",
    ] {
        assert!(!has_node(&d, bdf), "{bdf} drawn:\n{d}");
    }
    assert!(d.contains("\"pci0000:00\" [label=\"host bridge pci0000:00"));
    // lspci's names.
    assert!(d.contains("QEMU NVM Express"), "{d}");
    assert!(d.contains("XIO3130 PCI Express Switch"), "{d}");
}

#[test]
fn all_draws_every_function() {
    let d = dot("s01_switch_cmbmix_fam15", &["--dot", "--all"]);
    for bdf in [
        "0000:00:00.0",
        "0000:00:1f.0",
        "0000:00:1f.2",
        "0000:00:1f.3",
    ] {
        assert!(has_node(&d, bdf), "{bdf} missing:\n{d}");
    }
    let o = topo("s01_switch_cmbmix_fam15", &["--all"]);
    assert_eq!(o.status.code(), Some(2), "--all alone is a usage error");
}

#[test]
fn allowed_edges_carry_map_type_and_distance() {
    let d = dot("lab_default_k7.3", &["--dot"]);
    assert!(
        d.contains("\"0000:03:00.0\" -> \"0000:04:00.0\" [color=green4")
            && d.contains("dir=both")
            && d.contains("label=\"bus address, distance 4\""),
        "{d}"
    );
    assert!(d.contains("label=\"bus address, distance 2\""), "{d}");
    let zen = dot("lab_rootports_zen", &["--dot"]);
    assert!(
        zen.contains("through host bridge,\\ndistance 4"),
        "the Zen pair goes through the host bridge:\n{zen}"
    );
}

#[test]
fn refused_pairs_carry_the_models_reason() {
    let d = dot("lab_multifunction_iommu_k7.3", &["--dot"]);
    let edge = d
        .lines()
        .find(|l| l.contains("\"0000:01:00.0\" -> \"0000:01:00.1\""))
        .unwrap_or_else(|| panic!("no edge for the pair:\n{d}"));
    assert!(
        edge.contains("color=red") && edge.contains("style=dashed"),
        "{edge}"
    );
    assert!(edge.contains("ACS redirect at"), "{edge}");
    assert!(edge.contains("0000:00:07.0"), "{edge}");
    assert!(edge.contains("not whitelisted"), "{edge}");
}

#[test]
fn many_refusals_are_said_once_per_pair_of_host_bridges() {
    // lab_default: 13 refused pairs (the matrix's xH cells), all across root ports of one
    // host bridge that is not whitelisted: one note on it, no edge per pair.
    let d = dot("lab_default_k7.3", &["--dot"]);
    let red: Vec<&str> = d.lines().filter(|l| l.contains("color=red")).collect();
    assert_eq!(red.len(), 1, "{d}");
    assert!(red[0].starts_with("  \"pci0000:00\" -> \"note"), "{red:#?}");
    let note = d
        .lines()
        .find(|l| l.contains("shape=note"))
        .unwrap_or_else(|| panic!("no note:\n{d}"));
    assert!(
        note.contains("pairs across the ports of pci0000:00")
            && note.contains("13 pairs: REFUSED")
            && note.contains("pci0000:00 not whitelisted"),
        "{note}"
    );
    // s01: two host bridges; refusals between them are one edge per reason.
    let d = dot("s01_switch_cmbmix_fam15", &["--dot"]);
    let between: Vec<&str> = d
        .lines()
        .filter(|l| l.contains("\"pci0000:00\" -> \"pci0000:80\""))
        .collect();
    assert_eq!(between.len(), 2, "{d}");
    assert!(
        between.iter().all(|l| l.contains("REFUSED")),
        "{between:#?}"
    );
}

#[test]
fn many_host_bridge_pairs_are_grouped_with_their_distance_range() {
    // lab_provider_zen: AMD Zen, 13 pairs through the host bridge at distances 3 to 6.
    let d = dot("lab_provider_zen", &["--dot"]);
    let note = d
        .lines()
        .find(|l| l.contains("shape=note"))
        .unwrap_or_else(|| panic!("no note:\n{d}"));
    assert!(note.contains("13 pairs: through host"), "{note}");
    assert!(note.contains("distance 3-6"), "{note}");
    // The pairs below the switch keep their own edges.
    assert!(
        d.contains("\"0000:05:00.0\" -> \"0000:04:00.0\" [color=green4"),
        "{d}"
    );
}

fn render(format: &str, magic: &[u8]) {
    if !have_dot() {
        skipped("Graphviz's dot is not installed (apt install graphviz)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("topo.{format}"));
    let flag = format!("--{format}");
    let o = topo("lab_default_k7.3", &[&flag, file.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty(), "the picture goes to the file only");
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        bytes.starts_with(magic),
        "{format}: {:?}",
        &bytes[..16.min(bytes.len())]
    );
    if format == "svg" {
        let s = String::from_utf8(bytes).unwrap();
        assert!(
            s.contains("<svg") && s.trim_end().ends_with("</svg>"),
            "{s}"
        );
        assert!(s.contains("0000:03:00.0"));
    }
    // Nothing but the file is left behind (the temporary file was renamed).
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1);
}

#[test]
fn svg_is_written() {
    render("svg", b"<?xml");
}

#[test]
fn png_is_written() {
    render("png", b"\x89PNG\r\n\x1a\n");
}

#[test]
fn a_missing_dot_says_to_install_graphviz() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.svg");
    let o = Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .env("P2PMEM_DOT", "/nonexistent/dot")
        .arg("--root")
        .arg(fixture("lab_default_k7.3"))
        .args(["topo", "--svg"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("install graphviz"), "{e}");
    assert!(!file.exists());
    assert!(
        Path::new(dir.path()).read_dir().unwrap().next().is_none(),
        "no temp file left"
    );
}

#[test]
fn a_failing_dot_shows_its_stderr_and_leaves_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake-dot");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'Error: syntax error in line 1' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let file = dir.path().join("t.png");
    std::fs::write(&file, b"old").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .env("P2PMEM_DOT", &fake)
        .arg("--root")
        .arg(fixture("lab_default_k7.3"))
        .args(["topo", "--png"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("syntax error in line 1"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"old");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "no temp file left"
    );
}
