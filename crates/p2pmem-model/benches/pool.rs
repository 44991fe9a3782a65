//! `cargo bench -p p2pmem-model --bench pool`: alloc+free pairs per second of
//! `p2pmem_model::pool::Pool` against two baselines measured in the same run, and the
//! fragmentation each leaves behind.
//!
//! The workload: a 16 GiB pool of 4 KiB granules is filled to 50 % with requests of 1-64
//! granules (uniform, from a seeded SplitMix64), then `PAIRS` times a random live
//! allocation is freed and a new random one is made (so the fill stays near 50 %). Only
//! the pairs are timed. Every allocator sees the same request sizes and frees the same
//! allocations (by their order in the live list), so "largest free block after the
//! workload" compares their placement policies on equal terms.
//!
//! The baselines, both written here:
//! * [`BTreeFirstFit`]: the pool's earlier algorithm, first fit over a `BTreeMap` of free
//!   blocks in address order (what `Pool` was until the size-class allocator).
//! * [`GenallocBitmap`]: the kernel's genalloc, first fit over a bitmap of granules,
//!   scanned one `u64` word at a time as `bitmap_find_next_zero_area` does.
//!
//! Without `--bench` (that is, under `cargo test`, as criterion does it) the binary runs
//! the baselines' own tests instead of timing: the bitmap against hand-worked cases and
//! against the B-tree first fit (two first fits must agree offset for offset), and all
//! three allocators on a small copy of the workload. Environment: `POOL_BENCH_PAIRS`
//! (default 200,000: at ~10-20k pairs/s the bitmap takes 10-20 s for them) and
//! `POOL_BENCH_SEED`. The pool runs the workload 5 times and its median run is reported;
//! each baseline runs it once.

#[path = "support/harness.rs"]
mod harness;

use p2pmem_model::pool::Pool;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const GRANULE: u64 = 4096;
const POOL_BYTES: u64 = 16 << 30;
const MAX_REQUEST: u64 = 64;
const DEFAULT_PAIRS: u64 = 200_000;
/// Runs of the (fast) pool per bench; the median is reported. Baselines run once.
const POOL_RUNS: usize = 5;
const DEFAULT_SEED: u64 = 0x70_32_70_6d_65_6d; // "p2pmem"

/// What the workload needs of an allocator, in granules.
trait Allocator {
    /// Allocates `granules` at the granule alignment; the first granule's index.
    fn alloc(&mut self, granules: u64) -> Option<u64>;
    /// Frees what `alloc` returned (genalloc needs the size back, as `gen_pool_free` does).
    fn free(&mut self, at: u64, granules: u64) -> Result<(), String>;
    /// Largest free block and number of free blocks, in granules.
    fn fragmentation(&self) -> (u64, u64);
}

impl Allocator for Pool {
    fn alloc(&mut self, granules: u64) -> Option<u64> {
        Pool::alloc(self, granules * GRANULE, GRANULE)
            .ok()
            .map(|r| r.start / GRANULE)
    }
    fn free(&mut self, at: u64, _granules: u64) -> Result<(), String> {
        Pool::free(self, at * GRANULE).map_err(|e| e.to_string())
    }
    fn fragmentation(&self) -> (u64, u64) {
        let s = self.stats();
        (s.largest_free / GRANULE, s.free_blocks as u64)
    }
}

/// Baseline: the pool's earlier algorithm, first fit in address order over a `BTreeMap`
/// of free blocks (start -> length, in granules), with live allocations in another.
struct BTreeFirstFit {
    free: BTreeMap<u64, u64>,
    live: BTreeMap<u64, u64>,
}

impl BTreeFirstFit {
    fn new(granules: u64) -> Self {
        Self {
            free: BTreeMap::from([(0, granules)]),
            live: BTreeMap::new(),
        }
    }
}

impl Allocator for BTreeFirstFit {
    fn alloc(&mut self, granules: u64) -> Option<u64> {
        let (&at, &len) = self.free.iter().find(|(_, &len)| len >= granules)?;
        self.free.remove(&at);
        if len > granules {
            self.free.insert(at + granules, len - granules);
        }
        self.live.insert(at, granules);
        Some(at)
    }
    fn free(&mut self, at: u64, _granules: u64) -> Result<(), String> {
        let len = self
            .live
            .remove(&at)
            .ok_or_else(|| format!("b-tree first fit: {at} is not live"))?;
        let mut start = at;
        let mut merged = len;
        if let Some((&prev, &prev_len)) = self.free.range(..at).next_back() {
            if prev + prev_len == at {
                self.free.remove(&prev);
                start = prev;
                merged += prev_len;
            }
        }
        if let Some(next_len) = self.free.remove(&(at + len)) {
            merged += next_len;
        }
        self.free.insert(start, merged);
        Ok(())
    }
    fn fragmentation(&self) -> (u64, u64) {
        let largest = self.free.values().copied().max().unwrap_or(0);
        (largest, self.free.len() as u64)
    }
}

