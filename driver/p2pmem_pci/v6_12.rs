// SPDX-License-Identifier: GPL-2.0

//! The glue for Linux 6.12, whose kernel crate has no PCI support: a `struct pci_driver`
//! (ID table, probe, remove, the driver's attribute group) built from bindings and
//! registered with `__pci_register_driver` from the module's `init`.

use core::cell::UnsafeCell;
use core::ffi::{c_void, CStr};
use core::fmt::{self, Write};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use kernel::ffi;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;
use kernel::sync::Mutex;

use crate::logic::{choose_region, parse_command, Bar, BarKind, Bdf, Command, PageWriter, Region};
use crate::logic::{Request, Table, NUM_BARS};
use crate::pci;

const DRIVER_NAME: &CStr = c"p2pmem_pci";

/// `PCI_ANY_ID` is `(~0)`, which bindgen types as a signed int.
const ANY_ID: u32 = pci::PCI_ANY_ID as u32;

/// Vendor and device of QEMU's `ivshmem-plain` (a RAM-backed prefetchable BAR 2).
const IVSHMEM: (u32, u32) = (0x1af4, 0x1110);

/// The ZONE_DEVICE unit: `memremap_pages` maps whole subsections.
const ZONE_DEVICE_ALIGN: u64 = 1 << pci::SUBSECTION_SHIFT;

const fn device_id(vendor: u32, device: u32) -> pci::pci_device_id {
    // SAFETY: `pci_device_id` holds only integers, for which all-zero bytes are valid.
    let mut id: pci::pci_device_id = unsafe { core::mem::zeroed() };
    id.vendor = vendor;
    id.device = device;
    id.subvendor = ANY_ID;
    id.subdevice = ANY_ID;
    id
}

/// The ID table: ivshmem, then the all-zero terminator.
static ID_TABLE: [pci::pci_device_id; 2] = [
    device_id(IVSHMEM.0, IVSHMEM.1),
    // SAFETY: the all-zero entry is the table's terminator, and valid (integers only).
    unsafe { core::mem::zeroed() },
];

/// A C structure the driver core reads and writes while the driver is registered.
///
/// It lives in a `static` (writable `.data`, as `sysfs` lockdep keys for static
/// attributes require) and is reached only through raw pointers.
struct CStatic<T>(UnsafeCell<T>);

// SAFETY: Rust code touches the contents only through raw pointers handed to the C side
// (registration, sysfs), which serialises its own accesses; no `&T` is ever formed.
unsafe impl<T> Sync for CStatic<T> {}

impl<T> CStatic<T> {
    const fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// `/sys/bus/pci/drivers/p2pmem_pci/ranges` (root read-write): the region to publish for
/// a device at its next probe, one line per device (`BDF bar=N offset=X size=Y`).
#[allow(
    clippy::needless_update,
    reason = "`attribute` has lockdep members in configurations with CONFIG_DEBUG_LOCK_ALLOC"
)]
static RANGES_ATTR: CStatic<pci::driver_attribute> =
    CStatic(UnsafeCell::new(pci::driver_attribute {
        attr: pci::attribute {
            name: c"ranges".as_ptr().cast(),
            mode: 0o644,
            // SAFETY: the remaining fields (lockdep bookkeeping) are integers or pointers that
            // may be zero/null.
            ..unsafe { core::mem::zeroed() }
        },
        show: Some(ranges_show),
        store: Some(ranges_store),
    }));

/// `/sys/bus/pci/drivers/p2pmem_pci/providers` (read-only): what each bound device
/// published (`BDF bar=N offset=X size=Y start=A bar_len=L`).
#[allow(
    clippy::needless_update,
    reason = "`attribute` has lockdep members in configurations with CONFIG_DEBUG_LOCK_ALLOC"
)]
static PROVIDERS_ATTR: CStatic<pci::driver_attribute> =
    CStatic(UnsafeCell::new(pci::driver_attribute {
        attr: pci::attribute {
            name: c"providers".as_ptr().cast(),
            mode: 0o444,
            // SAFETY: as for `RANGES_ATTR`.
            ..unsafe { core::mem::zeroed() }
        },
        show: Some(providers_show),
        store: None,
    }));

/// The NULL-terminated attribute list; `attr` is the first field of `driver_attribute`.
static ATTRS: CStatic<[*mut pci::attribute; 3]> = CStatic(UnsafeCell::new([
    RANGES_ATTR.get().cast(),
    PROVIDERS_ATTR.get().cast(),
    ptr::null_mut(),
]));

