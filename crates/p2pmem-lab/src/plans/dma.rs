//! Where the bytes went, measured: QEMU runs with its nvme DMA trace events on
//! ([`crate::machine::qemu_args::qemu_trace_args`]), the plan's address-map step brings back the guest's
//! `/proc/iomem` and every PCI function's `resource`, its mark steps bracket the
//! measured command with marker reads, and the trace is streamed through the model's
//! [`DmaAccountant`] once per window. Volume: about 45 bytes of trace per 4 KiB page
//! moved through host memory (one `pci_nvme_map_addr` line each), one line per command
//! through a CMB; parsing streams, so only the disk holds the trace (in the run
//! directory, next to `console.log`).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use p2pmem_model::dma_accounting::{
    DmaAccountant, DmaFigures, DmaReport, MemoryMap, Window, WindowState,
};
use p2pmem_model::limits;
use p2pmem_wire::report::AddressMap;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, LabError, Result};
pub use crate::machine::qemu_args::TRACE_FILE;

/// What the figures are measured from.
pub const SOURCE: &str = "lab: QEMU's nvme DMA trace (pci_nvme_map_addr, pci_nvme_map_addr_cmb) over the guest's System RAM and PCI BARs";

/// The model's address map from the guest's (an address-map step's output).
pub fn memory_map(guest: &AddressMap, trace: &Path) -> Result<MemoryMap> {
    let names: Vec<String> = guest.resources.iter().map(|(b, _)| b.to_string()).collect();
    let map = MemoryMap::from_guest(
        &guest.iomem,
        names
            .iter()
            .zip(&guest.resources)
            .map(|(b, (_, text))| (b.as_str(), text.as_str())),
    );
    if map.ram.is_empty() {
        return Err(LabError::DmaTrace {
            trace: trace.to_path_buf(),
            why: "the guest's /proc/iomem shows no System RAM range (read without root?)".into(),
        });
    }
    Ok(map)
}

/// Streams `trace` through one accountant per window.
pub fn account(trace: &Path, map: &MemoryMap, windows: &[Window]) -> Result<Vec<DmaReport>> {
    let file = std::fs::File::open(trace).map_err(io_err("cannot open", trace))?;
    let mut reader = BufReader::new(file);
    let mut accs: Vec<DmaAccountant> = windows
        .iter()
        .map(|w| DmaAccountant::new(map.clone(), *w))
        .collect();
    let mut buf = Vec::new();
    let mut total = 0u64;
    loop {
        buf.clear();
        // One line at most TRACE_LINE long (a trace with no newline is not read whole),
        // the trace at most TRACE.
        let n = (&mut reader)
            .take(limits::TRACE_LINE.max + 1)
            .read_until(b'\n', &mut buf)
            .map_err(io_err("cannot read", trace))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        let broken = if n as u64 > limits::TRACE_LINE.max {
            Some(limits::TRACE_LINE)
        } else {
            (total > limits::TRACE.max).then_some(limits::TRACE)
        };
        if let Some(bound) = broken {
            return Err(LabError::TooLarge {
                path: trace.to_path_buf(),
                bound,
            });
        }
        let line = String::from_utf8_lossy(&buf);
        for a in &mut accs {
            a.feed(&line);
        }
    }
    Ok(accs.into_iter().map(DmaAccountant::finish).collect())
}

/// One measured window: the headline figures, where they come from, the detail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DmaResult {
    /// `payload_bytes`, `host_memory_bytes`, `peer_bytes`, ...
    #[serde(flatten)]
    pub figures: DmaFigures,
    /// [`SOURCE`].
    pub source: String,
    /// The trace file.
    pub trace: PathBuf,
    /// Everything counted.
    pub detail: DmaReport,
}

