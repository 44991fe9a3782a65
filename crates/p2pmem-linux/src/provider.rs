//! Publishing a device's memory BAR as p2pmem with the `p2pmem_pci` driver
//! (`driver/p2pmem_pci/`, a Rust kernel module): load the module, bind a PCI function to
//! it through sysfs, wait for `p2pmem/`, and undo it.
//!
//! Everything goes through sysfs below a root directory (`/` on a live system): the
//! device's `driver` link and `driver_override`, and the driver's `bind`, `unbind`,
//! `ranges` (the per-device BAR choice the driver reads at probe) and `providers` (what
//! each bound device published). Only loading the module is a system call
//! (`finit_module`, through rustix), and only on the live system.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use p2pmem_model::Bdf;
use rustix::io::Errno;

use crate::killpoint;
use crate::klog::{klog_texts, KernelLog};
use crate::rootfs::RootFs;
use crate::sys::io_error_label;

/// The driver's name, and its module's.
pub const DRIVER: &str = "p2pmem_pci";

/// The module file name.
pub const MODULE_FILE: &str = "p2pmem_pci.ko";

/// Vendor and device IDs the driver binds by itself (QEMU `ivshmem-plain`).
pub const ID_TABLE: &[(u16, u16)] = &[(0x1af4, 0x1110)];

/// How long [`bind`] and [`unbind`] wait for `p2pmem/` to appear or go.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// Which part of which BAR to publish; all `None` is the driver's default (the whole
/// largest prefetchable memory BAR).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegionRequest {
    /// BAR index 0-5.
    pub bar: Option<u8>,
    /// Offset into the BAR in bytes.
    pub offset: Option<u64>,
    /// Bytes from the offset (default: to the end of the BAR).
    pub size: Option<u64>,
}

impl RegionRequest {
    /// No choice: the driver's default.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The line written to the driver's `ranges` attribute: `BDF bar=N offset=X size=Y`,
    /// or `BDF` alone, which clears an earlier choice.
    pub fn ranges_line(&self, bdf: Bdf) -> String {
        let mut line = bdf.to_string();
        if let Some(bar) = self.bar {
            line.push_str(&format!(" bar={bar}"));
        }
        if let Some(offset) = self.offset {
            line.push_str(&format!(" offset={offset:#x}"));
        }
        if let Some(size) = self.size {
            line.push_str(&format!(" size={size:#x}"));
        }
        line.push('\n');
        line
    }
}

pub use p2pmem_wire::bind::{ActiveRegion, BindAction};

/// Parses the driver's `providers` file (`BDF bar=N offset=X size=Y start=A bar_len=L`
/// per line, numbers in `0x` hex or decimal). Lines that do not parse are skipped.
pub fn parse_providers(text: &str) -> Vec<ActiveRegion> {
    text.lines().filter_map(parse_provider_line).collect()
}

