//! The guest frame parser never panics, and decodes whatever the encoder produced, with
//! arbitrary console noise around the frames.

#![cfg(test)]

use p2pmem_wire::frame::{decode_console as parse_console, encode_frame};
use proptest::prelude::*;

proptest! {
    #[test]
    fn never_panics_on_arbitrary_text(text in ".{0,400}") {
        let _ = parse_console(&text);
    }

    #[test]
    fn never_panics_on_marker_soup(parts in proptest::collection::vec(
        prop_oneof![
            Just("@@P2PMEM:BEGIN a@@\n".to_string()),
            Just("@@P2PMEM:END a rc=0 bytes=3@@\n".to_string()),
            Just("@@P2PMEM:END a rc=x bytes=@@\n".to_string()),
            Just("@@P2PMEM:READY nvme=99999999999 want=-4@@\n".to_string()),
            Just("@@P2PMEM:DONE@@\n".to_string()),
            Just("@@P2PMEM:\n".to_string()),
            Just("YWJj\n".to_string()),
            Just("====\n".to_string()),
            "[a-zA-Z0-9+/=@: ]{0,30}\n",
        ], 0..30)) {
        let _ = parse_console(&parts.concat());
    }

    #[test]
    fn round_trips_between_noise(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..4),
        noise in proptest::collection::vec("[ -~]{0,60}", 4),
        rc in -1i32..256,
    ) {
        let clean = |s: &String| s.replace("@@P2PMEM:", "");
        let mut text = format!("{}\r\n@@P2PMEM:START@@\r\n", clean(&noise[0]));
        for (i, p) in payloads.iter().enumerate() {
            text.push_str(&encode_frame(&format!("dir{i}"), rc, p).replace('\n', "\r\n"));
            text.push_str(&clean(&noise[1 + i % 3]));
            text.push('\n');
        }
        text.push_str("@@P2PMEM:DONE@@\n");
        let r = parse_console(&text).unwrap();
        prop_assert!(r.started && r.done);
        prop_assert_eq!(r.frames.len(), payloads.len());
        for (f, p) in r.frames.iter().zip(&payloads) {
            prop_assert_eq!(&f.data, p);
            prop_assert_eq!(f.rc, rc);
        }
    }
}
