use super::*;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const ALIGN: u64 = 2 * MIB;
/// CMBSZ with SQS, LISTS, RDS, WDS, SZU = 2 (1 MiB), SZ = 16, as QEMU's nvme device
/// sets it for `cmb_size_mb=16`; CMBLOC = BIR 2 | CDPMLS | CDPCILS.
const QEMU_CMBSZ: u32 = 0x0001_021d;
const QEMU_CMBLOC: u32 = 0x62;

fn mem_bar(start: u64, len: u64) -> Option<BarInfo> {
    Some(BarInfo {
        start,
        len,
        is_mem: true,
    })
}

/// CMBSZ with the given flags, SZU and SZ.
fn sz(flags: u32, szu: u32, units: u32) -> CmbSz {
    CmbSz::from(flags | szu << 8 | units << 12)
}

fn loc(bir: u32, ofst: u32) -> CmbLoc {
    CmbLoc::from(bir | ofst << 12)
}

const RW: u32 = field::CMBSZ_RDS | field::CMBSZ_WDS;

#[test]
fn cap_cmbs_is_bit_57() {
    assert!(Cap(1 << 57).cmbs());
    assert!(!Cap(!(1 << 57)).cmbs());
}

#[test]
fn cmbloc_fields() {
    let l = CmbLoc::from(0xabcd_e1ff);
    assert_eq!((l.bir, l.ofst), (7, 0xabcde));
    assert!(l.cqmms && l.cqpds && l.cdpmls && l.cdpcils && l.cdmmms && l.cqda);
    let q = CmbLoc::from(QEMU_CMBLOC);
    assert_eq!((q.bir, q.ofst), (2, 0));
    assert!(q.cdpmls && q.cdpcils && !q.cqmms && !q.cqpds && !q.cdmmms && !q.cqda);
}

#[test]
fn cmbsz_fields() {
    let s = CmbSz::from(QEMU_CMBSZ);
    assert!(s.sqs && !s.cqs && s.lists && s.rds && s.wds);
    assert_eq!((s.szu, s.sz), (2, 16));
    for (bit, name) in [(0, "sqs"), (1, "cqs"), (2, "lists"), (3, "rds"), (4, "wds")] {
        let v = serde_json::to_value(CmbSz::from(1 << bit)).unwrap();
        assert_eq!(v[name], true, "bit {bit}");
    }
}

#[test]
fn unit_is_4k_times_16_to_the_szu() {
    let units = [
        4 << 10,
        64 << 10,
        MIB,
        16 * MIB,
        256 * MIB,
        4096 * MIB,
        65536 * MIB,
    ];
    for (szu, unit) in units.iter().enumerate() {
        assert_eq!(sz(0, szu as u32, 1).unit(), Ok(*unit), "SZU {szu}");
    }
}

#[test]
fn reserved_szu_is_an_error_not_an_overflow() {
    for szu in 7..=15u32 {
        let s = sz(RW, szu, 0xfffff);
        let e = s.unit().unwrap_err();
        assert!(e.to_string().contains(&format!("SZU={szu}")), "{e}");
        let v = registration(s, loc(2, 0xfffff), mem_bar(0, u64::MAX), ALIGN);
        assert_eq!(v.outcome, CmbOutcome::ReservedSizeUnit { szu: szu as u8 });
    }
}

#[test]
fn decode_multiplies_unit_by_sz_and_ofst() {
    let g = decode(sz(0, 2, 16), loc(4, 3)).unwrap();
    assert_eq!(
        g,
        CmbGeometry {
            bar: 4,
            unit: MIB,
            size: 16 * MIB,
            offset: 3 * MIB
        }
    );
    let max = decode(CmbSz::from(0xffff_f6ff), CmbLoc::from(0xffff_f000)).unwrap();
    assert_eq!(max.size, 0xfffff << 36);
    assert_eq!(max.offset, 0xfffff << 36);
}

#[test]
fn zero_cmbsz_is_no_cmb_and_silent() {
    let v = registration(CmbSz::from(0), loc(2, 0), mem_bar(0, 16 * MIB), ALIGN);
    assert_eq!(v.outcome, CmbOutcome::NoCmb);
    assert_eq!((v.kernel_log, v.legacy_kernel_log), (None, None));
}

#[test]
fn qemu_cmb_registers_and_publishes() {
    // s01 in shared/truth: 16 MiB at BAR2 0xfa000000, published, available < size.
    let v = registration(
        CmbSz::from(QEMU_CMBSZ),
        CmbLoc::from(QEMU_CMBLOC),
        mem_bar(0xfa00_0000, 16 * MIB),
        ALIGN,
    );
    let expected = CmbOutcome::Registered {
        bar: 2,
        size: 16 * MIB,
        offset: 0,
        clamped_from: None,
        published: true,
        sq_in_cmb: true,
    };
    assert_eq!(v.outcome, expected);
    assert_eq!(v.kernel_log, None);
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["outcome"], "registered");
    assert_eq!(json["size"], 16 * MIB);
}

