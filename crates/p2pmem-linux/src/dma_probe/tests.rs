use super::*;
use std::collections::VecDeque;
use std::fs;

/// A scripted kernel log: each READ_ALL returns the next canned buffer.
struct Scripted {
    cleared: bool,
    reads: VecDeque<Vec<u8>>,
}

impl KernelLog for Scripted {
    fn clear(&mut self) -> Result<(), KlogError> {
        self.cleared = true;
        Ok(())
    }
    fn read_all(&mut self) -> Result<Vec<u8>, KlogError> {
        Ok(self.reads.pop_front().unwrap_or_default())
    }
}

const CANNOT: &str = "nvme 0000:04:00.0: cannot be used for peer-to-peer DMA as the client and provider (0000:06:00.0) do not share an upstream bridge or whitelisted host bridge";
const CRIT_R: &str =
    "critical target error, dev nvme1n1, sector 0 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2";
const CRIT_W: &str =
    "critical target error, dev nvme1n1, sector 2048 op 0x1:(WRITE) flags 0x8800 phys_seg 1 prio class 2";

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

/// A disk image on a file system with O_DIRECT, pre-filled with a pattern.
fn disk() -> Option<(tempfile::TempDir, PathBuf)> {
    for dir in crate::testing::scratch_bases() {
        let Ok(tmp) = tempfile::tempdir_in(&dir) else {
            continue;
        };
        let path = tmp.path().join("disk.img");
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 253) as u8).collect();
        fs::write(&path, data).unwrap();
        if DirectFile::open(&path, Access::ReadWrite).is_ok() {
            return Some((tmp, path));
        }
    }
    None
}

/// A fake sysfs root whose provider `allocate` is a sized regular file (mappable and
/// touchable), standing in for the kernel attribute.
fn stand_in_root(provider: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root
        .path()
        .join("sys/bus/pci/devices")
        .join(provider)
        .join("p2pmem");
    fs::create_dir_all(&dir).unwrap();
    fs::File::create(dir.join("allocate"))
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    fs::write(dir.join("available"), "16711680\n").unwrap();
    root
}

#[test]
fn full_probe_against_stand_ins_records_truth_shape() {
    let Some((_tmp, img)) = disk() else {
        crate::testing::skipped("SKIPPED: no file system here supports O_DIRECT");
        return;
    };
    let root = stand_in_root("0000:03:00.0");
    let mut log = Scripted {
        cleared: false,
        reads: VecDeque::from(vec![
            b"".to_vec(),
            format!("<4>[   10.000001] {CANNOT}\n<3>[   10.000002] {CRIT_R}\n").into_bytes(),
            format!(
                "<4>[   10.000001] {CANNOT}\n<3>[   10.000002] {CRIT_R}\n<3>[   12.5] {CRIT_W}\n"
            )
            .into_bytes(),
            format!(
                "<4>[   10.000001] {CANNOT}\n<3>[   10.000002] {CRIT_R}\n<3>[   12.5] {CRIT_W}\n"
            )
            .into_bytes(),
        ]),
    };
    let rec = dma_probe_with(
        &mut log,
        root.path(),
        bdf("0000:03:00.0"),
        Some(bdf("0000:04:00.0")),
        &img,
    )
    .unwrap();
    assert!(log.cleared);
    assert_eq!(rec.mmap, "ok");
    assert_eq!(rec.read.as_deref(), Some("ok"));
    assert_eq!(rec.write.as_deref(), Some("ok"));
    assert_eq!(rec.read_data, Some(DataCheck::Match));
    assert_eq!(rec.write_data, Some(DataCheck::Match));
    assert_eq!(rec.kernel_log_phase.mmap, Vec::<String>::new());
    assert_eq!(rec.kernel_log_phase.read, vec![CANNOT, CRIT_R]);
    assert_eq!(rec.kernel_log_phase.write, vec![CRIT_W]);
    assert_eq!(rec.kernel_log_phase.after, Vec::<String>::new());
    assert_eq!(rec.kernel_log, vec![CANNOT, CRIT_R, CRIT_W]);
    assert!(rec.notes.is_empty(), "{:?}", rec.notes);

    // The written pattern landed at 1 MiB on the "disk".
    let on_disk = fs::read(&img).unwrap();
    assert_ne!(&on_disk[1 << 20..(1 << 20) + 16], &[0u8; 16]);

    // Serialised with the truth.json pair field names, in order.
    let json = serde_json::to_string(&rec).unwrap();
    let keys: Vec<String> =
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&json)
            .unwrap()
            .keys()
            .cloned()
            .collect();
    let mut expected = vec![
        "provider",
        "client",
        "read",
        "write",
        "kernel_log",
        "client_blkdev",
        "mmap",
        "read_data",
        "write_data",
        "kernel_log_phase",
    ];
    let mut got: Vec<&str> = keys.iter().map(String::as_str).collect();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected);
    assert!(
        json.starts_with(
            "{\"provider\":\"0000:03:00.0\",\"client\":\"0000:04:00.0\",\"read\":\"ok\""
        ),
        "{json}"
    );
    assert!(json.contains("\"read_data\":\"match\""), "{json}");
}

