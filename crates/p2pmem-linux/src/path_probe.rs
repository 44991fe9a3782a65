//! `p2pmem probe`: the kernel allowing a pair does not mean the hardware moves the right
//! bytes (behind some switches and on some hosts a P2P transfer completes without an
//! error and returns all-ones data, or lands nowhere). This reads one range of the client
//! with O_DIRECT twice, once into the provider's p2pmem and once into host memory, and
//! compares them through the guarded CPU access; with an explicit scratch range it also
//! writes a fresh pattern from p2pmem to the client and reads it back through host memory.
//! Nothing is written unless a scratch range is given, and the kernel log is only read,
//! never cleared: the lines of that moment (IOMMU faults, AER) are the ones that appeared
//! while the probe ran.

use std::path::PathBuf;

use p2pmem_model::dma_faults::{dma_fault, DmaFault};
use p2pmem_model::errno;
use p2pmem_model::Bdf;
use serde::{Deserialize, Serialize};

use crate::dio::{Access, DioError, DirectFile};
use crate::dma_probe::{new_lines, nonce, pattern};
use crate::klog::{klog_texts, KernelLog};
use crate::p2pbuf::{AllocateFile, CpuAccessError, DmaBuffer, HostBuffer, P2pBufferError};
use crate::sys;

/// Bytes read by default.
pub const DEFAULT_LEN: u64 = 1 << 20;
/// The most one probe moves (it maps that much p2pmem).
pub const MAX_LEN: u64 = 64 << 20;

/// What to probe.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    /// The system's root (`/` live).
    pub root: PathBuf,
    /// The provider.
    pub provider: Bdf,
    /// The client's PCI function, when known.
    pub client: Option<Bdf>,
    /// The client block device (or file).
    pub client_path: PathBuf,
    /// First byte read (block-aligned).
    pub offset: u64,
    /// Bytes read (block-aligned, at most [`MAX_LEN`]).
    pub len: u64,
    /// A range the user allowed to be overwritten: `(offset, len)`.
    pub scratch: Option<(u64, u64)>,
}

/// How the bytes that came through p2pmem compare with the reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "data")]
pub enum DataFinding {
    /// Every byte matches.
    Match,
    /// The bytes are what was there before the transfer (the read: the p2pmem buffer
    /// still holds its fill pattern; the write: the scratch range its old contents):
    /// the device's DMA never reached p2pmem, or moved nothing.
    NeverLanded,
    /// Every byte is 0xFF: the reads were answered by error completions (or a
    /// master-abort) somewhere on the path.
    AllOnes,
    /// Some bytes differ.
    Differs {
        /// The first differing byte.
        first_offset: u64,
        /// How many bytes differ.
        bytes: u64,
    },
}

/// One direction of the probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    /// `ok`, `short:<bytes>` or the errno name of the O_DIRECT transfer through p2pmem.
    pub transfer: String,
    /// The data, when the transfer completed and the reference could be read.
    pub finding: Option<DataFinding>,
    /// Why there is no finding, when there is none.
    pub note: Option<String>,
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathVerdict {
    /// The bytes that went through p2pmem are the right ones.
    Correct,
    /// A transfer completed but moved wrong bytes.
    Wrong,
    /// The kernel refused the transfer (or the mapping).
    Refused,
    /// A transfer failed otherwise, or the data could not be checked.
    Inconclusive,
}

/// A fault line and what reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultLine {
    /// The mechanism.
    pub kind: DmaFault,
    /// The line.
    pub line: String,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathProbe {
    /// The provider.
    pub provider: Bdf,
    /// The client's PCI function.
    pub client: Option<Bdf>,
    /// The client block device.
    pub client_path: String,
    /// First byte read.
    pub offset: u64,
    /// Bytes read.
    pub len: u64,
    /// `ok` or the mmap errno name.
    pub mmap: String,
    /// The read into p2pmem, against the same range read into host memory.
    pub read: Option<Leg>,
    /// The write from p2pmem to the scratch range, read back through host memory.
    pub write: Option<Leg>,
    /// The answer.
    pub verdict: PathVerdict,
    /// The answer in words.
    pub summary: String,
    /// Kernel log lines that appeared while the probe ran.
    pub kernel_log: Vec<String>,
    /// Those of them that report a DMA fault.
    pub faults: Vec<FaultLine>,
    /// Why the kernel log could not be read, when it could not.
    pub kernel_log_error: Option<String>,
}

