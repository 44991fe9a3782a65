use super::*;
use proptest::prelude::*;

const NEWEST: KernelVersion = KernelVersion::NEWEST_READ;
const OLDEST: KernelVersion = KernelVersion::OLDEST_MODELLED;

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

/// 0000:05:00.0 has published p2pmem, 0000:06:00.0 exists without.
fn lab(name: &str) -> Option<HasP2pmem> {
    match name {
        "0000:05:00.0" => Some(HasP2pmem::Yes),
        "0000:06:00.0" => Some(HasP2pmem::No),
        _ => None,
    }
}

fn parse(input: &str, v: KernelVersion) -> Result<P2pmemSetting, NvmetAttrError> {
    parse_p2pmem_attr(input, lab, v)
}

fn reason(input: &str, v: KernelVersion) -> RejectReason {
    match parse(input, v) {
        Err(NvmetAttrError::NoSuchDevice { reason, .. }) => reason,
        other => panic!("{input:?}: {other:?}"),
    }
}

#[test]
fn device_name_with_p2pmem_selects_it() {
    for input in ["0000:05:00.0", "0000:05:00.0\n"] {
        assert_eq!(
            parse(input, NEWEST),
            Ok(P2pmemSetting::Device(bdf("05:00.0"))),
            "{input:?}"
        );
    }
}

#[test]
fn device_without_p2pmem_is_enodev_with_the_kernel_text() {
    let e = parse("0000:06:00.0\n", NEWEST).unwrap_err();
    assert_eq!((e.errno().name, e.errno().code), ("ENODEV", 19));
    let log = e.kernel_log().unwrap();
    assert_eq!(log.prefix, LogPrefix::Device(bdf("06:00.0")));
    assert_eq!(
        log.text,
        "PCI device has no peer-to-peer memory: 0000:06:00.0"
    );
    assert!(matches!(e, NvmetAttrError::NoP2pmem { ref input, .. } if input == "0000:06:00.0\n"));
}

#[test]
fn names_must_match_exactly() {
    // Short, upper-case or twice-newlined spellings name no device, and their
    // leading 0 makes them mistyped addresses.
    for input in [
        "05:00.0",
        "0000:05:00.0\n\n",
        "0000:0A:00.0",
        " 0000:05:00.0",
    ] {
        let r = parse(input, NEWEST);
        assert!(
            matches!(r, Err(NvmetAttrError::NoSuchDevice { .. })),
            "{input:?}: {r:?}"
        );
    }
}

#[test]
fn zero_or_one_followed_by_more_is_refused() {
    for input in ["10", "0000:99:00.0", "1 ", "0x1", "01\n"] {
        assert_eq!(
            reason(input, NEWEST),
            RejectReason::LooksLikeAddress,
            "{input:?}"
        );
    }
    let e = parse("0000:99:00.0\n", NEWEST).unwrap_err();
    let log = e.kernel_log().unwrap();
    assert_eq!(log.prefix, LogPrefix::Module("pci-p2pdma: "));
    assert_eq!(log.text, "No such PCI device: 0000:99:00.0");
    assert_eq!(e.to_string(), "No such PCI device: 0000:99:00.0 (ENODEV)");
}

#[test]
fn zero_or_one_followed_by_a_control_character_is_a_boolean() {
    for (input, on) in [
        ("1", true),
        ("1\n", true),
        ("1\t", true),
        ("0", false),
        ("0\n", false),
        ("1\0junk", true),
    ] {
        let expected = if on {
            P2pmemSetting::Auto
        } else {
            P2pmemSetting::Off
        };
        assert_eq!(parse(input, OLDEST), Ok(expected), "{input:?}");
    }
}

#[test]
fn kernel_ctype_control_range() {
    assert!(is_cntrl(0) && is_cntrl(31) && is_cntrl(127) && is_cntrl(0x80) && is_cntrl(0x9f));
    assert!(!is_cntrl(b' ') && !is_cntrl(b'~') && !is_cntrl(0xa0) && !is_cntrl(0xc2));
}

#[test]
fn auto_is_not_a_kernel_spelling() {
    assert_eq!(reason("auto", NEWEST), RejectReason::NotBoolean);
    assert_eq!(reason("auto\n", NEWEST), RejectReason::NotBoolean);
}

#[test]
fn no_such_device_shows_input_up_to_the_first_newline() {
    let e = parse("maybe\nnot", NEWEST).unwrap_err();
    assert_eq!(e.kernel_log().unwrap().text, "No such PCI device: maybe");
    assert!(matches!(e, NvmetAttrError::NoSuchDevice { ref input, .. } if input == "maybe\nnot"));
    assert_eq!(reason("", NEWEST), RejectReason::NotBoolean);
    assert_eq!(reason("o", NEWEST), RejectReason::NotBoolean);
    assert_eq!(reason("ox", NEWEST), RejectReason::NotBoolean);
}

