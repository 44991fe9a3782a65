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
fn sizes_round_to_the_granule() {
    let mut p = Pool::new(16 * PAGE, PAGE).unwrap();
    assert_eq!(p.alloc(1, 1).unwrap(), r(0, PAGE));
    assert_eq!(p.alloc(PAGE + 1, 0x10).unwrap(), r(PAGE, 2 * PAGE));
    assert_eq!(p.alloc(PAGE, PAGE).unwrap(), r(3 * PAGE, PAGE));
    // Freeing the first page leaves a one-page hole, the best fit for one page.
    p.free(0).unwrap();
    assert_eq!(p.alloc(10, 1).unwrap(), r(0, PAGE));
}

#[test]
fn the_smallest_block_that_fits_wins_not_the_lowest() {
    let mut p = Pool::new(16 * PAGE, PAGE).unwrap();
    let a: Vec<Range> = [3, 1, 2, 1]
        .iter()
        .map(|&n| p.alloc(n * PAGE, PAGE).unwrap())
        .collect();
    // Holes of 3 pages at 0 and 2 pages at 4, then the 9-page rest at 7.
    p.free(a[0].start).unwrap();
    p.free(a[2].start).unwrap();
    // First fit would take the 3-page hole; the 2-page one fits exactly.
    assert_eq!(p.alloc(2 * PAGE, PAGE).unwrap(), r(4 * PAGE, 2 * PAGE));
    assert_eq!(p.alloc(PAGE, PAGE).unwrap(), r(0, PAGE));
    assert_eq!(p.alloc(4 * PAGE, PAGE).unwrap(), r(7 * PAGE, 4 * PAGE));
    assert_eq!(
        p.free_blocks().collect::<Vec<_>>(),
        vec![r(PAGE, 2 * PAGE), r(11 * PAGE, 5 * PAGE)]
    );
}

#[test]
fn a_long_class_is_searched_in_part_then_in_full() {
    // Granule 1: sizes 200 and 201 share a class ([200, 202)), 202 starts the next.
    assert_eq!(class_of(200), class_of(201));
    assert_eq!(class_ceil(201), class_of(202));
    let mut p = Pool::new(100_000, 1).unwrap();
    let hole = p.alloc(201, 1).unwrap();
    p.alloc(1, 1).unwrap();
    let mut small = Vec::new();
    for _ in 0..40 {
        small.push(p.alloc(200, 1).unwrap());
        p.alloc(1, 1).unwrap();
    }
    let rest = p.stats().largest_free;
    let tail = p.free_blocks().last().unwrap();
    // The 201 hole is listed first, so a search from the end of the list meets forty
    // 200s before it: more than SCAN_BUDGET.
    p.free(hole.start).unwrap();
    for s in &small {
        p.free(s.start).unwrap();
    }
    assert!(small.len() > SCAN_BUDGET);
    // With the budget spent, a class where every block fits is taken.
    let a = p.alloc(201, 1).unwrap();
    assert_eq!(a.start, tail.start);
    p.free(a.start).unwrap();
    // With nothing in such a class, the whole list is searched before a refusal.
    let filler = p.alloc(rest, 1).unwrap();
    assert_eq!(p.alloc(201, 1).unwrap(), hole);
    assert!(matches!(p.alloc(201, 1), Err(PoolError::NoSpace { .. })));
    p.free(filler.start).unwrap();
    assert_eq!(structure(&p), Ok(()));
}

#[test]
fn equality_is_the_layout_not_the_history() {
    let mut a = Pool::new(8 * PAGE, PAGE).unwrap();
    let mut b = a.clone();
    let xs: Vec<Range> = (0..4).map(|_| a.alloc(PAGE, PAGE).unwrap()).collect();
    let ys: Vec<Range> = (0..4).map(|_| b.alloc(PAGE, PAGE).unwrap()).collect();
    assert_eq!(xs, ys);
    // The same two one-page holes, listed in the opposite order.
    a.free(xs[0].start).unwrap();
    a.free(xs[2].start).unwrap();
    b.free(ys[2].start).unwrap();
    b.free(ys[0].start).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        format!("{a:?}"),
        "Pool { len: 32768, granule: 4096, free: {0: 4096, 8192: 4096, 16384: 16384}, \
         live: {4096: 4096, 12288: 4096} }"
    );
    b.free(ys[1].start).unwrap();
    assert_ne!(a, b);
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

