//! The boot parameters that change P2PDMA, read the way the kernel reads them, and the
//! ACS Control value `pci_enable_acs()` leaves on each port.
//!
//! `pci=` is handed to `pci_setup()`, which splits its value at **commas** before looking
//! at any option: in `pci=disable_acs_redir=A,B` the option is `disable_acs_redir=A` and
//! `B` is an unknown option (``PCI: Unknown option `B'``); lists inside an option must use
//! `;`. Each `pci=` occurrence is processed in turn, so a later `disable_acs_redir=` (or
//! `config_acs=`) replaces an earlier one. At enumeration, for each device with an ACS
//! capability, `pci_enable_acs()` starts from the firmware value, adds SV, RR, CR, UF (as
//! far as the device implements them) when an IOMMU asked for ACS, then applies
//! `disable_acs_redir` (RR, CR, EC off) and `config_acs` (`<flags>@<device>`), each with
//! `__pci_config_acs()`: entries are walked in order, the first that matches the device
//! wins, a malformed entry ends the walk. From 6.11 both rebuild the value from the
//! firmware value for the bits they set (`(fw & !mask) | (flags & mask)`); before, the
//! redirect disable only cleared RR, CR and EC. Read from `drivers/pci/pci.c`
//! (`pci_setup`, `pci_dev_str_match`, `__pci_config_acs`, `pci_enable_acs`).

use crate::acs::AcsFlags;
use crate::bdf::Bdf;
use crate::kernel_version::{KernelVersion, VersionRange};
use serde::{Deserialize, Serialize};

/// `pci=config_acs=` and the firmware-based ACS arithmetic (47c8846a49ba, "PCI: Extend
/// ACS configurability"): merged for 6.11 (bound from the merge window, not booted
/// before 6.12).
pub const CONFIG_ACS: VersionRange = VersionRange::since(6, 11);

/// When `pci_enable_acs()` writes a device's ACS Control. Before this range: once, at
/// enumeration (`pci_acs_init()`), for every device with ACS (booted: 6.1.192,
/// 6.12.118). In it: from `pci_dma_configure()`, that is when a driver binds the device or
/// an IOMMU probes it (`iommu_init_device()` runs `dma_configure` for a device with no
/// driver), and from `pci_restore_state()`; a port that no driver binds, with no IOMMU,
/// keeps its firmware value (read in Debian's 7.2.13 and 7.3.4 trees, booted both,
/// `pcie_ports=compat` proven on 7.3.4 in the lab). The first release is not verified:
/// between 6.13 and 7.2, 7.0 assumed.
pub const ACS_AT_DMA_CONFIGURE: VersionRange = VersionRange::since(7, 0);

/// Whether `pci_enable_acs()` runs for a device on `kernel`: always before
/// [`ACS_AT_DMA_CONFIGURE`]; from it, when an IOMMU is active or a driver is bound.
pub fn acs_setup_runs(kernel: KernelVersion, iommu: bool, driver_bound: bool) -> bool {
    !ACS_AT_DMA_CONFIGURE.contains(kernel) || iommu || driver_bound
}

/// The PCIe port driver: `pcie_ports=compat` keeps it from registering at all
/// (`pcie_portdrv_init()` returns `-EACCES`), so no port has a driver.
pub const PORT_DRIVER: &str = "pcieport";

/// The bits `pci_std_enable_acs()` turns on when an IOMMU asked for ACS (TB only without
/// ATS or on external ports, which this model does not see: left as the firmware had it).
pub const IOMMU_ACS_BITS: u16 = AcsFlags::SV | AcsFlags::RR | AcsFlags::CR | AcsFlags::UF;

/// The bits `disable_acs_redir` clears.
pub const REDIR_BITS: u16 = AcsFlags::RR | AcsFlags::CR | AcsFlags::EC;

/// The seven bits ACS Control defines; a `config_acs` flag beyond them is refused.
const ACS_CTRL_BITS: u16 = 0x7f;

