//! A `pci.ids` file (the system's, or `--pci-ids FILE`): parsed whole, then looked up
//! with IDs taken from the input itself, so lookups hit what was parsed. Checks that a
//! vendor the file names is found again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmem_model::pci_ids::PciIdDb;

fuzz_target!(|data: &[u8]| {
    let db = PciIdDb::parse(data);
    let _ = (db.version(), db.vendor_count(), db.skipped());
    for w in data.windows(4).step_by(3).take(64) {
        let vendor = u16::from_be_bytes([w[0], w[1]]);
        let device = u16::from_be_bytes([w[2], w[3]]);
        let _ = db.vendor(vendor);
        let _ = db.device(vendor, device);
        let _ = db.class(u32::from_be_bytes([0, w[0], w[1], w[2]]));
    }
    // A file of exactly one vendor line names that vendor.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some((id, name)) = text.split_once("  ") {
            // Four hex digits (`from_str_radix` alone would also take a sign: `+333`,
            // which the first run of this target tripped over; pci.ids has none).
            let hex = id.len() == 4 && id.bytes().all(|b| b.is_ascii_hexdigit());
            if hex && !text.contains('\n') && !name.trim().is_empty() {
                if let Ok(v) = u16::from_str_radix(id, 16) {
                    assert!(db.vendor(v).is_some(), "{text:?}");
                }
            }
        }
    }
});
