use super::*;
use proptest::prelude::*;

const CANNOT: &str = "nvme 0000:04:00.0: cannot be used for peer-to-peer DMA as the client and provider (0000:06:00.0) do not share an upstream bridge or whitelisted host bridge";
const CRITICAL: &str =
    "critical target error, dev nvme1n1, sector 0 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2";

#[test]
fn strips_level_and_timestamp_from_klogctl_records() {
    let raw = format!("<4>[    3.123456] {CANNOT}\n<3>[    3.130001] {CRITICAL}\n");
    let lines = parse_klog(raw.as_bytes());
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].text, CANNOT);
    assert_eq!(lines[0].level, Some(4));
    assert_eq!(lines[0].facility, Some(0));
    assert_eq!(lines[0].timestamp_us, Some(3_123_456));
    assert_eq!(lines[1].text, CRITICAL);
    assert_eq!(lines[1].level, Some(3));
    assert_eq!(klog_texts(raw.as_bytes()), vec![CANNOT, CRITICAL]);
}

#[test]
fn dmesg_lines_without_priority() {
    let raw = b"[    0.000000] Command line: console=ttyS0 panic=-1\n\
[    0.002756] x86/PAT: Configuration [0-7]: WB  WT  UC- UC  WB  WT  UC- UC  \n\
[    0.386000] pci 0000:00:00.0: [8086:29c0] type 00 class 0x060000 conventional PCI endpoint\n";
    let lines = parse_klog(raw);
    assert_eq!(lines[0].text, "Command line: console=ttyS0 panic=-1");
    assert_eq!(lines[0].level, None);
    assert_eq!(lines[0].timestamp_us, Some(0));
    // Trailing spaces belong to the message.
    assert_eq!(
        lines[1].text,
        "x86/PAT: Configuration [0-7]: WB  WT  UC- UC  WB  WT  UC- UC  "
    );
    assert_eq!(
        lines[2].text,
        "pci 0000:00:00.0: [8086:29c0] type 00 class 0x060000 conventional PCI endpoint"
    );
}

#[test]
fn caller_id_user_facility_crlf_and_no_timestamp() {
    let raw = b"<6>[  12.000001][  T123] [drm] hello\r\n<12>[1.5] from userspace\n<5>no time\n\n";
    let lines = parse_klog(raw);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].text, "[drm] hello");
    assert_eq!(lines[0].timestamp_us, Some(12_000_001));
    assert_eq!(lines[1].level, Some(4));
    assert_eq!(lines[1].facility, Some(1));
    assert_eq!(lines[1].timestamp_us, Some(1_500_000));
    assert_eq!(lines[1].text, "from userspace");
    assert_eq!(lines[2].text, "no time");
    assert_eq!(lines[2].timestamp_us, None);
}

#[test]
fn message_text_in_brackets_is_not_a_timestamp() {
    let lines = parse_klog(b"<4>[    1.000000] [    2.000000] nested\n<4>[abc] text\n<x>[1.0] y\n");
    assert_eq!(lines[0].text, "[    2.000000] nested");
    assert_eq!(lines[1].text, "[abc] text");
    assert_eq!(lines[1].level, Some(4));
    assert_eq!(lines[2].text, "<x>[1.0] y");
    assert_eq!(lines[2].level, None);
}

#[test]
fn garbage_does_not_panic() {
    for raw in [
        &b"<"[..],
        b"<>",
        b"<99999999999999999999>x",
        b"[",
        b"[.]",
        b"[ 99999999999999999999999.1] x",
        b"<4>[   1.1234567] seven digits",
        b"\xff\xfe<3>[\xc3",
        b"\n\n\r\n",
    ] {
        let _ = parse_klog(raw);
    }
    let l = parse_klog(b"[ 99999999999999999999999.1] x");
    assert_eq!(l[0].timestamp_us, None);
    assert_eq!(l[0].text, "x");
    assert_eq!(
        parse_klog(b"<4>[   1.1234567] s")[0].timestamp_us,
        Some(1_123_456)
    );
}