static GROUP: CStatic<pci::attribute_group> = CStatic(UnsafeCell::new(pci::attribute_group {
    attrs: ATTRS.get().cast(),
    // SAFETY: the remaining fields (name, visibility callbacks, binary attributes) may be
    // null.
    ..unsafe { core::mem::zeroed() }
}));

static GROUPS: CStatic<[*const pci::attribute_group; 2]> =
    CStatic(UnsafeCell::new([GROUP.get().cast_const(), ptr::null()]));

/// The driver. The PCI core owns it between `__pci_register_driver` and
/// `pci_unregister_driver`.
static DRIVER: CStatic<pci::pci_driver> = CStatic(UnsafeCell::new(pci::pci_driver {
    name: DRIVER_NAME.as_ptr().cast(),
    id_table: ID_TABLE.as_ptr(),
    probe: Some(probe),
    remove: Some(remove),
    groups: GROUPS.get().cast(),
    // SAFETY: every other member (PM and SR-IOV callbacks, error handlers, the embedded
    // `device_driver` and dynamic-ID list that registration initialises) may start zeroed.
    ..unsafe { core::mem::zeroed() }
}));

/// What the sysfs attributes and probe/remove share.
struct Tables {
    /// Requests written to `ranges`, by device.
    requests: Table<Request>,
    /// What each bound device published.
    active: Table<Region>,
}

/// The tables of the loaded module: set before the driver is registered, cleared after it
/// is unregistered, so every callback sees it non-null.
static TABLES: AtomicPtr<Mutex<Tables>> = AtomicPtr::new(ptr::null_mut());

fn tables() -> Option<&'static Mutex<Tables>> {
    let p = TABLES.load(Ordering::Acquire);
    // SAFETY: a non-null `TABLES` points into the module's pinned `KBox`, which is freed
    // only after `pci_unregister_driver` returned, i.e. after the last callback that could
    // have loaded this pointer finished (unregistering removes the sysfs attributes, and
    // unbinds every device, waiting for active callbacks).
    unsafe { p.as_ref() }
}

pub(crate) struct P2pmemPci {
    tables: Pin<KBox<Mutex<Tables>>>,
}

impl kernel::Module for P2pmemPci {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let tables = KBox::pin_init(
            kernel::new_mutex!(
                Tables {
                    requests: Table::new(),
                    active: Table::new(),
                },
                "p2pmem_pci::tables"
            ),
            GFP_KERNEL,
        )?;
        TABLES.store(
            ptr::from_ref::<Mutex<Tables>>(&tables).cast_mut(),
            Ordering::Release,
        );
        // SAFETY: `DRIVER` is a valid `pci_driver` in writable static memory that stays
        // registered until `Drop` unregisters it; `module` is this module's `THIS_MODULE`
        // and the name is a NUL-terminated static string.
        let ret = unsafe {
            pci::__pci_register_driver(
                DRIVER.get(),
                module.as_ptr().cast(),
                DRIVER_NAME.as_ptr().cast(),
            )
        };
        if ret != 0 {
            TABLES.store(ptr::null_mut(), Ordering::Release);
            pr_err!("cannot register the PCI driver (error {})\n", ret);
            return Err(Error::from_errno(ret));
        }
        pr_info!(
            "registered: binds ivshmem (1af4:1110) by ID, other devices through driver_override; per-device BAR choice in /sys/bus/pci/drivers/p2pmem_pci/ranges\n"
        );
        Ok(P2pmemPci { tables })
    }
}

impl Drop for P2pmemPci {
    fn drop(&mut self) {
        // SAFETY: `init` registered `DRIVER` and returned success, so it is registered
        // exactly once; this unbinds every device (running `remove`) and removes the
        // driver's sysfs attributes before returning.
        unsafe { pci::pci_unregister_driver(DRIVER.get()) };
        TABLES.store(ptr::null_mut(), Ordering::Release);
        pr_info!(
            "unregistered ({} requests forgotten)\n",
            self.tables.lock().requests.iter().count()
        );
    }
}

/// `dev_info`/`dev_warn`/`dev_err` with Rust formatting (`%pA`).
#[derive(Clone, Copy)]
enum Level {
    Info,
    Warn,
    Err,
}

