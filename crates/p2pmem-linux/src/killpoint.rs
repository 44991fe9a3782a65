//! Kill points: where a fault test may have the process killed, for real, at an exact
//! step of a configuration change. `P2PMEM_KILL_AT=NAME:N` in the environment makes the
//! process send itself `SIGKILL` the `N`th time it passes the point `NAME`, as `kill -9`
//! from outside would, with no chance to clean up; the lab then checks that running the
//! command again (or `provider unbind`) converges. Without the variable a point costs
//! one load of a cached `None`.
//!
//! The points, each passed right after a change the kernel has taken:
//! * `nvmet-step`: after each configfs step `nvmet restore` (or any `nvmet` command)
//!   applied;
//! * `provider-bind`: in `provider bind`, after writing the driver's `ranges` (1), the
//!   device's `driver_override` (2), and the driver's `bind` (3).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable: `NAME:N`.
pub const ENV: &str = "P2PMEM_KILL_AT";

/// Restore's configfs steps.
pub const NVMET_STEP: &str = "nvmet-step";

/// `provider bind`'s writes.
pub const PROVIDER_BIND: &str = "provider-bind";

static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static PASSED: AtomicU64 = AtomicU64::new(0);

/// `NAME:N` with `N` at least 1, else `None` (a malformed value arms nothing).
pub fn parse(value: &str) -> Option<(String, u64)> {
    let (name, n) = value.trim().rsplit_once(':')?;
    let n: u64 = n.parse().ok()?;
    (!name.is_empty() && n > 0).then(|| (name.to_string(), n))
}

/// Passes the point `name`: the `N`th pass of the armed point kills the process.
pub fn pass(name: &str) {
    let armed = ARMED.get_or_init(|| std::env::var(ENV).ok().as_deref().and_then(parse));
    let Some((point, n)) = armed else {
        return;
    };
    if point == name && PASSED.fetch_add(1, Ordering::SeqCst) + 1 == *n {
        use rustix::process::{getpid, kill_process, Signal};
        // Nothing can follow a delivered SIGKILL; if sending fails, abort is as abrupt.
        let _ = kill_process(getpid(), Signal::KILL);
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn values_name_a_point_and_a_count_from_one() {
        assert_eq!(parse("nvmet-step:3"), Some(("nvmet-step".into(), 3)));
        assert_eq!(
            parse(" provider-bind:1\n"),
            Some(("provider-bind".into(), 1))
        );
        assert_eq!(parse("nvmet-step:0"), None);
        assert_eq!(parse("nvmet-step"), None);
        assert_eq!(parse(":2"), None);
        assert_eq!(parse("nvmet-step:x"), None);
    }
}