/// Every `kernel_log` string in the shared ground truth, wrapped in the record
/// prefix klogctl adds, must come back exactly; every filtered boot-log line must be
/// among the parsed lines of the scenario's raw `boot_dmesg.txt`.
#[test]
fn reproduces_the_shared_ground_truth() {
    let truth_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/truth");
    let Ok(entries) = std::fs::read_dir(&truth_dir) else {
        crate::testing::skipped(&format!(
            "SKIPPED: no ground truth at {}",
            truth_dir.display()
        ));
        return;
    };
    let mut scenarios = 0;
    let mut pair_lines = 0;
    for entry in entries {
        let dir = entry.unwrap().path();
        let Ok(json) = std::fs::read_to_string(dir.join("truth.json")) else {
            continue;
        };
        scenarios += 1;
        let truth: serde_json::Value = serde_json::from_str(&json).unwrap();
        for pair in truth["pairs"].as_array().unwrap() {
            let expected: Vec<String> = pair["kernel_log"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            let mut raw = String::new();
            for (i, line) in expected.iter().enumerate() {
                let level = if line.starts_with("critical") { 3 } else { 4 };
                raw.push_str(&format!("<{level}>[{:5}.{:06}] {line}\n", 40 + i, 1000 * i));
            }
            assert_eq!(klog_texts(raw.as_bytes()), expected);
            pair_lines += expected.len();
        }
        let dmesg = std::fs::read(dir.join("boot_dmesg.txt")).unwrap();
        let texts = klog_texts(&dmesg);
        for line in truth["boot_log"].as_array().unwrap() {
            let line = line.as_str().unwrap();
            assert!(
                texts.iter().any(|t| t == line),
                "{}: {line:?} not parsed",
                dir.display()
            );
        }
    }
    assert!(scenarios > 0, "no truth.json under {}", truth_dir.display());
    assert!(pair_lines > 0);
}

/// READ_ALL on this machine (never CLEAR: that would destroy the host's log).
#[test]
fn read_all_on_this_machine_is_parseable_or_a_clear_permission_error() {
    match Syslog.read_all() {
        Ok(bytes) => {
            let lines = parse_klog(&bytes);
            assert!(lines.iter().all(|l| !l.text.contains('\n')));
            eprintln!(
                "read {} bytes, {} kernel log lines",
                bytes.len(),
                lines.len()
            );
        }
        Err(e) => {
            assert_eq!(e.action, "READ_ALL");
            assert!(e.errno == "EPERM" || e.errno == "EACCES", "{e}");
            assert!(e.to_string().contains("needs root"), "{e}");
            crate::testing::skipped(&format!("SKIPPED (read part): {e}"));
        }
    }
}

proptest! {
    #[test]
    fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let lines = parse_klog(&bytes);
        prop_assert!(lines.iter().all(|l| !l.text.contains('\n')));
    }

    #[test]
    fn round_trips_a_record(level in 0u32..192, secs in 0u64..100_000, micros in 0u64..1_000_000,
                            text in "[ -~]{0,80}") {
        let raw = format!("<{level}>[{secs:5}.{micros:06}] {text}\n");
        let lines = parse_klog(raw.as_bytes());
        prop_assert_eq!(lines.len(), 1);
        prop_assert_eq!(&lines[0].text, &text);
        prop_assert_eq!(lines[0].level, Some((level & 7) as u8));
        prop_assert_eq!(lines[0].timestamp_us, Some(secs * 1_000_000 + micros));
    }
}

/// `dmesg_lines` gives back what busybox `dmesg` printed for the recorded boot logs:
/// the same lines, once the klogctl priority prefix is added to them.
#[test]
fn dmesg_lines_reproduce_dmesg_output() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/truth/s01_switch_cmbmix_fam15/boot_dmesg.txt");
    let dmesg = std::fs::read_to_string(&path).unwrap();
    let raw: String = dmesg.lines().map(|l| format!("<6>{l}\n")).collect();
    let lines = dmesg_lines(raw.as_bytes());
    let want: Vec<&str> = dmesg.lines().filter(|l| !l.is_empty()).collect();
    assert!(want.len() > 100, "{}", path.display());
    assert_eq!(lines, want);
    assert_eq!(dmesg_lines(b"<4>no time\n"), ["no time"]);
}
