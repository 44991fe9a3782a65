//! NVMe Controller Memory Buffer (CMB) registers, and whether nvme-pci turns a CMB into
//! p2pmem.
//!
//! A controller describes its CMB with two registers: CMBLOC (which BAR, at what offset)
//! and CMBSZ (how big, in which unit, usable for what). At probe time nvme-pci's
//! `nvme_map_cmb()` decides whether to register that range as a P2PDMA provider and
//! whether to publish it. [`registration`] replays those steps in the kernel's order.

use crate::kernel_version::{KernelVersion, VersionRange};
use serde::Serialize;
use std::fmt;

/// Register field positions, from the NVMe base specification (1.4+ for the CMBLOC flags
/// and CAP.CMBS). The kernel uses only CAP.CMBS, BIR, OFST, SQS, RDS, WDS, SZU and SZ.
pub mod field {
    /// CAP bit 57: CMBLOC/CMBSZ read as zero until CMBMSC.CRE is written.
    pub const CAP_CMBS_BIT: u32 = 57;
    /// CMBLOC bits 2:0: Base Indicator Register, the BAR holding the CMB.
    pub const CMBLOC_BIR_MASK: u32 = 0x7;
    /// CMBLOC bit 3: CQMMS, CMB Queue Mixed Memory Support.
    pub const CMBLOC_CQMMS: u32 = 1 << 3;
    /// CMBLOC bit 4: CQPDS, CMB Queue Physically Discontiguous Support.
    pub const CMBLOC_CQPDS: u32 = 1 << 4;
    /// CMBLOC bit 5: CDPMLS, CMB Data Pointer Mixed Locations Support.
    pub const CMBLOC_CDPMLS: u32 = 1 << 5;
    /// CMBLOC bit 6: CDPCILS, CMB Data Pointer and Command Independent Locations Support.
    pub const CMBLOC_CDPCILS: u32 = 1 << 6;
    /// CMBLOC bit 7: CDMMMS, CMB Data Metadata Mixed Memory Support.
    pub const CMBLOC_CDMMMS: u32 = 1 << 7;
    /// CMBLOC bit 8: CQDA, CMB Queue Dword Alignment.
    pub const CMBLOC_CQDA: u32 = 1 << 8;
    /// CMBLOC bits 31:12: offset of the CMB in the BAR, in CMBSZ units.
    pub const CMBLOC_OFST_SHIFT: u32 = 12;
    /// CMBSZ bit 0: submission queues may live in the CMB.
    pub const CMBSZ_SQS: u32 = 1 << 0;
    /// CMBSZ bit 1: completion queues may live in the CMB (unused by Linux).
    pub const CMBSZ_CQS: u32 = 1 << 1;
    /// CMBSZ bit 2: PRP/SGL lists may live in the CMB (unused by Linux).
    pub const CMBSZ_LISTS: u32 = 1 << 2;
    /// CMBSZ bit 3: read data (controller-to-host transfers) may target the CMB.
    pub const CMBSZ_RDS: u32 = 1 << 3;
    /// CMBSZ bit 4: write data (host-to-controller transfers) may come from the CMB.
    pub const CMBSZ_WDS: u32 = 1 << 4;
    /// CMBSZ bits 11:8: size unit, 4 KiB × 16^SZU.
    pub const CMBSZ_SZU_SHIFT: u32 = 8;
    /// Mask of SZU after shifting.
    pub const CMBSZ_SZU_MASK: u32 = 0xf;
    /// Largest SZU the specification defines (6 = 64 GiB); 7..=15 are reserved.
    pub const CMBSZ_SZU_MAX: u8 = 6;
    /// CMBSZ bits 31:12: size in SZU units.
    pub const CMBSZ_SZ_SHIFT: u32 = 12;
}

/// The kernel's warning when `pci_p2pdma_add_resource` fails, printed on the controller
/// device (`nvme nvme0: failed to register the CMB`).
pub const FAILED_TO_REGISTER: &str = "failed to register the CMB";