#[test]
fn truth_pairs_deserialize_into_the_result() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/truth/s05_multifunction_fam15/truth.json");
    let Ok(text) = fs::read_to_string(&path) else {
        crate::testing::skipped(&format!("SKIPPED: no ground truth at {}", path.display()));
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let pairs = v["pairs"].as_array().unwrap();
    assert!(!pairs.is_empty());
    for pair in pairs {
        let rec: DmaProbeResult = serde_json::from_value(pair.clone()).unwrap();
        // Serialising again gives the same object.
        assert_eq!(serde_json::to_value(&rec).unwrap(), *pair);
    }
}

#[test]
fn placeholder_allocate_is_a_setup_error_naming_the_path() {
    let Some((_tmp, img)) = disk() else {
        crate::testing::skipped("SKIPPED: no file system here supports O_DIRECT");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sys/bus/pci/devices/0000:03:00.0/p2pmem");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("allocate"), b"").unwrap();
    let mut log = Scripted {
        cleared: false,
        reads: VecDeque::new(),
    };
    let err = dma_probe_with(&mut log, root.path(), bdf("0000:03:00.0"), None, &img).unwrap_err();
    assert!(
        matches!(
            err,
            DmaProbeError::Map {
                source: P2pBufferError::Placeholder { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!log.cleared, "setup errors leave the kernel log alone");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        chain.contains(&dir.join("allocate").display().to_string()),
        "{chain}"
    );

    let err = dma_probe_with(&mut log, root.path(), bdf("0000:07:00.0"), None, &img).unwrap_err();
    assert!(
        matches!(
            err,
            DmaProbeError::Map {
                source: P2pBufferError::NoAllocate { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn missing_client_is_a_setup_error() {
    let root = stand_in_root("0000:03:00.0");
    let mut log = Scripted {
        cleared: false,
        reads: VecDeque::new(),
    };
    let err = dma_probe_with(
        &mut log,
        root.path(),
        bdf("0000:03:00.0"),
        None,
        Path::new("/dev/nonexistent-nvme9n1"),
    )
    .unwrap_err();
    assert!(matches!(err, DmaProbeError::Client(_)));
    assert!(!log.cleared, "nothing is cleared before setup succeeds");
}

#[test]
fn phase_diffing() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(new_lines(&s(&["a"]), &s(&["a", "b"])), (s(&["b"]), false));
    assert_eq!(new_lines(&s(&[]), &s(&["a"])), (s(&["a"]), false));
    assert_eq!(
        new_lines(&s(&["x"]), &s(&["a", "b"])),
        (s(&["a", "b"]), true)
    );
}

#[test]
fn transfer_labels() {
    assert_eq!(transfer(Ok(IO_BYTES)).unwrap().as_deref(), Some("ok"));
    assert_eq!(transfer(Ok(4096)).unwrap().as_deref(), Some("short:4096"));
    let e = DioError::Io {
        op: crate::dio::Op::Read,
        path: "/dev/nvme1n1".into(),
        file_off: 0,
        len: IO_BYTES,
        location: crate::p2pbuf::Location::Host,
        errno: "EREMOTEIO".into(),
        hint: "",
        source: std::io::Error::from_raw_os_error(121),
    };
    assert_eq!(transfer(Err(e)).unwrap().as_deref(), Some("EREMOTEIO"));
}

#[test]
fn write_pattern_differs_per_nonce_and_offset() {
    let a = write_pattern(1);
    let b = write_pattern(2);
    assert_eq!(a.len(), IO_BYTES);
    assert_ne!(a, b);
    assert_ne!(a[0..8], a[8..16]);
}