/// `pci=` options `pci_setup()` (generic and x86 `pcibios_setup()`) knows, as prefixes
/// (`=` ends those that take a value). Anything else is reported as unknown.
const KNOWN_PCI_OPTIONS: &[&str] = &[
    // drivers/pci/pci.c
    "nomsi",
    "noaer",
    "earlydump",
    "realloc=",
    "realloc",
    "nodomains",
    "noari",
    "notph",
    "cbiosize=",
    "cbmemsize=",
    "resource_alignment=",
    "ecrc=",
    "hpiosize=",
    "hpmmiosize=",
    "hpmmioprefsize=",
    "hpmemsize=",
    "hpbussize=",
    "pcie_bus_tune_off",
    "pcie_bus_safe",
    "pcie_bus_perf",
    "pcie_bus_peer2peer",
    "pcie_scan_all",
    "disable_acs_redir=",
    "config_acs=",
    "force_floating",
    // arch/x86/pci/common.c
    "off",
    "bios",
    "nobios",
    "conf1",
    "conf2",
    "nommconf",
    "mmconf",
    "noacpi",
    "noearly",
    "usepirqmask",
    "irqmask=",
    "pirqaddr=",
    "lastbus=",
    "assign-busses",
    "use_crs",
    "nocrs",
    "ioapicreroute",
    "noioapicreroute",
    "big_root_window",
    "skip_isa_align",
    "norom",
    "nobar",
    "routeirq",
    "noioapicquirk",
    "nosort",
];

/// What the kernel makes of a command line, as far as P2PDMA is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootParams {
    /// The `disable_acs_redir=` value in force (the last one given).
    pub disable_acs_redir: Option<String>,
    /// The `config_acs=` value in force (the last one given), on kernels that have it.
    pub config_acs: Option<String>,
    /// `intel_iommu=on` / `amd_iommu=on` (`Some(true)`), `=off` or `iommu=off`
    /// (`Some(false)`); `None` when the command line does not say (the kernel config's
    /// default decides).
    pub iommu: Option<bool>,
    /// `pcie_ports=compat`: the PCIe port driver ([`PORT_DRIVER`]) does not register.
    #[serde(default)]
    pub pcie_ports_compat: bool,
    /// Lines the kernel prints about the `pci=` options (`PCI: Unknown option ...`).
    pub kernel_lines: Vec<String>,
    /// Mistakes worth telling the user about, each with the corrected parameter.
    pub findings: Vec<Finding>,
}

/// A mistake in the `pci=` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// A list inside `disable_acs_redir=` or `config_acs=` separated by commas: the
    /// kernel split it and saw the rest as unknown options.
    CommaSplit {
        /// The option the list belonged to (`disable_acs_redir`).
        option: String,
        /// What the kernel kept.
        kept: String,
        /// What it dropped as unknown options.
        dropped: Vec<String>,
        /// The parameter as it should be written.
        corrected: String,
    },
    /// A later `pci=<option>=` replaced an earlier one.
    Overridden {
        /// The option.
        option: String,
        /// The value that was lost.
        earlier: String,
        /// The value in force.
        later: String,
        /// One parameter that keeps both.
        corrected: String,
    },
    /// `pci=config_acs=` on a kernel that does not have it.
    Unsupported {
        /// The option.
        option: String,
        /// The kernel.
        kernel: String,
    },
}

/// Splits a command line into words the way the kernel's `next_arg()` does for the
/// common cases: spaces separate, double quotes group.
pub fn cmdline_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

/// Does this unknown option look like a device a list was meant to carry?
fn looks_like_device(s: &str) -> bool {
    let spec = s.rsplit_once('@').map_or(s, |(_, d)| d);
    spec.starts_with("pci:")
        || spec
            .split('/')
            .next()
            .is_some_and(|first| first.contains(':') && first.contains('.'))
}

