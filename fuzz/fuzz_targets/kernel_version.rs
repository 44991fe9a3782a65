//! Kernel version strings (`/proc/sys/kernel/osrelease`, `uname -r`, `--kernel`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmem_model::KernelVersion;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = text.parse::<KernelVersion>() {
        assert_eq!(v.to_string().parse::<KernelVersion>().ok(), Some(v));
    }
});
