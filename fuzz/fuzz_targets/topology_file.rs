//! Lab topology files (TOML): parse and validate, then the QEMU arguments they make.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmem_lab::Topology;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Topology::parse(text, Path::new("fuzz.toml"), "fuzz");
});