#[test]
fn offset_beyond_bar_is_skipped_silently() {
    let v = registration(sz(RW, 2, 4), loc(2, 17), mem_bar(0, 16 * MIB), ALIGN);
    assert_eq!(
        v.outcome,
        CmbOutcome::OffsetBeyondBar {
            bar: 2,
            offset: 17 * MIB,
            bar_len: 16 * MIB
        }
    );
    assert_eq!(v.kernel_log, None);
    assert!(
        v.explanation.contains("without logging"),
        "{}",
        v.explanation
    );
    // A missing BAR has length 0, so any non-zero offset is beyond it.
    let v = registration(sz(RW, 2, 4), loc(3, 1), None, ALIGN);
    assert!(matches!(
        v.outcome,
        CmbOutcome::OffsetBeyondBar { bar_len: 0, .. }
    ));
}

#[test]
fn size_is_clamped_to_the_bar() {
    let v = registration(sz(RW, 2, 64), loc(2, 4), mem_bar(0, 16 * MIB), ALIGN);
    assert!(matches!(
        v.outcome,
        CmbOutcome::Registered { size, offset, clamped_from: Some(c), .. }
            if size == 12 * MIB && offset == 4 * MIB && c == 64 * MIB
    ));
}

#[test]
fn unaligned_size_is_skipped_silently() {
    let v = registration(sz(RW, 2, 3), loc(2, 0), mem_bar(0, 16 * MIB), ALIGN);
    assert_eq!(
        v.outcome,
        CmbOutcome::SkippedUnaligned {
            bar: 2,
            size: 3 * MIB,
            bar_start: 0,
            compat_align: ALIGN
        }
    );
    assert_eq!(v.kernel_log, None);
    // Before the check, memremap failed on the same CMB.
    assert_eq!(v.legacy_kernel_log, Some(FAILED_TO_REGISTER));
    assert!(v.explanation.contains(ALIGN_CHECK_COMMIT));
}

#[test]
fn unaligned_bar_start_is_skipped_silently() {
    let v = registration(
        sz(RW, 2, 4),
        loc(2, 0),
        mem_bar(0xfa10_0000, 16 * MIB),
        ALIGN,
    );
    assert!(matches!(
        v.outcome,
        CmbOutcome::SkippedUnaligned {
            bar_start: 0xfa10_0000,
            ..
        }
    ));
    assert_eq!(v.legacy_kernel_log, Some(FAILED_TO_REGISTER));
    // The check looks at the BAR start only: an offset that realigns the range still
    // gets skipped, although older kernels registered it.
    let v = registration(
        sz(RW, 2, 4),
        loc(2, 1),
        mem_bar(0xfa10_0000, 16 * MIB),
        ALIGN,
    );
    assert!(matches!(v.outcome, CmbOutcome::SkippedUnaligned { .. }));
    assert_eq!(v.legacy_kernel_log, None);
}

#[test]
fn unaligned_offset_fails_registration() {
    // BAR start and size pass nvme-pci's check; the memremap range does not.
    let v = registration(sz(RW, 1, 64), loc(2, 1), mem_bar(0, 32 * MIB), ALIGN);
    assert!(matches!(
        v.outcome,
        CmbOutcome::RegistrationFails { reason: AddResourceFailure::RangeUnaligned, offset, .. }
            if offset == 64 << 10
    ));
    assert_eq!(v.kernel_log, Some(FAILED_TO_REGISTER));
}

#[test]
fn non_memory_or_missing_bar_fails_registration() {
    let io = Some(BarInfo {
        start: 0,
        len: 16 * MIB,
        is_mem: false,
    });
    for bar in [io, None] {
        let v = registration(sz(RW, 2, 4), loc(2, 0), bar, ALIGN);
        assert!(
            matches!(
                v.outcome,
                CmbOutcome::RegistrationFails {
                    reason: AddResourceFailure::BarNotMemory,
                    ..
                }
            ),
            "{v:?}"
        );
        assert_eq!(v.kernel_log, Some(FAILED_TO_REGISTER));
    }
}

#[test]
fn offset_at_bar_end_fails_registration() {
    let v = registration(sz(RW, 2, 4), loc(2, 16), mem_bar(0, 16 * MIB), ALIGN);
    assert!(matches!(
        v.outcome,
        CmbOutcome::RegistrationFails {
            reason: AddResourceFailure::OffsetAtBarEnd,
            size: 0,
            ..
        }
    ));
    assert_eq!(v.kernel_log, Some(FAILED_TO_REGISTER));
}

#[test]
fn zero_sz_registers_to_the_end_of_the_bar() {
    let v = registration(
        sz(RW | field::CMBSZ_SQS, 2, 0),
        loc(2, 4),
        mem_bar(0, 16 * MIB),
        ALIGN,
    );
    assert!(matches!(
        v.outcome,
        CmbOutcome::Registered { size, sq_in_cmb: false, .. } if size == 12 * MIB
    ));
}

