//! Config space (the sysfs `config` file, at most 4096 bytes) and every walk over it:
//! capabilities, extended capabilities, the PCIe port type, ACS.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmem_model::config_space::ConfigSpace;

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick the length the kernel "exposes" (the file size).
    let Some((head, bytes)) = data.split_first_chunk::<2>() else {
        return;
    };
    let exposed = usize::from(u16::from_le_bytes(*head)) % 4097;
    let Ok(cs) = ConfigSpace::new(bytes, exposed) else {
        return;
    };
    let caps = cs.capabilities();
    assert!(caps.caps.len() <= 48, "more standard capabilities than fit");
    let ext = cs.extended_capabilities();
    assert!(
        ext.caps.len() <= (4096 - 256) / 4,
        "more extended capabilities than fit"
    );
    let _ = cs.pcie_cap_offset();
    let _ = cs.port_type();
    let _ = cs.acs();
    let _ = (cs.vendor_id(), cs.device_id(), cs.class_code(), cs.status());
    let _ = (cs.header_type(), cs.is_multifunction(), cs.is_truncated());
});
