//! Kernel `.config` text (`/proc/config.gz`, `/boot/config-*`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = p2pmem_linux::kconfig::KernelConfig::parse("fuzz", &text);
});
