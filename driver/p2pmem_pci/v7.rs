// SPDX-License-Identifier: GPL-2.0

//! The glue for Linux 7.x (written for 7.3). The kernel crate's PCI driver abstractions
//! run the driver: [`P2pmemDriver`] implements `kernel::pci::Driver` (ID table, probe,
//! unbind), a `driver::Registration` registers it from the module's `init` and
//! unregisters it when the module goes, and probe reads the device through `pci::Device`
//! (its name, its BARs' addresses and lengths). Bindings do what those abstractions do
//! not cover:
//!
//! * P2PDMA (`pci_p2pdma_add_resource`, `pci_p2pmem_publish`): the kernel crate has no
//!   wrapper for it;
//! * the device-managed enable (`pcim_enable_device`): `pci::Device::enable_device_mem`
//!   enables memory decoding only and is not undone when the driver unbinds;
//! * the BARs' resource flags (I/O or memory, prefetchable, unassigned);
//! * the driver's sysfs attributes (`ranges`, `providers`): `driver::Registration` takes
//!   none, so [`Ops`] wraps `pci::Adapter`'s registration and adds them to the registered
//!   driver with `driver_create_file`.
//!
//! 7.3 made `pci_has_p2pmem` static; the driver needs no such query: it knows what it
//! published (the `active` table behind `providers`).

use core::cell::UnsafeCell;
use core::fmt::Write;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use kernel::bindings;
use kernel::device::{self, Core};
use kernel::driver::{self, DriverLayout, RegistrationOps};
use kernel::ffi;
use kernel::page::PAGE_SIZE;
use kernel::pci;
use kernel::prelude::*;
use kernel::sync::Mutex;
use kernel::types::Opaque;

use crate::logic::{choose_region, parse_command, Bar, BarKind, Bdf, Command, PageWriter, Region};
use crate::logic::{Request, Table, NUM_BARS};
use crate::pci as raw;

const DRIVER_NAME: &CStr = c"p2pmem_pci";

/// Device ID of QEMU's `ivshmem-plain` (vendor 1af4, Red Hat/Qumranet): a RAM-backed
/// prefetchable BAR 2.
const IVSHMEM_DEVICE: u32 = 0x1110;

/// The ZONE_DEVICE unit: `memremap_pages` maps whole subsections.
const ZONE_DEVICE_ALIGN: u64 = 1 << raw::SUBSECTION_SHIFT;

kernel::pci_device_table!(
    IVSHMEM_TABLE,
    <P2pmemDriver as pci::Driver>::IdInfo,
    [(
        pci::DeviceId::from_id(pci::Vendor::REDHAT_QUMRANET, IVSHMEM_DEVICE),
        ()
    )]
);

/// The PCI driver.
pub(crate) struct P2pmemDriver;

/// A bound device's driver data: what it published, to forget when it goes.
pub(crate) struct Provider {
    bdf: Bdf,
}

impl pci::Driver for P2pmemDriver {
    type IdInfo = ();
    type Data<'bound> = Provider;

    const ID_TABLE: pci::IdTable<Self::IdInfo> = &IVSHMEM_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _id_info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        probe(pdev)
    }

    fn unbind<'bound>(pdev: &'bound pci::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        // SAFETY: the device is bound to this driver and its probe succeeded, so it has
        // P2PDMA memory; unpublishing first keeps in-kernel users from picking it while
        // devres tears it down (after this callback and the driver data's drop).
        unsafe { raw::pci_p2pmem_publish(raw_dev(pdev), false) };
        if let Some(tables) = tables() {
            tables.lock().active.remove(&this.bdf);
        }
        dev_of(pdev).pr_info(format_args!(
            "unpublished; devres now removes p2pmem/ (unmapping user mappings of its allocate file) and disables the device\n"
        ));
    }
}

/// The device's `struct pci_dev`, as the driver's own bindings declare it.
fn raw_dev(pdev: &pci::Device<Core<'_>>) -> *mut raw::pci_dev {
    // `pci::Device` is `#[repr(transparent)]` over `Opaque<bindings::pci_dev>`, itself
    // transparent over the C structure: the reference is the C pointer.
    ptr::from_ref(pdev).cast::<raw::pci_dev>().cast_mut()
}

/// The generic device, for printing and its name.
fn dev_of<'a, 'b>(pdev: &'a pci::Device<Core<'b>>) -> &'a device::Device<Core<'b>> {
    pdev.as_ref()
}