#[test]
fn published_only_with_both_rds_and_wds() {
    use field::{CMBSZ_CQS, CMBSZ_LISTS, CMBSZ_RDS, CMBSZ_SQS, CMBSZ_WDS};
    let cases = [
        (CMBSZ_RDS | CMBSZ_WDS, true),
        (CMBSZ_RDS, false),
        (CMBSZ_WDS, false),
        (CMBSZ_SQS | CMBSZ_CQS | CMBSZ_LISTS, false),
    ];
    for (flags, published) in cases {
        let v = registration(sz(flags, 2, 4), loc(2, 0), mem_bar(0, 4 * MIB), ALIGN);
        assert!(
            matches!(v.outcome, CmbOutcome::Registered { published: p, .. } if p == published),
            "flags {flags:#x}: {v:?}"
        );
    }
}

#[test]
fn sqs_puts_submission_queues_in_the_cmb() {
    for (flags, sq) in [(field::CMBSZ_SQS, true), (RW, false)] {
        let v = registration(sz(flags, 2, 4), loc(2, 0), mem_bar(0, 4 * MIB), ALIGN);
        assert!(matches!(v.outcome, CmbOutcome::Registered { sq_in_cmb, .. } if sq_in_cmb == sq));
    }
}

#[test]
fn cmb_attr_roundtrip_and_errors() {
    let text = b"cmbloc : 0x00000062\ncmbsz  : 0x0001021d\n";
    let a = parse_cmb_attr(text).unwrap();
    assert_eq!((a.cmbloc.raw, a.cmbsz.raw), (QEMU_CMBLOC, QEMU_CMBSZ));
    assert_eq!(a.to_string().as_bytes(), text);
    for bad in [
        &b""[..],
        b"cmbloc : 0x00000062\n",
        b"cmbloc: 0x00000062\ncmbsz  : 0x0001021d\n",
        b"cmbloc : 00000062\ncmbsz  : 0x0001021d\n",
        b"cmbloc : X00000062\ncmbsz  : 0x0001021d\n",
        b"cmbloc : 0xx00000062\ncmbsz  : 0x0001021d\n",
        b"cmbloc : 0x000000620\ncmbsz  : 0x0001021d\n",
        b"cmbloc : 0x00000062\ncmbsz  : 0x0001021d\nextra\n",
        b"cmbloc : 0x0000006g\ncmbsz  : 0x0001021d\n",
        b"\xff\xfe",
    ] {
        let e = parse_cmb_attr(bad).unwrap_err();
        assert!(matches!(e, CmbError::AttrFormat { .. }), "{e}");
    }
}

/// Up to 6.12 the kernel prints `x%08x` (the lab's 6.12 captures have it), from 7.x
/// `0x%08x`: both parse, and each kernel's text is reproduced.
#[test]
fn cmb_attr_in_both_kernel_formats() {
    let old = b"cmbloc : x00000062\ncmbsz  : x0001021d\n";
    let a = parse_cmb_attr(old).unwrap();
    assert_eq!((a.cmbloc.raw, a.cmbsz.raw), (QEMU_CMBLOC, QEMU_CMBSZ));
    let v6_12 = crate::KernelVersion::new(6, 12, 118);
    let v7_2 = crate::KernelVersion::new(7, 2, 13);
    assert_eq!(a.kernel_text(v6_12).as_bytes(), old);
    assert_eq!(
        a.kernel_text(v7_2),
        "cmbloc : 0x00000062\ncmbsz  : 0x0001021d\n"
    );
    let capture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/nvmet/lab_default_fam15/root/sys/devices/pci0000:00/0000:00:06.0/0000:06:00.0/nvme/nvme3/cmb"
    );
    let text = std::fs::read(capture).unwrap();
    assert_eq!(parse_cmb_attr(&text).unwrap(), a);
}

#[test]
fn decimal_attr() {
    assert_eq!(parse_decimal_attr(b"66077\n"), Ok(QEMU_CMBSZ));
    for bad in [&b""[..], b"-1\n", b"4294967296\n", b"0x62\n", b" 1\n"] {
        assert!(parse_decimal_attr(bad).is_err(), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn registration_never_panics(
        cmbsz: u32, cmbloc: u32, start: u64, len: u64, is_mem: bool, some: bool, align_shift in 0u32..64,
    ) {
        let bar = some.then_some(BarInfo { start, len, is_mem });
        let v = registration(CmbSz::from(cmbsz), CmbLoc::from(cmbloc), bar, 1 << align_shift);
        if let CmbOutcome::Registered { size, offset, .. } = v.outcome {
            let bar = bar.unwrap_or(BarInfo { start: 0, len: 0, is_mem: false });
            prop_assert!(bar.is_mem && size > 0 && offset + size <= bar.len);
        }
    }

    #[test]
    fn cmb_attr_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_cmb_attr(&bytes);
        let _ = parse_decimal_attr(&bytes);
    }

    #[test]
    fn cmb_attr_roundtrips(cmbloc: u32, cmbsz: u32) {
        let a = CmbAttr { cmbloc: cmbloc.into(), cmbsz: cmbsz.into() };
        prop_assert_eq!(parse_cmb_attr(a.to_string().as_bytes()).unwrap(), a);
    }
}