/// Checks one `KSTRTOBOOL` row: every first byte, on a kernel inside and outside
/// its range, gives the row's value or a SpellingTooNew naming it.
fn check_row(index: usize) {
    let row = KSTRTOBOOL[index];
    let expected = if row.value {
        P2pmemSetting::Auto
    } else {
        P2pmemSetting::Off
    };
    for &first in row.first {
        let mut word = vec![first];
        word.extend(row.second.map(|s| s[0]));
        word.extend(b"xyz\n");
        let word = String::from_utf8(word).unwrap();
        // "1xyz" is a mistyped address, not a boolean: test the digits bare.
        let input = if first.is_ascii_digit() {
            &word[..1]
        } else {
            word.as_str()
        };
        assert_eq!(parse(input, row.versions.since), Ok(expected), "{input:?}");
        assert_eq!(parse(input, NEWEST), Ok(expected), "{input:?}");
        if row.versions.since > OLDEST {
            assert_eq!(
                reason(input, OLDEST),
                RejectReason::SpellingTooNew {
                    example: row.example,
                    since: row.versions.since
                }
            );
        }
    }
}

#[test]
fn kstrtobool_1() {
    check_row(0);
}
#[test]
fn kstrtobool_y() {
    check_row(1);
}
#[test]
fn kstrtobool_0() {
    check_row(2);
}
#[test]
fn kstrtobool_n() {
    check_row(3);
}
#[test]
fn kstrtobool_on() {
    check_row(4);
}
#[test]
fn kstrtobool_off() {
    check_row(5);
}
#[test]
fn kstrtobool_t_since_5_19() {
    check_row(6);
    assert!(parse("true", KernelVersion::new(5, 18, 19)).is_err());
}
#[test]
fn kstrtobool_f_since_5_19() {
    check_row(7);
}
#[test]
fn kstrtobool_e_since_6_16() {
    check_row(8);
    assert!(parse("enable", KernelVersion::new(6, 15, 11)).is_err());
    assert_eq!(
        parse("enable", KernelVersion::new(6, 16, 0)),
        Ok(P2pmemSetting::Auto)
    );
}
#[test]
fn kstrtobool_d_since_6_16() {
    check_row(9);
}

#[test]
fn kstrtobool_table_is_covered() {
    assert_eq!(
        KSTRTOBOOL.len(),
        10,
        "add a kstrtobool_* test for the new row"
    );
}

#[test]
fn enabled_namespace_is_ebusy() {
    let e = store_p2pmem_attr("1", true, lab, NEWEST).unwrap_err();
    assert_eq!(
        (e.errno().name, e.errno().code, e.kernel_log()),
        ("EBUSY", 16, None)
    );
    assert_eq!(
        store_p2pmem_attr("1", false, lab, NEWEST),
        Ok(P2pmemSetting::Auto)
    );
}

