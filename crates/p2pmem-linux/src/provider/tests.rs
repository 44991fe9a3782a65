use super::*;
use crate::klog::KlogError;
use std::fs;
use std::os::unix::fs::symlink;

/// A kernel log that returns scripted contents, one per `read_all`.
struct FakeLog(Vec<&'static str>);

impl KernelLog for FakeLog {
    fn clear(&mut self) -> Result<(), KlogError> {
        Ok(())
    }
    fn read_all(&mut self) -> Result<Vec<u8>, KlogError> {
        let next = if self.0.len() > 1 {
            self.0.remove(0)
        } else {
            self.0.first().copied().unwrap_or("")
        };
        Ok(next.as_bytes().to_vec())
    }
}

const BDF: &str = "0000:05:00.0";

fn bdf() -> Bdf {
    BDF.parse().unwrap()
}

/// A sysfs tree as the kernel lays it out: the device below `devices/`, linked from
/// `bus/pci/devices`, and optionally the driver directory and a `driver` link.
fn tree(driver_loaded: bool, bound_to: Option<&str>) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    let real = r.join("sys/devices/pci0000:00/0000:00:04.0").join(BDF);
    fs::create_dir_all(&real).unwrap();
    fs::write(real.join("driver_override"), "(null)\n").unwrap();
    fs::create_dir_all(r.join("sys/bus/pci/devices")).unwrap();
    symlink(
        format!("../../../devices/pci0000:00/0000:00:04.0/{BDF}"),
        r.join("sys/bus/pci/devices").join(BDF),
    )
    .unwrap();
    if driver_loaded {
        let d = r.join("sys/bus/pci/drivers").join(DRIVER);
        fs::create_dir_all(&d).unwrap();
        for f in ["bind", "unbind", "ranges", "providers"] {
            fs::write(d.join(f), "").unwrap();
        }
    }
    if let Some(drv) = bound_to {
        fs::create_dir_all(r.join("sys/bus/pci/drivers").join(drv)).unwrap();
        symlink(
            format!("../../../../bus/pci/drivers/{drv}"),
            real.join("driver"),
        )
        .unwrap();
    }
    tmp
}

fn driver_file(root: &Path, name: &str) -> String {
    fs::read_to_string(root.join("sys/bus/pci/drivers").join(DRIVER).join(name)).unwrap()
}

fn device_file(root: &Path, name: &str) -> String {
    fs::read_to_string(root.join("sys/bus/pci/devices").join(BDF).join(name)).unwrap()
}

#[test]
fn ranges_lines_name_only_what_was_chosen() {
    assert_eq!(
        RegionRequest::default().ranges_line(bdf()),
        "0000:05:00.0\n"
    );
    let r = RegionRequest {
        bar: Some(2),
        offset: Some(2 << 20),
        size: Some(4 << 20),
    };
    assert_eq!(
        r.ranges_line(bdf()),
        "0000:05:00.0 bar=2 offset=0x200000 size=0x400000\n"
    );
    assert!(!r.is_default());
    assert!(RegionRequest::default().is_default());
}

#[test]
fn providers_file_parses_and_skips_junk() {
    let text = "0000:05:00.0 bar=2 offset=0x0 size=0x4000000 start=0xf8000000 bar_len=0x4000000\n\
                garbage line\n\
                0000:00:08.0 bar=2 offset=0x200000 size=0x400000 start=0xfa200000 bar_len=0x1000000\n\
                0000:00:09.0 bar=2\n";
    let regions = parse_providers(text);
    assert_eq!(regions.len(), 2);
    assert_eq!(
        regions[0],
        ActiveRegion {
            bdf: bdf(),
            bar: 2,
            offset: 0,
            size: 64 << 20,
            start: 0xf800_0000,
            bar_len: 64 << 20,
        }
    );
    assert_eq!(regions[1].offset, 2 << 20);
}

#[test]
fn driver_link_names_the_driver() {
    let t = tree(false, Some("nvme"));
    assert_eq!(
        bound_driver(t.path(), bdf()).unwrap().as_deref(),
        Some("nvme")
    );
    let t = tree(false, None);
    assert_eq!(bound_driver(t.path(), bdf()).unwrap(), None);
    let err = bound_driver(t.path(), "0000:09:00.0".parse().unwrap()).unwrap_err();
    assert!(
        err.to_string().contains("no PCI function 0000:09:00.0"),
        "{err}"
    );
}

#[test]
fn a_device_of_another_driver_is_refused_naming_it() {
    let t = tree(true, Some("nvme"));
    let err = bind(
        t.path(),
        bdf(),
        &BindOptions::default(),
        &mut FakeLog(vec![]),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("bound to the nvme driver"), "{text}");
    assert!(
        text.contains("echo 0000:05:00.0 > /sys/bus/pci/drivers/nvme/unbind"),
        "{text}"
    );
    // Nothing was written.
    assert_eq!(driver_file(t.path(), "bind"), "");
}

