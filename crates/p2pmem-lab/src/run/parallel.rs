//! Booting several guests side by side: each QEMU/TCG guest has one vCPU and keeps about
//! one core busy, so the lab runs one per core.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Guests to boot at once: one per core, at most 4 (each takes its topology's memory).
pub fn guests_at_once() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// `f` over `items` in up to `workers` threads (each takes the next item when it is
/// free), the answers in the items' order.
pub fn map_ordered<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    let mut all: Vec<(usize, R)> = std::thread::scope(|s| {
        let others: Vec<_> = (1..workers.clamp(1, items.len().max(1)))
            .map(|_| s.spawn(work))
            .collect();
        let mut all = work();
        for t in others {
            all.extend(t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        all
    });
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Answers come in the items' order whatever the workers' speeds, each item once.
    #[test]
    fn map_ordered_keeps_the_order() {
        let items: Vec<u64> = (0..50).collect();
        let calls = AtomicUsize::new(0);
        for workers in [0, 1, 3, 8, 100] {
            let got = map_ordered(&items, workers, |i| {
                calls.fetch_add(1, Ordering::Relaxed);
                // Early items are the slow ones.
                std::thread::sleep(Duration::from_micros(200 * (50 - i)));
                i * 2
            });
            assert_eq!(
                got,
                items.iter().map(|i| i * 2).collect::<Vec<_>>(),
                "{workers}"
            );
        }
        assert_eq!(calls.into_inner(), 5 * items.len());
        assert!(map_ordered(&[] as &[u8], 4, |_| 0).is_empty());
    }
}
