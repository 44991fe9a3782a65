//! The kernel's message rate limit (`printk_ratelimited`, lib/ratelimit.c `___ratelimit`),
//! as a capture has to respect it: each call site prints at most [`BURST`] messages in a
//! window that opens at its first message after the last window expired and lasts
//! [`INTERVAL`]; later messages in the window are dropped (a "callbacks suppressed" line
//! counts them when the next window opens). The block layer's I/O error line, which a
//! failed P2P transfer prints for its read and for its write, is one such call site.

use std::time::Duration;

/// `DEFAULT_RATELIMIT_INTERVAL` (`5 * HZ`, include/linux/ratelimit_types.h). Verified in
/// the pinned Debian sources of 6.1.192, 6.12.118, 7.2.13 and 7.3.4.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// `DEFAULT_RATELIMIT_BURST` (10, include/linux/ratelimit_types.h). Verified in the pinned
/// Debian sources of 6.1.192, 6.12.118, 7.2.13 and 7.3.4.
pub const BURST: u32 = 10;

/// Added to a window's end. The kernel resets only once jiffies are past `begin +
/// interval`, and a guest's jiffies lag its monotonic clock while the host does not run
/// it: with 50 ms, `lab_capture` lost lines when run beside other guests and a fuzzer on
/// two cores.
pub const MARGIN: Duration = Duration::from_secs(1);

/// Lines of [`BURST`] left unused: a line printed after the action read the log (a late
/// completion) is counted by the kernel but not by the model.
pub const SPARE: u32 = 2;

/// `blk_print_req_error()`'s line (block/blk-mq.c, `printk_ratelimited`: `"%s error, dev
/// %s, sector %llu op 0x%x:(%s) flags 0x%x phys_seg %u prio class %u"`), e.g. `critical
/// target error, dev nvme2n1, sector 0 op 0x0:(READ) ...`. Verified in the pinned Debian
/// sources of 6.1.192, 6.12.118, 7.2.13 and 7.3.4.
pub fn is_request_error(line: &str) -> bool {
    line.contains(" error, dev ") && line.contains(", sector ")
}

/// One call site's window, followed from outside the kernel: times are offsets from any
/// fixed instant, and a batch of messages is recorded at the end of the action that
/// printed it, which is never before the kernel opened its window. So the window this
/// model closes is never earlier than the kernel's, and waiting for it loses no message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// When the window opened, at the latest.
    opened: Option<Duration>,
    /// Messages printed in it.
    printed: u32,
}

impl Window {
    /// How long to wait at `now` before an action that may print `next` more messages,
    /// so that none of them is dropped; zero to go ahead. The caller waits that long, so
    /// the window is over when the action runs: a window that has closed, or will have
    /// after the wait, is forgotten and the action's messages open the next one.
    pub fn wait_before(&mut self, now: Duration, next: u32) -> Duration {
        let Some(opened) = self.opened else {
            return Duration::ZERO;
        };
        let closes = opened + INTERVAL + MARGIN;
        if now >= closes {
            *self = Window::default();
            return Duration::ZERO;
        }
        if self.printed.saturating_add(next) <= BURST - SPARE {
            Duration::ZERO
        } else {
            *self = Window::default();
            closes - now
        }
    }

    /// An action that ended at `end` printed `count` messages of the call site.
    pub fn printed(&mut self, end: Duration, count: u32) {
        if count == 0 {
            return;
        }
        self.opened.get_or_insert(end);
        self.printed = self.printed.saturating_add(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn four_failed_pairs_fit_in_a_window_and_the_fifth_waits_for_its_end() {
        // Two lines (read and write) a failed pair, 0.3 s a pair, as the agent runs them:
        // ask, wait what it says, run the pair, record its lines.
        let mut w = Window::default();
        let mut t = s(0.0);
        let mut waits = Vec::new();
        for _ in 0..16 {
            let wait = w.wait_before(t, 2);
            waits.push(wait);
            t += wait + s(0.3);
            w.printed(t, 2);
        }
        // Four pairs' lines fit (two of the ten kept spare). The first window opened at
        // 0.3 s (the first pair's end) and closes at 6.3 s: the fifth pair, at 1.2 s,
        // waits 5.1 s. The next window opened at 6.6 s (0.3 s after the wait), and the
        // ninth pair, at 7.5 s, waits until 12.6 s.
        let at: Vec<usize> = (0..16).filter(|&i| !waits[i].is_zero()).collect();
        assert_eq!(at, [4, 8, 12]);
        assert_eq!(waits[4], s(6.3) - s(1.2));
        assert_eq!(waits[8], s(12.6) - s(7.5));
    }

    #[test]
    fn pairs_that_print_nothing_never_wait_and_open_no_window() {
        let mut w = Window::default();
        for i in 0..100 {
            w.printed(s(f64::from(i)), 0);
            assert_eq!(w.wait_before(s(f64::from(i)), 2), Duration::ZERO);
        }
    }

    #[test]
    fn a_window_that_closed_on_its_own_is_forgotten() {
        let mut w = Window::default();
        w.printed(s(1.0), 8);
        assert!(w.wait_before(s(2.0), 1) > Duration::ZERO);
        w.printed(s(2.5), 8);
        assert_eq!(w.wait_before(s(8.5), 8), Duration::ZERO);
        assert_eq!(w, Window::default());
    }

    #[test]
    fn the_block_layers_error_line_is_recognised_and_the_p2p_refusal_is_not() {
        assert!(is_request_error(
            "critical target error, dev nvme2n1, sector 0 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2"
        ));
        assert!(is_request_error(
            "I/O error, dev loop0, sector 2048 op 0x1:(WRITE) flags 0x8800 phys_seg 1 prio class 0"
        ));
        assert!(!is_request_error(
            "nvme 0000:02:00.0: cannot be used for peer-to-peer DMA as the client and provider (0000:01:00.0) do not share an upstream bridge or whitelisted host bridge"
        ));
    }
}
