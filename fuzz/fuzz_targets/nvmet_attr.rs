//! The nvmet namespace `p2pmem` attribute: what a write does (the kernel's store
//! replayed), what a read shows, and the setting a user types.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmem_model::nvmet_attr::{self, HasP2pmem};
use p2pmem_model::KernelVersion;

fuzz_target!(|data: &[u8]| {
    let _ = nvmet_attr::parse_p2pmem_show(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = nvmet_attr::parse_user_setting(text) {
        // What a user's setting prints as is again that setting.
        assert_eq!(nvmet_attr::parse_user_setting(&s.to_string()).ok(), Some(s));
    }
    let exists = |name: &str| match name {
        "0000:03:00.0" => Some(HasP2pmem::Yes),
        "0000:04:00.0" => Some(HasP2pmem::No),
        _ => None,
    };
    for v in [KernelVersion::new(6, 1, 0), KernelVersion::NEWEST_READ] {
        let _ = nvmet_attr::parse_p2pmem_attr(text, exists, v);
    }
});
