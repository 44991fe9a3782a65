//! `/proc/cmdline`: the word splitter, the whole parse (`pci=config_acs=`,
//! `pci=disable_acs_redir=`, `iommu=`...) on every kernel line, and device matching
//! against what was parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmem_model::boot_params::{self, DeviceIds};
use p2pmem_model::{Bdf, KernelVersion};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let kernel = [
        KernelVersion::new(5, 10, 0),
        KernelVersion::new(6, 1, 0),
        KernelVersion::new(6, 12, 0),
        KernelVersion::NEWEST_READ,
    ][usize::from(pick % 4)];
    let _ = boot_params::cmdline_words(&text);
    let _ = boot_params::parse_cmdline(&text, kernel);
    let _ = p2pmem_model::acs::parse_config_acs(&text);
    let (Some(bridge), Some(bdf)) = (Bdf::new(0, 0, 1, 0), Bdf::new(0, 3, 0, 0)) else {
        return;
    };
    let upstream = [bridge];
    let dev = DeviceIds {
        bdf,
        ids: (0x1b36, 0x0010),
        subsystem: Some((0x1af4, 0x1100)),
        upstream: &upstream,
    };
    for spec in text.split([';', ',', ' ']) {
        let _ = boot_params::dev_str_match(spec, &dev);
    }
});
