use super::*;
use proptest::prelude::*;

const PAGE: u64 = 4096;

fn r(start: u64, len: u64) -> Range {
    Range { start, len }
}

#[test]
fn new_rejects_bad_geometry() {
    assert_eq!(
        Pool::new(PAGE, 0),
        Err(PoolError::BadGranule { granule: 0 })
    );
    assert_eq!(
        Pool::new(PAGE, 3),
        Err(PoolError::BadGranule { granule: 3 })
    );
    assert_eq!(
        Pool::new(0, PAGE),
        Err(PoolError::BadLength {
            len: 0,
            granule: PAGE
        })
    );
    assert_eq!(
        Pool::new(PAGE + 1, PAGE),
        Err(PoolError::BadLength {
            len: PAGE + 1,
            granule: PAGE
        })
    );
    let p = Pool::new(u64::MAX - PAGE + 1, PAGE).unwrap();
    assert_eq!(p.stats().largest_free, u64::MAX - PAGE + 1);
}

#[test]
fn first_fit_rounds_to_the_granule() {
    let mut p = Pool::new(16 * PAGE, PAGE).unwrap();
    assert_eq!(p.alloc(1, 1).unwrap(), r(0, PAGE));
    assert_eq!(p.alloc(PAGE + 1, 0x10).unwrap(), r(PAGE, 2 * PAGE));
    assert_eq!(p.alloc(PAGE, PAGE).unwrap(), r(3 * PAGE, PAGE));
    // Freeing the first page leaves a hole that first fit reuses.
    p.free(0).unwrap();
    assert_eq!(p.alloc(10, 1).unwrap(), r(0, PAGE));
}

#[test]
fn alignment_splits_a_block_in_two() {
    let mut p = Pool::new(16 * PAGE, PAGE).unwrap();
    p.alloc(PAGE, PAGE).unwrap();
    let a = p.alloc(PAGE, 4 * PAGE).unwrap();
    assert_eq!(a, r(4 * PAGE, PAGE));
    let free: Vec<Range> = p.free_blocks().collect();
    assert_eq!(free, vec![r(PAGE, 3 * PAGE), r(5 * PAGE, 11 * PAGE)]);
    // The gap in front of the aligned block is still usable.
    assert_eq!(p.alloc(3 * PAGE, PAGE).unwrap(), r(PAGE, 3 * PAGE));
}

#[test]
fn bad_requests_are_errors() {
    let mut p = Pool::new(4 * PAGE, PAGE).unwrap();
    assert_eq!(p.alloc(0, PAGE), Err(PoolError::ZeroSize));
    assert_eq!(p.alloc(1, 3), Err(PoolError::BadAlign { align: 3 }));
    assert_eq!(p.alloc(1, 0), Err(PoolError::BadAlign { align: 0 }));
    assert_eq!(
        p.alloc(u64::MAX, PAGE),
        Err(PoolError::SizeOverflow {
            size: u64::MAX,
            granule: PAGE
        })
    );
    // An alignment larger than the pool only fits at offset 0.
    assert_eq!(p.alloc(PAGE, 1 << 63).unwrap(), r(0, PAGE));
    assert!(matches!(
        p.alloc(PAGE, 1 << 63),
        Err(PoolError::NoSpace { .. })
    ));
    assert!(matches!(
        p.alloc(5 * PAGE, PAGE),
        Err(PoolError::NoSpace { .. })
    ));
}

#[test]
fn fragmentation_fails_a_request_smaller_than_free_space() {
    let mut p = Pool::new(4 * PAGE, PAGE).unwrap();
    let a: Vec<Range> = (0..4).map(|_| p.alloc(PAGE, PAGE).unwrap()).collect();
    p.free(a[0].start).unwrap();
    p.free(a[2].start).unwrap();
    let s = p.stats();
    assert_eq!((s.free, s.largest_free, s.free_blocks), (2 * PAGE, PAGE, 2));
    let err = p.alloc(2 * PAGE, PAGE).unwrap_err();
    assert_eq!(
        err,
        PoolError::NoSpace {
            size: 2 * PAGE,
            align: PAGE,
            free: 2 * PAGE,
            largest_free: PAGE
        }
    );
    assert!(
        err.to_string().contains("8192 bytes free in total"),
        "{err}"
    );
    // Freeing the middle allocation merges all three into one block.
    p.free(a[1].start).unwrap();
    assert_eq!(p.free_blocks().collect::<Vec<_>>(), vec![r(0, 3 * PAGE)]);
    assert_eq!(p.alloc(2 * PAGE, PAGE).unwrap(), r(0, 2 * PAGE));
}

#[test]
fn free_merges_with_both_neighbours() {
    let mut p = Pool::new(3 * PAGE, PAGE).unwrap();
    let a = p.alloc(PAGE, 1).unwrap();
    let b = p.alloc(PAGE, 1).unwrap();
    let c = p.alloc(PAGE, 1).unwrap();
    p.free(c.start).unwrap();
    p.free(a.start).unwrap();
    assert_eq!(p.stats().free_blocks, 2);
    p.free(b.start).unwrap();
    assert_eq!(p.free_blocks().collect::<Vec<_>>(), vec![r(0, 3 * PAGE)]);
}