/// The commit that made nvme-pci skip CMBs that cannot be memremapped ("nvme-pci: skip
/// CMB blocks incompatible with PCI P2P DMA"); release version unverified (about 2025).
pub const ALIGN_CHECK_COMMIT: &str = "56cf7ef0d490";

/// The Controller Capabilities register (64-bit, offset 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cap(pub u64);

impl Cap {
    /// CAP.CMBS: the controller uses the NVMe 1.4 scheme, where CMBLOC and CMBSZ read as
    /// zero until the host writes CMBMSC.CRE (nvme-pci does so before reading them).
    pub fn cmbs(&self) -> bool {
        self.0 >> field::CAP_CMBS_BIT & 1 == 1
    }
}

/// CMBLOC, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CmbLoc {
    /// The raw register.
    pub raw: u32,
    /// BAR index (BIR). 0 and 2..=5 name BARs; the kernel indexes `pdev->resource[]`
    /// with it unchecked, so 6 would be the expansion ROM and 7 the first SR-IOV BAR.
    pub bir: u8,
    /// CQMMS.
    pub cqmms: bool,
    /// CQPDS.
    pub cqpds: bool,
    /// CDPMLS.
    pub cdpmls: bool,
    /// CDPCILS.
    pub cdpcils: bool,
    /// CDMMMS.
    pub cdmmms: bool,
    /// CQDA.
    pub cqda: bool,
    /// Offset in the BAR, in CMBSZ units.
    pub ofst: u32,
}

impl From<u32> for CmbLoc {
    fn from(raw: u32) -> Self {
        use field::*;
        Self {
            raw,
            // Masked to 3 bits.
            bir: (raw & CMBLOC_BIR_MASK) as u8,
            cqmms: raw & CMBLOC_CQMMS != 0,
            cqpds: raw & CMBLOC_CQPDS != 0,
            cdpmls: raw & CMBLOC_CDPMLS != 0,
            cdpcils: raw & CMBLOC_CDPCILS != 0,
            cdmmms: raw & CMBLOC_CDMMMS != 0,
            cqda: raw & CMBLOC_CQDA != 0,
            ofst: raw >> CMBLOC_OFST_SHIFT,
        }
    }
}

/// CMBSZ, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CmbSz {
    /// The raw register; 0 means "no CMB".
    pub raw: u32,
    /// SQS: submission queues supported.
    pub sqs: bool,
    /// CQS: completion queues supported.
    pub cqs: bool,
    /// LISTS: PRP/SGL lists supported.
    pub lists: bool,
    /// RDS: read data supported.
    pub rds: bool,
    /// WDS: write data supported.
    pub wds: bool,
    /// Size unit code.
    pub szu: u8,
    /// Size in units.
    pub sz: u32,
}

impl From<u32> for CmbSz {
    fn from(raw: u32) -> Self {
        use field::*;
        Self {
            raw,
            sqs: raw & CMBSZ_SQS != 0,
            cqs: raw & CMBSZ_CQS != 0,
            lists: raw & CMBSZ_LISTS != 0,
            rds: raw & CMBSZ_RDS != 0,
            wds: raw & CMBSZ_WDS != 0,
            // Masked to 4 bits.
            szu: (raw >> CMBSZ_SZU_SHIFT & CMBSZ_SZU_MASK) as u8,
            sz: raw >> CMBSZ_SZ_SHIFT,
        }
    }
}

