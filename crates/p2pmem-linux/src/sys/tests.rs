use super::*;
use rustix::io::Errno;

#[test]
fn errno_names_match_the_numbers_we_meet() {
    assert_eq!(errno_name(1), Some("EPERM"));
    assert_eq!(errno_name(5), Some("EIO"));
    assert_eq!(errno_name(6), Some("ENXIO"));
    assert_eq!(errno_name(9), Some("EBADF"));
    assert_eq!(errno_name(12), Some("ENOMEM"));
    assert_eq!(errno_name(13), Some("EACCES"));
    assert_eq!(errno_name(14), Some("EFAULT"));
    assert_eq!(errno_name(16), Some("EBUSY"));
    assert_eq!(errno_name(19), Some("ENODEV"));
    assert_eq!(errno_name(22), Some("EINVAL"));
    assert_eq!(errno_name(28), Some("ENOSPC"));
    assert_eq!(errno_name(30), Some("EROFS"));
    assert_eq!(errno_name(95), Some("EOPNOTSUPP"));
    assert_eq!(errno_name(121), Some("EREMOTEIO"));
    assert_eq!(errno_name(0), None);
    assert_eq!(errno_label(121), "EREMOTEIO");
    assert_eq!(errno_label(4000), "errno 4000");
    assert_eq!(io_error_label(&io::Error::from_raw_os_error(22)), "EINVAL");
}

/// The model's errno numbers are this target's: every errno rustix knows by name has
/// the number the model gives that name (only `ENOTSUPP`, kernel-internal, is not in
/// rustix).
#[test]
fn the_models_errno_numbers_are_this_targets() {
    let target: &[(Errno, &str)] = &[
        (Errno::PERM, "EPERM"),
        (Errno::NOENT, "ENOENT"),
        (Errno::SRCH, "ESRCH"),
        (Errno::INTR, "EINTR"),
        (Errno::IO, "EIO"),
        (Errno::NXIO, "ENXIO"),
        (Errno::TOOBIG, "E2BIG"),
        (Errno::BADF, "EBADF"),
        (Errno::AGAIN, "EAGAIN"),
        (Errno::NOMEM, "ENOMEM"),
        (Errno::ACCESS, "EACCES"),
        (Errno::FAULT, "EFAULT"),
        (Errno::NOTBLK, "ENOTBLK"),
        (Errno::BUSY, "EBUSY"),
        (Errno::EXIST, "EEXIST"),
        (Errno::XDEV, "EXDEV"),
        (Errno::NODEV, "ENODEV"),
        (Errno::NOTDIR, "ENOTDIR"),
        (Errno::ISDIR, "EISDIR"),
        (Errno::INVAL, "EINVAL"),
        (Errno::NFILE, "ENFILE"),
        (Errno::MFILE, "EMFILE"),
        (Errno::NOTTY, "ENOTTY"),
        (Errno::TXTBSY, "ETXTBSY"),
        (Errno::FBIG, "EFBIG"),
        (Errno::NOSPC, "ENOSPC"),
        (Errno::SPIPE, "ESPIPE"),
        (Errno::ROFS, "EROFS"),
        (Errno::PIPE, "EPIPE"),
        (Errno::RANGE, "ERANGE"),
        (Errno::NOSYS, "ENOSYS"),
        (Errno::NOTEMPTY, "ENOTEMPTY"),
        (Errno::NODATA, "ENODATA"),
        (Errno::TIME, "ETIME"),
        (Errno::NOLINK, "ENOLINK"),
        (Errno::PROTO, "EPROTO"),
        (Errno::OVERFLOW, "EOVERFLOW"),
        (Errno::ILSEQ, "EILSEQ"),
        (Errno::OPNOTSUPP, "EOPNOTSUPP"),
        (Errno::ADDRINUSE, "EADDRINUSE"),
        (Errno::ADDRNOTAVAIL, "EADDRNOTAVAIL"),
        (Errno::TIMEDOUT, "ETIMEDOUT"),
        (Errno::REMOTEIO, "EREMOTEIO"),
        (Errno::NOMEDIUM, "ENOMEDIUM"),
        (Errno::MEDIUMTYPE, "EMEDIUMTYPE"),
        (Errno::CANCELED, "ECANCELED"),
        (Errno::HWPOISON, "EHWPOISON"),
    ];
    for (errno, name) in target {
        assert_eq!(errno_name(errno.raw_os_error()), Some(*name), "{name}");
    }
    let checked: Vec<&str> = target.iter().map(|(_, n)| *n).collect();
    for known in p2pmem_model::errno::KNOWN {
        assert!(
            checked.contains(&known.name) || known.name == "ENOTSUPP",
            "{} is not checked against rustix",
            known.name
        );
    }
}

