//! Test support shared by the workspace's tests: how a test that cannot run here says so.
//!
//! A test whose environment lacks something (root, losetup, a file system with O_DIRECT)
//! prints `SKIPPED: <why>` and returns. Under `scripts/test` (and so in CI), which sets
//! `P2PMEM_REQUIRE_ALL_TESTS=1` on a machine that has all of it, a skip is a failure
//! instead, so nothing passes there without having run.

/// The environment variable that turns skips into failures.
pub const REQUIRE_ALL: &str = "P2PMEM_REQUIRE_ALL_TESTS";

/// Report a test that cannot run here. Returns normally (the caller returns) unless
/// [`REQUIRE_ALL`] is set, in which case it panics with the reason.
#[doc(hidden)]
#[expect(
    clippy::panic,
    reason = "a required test that cannot run must fail the run"
)]
pub fn skipped(why: &str) {
    let why = why.strip_prefix("SKIPPED: ").unwrap_or(why);
    if std::env::var_os(REQUIRE_ALL).is_some_and(|v| v != "0") {
        panic!("{REQUIRE_ALL} is set, but this test cannot run here: {why}");
    }
    eprintln!("SKIPPED: {why}");
}
