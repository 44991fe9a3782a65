//! The `p2pmem_pci` kernel module's decisions, tested on the host: `logic.rs` is plain
//! `core` code compiled into the module as is, so the choice of BAR and range, every
//! refusal, the `ranges` syntax and the fixed tables are checked here without a kernel.

#![cfg(test)]

#[path = "../../../driver/p2pmem_pci/logic.rs"]
mod logic;

use logic::*;
use proptest::prelude::*;
use std::fmt::Write;

const MIB: u64 = 1 << 20;
const ALIGN: u64 = 2 * MIB;

fn bdf(s: &str) -> Bdf {
    Bdf::parse(s.as_bytes()).unwrap()
}

/// QEMU ivshmem-plain: BAR 0 256 B of registers, BAR 2 a 64-bit prefetchable window.
fn ivshmem(bar2_len: u64) -> [Option<Bar>; NUM_BARS] {
    let mut bars = [None; NUM_BARS];
    bars[0] = Some(Bar {
        kind: BarKind::Mem { prefetch: false },
        start: 0xfe00_0000,
        len: 0x100,
        assigned: true,
    });
    bars[2] = Some(Bar {
        kind: BarKind::Mem { prefetch: true },
        start: 0x80_0000_0000,
        len: bar2_len,
        assigned: true,
    });
    bars
}

fn req(bar: Option<u8>, offset: u64, size: Option<u64>) -> Request {
    Request { bar, offset, size }
}

#[test]
fn bdf_names_parse_strictly_and_print_lowercase() {
    assert_eq!(bdf("0000:06:00.2").to_string(), "0000:06:00.2");
    assert_eq!(bdf("ABCD:Ef:1F.7").to_string(), "abcd:ef:1f.7");
    for bad in [
        "",
        "0000:06:00",
        "0000:06:00.8",
        "0000:06:20.0",
        "0000-06:00.0",
        " 0000:06:00.0",
        "0000:06:00.0 ",
        "000g:06:00.0",
    ] {
        assert!(Bdf::parse(bad.as_bytes()).is_none(), "{bad:?}");
    }
}

#[test]
fn default_is_the_whole_largest_prefetchable_bar() {
    let r = choose_region(&ivshmem(64 * MIB), None, ALIGN).unwrap();
    assert_eq!(
        (r.bar, r.offset, r.size, r.bar_len),
        (2, 0, 64 * MIB, 64 * MIB)
    );
    assert_eq!(r.start, 0x80_0000_0000);
    assert!(r.default_bar);
    // Two prefetchable BARs: the larger wins, the lower index on a tie.
    let mut bars = ivshmem(16 * MIB);
    bars[4] = Some(Bar {
        kind: BarKind::Mem { prefetch: true },
        start: 0x90_0000_0000,
        len: 32 * MIB,
        assigned: true,
    });
    assert_eq!(choose_region(&bars, None, ALIGN).unwrap().bar, 4);
    bars[4] = bars[2];
    assert_eq!(choose_region(&bars, None, ALIGN).unwrap().bar, 2);
}

#[test]
fn a_chosen_bar_and_sub_range_is_honoured() {
    let r = choose_region(
        &ivshmem(64 * MIB),
        Some(&req(Some(2), 2 * MIB, Some(4 * MIB))),
        ALIGN,
    )
    .unwrap();
    assert_eq!((r.bar, r.offset, r.size), (2, 2 * MIB, 4 * MIB));
    assert_eq!(r.start, 0x80_0000_0000 + 2 * MIB);
    assert!(!r.default_bar);
    // An offset alone publishes the rest of the BAR.
    let r = choose_region(&ivshmem(64 * MIB), Some(&req(None, 8 * MIB, None)), ALIGN).unwrap();
    assert_eq!(r.size, 56 * MIB);
}

#[test]
fn every_refusal_has_its_reason() {
    let bars = ivshmem(64 * MIB);
    let refuse = |r: Request| choose_region(&bars, Some(&r), ALIGN).unwrap_err();
    assert_eq!(
        refuse(req(Some(0), 0, None)),
        Refusal::TooSmall {
            bar: 0,
            size: 0x100,
            min: ALIGN
        }
    );
    assert_eq!(
        refuse(req(Some(1), 0, None)),
        Refusal::Unimplemented { bar: 1 }
    );
    assert!(matches!(
        refuse(req(Some(2), 4096, None)),
        Refusal::Misaligned { bar: 2, .. }
    ));
    assert!(matches!(
        refuse(req(Some(2), 0, Some(3 * MIB))),
        Refusal::Misaligned { size, .. } if size == 3 * MIB
    ));
    assert!(matches!(
        refuse(req(Some(2), 64 * MIB, None)),
        Refusal::OutOfRange { .. }
    ));
    assert!(matches!(
        refuse(req(Some(2), 62 * MIB, Some(4 * MIB))),
        Refusal::OutOfRange { .. }
    ));
    assert!(matches!(
        refuse(req(Some(2), 2 * MIB, Some(u64::MAX))),
        Refusal::OutOfRange { .. }
    ));
    // An I/O BAR, an unassigned BAR, and no prefetchable BAR at all.
    let mut smbus = [None; NUM_BARS];
    smbus[0] = Some(Bar {
        kind: BarKind::Mem { prefetch: false },
        start: 0xfe00_0000,
        len: 0x100,
        assigned: true,
    });
    smbus[4] = Some(Bar {
        kind: BarKind::Io,
        start: 0x700,
        len: 0x40,
        assigned: true,
    });
    assert_eq!(
        choose_region(&smbus, Some(&req(Some(4), 0, None)), ALIGN).unwrap_err(),
        Refusal::IoBar { bar: 4 }
    );
    let nothing = choose_region(&smbus, None, ALIGN).unwrap_err();
    assert_eq!(nothing, Refusal::NoPrefetchableBar);
    assert!(nothing.is_no_device());
    let mut unset = ivshmem(64 * MIB);
    if let Some(b) = unset[2].as_mut() {
        b.assigned = false;
    }
    assert_eq!(
        choose_region(&unset, None, ALIGN).unwrap_err(),
        Refusal::Unassigned { bar: 2 }
    );
}