fn dev_print(pdev: *mut pci::pci_dev, level: Level, args: fmt::Arguments<'_>) {
    let print = match level {
        Level::Info => pci::_dev_info,
        Level::Warn => pci::_dev_warn,
        Level::Err => pci::_dev_err,
    };
    // SAFETY: `pdev` is the device of a running probe or remove, valid for the call; the
    // format is a NUL-terminated literal whose only conversion, `%pA`, takes a pointer to
    // a `fmt::Arguments` (formatted by the kernel's `rust_fmt_argument`), and `args`
    // outlives the call.
    unsafe {
        print(
            ptr::addr_of_mut!((*pdev).dev),
            c"%pA\n".as_ptr().cast(),
            ptr::from_ref(&args).cast::<c_void>(),
        )
    };
}

/// The device's name (`dddd:bb:dd.f`).
fn bdf_of(pdev: *mut pci::pci_dev) -> Option<Bdf> {
    // SAFETY: `pdev` is valid (probe/remove); a registered device's kobject name is a
    // NUL-terminated string that lives as long as the device.
    let name = unsafe {
        let raw = (*pdev).dev.kobj.name;
        if raw.is_null() {
            return None;
        }
        CStr::from_ptr(raw.cast())
    };
    Bdf::parse(name.to_bytes())
}

/// The six standard BARs as the PCI core assigned them.
fn bars_of(pdev: *mut pci::pci_dev) -> [Option<Bar>; NUM_BARS] {
    let mut bars = [None; NUM_BARS];
    for (i, slot) in bars.iter_mut().enumerate() {
        // SAFETY: `pdev` is valid and `resource` has `DEVICE_COUNT_RESOURCE` (> 6) entries;
        // resources of a device being probed are stable (assigned at enumeration).
        let (start, end, flags) = unsafe {
            let r = ptr::addr_of!((*pdev).resource[i]);
            ((*r).start, (*r).end, (*r).flags as u64)
        };
        let has = |bit: u32| flags & u64::from(bit) != 0;
        let kind = if has(pci::IORESOURCE_IO) {
            BarKind::Io
        } else if has(pci::IORESOURCE_MEM) {
            BarKind::Mem {
                prefetch: has(pci::IORESOURCE_PREFETCH),
            }
        } else {
            continue;
        };
        // `pci_resource_len`: 0 for an unimplemented BAR.
        let len = if end == 0 { 0 } else { end - start + 1 };
        if len == 0 {
            continue;
        }
        *slot = Some(Bar {
            kind,
            start,
            len,
            assigned: !has(pci::IORESOURCE_UNSET) && !has(pci::IORESOURCE_DISABLED),
        });
    }
    bars
}

