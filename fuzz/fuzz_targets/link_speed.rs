//! PCIe link attributes from sysfs (`current_link_speed` and `current_link_width`, or
//! the `max_` pair), as `p2pmem capture` copies them and `plan` reads them: the bytes up
//! to the first newline are the speed file, the rest the width file. Checks that a
//! parsed link has a generation of 1..=6, a width above 0 and a finite, positive
//! capacity, and that its text form parses back to the same link.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmem_model::plan::link::{LinkSpeed, DEFAULT_EFFICIENCY};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (speed, width) = text.split_once('\n').unwrap_or((&text, ""));
    if let Some(l) = LinkSpeed::from_sysfs(speed, width) {
        assert!((1..=6).contains(&l.gen.number()) && l.width > 0, "{l:?}");
        let c = l.capacity(DEFAULT_EFFICIENCY);
        assert!(c.is_finite() && c > 0.0, "{l:?}: capacity {c}");
        let again: LinkSpeed = l.to_string().parse().expect("a link's text parses");
        assert_eq!(again, l);
    }
    // A design's `link = "gen4x16"`.
    let _ = text.parse::<LinkSpeed>();
});