impl DmaResult {
    /// A result, or an error when the window is incomplete.
    pub fn new(detail: DmaReport, trace: &Path) -> Result<Self> {
        let why = match detail.window {
            WindowState::Closed => None,
            WindowState::NotOpened => Some("the opening marker read is not in the trace (did the guest job reach it? is busybox dd's iflag=direct available?)"),
            WindowState::Open => Some("the closing marker read is not in the trace (the job or QEMU stopped early)"),
        };
        if let Some(why) = why {
            return Err(LabError::DmaTrace {
                trace: trace.to_path_buf(),
                why: why.to_string(),
            });
        }
        Ok(Self {
            figures: detail.figures(),
            source: SOURCE.to_string(),
            trace: trace.to_path_buf(),
            detail,
        })
    }
}

/// The one window of a traced `lab run` (window 0), measured with the map of the
/// plan's address-map step.
pub fn account_run(run_dir: &Path, guest: &AddressMap) -> Result<DmaResult> {
    let trace = run_dir.join(TRACE_FILE);
    let map = memory_map(guest, &trace)?;
    let report = account(&trace, &map, &[Window::nth(0)])?
        .pop()
        .ok_or_else(|| LabError::DmaTrace {
            trace: trace.clone(),
            why: "no window was measured".into(),
        })?;
    DmaResult::new(report, &trace)
}

/// The DMA line `lab run --json` prints after a measured command's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunDma {
    /// The figures, when measured.
    pub dma_accounting: Option<DmaResult>,
    /// Why not, when not.
    pub dma_error: Option<String>,
}

/// One copy of `lab demo`, measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeasuredCopy {
    /// The buffer: a provider's BDF or `host`.
    pub via: String,
    /// `p2pmem copy`'s exit status (None when it did not run).
    pub exit: Option<i32>,
    /// The figures.
    #[serde(flatten)]
    pub dma: DmaResult,
}

/// The demo's measured copies: window 0 the copy through the CMB (through `via`),
/// window 1 the same copy through a host buffer, with the copies' exit statuses.
pub fn demo_copies(
    run_dir: &Path,
    guest: &AddressMap,
    copies: [(String, Option<i32>); 2],
) -> Result<Vec<MeasuredCopy>> {
    let trace = run_dir.join(TRACE_FILE);
    let map = memory_map(guest, &trace)?;
    let reports = account(&trace, &map, &[Window::nth(0), Window::nth(1)])?;
    reports
        .into_iter()
        .zip(copies)
        .map(|(r, (via, exit))| {
            Ok(MeasuredCopy {
                via,
                exit,
                dma: DmaResult::new(r, &trace)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_map_and_trace_give_figures() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let trace = d.join(TRACE_FILE);
        let guest = AddressMap {
            iomem: "00100000-3ffc8fff : System RAM\n".into(),
            resources: vec![(
                "0000:03:00.0".parse().unwrap(),
                "0x00000000fe800000 0x00000000fe803fff 0x0000000000140204\n".into(),
            )],
        };
        let map = memory_map(&guest, &trace).unwrap();
        assert_eq!(map.bars.len(), 1);
        let mut text = b"pci_nvme_read cid 1 nsid 1 nlb 3 count 1536 lba 0x15\n\
             pci_nvme_io_cmd cid 2 nsid 0x1 sqid 1 opc 0x1 opname 'NVME_NVM_CMD_WRITE'\n\
             pci_nvme_map_addr addr 0x100000 len 4096\n"
            .to_vec();
        text.extend_from_slice(b"\xff\xfe not UTF-8\n");
        text.extend_from_slice(b"pci_nvme_read cid 3 nsid 1 nlb 3 count 1536 lba 0x1b\n");
        std::fs::write(&trace, text).unwrap();
        let r = account(&trace, &map, &[Window::nth(0), Window::nth(1)]).unwrap();
        let ok = DmaResult::new(r[0].clone(), &trace).unwrap();
        assert_eq!(ok.figures.payload_bytes, 4096);
        assert_eq!(ok.figures.host_memory_per_payload_byte, Some(1.0));
        let err = DmaResult::new(r[1].clone(), &trace)
            .unwrap_err()
            .to_string();
        assert!(err.contains("opening marker"), "{err}");
        let empty = AddressMap {
            iomem: String::new(),
            resources: Vec::new(),
        };
        assert!(memory_map(&empty, &trace).is_err());
    }
}