#[test]
fn read_format_and_parse() {
    let dev = P2pmemSetting::Device(bdf("0000:05:00.0"));
    let cases = [
        (P2pmemSetting::Off, "0\n"),
        (P2pmemSetting::Auto, "1\n"),
        (dev, "0000:05:00.0\n"),
    ];
    for (setting, shown) in cases {
        assert_eq!(format_p2pmem_attr(&setting), shown);
        assert_eq!(parse_p2pmem_show(shown.as_bytes()), Ok(setting));
    }
    for bad in [&b""[..], b"2\n", b"05:00.0\n", b"auto\n", b"\xff"] {
        assert!(parse_p2pmem_show(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn user_spelling_maps_to_what_the_kernel_takes() {
    let cases = [
        ("off", "0"),
        ("auto", "1"),
        ("AUTO\n", "1"),
        ("05:00.0", "0000:05:00.0"),
    ];
    for (user, kernel) in cases {
        let s = parse_user_setting(user).unwrap();
        assert_eq!(s.kernel_write(), kernel, "{user:?}");
        assert_eq!(parse(&s.kernel_write(), OLDEST), Ok(s), "{user:?}");
    }
    let e = parse_user_setting("on").unwrap_err();
    assert!(e.to_string().contains("'on'"), "{e}");
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn errors_serialize_with_errno_and_log() {
    let v = serde_json::to_value(parse("auto", NEWEST).unwrap_err()).unwrap();
    assert_eq!(v["error"], "no_such_device");
    assert_eq!(v["errno"]["name"], "ENODEV");
    assert_eq!(v["errno"]["code"], 19);
    assert_eq!(v["reason"]["kind"], "not_boolean");
    assert_eq!(v["kernel_log"]["text"], "No such PCI device: auto");
    let s = serde_json::to_value(P2pmemSetting::Device(bdf("05:00.0"))).unwrap();
    assert_eq!(
        (s["mode"].as_str(), s["device"].as_str()),
        (Some("device"), Some("0000:05:00.0"))
    );
    assert_eq!(
        serde_json::to_value(P2pmemSetting::Auto).unwrap()["mode"],
        "auto"
    );
}

fn facts(backend: NsBackend, setting: P2pmemSetting) -> NamespaceFacts {
    NamespaceFacts {
        device_path: "/dev/nvme0n1".into(),
        backend,
        setting,
        distance_ok: Some(true),
        provider_found: Some(true),
    }
}

const P2P_QUEUE: NsBackend = NsBackend::Block {
    queue_supports_p2pdma: true,
};

#[test]
fn preflight_off_checks_nothing() {
    assert_eq!(
        preflight(&facts(NsBackend::File, P2pmemSetting::Off)),
        Ok(PreflightPass::NotRequested)
    );
}

#[test]
fn preflight_file_backend_fails() {
    let e = preflight(&facts(NsBackend::File, P2pmemSetting::Auto)).unwrap_err();
    assert_eq!(e, PreflightFailure::NotBlockDevice);
    assert_eq!((e.errno().name, e.errno().code), ("EINVAL", 22));
    let log = e.kernel_log().unwrap();
    assert_eq!(log.prefix, LogPrefix::Module("nvmet: "));
    assert_eq!(
        log.text,
        "peer-to-peer DMA is not supported by non-block device namespaces"
    );
}

#[test]
fn preflight_queue_without_p2pdma_fails() {
    let ns = facts(
        NsBackend::Block {
            queue_supports_p2pdma: false,
        },
        P2pmemSetting::Auto,
    );
    let e = preflight(&ns).unwrap_err();
    assert_eq!(
        e.kernel_log().unwrap().text,
        "peer-to-peer DMA is not supported by the driver of /dev/nvme0n1"
    );
}

#[test]
fn preflight_distance_for_a_chosen_device() {
    let dev = P2pmemSetting::Device(bdf("05:00.0"));
    let mut ns = facts(P2P_QUEUE, dev);
    assert_eq!(preflight(&ns), Ok(PreflightPass::Passes));
    ns.distance_ok = Some(false);
    let e = preflight(&ns).unwrap_err();
    assert!(matches!(e, PreflightFailure::DistanceRejected { .. }));
    assert_eq!((e.errno().name, e.kernel_log()), ("EINVAL", None));
    ns.distance_ok = None;
    assert_eq!(
        preflight(&ns),
        Ok(PreflightPass::Undetermined {
            check: PreflightCheck::Distance
        })
    );
}

#[test]
fn preflight_failures_serialize_with_errno_and_log() {
    let e = preflight(&facts(NsBackend::File, P2pmemSetting::Auto)).unwrap_err();
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["error"], "not_block_device");
    assert_eq!(v["errno"]["name"], "EINVAL");
    assert_eq!(v["kernel_log"]["prefix"]["value"], "nvmet: ");
}

#[test]
fn preflight_provider_search_for_auto() {
    let mut ns = facts(P2P_QUEUE, P2pmemSetting::Auto);
    ns.distance_ok = Some(false);
    assert_eq!(preflight(&ns), Ok(PreflightPass::Passes));
    ns.provider_found = Some(false);
    let e = preflight(&ns).unwrap_err();
    assert_eq!(
        e.kernel_log().unwrap().text,
        "no peer-to-peer memory is available for /dev/nvme0n1"
    );
    ns.provider_found = None;
    assert_eq!(
        preflight(&ns),
        Ok(PreflightPass::Undetermined {
            check: PreflightCheck::ProviderSearch
        })
    );
}

proptest! {
    #[test]
    fn attr_parsers_never_panic(s in "\\PC*", bytes in prop::collection::vec(any::<u8>(), 0..40), minor in 0u16..30) {
        let v = KernelVersion::new(6, minor, 0);
        let _ = parse(&s, v);
        let _ = parse_p2pmem_show(&bytes);
        let _ = parse_user_setting(&s);
        if let Ok(s) = std::str::from_utf8(&bytes) {
            let _ = parse(s, v);
        }
    }

    #[test]
    fn written_settings_read_back(domain in 0u32..0x10000, bus: u8, dev in 0u8..32, func in 0u8..8, kind in 0u8..3) {
        let b = Bdf::new(domain, bus, dev, func).unwrap();
        let setting = [P2pmemSetting::Off, P2pmemSetting::Auto, P2pmemSetting::Device(b)][usize::from(kind)];
        let any_device = |_: &str| Some(HasP2pmem::Yes);
        prop_assert_eq!(parse_p2pmem_attr(&setting.kernel_write(), any_device, OLDEST), Ok(setting));
        prop_assert_eq!(parse_p2pmem_show(format_p2pmem_attr(&setting).as_bytes()), Ok(setting));
    }
}
