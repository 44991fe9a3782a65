use super::*;

const V6_1: KernelVersion = KernelVersion::new(6, 1, 192);
const V6_12: KernelVersion = KernelVersion::new(6, 12, 118);

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

fn port(s: &str) -> DeviceIds<'static> {
    DeviceIds {
        bdf: bdf(s),
        ids: (0x1b36, 0x000c),
        subsystem: None,
        upstream: &[],
    }
}

#[test]
fn commas_split_the_list_and_the_rest_is_an_unknown_option() {
    let p = parse_cmdline(
        "console=ttyS0 pci=disable_acs_redir=0000:0c:10.0,0000:0a:00.0",
        V6_12,
    );
    assert_eq!(p.disable_acs_redir.as_deref(), Some("0000:0c:10.0"));
    assert_eq!(p.kernel_lines, ["PCI: Unknown option `0000:0a:00.0'"]);
    assert_eq!(
        p.findings,
        [Finding::CommaSplit {
            option: "disable_acs_redir".into(),
            kept: "0000:0c:10.0".into(),
            dropped: vec!["0000:0a:00.0".into()],
            corrected: "pci=disable_acs_redir=0000:0c:10.0;0000:0a:00.0".into(),
        }]
    );
    // With `;` the list is whole, and other options after a comma are options.
    let p = parse_cmdline(
        "pci=disable_acs_redir=0000:0c:10.0;0000:0a:00.0,noaer",
        V6_12,
    );
    assert_eq!(
        p.disable_acs_redir.as_deref(),
        Some("0000:0c:10.0;0000:0a:00.0")
    );
    assert!(p.kernel_lines.is_empty() && p.findings.is_empty(), "{p:?}");
    let p = parse_cmdline("pci=bogus", V6_12);
    assert_eq!(p.kernel_lines, ["PCI: Unknown option `bogus'"]);
}

#[test]
fn a_later_pci_option_replaces_an_earlier_one() {
    let p = parse_cmdline(
        "pci=disable_acs_redir=0000:00:07.0 quiet pci=disable_acs_redir=0000:00:08.0",
        V6_12,
    );
    assert_eq!(p.disable_acs_redir.as_deref(), Some("0000:00:08.0"));
    assert!(matches!(
        &p.findings[..],
        [Finding::Overridden { corrected, .. }]
            if corrected == "pci=disable_acs_redir=0000:00:07.0;0000:00:08.0"
    ));
}

#[test]
fn config_acs_does_not_exist_on_6_1() {
    let p = parse_cmdline("pci=config_acs=11xx@0000:00:07.0", V6_1);
    assert_eq!(p.config_acs, None);
    assert_eq!(
        p.kernel_lines,
        ["PCI: Unknown option `config_acs=11xx@0000:00:07.0'"]
    );
    assert!(matches!(&p.findings[..], [Finding::Unsupported { .. }]));
    assert_eq!(
        parse_cmdline("pci=config_acs=11xx@0000:00:07.0", V6_12)
            .config_acs
            .as_deref(),
        Some("11xx@0000:00:07.0")
    );
}