/// A probe that could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The client cannot be opened with O_DIRECT.
    #[error("cannot use the client")]
    Client(#[source] DioError),
    /// A range is not aligned to the client's logical block size, empty or too long.
    #[error("{what} {offset}+{len} is not usable on {path}: {why}")]
    Range {
        /// `read range` or `scratch range`.
        what: &'static str,
        /// Its offset.
        offset: u64,
        /// Its length.
        len: u64,
        /// The client.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The provider's `allocate` cannot be opened.
    #[error("cannot map p2pmem of {provider}")]
    Map {
        /// The provider.
        provider: Bdf,
        /// Why.
        #[source]
        source: P2pBufferError,
    },
    /// Host memory for the reference cannot be had.
    #[error("cannot allocate host memory for the reference read")]
    Host(#[source] crate::p2pbuf::HostBufferError),
    /// The CPU could not read or write the p2pmem buffer (the provider went away).
    #[error("CPU access to the p2pmem buffer of {provider} failed")]
    CpuAccess {
        /// The provider.
        provider: Bdf,
        /// Why.
        #[source]
        source: CpuAccessError,
    },
}

/// Runs the probe on the live system.
pub fn probe(req: &ProbeRequest, log: &mut dyn KernelLog) -> Result<PathProbe, ProbeError> {
    let access = if req.scratch.is_some() {
        Access::ReadWrite
    } else {
        Access::Read
    };
    let dev = DirectFile::open(&req.client_path, access).map_err(ProbeError::Client)?;
    let block = u64::from(dev.logical_block_size().max(1));
    let size = client_size(&req.client_path);
    check_range(req, "read range", req.offset, req.len, block, size)?;
    if let Some((o, l)) = req.scratch {
        check_range(req, "scratch range", o, l, block, size)?;
    }
    let map_len = req.len.max(req.scratch.map_or(0, |s| s.1));
    let len = req.len as usize;
    let allocate =
        AllocateFile::open(&req.root, req.provider, map_len as usize).map_err(|source| {
            ProbeError::Map {
                provider: req.provider,
                source,
            }
        })?;
    let mut host = HostBuffer::new(map_len as usize).map_err(ProbeError::Host)?;
    let cpu = |source| ProbeError::CpuAccess {
        provider: req.provider,
        source,
    };

    let mut log_error = None;
    let before = match log.read_all() {
        Ok(raw) => klog_texts(&raw),
        Err(e) => {
            log_error = Some(e.to_string());
            Vec::new()
        }
    };
    let mut out = PathProbe {
        provider: req.provider,
        client: req.client,
        client_path: req.client_path.display().to_string(),
        offset: req.offset,
        len: req.len,
        mmap: "ok".into(),
        read: None,
        write: None,
        verdict: PathVerdict::Inconclusive,
        summary: String::new(),
        kernel_log: Vec::new(),
        faults: Vec::new(),
        kernel_log_error: None,
    };
    match allocate.map() {
        Err(e) => match e.mmap_errno() {
            Some(errno) => out.mmap = sys::errno_label(errno),
            None => {
                return Err(ProbeError::Map {
                    provider: req.provider,
                    source: e,
                })
            }
        },
        Ok(mut buf) => {
            // The fill differs from every byte a device could plausibly return in
            // bulk, so a transfer that never landed is told from one that did.
            let fill = fill_pattern(map_len as usize);
            buf.copy_from_host(0, &fill).map_err(cpu)?;
            let read = dev.pread_into(&mut buf, 0, len, req.offset);
            let mut leg = new_leg(read, len);
            if leg.transfer == "ok" {
                match dev.pread_into(&mut host, 0, len, req.offset) {
                    Ok(n) if n == len => {
                        let mut got = vec![0u8; len];
                        buf.copy_to_host(0, &mut got).map_err(cpu)?;
                        leg.finding = Some(compare(&got, &host.as_slice()[..len], &fill[..len]));
                    }
                    Ok(n) => {
                        leg.note = Some(format!(
                            "the host reference read was short ({n} of {len} bytes)"
                        ))
                    }
                    Err(e) => leg.note = Some(format!("the host reference read failed: {e}")),
                }
            }
            out.read = Some(leg);
            if let Some((offset, slen)) = req.scratch {
                let slen = slen as usize;
                // Fresh each run, so what an earlier probe left there cannot pass.
                let pattern = pattern(slen, nonce());
                // What the range held before, so a write that moved nothing is told
                // from one that moved wrong bytes.
                let old = match dev.pread_into(&mut host, 0, slen, offset) {
                    Ok(n) if n == slen => Some(host.as_slice()[..slen].to_vec()),
                    _ => None,
                };
                buf.copy_from_host(0, &pattern).map_err(cpu)?;
                let mut leg = new_leg(dev.pwrite_from(&buf, 0, slen, offset), slen);
                if leg.transfer == "ok" {
                    host.as_mut_slice()[..slen].fill(0);
                    match dev.pread_into(&mut host, 0, slen, offset) {
                        Ok(n) if n == slen => {
                            leg.finding = Some(compare(
                                &host.as_slice()[..slen],
                                &pattern,
                                old.as_deref().unwrap_or(&pattern),
                            ))
                        }
                        Ok(n) => {
                            leg.note =
                                Some(format!("the read-back was short ({n} of {slen} bytes)"))
                        }
                        Err(e) => leg.note = Some(format!("the read-back failed: {e}")),
                    }
                }
                out.write = Some(leg);
            }
        }
    }
    if log_error.is_none() {
        match log.read_all() {
            Ok(raw) => {
                let (new, _) = new_lines(&before, &klog_texts(&raw));
                out.kernel_log = new;
            }
            Err(e) => log_error = Some(e.to_string()),
        }
    }
    out.kernel_log_error = log_error;
    out.faults = out
        .kernel_log
        .iter()
        .filter_map(|l| {
            dma_fault(l).map(|kind| FaultLine {
                kind,
                line: l.clone(),
            })
        })
        .collect();
    (out.verdict, out.summary) = judge(&out);
    Ok(out)
}

/// The client's size in bytes (a block device's too), when it can be found.
fn client_size(path: &std::path::Path) -> Option<u64> {
    use std::io::Seek;
    std::fs::File::open(path)
        .and_then(|mut f| f.seek(std::io::SeekFrom::End(0)))
        .ok()
}

fn check_range(
    req: &ProbeRequest,
    what: &'static str,
    offset: u64,
    len: u64,
    block: u64,
    size: Option<u64>,
) -> Result<(), ProbeError> {
    let end = offset.checked_add(len);
    let why = if len == 0 {
        Some("it is empty".to_string())
    } else if len > MAX_LEN {
        Some(format!("at most {MAX_LEN} bytes per probe"))
    } else if !offset.is_multiple_of(block) || !len.is_multiple_of(block) {
        Some(format!(
            "offset and length must be multiples of the logical block size, {block} bytes"
        ))
    } else {
        match (end, size) {
            (None, _) => Some("it ends past 2^64".to_string()),
            (Some(end), Some(size)) if end > size => {
                Some(format!("it ends past the end of the client ({size} bytes)"))
            }
            _ => None,
        }
    };
    match why {
        None => Ok(()),
        Some(why) => Err(ProbeError::Range {
            what,
            offset,
            len,
            path: req.client_path.clone(),
            why,
        }),
    }
}

fn new_leg(r: Result<usize, DioError>, len: usize) -> Leg {
    let transfer = match r {
        Ok(n) if n == len => "ok".to_string(),
        Ok(n) => format!("short:{n}"),
        Err(DioError::Io { source, .. }) => sys::io_error_label(&source),
        Err(e) => format!("error: {e}"),
    };
    Leg {
        transfer,
        finding: None,
        note: None,
    }
}

/// `got` (what came through p2pmem) against `want` (the reference); `fill` is what the
/// buffer held before the transfer.
pub fn compare(got: &[u8], want: &[u8], fill: &[u8]) -> DataFinding {
    if got == want {
        return DataFinding::Match;
    }
    if got == fill {
        return DataFinding::NeverLanded;
    }
    if got.iter().all(|&b| b == 0xFF) {
        return DataFinding::AllOnes;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
    let bytes = got.iter().zip(want).filter(|(a, b)| a != b).count();
    DataFinding::Differs {
        first_offset: first as u64,
        bytes: bytes as u64,
    }
}

/// What the p2pmem buffer holds before the read: fixed, so a test can name it.
fn fill_pattern(len: usize) -> Vec<u8> {
    pattern(len, 0xA5C3_96E1_5A3C_691E)
}

/// `f` in words; `write` for the write leg, where the bytes compared are the scratch
/// range read back, not the p2pmem buffer.
fn describe(f: &DataFinding, write: bool) -> String {
    match f {
        DataFinding::Match => "every byte matched".into(),
        DataFinding::NeverLanded if write => {
            "the scratch range read back as it was before the write: the device did not get the bytes from p2pmem".into()
        }
        DataFinding::NeverLanded => {
            "the p2pmem buffer still held what was there before: the device's DMA never reached it"
                .into()
        }
        DataFinding::AllOnes => "every byte came back 0xFF (error completions on the path)".into(),
        DataFinding::Differs {
            first_offset,
            bytes,
        } => format!("{bytes} bytes differed, the first at offset {first_offset}"),
    }
}

/// The verdict and the sentence that says it.
fn judge(p: &PathProbe) -> (PathVerdict, String) {
    let faults = if p.faults.is_empty() {
        String::new()
    } else {
        format!("; the kernel logged {} DMA fault line(s)", p.faults.len())
    };
    if p.mmap != "ok" {
        return (
            PathVerdict::Refused,
            format!(
                "the kernel refused to map p2pmem of {} ({})",
                p.provider, p.mmap
            ),
        );
    }
    let legs: Vec<(&str, &Leg)> = [("read", p.read.as_ref()), ("write", p.write.as_ref())]
        .into_iter()
        .filter_map(|(n, l)| l.map(|l| (n, l)))
        .collect();
    let mut wrong = Vec::new();
    let mut refused = Vec::new();
    let mut unknown = Vec::new();
    for (name, leg) in &legs {
        match (&leg.finding, leg.transfer.as_str()) {
            (Some(DataFinding::Match), _) => {}
            (Some(f), _) => wrong.push(format!("{name}: {}", describe(f, *name == "write"))),
            (None, "ok") => unknown.push(format!(
                "{name}: {}",
                leg.note.as_deref().unwrap_or("not checked")
            )),
            // The errnos of a P2P transfer the kernel refuses (EREMOTEIO up to 6.16,
            // EINVAL from 6.17; p2pmem_model::errno); any other failure says nothing
            // about the path.
            (None, t) if t == errno::EREMOTEIO.name || t == errno::EINVAL.name => {
                refused.push(format!("{name} failed with {t}"))
            }
            (None, t) => unknown.push(format!("{name}: {t}")),
        }
    }
    let path = format!("{} -> {}", p.provider, p.client_path);
    if !wrong.is_empty() {
        (
            PathVerdict::Wrong,
            format!(
                "the path {path} moves WRONG data: the transfer completed without an error but {}{faults}",
                wrong.join("; ")
            ),
        )
    } else if !refused.is_empty() {
        (
            PathVerdict::Refused,
            format!(
                "the kernel refused the transfer: {}{faults}",
                refused.join("; ")
            ),
        )
    } else if !unknown.is_empty() {
        (
            PathVerdict::Inconclusive,
            format!("cannot tell: {}{faults}", unknown.join("; ")),
        )
    } else {
        let what = if p.write.is_some() {
            "read and write"
        } else {
            "read"
        };
        (
            PathVerdict::Correct,
            format!(
                "the path {path} moves correct data ({what} through p2pmem, {} bytes, every byte matched){faults}",
                p.len
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_tell_never_landed_from_all_ones_from_differs() {
        let want = vec![7u8; 64];
        let fill = fill_pattern(64);
        assert_eq!(compare(&want, &want, &fill), DataFinding::Match);
        assert_eq!(compare(&fill, &want, &fill), DataFinding::NeverLanded);
        assert_eq!(compare(&[0xFF; 64], &want, &fill), DataFinding::AllOnes);
        let mut got = want.clone();
        got[10] = 0;
        got[20] = 0;
        assert_eq!(
            compare(&got, &want, &fill),
            DataFinding::Differs {
                first_offset: 10,
                bytes: 2
            }
        );
    }

    #[test]
    fn the_fill_has_no_long_runs_so_a_zero_disk_is_not_mistaken_for_it() {
        let fill = fill_pattern(4096);
        assert!(fill.windows(8).all(|w| w.iter().any(|&b| b != w[0])));
        assert_ne!(fill, vec![0u8; 4096]);
        assert_ne!(fill, vec![0xFFu8; 4096]);
    }

    fn probe_with(read: Option<Leg>, write: Option<Leg>, faults: usize) -> PathProbe {
        PathProbe {
            provider: "0000:03:00.0".parse().unwrap(),
            client: None,
            client_path: "/dev/nvme1n1".into(),
            offset: 0,
            len: 4096,
            mmap: "ok".into(),
            read,
            write,
            verdict: PathVerdict::Inconclusive,
            summary: String::new(),
            kernel_log: vec![],
            faults: (0..faults)
                .map(|_| FaultLine {
                    kind: DmaFault::IntelIommu,
                    line: "DMAR: DRHD: handling fault status reg 2".into(),
                })
                .collect(),
            kernel_log_error: None,
        }
    }

    fn ok(finding: DataFinding) -> Leg {
        Leg {
            transfer: "ok".into(),
            finding: Some(finding),
            note: None,
        }
    }

    #[test]
    fn a_completed_transfer_with_wrong_bytes_is_wrong_and_says_the_faults() {
        let p = probe_with(Some(ok(DataFinding::NeverLanded)), None, 2);
        let (v, s) = judge(&p);
        assert_eq!(v, PathVerdict::Wrong);
        assert!(
            s.contains("WRONG") && s.contains("never reached") && s.contains("2 DMA fault"),
            "{s}"
        );
        let (v, s) = judge(&probe_with(
            Some(ok(DataFinding::Match)),
            Some(ok(DataFinding::Match)),
            0,
        ));
        assert_eq!(v, PathVerdict::Correct);
        assert!(s.contains("read and write"), "{s}");
        let refused = Leg {
            transfer: "EREMOTEIO".into(),
            finding: None,
            note: None,
        };
        assert_eq!(
            judge(&probe_with(Some(refused), None, 0)).0,
            PathVerdict::Refused
        );
        let unchecked = Leg {
            transfer: "ok".into(),
            finding: None,
            note: Some("the host reference read failed".into()),
        };
        assert_eq!(
            judge(&probe_with(Some(unchecked), None, 0)).0,
            PathVerdict::Inconclusive
        );
    }
}
