//! `p2pmem import lspci`: lspci's text (`-vvv -xxxx`, `-xxx`, `-x`, `-tv`) from a bug
//! report. What parses is imported into a scratch directory and read back with
//! `read_system`, as `--root` would: neither may panic, and the import note reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmem_linux::import::{self, lspci_text, Facts};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(parsed) = lspci_text::parse(&text) else {
        return;
    };
    if parsed.functions.len() > 64 {
        return;
    }
    let Ok(d) = tempfile::tempdir() else { return };
    let dir = d.path().join("cap");
    let facts = Facts {
        kernel: Some("6.12.117".into()),
        cpu: Some(("AuthenticAMD".into(), 23)),
        providers: parsed
            .functions
            .first()
            .map(|(b, _)| (*b, None))
            .into_iter()
            .collect(),
        source: None,
    };
    if import::lspci(&text, &facts, &dir).is_ok() {
        if let Ok(sys) = p2pmem_linux::system::read_system(&dir) {
            assert!(sys.import.is_some(), "the import note did not read back");
        }
    }
});
