//! What if the system booted differently: another kernel command line, the IOMMU on or
//! off, another kernel version. Each port's ACS Control is recomputed from its capability
//! and the firmware value behind the captured register ([`crate::boot_params`]), the
//! rules take the other kernel, and the usual decision runs on the result. What the
//! capture cannot tell (a firmware redirect bit the captured boot overwrote) stays
//! unknown, never guessed.

use crate::acs::{AcsFlags, AcsState, AcsUnknown};
use crate::bdf::Bdf;
use crate::boot_params::{
    acs_setup_runs, config_acs_effect, enable_acs, firmware_from_capture, parse_cmdline, AcsSetup,
    BootParams, DeviceIds, Firmware, CONFIG_ACS, IOMMU_ACS_BITS, PORT_DRIVER,
};
use crate::config_space::PortType;
use crate::distance::Rules;
use crate::kernel_version::KernelVersion;
use crate::topology::Function;
use crate::topology::Topology;
use serde::{Deserialize, Serialize};

/// The boot asked about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WhatIf {
    /// A whole kernel command line, or only its `pci=` part; `None`: the captured one.
    pub cmdline: Option<String>,
    /// The IOMMU on or off; `None`: as the new command line says, else as captured.
    pub iommu: Option<bool>,
    /// Another kernel version; `None`: the captured one.
    pub kernel: Option<KernelVersion>,
}

impl WhatIf {
    /// Asks nothing different.
    pub fn is_empty(&self) -> bool {
        self.cmdline.is_none() && self.iommu.is_none() && self.kernel.is_none()
    }
}

/// The boot the system was captured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured<'a> {
    /// `/proc/cmdline`.
    pub cmdline: &'a str,
    /// Whether an IOMMU was active (`/sys/class/iommu` had entries).
    pub iommu: bool,
}

/// One port whose ACS changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcsChange {
    /// The port.
    pub bdf: Bdf,
    /// As captured.
    pub before: AcsState,
    /// As the asked boot would leave it.
    pub after: AcsState,
}

/// What the asked boot changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatIfReport {
    /// The command line asked about.
    pub cmdline: String,
    /// Whether the IOMMU would be on.
    pub iommu: bool,
    /// The kernel asked about.
    pub kernel: KernelVersion,
    /// Ports whose ACS Control changes.
    pub acs_changes: Vec<AcsChange>,
    /// Lines the kernel would print about the parameters (unknown options, bad ACS
    /// flags, `Configured ACS to ...`).
    pub kernel_lines: Vec<String>,
    /// How the kernel reads the parameters.
    pub boot: BootParams,
}

/// Applies `w` to a captured topology: the topology and rules to decide with, and what
/// changed.
pub fn apply(
    topo: &Topology,
    rules: &Rules,
    captured: &Captured<'_>,
    w: &WhatIf,
) -> (Topology, Rules, WhatIfReport) {
    let kernel = w.kernel.unwrap_or(rules.kernel);
    let captured_boot = parse_cmdline(captured.cmdline, rules.kernel);
    let cmdline = w
        .cmdline
        .clone()
        .unwrap_or_else(|| captured.cmdline.to_string());
    let boot = parse_cmdline(&cmdline, kernel);
    let iommu = w
        .iommu
        .or(if w.cmdline.is_some() {
            boot.iommu
        } else {
            None
        })
        .unwrap_or(captured.iommu);
    let mut functions = Vec::new();
    let mut changes = Vec::new();
    let mut lines = boot.kernel_lines.clone();
    for f in topo.functions() {
        let mut f = f.clone();
        let before = f.acs();
        if let AcsState::Present {
            offset,
            capability,
            control,
        } = before
        {
            let upstream = upstream_of(&f);
            let dev = device_ids(&f, &upstream);
            let captured_bound = f.driver.is_some();
            let fw = if acs_setup_runs(rules.kernel, captured.iommu, captured_bound) {
                firmware_from_capture(
                    &dev,
                    capability.0,
                    control.0,
                    &captured_boot,
                    captured.iommu,
                )
            } else {
                // The captured kernel never wrote it: the register is the firmware's.
                Firmware {
                    ctrl: control.0,
                    known: u16::MAX,
                }
            };
            let driver = driver_after(&f, &captured_boot, &boot);
            let setup = if acs_setup_runs(kernel, iommu, driver.is_some()) {
                let mut setup = enable_acs(&dev, capability.0, fw, iommu, &boot, kernel);
                setup.kernel_lines = logged_by(&setup.kernel_lines, f.bdf, kernel, iommu, driver);
                setup
            } else {
                AcsSetup {
                    ctrl: fw.ctrl,
                    known: fw.known,
                    kernel_lines: Vec::new(),
                }
            };
            lines.extend(setup.kernel_lines);
            let mask = AcsFlags::P2PDMA_REDIRECT_MASK;
            let redirect_known_on = setup.ctrl & setup.known & mask != 0;
            let after = if redirect_known_on || setup.known & mask == mask {
                AcsState::Present {
                    offset,
                    capability,
                    control: AcsFlags(setup.ctrl),
                }
            } else {
                AcsState::Unknown {
                    reason: AcsUnknown::FirmwareValueUnknown,
                }
            };
            if after != before {
                changes.push(AcsChange {
                    bdf: f.bdf,
                    before,
                    after,
                });
                f.acs_override = Some(after);
            }
        }
        functions.push(f);
    }
    // The functions come from a valid topology: rebuilding it cannot fail.
    let topology = Topology::new(functions).unwrap_or_else(|_| topo.clone());
    let rules = Rules {
        kernel,
        cpu: rules.cpu.clone(),
    };
    let report = WhatIfReport {
        cmdline,
        iommu,
        kernel,
        acs_changes: changes,
        kernel_lines: lines,
        boot,
    };
    (topology, rules, report)
}