fn parse_provider_line(line: &str) -> Option<ActiveRegion> {
    let mut words = line.split_whitespace();
    let bdf: Bdf = words.next()?.parse().ok()?;
    let (mut bar, mut offset, mut size, mut start, mut bar_len) = (None, None, None, None, None);
    for w in words {
        let (k, v) = w.split_once('=')?;
        let n = parse_number(v)?;
        match k {
            "bar" => bar = u8::try_from(n).ok(),
            "offset" => offset = Some(n),
            "size" => size = Some(n),
            "start" => start = Some(n),
            "bar_len" => bar_len = Some(n),
            _ => {}
        }
    }
    Some(ActiveRegion {
        bdf,
        bar: bar?,
        offset: offset?,
        size: size?,
        start: start?,
        bar_len: bar_len?,
    })
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// What went wrong, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No such PCI function.
    #[error("no PCI function {bdf} ({} does not exist)", path.display())]
    NoDevice {
        /// The function.
        bdf: Bdf,
        /// The sysfs directory looked for.
        path: PathBuf,
    },
    /// The function is bound to another driver.
    #[error("{bdf} is bound to the {driver} driver, not {DRIVER}; unbind it first (echo {bdf} > /sys/bus/pci/drivers/{driver}/unbind)")]
    OtherDriver {
        /// The function.
        bdf: Bdf,
        /// Its driver.
        driver: String,
    },
    /// `unbind` on a function that is not bound to the driver.
    #[error("{bdf} is not bound to {DRIVER}{}", match driver { Some(d) => format!(" (its driver is {d})"), None => " (it has no driver)".to_string() })]
    NotOurs {
        /// The function.
        bdf: Bdf,
        /// Its driver, if any.
        driver: Option<String>,
    },
    /// The module is not loaded and its file was not found.
    #[error("the {DRIVER} module is not loaded and {MODULE_FILE} was not found (looked for {}); build it with `p2pmem lab kernel` (lab guests have it in /lib/modules) or pass --module PATH", list(searched))]
    ModuleNotFound {
        /// Where it was looked for.
        searched: Vec<PathBuf>,
    },
    /// Loading a module needs the live system.
    #[error("the {DRIVER} module is not loaded, and a module can only be loaded into the running kernel (--root is {})", root.display())]
    NotLive {
        /// The root in use.
        root: PathBuf,
    },
    /// `finit_module` failed.
    #[error("the kernel refused to load {} ({errno}): {hint}", path.display())]
    Load {
        /// The module file.
        path: PathBuf,
        /// The errno name.
        errno: String,
        /// What it usually means.
        hint: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The driver did not show up after the module loaded.
    #[error("{} did not appear after loading {}", path.display(), module.display())]
    NoDriver {
        /// `sys/bus/pci/drivers/p2pmem_pci`.
        path: PathBuf,
        /// The module file.
        module: PathBuf,
    },
    /// A sysfs write failed (other than the bind itself).
    #[error("cannot write {what:?} to {} ({errno})", path.display())]
    Write {
        /// What was written.
        what: String,
        /// The file.
        path: PathBuf,
        /// The errno name.
        errno: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the bind: the driver's probe failed.
    #[error(
        "the kernel refused to bind {bdf} to {DRIVER} ({errno}){}{}",
        if *was_bound { "; it had been unbound to apply the new region and now has no driver" } else { "" },
        lines(kernel_log)
    )]
    Refused {
        /// The function.
        bdf: Bdf,
        /// It was bound to the driver (with another region) and was unbound first.
        was_bound: bool,
        /// The errno name of the failed `bind` write.
        errno: String,
        /// The kernel's messages about it (the driver says why).
        kernel_log: Vec<String>,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// `p2pmem/` did not appear or go in time.
    #[error("{} did not {} within {} s", path.display(), if *appear { "appear" } else { "go away" }, wait.as_secs())]
    Timeout {
        /// The `p2pmem` directory.
        path: PathBuf,
        /// Waiting for it to appear (else to go).
        appear: bool,
        /// How long it waited.
        wait: Duration,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn lines(log: &[String]) -> String {
    log.iter().map(|l| format!("\n  kernel: {l}")).collect()
}

/// The driver a function is bound to (the `driver` link's target name), if any.
pub fn bound_driver(root: &Path, bdf: Bdf) -> Result<Option<String>, ProviderError> {
    let dev = device_dir(root, bdf);
    if !dev.is_dir() {
        return Err(ProviderError::NoDevice { bdf, path: dev });
    }
    Ok(std::fs::read_link(dev.join("driver"))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned())))
}

fn device_dir(root: &Path, bdf: Bdf) -> PathBuf {
    RootFs::new(root).path(format!("sys/bus/pci/devices/{bdf}"))
}

fn driver_dir(root: &Path) -> PathBuf {
    RootFs::new(root).path(format!("sys/bus/pci/drivers/{DRIVER}"))
}

/// `sys/bus/pci/devices/<BDF>/p2pmem` below `root`.
pub fn p2pmem_dir(root: &Path, bdf: Bdf) -> PathBuf {
    device_dir(root, bdf).join("p2pmem")
}

/// Whether the driver is registered (its module is loaded).
pub fn driver_loaded(root: &Path) -> bool {
    driver_dir(root).is_dir()
}

/// What each bound device published, from the driver's `providers` file (empty when
/// the driver is not loaded).
pub fn active_regions(root: &Path) -> Vec<ActiveRegion> {
    crate::bounded::read_regular(
        &driver_dir(root).join("providers"),
        p2pmem_model::limits::SYSFS_ATTR,
    )
    .map(|t| parse_providers(&String::from_utf8_lossy(&t)))
    .unwrap_or_default()
}

/// The module file to load: `explicit` when given, else the first of
/// `lib/modules/<release>/{extra,updates}/p2pmem_pci.ko` and `lib/modules/p2pmem_pci.ko`
/// below `root` that exists.
pub fn find_module(
    root: &Path,
    release: Option<&str>,
    explicit: Option<&Path>,
) -> Result<PathBuf, ProviderError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(ProviderError::ModuleNotFound {
                searched: vec![p.to_path_buf()],
            })
        };
    }
    let fs = RootFs::new(root);
    let mut searched = Vec::new();
    if let Some(r) = release {
        for sub in ["extra", "updates"] {
            searched.push(fs.path(format!("lib/modules/{r}/{sub}/{MODULE_FILE}")));
        }
    }
    searched.push(fs.path(format!("lib/modules/{MODULE_FILE}")));
    match searched.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(ProviderError::ModuleNotFound { searched }),
    }
}