/// The six standard BARs as the PCI core assigned them: addresses and lengths from
/// `pci::Device`, the resource flags from the C structure.
fn bars_of(pdev: &pci::Device<Core<'_>>) -> [Option<Bar>; NUM_BARS] {
    let c = raw_dev(pdev);
    let mut bars = [None; NUM_BARS];
    for (i, slot) in bars.iter_mut().enumerate() {
        // `pci_resource_len`: 0 for an unimplemented BAR.
        let (Ok(start), Ok(len)) = (pdev.resource_start(i as u32), pdev.resource_len(i as u32))
        else {
            continue;
        };
        if len == 0 {
            continue;
        }
        // SAFETY: `c` is the device being probed (valid); `resource` has more than six
        // entries, and a probed device's resources are stable (assigned at enumeration).
        let flags = unsafe { (*ptr::addr_of!((*c).resource[i])).flags } as u64;
        let has = |bit: u32| flags & u64::from(bit) != 0;
        let kind = if has(raw::IORESOURCE_IO) {
            BarKind::Io
        } else if has(raw::IORESOURCE_MEM) {
            BarKind::Mem {
                prefetch: has(raw::IORESOURCE_PREFETCH),
            }
        } else {
            continue;
        };
        *slot = Some(Bar {
            kind,
            start,
            len,
            assigned: !has(raw::IORESOURCE_UNSET) && !has(raw::IORESOURCE_DISABLED),
        });
    }
    bars
}

fn probe(pdev: &pci::Device<Core<'_>>) -> Result<Provider> {
    let dev = dev_of(pdev);
    let tables = tables().ok_or(ENODEV)?;
    let Some(bdf) = Bdf::parse(dev.name().to_bytes()) else {
        dev.pr_err(format_args!(
            "refused: the device name is not a PCI address\n"
        ));
        return Err(EINVAL);
    };
    let c = raw_dev(pdev);
    // SAFETY: `c` is the device being probed; the enable is device-managed (undone by
    // devres when the driver unbinds or this probe fails).
    let ret = unsafe { bindings::pcim_enable_device(c.cast()) };
    if ret != 0 {
        dev.pr_err(format_args!(
            "refused: cannot enable the device (error {ret})\n"
        ));
        return Err(Error::from_errno(ret));
    }
    let request = tables.lock().requests.get(&bdf);
    let region = match choose_region(&bars_of(pdev), request.as_ref(), ZONE_DEVICE_ALIGN) {
        Ok(region) => region,
        Err(refusal) => {
            dev.pr_err(format_args!("{refusal}\n"));
            return Err(if refusal.is_no_device() {
                ENODEV
            } else {
                EINVAL
            });
        }
    };
    let size = usize::try_from(region.size).map_err(|_| EINVAL)?;
    let bar = ffi::c_int::from(region.bar);
    // SAFETY: the device is being probed by this driver, `bar` is a memory BAR and
    // `[offset, offset + size)` lies inside it (checked by `choose_region`). The pool,
    // pages and sysfs group it creates are device-managed.
    let ret = unsafe { raw::pci_p2pdma_add_resource(c, bar, size, region.offset) };
    if ret != 0 {
        dev.pr_err(format_args!(
            "refused: pci_p2pdma_add_resource(BAR {}, size {:#x}, offset {:#x}) failed (error {ret})\n",
            region.bar, region.size, region.offset
        ));
        return Err(Error::from_errno(ret));
    }
    // SAFETY: the device has P2PDMA memory now (added above).
    unsafe { raw::pci_p2pmem_publish(c, true) };
    if tables.lock().active.set(bdf, region).is_err() {
        dev.pr_warn(format_args!(
            "not listed in the driver's providers file (full)\n"
        ));
    }
    dev.pr_info(format_args!(
        "published {} MiB of BAR {} ({}) as p2pmem: offset {:#x}, {:#x}-{:#x}\n",
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
    ));
    Ok(Provider { bdf })
}

/// A C structure the driver core reads and writes while the driver is registered.
///
/// It lives in a `static` (writable `.data`, as `sysfs` lockdep keys for static
/// attributes require) and is reached only through raw pointers.
struct CStatic<T>(UnsafeCell<T>);