/// The bridges above `f`, nearest first (what `pci_dev_str_match`'s path form walks).
fn upstream_of(f: &Function) -> Vec<Bdf> {
    f.path.iter().rev().skip(1).copied().collect()
}

/// `f` as the kernel's device matching sees it.
fn device_ids<'a>(f: &Function, upstream: &'a [Bdf]) -> DeviceIds<'a> {
    DeviceIds {
        bdf: f.bdf,
        ids: (f.vendor, f.device),
        subsystem: None,
        upstream,
    }
}

/// Who set a port's ACS redirect bits in the boot that was captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum RedirectOrigin {
    /// The kernel, because an IOMMU asked for ACS (SV, RR, CR, UF as far as the port
    /// implements them).
    Iommu,
    /// A `pci=config_acs=` entry that matched the port.
    ConfigAcs {
        /// The parameter's value.
        param: String,
    },
    /// Not the kernel: the firmware's value (the kernel wrote no redirect bit there).
    Firmware,
}

/// Why `f`'s ACS redirect bits are set in the captured boot: the last writer of the
/// set bits among `pci_enable_acs()`'s steps (config_acs after the IOMMU's bits), else the
/// firmware. `None` when no redirect bit is set or the register is unknown. `boot` is the
/// captured command line as `kernel` read it ([`parse_cmdline`], once for all ports).
pub fn redirect_origin(
    f: &Function,
    boot: &BootParams,
    iommu: bool,
    kernel: KernelVersion,
) -> Option<RedirectOrigin> {
    let AcsState::Present {
        capability,
        control,
        ..
    } = f.acs()
    else {
        return None;
    };
    let set = control.0 & AcsFlags::P2PDMA_REDIRECT_MASK;
    if set == 0 {
        return None;
    }
    if !acs_setup_runs(kernel, iommu, f.driver.is_some()) {
        return Some(RedirectOrigin::Firmware);
    }
    let upstream = upstream_of(f);
    let dev = device_ids(f, &upstream);
    if let Some(p) = boot
        .config_acs
        .as_ref()
        .filter(|_| CONFIG_ACS.contains(kernel))
    {
        let e = config_acs_effect(p, None, &dev);
        if e.applied
            .is_some_and(|(mask, flags)| mask & flags & set != 0)
        {
            return Some(RedirectOrigin::ConfigAcs { param: p.clone() });
        }
    }
    if iommu && capability.0 & IOMMU_ACS_BITS & set != 0 {
        return Some(RedirectOrigin::Iommu);
    }
    Some(RedirectOrigin::Firmware)
}