/// Why CMB registers cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum CmbError {
    /// SZU is reserved by the specification (above 6).
    #[error(
        "CMBSZ {cmbsz:#010x} has size unit SZU={szu}, which the NVMe specification reserves \
         (0..=6 are defined); the kernel does not check it and would compute 4 KiB << {shift}"
    )]
    ReservedSizeUnit {
        /// The raw register.
        cmbsz: u32,
        /// The reserved code.
        szu: u8,
        /// The shift the kernel would use, 12 + 4 × SZU.
        shift: u32,
    },
    /// The `cmb` sysfs text is not in the kernel's format.
    #[error("'{input}' is not the nvme 'cmb' attribute: expected \"cmbloc : 0x%08x\\ncmbsz  : 0x%08x\\n\"")]
    AttrFormat {
        /// The text (lossily decoded, at most 200 bytes).
        input: String,
    },
    /// A decimal `cmbloc`/`cmbsz` sysfs attribute is not a `u32`.
    #[error("'{input}' is not a decimal CMB register value")]
    DecimalFormat {
        /// The text (lossily decoded, at most 200 bytes).
        input: String,
    },
}

impl CmbSz {
    /// The size unit in bytes, 4 KiB × 16^SZU; an error for reserved SZU values.
    pub fn unit(&self) -> Result<u64, CmbError> {
        if self.szu > field::CMBSZ_SZU_MAX {
            return Err(CmbError::ReservedSizeUnit {
                cmbsz: self.raw,
                szu: self.szu,
                shift: 12 + 4 * u32::from(self.szu),
            });
        }
        // At most 4 KiB << 24 = 64 GiB.
        Ok(4096u64 << (4 * u32::from(self.szu)))
    }
}

/// Where the CMB sits and how big it claims to be, before any clamping to the BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CmbGeometry {
    /// BAR index (BIR).
    pub bar: u8,
    /// Size unit in bytes.
    pub unit: u64,
    /// Advertised size: unit × SZ.
    pub size: u64,
    /// Offset in the BAR: unit × OFST.
    pub offset: u64,
}

/// Decodes unit, size, offset and BAR. Never overflows: with SZU ≤ 6 the unit is at most
/// 2^36 and SZ, OFST are below 2^20.
pub fn decode(cmbsz: CmbSz, cmbloc: CmbLoc) -> Result<CmbGeometry, CmbError> {
    let unit = cmbsz.unit()?;
    Ok(CmbGeometry {
        bar: cmbloc.bir,
        unit,
        size: unit * u64::from(cmbsz.sz),
        offset: unit * u64::from(cmbloc.ofst),
    })
}

/// The BAR that BIR names, as `pci_resource_start/len/flags` report it (the BIR-th line of
/// the device's sysfs `resource` file). `None` for an unassigned resource behaves like a
/// zero-length non-memory one, as in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BarInfo {
    /// CPU physical start address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// `IORESOURCE_MEM` is set.
    pub is_mem: bool,
}

/// Why `pci_p2pdma_add_resource` (or the memremap under it) refuses the CMB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddResourceFailure {
    /// The BAR is not a memory BAR (or does not exist): -EINVAL.
    BarNotMemory,
    /// The offset equals the BAR length, so the clamped size is 0: -EINVAL.
    OffsetAtBarEnd,
    /// The memremap range (BAR start + offset, size) is not aligned to the
    /// memory-hotplug granule; `devm_memremap_pages` fails.
    RangeUnaligned,
}

