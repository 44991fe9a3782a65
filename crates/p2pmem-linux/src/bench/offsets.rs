//! Where each request of a bench goes: sequential offsets that wrap around at the end of
//! the region, or uniformly random block-size-aligned offsets inside it (as fio's
//! `randread`/`randwrite` with `blockalign=bs`, repeats allowed). Pure arithmetic.
//!
//! With several jobs ([`shares`]), as fio's `numjobs`: a sequential job walks its own
//! slice of the region (fio's `offset_increment`), a random one draws over the whole
//! region with its own seed.

use serde::Serialize;

/// The bytes a bench may touch: `[start, end)`, both multiples of the block size, at
/// least one request long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Region {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// The most jobs of one bench (`--jobs`).
pub const MAX_JOBS: usize = 64;

/// One job's part of a bench: where its offsets go and the seed of its random ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct JobShare {
    /// Its region: a slice of the bench's for sequential patterns, all of it for random.
    pub region: Region,
    /// The seed of its random offsets (job 0's is the bench's `--seed`).
    pub seed: u64,
}

/// splitmix64's output function: a bijection of `u64` that scatters nearby inputs.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of job `job` of a bench seeded `seed`: `seed` itself for job 0 (so one job
/// draws what the bench drew before jobs existed), else `seed` with a scrambled job
/// number mixed in. Not `seed + job`: [`Offsets`] steps its state by a constant, so
/// nearby seeds would give one sequence shifted by a few draws.
pub fn job_seed(seed: u64, job: usize) -> u64 {
    if job == 0 {
        seed
    } else {
        seed ^ mix64(job as u64)
    }
}

/// How `jobs` jobs share `region` with `bs`-byte requests. Sequential: consecutive,
/// disjoint slices of whole requests that together cover every whole request of the
/// region, as equal as they can be (the first `requests % jobs` jobs get one request
/// more). Random: the whole region each, with [`job_seed`]. `None` when `bs` is 0, `jobs`
/// is 0, or a sequential job would get no request.
pub fn shares(
    region: Region,
    bs: u64,
    jobs: usize,
    random: bool,
    seed: u64,
) -> Option<Vec<JobShare>> {
    if bs == 0 || jobs == 0 || region.end < region.start {
        return None;
    }
    let slots = region.len() / bs;
    let n = jobs as u64;
    if slots == 0 || (!random && slots < n) {
        return None;
    }
    let (each, extra) = (slots / n, slots % n);
    let mut start = region.start;
    Some(
        (0..jobs)
            .map(|job| {
                let region = if random {
                    region
                } else {
                    let len = (each + u64::from((job as u64) < extra)) * bs;
                    let r = Region {
                        start,
                        end: start + len,
                    };
                    start = r.end;
                    r
                };
                JobShare {
                    region,
                    seed: job_seed(seed, job),
                }
            })
            .collect(),
    )
}

/// The offset generator.
#[derive(Debug, Clone)]
pub struct Offsets {
    region: Region,
    bs: u64,
    /// Requests that fit the region.
    slots: u64,
    random: bool,
    next: u64,
    state: u64,
}

impl Offsets {
    /// Offsets of `bs`-byte requests in `region`, sequential or random (seeded, so runs
    /// repeat). `None` when not one request fits.
    pub fn new(region: Region, bs: u64, random: bool, seed: u64) -> Option<Self> {
        if bs == 0 || region.end <= region.start {
            return None;
        }
        let slots = region.len() / bs;
        if slots == 0 {
            return None;
        }
        Some(Self {
            region,
            bs,
            slots,
            random,
            next: 0,
            // splitmix64 never gets stuck; any seed works.
            state: seed,
        })
    }

