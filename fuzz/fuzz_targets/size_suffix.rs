//! Sizes with suffixes (`4K`, `64KiB`, `1M`, `2G`), as typed on the command line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = p2pmem_model::size::parse_size(text);
    }
});