// SAFETY: Rust code touches the contents only through raw pointers handed to the C side
// (sysfs), which serialises its own accesses; no `&T` is ever formed.
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
static RANGES_ATTR: CStatic<bindings::driver_attribute> =
    CStatic(UnsafeCell::new(bindings::driver_attribute {
        attr: bindings::attribute {
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
static PROVIDERS_ATTR: CStatic<bindings::driver_attribute> =
    CStatic(UnsafeCell::new(bindings::driver_attribute {
        attr: bindings::attribute {
            name: c"providers".as_ptr().cast(),
            mode: 0o444,
            // SAFETY: as for `RANGES_ATTR`.
            ..unsafe { core::mem::zeroed() }
        },
        show: Some(providers_show),
        store: None,
    }));

/// The driver's attributes, created in this order once it is registered.
static ATTRS: [&CStatic<bindings::driver_attribute>; 2] = [&RANGES_ATTR, &PROVIDERS_ATTR];

type Adapter = pci::Adapter<P2pmemDriver>;

/// `pci::Adapter`'s registration of [`P2pmemDriver`], plus the driver's attributes.
pub(crate) struct Ops;

// SAFETY: the layout is `pci::Adapter`'s own (same driver structure, driver data and
// offset of the embedded `device_driver`), and registration goes through it.
unsafe impl DriverLayout for Ops {
    type DriverType = bindings::pci_driver;
    type DriverData<'bound> = <Adapter as DriverLayout>::DriverData<'bound>;
    const DEVICE_DRIVER_OFFSET: usize = <Adapter as DriverLayout>::DEVICE_DRIVER_OFFSET;
}

/// The embedded `device_driver` of the driver structure.
fn device_driver(pdrv: &Opaque<bindings::pci_driver>) -> *const bindings::device_driver {
    // SAFETY: `pdrv` points to a valid `pci_driver`; only the field's address is taken.
    unsafe { ptr::addr_of!((*pdrv.get()).driver) }
}

// SAFETY: `register` registers through `pci::Adapter` and returns success only with the
// driver registered (and its attributes created); `unregister`, valid after a successful
// `register`, removes the attributes and unregisters through `pci::Adapter`.
unsafe impl RegistrationOps for Ops {
    unsafe fn register(
        pdrv: &Opaque<Self::DriverType>,
        name: &'static CStr,
        module: &'static ThisModule,
    ) -> Result {
        // SAFETY: forwarded from our caller (`driver::Registration`).
        unsafe { <Adapter as RegistrationOps>::register(pdrv, name, module) }?;
        let drv = device_driver(pdrv);
        for (i, attr) in ATTRS.iter().enumerate() {
            // SAFETY: the driver is registered (above); the attribute is static and stays
            // until `unregister` (or the error path below) removes it.
            let ret = unsafe { bindings::driver_create_file(drv, attr.get()) };
            if ret != 0 {
                for done in &ATTRS[..i] {
                    // SAFETY: created above on this registered driver.
                    unsafe { bindings::driver_remove_file(drv, done.get()) };
                }
                // SAFETY: registered above, and not unregistered since.
                unsafe { <Adapter as RegistrationOps>::unregister(pdrv) };
                return Err(Error::from_errno(ret));
            }
        }
        Ok(())
    }

    unsafe fn unregister(pdrv: &Opaque<Self::DriverType>) {
        let drv = device_driver(pdrv);
        for attr in ATTRS.iter() {
            // SAFETY: `register` succeeded, so the driver is registered with every
            // attribute; removing one waits for its running `show`/`store` calls.
            unsafe { bindings::driver_remove_file(drv, attr.get()) };
        }
        // SAFETY: `register` succeeded (the caller's guarantee); this unbinds every device.
        unsafe { <Adapter as RegistrationOps>::unregister(pdrv) };
    }
}

/// What the sysfs attributes and probe/unbind share.
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
    // only after the driver was unregistered, i.e. after the last callback that could
    // have loaded this pointer finished (unregistering removes the sysfs attributes, and
    // unbinds every device, waiting for active callbacks).
    unsafe { p.as_ref() }
}

/// The module: the tables, and the driver's registration while it is loaded.
pub(crate) struct P2pmemPci {
    driver: Option<Pin<KBox<driver::Registration<Ops>>>>,
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
        let driver = match KBox::pin_init(
            driver::Registration::<Ops>::new(DRIVER_NAME, module),
            GFP_KERNEL,
        ) {
            Ok(driver) => driver,
            Err(e) => {
                TABLES.store(ptr::null_mut(), Ordering::Release);
                pr_err!("cannot register the PCI driver (error {})\n", e.to_errno());
                return Err(e);
            }
        };
        pr_info!(
            "registered: binds ivshmem (1af4:1110) by ID, other devices through driver_override; per-device BAR choice in /sys/bus/pci/drivers/p2pmem_pci/ranges\n"
        );
        Ok(P2pmemPci {
            driver: Some(driver),
            tables,
        })
    }
}

impl Drop for P2pmemPci {
    fn drop(&mut self) {
        // Unregisters: removes the attributes and unbinds every device (running `unbind`)
        // before returning.
        drop(self.driver.take());
        TABLES.store(ptr::null_mut(), Ordering::Release);
        pr_info!(
            "unregistered ({} requests forgotten)\n",
            self.tables.lock().requests.iter().count()
        );
    }
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

unsafe extern "C" fn ranges_show(
    _drv: *mut bindings::device_driver,
    buf: *mut ffi::c_char,
) -> isize {
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
    _drv: *mut bindings::device_driver,
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
            pr_warn!("{}", format_args!("ranges: {e}\n"));
            Err(EINVAL)
        }
    };
    match result {
        Ok(()) => isize::try_from(count).unwrap_or(isize::MAX),
        Err(e) => e.to_errno() as isize,
    }
}

unsafe extern "C" fn providers_show(
    _drv: *mut bindings::device_driver,
    buf: *mut ffi::c_char,
) -> isize {
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