    /// How many distinct request offsets there are.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    fn splitmix(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// The next request's offset.
    pub fn next_offset(&mut self) -> u64 {
        let slot = if self.random {
            // Multiply-shift: uniform enough for offsets, and no modulo bias worth
            // measuring at these sizes.
            ((u128::from(self.splitmix()) * u128::from(self.slots)) >> 64) as u64
        } else {
            let s = self.next;
            self.next = (self.next + 1) % self.slots;
            s
        };
        self.region.start + slot * self.bs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sequential_offsets_wrap_at_the_last_whole_request() {
        let r = Region {
            start: 4096,
            end: 4096 + 3 * 8192 + 4096,
        };
        let mut o = Offsets::new(r, 8192, false, 0).unwrap();
        assert_eq!(o.slots(), 3);
        let got: Vec<u64> = (0..7).map(|_| o.next_offset()).collect();
        assert_eq!(got, [4096, 12288, 20480, 4096, 12288, 20480, 4096]);
    }

    #[test]
    fn nothing_fits_is_none() {
        let r = Region {
            start: 0,
            end: 4096,
        };
        assert!(Offsets::new(r, 8192, false, 0).is_none());
        assert!(Offsets::new(r, 0, false, 0).is_none());
        assert!(Offsets::new(Region { start: 8, end: 8 }, 1, true, 0).is_none());
    }

    #[test]
    fn random_offsets_repeat_with_the_seed_and_cover_the_region() {
        let r = Region {
            start: 1 << 20,
            end: 2 << 20,
        };
        let mut a = Offsets::new(r, 4096, true, 7).unwrap();
        let mut b = Offsets::new(r, 4096, true, 7).unwrap();
        let xs: Vec<u64> = (0..4000).map(|_| a.next_offset()).collect();
        let ys: Vec<u64> = (0..4000).map(|_| b.next_offset()).collect();
        assert_eq!(xs, ys);
        let distinct: std::collections::BTreeSet<u64> = xs.iter().copied().collect();
        // 4000 draws from 256 slots: every slot is hit.
        assert_eq!(distinct.len(), 256);
        assert!(xs.windows(2).any(|w| w[1] < w[0]), "not sequential");
    }

    #[test]
    fn sequential_jobs_get_disjoint_slices_that_cover_the_region() {
        // 10 requests of 8 KiB (and a 4 KiB tail no request fits) for 4 jobs: 3, 3, 2, 2.
        let r = Region {
            start: 1 << 20,
            end: (1 << 20) + 10 * 8192 + 4096,
        };
        let s = shares(r, 8192, 4, false, 9).unwrap();
        let got: Vec<(u64, u64)> = s
            .iter()
            .map(|j| (j.region.start - r.start, j.region.len()))
            .collect();
        assert_eq!(
            got,
            [
                (0, 3 * 8192),
                (3 * 8192, 3 * 8192),
                (6 * 8192, 16384),
                (8 * 8192, 16384)
            ]
        );
        // Each job's offsets stay in its slice and wrap around inside it.
        let mut o = Offsets::new(s[2].region, 8192, false, s[2].seed).unwrap();
        let walk: Vec<u64> = (0..3).map(|_| o.next_offset() - r.start).collect();
        assert_eq!(walk, [6 * 8192, 7 * 8192, 6 * 8192]);
        // One job: the whole region, the bench's own seed.
        let one = shares(r, 8192, 1, false, 9).unwrap();
        assert_eq!(
            one,
            [JobShare {
                region: Region {
                    start: r.start,
                    end: r.start + 10 * 8192
                },
                seed: 9
            }]
        );
        // More jobs than requests: refused, not an empty job.
        assert!(shares(r, 8192, 11, false, 9).is_none());
        assert!(shares(r, 8192, 10, false, 9).is_some());
        assert!(shares(r, 8192, 0, false, 9).is_none());
        assert!(shares(r, 0, 2, false, 9).is_none());
    }

    #[test]
    fn random_jobs_draw_over_the_whole_region_with_their_own_seeds() {
        let r = Region {
            start: 0,
            end: 1 << 20,
        };
        // Fewer requests than jobs is fine when each draws over all of them.
        let s = shares(
            Region {
                start: 0,
                end: 8192,
            },
            4096,
            4,
            true,
            7,
        )
        .unwrap();
        assert!(s.iter().all(|j| j.region
            == Region {
                start: 0,
                end: 8192
            }));
        let s = shares(r, 4096, 8, true, 7).unwrap();
        assert_eq!(s[0].seed, 7, "job 0 keeps the bench's seed");
        let seeds: std::collections::BTreeSet<u64> = s.iter().map(|j| j.seed).collect();
        assert_eq!(seeds.len(), 8, "{s:?}");
        let draws: Vec<Vec<u64>> = s
            .iter()
            .map(|j| {
                assert_eq!(j.region, r);
                let mut o = Offsets::new(j.region, 4096, true, j.seed).unwrap();
                (0..256).map(|_| o.next_offset()).collect()
            })
            .collect();
        // No job's sequence is another's, or another's shifted by a few draws.
        for (a, x) in draws.iter().enumerate() {
            for (b, y) in draws.iter().enumerate().filter(|(b, _)| *b != a) {
                for shift in 0..16 {
                    let same = x[shift..].iter().zip(y).filter(|(p, q)| p == q).count();
                    assert!(
                        same < 16,
                        "jobs {a} and {b} (shift {shift}): {same} equal draws"
                    );
                }
            }
        }
        // The same seed gives the same jobs.
        assert_eq!(shares(r, 4096, 8, true, 7).unwrap(), s);
    }

    proptest! {
        #[test]
        fn sequential_shares_are_aligned_disjoint_and_cover_every_request(
            start in 0u64..1 << 40, blocks in 1u64..100_000, extra in 0u64..4096,
            bs_shift in 9u32..21, jobs in 1usize..=MAX_JOBS, seed: u64,
        ) {
            let bs = 1u64 << bs_shift;
            let start = start / bs * bs;
            // A tail shorter than one request, which no job gets.
            let extra = extra % bs;
            let r = Region { start, end: start + blocks * bs + extra };
            let Some(s) = shares(r, bs, jobs, false, seed) else {
                prop_assert!(blocks < jobs as u64);
                return Ok(());
            };
            prop_assert_eq!(s.len(), jobs);
            prop_assert_eq!(s[0].region.start, r.start);
            prop_assert_eq!(s[jobs - 1].region.end, r.start + blocks * bs);
            let (min, max) = s.iter().fold((u64::MAX, 0), |(lo, hi), j| {
                (lo.min(j.region.len()), hi.max(j.region.len()))
            });
            prop_assert!(max - min <= bs, "as equal as can be: {min} {max}");
            for (i, j) in s.iter().enumerate() {
                prop_assert!(j.region.len() >= bs);
                prop_assert_eq!(j.region.start % bs, 0);
                prop_assert_eq!(j.region.len() % bs, 0);
                if i > 0 {
                    // Consecutive: disjoint, and no request between them is left out.
                    prop_assert_eq!(s[i - 1].region.end, j.region.start);
                }
            }
        }

        #[test]
        fn every_offset_is_aligned_and_inside(
            start in 0u64..1 << 40, blocks in 1u64..10_000, extra in 0u64..4096,
            bs_shift in 9u32..21, random: bool, seed: u64,
        ) {
            let bs = 1u64 << bs_shift;
            let start = start / bs * bs;
            let r = Region { start, end: start + blocks * bs + extra };
            let mut o = Offsets::new(r, bs, random, seed).unwrap();
            for _ in 0..200 {
                let off = o.next_offset();
                prop_assert!(off >= r.start && off + bs <= r.end);
                prop_assert_eq!((off - r.start) % bs, 0);
            }
        }
    }
}