#[test]
fn refusals_read_as_the_kernel_log_prints_them() {
    let text = |r: Refusal| r.to_string();
    assert_eq!(
        text(Refusal::TooSmall {
            bar: 0,
            size: 0x100,
            min: ALIGN
        }),
        "refused: BAR 0: 0x100 bytes is too small for ZONE_DEVICE memory (at least 0x200000)"
    );
    assert_eq!(
        text(Refusal::IoBar { bar: 4 }),
        "refused: BAR 4 is an I/O port BAR; p2pmem needs a memory BAR"
    );
    assert_eq!(
        text(Refusal::Misaligned {
            bar: 2,
            start: 0xf800_1000,
            size: 0x3ff_f000,
            align: ALIGN
        }),
        "refused: BAR 2: range 0xf8001000+0x3fff000 is misaligned for ZONE_DEVICE memory (start and size must be multiples of 0x200000)"
    );
    assert!(text(Refusal::NoPrefetchableBar).contains("/sys/bus/pci/drivers/p2pmem_pci/ranges"));
}

#[test]
fn ranges_lines_parse_with_units_and_clear() {
    assert_eq!(
        parse_command(b"0000:00:08.0 bar=2 offset=2M size=0x400000\n"),
        Ok(Command::Set(
            bdf("0000:00:08.0"),
            req(Some(2), 2 * MIB, Some(4 * MIB))
        ))
    );
    assert_eq!(
        parse_command(b"  0000:00:08.0 size=1g "),
        Ok(Command::Set(
            bdf("0000:00:08.0"),
            req(None, 0, Some(1 << 30))
        ))
    );
    assert_eq!(
        parse_command(b"0000:00:08.0\n"),
        Ok(Command::Clear(bdf("0000:00:08.0")))
    );
    for (line, err) in [
        (&b""[..], ParseError::Empty),
        (b"\n", ParseError::Empty),
        (b"00:08.0 bar=2", ParseError::BadBdf),
        (b"0000:00:08.0 bar=6", ParseError::BadBar),
        (b"0000:00:08.0 bar=2 bar=2", ParseError::BadKey),
        (b"0000:00:08.0 colour=2", ParseError::BadKey),
        (b"0000:00:08.0 bar", ParseError::BadKey),
        (b"0000:00:08.0 size=0", ParseError::BadNumber),
        (b"0000:00:08.0 offset=0x", ParseError::BadNumber),
        (b"0000:00:08.0 offset=12q", ParseError::BadNumber),
        (
            b"0000:00:08.0 size=99999999999999999999",
            ParseError::BadNumber,
        ),
        (b"0000:00:08.0 size=17179869184G", ParseError::BadNumber),
    ] {
        assert_eq!(
            parse_command(line),
            Err(err),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn requests_print_in_the_syntax_they_are_read_in() {
    let r = req(Some(2), 2 * MIB, Some(4 * MIB));
    let line = format!("0000:00:08.0 {r}");
    assert_eq!(line, "0000:00:08.0 bar=2 offset=0x200000 size=0x400000");
    assert_eq!(
        req(None, 0, None).to_string(),
        "bar=default offset=0x0 size=rest"
    );
}

#[test]
fn tables_replace_remove_and_fill_up() {
    let mut t: Table<u32> = Table::new();
    assert_eq!(t.set(bdf("0000:00:08.0"), 1), Ok(()));
    assert_eq!(t.set(bdf("0000:00:08.0"), 2), Ok(()));
    assert_eq!(t.get(&bdf("0000:00:08.0")), Some(2));
    assert_eq!(t.iter().count(), 1);
    assert!(t.remove(&bdf("0000:00:08.0")));
    assert!(!t.remove(&bdf("0000:00:08.0")));
    for i in 0..TABLE_LEN {
        let name = format!("0000:{i:02x}:00.0");
        assert_eq!(t.set(bdf(&name), 0), Ok(()));
    }
    assert_eq!(t.set(bdf("0000:ff:00.0"), 0), Err(Full));
    assert_eq!(
        t.set(bdf("0000:00:00.0"), 9),
        Ok(()),
        "replacing needs no slot"
    );
}

#[test]
fn a_page_writer_never_overflows_its_page() {
    let mut page = [0u8; 16];
    let mut w = PageWriter::new(&mut page);
    assert!(write!(w, "0123456789").is_ok());
    assert!(write!(w, "abcdefghij").is_err());
    assert_eq!(w.len(), 16);
    assert_eq!(&page, b"0123456789abcdef");
}

proptest! {
    #[test]
    fn parsing_never_panics(line in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_command(&line);
    }

    #[test]
    fn a_chosen_region_is_always_inside_the_bar_and_aligned(
        len_pages in 1u64..=1024,
        offset in 0u64..(1 << 31),
        size in proptest::option::of(1u64..(1 << 31)),
    ) {
        let bars = ivshmem(len_pages * ALIGN);
        if let Ok(r) = choose_region(&bars, Some(&req(Some(2), offset, size)), ALIGN) {
            prop_assert!(r.offset + r.size <= r.bar_len);
            prop_assert_eq!(r.start % ALIGN, 0);
            prop_assert_eq!(r.size % ALIGN, 0);
            prop_assert!(r.size >= ALIGN);
        }
    }
}