/// Baseline: the kernel's genalloc (`lib/genalloc.c`) with `gen_pool_first_fit`, one bit
/// per granule, searched as `bitmap_find_next_zero_area` does: find the next zero bit, then
/// the next set bit inside the candidate range, restart past it, one `u64` word at a time.
struct GenallocBitmap {
    words: Vec<u64>,
    bits: u64,
}

impl GenallocBitmap {
    fn new(bits: u64) -> Self {
        Self {
            words: vec![0; bits.div_ceil(64) as usize],
            bits,
        }
    }

    fn word(&self, bit: u64) -> u64 {
        self.words.get((bit / 64) as usize).copied().unwrap_or(!0)
    }

    /// `find_next_zero_bit`: the first clear bit at or after `from`, or `bits`.
    fn next_zero(&self, from: u64) -> u64 {
        if from >= self.bits {
            return self.bits;
        }
        let mut w = from / 64;
        let mut inv = !self.word(from) & (!0u64 << (from % 64));
        while inv == 0 {
            w += 1;
            if w * 64 >= self.bits {
                return self.bits;
            }
            inv = !self.word(w * 64);
        }
        (w * 64 + u64::from(inv.trailing_zeros())).min(self.bits)
    }

    /// `find_next_bit`: the first set bit in `[from, limit)`, or `limit`.
    fn next_set(&self, from: u64, limit: u64) -> u64 {
        if from >= limit {
            return limit;
        }
        let mut w = from / 64;
        let mut set = self.word(from) & (!0u64 << (from % 64));
        while set == 0 {
            w += 1;
            if w * 64 >= limit {
                return limit;
            }
            set = self.word(w * 64);
        }
        (w * 64 + u64::from(set.trailing_zeros())).min(limit)
    }

    /// Sets (`on`) or clears `[at, at + n)`, a word at a time.
    fn fill(&mut self, at: u64, n: u64, on: bool) {
        let mut bit = at;
        let end = at + n;
        while bit < end {
            let lo = bit % 64;
            let take = (64 - lo).min(end - bit);
            let mask = if take == 64 {
                !0
            } else {
                ((1u64 << take) - 1) << lo
            };
            if let Some(w) = self.words.get_mut((bit / 64) as usize) {
                if on {
                    *w |= mask;
                } else {
                    *w &= !mask;
                }
            }
            bit += take;
        }
    }

    /// `bitmap_find_next_zero_area(map, size, 0, nr, align_mask)` then `bitmap_set`.
    fn alloc_aligned(&mut self, nr: u64, align_mask: u64) -> Option<u64> {
        let mut start = 0;
        loop {
            let index = (self.next_zero(start) + align_mask) & !align_mask;
            let end = index.checked_add(nr)?;
            if end > self.bits {
                return None;
            }
            let i = self.next_set(index, end);
            if i < end {
                start = i + 1;
                continue;
            }
            self.fill(index, nr, true);
            return Some(index);
        }
    }
}

impl Allocator for GenallocBitmap {
    fn alloc(&mut self, granules: u64) -> Option<u64> {
        self.alloc_aligned(granules, 0)
    }
    fn free(&mut self, at: u64, granules: u64) -> Result<(), String> {
        if self.next_zero(at) < at + granules {
            return Err(format!("bitmap: [{at}, +{granules}) is not all allocated"));
        }
        self.fill(at, granules, false);
        Ok(())
    }
    fn fragmentation(&self) -> (u64, u64) {
        let (mut largest, mut blocks, mut at) = (0, 0, 0);
        while at < self.bits {
            let zero = self.next_zero(at);
            if zero >= self.bits {
                break;
            }
            let set = self.next_set(zero, self.bits);
            largest = largest.max(set - zero);
            blocks += 1;
            at = set;
        }
        (largest, blocks)
    }
}

/// SplitMix64: small, seeded, and the same stream on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, n)` (Lemire's multiply-shift, bias below 2^-40 here).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// What one allocator did with the workload.
struct Outcome {
    elapsed: Duration,
    pairs: u64,
    refused: u64,
    used: u64,
    largest_free: u64,
    free_blocks: u64,
    /// Every allocation's first granule, in the order made (for the agreement test).
    offsets: Vec<u64>,
}