/// What nvme-pci does with a CMB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CmbOutcome {
    /// CMBSZ is 0: no CMB.
    NoCmb,
    /// SZU is reserved; the model does not predict what the kernel's arithmetic does.
    ReservedSizeUnit {
        /// The reserved code.
        szu: u8,
    },
    /// The offset is past the end of the BAR: skipped silently.
    OffsetBeyondBar {
        /// BAR index.
        bar: u8,
        /// Offset in the BAR.
        offset: u64,
        /// BAR length.
        bar_len: u64,
    },
    /// The (clamped) size or the BAR start is not aligned to `memremap_compat_align()`:
    /// skipped silently, on kernels with the alignment check.
    SkippedUnaligned {
        /// BAR index.
        bar: u8,
        /// Size after clamping to the BAR.
        size: u64,
        /// BAR start.
        bar_start: u64,
        /// The alignment required.
        compat_align: u64,
    },
    /// Registration was attempted and failed.
    RegistrationFails {
        /// Which check failed.
        reason: AddResourceFailure,
        /// BAR index.
        bar: u8,
        /// Size after clamping.
        size: u64,
        /// Offset in the BAR.
        offset: u64,
    },
    /// The CMB is a P2PDMA provider.
    Registered {
        /// BAR index.
        bar: u8,
        /// Size registered (after clamping): `p2pmem/size`.
        size: u64,
        /// Offset in the BAR.
        offset: u64,
        /// The advertised size, when it was larger than the BAR allows.
        clamped_from: Option<u64>,
        /// RDS and WDS are both set, so `p2pmem/published` is 1.
        published: bool,
        /// SQS is set, so I/O submission queues go in the CMB (module parameter
        /// `nvme.use_cmb_sqes`, default on, assumed on) and `p2pmem/available` shrinks by
        /// their size.
        sq_in_cmb: bool,
    },
}

/// A verdict on one CMB: what happens, why, and what the kernel logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CmbVerdict {
    /// What happens.
    #[serde(flatten)]
    pub outcome: CmbOutcome,
    /// Why, for humans.
    pub explanation: String,
    /// The kernel's log text for this outcome, if it logs anything (without the
    /// `nvme nvmeN: ` prefix).
    pub kernel_log: Option<&'static str>,
    /// What kernels without the alignment check ([`ALIGN_CHECK_COMMIT`]) log for the same
    /// CMB. It differs from `kernel_log` only for `SkippedUnaligned`: those kernels
    /// attempt the registration, which fails unless only the BAR start was unaligned and
    /// the offset realigns the range (the explanation says which).
    pub legacy_kernel_log: Option<&'static str>,
}

/// The kernel's `IS_ALIGNED(x, a)`, including its behaviour for odd `a`.
fn is_aligned(x: u64, a: u64) -> bool {
    x & a.wrapping_sub(1) == 0
}

/// `pci_p2pdma_add_resource(pdev, bar, size, offset)` and the memremap under it: the
/// size it registers, or why it fails.
fn add_resource(
    bar: BarInfo,
    index: u8,
    offset: u64,
    size: u64,
    align: u64,
) -> Result<u64, (AddResourceFailure, String)> {
    if !bar.is_mem {
        return Err((
            AddResourceFailure::BarNotMemory,
            format!("BAR{index} is not a memory BAR (or is not assigned)"),
        ));
    }
    if offset >= bar.len {
        return Err((
            AddResourceFailure::OffsetAtBarEnd,
            format!("the offset {offset:#x} equals the length of BAR{index}"),
        ));
    }
    // Size 0 means "to the end of the BAR". `size + offset <= len` holds: the caller
    // clamped the size to the room left in the BAR.
    let size = if size == 0 { bar.len - offset } else { size };
    let start = bar.start.wrapping_add(offset);
    if !is_aligned(start, align) || !is_aligned(size, align) {
        return Err((
            AddResourceFailure::RangeUnaligned,
            format!(
                "the range {start:#x}+{size:#x} is not aligned to {align:#x}, so \
                 devm_memremap_pages fails (inferred from the memory-hotplug rules)"
            ),
        ));
    }
    Ok(size)
}