#[test]
fn iommu_words() {
    assert_eq!(parse_cmdline("intel_iommu=on", V6_12).iommu, Some(true));
    assert_eq!(parse_cmdline("amd_iommu=off", V6_12).iommu, Some(false));
    assert_eq!(parse_cmdline("iommu=off", V6_12).iommu, Some(false));
    assert_eq!(parse_cmdline("console=ttyS0", V6_12).iommu, None);
    assert_eq!(cmdline_words(r#"a "b c" d=e"#), ["a", "b c", "d=e"]);
}

#[test]
fn device_syntax_of_pci_dev_str_match() {
    let up = [bdf("0000:00:07.0")];
    let f = DeviceIds {
        bdf: bdf("0000:06:00.1"),
        ids: (0x1b36, 0x0010),
        subsystem: Some((0x1af4, 0x1100)),
        upstream: &up,
    };
    for (spec, want) in [
        ("0000:06:00.1", Some(true)),
        ("06:00.1", Some(true)),
        ("06:00.0", Some(false)),
        ("0001:06:00.1", Some(false)),
        ("00:07.0/00.1", Some(true)),
        ("00:07.0/00.0", Some(false)),
        ("00:08.0/00.1", Some(false)),
        ("pci:1b36:0010", Some(true)),
        ("pci:1b36:0", Some(true)),
        ("pci:8086:0010", Some(false)),
        ("pci:1b36:0010:1af4:1100", Some(true)),
        ("pci:1b36:0010:1af4:1101", Some(false)),
        ("06:00", None),
        ("zz", None),
        ("pci:1b36", None),
        ("06:20.0", None),
    ] {
        assert_eq!(dev_str_match(spec, &f), want, "{spec}");
    }
}

#[test]
fn config_acs_walk_is_the_kernels() {
    let d = port("0000:00:07.0");
    let e = config_acs_effect("11xx@0000:00:07.0", None, &d);
    assert_eq!(e.applied, Some((0x000c, 0x000c)));
    // The first matching entry wins.
    let e = config_acs_effect("0000@00:07.0;1111@00:07.0", None, &d);
    assert_eq!(e.applied, Some((0x000f, 0)));
    // Another device's entry is passed over.
    let e = config_acs_effect("1x@00:05.0;11xx@00:07.0", None, &d);
    assert_eq!(e.applied, Some((0x000c, 0x000c)));
    // A malformed entry ends the walk for this device, with the kernel's line.
    let e = config_acs_effect("zz@00:05.0;11xx@00:07.0", None, &d);
    assert_eq!(e.applied, None);
    assert_eq!(
        e.kernel_lines,
        ["pci 0000:00:07.0: Invalid ACS flags... Ignoring"]
    );
    let e = config_acs_effect("11xx", None, &d);
    assert_eq!(e.kernel_lines, ["pci 0000:00:07.0: ACS Flags missing"]);
    // A 0 or 1 beyond the seven defined bits is refused; x beyond them is not.
    let e = config_acs_effect("10000000@00:07.0", None, &d);
    assert_eq!(
        e.kernel_lines,
        ["pci 0000:00:07.0: Invalid ACS flags specified"]
    );
    assert_eq!(
        config_acs_effect("xx0001100@00:07.0", None, &d).applied,
        Some((0x007f, 0x000c))
    );
    // An empty flag string touches nothing: the firmware value again.
    assert_eq!(
        config_acs_effect("@00:07.0", None, &d).applied,
        Some((0, 0))
    );
    let e = config_acs_effect("11xx@junk", None, &d);
    assert_eq!(
        e.kernel_lines,
        ["PCI: Can't parse ACS command line parameter"]
    );
    // disable_acs_redir: bare devices, fixed bits.
    let e = config_acs_effect("0000:00:05.0;0000:00:07.0", Some((REDIR_BITS, 0)), &d);
    assert_eq!(e.applied, Some((REDIR_BITS, 0)));
}

#[test]
fn enable_acs_reproduces_the_lab_capture() {
    // QEMU's pcie-root-port: capability 0x005f, control 0 at reset (lab-notes.md); the
    // lab's multifunction_acs boot logged `pci 0000:00:07.0: Configured ACS to 0x000c`.
    let d = port("0000:00:07.0");
    let fw = Firmware {
        ctrl: 0,
        known: 0xffff,
    };
    let p = parse_cmdline(
        "console=ttyS0 panic=-1 pci=config_acs=11xx@0000:00:07.0",
        V6_12,
    );
    let s = enable_acs(&d, 0x005f, fw, false, &p, V6_12);
    assert_eq!(s.ctrl, 0x000c);
    assert_eq!(
        s.kernel_lines,
        ["pci 0000:00:07.0: Configured ACS to 0x000c"]
    );
    // Another port is left alone and says nothing.
    let s = enable_acs(&port("0000:00:04.0"), 0x005f, fw, false, &p, V6_12);
    assert_eq!((s.ctrl, s.kernel_lines.len()), (0, 0));
}

#[test]
fn iommu_then_disable_acs_redir() {
    let d = port("0000:00:07.0");
    let fw = Firmware {
        ctrl: 0,
        known: 0xffff,
    };
    let none = BootParams::default();
    assert_eq!(enable_acs(&d, 0x005f, fw, true, &none, V6_12).ctrl, 0x001d);
    let p = parse_cmdline("pci=disable_acs_redir=0000:00:07.0", V6_12);
    // From 6.11 the value is rebuilt from the firmware's: SV and UF go too.
    assert_eq!(enable_acs(&d, 0x005f, fw, true, &p, V6_12).ctrl, 0x0000);
    // Before, only RR, CR and EC were cleared.
    let s = enable_acs(&d, 0x005f, fw, true, &p, V6_1);
    assert_eq!(s.ctrl, 0x0011);
    assert_eq!(s.kernel_lines, ["pci 0000:00:07.0: disabled ACS redirect"]);
    // config_acs comes after disable_acs_redir: it can set RR and CR again.
    let p = parse_cmdline(
        "pci=disable_acs_redir=0000:00:07.0 pci=config_acs=11xx@0000:00:07.0",
        V6_12,
    );
    assert_eq!(enable_acs(&d, 0x005f, fw, true, &p, V6_12).ctrl, 0x000c);
}

#[test]
fn the_firmware_behind_a_capture() {
    let d = port("0000:00:07.0");
    let p = parse_cmdline("pci=config_acs=11xx@0000:00:07.0", V6_12);
    let fw = firmware_from_capture(&d, 0x005f, 0x000c, &p, false);
    // RR and CR were the parameter's; the other bits are the firmware's (0).
    assert_eq!(fw.known, !0x000c);
    assert_eq!(fw.ctrl, 0);
    // Without the parameter the port goes back to the firmware value: 0, known.
    let s = enable_acs(&d, 0x005f, fw, false, &BootParams::default(), V6_12);
    assert_eq!((s.ctrl & 0x000c, s.known & 0x000c), (0, 0));
    // The redirect bits are unknown then: the firmware's RR/CR were overwritten.
    // With the IOMMU the kernel sets them itself: known again.
    let s = enable_acs(&d, 0x005f, fw, true, &BootParams::default(), V6_12);
    assert_eq!((s.ctrl & 0x000c, s.known & 0x000c), (0x000c, 0x000c));
}
