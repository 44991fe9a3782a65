use super::*;
use crate::p2pbuf::HostBuffer;
use std::process::Command;

const A512: Alignment = Alignment {
    offset_align: 512,
    mem_align: 512,
};

#[test]
fn alignment_rules() {
    assert_eq!(check_alignment(4096, 65536, 1 << 20, A512), Ok(()));
    assert_eq!(
        check_alignment(4097, 512, 0, A512),
        Err(Misalignment::BufferAddress {
            addr: 4097,
            align: 512
        })
    );
    assert_eq!(
        check_alignment(4096, 100, 0, A512),
        Err(Misalignment::Length {
            len: 100,
            align: 512
        })
    );
    assert_eq!(
        check_alignment(4096, 512, 7, A512),
        Err(Misalignment::FileOffset {
            offset: 7,
            align: 512
        })
    );
    let loose_mem = Alignment {
        offset_align: 4096,
        mem_align: 4,
    };
    assert_eq!(check_alignment(8, 4096, 8192, loose_mem), Ok(()));
    assert!(check_alignment(8, 512, 0, loose_mem).is_err());
    let zero = Alignment {
        offset_align: 0,
        mem_align: 0,
    };
    assert_eq!(check_alignment(3, 5, 7, zero), Ok(()));
}

#[test]
fn io_hints_distinguish_p2p_from_host() {
    let p2p = Location::P2p("0000:03:00.0".parse().unwrap());
    assert!(io_hint(Some(121), p2p).contains("refused peer-to-peer DMA"));
    assert!(io_hint(Some(121), p2p).contains("6.0-6.16"));
    assert!(!io_hint(Some(121), Location::Host).contains("peer-to-peer"));
    assert!(io_hint(Some(22), p2p).contains("6.17+"));
    assert!(io_hint(Some(22), Location::Host).contains("not aligned"));
    assert_eq!(io_hint(Some(4000), Location::Host), "unexpected error");
    assert!(io_hint(Some(61), Location::Host).contains("medium error"));
}

/// A scratch file on a file system that supports O_DIRECT (the target directory,
/// normally ext4/xfs/overlay), or `None` with a SKIPPED note.
fn direct_scratch(len: u64) -> Option<(tempfile::TempDir, PathBuf)> {
    for dir in crate::testing::scratch_bases() {
        let Ok(tmp) = tempfile::tempdir_in(&dir) else {
            continue;
        };
        let path = tmp.path().join("scratch.img");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(len).unwrap();
        match DirectFile::open(&path, Access::Read) {
            Ok(_) => return Some((tmp, path)),
            Err(e) => eprintln!("note: {}: {e}", dir.display()),
        }
    }
    None
}

#[test]
fn regular_file_round_trip_with_host_buffers() {
    let Some((_tmp, path)) = direct_scratch(1 << 20) else {
        crate::testing::skipped("SKIPPED: no file system here supports O_DIRECT");
        return;
    };
    let f = DirectFile::open(&path, Access::ReadWrite).unwrap();
    assert_eq!(f.kind(), DirectKind::RegularFile);
    let lbs = f.logical_block_size() as usize;
    assert!(lbs.is_power_of_two() && lbs >= 512, "{lbs}");
    let mut w = HostBuffer::new(65536).unwrap();
    for (i, b) in w.as_mut_slice().iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    assert_eq!(f.pwrite_from(&w, 0, 65536, 65536).unwrap(), 65536);
    let mut r = HostBuffer::new(65536).unwrap();
    assert_eq!(f.pread_into(&mut r, 0, 65536, 65536).unwrap(), 65536);
    assert_eq!(r.as_slice(), w.as_slice());
    // Short read at end of file.
    assert_eq!(
        f.pread_into(&mut r, 0, 65536, (1 << 20) - 4096).unwrap(),
        4096
    );
}

