//! A latency histogram in the HdrHistogram layout: values below 2048 have a bucket each,
//! larger ones share a bucket with the values that agree in their 11 leading bits, so a
//! reported percentile is at most 1/1024 (0.1 %) above the exact one and never below
//! it. Pure arithmetic over `u64`; fixed memory (about 450 KiB) whatever is recorded.

/// Bits of a value kept exactly: 2^11 sub-buckets per power of two.
const SUB_BITS: u32 = 11;
/// Values below this have a bucket each.
const SUB: u64 = 1 << SUB_BITS;
/// Half of [`SUB`]: the sub-buckets of every power of two above [`SUB`].
const HALF: u64 = SUB / 2;
/// Buckets for the whole `u64` range.
const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * HALF) as usize;

/// Recorded values (nanoseconds, for the bench) and their distribution.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The bucket of `v`.
fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    // v >> shift lies in [HALF, SUB): the 11 leading bits of v.
    let shift = (63 - v.leading_zeros()) - (SUB_BITS - 1);
    (SUB + u64::from(shift - 1) * HALF + ((v >> shift) - HALF)) as usize
}

/// The largest value that falls into bucket `i`.
fn highest(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i - SUB) / HALF + 1;
    let lead = (i - SUB) % HALF + HALF;
    // For the top bucket this is exactly u64::MAX.
    (lead << shift) | ((1u64 << shift) - 1)
}

/// The 1-based rank of `percentile` among `total` sorted values. The small slack keeps
/// binary rounding (`0.999 * 1000 = 999.0000000000001`) from skipping a rank.
fn rank(percentile: f64, total: u64) -> u64 {
    let share = percentile.clamp(0.0, 100.0) / 100.0;
    ((share * total as f64 - 1e-9).ceil() as u64).clamp(1, total.max(1))
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Records one value.
    pub fn record(&mut self, v: u64) {
        if let Some(c) = self.counts.get_mut(index(v)) {
            *c += 1;
        }
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Adds every value recorded in `other`, as if each had been recorded here: the
    /// merged percentiles are those of all the values together (how the jobs of one
    /// bench are reported as one), never an average of percentiles.
    pub fn merge(&mut self, other: &Histogram) {
        for (c, o) in self.counts.iter_mut().zip(&other.counts) {
            *c += o;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The smallest value (0 when empty).
    pub fn min(&self) -> u64 {
        if self.is_empty() {
            0
        } else {
            self.min
        }
    }

    /// The largest value (exact; 0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The arithmetic mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at `percentile` (0..=100): the smallest value `v` such that at least
    /// that share of the recorded values are at most `v`, rounded up to its bucket's top
    /// (so at most 0.1 % high) and never above [`max`](Self::max). 0 when empty.
    pub fn percentile(&self, percentile: f64) -> u64 {
        if self.is_empty() {
            return 0;
        }
        let rank = rank(percentile, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return highest(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_exact_below_2048_and_contiguous_above() {
        for v in 0..SUB {
            assert_eq!(index(v), v as usize);
            assert_eq!(highest(index(v)), v);
        }
        // Every bucket's top is one below the next bucket's bottom.
        for i in 0..BUCKETS - 1 {
            assert_eq!(index(highest(i)), i, "bucket {i}");
            assert_eq!(index(highest(i) + 1), i + 1, "bucket {i}");
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        assert_eq!(highest(BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Histogram::new();
        assert_eq!((h.percentile(50.0), h.max(), h.min()), (0, 0, 0));
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.len(), 1000);
        assert_eq!(h.percentile(50.0), 500);
        assert_eq!(h.percentile(90.0), 900);
        assert_eq!(h.percentile(99.9), 999);
        assert_eq!(h.percentile(100.0), 1000);
        assert_eq!(h.percentile(0.0), 1);
        assert_eq!((h.min(), h.max()), (1, 1000));
        assert!((h.mean() - 500.5).abs() < 1e-9);
        // One outlier moves the maximum, not the median.
        h.record(10_000_000);
        assert_eq!(h.percentile(50.0), 501);
        assert_eq!(h.max(), 10_000_000);
        assert_eq!(h.percentile(100.0), 10_000_000);
    }

    #[test]
    fn merging_is_recording_everything_in_one() {
        // Two very different jobs: the merged median is neither job's median nor their
        // average.
        let (mut fast, mut slow) = (Histogram::new(), Histogram::new());
        for v in 1..=900 {
            fast.record(v);
        }
        for v in 0..100 {
            slow.record(100_000 + v);
        }
        let mut all = fast.clone();
        all.merge(&slow);
        assert_eq!(all.len(), 1000);
        assert_eq!(all.percentile(50.0), 500);
        assert_eq!(all.percentile(90.0), 900);
        assert!(all.percentile(99.0) >= 100_089);
        assert_eq!((all.min(), all.max()), (1, 100_099));
        // Merging an empty histogram changes nothing, and into an empty one copies.
        let before = (all.len(), all.min(), all.max(), all.percentile(99.9));
        all.merge(&Histogram::new());
        assert_eq!(
            before,
            (all.len(), all.min(), all.max(), all.percentile(99.9))
        );
        let mut empty = Histogram::new();
        empty.merge(&slow);
        assert_eq!(
            (empty.min(), empty.max(), empty.len()),
            (100_000, 100_099, 100)
        );
    }

    proptest! {
        #[test]
        fn a_merge_has_the_percentiles_of_all_values_recorded_in_one(
            parts in proptest::collection::vec(
                proptest::collection::vec(any::<u64>().prop_map(|v| v >> (v % 64)), 0..100), 1..6),
            p in 0.0f64..=100.0,
        ) {
            let mut merged = Histogram::new();
            let mut one = Histogram::new();
            for part in &parts {
                let mut h = Histogram::new();
                for &v in part {
                    h.record(v);
                    one.record(v);
                }
                merged.merge(&h);
            }
            prop_assert_eq!(merged.len(), one.len());
            prop_assert_eq!(merged.percentile(p), one.percentile(p));
            prop_assert_eq!((merged.min(), merged.max()), (one.min(), one.max()));
            prop_assert_eq!(merged.mean().to_bits(), one.mean().to_bits());
        }

        #[test]
        fn a_percentile_is_at_most_a_thousandth_above_the_exact_one(
            mut values in proptest::collection::vec(any::<u64>().prop_map(|v| v >> (v % 64)), 1..400),
            p in 0.0f64..=100.0,
        ) {
            let mut h = Histogram::new();
            for &v in &values {
                h.record(v);
            }
            values.sort_unstable();
            let exact = values[rank(p, values.len() as u64) as usize - 1];
            let got = h.percentile(p);
            prop_assert!(got >= exact, "p{p}: {got} < exact {exact}");
            prop_assert!(got - exact <= exact / 1024, "p{p}: {got} vs exact {exact}");
            prop_assert!(got <= h.max());
            prop_assert_eq!(h.max(), values[values.len() - 1]);
        }
    }
}