#[test]
fn page_rounding() {
    let p = page_size();
    assert!(p.is_power_of_two());
    assert_eq!(round_up_to_page(0), Some(0));
    assert_eq!(round_up_to_page(1), Some(p));
    assert_eq!(round_up_to_page(p), Some(p));
    assert_eq!(round_up_to_page(p + 1), Some(2 * p));
    assert_eq!(round_up_to_page(usize::MAX), None);
}

#[test]
fn host_alloc_is_page_aligned_zeroed_and_bounded() {
    let mut a = HostAlloc::new(100).unwrap();
    assert_eq!(a.len(), 100);
    assert_eq!(a.as_slice().as_ptr() as usize % page_size(), 0);
    assert!(a.as_slice().iter().all(|&b| b == 0));
    a.as_mut_slice()[99] = 7;
    assert_eq!(a.as_slice()[99], 7);
    assert!(a.io_mut(0, 100).is_some());
    assert!(a.io_mut(1, 100).is_none());
    assert!(a.io(usize::MAX, 2).is_none());
    let empty = HostAlloc::new(0).unwrap();
    assert!(empty.is_empty());
    assert!(HostAlloc::new(usize::MAX).is_none());
}

/// The `/proc/self/smaps` lines after the header of the mapping of this process that
/// holds `addr`.
fn smaps_of(addr: usize) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    let mut lines = Vec::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
                continue;
            }
        }
        if inside {
            lines.push(line.to_owned());
        }
    }
    assert!(!lines.is_empty(), "no mapping holds {addr:#x}");
    lines
}

/// The `VmFlags` of the mapping of this process that holds `addr`.
fn vm_flags(addr: usize) -> Vec<String> {
    smaps_of(addr)
        .iter()
        .find_map(|l| l.strip_prefix("VmFlags:"))
        .map(|f| f.split_whitespace().map(str::to_owned).collect())
        .unwrap()
}