/// Loads a module file into the running kernel (`finit_module`). Already loaded
/// (`EEXIST`) counts as success.
pub fn load_module(path: &Path) -> Result<(), ProviderError> {
    let fail = |source: io::Error| {
        let errno = source.raw_os_error().map(Errno::from_raw_os_error);
        let hint = match errno {
            Some(Errno::PERM) => "loading modules needs root (CAP_SYS_MODULE), and module loading must not be disabled (kernel.modules_disabled)",
            Some(Errno::NOEXEC) => "not a valid module for this kernel: it was built against another kernel build (vermagic) or is not a module at all",
            Some(Errno::NOENT) => "the module needs symbols this kernel does not export (see the kernel log: Unknown symbol); it was built against another kernel",
            Some(Errno::KEYREJECTED | Errno::BADMSG) => "module signature verification failed",
            Some(Errno::NOSYS) => "this kernel has no module support (CONFIG_MODULES)",
            _ => "see the kernel log (dmesg) for the reason",
        };
        ProviderError::Load {
            path: path.to_path_buf(),
            errno: io_error_label(&source),
            hint,
            source,
        }
    };
    let file = File::open(path).map_err(fail)?;
    match rustix::system::finit_module(&file, c"", 0) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(fail(io::Error::from(e))),
    }
}

fn write(path: &Path, what: &str) -> Result<(), ProviderError> {
    std::fs::write(path, what).map_err(|source| ProviderError::Write {
        what: what.trim_end().to_string(),
        path: path.to_path_buf(),
        errno: io_error_label(&source),
        source,
    })
}