/// The lines `pci_enable_acs()` prints for device `bdf`, as often and with the prefix the
/// kernel gives them. Up to 6.x it runs once at enumeration, with no driver: `pci
/// 0000:00:07.0: ...`. From [`crate::boot_params::ACS_AT_DMA_CONFIGURE`] it runs when an
/// IOMMU probes the device (still no driver: `pci`) and again when a driver binds it,
/// which then prefixes the lines (`pcieport 0000:00:07.0: Configured ACS to 0x000c`,
/// seen on 7.3.4); the value written is the same both times.
fn logged_by(
    lines: &[String],
    bdf: Bdf,
    kernel: KernelVersion,
    iommu: bool,
    driver: Option<&str>,
) -> Vec<String> {
    if !crate::boot_params::ACS_AT_DMA_CONFIGURE.contains(kernel) {
        return lines.to_vec();
    }
    let ours = format!("pci {bdf}: ");
    let mut out = Vec::new();
    let runs = iommu
        .then_some("pci")
        .into_iter()
        .chain(driver)
        .collect::<Vec<_>>();
    for who in runs {
        for l in lines {
            out.push(match l.strip_prefix(&ours) {
                Some(rest) => format!("{who} {bdf}: {rest}"),
                None => l.clone(),
            });
        }
    }
    out
}

/// The driver `f` has after the asked boot: as captured, except that
/// `pcie_ports=compat` keeps the PCIe port driver away from every port, and a port the
/// captured boot left driverless that way gets it back without it.
fn driver_after<'a>(f: &'a Function, captured: &BootParams, asked: &BootParams) -> Option<&'a str> {
    let is_port = matches!(
        f.port_type(),
        Some(
            PortType::RootPort
                | PortType::UpstreamPort
                | PortType::DownstreamPort
                | PortType::RcEventCollector
        )
    );
    match f.driver.as_deref() {
        Some(PORT_DRIVER) if is_port && asked.pcie_ports_compat => None,
        Some(d) => Some(d),
        None => (is_port && captured.pcie_ports_compat && !asked.pcie_ports_compat)
            .then_some(PORT_DRIVER),
    }
}

/// `cmdline` with `param` (`pci=disable_acs_redir=LIST`) added the way that works: a
/// `disable_acs_redir` already in force is merged into one list (a second `pci=` option
/// would replace it).
pub fn add_disable_acs_redir(cmdline: &str, kernel: KernelVersion, devices: &[Bdf]) -> String {
    let boot = parse_cmdline(cmdline, kernel);
    let mut list: Vec<String> = boot
        .disable_acs_redir
        .iter()
        .flat_map(|l| l.split(';').map(str::to_string))
        .filter(|s| !s.is_empty())
        .collect();
    for d in devices {
        let s = d.to_string();
        if !list.contains(&s) {
            list.push(s);
        }
    }
    let words: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("pci=disable_acs_redir="))
        .collect();
    let mut out = words.join(" ");
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(&format!("pci=disable_acs_redir={}", list.join(";")));
    out
}

/// `cmdline` with every `config_acs` entry that names one of `devices` rewritten to
/// force RR, CR and EC off (its other flags kept): what it takes when `config_acs` (which
/// the kernel applies after `disable_acs_redir`) is what sets the redirect.
pub fn clear_redirect_in_config_acs(
    cmdline: &str,
    kernel: KernelVersion,
    devices: &[(Bdf, Vec<Bdf>)],
) -> Option<String> {
    let boot = parse_cmdline(cmdline, kernel);
    let value = boot.config_acs?;
    let mut changed = false;
    let entries: Vec<String> = value
        .split(';')
        .map(|entry| {
            let Some((bits, spec)) = entry.split_once('@') else {
                return entry.to_string();
            };
            let names_one = devices.iter().any(|(bdf, upstream)| {
                let dev = DeviceIds {
                    bdf: *bdf,
                    ids: (0, 0),
                    subsystem: None,
                    upstream,
                };
                crate::boot_params::dev_str_match(spec, &dev) == Some(true)
            });
            if !names_one {
                return entry.to_string();
            }
            // Right to left from bit 0; RR is bit 2, CR bit 3, EC bit 5.
            let mut chars: Vec<char> = bits.chars().rev().collect();
            while chars.len() < 6 {
                chars.push('x');
            }
            for bit in [2, 3, 5] {
                if chars[bit] != '0' {
                    chars[bit] = '0';
                    changed = true;
                }
            }
            let bits: String = chars.iter().rev().collect();
            format!("{bits}@{spec}")
        })
        .collect();
    if !changed {
        return None;
    }
    let words: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("pci=config_acs="))
        .collect();
    let mut out = words.join(" ");
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(&format!("pci=config_acs={}", entries.join(";")));
    Some(out)
}

#[cfg(test)]
mod tests;