/// The resident bytes (`Rss`) of the mapping of this process that holds `addr`.
fn rss(addr: usize) -> usize {
    let line = smaps_of(addr)
        .into_iter()
        .find(|l| l.starts_with("Rss:"))
        .unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

#[test]
fn a_host_alloc_is_resident_before_its_first_use() {
    // Nothing has touched these bytes: whatever is resident was populated when the
    // mapping was made (the kernels this runs on are 5.14 or later).
    let len = 3 * (2 << 20) + 100;
    for pages in [Pages::Base, Pages::Huge] {
        let a = HostAlloc::with_pages(len, pages).unwrap();
        let resident = rss(a.as_slice().as_ptr() as usize);
        assert!(
            resident >= len,
            "{pages:?}: {resident} of {len} bytes resident"
        );
        assert!(a.as_slice().iter().all(|&b| b == 0), "{pages:?}: zeroed");
    }
}

#[test]
fn huge_host_alloc_starts_on_a_huge_page_and_asks_for_huge_pages() {
    let thp = huge_page_size()
        .expect("the kernels this runs on have transparent huge pages (hpage_pmd_size)");
    let len = 3 * (2 << 20) + 100;
    let mut a = HostAlloc::with_pages(len, Pages::Huge).unwrap();
    let addr = a.as_slice().as_ptr() as usize;
    assert_eq!(a.len(), len);
    assert_eq!(addr % thp, 0, "starts on a huge-page boundary");
    assert!(a.as_slice().iter().all(|&b| b == 0));
    a.as_mut_slice()[len - 1] = 7;
    assert_eq!(a.as_slice()[len - 1], 7);
    assert!(a.io(len - 1, 1).is_some() && a.io(len, 1).is_none());
    assert!(
        vm_flags(addr).iter().any(|f| f == "hg"),
        "advised MADV_HUGEPAGE: {:?}",
        vm_flags(addr)
    );
    // Base pages are not advised, whatever their size.
    let b = HostAlloc::new(len).unwrap();
    let flags = vm_flags(b.as_slice().as_ptr() as usize);
    assert!(!flags.iter().any(|f| f == "hg"), "{flags:?}");
    // Small buffers go into a whole huge page too (the copy's 8 x 4 KiB).
    let small = HostAlloc::with_pages(32 << 10, Pages::Huge).unwrap();
    assert_eq!(small.as_slice().as_ptr() as usize % thp, 0);
    assert_eq!(small.len(), 32 << 10);
}

#[test]
fn huge_pages_are_used_where_they_do_not_balloon_the_buffer() {
    let mib = 1 << 20;
    assert_eq!(huge_page_for(None, 64 * mib), None);
    assert_eq!(huge_page_for(Some(2 * mib), 4096), Some(2 * mib));
    // arm64 with 64 KiB pages: 512 MiB huge pages only for buffers at least that big.
    assert_eq!(huge_page_for(Some(512 * mib), 32 * mib), None);
    assert_eq!(huge_page_for(Some(32 * mib), 32 * mib), Some(32 * mib));
    assert_eq!(huge_page_for(Some(32 * mib), 8 * mib), None);
}

#[test]
fn requests_of_more_than_one_page_get_huge_pages() {
    let page = page_size() as u64;
    assert_eq!(Pages::for_requests(512), Pages::Base);
    assert_eq!(Pages::for_requests(page), Pages::Base);
    assert_eq!(Pages::for_requests(page + 512), Pages::Huge);
    assert_eq!(Pages::for_requests(1 << 20), Pages::Huge);
}

#[test]
fn volatile_copies_handle_unaligned_heads_and_tails() {
    let mut backing = HostAlloc::new(64).unwrap();
    let base = backing.as_mut_slice().as_mut_ptr();
    for off in 0..9 {
        for len in 0..40 {
            let src: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(off as u8))
                .collect();
            // SAFETY: off + len <= 48 < 64 bytes of the live allocation; `src` is a
            // distinct Vec of `len` bytes.
            unsafe { volatile_copy_in(base.add(off), src.as_ptr(), len) };
            let mut out = vec![0u8; len];
            // SAFETY: as above; `out` is a distinct Vec of `len` bytes.
            unsafe { volatile_copy_out(out.as_mut_ptr(), base.add(off), len) };
            assert_eq!(out, src, "off {off} len {len}");
            // SAFETY: as above.
            unsafe { volatile_fill(base.add(off), len, 0x5a) };
            // SAFETY: as above.
            unsafe { volatile_copy_out(out.as_mut_ptr(), base.add(off), len) };
            assert!(out.iter().all(|&b| b == 0x5a));
        }
    }
}

