//! `/proc/cpuinfo`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = p2pmem_model::cpu::CpuInfo::parse(data);
});