#[test]
fn loading_the_module_is_refused_below_a_capture() {
    let t = tree(false, None);
    let err = bind(
        t.path(),
        bdf(),
        &BindOptions::default(),
        &mut FakeLog(vec![]),
    )
    .unwrap_err();
    assert!(matches!(err, ProviderError::NotLive { .. }), "{err}");
}

#[test]
fn module_search_order_and_the_missing_module_error() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let err = find_module(r, Some("6.12.117"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("6.12.117/extra/p2pmem_pci.ko"), "{err}");
    assert!(err.contains("lib/modules/p2pmem_pci.ko"), "{err}");
    assert!(err.contains("p2pmem lab kernel"), "{err}");
    fs::create_dir_all(r.join("lib/modules/6.12.117/updates")).unwrap();
    fs::write(r.join("lib/modules/p2pmem_pci.ko"), "").unwrap();
    assert_eq!(
        find_module(r, Some("6.12.117"), None).unwrap(),
        r.join("lib/modules/p2pmem_pci.ko")
    );
    fs::write(r.join("lib/modules/6.12.117/updates/p2pmem_pci.ko"), "").unwrap();
    assert_eq!(
        find_module(r, Some("6.12.117"), None).unwrap(),
        r.join("lib/modules/6.12.117/updates/p2pmem_pci.ko")
    );
    let explicit = r.join("nope.ko");
    let err = find_module(r, None, Some(&explicit))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.ko"), "{err}");
}

