//! Guest console frames: the decoder fed in arbitrary chunks, and the whole-text form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmem_wire::frame::{decode_console, Decoder};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut d = Decoder::new();
    let mut ok = true;
    for piece in rest.chunks(chunk) {
        if d.feed(piece).is_err() {
            ok = false;
            break;
        }
    }
    if ok {
        let _ = d.finish();
    }
    let _ = decode_console(&String::from_utf8_lossy(rest));
});