#[test]
fn misaligned_and_out_of_range_requests_never_reach_the_kernel() {
    let Some((_tmp, path)) = direct_scratch(1 << 20) else {
        crate::testing::skipped("SKIPPED: no file system here supports O_DIRECT");
        return;
    };
    let f = DirectFile::open(&path, Access::Read).unwrap();
    let mut r = HostBuffer::new(65536).unwrap();
    let err = f.pread_into(&mut r, 0, 4096, 3).unwrap_err();
    assert!(
        matches!(
            err,
            DioError::Misaligned {
                source: Misalignment::FileOffset { .. },
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("offset 3"),
        "{msg}"
    );
    let err = f.pread_into(&mut r, 1, 4096, 0).unwrap_err();
    assert!(matches!(
        err,
        DioError::Misaligned {
            source: Misalignment::BufferAddress { .. },
            ..
        }
    ));
    let err = f.pread_into(&mut r, 61440, 8192, 0).unwrap_err();
    assert!(matches!(err, DioError::BufferRange { .. }));
    assert_eq!(err.errno(), None);
}

#[test]
fn write_on_a_read_only_open_reports_path_offset_and_errno() {
    let Some((_tmp, path)) = direct_scratch(1 << 20) else {
        crate::testing::skipped("SKIPPED: no file system here supports O_DIRECT");
        return;
    };
    let f = DirectFile::open(&path, Access::Read).unwrap();
    let w = HostBuffer::new(4096).unwrap();
    let err = f.pwrite_from(&w, 0, 4096, 8192).unwrap_err();
    assert_eq!(err.errno(), Some(9)); // EBADF
    let msg = err.to_string();
    assert!(msg.contains("pwrite of 4096 bytes at offset 8192"), "{msg}");
    assert!(
        msg.contains("(EBADF)") && msg.contains("host memory"),
        "{msg}"
    );
}

#[test]
fn open_errors_name_the_path() {
    let err = DirectFile::open(Path::new("/nonexistent/p2pmem/disk"), Access::Read).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/p2pmem/disk"),
        "{err}"
    );
    assert!(err.to_string().contains("ENOENT"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    match DirectFile::open(dir.path(), Access::Read) {
        Err(DioError::NotBlockOrFile {
            kind: "directory", ..
        }) => {}
        // Some file systems refuse O_DIRECT on directories at open time.
        Err(DioError::Open { .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
}

/// A loop device: a real block device with BLKSSZGET. Needs root and losetup.
#[test]
fn loop_device_round_trip() {
    let is_root = rustix::process::geteuid().is_root();
    let has_losetup = Command::new("losetup")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !is_root || !has_losetup {
        crate::testing::skipped(&format!("SKIPPED: loop device test needs root and losetup (root: {is_root}, losetup: {has_losetup})"));
        return;
    }
    let Some((_tmp, img)) = direct_scratch(4 << 20) else {
        crate::testing::skipped("SKIPPED: no file system here supports O_DIRECT");
        return;
    };
    let out = Command::new("losetup")
        .args(["--find", "--show", "--direct-io=on"])
        .arg(&img)
        .output()
        .unwrap();
    if !out.status.success() {
        crate::testing::skipped(&format!(
            "SKIPPED: losetup could not attach a loop device: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        return;
    }
    let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    struct Detach(PathBuf);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let _detach = Detach(dev.clone());
    let f = DirectFile::open(&dev, Access::ReadWrite).unwrap();
    assert_eq!(f.kind(), DirectKind::BlockDevice);
    assert_eq!(f.logical_block_size(), 512);
    let mut w = HostBuffer::new(65536).unwrap();
    w.fill(0x3c).unwrap();
    w.copy_from_host(0, b"p2pmem loop test").unwrap();
    assert_eq!(f.pwrite_from(&w, 0, 65536, 1 << 20).unwrap(), 65536);
    let mut r = HostBuffer::new(65536).unwrap();
    assert_eq!(f.pread_into(&mut r, 0, 65536, 1 << 20).unwrap(), 65536);
    assert_eq!(r.as_slice(), w.as_slice());
    let err = f.pread_into(&mut r, 0, 512, 100).unwrap_err();
    assert!(matches!(err, DioError::Misaligned { .. }));
}
