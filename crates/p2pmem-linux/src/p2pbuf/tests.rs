use super::*;
use std::fs;

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

/// A fake sysfs tree with one provider directory; returns (root, provider dir).
fn fake_provider(bdf_s: &str) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root
        .path()
        .join("sys/bus/pci/devices")
        .join(bdf_s)
        .join("p2pmem");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("available"), "16711680\n").unwrap();
    (root, dir)
}

#[test]
fn missing_allocate_names_the_path() {
    let (root, dir) = fake_provider("0000:03:00.0");
    let err = P2pBuffer::map(root.path(), bdf("0000:03:00.0"), 1 << 20).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(
        err,
        P2pBufferError::NoAllocate {
            provider_present: true,
            ..
        }
    ));
    assert!(
        msg.contains(&dir.join("allocate").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("has no p2pmem pool"), "{msg}");
    assert_eq!(err.mmap_errno(), None);

    let err = P2pBuffer::map(root.path(), bdf("0000:09:00.0"), 1 << 20).unwrap_err();
    assert!(
        err.to_string()
            .contains("0000:09:00.0 has no sysfs directory"),
        "{err}"
    );
}

#[test]
fn allocate_as_a_directory_is_a_clear_error() {
    let (root, dir) = fake_provider("0000:03:00.0");
    fs::create_dir(dir.join("allocate")).unwrap();
    let err = P2pBuffer::map(root.path(), bdf("0000:03:00.0"), 4096).unwrap_err();
    assert!(
        matches!(
            err,
            P2pBufferError::NotAFile {
                kind: "directory",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("is a directory"), "{err}");
}

#[test]
fn empty_placeholder_from_a_capture_is_refused_without_mapping() {
    let (root, dir) = fake_provider("0000:03:00.0");
    fs::write(dir.join("allocate"), b"").unwrap();
    let err = P2pBuffer::map(root.path(), bdf("0000:03:00.0"), 1 << 20).unwrap_err();
    assert!(
        matches!(
            err,
            P2pBufferError::Placeholder {
                size: 0,
                len: 1048576,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("captured placeholder"), "{err}");
}

#[test]
fn shared_truth_fixture_allocate_is_refused() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/truth/s01_switch_cmbmix_fam15/root");
    if !root.is_dir() {
        crate::testing::skipped(&format!(
            "SKIPPED: no ground-truth capture at {}",
            root.display()
        ));
        return;
    }
    // A provider (03:00.0) and a client-only function (05:00.0). Depending on whether
    // the capture kept `devices/<BDF>` as a symlink, the placeholder is reached and
    // refused, or the path does not resolve; either way nothing is mapped and the
    // error names the allocate path.
    for provider in ["0000:03:00.0", "0000:05:00.0"] {
        let err = P2pBuffer::map(&root, bdf(provider), 1 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                P2pBufferError::Placeholder { .. } | P2pBufferError::NoAllocate { .. }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(provider) && msg.contains("p2pmem/allocate"),
            "{msg}"
        );
    }
}

#[test]
fn zero_length_is_refused() {
    let (root, _dir) = fake_provider("0000:03:00.0");
    let err = P2pBuffer::map(root.path(), bdf("0000:03:00.0"), 0).unwrap_err();
    assert!(matches!(err, P2pBufferError::ZeroLength { .. }));
}

/// A sized regular file stands in for the sysfs attribute: the same open/fstat/mmap
/// path, and touching it is safe because the file has backing pages.
#[test]
fn maps_a_sized_stand_in_and_copies_volatile() {
    let (root, dir) = fake_provider("0000:03:00.0");
    let f = fs::File::create(dir.join("allocate")).unwrap();
    f.set_len(1 << 40).unwrap(); // sparse, like the kernel's 1 TiB dummy size
    let mut buf = P2pBuffer::map(root.path(), bdf("0000:03:00.0"), 5000).unwrap();
    assert_eq!(buf.len(), sys::round_up_to_page(5000).unwrap());
    assert_eq!(buf.location(), Location::P2p(bdf("0000:03:00.0")));
    assert_eq!(buf.as_ptr() as usize % sys::page_size(), 0);
    buf.fill(0xa5).unwrap();
    buf.copy_from_host(3, b"abc").unwrap();
    let mut out = [0u8; 5];
    buf.copy_to_host(2, &mut out).unwrap();
    assert_eq!(&out, b"\xa5abc\xa5");
    let err = buf.copy_to_host(buf.len() - 1, &mut out).unwrap_err();
    assert!(err.to_string().contains("p2pmem of 0000:03:00.0"), "{err}");
    assert!(matches!(err, CpuAccessError::Range(_)), "{err:?}");
    assert!(buf.io_mut(0, buf.len()).is_ok());
    assert!(buf.io(1, buf.len()).is_err());
}

/// What a provider removal does to a mapping, played on a regular file: truncated to 0
/// after mapping, its pages raise SIGBUS on access. Every CPU accessor reports
/// `DeviceMemoryGone` naming the provider and the path, and the test process survives.
#[test]
fn a_torn_down_mapping_is_an_error_not_a_crash() {
    let (root, dir) = fake_provider("0000:03:00.0");
    let path = dir.join("allocate");
    let f = fs::File::create(&path).unwrap();
    f.set_len(1 << 40).unwrap();
    let mut buf = P2pBuffer::map(root.path(), bdf("0000:03:00.0"), 8192).unwrap();
    buf.fill(0xa5).unwrap();
    f.set_len(0).unwrap();

    let mut out = [0u8; 4];
    let err = buf.copy_to_host(4096, &mut out).unwrap_err();
    match &err {
        CpuAccessError::DeviceMemoryGone {
            provider,
            path: p,
            allocate_present,
        } => {
            assert_eq!(*provider, bdf("0000:03:00.0"));
            assert_eq!(p, &path);
            assert!(*allocate_present);
        }
        other => panic!("expected DeviceMemoryGone, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("raised SIGBUS"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("bound again"), "{msg}");
    assert_eq!(out, [0; 4]);

    // The file removed, as the kernel removes `allocate` on unbind.
    fs::remove_file(&path).unwrap();
    let err = buf.copy_from_host(0, b"x").unwrap_err();
    assert!(
        matches!(
            err,
            CpuAccessError::DeviceMemoryGone {
                allocate_present: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no longer exists"), "{err}");
    assert!(matches!(
        buf.fill(0),
        Err(CpuAccessError::DeviceMemoryGone { .. })
    ));
    // A range error is still a range error, found before any access.
    assert!(matches!(
        buf.copy_to_host(8192, &mut out),
        Err(CpuAccessError::Range(_))
    ));
}

#[test]
fn mmap_hints() {
    let h = mmap_hint(Some(12), 1 << 20, Some(65536));
    assert!(h.contains("one contiguous chunk of 1048576 bytes"), "{h}");
    assert!(h.contains("available: 65536 bytes"), "{h}");
    assert!(mmap_hint(Some(12), 4096, None).contains("available: unknown"));
    assert!(mmap_hint(Some(19), 4096, None).contains("being removed"));
    assert!(mmap_hint(Some(22), 4096, None).contains("private mapping"));
    assert!(mmap_hint(Some(13), 4096, None).contains("root"));
    assert!(open_hint(Some(13)).contains("run as root"));
}

#[test]
fn host_buffer_copy_api() {
    let mut h = HostBuffer::new(8192).unwrap();
    assert_eq!(h.len(), 8192);
    assert_eq!(h.location(), Location::Host);
    assert_eq!(h.as_ptr() as usize % sys::page_size(), 0);
    h.fill(1).unwrap();
    h.copy_from_host(8190, &[7, 8]).unwrap();
    let mut out = [0u8; 3];
    h.copy_to_host(8189, &mut out).unwrap();
    assert_eq!(out, [1, 7, 8]);
    let Err(CpuAccessError::Range(err)) = h.copy_from_host(8191, &[0, 0]) else {
        panic!("expected a range error");
    };
    assert_eq!(
        err,
        RangeError {
            offset: 8191,
            len: 2,
            buf_len: 8192,
            location: Location::Host
        }
    );
    assert!(h.copy_to_host(usize::MAX, &mut out).is_err());
    assert_eq!(h.as_slice()[8191], 8);
    let dynbuf: &mut dyn DmaBuffer = &mut h;
    assert!(dynbuf.io_mut(4096, 4096).is_ok());
    assert!(HostBuffer::new(usize::MAX).is_err());
}

#[test]
fn location_display() {
    assert_eq!(Location::Host.to_string(), "host memory");
    assert_eq!(
        Location::P2p(bdf("0000:03:00.0")).to_string(),
        "p2pmem of 0000:03:00.0"
    );
}