unsafe extern "C" fn probe(pdev: *mut pci::pci_dev, _id: *const pci::pci_device_id) -> ffi::c_int {
    match do_probe(pdev) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

fn do_probe(pdev: *mut pci::pci_dev) -> Result {
    let tables = tables().ok_or(ENODEV)?;
    let Some(bdf) = bdf_of(pdev) else {
        dev_print(
            pdev,
            Level::Err,
            format_args!("refused: the device name is not a PCI address"),
        );
        return Err(EINVAL);
    };
    // SAFETY: `pdev` is the device being probed; the enable is device-managed (undone by
    // devres when the driver unbinds or this probe fails).
    let ret = unsafe { pci::pcim_enable_device(pdev) };
    if ret != 0 {
        dev_print(
            pdev,
            Level::Err,
            format_args!("refused: cannot enable the device (error {ret})"),
        );
        return Err(Error::from_errno(ret));
    }
    let request = tables.lock().requests.get(&bdf);
    let region = match choose_region(&bars_of(pdev), request.as_ref(), ZONE_DEVICE_ALIGN) {
        Ok(region) => region,
        Err(refusal) => {
            dev_print(pdev, Level::Err, format_args!("{refusal}"));
            return Err(if refusal.is_no_device() {
                ENODEV
            } else {
                EINVAL
            });
        }
    };
    let Ok(size) = usize::try_from(region.size) else {
        return Err(EINVAL);
    };
    let bar = ffi::c_int::from(region.bar);
    // SAFETY: `pdev` is bound to this driver (its probe is running), `bar` is a memory BAR
    // and `[offset, offset + size)` lies inside it (checked by `choose_region`). The pool,
    // pages and sysfs group it creates are device-managed.
    let ret = unsafe { pci::pci_p2pdma_add_resource(pdev, bar, size, region.offset) };
    if ret != 0 {
        dev_print(
            pdev,
            Level::Err,
            format_args!(
                "refused: pci_p2pdma_add_resource(BAR {}, size {:#x}, offset {:#x}) failed (error {ret})",
                region.bar, region.size, region.offset
            ),
        );
        return Err(Error::from_errno(ret));
    }
    // SAFETY: the device has P2PDMA memory now (added above).
    unsafe { pci::pci_p2pmem_publish(pdev, true) };
    if tables.lock().active.set(bdf, region).is_err() {
        dev_print(
            pdev,
            Level::Warn,
            format_args!("not listed in the driver's providers file (full)"),
        );
    }
    dev_print(
        pdev,
        Level::Info,
        format_args!(
            "published {} MiB of BAR {} ({}) as p2pmem: offset {:#x}, {:#x}-{:#x}",
            region.size >> 20,
            region.bar,
            if region.default_bar {
                "largest prefetchable BAR"
            } else {
                "chosen in ranges"
            },
            region.offset,
            region.start,
            region.start + (region.size - 1)
        ),
    );
    Ok(())
}

unsafe extern "C" fn remove(pdev: *mut pci::pci_dev) {
    // SAFETY: `remove` runs only for a device whose probe succeeded, so it has P2PDMA
    // memory; unpublishing first keeps in-kernel users from picking it while devres
    // tears it down.
    unsafe { pci::pci_p2pmem_publish(pdev, false) };
    if let (Some(tables), Some(bdf)) = (tables(), bdf_of(pdev)) {
        tables.lock().active.remove(&bdf);
    }
    dev_print(
        pdev,
        Level::Info,
        format_args!("unpublished; devres now removes p2pmem/ (unmapping user mappings of its allocate file) and disables the device"),
    );
}

/// The sysfs page of a `show` callback.
///
/// # Safety
///
/// `buf` must be the `PAGE_SIZE` buffer sysfs passes to `show`.
unsafe fn show_page<'a>(buf: *mut ffi::c_char) -> &'a mut [u8] {
    // SAFETY: guaranteed by the caller: sysfs hands `show` a zeroed, exclusively owned
    // page.
    unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), PAGE_SIZE) }
}

unsafe extern "C" fn ranges_show(_drv: *mut pci::device_driver, buf: *mut ffi::c_char) -> isize {
    let Some(tables) = tables() else {
        return ENODEV.to_errno() as isize;
    };
    // SAFETY: sysfs calls `show` with its page buffer.
    let mut w = PageWriter::new(unsafe { show_page(buf) });
    for (bdf, req) in tables.lock().requests.iter() {
        if writeln!(w, "{bdf} {req}").is_err() {
            break;
        }
    }
    w.len() as isize
}

unsafe extern "C" fn ranges_store(
    _drv: *mut pci::device_driver,
    buf: *const ffi::c_char,
    count: usize,
) -> isize {
    let Some(tables) = tables() else {
        return ENODEV.to_errno() as isize;
    };
    // SAFETY: sysfs passes `count` readable bytes (NUL-terminated beyond them) that stay
    // valid during the call.
    let input = unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), count) };
    let result = match parse_command(input) {
        Ok(Command::Set(bdf, req)) => tables.lock().requests.set(bdf, req).map_err(|_| ENOSPC),
        Ok(Command::Clear(bdf)) => {
            tables.lock().requests.remove(&bdf);
            Ok(())
        }
        Err(e) => {
            pr_warn!("ranges: {}\n", e);
            Err(EINVAL)
        }
    };
    match result {
        Ok(()) => isize::try_from(count).unwrap_or(isize::MAX),
        Err(e) => e.to_errno() as isize,
    }
}

unsafe extern "C" fn providers_show(_drv: *mut pci::device_driver, buf: *mut ffi::c_char) -> isize {
    let Some(tables) = tables() else {
        return ENODEV.to_errno() as isize;
    };
    // SAFETY: sysfs calls `show` with its page buffer.
    let mut w = PageWriter::new(unsafe { show_page(buf) });
    for (bdf, region) in tables.lock().active.iter() {
        if writeln!(w, "{bdf} {region}").is_err() {
            break;
        }
    }
    w.len() as isize
}