#[test]
fn loading_garbage_is_an_error_with_a_hint() {
    let t = tempfile::tempdir().unwrap();
    let ko = t.path().join("p2pmem_pci.ko");
    fs::write(&ko, b"not a module").unwrap();
    // Not root: EPERM; root: ENOEXEC; a sandbox without module support: ENOSYS. Always
    // an error naming the file, the errno and what it means; never a success.
    let err = load_module(&ko).unwrap_err();
    assert!(matches!(err, ProviderError::Load { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("p2pmem_pci.ko (E"), "{text}");
}

#[test]
fn bind_writes_the_region_then_the_override_then_bind() {
    let t = tree(true, None);
    let r = t.path();
    // The kernel would create p2pmem/ and the providers line on bind; the fixture has them.
    fs::create_dir_all(p2pmem_dir(r, bdf())).unwrap();
    fs::write(
        r.join("sys/bus/pci/drivers").join(DRIVER).join("providers"),
        "0000:05:00.0 bar=2 offset=0x200000 size=0x400000 start=0xf8200000 bar_len=0x4000000\n",
    )
    .unwrap();
    let opts = BindOptions {
        region: RegionRequest {
            bar: Some(2),
            offset: Some(2 << 20),
            size: Some(4 << 20),
        },
        ..BindOptions::default()
    };
    let out = bind(r, bdf(), &opts, &mut FakeLog(vec![])).unwrap();
    assert_eq!(out.action, BindAction::Bound);
    assert_eq!(out.loaded, None);
    assert_eq!(out.region.unwrap().size, 4 << 20);
    assert_eq!(
        driver_file(r, "ranges"),
        "0000:05:00.0 bar=2 offset=0x200000 size=0x400000\n"
    );
    assert_eq!(device_file(r, "driver_override"), "p2pmem_pci\n");
    assert_eq!(driver_file(r, "bind"), "0000:05:00.0\n");
}

#[test]
fn an_already_bound_device_is_left_alone_without_a_region() {
    let t = tree(true, Some(DRIVER));
    let r = t.path();
    fs::create_dir_all(p2pmem_dir(r, bdf())).unwrap();
    let out = bind(r, bdf(), &BindOptions::default(), &mut FakeLog(vec![])).unwrap();
    assert_eq!(out.action, BindAction::AlreadyBound);
    assert_eq!(driver_file(r, "bind"), "");
    assert_eq!(driver_file(r, "unbind"), "");
}

#[test]
fn a_refused_bind_clears_the_override_and_quotes_the_kernel() {
    let t = tree(true, None);
    let r = t.path();
    // A directory cannot be written: the write fails as a refused bind would.
    let bind_file = r.join("sys/bus/pci/drivers").join(DRIVER).join("bind");
    fs::remove_file(&bind_file).unwrap();
    fs::create_dir(&bind_file).unwrap();
    let mut log = FakeLog(vec![
        "[    1.0] unrelated\n",
        "[    1.0] unrelated\n[    2.0] p2pmem_pci 0000:05:00.0: refused: BAR 0: 0x100 bytes is too small for ZONE_DEVICE memory (at least 0x200000)\n[    2.1] p2pmem_pci 0000:00:08.0: other device\n",
    ]);
    let opts = BindOptions {
        region: RegionRequest {
            bar: Some(0),
            ..RegionRequest::default()
        },
        ..BindOptions::default()
    };
    let err = bind(r, bdf(), &opts, &mut log).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("the kernel refused to bind 0000:05:00.0 to p2pmem_pci (EISDIR)"),
        "{text}"
    );
    assert!(
        text.contains("\n  kernel: p2pmem_pci 0000:05:00.0: refused: BAR 0"),
        "{text}"
    );
    assert!(!text.contains("0000:00:08.0"), "{text}");
    assert!(!text.contains("unrelated"), "{text}");
    assert_eq!(device_file(r, "driver_override"), "\n");
}

#[test]
fn unbind_undoes_bind() {
    let t = tree(true, Some(DRIVER));
    let r = t.path();
    fs::write(
        r.join("sys/bus/pci/drivers").join(DRIVER).join("providers"),
        "0000:05:00.0 bar=2 offset=0x0 size=0x4000000 start=0xf8000000 bar_len=0x4000000\n",
    )
    .unwrap();
    let Unbound::Unbound(Some(region)) = unbind(r, bdf(), None).unwrap() else {
        panic!("unbound with a region")
    };
    assert_eq!(region.size, 64 << 20);
    assert_eq!(driver_file(r, "unbind"), "0000:05:00.0\n");
    assert_eq!(driver_file(r, "ranges"), "0000:05:00.0\n");
    assert_eq!(device_file(r, "driver_override"), "\n");
}

#[test]
fn unbind_of_a_device_that_is_not_ours_says_whose_it_is() {
    let t = tree(true, Some("nvme"));
    let err = unbind(t.path(), bdf(), None).unwrap_err().to_string();
    assert_eq!(
        err,
        "0000:05:00.0 is not bound to p2pmem_pci (its driver is nvme)"
    );
    let t = tree(true, None);
    let err = unbind(t.path(), bdf(), None).unwrap_err().to_string();
    assert_eq!(
        err,
        "0000:05:00.0 is not bound to p2pmem_pci (it has no driver)"
    );
}

/// `provider bind` killed after its override write and before `bind`: the device is
/// left unbound with `driver_override` naming the driver; `unbind` undoes it and a new
/// `bind` finishes it (every earlier cut leaves at most a `ranges` entry, which the next
/// bind rewrites; a later cut leaves the device bound, which `bind` then keeps).
#[test]
fn a_bind_interrupted_before_its_last_write_is_undone_by_unbind_and_finished_by_bind() {
    let t = tree(true, None);
    let r = t.path();
    fs::write(
        r.join("sys/bus/pci/devices")
            .join(BDF)
            .join("driver_override"),
        format!("{DRIVER}\n"),
    )
    .unwrap();
    fs::write(
        r.join("sys/bus/pci/drivers").join(DRIVER).join("ranges"),
        format!("{BDF} bar=2\n"),
    )
    .unwrap();
    assert!(half_bound(r, bdf()));
    assert_eq!(unbind(r, bdf(), None).unwrap(), Unbound::HalfBound);
    assert_eq!(device_file(r, "driver_override"), "\n");
    assert_eq!(driver_file(r, "ranges"), "0000:05:00.0\n");
    assert!(!half_bound(r, bdf()));
    // Without it, unbind says the device is not ours.
    assert!(unbind(r, bdf(), None).is_err());
}

/// `provider bind` killed after its `ranges` write and before the override: only the
/// driver's table holds the device (16 slots); `unbind` frees the slot.
#[test]
fn a_bind_interrupted_after_its_ranges_write_is_undone_by_unbind() {
    let t = tree(true, None);
    let r = t.path();
    fs::write(
        r.join("sys/bus/pci/drivers").join(DRIVER).join("ranges"),
        format!(
            "0000:00:08.0 bar=2 offset=0x0 size=0x200000\n{BDF} bar=2 offset=0x0 size=0x400000\n"
        ),
    )
    .unwrap();
    assert!(half_bound(r, bdf()));
    assert_eq!(unbind(r, bdf(), None).unwrap(), Unbound::HalfBound);
    // What the kernel is asked to do: remove the device's entry.
    assert_eq!(driver_file(r, "ranges"), "0000:05:00.0\n");
    // The override was not the driver's: left as it was.
    assert_eq!(device_file(r, "driver_override"), "(null)\n");
}

#[test]
fn waiting_for_p2pmem_times_out_with_the_path() {
    let t = tree(true, None);
    let err = wait_p2pmem(t.path(), bdf(), true, Duration::from_millis(50)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("0000:05:00.0/p2pmem did not appear"),
        "{text}"
    );
    assert!(wait_p2pmem(t.path(), bdf(), false, Duration::ZERO).is_ok());
}