/// Reads `cmdline` as `kernel` would.
pub fn parse_cmdline(cmdline: &str, kernel: KernelVersion) -> BootParams {
    let mut out = BootParams::default();
    let has_config_acs = CONFIG_ACS.contains(kernel);
    for word in cmdline_words(cmdline) {
        let (key, value) = word.split_once('=').unwrap_or((word.as_str(), ""));
        match key {
            "intel_iommu" | "amd_iommu" => match value.split(',').next().unwrap_or("") {
                "on" => out.iommu = Some(true),
                "off" => out.iommu = Some(false),
                _ => {}
            },
            "iommu" if value == "off" => out.iommu = Some(false),
            // `pcie_port_setup()` compares prefixes; a later `native` does not undo `compat`.
            "pcie_ports" => out.pcie_ports_compat |= value.starts_with("compat"),
            "pci" => read_pci(value, has_config_acs, kernel, &mut out),
            _ => {}
        }
    }
    out
}

fn read_pci(value: &str, has_config_acs: bool, kernel: KernelVersion, out: &mut BootParams) {
    let options: Vec<&str> = value.split(',').collect();
    let mut i = 0;
    while i < options.len() {
        let opt = options[i];
        i += 1;
        if opt.is_empty() {
            continue;
        }
        let list_option = ["disable_acs_redir=", "config_acs="]
            .into_iter()
            .find(|p| opt.starts_with(p))
            .filter(|p| *p != "config_acs=" || has_config_acs);
        if let Some(prefix) = list_option {
            let name = prefix.trim_end_matches('=').to_string();
            let value = opt[prefix.len()..].to_string();
            // What follows at commas and looks like more of the list was split off.
            let mut dropped = Vec::new();
            while let Some(next) = options.get(i) {
                if looks_like_device(next) && !KNOWN_PCI_OPTIONS.iter().any(|k| next.starts_with(k))
                {
                    out.kernel_lines
                        .push(format!("PCI: Unknown option `{next}'"));
                    dropped.push(next.to_string());
                    i += 1;
                } else {
                    break;
                }
            }
            if !dropped.is_empty() {
                let mut all = vec![value.clone()];
                all.extend(dropped.iter().cloned());
                out.findings.push(Finding::CommaSplit {
                    option: name.clone(),
                    kept: value.clone(),
                    dropped,
                    corrected: format!("pci={prefix}{}", all.join(";")),
                });
            }
            let slot = if name == "disable_acs_redir" {
                &mut out.disable_acs_redir
            } else {
                &mut out.config_acs
            };
            if let Some(earlier) = slot.replace(value.clone()) {
                if earlier != value {
                    out.findings.push(Finding::Overridden {
                        option: name,
                        corrected: format!("pci={prefix}{earlier};{value}"),
                        earlier,
                        later: value,
                    });
                }
            }
            continue;
        }
        if opt.starts_with("config_acs=") {
            out.findings.push(Finding::Unsupported {
                option: "config_acs".into(),
                kernel: kernel.to_string(),
            });
        }
        let known_here = |k: &&&str| **k != "config_acs=" || has_config_acs;
        if !KNOWN_PCI_OPTIONS.iter().filter(known_here).any(|k| {
            if k.ends_with('=') {
                opt.starts_with(k)
            } else {
                opt == *k
            }
        }) {
            out.kernel_lines
                .push(format!("PCI: Unknown option `{opt}'"));
        }
    }
}

/// A device as `pci_dev_str_match()` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceIds<'a> {
    /// Its address.
    pub bdf: Bdf,
    /// Vendor and device IDs.
    pub ids: (u16, u16),
    /// Subsystem vendor and device IDs, when known.
    pub subsystem: Option<(u16, u16)>,
    /// Its upstream bridges, nearest first (for the path form).
    pub upstream: &'a [Bdf],
}

fn hex<T: TryFrom<u32>>(s: &str) -> Option<T> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    T::try_from(u32::from_str_radix(s, 16).ok()?).ok()
}

/// `[domain:]bus:dev.fn` of one path element (the first); `dev.fn` (the rest).
fn parse_devfn(s: &str) -> Option<(u8, u8)> {
    let (d, f) = s.split_once('.')?;
    let (d, f): (u8, u8) = (hex(d)?, hex(f)?);
    (d < 32 && f < 8).then_some((d, f))
}