#[test]
fn bad_frees_are_errors_not_panics() {
    let mut p = Pool::new(4 * PAGE, PAGE).unwrap();
    let a = p.alloc(2 * PAGE, PAGE).unwrap();
    assert_eq!(
        p.free(a.start + 1),
        Err(PoolError::InsideAllocation {
            offset: 1,
            start: 0,
            len: 2 * PAGE
        })
    );
    assert_eq!(
        p.free(3 * PAGE),
        Err(PoolError::NotAllocated { offset: 3 * PAGE })
    );
    assert_eq!(
        p.free(4 * PAGE),
        Err(PoolError::OutOfPool {
            offset: 4 * PAGE,
            len: 4 * PAGE
        })
    );
    assert_eq!(
        p.free(u64::MAX),
        Err(PoolError::OutOfPool {
            offset: u64::MAX,
            len: 4 * PAGE
        })
    );
    p.free(a.start).unwrap();
    // A double free is refused and leaves the pool as it was.
    let before = p.clone();
    assert_eq!(p.free(a.start), Err(PoolError::NotAllocated { offset: 0 }));
    assert_eq!(p, before);
}

#[test]
fn stats_and_errors_serialize() {
    let p = Pool::new(2 * PAGE, PAGE).unwrap();
    let v = serde_json::to_value(p.stats()).unwrap();
    assert_eq!(v["total"], 2 * PAGE);
    assert_eq!(v["free_blocks"], 1);
    let e = serde_json::to_value(PoolError::NotAllocated { offset: 7 }).unwrap();
    assert_eq!(e["error"], "not_allocated");
    assert_eq!(e["offset"], 7);
}

#[derive(Debug, Clone)]
enum Op {
    Alloc { size: u64, align_shift: u32 },
    FreeLive(prop::sample::Index),
    FreeAny(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..=6 * 512, 0u32..=13).prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
        2 => any::<prop::sample::Index>().prop_map(Op::FreeLive),
        1 => any::<u64>().prop_map(Op::FreeAny),
    ]
}

/// Checks every invariant of `p` against `model`, the test's own list of live ranges.
fn check(p: &Pool, model: &[Range]) -> Result<(), TestCaseError> {
    let mut live: Vec<Range> = p.allocations().collect();
    let mut expected = model.to_vec();
    expected.sort();
    prop_assert_eq!(&live, &expected);
    for a in &live {
        prop_assert!(a.len > 0 && a.end() <= p.capacity());
        prop_assert_eq!(a.start % p.granule(), 0);
        prop_assert_eq!(a.len % p.granule(), 0);
    }
    // Free blocks and allocations tile [0, len) with no overlap and no gap, and no
    // two free blocks touch.
    let free: Vec<Range> = p.free_blocks().collect();
    for w in free.windows(2) {
        prop_assert!(
            w[0].end() < w[1].start,
            "unmerged or overlapping free blocks {:?}",
            w
        );
    }
    live.extend(free.iter().copied());
    live.sort();
    let mut at = 0;
    for b in &live {
        prop_assert_eq!(b.start, at, "gap or overlap at {}", at);
        at = b.end();
    }
    prop_assert_eq!(at, p.capacity());
    let s = p.stats();
    let used: u64 = model.iter().map(|a| a.len).sum();
    prop_assert_eq!(s.used, used);
    prop_assert_eq!(s.free + s.used, s.total);
    prop_assert_eq!(s.free, free.iter().map(|b| b.len).sum::<u64>());
    prop_assert_eq!(
        s.largest_free,
        free.iter().map(|b| b.len).max().unwrap_or(0)
    );
    prop_assert_eq!(s.free_blocks, free.len());
    prop_assert_eq!(s.allocations, model.len());
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        // Miri is ~1000x slower; a few cases still walk every code path.
        cases: if cfg!(miri) { 16 } else { 512 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_sequences_keep_every_invariant(
        granule_shift in 0u32..=12,
        granules in 1u64..=48,
        ops in prop::collection::vec(op(), 0..if cfg!(miri) { 64 } else { 200 }),
    ) {
        let granule = 1u64 << granule_shift;
        let mut p = Pool::new(granules * granule, granule).unwrap();
        let mut model: Vec<Range> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc { size, align_shift } => {
                    let size = (size * granule).div_ceil(512);
                    let align = 1u64 << align_shift;
                    match p.alloc(size, align) {
                        Ok(a) => {
                            prop_assert!(a.len >= size);
                            prop_assert_eq!(a.start % align.max(granule), 0);
                            model.push(a);
                        }
                        Err(PoolError::NoSpace { size: rounded, align: used_align, largest_free, .. }) => {
                            // First fit failing means no block could hold it at any
                            // aligned position.
                            prop_assert!(largest_free < rounded || used_align > granule);
                            for b in p.free_blocks() {
                                let at = align_up(b.start, used_align);
                                prop_assert!(at.is_none_or(|at| at + rounded > b.end()));
                            }
                        }
                        Err(e) => prop_assert!(false, "unexpected {}", e),
                    }
                }
                Op::FreeLive(i) => {
                    if !model.is_empty() {
                        let a = model.swap_remove(i.index(model.len()));
                        prop_assert_eq!(p.free(a.start), Ok(()));
                        // Second free of the same start is always refused.
                        prop_assert!(p.free(a.start).is_err());
                    }
                }
                Op::FreeAny(offset) => {
                    let before = p.clone();
                    let is_live = model.iter().any(|a| a.start == offset);
                    match p.free(offset) {
                        Ok(()) => {
                            prop_assert!(is_live);
                            model.retain(|a| a.start != offset);
                        }
                        Err(_) => {
                            prop_assert!(!is_live);
                            prop_assert_eq!(&p, &before);
                        }
                    }
                }
            }
            check(&p, &model)?;
        }
        for a in model.drain(..) {
            prop_assert_eq!(p.free(a.start), Ok(()));
        }
        check(&p, &model)?;
        prop_assert_eq!(p.free_blocks().collect::<Vec<_>>(), vec![Range { start: 0, len: p.capacity() }]);
    }
}