/// Waits until `p2pmem/` of `bdf` exists (`appear`) or is gone.
pub fn wait_p2pmem(
    root: &Path,
    bdf: Bdf,
    appear: bool,
    wait: Duration,
) -> Result<(), ProviderError> {
    let path = p2pmem_dir(root, bdf);
    let start = Instant::now();
    loop {
        if path.is_dir() == appear {
            return Ok(());
        }
        if start.elapsed() >= wait {
            return Err(ProviderError::Timeout { path, appear, wait });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How a bind went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindOutcome {
    /// The module file loaded by this call, if it loaded one.
    pub loaded: Option<PathBuf>,
    /// What was done.
    pub action: BindAction,
    /// What the device published, from the driver's `providers` file.
    pub region: Option<ActiveRegion>,
}

/// Options of [`bind`].
#[derive(Debug, Clone, Default)]
pub struct BindOptions {
    /// The region to publish.
    pub region: RegionRequest,
    /// The module file, instead of searching for it.
    pub module: Option<PathBuf>,
    /// `uname -r`, for the module search.
    pub release: Option<String>,
    /// How long to wait for `p2pmem/` (default [`DEFAULT_WAIT`]).
    pub wait: Option<Duration>,
}

/// Binds `bdf` to `p2pmem_pci` so that it publishes `opts.region`: loads the module if
/// the driver is not registered, refuses a device bound to another driver, writes the
/// region to `ranges`, sets `driver_override` (so any device can bind), writes `bind`,
/// and waits for `p2pmem/`. On a refused bind the override is cleared again and the
/// kernel's messages since the attempt are in the error. A device already bound to the
/// driver is left alone when no region is asked for, else unbound and bound again.
pub fn bind(
    root: &Path,
    bdf: Bdf,
    opts: &BindOptions,
    klog: &mut dyn KernelLog,
) -> Result<BindOutcome, ProviderError> {
    let wait = opts.wait.unwrap_or(DEFAULT_WAIT);
    if let Some(driver) = bound_driver(root, bdf)? {
        if driver != DRIVER {
            return Err(ProviderError::OtherDriver { bdf, driver });
        }
    }
    let mut loaded = None;
    if !driver_loaded(root) {
        if root != Path::new("/") {
            return Err(ProviderError::NotLive {
                root: root.to_path_buf(),
            });
        }
        let module = find_module(root, opts.release.as_deref(), opts.module.as_deref())?;
        load_module(&module)?;
        if !driver_loaded(root) {
            return Err(ProviderError::NoDriver {
                path: driver_dir(root),
                module,
            });
        }
        loaded = Some(module);
    }
    // Loading the module binds the devices of its ID table; this one may be among them.
    let mut action = BindAction::Bound;
    if bound_driver(root, bdf)?.as_deref() == Some(DRIVER) {
        if opts.region.is_default() && p2pmem_dir(root, bdf).is_dir() {
            return Ok(BindOutcome {
                loaded,
                action: BindAction::AlreadyBound,
                region: region_of(root, bdf),
            });
        }
        write(&driver_dir(root).join("unbind"), &format!("{bdf}\n"))?;
        wait_p2pmem(root, bdf, false, wait)?;
        action = BindAction::Rebound;
    }
    let driver = driver_dir(root);
    write(&driver.join("ranges"), &opts.region.ranges_line(bdf))?;
    killpoint::pass(killpoint::PROVIDER_BIND);
    let override_path = device_dir(root, bdf).join("driver_override");
    write(&override_path, &format!("{DRIVER}\n"))?;
    killpoint::pass(killpoint::PROVIDER_BIND);
    let before = klog.read_all().map(|b| klog_texts(&b).len()).ok();
    let bound = std::fs::write(driver.join("bind"), format!("{bdf}\n"));
    killpoint::pass(killpoint::PROVIDER_BIND);
    if let Err(source) = bound {
        // Leave the device as it was: bindable by any driver again.
        let _ = std::fs::write(&override_path, "\n");
        let kernel_log = before
            .and_then(|n| klog.read_all().ok().map(|b| (n, b)))
            .map(|(n, b)| {
                let name = bdf.to_string();
                klog_texts(&b)
                    .into_iter()
                    .skip(n)
                    .filter(|l| l.contains(&name))
                    .collect()
            })
            .unwrap_or_default();
        return Err(ProviderError::Refused {
            bdf,
            was_bound: action == BindAction::Rebound,
            errno: io_error_label(&source),
            kernel_log,
            source,
        });
    }
    wait_p2pmem(root, bdf, true, wait)?;
    Ok(BindOutcome {
        loaded,
        action,
        region: region_of(root, bdf),
    })
}

fn region_of(root: &Path, bdf: Bdf) -> Option<ActiveRegion> {
    active_regions(root).into_iter().find(|r| r.bdf == bdf)
}

/// Unbinds `bdf` from `p2pmem_pci`: the driver unpublishes, devres removes `p2pmem/`
/// (which unmaps user mappings of its `allocate` file). Also clears the device's
/// `driver_override` and its `ranges` entry, so it is as before `bind`. Returns what it
/// had published.
pub fn unbind(root: &Path, bdf: Bdf, wait: Option<Duration>) -> Result<Unbound, ProviderError> {
    let driver = bound_driver(root, bdf)?;
    let dir = driver_dir(root);
    if driver.is_none() && left_behind(root, bdf) {
        // A `provider bind` stopped before `bind` (killed): undo what it wrote, so any
        // driver can bind the device again and its `ranges` slot is free.
        if override_is_ours(root, bdf) {
            write(&device_dir(root, bdf).join("driver_override"), "\n")?;
        }
        if dir.is_dir() {
            write(&dir.join("ranges"), &format!("{bdf}\n"))?;
        }
        return Ok(Unbound::HalfBound);
    }
    if driver.as_deref() != Some(DRIVER) {
        return Err(ProviderError::NotOurs { bdf, driver });
    }
    let region = region_of(root, bdf);
    write(&dir.join("unbind"), &format!("{bdf}\n"))?;
    wait_p2pmem(root, bdf, false, wait.unwrap_or(DEFAULT_WAIT))?;
    write(&device_dir(root, bdf).join("driver_override"), "\n")?;
    write(&dir.join("ranges"), &format!("{bdf}\n"))?;
    Ok(Unbound::Unbound(region))
}

/// What [`unbind`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unbound {
    /// The device was bound and is no longer; what it had published, when known.
    Unbound(Option<ActiveRegion>),
    /// The device was not bound but its `driver_override` named the driver: a `bind`
    /// interrupted before its last write. The override (and ranges entry) are cleared.
    HalfBound,
}

/// Whether `bdf` is not bound to [`DRIVER`] but a `provider bind` left something of
/// its own behind: `driver_override` naming the driver (killed between its override and
/// `bind` writes), or only an entry in the driver's `ranges` (killed before the
/// override; the table holds 16 devices, so stale entries would fill it). `bind` again,
/// or `unbind`, finishes or undoes it.
pub fn half_bound(root: &Path, bdf: Bdf) -> bool {
    bound_driver(root, bdf).ok().flatten().as_deref() != Some(DRIVER) && left_behind(root, bdf)
}

/// What a killed `provider bind` writes before `bind`: the override or a `ranges` entry
/// (the caller knows the device is not bound to the driver).
fn left_behind(root: &Path, bdf: Bdf) -> bool {
    override_is_ours(root, bdf) || has_ranges_entry(root, bdf)
}

/// A sysfs attribute's text, read with its bound.
fn attr_text(path: &Path) -> Option<String> {
    crate::bounded::read_file(path, p2pmem_model::limits::SYSFS_ATTR)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn override_is_ours(root: &Path, bdf: Bdf) -> bool {
    attr_text(&device_dir(root, bdf).join("driver_override")).is_some_and(|o| o.trim() == DRIVER)
}

/// Whether the driver's `ranges` holds a choice for `bdf` (`BDF bar=.. offset=..`;
/// writing the bare address removes it).
fn has_ranges_entry(root: &Path, bdf: Bdf) -> bool {
    let name = bdf.to_string();
    attr_text(&driver_dir(root).join("ranges")).is_some_and(|t| {
        t.lines()
            .any(|l| l.split_once(' ').is_some_and(|(b, _)| b == name))
    })
}

#[cfg(test)]
mod tests;