/// `pci_dev_str_match()` for one entry (up to `;` or `,`): `Some(true)` it names the
/// device, `Some(false)` it names another, `None` it does not parse (the kernel then
/// stops reading the list: "PCI: Can't parse ACS command line parameter").
pub fn dev_str_match(spec: &str, dev: &DeviceIds<'_>) -> Option<bool> {
    if let Some(ids) = spec.strip_prefix("pci:") {
        let parts: Vec<&str> = ids.split(':').collect();
        let n = |i: usize| -> Option<u16> { parts.get(i).and_then(|p| hex(p)) };
        let (vendor, device) = (n(0)?, n(1)?);
        let (sv, sd) = match parts.len() {
            2 => (0, 0),
            4 => (n(2)?, n(3)?),
            _ => return None,
        };
        let want = |w: u16, have: u16| w == 0 || w == have;
        let sub = dev.subsystem.unwrap_or((0, 0));
        return Some(
            want(vendor, dev.ids.0)
                && want(device, dev.ids.1)
                && want(sv, sub.0)
                && want(sd, sub.1),
        );
    }
    let mut elems: Vec<&str> = spec.split('/').collect();
    let first = elems.remove(0);
    // The rest name devfns down from the first, read from the end up.
    let mut cur = dev.bdf;
    let mut up = dev.upstream.iter();
    for e in elems.iter().rev() {
        let (d, f) = parse_devfn(e)?;
        if (cur.device, cur.function) != (d, f) {
            return Some(false);
        }
        match up.next() {
            Some(b) => cur = *b,
            None => return Some(false),
        }
    }
    let fields: Vec<&str> = first.split(':').collect();
    let (seg, bus, devfn) = match fields.as_slice() {
        [s, b, df] => (hex::<u32>(s)?, hex::<u8>(b)?, *df),
        [b, df] => (0, hex::<u8>(b)?, *df),
        _ => return None,
    };
    let (d, f) = parse_devfn(devfn)?;
    Some(seg == cur.domain && bus == cur.bus && d == cur.device && f == cur.function)
}

/// What one of the two ACS parameters does to one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AcsParamEffect {
    /// `(mask, flags)` applied when an entry matched.
    pub applied: Option<(u16, u16)>,
    /// Lines the kernel prints for this device (`pci <bdf>: ...`) or once
    /// (`PCI: Can't parse ...`).
    pub kernel_lines: Vec<String>,
}

/// `__pci_config_acs()`: walks `param` for `dev`. With `fixed` (`disable_acs_redir`),
/// entries are bare devices and `(mask, flags)` is given; without, each entry is
/// `<flags>@<device>` with the flags read right to left from bit 0.
pub fn config_acs_effect(
    param: &str,
    fixed: Option<(u16, u16)>,
    dev: &DeviceIds<'_>,
) -> AcsParamEffect {
    let mut out = AcsParamEffect::default();
    let say = |out: &mut AcsParamEffect, text: &str| {
        out.kernel_lines.push(format!("pci {}: {text}", dev.bdf));
    };
    let entries = param.split([';', ',']);
    for entry in entries {
        if entry.is_empty() {
            // `*p` is NUL or the next separator: the walk ends (a trailing `;` is fine).
            break;
        }
        let (mask, flags, spec) = match fixed {
            Some((m, f)) => (m, f, entry),
            None => {
                let Some((bits, spec)) = entry.split_once('@') else {
                    say(&mut out, "ACS Flags missing");
                    return out;
                };
                let (mut mask, mut flags) = (0u16, 0u16);
                for (shift, c) in bits.chars().rev().enumerate() {
                    let bit = u16::try_from(shift)
                        .ok()
                        .and_then(|s| 1u16.checked_shl(u32::from(s)));
                    match c {
                        '0' | '1' => {
                            let Some(bit) = bit else {
                                say(&mut out, "Invalid ACS flags specified");
                                return out;
                            };
                            mask |= bit;
                            if c == '1' {
                                flags |= bit;
                            }
                        }
                        'x' | 'X' => {}
                        _ => {
                            say(&mut out, "Invalid ACS flags... Ignoring");
                            return out;
                        }
                    }
                }
                (mask, flags, spec)
            }
        };
        if mask & !ACS_CTRL_BITS != 0 {
            say(&mut out, "Invalid ACS flags specified");
            return out;
        }
        match dev_str_match(spec, dev) {
            None => {
                out.kernel_lines
                    .push("PCI: Can't parse ACS command line parameter".into());
                return out;
            }
            Some(true) => {
                out.applied = Some((mask, flags));
                return out;
            }
            Some(false) => {}
        }
    }
    out
}

