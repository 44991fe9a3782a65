//! What the harness-less benchmark targets share: under `cargo test` and `cargo nextest`
//! each is one test (its baselines' own checks); `cargo bench` passes `--bench` and times.

/// How the target was started.
pub enum Mode {
    /// `cargo bench`: time.
    Bench,
    /// `cargo nextest run` listing the target's tests (`--list --format terse`): print them
    /// and exit.
    List,
    /// `cargo test`, or `cargo nextest run` running the one test: check the baselines.
    Test,
}

/// The test's name in `cargo nextest`'s list.
pub const TEST_NAME: &str = "baselines";

/// The mode from the process's arguments; for [`Mode::List`] the list is printed already
/// (one test, not ignored, so nothing for `--ignored`).
pub fn mode() -> Mode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--bench") {
        Mode::Bench
    } else if has("--list") {
        if !has("--ignored") {
            println!("{TEST_NAME}: test");
        }
        Mode::List
    } else {
        Mode::Test
    }
}