/// Replays `nvme_map_cmb()` on register values and the BAR that BIR names.
/// `compat_align` is `memremap_compat_align()`: the memory-hotplug subsection size,
/// 2 MiB on x86-64 (some architectures override it).
///
/// Steps, in the kernel's order: CMBSZ = 0 → no CMB; offset > BAR length → silent skip;
/// size clamped to the BAR; size or BAR start unaligned → silent skip (since
/// [`ALIGN_CHECK_COMMIT`]); `pci_p2pdma_add_resource` refuses → `failed to register the
/// CMB`; otherwise registered, and published when RDS and WDS are both set.
pub fn registration(
    cmbsz: CmbSz,
    cmbloc: CmbLoc,
    bar: Option<BarInfo>,
    compat_align: u64,
) -> CmbVerdict {
    let verdict = |outcome, explanation: String, kernel_log, legacy_kernel_log| CmbVerdict {
        outcome,
        explanation,
        kernel_log,
        legacy_kernel_log,
    };
    if cmbsz.raw == 0 {
        return verdict(
            CmbOutcome::NoCmb,
            "CMBSZ is 0: the controller has no CMB (or, with CAP.CMBS, CMBMSC.CRE was not \
             written before reading)"
                .into(),
            None,
            None,
        );
    }
    let geo = match decode(cmbsz, cmbloc) {
        Ok(g) => g,
        Err(e) => {
            return verdict(
                CmbOutcome::ReservedSizeUnit { szu: cmbsz.szu },
                format!("{e}; no prediction is made for reserved values"),
                None,
                None,
            )
        }
    };
    let bar_info = bar.unwrap_or(BarInfo {
        start: 0,
        len: 0,
        is_mem: false,
    });
    let (b, offset) = (geo.bar, geo.offset);
    if offset > bar_info.len {
        return verdict(
            CmbOutcome::OffsetBeyondBar {
                bar: b,
                offset,
                bar_len: bar_info.len,
            },
            format!(
                "the CMB offset {offset:#x} lies beyond the end of BAR{b} (length {:#x}); \
                 nvme-pci skips the CMB without logging anything, so the only sign is a \
                 missing p2pmem/ directory",
                bar_info.len
            ),
            None,
            None,
        );
    }
    let room = bar_info.len - offset;
    let size = geo.size.min(room);
    let clamped_from = (geo.size > room).then_some(geo.size);
    let added = add_resource(bar_info, b, offset, size, compat_align);
    if !is_aligned(size, compat_align) || !is_aligned(bar_info.start, compat_align) {
        let legacy = match &added {
            Ok(_) => "Kernels without that check register it".to_string(),
            Err((_, why)) => {
                format!("Kernels without that check try, and log '{FAILED_TO_REGISTER}': {why}")
            }
        };
        return verdict(
            CmbOutcome::SkippedUnaligned {
                bar: b,
                size,
                bar_start: bar_info.start,
                compat_align,
            },
            format!(
                "the CMB size {size:#x} or the start {:#x} of BAR{b} is not a multiple of \
                 memremap_compat_align() = {compat_align:#x}, so nvme-pci skips the CMB \
                 silently (check added by {ALIGN_CHECK_COMMIT}, about 2025, version \
                 unverified; it looks at the BAR start, not BAR start + offset). {legacy}",
                bar_info.start
            ),
            None,
            added.is_err().then_some(FAILED_TO_REGISTER),
        );
    }
    let registered = match added {
        Ok(registered) => registered,
        Err((reason, why)) => {
            return verdict(
                CmbOutcome::RegistrationFails {
                    reason,
                    bar: b,
                    size,
                    offset,
                },
                format!(
                    "pci_p2pdma_add_resource refuses the CMB: {why}. nvme-pci warns \
                     '{FAILED_TO_REGISTER}' and, since 6a3572e10f74, clears CMBMSC again. A \
                     kernel built without CONFIG_PCI_P2PDMA logs the same for every CMB"
                ),
                Some(FAILED_TO_REGISTER),
                Some(FAILED_TO_REGISTER),
            );
        }
    };
    let published = cmbsz.rds && cmbsz.wds;
    // With SZ = 0 the driver records a CMB size of 0, so no queue fits in it.
    let sq_in_cmb = cmbsz.sqs && size != 0;
    let mut notes = Vec::new();
    if let Some(adv) = clamped_from {
        notes.push(format!(
            "clamped from the advertised {adv:#x} to what BAR{b} holds"
        ));
    }
    if size == 0 {
        notes.push(
            "SZ is 0, which pci_p2pdma_add_resource takes as 'to the end of the BAR' \
             [inferred]"
                .to_string(),
        );
    }
    notes.push(if published {
        "published (RDS and WDS set): nvmet and pci_p2pmem_find may pick it".to_string()
    } else {
        "not published (needs both RDS and WDS): only p2pmem/allocate and the driver's \
         own queues use it"
            .to_string()
    });
    if sq_in_cmb {
        notes.push(
            "SQS is set, so I/O submission queues go in it (nvme.use_cmb_sqes, default on) \
             and p2pmem/available is smaller than p2pmem/size"
                .to_string(),
        );
    }
    verdict(
        CmbOutcome::Registered {
            bar: b,
            size: registered,
            offset,
            clamped_from,
            published,
            sq_in_cmb,
        },
        format!(
            "{registered:#x} bytes at offset {offset:#x} of BAR{b} become p2pmem; {}",
            notes.join("; ")
        ),
        None,
        None,
    )
}