/// One port's ACS Control as `pci_enable_acs()` leaves it, and which bits of the answer
/// are known (a firmware bit that the captured value does not show is not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcsSetup {
    /// The value written.
    pub ctrl: u16,
    /// The bits of `ctrl` that are known.
    pub known: u16,
    /// What the kernel prints for this device.
    pub kernel_lines: Vec<String>,
}

/// The firmware's ACS Control and which of its bits are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firmware {
    /// The value.
    pub ctrl: u16,
    /// The bits known.
    pub known: u16,
}

/// `pci_enable_acs()` for one device with an ACS capability `cap`.
pub fn enable_acs(
    dev: &DeviceIds<'_>,
    cap: u16,
    fw: Firmware,
    iommu: bool,
    params: &BootParams,
    kernel: KernelVersion,
) -> AcsSetup {
    let mut ctrl = fw.ctrl;
    let mut known = fw.known;
    if iommu {
        ctrl |= cap & IOMMU_ACS_BITS;
        known |= cap & IOMMU_ACS_BITS;
    }
    let mut lines = Vec::new();
    let rebuild = CONFIG_ACS.contains(kernel);
    let mut apply = |e: AcsParamEffect, ctrl: &mut u16, known: &mut u16| {
        lines.extend(e.kernel_lines);
        let Some((mask, flags)) = e.applied else {
            return false;
        };
        if rebuild {
            *ctrl = (fw.ctrl & !mask) | (flags & mask);
            *known = (fw.known & !mask) | mask;
        } else {
            *ctrl = (*ctrl & !mask) | (flags & mask);
            *known |= mask;
        }
        true
    };
    let mut changed = false;
    if let Some(p) = &params.disable_acs_redir {
        let e = config_acs_effect(p, Some((REDIR_BITS, !REDIR_BITS)), dev);
        changed |= apply(e, &mut ctrl, &mut known);
    }
    if rebuild {
        if let Some(p) = &params.config_acs {
            let e = config_acs_effect(p, None, dev);
            changed |= apply(e, &mut ctrl, &mut known);
        }
    }
    if changed {
        lines.push(if rebuild {
            format!("pci {}: Configured ACS to {ctrl:#06x}", dev.bdf)
        } else {
            format!("pci {}: disabled ACS redirect", dev.bdf)
        });
    }
    AcsSetup {
        ctrl,
        known,
        kernel_lines: lines,
    }
}

/// The firmware value behind a captured ACS Control: the captured bits that the
/// captured boot's parameters and IOMMU did not set are the firmware's; the others are
/// unknown.
pub fn firmware_from_capture(
    dev: &DeviceIds<'_>,
    cap: u16,
    captured_ctrl: u16,
    captured: &BootParams,
    captured_iommu: bool,
) -> Firmware {
    // Bits the captured boot set (or may have set) are not the firmware's to show.
    let mut touched = if captured_iommu {
        cap & IOMMU_ACS_BITS
    } else {
        0
    };
    for (param, fixed) in [
        (&captured.disable_acs_redir, Some((REDIR_BITS, !REDIR_BITS))),
        (&captured.config_acs, None),
    ] {
        if let Some(p) = param {
            if let Some((mask, _)) = config_acs_effect(p, fixed, dev).applied {
                touched |= mask;
            }
        }
    }
    Firmware {
        ctrl: captured_ctrl & !touched,
        known: !touched,
    }
}

#[cfg(test)]
mod tests;
