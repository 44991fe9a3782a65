//! PCI addresses and host-bridge names (`0000:03:00.0`, `pci0000:00`), as found in sysfs
//! directory names, kernel logs, command lines and user arguments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmem_model::{Bdf, HostBridgeId};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(b) = text.parse::<Bdf>() {
        // What parses prints back to something that parses to the same address.
        assert_eq!(b.to_string().parse::<Bdf>().ok(), Some(b));
    }
    if let Ok(h) = text.parse::<HostBridgeId>() {
        assert_eq!(h.to_string().parse::<HostBridgeId>().ok(), Some(h));
    }
});