/// Every inconsistency between the pool's tables: the blocks tile the pool, `free_ends`
/// mirrors `free`, each free block sits in its slot of its class's list, the lists and
/// bitmaps agree, and the running free sum is right.
fn structure(p: &Pool) -> Result<(), String> {
    p.lists.check()?;
    let (mut at, mut below_free, mut blocks) = (0, false, 0);
    for (b, free) in p.walk() {
        if b.start != at {
            return Err(format!("walk reached {}, expected {at}", b.start));
        }
        if free && below_free {
            return Err(format!("free block {} touches the one below", b.start));
        }
        (at, below_free, blocks) = (b.end(), free, blocks + 1);
    }
    if at != p.len || blocks != p.live.len() + p.free.len() {
        return Err(format!(
            "walk ends at {at} after {blocks} blocks; {} live, {} free",
            p.live.len(),
            p.free.len()
        ));
    }
    if p.free_ends.len() != p.free.len() || p.lists.count() != p.free.len() {
        return Err(format!(
            "{} free blocks, {} ends, {} listed",
            p.free.len(),
            p.free_ends.len(),
            p.lists.count()
        ));
    }
    let mut sum = 0;
    for (&start, b) in &p.free {
        if p.free_ends.get(&(start + b.len)) != Some(&start) {
            return Err(format!("free block {start}+{}: end not recorded", b.len));
        }
        let class = class_of(b.len >> p.shift);
        if p.lists.list(class).get(b.slot) != Some(&start) {
            return Err(format!(
                "free block {start}: not in slot {} of class {class}",
                b.slot
            ));
        }
        sum += b.len;
    }
    if sum != p.free_bytes {
        return Err(format!(
            "free blocks sum to {sum}, running sum {}",
            p.free_bytes
        ));
    }
    Ok(())
}

/// The good-fit policy seen from outside: `a` starts at the lowest aligned offset of a
/// block that was free before, and that block is in the lowest size class holding any
/// block that fits, unless more than `SCAN_BUDGET` blocks sat in the classes where only
/// some blocks fit (then any fitting block will do).
fn good_fit(before: &[Range], a: Range, align: u64, granule: u64) -> Result<(), TestCaseError> {
    let shift = granule.trailing_zeros();
    let class = |b: &Range| class_of(b.len >> shift);
    let host = before
        .iter()
        .find(|b| b.start <= a.start && a.end() <= b.end());
    prop_assert!(host.is_some(), "{:?} was not carved from a free block", a);
    let host = host.copied().unwrap_or(a);
    prop_assert_eq!(Some(a.start), align_up(host.start, align));
    let best = before
        .iter()
        .filter(|b| fit(b.start, b.len, a.len, align).is_some())
        .map(class)
        .min();
    let g = a.len >> shift;
    let partial = class_of(g)..class_ceil(g + ((align - granule) >> shift));
    if before
        .iter()
        .filter(|b| partial.contains(&class(b)))
        .count()
        <= SCAN_BUDGET
    {
        prop_assert_eq!(Some(class(&host)), best, "{:?} from {:?}", a, host);
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Alloc { size: u64, align_shift: u32 },
    FreeLive(prop::sample::Index),
    FreeAny(u64),
}

/// Sizes in 512ths of a granule, up to 6 granules; pools of up to 48 granules.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..=6 * 512, 0u32..=13).prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
        2 => any::<prop::sample::Index>().prop_map(Op::FreeLive),
        1 => any::<u64>().prop_map(Op::FreeAny),
    ]
}

/// Sizes spread over 1 to 8191 granules (still in 512ths), so that blocks land in the
/// classes that span several sizes, not only the exact ones below 128 granules; offsets
/// to free mostly inside the pool.
fn large_op() -> impl Strategy<Value = Op> {
    let size = (0u32..13, any::<u64>())
        .prop_map(|(e, m)| ((1u64 << e) | (m & ((1 << e) - 1))) * 512 - m % 512);
    prop_oneof![
        3 => (size, 0u32..=20).prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
        2 => any::<prop::sample::Index>().prop_map(Op::FreeLive),
        1 => prop_oneof![any::<u64>(), 0u64..1 << 30].prop_map(Op::FreeAny),
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
    structure(p).map_err(TestCaseError::fail)?;
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

/// Runs `ops` on a pool of `granules` granules of `1 << granule_shift` bytes, checking
/// every invariant after each step against the test's own list of live ranges.
fn run(granule_shift: u32, granules: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let granule = 1u64 << granule_shift;
    let mut p = Pool::new(granules * granule, granule).unwrap();
    let mut model: Vec<Range> = Vec::new();
    for op in ops {
        match op {
            Op::Alloc { size, align_shift } => {
                let size = (size * granule).div_ceil(512);
                let align = 1u64 << align_shift;
                let before: Vec<Range> = p.free_blocks().collect();
                match p.alloc(size, align) {
                    Ok(a) => {
                        prop_assert!(a.len >= size);
                        prop_assert_eq!(a.start % align.max(granule), 0);
                        good_fit(&before, a, align.max(granule), granule)?;
                        model.push(a);
                    }
                    Err(PoolError::NoSpace {
                        size: rounded,
                        align: used_align,
                        largest_free,
                        ..
                    }) => {
                        // A refusal means no block could hold it at any aligned
                        // position (the policy changed from first fit to good fit; a
                        // refusal still searched every block that might fit).
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
    prop_assert_eq!(
        p.free_blocks().collect::<Vec<_>>(),
        vec![Range {
            start: 0,
            len: p.capacity()
        }]
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_sequences_keep_every_invariant(
        granule_shift in 0u32..=12,
        granules in 1u64..=48,
        ops in prop::collection::vec(op(), 0..if cfg!(miri) { 64 } else { 200 }),
    ) {
        run(granule_shift, granules, ops)?;
    }

    #[test]
    fn large_pools_keep_every_invariant(
        granule_shift in 0u32..=12,
        granules in 1u64..=1 << 16,
        ops in prop::collection::vec(large_op(), 0..if cfg!(miri) { 32 } else { 200 }),
    ) {
        run(granule_shift, granules, ops)?;
    }
}