/// The two registers as the controller's sysfs `cmb` attribute shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CmbAttr {
    /// CMBLOC.
    pub cmbloc: CmbLoc,
    /// CMBSZ.
    pub cmbsz: CmbSz,
}

impl CmbAttr {
    /// The attribute as `kernel` prints it.
    pub fn kernel_text(&self, kernel: KernelVersion) -> String {
        let p = if CMB_ATTR_0X.contains(kernel) {
            "0x"
        } else {
            "x"
        };
        format!(
            "cmbloc : {p}{:08x}\ncmbsz  : {p}{:08x}\n",
            self.cmbloc.raw, self.cmbsz.raw
        )
    }
}

impl fmt::Display for CmbAttr {
    /// The kernel's format: `cmbloc : 0x%08x\ncmbsz  : 0x%08x\n`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cmbloc : {:#010x}\ncmbsz  : {:#010x}\n",
            self.cmbloc.raw, self.cmbsz.raw
        )
    }
}

fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
}

/// Kernels whose `cmb` attribute prints `0x%08x`; before, `x%08x`. Debian's 6.12.118
/// prints `x`, 7.2.13 `0x` (read from their trees); the release in between that made
/// the change is not verified, 7.0 assumed.
pub const CMB_ATTR_0X: VersionRange = VersionRange::since(7, 0);

fn hex_u32(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix('x'))?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// Parses the controller's `cmb` attribute (`/sys/class/nvme/nvmeX/cmb`, present only
/// when CMBSZ is not 0), in either of the kernel's formats (`x%08x` before
/// [`CMB_ATTR_0X`], `0x%08x` from it). Trailing whitespace is tolerated; anything else
/// off the kernel's format is an error.
pub fn parse_cmb_attr(bytes: &[u8]) -> Result<CmbAttr, CmbError> {
    let err = || CmbError::AttrFormat {
        input: shown(bytes),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| err())?;
    let mut lines = text.trim_end().split('\n');
    let mut field = |label: &str| {
        lines
            .next()
            .and_then(|l| l.strip_prefix(label))
            .and_then(hex_u32)
    };
    let cmbloc = field("cmbloc : ").ok_or_else(err)?;
    let cmbsz = field("cmbsz  : ").ok_or_else(err)?;
    if lines.next().is_some() {
        return Err(err());
    }
    Ok(CmbAttr {
        cmbloc: cmbloc.into(),
        cmbsz: cmbsz.into(),
    })
}

/// Parses the decimal `cmbloc` or `cmbsz` attribute (`%u\n`).
pub fn parse_decimal_attr(bytes: &[u8]) -> Result<u32, CmbError> {
    std::str::from_utf8(bytes)
        .ok()
        .map(str::trim_end)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| CmbError::DecimalFormat {
            input: shown(bytes),
        })
}

#[cfg(test)]
mod tests;
