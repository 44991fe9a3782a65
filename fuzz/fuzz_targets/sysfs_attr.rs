//! sysfs attribute values: `vendor`/`device`/`class` (hex), p2pmem `size`, `available`,
//! `published` (decimal), `resource` (BAR table), the NVMe `cmb`/`cmbloc`/`cmbsz`
//! attributes, and the p2pmem driver's `providers` list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmem_linux::rootfs::{parse_hex_attr, parse_u64_attr};

fuzz_target!(|data: &[u8]| {
    let _ = parse_hex_attr(data);
    let _ = parse_u64_attr(data);
    let _ = p2pmem_linux::resource::parse_resource(data);
    let _ = p2pmem_model::cmb::parse_cmb_attr(data);
    if let Ok(v) = p2pmem_model::cmb::parse_decimal_attr(data) {
        let _ = p2pmem_model::cmb::CmbLoc::from(v);
        let _ = p2pmem_model::cmb::CmbSz::from(v);
    }
    if let Some((a, b)) = data.split_first_chunk::<8>() {
        let loc = u32::from_le_bytes([a[0], a[1], a[2], a[3]]);
        let sz = u32::from_le_bytes([a[4], a[5], a[6], a[7]]);
        let _ = p2pmem_model::cmb::decode(sz.into(), loc.into());
        let _ = b;
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = p2pmem_linux::provider::parse_providers(text);
    }
});