#[test]
fn mmap_rejects_zero_and_unaligned_lengths_before_the_syscall() {
    let f = tempfile::tempfile().unwrap();
    let fd = rustix::fd::AsFd::as_fd(&f);
    let e = MmapRegion::map_shared_rw(fd, 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    let e = MmapRegion::map_shared_rw(fd, 100).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
}

#[test]
fn mmap_of_a_sized_file_round_trips_through_volatile_access() {
    let f = tempfile::tempfile().unwrap();
    let p = page_size();
    f.set_len(2 * p as u64).unwrap();
    let mut m = MmapRegion::map_shared_rw(rustix::fd::AsFd::as_fd(&f), 2 * p).unwrap();
    assert_eq!(m.len(), 2 * p);
    m.fill(0xa5).unwrap();
    m.write_from(p - 3, b"hello, world").unwrap();
    let mut out = [0u8; 14];
    m.read_into(p - 4, &mut out).unwrap();
    assert_eq!(&out, b"\xa5hello, world\xa5");
    // The guard process wrote the shared mapping, so the file has the bytes too.
    let mut file_bytes = [0u8; 12];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut file_bytes, (p - 3) as u64).unwrap();
    assert_eq!(&file_bytes, b"hello, world");
    // Unaligned host buffers and lengths on both sides of the word loop.
    let src: Vec<u8> = (0..=255u8).collect();
    m.write_from(5, &src[1..200]).unwrap();
    let mut back = vec![0u8; 201];
    m.read_into(5, &mut back[1..200]).unwrap();
    assert_eq!(&back[1..200], &src[1..200]);
    m.write_from(0, &[]).unwrap();
    m.read_into(2 * p, &mut []).unwrap();
    assert!(matches!(
        m.write_from(2 * p - 1, b"xy"),
        Err(AccessFault::OutOfRange)
    ));
    assert!(matches!(
        m.read_into(2 * p, &mut [0u8; 1]),
        Err(AccessFault::OutOfRange)
    ));
    assert!(m.io(0, 2 * p).is_some());
    assert!(m.io_mut(1, 2 * p).is_none());
}

/// A shared mapping of a file truncated to 0 after mapping raises SIGBUS on access, as a
/// p2pmem mapping does after its provider is removed: each guarded accessor reports it
/// as `Signal(SIGBUS)`, and this (multi-threaded) test process lives on.
#[test]
fn sigbus_from_a_truncated_mapping_is_an_error_not_a_crash() {
    let f = tempfile::tempfile().unwrap();
    let p = page_size();
    f.set_len(2 * p as u64).unwrap();
    let mut m = MmapRegion::map_shared_rw(rustix::fd::AsFd::as_fd(&f), 2 * p).unwrap();
    m.fill(0x5a).unwrap();
    f.set_len(0).unwrap();
    let mut out = [0xeeu8; 16];
    let e = m.read_into(8, &mut out).unwrap_err();
    assert!(matches!(e, AccessFault::Signal(SIGBUS)), "{e:?}");
    assert_eq!(e.status_label(), "killed by SIGBUS");
    assert_eq!(
        out, [0xee; 16],
        "nothing may be copied out of a dead mapping"
    );
    let e = m.write_from(p + 1, b"abc").unwrap_err();
    assert!(matches!(e, AccessFault::Signal(SIGBUS)), "{e:?}");
    let e = m.fill(0).unwrap_err();
    assert!(matches!(e, AccessFault::Signal(SIGBUS)), "{e:?}");
    // The file grows back: the same mapping works again (shmem refaults the pages).
    f.set_len(2 * p as u64).unwrap();
    m.write_from(3, b"back").unwrap();
    m.read_into(3, &mut out[..4]).unwrap();
    assert_eq!(&out[..4], b"back");
}

#[test]
fn guard_status_labels() {
    assert_eq!(
        AccessFault::Signal(libc::SIGSEGV).status_label(),
        "killed by SIGSEGV"
    );
    assert_eq!(
        AccessFault::Signal(64).status_label(),
        "killed by signal 64"
    );
    assert_eq!(AccessFault::Exit(3).status_label(), "exited with status 3");
    let os = AccessFault::Os {
        call: "fork",
        source: io::Error::from_raw_os_error(libc::EAGAIN),
    };
    assert_eq!(os.status_label(), "fork failed (EAGAIN)");
}
