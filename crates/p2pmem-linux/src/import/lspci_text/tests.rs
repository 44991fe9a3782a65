use super::*;

fn fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/lspci")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

/// The text with the hex dump lines at or past `from` left out, as `-xxx` prints it.
pub(crate) fn cut_dump(text: &str, from: usize) -> String {
    text.lines()
        .filter(|l| match hex_line(l) {
            Some(Ok((off, _))) => off < from,
            _ => true,
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn reads_a_lab_guest_dump_with_4096_bytes_each() {
    let l = parse(&fixture("lab_multifunction_acs.vvv-xxxx.txt")).unwrap();
    assert_eq!(l.form, LspciForm::Dump { bytes: 4096 });
    assert_eq!(l.functions.len(), 7);
    let (_, port) = l
        .functions
        .iter()
        .find(|(b, _)| *b == bdf("0000:00:07.0"))
        .unwrap();
    assert_eq!(port.config.len(), 4096);
    assert_eq!(port.config[0x0e] & 0x7f, 1, "a bridge");
    assert_eq!(port.config[0x19], 1, "secondary bus 01");
    let (_, nvme) = l
        .functions
        .iter()
        .find(|(b, _)| *b == bdf("0000:01:00.1"))
        .unwrap();
    assert_eq!(nvme.config[..2], [0x36, 0x1b]);
    let host = &l.functions[0].1;
    assert_eq!(
        host.config.len(),
        256,
        "the q35 host bridge is conventional PCI"
    );
}

#[test]
fn reads_this_hosts_dump_and_its_drivers() {
    let l = parse(&fixture("host_vm.vvv-xxxx.txt")).unwrap();
    assert!(matches!(l.form, LspciForm::Dump { bytes } if bytes >= 256));
    assert_eq!(l.functions.len(), 6);
    assert_eq!(l.functions[0].0, bdf("0000:00:00.0"));
    assert_eq!(l.functions[1].1.driver.as_deref(), Some("virtio-pci"));
    assert!(l.functions.iter().all(|(_, f)| f.config.len() >= 64));
}

#[test]
fn regions_and_sizes() {
    let r = region("Region 2: Memory at f8000000 (64-bit, prefetchable) [size=16M]").unwrap();
    assert_eq!((r.index, r.start, r.size), (2, 0xf800_0000, 16 << 20));
    assert!(r.memory && r.wide && r.prefetchable);
    let r = region("Region 0: Memory at fea00000 (32-bit, non-prefetchable) [size=4K]").unwrap();
    assert!(!r.prefetchable && !r.wide && r.size == 4096);
    let r = region("Region 4: I/O ports at c040 [size=32]").unwrap();
    assert!(!r.memory && r.size == 32);
    assert!(region("Region 1: Memory at <unassigned> (32-bit)").is_none());
    assert!(region("Region 9: Memory at 0 [size=4]").is_none());
    assert_eq!(size("18446744073709551615T"), None);
}

#[test]
fn a_dump_cut_at_256_or_64_bytes_is_its_own_form() {
    let text = fixture("lab_multifunction_acs.vvv-xxxx.txt");
    let l = parse(&cut_dump(&text, 0x100)).unwrap();
    assert_eq!(l.form, LspciForm::Dump { bytes: 256 });
    assert!(l.form.describe().contains("ACS unknown"));
    let l = parse(&cut_dump(&text, 0x40)).unwrap();
    assert_eq!(l.form, LspciForm::Dump { bytes: 64 });
}

#[test]
fn reads_the_tree_with_and_without_ids() {
    let l = parse(&fixture("lab_multifunction_acs.tv.txt")).unwrap();
    assert_eq!(l.form, LspciForm::Tree);
    let got: Vec<(String, Option<String>)> = l
        .functions
        .iter()
        .map(|(b, f)| (b.to_string(), f.parent.map(|p| p.to_string())))
        .collect();
    let port = Some("0000:00:07.0".to_string());
    assert_eq!(
        got,
        vec![
            ("0000:00:00.0".into(), None),
            ("0000:00:07.0".into(), None),
            ("0000:01:00.0".into(), port.clone()),
            ("0000:01:00.1".into(), port),
            ("0000:00:1f.0".into(), None),
            ("0000:00:1f.2".into(), None),
            ("0000:00:1f.3".into(), None),
        ]
    );
    let l = parse(&fixture("host_vm.tvnn.txt")).unwrap();
    assert_eq!(l.functions.len(), 6);
    assert_eq!(l.functions[1].1.ids, Some((0x1af4, 0x1045)));
}

#[test]
fn a_deep_tree_keeps_each_branch_on_its_bus() {
    let text = "\
-[0000:00]-+-00.0  Host
           +-04.0-[01-05]----00.0-[02-05]--+-00.0-[03]----00.0  NVMe
           |                               +-01.0-[04]----00.0  NVMe
           |                               \\-02.0-[05]----00.0  ivshmem
           +-05.0-[06]----00.0  NVMe
           \\-1f.3  SMBus
-[0000:80]---00.0-[81]----00.0  NVMe
";
    let l = parse(text).unwrap();
    let parent = |s: &str| {
        l.functions
            .iter()
            .find(|(b, _)| *b == bdf(s))
            .and_then(|(_, f)| f.parent)
            .map(|p| p.to_string())
    };
    assert_eq!(parent("0000:01:00.0").as_deref(), Some("0000:00:04.0"));
    assert_eq!(parent("0000:02:01.0").as_deref(), Some("0000:01:00.0"));
    assert_eq!(parent("0000:04:00.0").as_deref(), Some("0000:02:01.0"));
    assert_eq!(parent("0000:05:00.0").as_deref(), Some("0000:02:02.0"));
    assert_eq!(parent("0000:06:00.0").as_deref(), Some("0000:00:05.0"));
    assert_eq!(parent("0000:00:1f.3"), None);
    assert_eq!(parent("0000:81:00.0").as_deref(), Some("0000:80:00.0"));
    assert_eq!(l.functions.len(), 14);
}

#[test]
fn bad_input_is_an_error_with_its_line_number() {
    let good = "0000:00:00.0 Host bridge: X\n";
    let row = |o: usize| format!("{o:02x}: {}\n", ["00"; 16].join(" "));
    let dump: String = (0..4).map(|i| row(i * 16)).collect();
    for (text, line, why) in [
        ("", 1, "no PCI function"),
        ("hello world\n", 1, "not a function header"),
        ("00: 86 80\n", 1, "16 bytes"),
        (&*format!("\n{}", row(0)), 2, "before any function"),
        (&*format!("{good}{}{}", row(0), row(0x20)), 3, "offset 20"),
        (&*format!("{good}00: 86 8g 00\n"), 2, "two hex digits"),
        (&*format!("{good}{dump}{good}{dump}"), 6, "listed twice"),
        (&*format!("{good}\tRegion 0: ...\n"), 1, "no config space"),
        (&*format!("{good}{}", row(0)), 1, "less than 64 bytes"),
        (
            "-[0000:00]-+-00.0  X\n           |  +-zz\n",
            2,
            "below nothing",
        ),
        ("-[0000:00]-+-0g.0  X\n", 1, "expected a device"),
        ("-[0000:00]-+-00.0-[01\n", 1, "unclosed"),
    ] {
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.to_string().contains(why), "{text:?}: {e}");
    }
}

#[test]
fn a_dump_past_4096_bytes_is_refused() {
    let mut text = String::from("0000:00:00.0 X\n");
    for o in (0..=4096).step_by(16) {
        text.push_str(&format!("{o:x}: {}\n", ["00"; 16].join(" ")));
    }
    let e = parse(&text).unwrap_err();
    assert!(e.to_string().contains("4096"), "{e}");
}

proptest::proptest! {
    #[test]
    fn never_panics(text in "[-\\[\\]0-9a-f:. +|\\\\\tRegion=KM\n]{0,400}") {
        let _ = parse(&text);
    }
}