impl Outcome {
    fn pairs_per_sec(&self) -> f64 {
        self.pairs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Fills `a` (of `granules`) to half with seeded requests, then times `pairs` free+alloc
/// pairs. With `record`, keeps every offset handed out.
fn run<A: Allocator>(
    a: &mut A,
    granules: u64,
    seed: u64,
    pairs: u64,
    record: bool,
) -> Result<Outcome, String> {
    let mut rng = SplitMix64(seed);
    // Live allocations as `at << 8 | granules` (at most 64): half the cache footprint of
    // pairs, so that the harness's own bookkeeping weighs less in the pool's figure.
    let mut live: Vec<u64> = Vec::new();
    let mut offsets = Vec::new();
    let mut used = 0;
    while used < granules / 2 {
        let g = 1 + rng.below(MAX_REQUEST);
        let at = a
            .alloc(g)
            .ok_or_else(|| format!("refused {g} granules while filling at {used}"))?;
        live.push(at << 8 | g);
        used += g;
        if record {
            offsets.push(at);
        }
    }
    let mut refused = 0;
    let t = Instant::now();
    for _ in 0..pairs {
        let packed = live.swap_remove(rng.below(live.len() as u64) as usize);
        let (at, g) = (packed >> 8, packed & 0xff);
        a.free(at, g)?;
        used -= g;
        let g = 1 + rng.below(MAX_REQUEST);
        match a.alloc(g) {
            Some(at) => {
                live.push(at << 8 | g);
                used += g;
                if record {
                    offsets.push(at);
                }
            }
            None => refused += 1,
        }
    }
    let elapsed = t.elapsed();
    let (largest_free, free_blocks) = a.fragmentation();
    Ok(Outcome {
        elapsed,
        pairs,
        refused,
        used,
        largest_free,
        free_blocks,
        offsets,
    })
}

fn env_u64(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .map_err(|e| format!("{name}={v}: {e}")),
        Err(_) => Ok(default),
    }
}

fn bench() -> Result<(), String> {
    let pairs = env_u64("POOL_BENCH_PAIRS", DEFAULT_PAIRS)?;
    let seed = env_u64("POOL_BENCH_SEED", DEFAULT_SEED)?;
    let granules = POOL_BYTES / GRANULE;
    println!(
        "pool bench: {} GiB of {} KiB granules ({granules}), filled to 50 % with 1-{MAX_REQUEST} \
         granule requests, then {pairs} free+alloc pairs (seed {seed:#x})",
        POOL_BYTES >> 30,
        GRANULE >> 10
    );
    // The pool is fast enough to run the same workload several times: the median run counts.
    let mut runs = Vec::new();
    for _ in 0..POOL_RUNS {
        let mut pool = Pool::new(POOL_BYTES, GRANULE).map_err(|e| e.to_string())?;
        runs.push(run(&mut pool, granules, seed, pairs, false)?);
    }
    runs.sort_by_key(|o| o.elapsed);
    let new = runs.swap_remove(POOL_RUNS / 2);
    let old = run(
        &mut BTreeFirstFit::new(granules),
        granules,
        seed,
        pairs,
        false,
    )?;
    let bitmap = run(
        &mut GenallocBitmap::new(granules),
        granules,
        seed,
        pairs,
        false,
    )?;
    println!(
        "{:<30} {:>14} {:>10} {:>8} {:>22} {:>12}",
        "allocator", "pairs/s", "time", "refused", "largest free (gran.)", "free blocks"
    );
    for (name, o) in [
        ("pool::Pool (median of 5)", &new),
        ("baseline: b-tree first fit", &old),
        ("baseline: genalloc bitmap", &bitmap),
    ] {
        println!(
            "{:<30} {:>14.0} {:>9.2}s {:>8} {:>22} {:>12}",
            name,
            o.pairs_per_sec(),
            o.elapsed.as_secs_f64(),
            o.refused,
            format!(
                "{} ({:.2} GiB)",
                o.largest_free,
                (o.largest_free * GRANULE) as f64 / (1u64 << 30) as f64
            ),
            o.free_blocks
        );
    }
    println!(
        "fill at the end: pool {:.2} %, b-tree {:.2} %, bitmap {:.2} %",
        100.0 * new.used as f64 / granules as f64,
        100.0 * old.used as f64 / granules as f64,
        100.0 * bitmap.used as f64 / granules as f64
    );
    println!(
        "ratio pool / b-tree first fit: {:.1}x",
        new.pairs_per_sec() / old.pairs_per_sec()
    );
    println!(
        "ratio pool / genalloc bitmap:  {:.1}x",
        new.pairs_per_sec() / bitmap.pairs_per_sec()
    );
    println!(
        "largest free block, pool / first fit: {:.3} (>= 1 means no worse)",
        new.largest_free as f64 / old.largest_free.max(1) as f64
    );
    Ok(())
}

/// Fails with `what` unless `cond`.
fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// The bitmap baseline on hand-worked cases: word boundaries, first fit, alignment, free.
fn test_genalloc_bitmap_hand_cases() -> Result<(), String> {
    let mut b = GenallocBitmap::new(200);
    ensure(b.alloc(60) == Some(0), || "first 60".into())?;
    // Straddles the first word boundary.
    ensure(b.alloc(10) == Some(60), || "straddling 10".into())?;
    ensure(b.alloc(64) == Some(70), || "a whole word's worth".into())?;
    ensure(b.fragmentation() == (66, 1), || {
        format!("fragmentation {:?}", b.fragmentation())
    })?;
    b.free(60, 10)?;
    // First fit: the hole at 60 takes what fits, a larger request goes past it.
    ensure(b.alloc(11) == Some(134), || "11 past the hole".into())?;
    ensure(b.alloc(4) == Some(60), || "4 into the hole".into())?;
    ensure(b.fragmentation() == (55, 2), || {
        format!("fragmentation {:?}", b.fragmentation())
    })?;
    ensure(b.alloc(6) == Some(64), || "6 fills the hole".into())?;
    // Aligned: the next multiple of 16 whose range is clear.
    ensure(b.alloc_aligned(3, 15) == Some(160), || "aligned 3".into())?;
    ensure(b.alloc(38).is_none(), || "38 cannot fit".into())?;
    // First fit skips [145, 160), too small, after finding the set bit at 160.
    ensure(b.alloc(37) == Some(163), || "37 fits at the end".into())?;
    ensure(b.fragmentation() == (15, 1), || {
        format!("fragmentation {:?}", b.fragmentation())
    })?;
    ensure(b.free(150, 2).is_err(), || "free of free bits".into())?;
    for (at, n) in [
        (0, 60),
        (60, 4),
        (64, 6),
        (70, 64),
        (134, 11),
        (160, 3),
        (163, 37),
    ] {
        b.free(at, n)?;
    }
    ensure(b.fragmentation() == (200, 1), || "all freed".into())?;
    ensure(b.words.iter().all(|&w| w == 0), || "bits left set".into())
}

/// Two first fits must agree offset for offset: the bitmap against the B-tree, and each
/// against `Pool`'s invariants (no overlap, in bounds) through `run`'s frees.
fn test_first_fits_agree() -> Result<(), String> {
    for (granules, seed) in [(1 << 12, 1), (1 << 14, 2), (1000, 3), (3001, 4)] {
        let tree = run(
            &mut BTreeFirstFit::new(granules),
            granules,
            seed,
            5000,
            true,
        )?;
        let bits = run(
            &mut GenallocBitmap::new(granules),
            granules,
            seed,
            5000,
            true,
        )?;
        ensure(tree.offsets == bits.offsets, || {
            format!("first fits disagree on {granules} granules, seed {seed}")
        })?;
        ensure(
            (tree.largest_free, tree.free_blocks) == (bits.largest_free, bits.free_blocks),
            || format!("fragmentation differs on {granules} granules"),
        )?;
        let mut pool = Pool::new(granules * GRANULE, GRANULE).map_err(|e| e.to_string())?;
        let p = run(&mut pool, granules, seed, 5000, false)?;
        ensure(p.refused == 0 && tree.refused == 0, || {
            format!("a refusal at half fill of {granules} granules")
        })?;
        ensure(pool.stats().used == p.used * GRANULE, || {
            format!("pool and workload disagree on the bytes in use ({granules} granules)")
        })?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = match harness::mode() {
        harness::Mode::Bench => bench(),
        harness::Mode::List => return ExitCode::SUCCESS,
        harness::Mode::Test => test_genalloc_bitmap_hand_cases()
            .and_then(|()| test_first_fits_agree())
            .map(|()| println!("pool bench baselines: 2 tests ok (run with --bench to time)")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pool bench: {e}");
            ExitCode::FAILURE
        }
    }
}
