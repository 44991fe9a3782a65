//! Where the bytes went, measured: QEMU runs with its nvme DMA trace events on
//! ([`qemu_trace_args`]), the guest saves its address map (`/proc/iomem` and every PCI
//! function's `resource`) and brackets the measured command with marker reads
//! ([`guest_functions`]), and the trace is streamed through the model's
//! [`DmaAccountant`] once per window. Volume: about 45 bytes of trace per 4 KiB page
//! moved through host memory (one `pci_nvme_map_addr` line each), one line per command
//! through a CMB; parsing streams, so only the disk holds the trace (in the run
//! directory, next to `console.log`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use p2pmem_model::dma_accounting::trace_line::event;
use p2pmem_model::dma_accounting::{
    DmaAccountant, DmaFigures, DmaReport, MemoryMap, Window, WindowState, MARKER_BLOCKS,
};
use serde::Serialize;

use crate::error::{io_err, LabError, Result};
use crate::lab::{job_from_argv, unpack_tar, Job};

/// The trace file in the run directory.
pub const TRACE_FILE: &str = "dma-trace.log";

/// Where a traced `lab run` job saves the guest's address map.
pub const GUEST_MAP_DIR: &str = "/tmp/lab-dma";

/// Logical block size the marker reads assume (QEMU nvme's default).
const MARKER_LBA_BYTES: u64 = 512;

/// What the figures are measured from.
pub const SOURCE: &str = "lab: QEMU's nvme DMA trace (pci_nvme_map_addr, pci_nvme_map_addr_cmb) over the guest's System RAM and PCI BARs";

/// `-trace enable=EVENT` for every event the accounting reads, and `-trace file=FILE`
/// (QEMU 7.2's `log` trace backend writes there).
pub fn qemu_trace_args(file: &Path) -> Vec<String> {
    let mut a = Vec::new();
    for e in event::ALL {
        a.push("-trace".to_string());
        a.push(format!("enable={e}"));
    }
    a.push("-trace".to_string());
    // QEMU's option syntax doubles a comma inside a value.
    a.push(format!(
        "file={}",
        file.display().to_string().replace(',', ",,")
    ));
    a
}

/// Guest shell functions: `lab_dma_map DIR` saves the address map into DIR;
/// `lab_dma_mark LBA` reads [`MARKER_BLOCKS`] blocks at LBA of the first NVMe namespace
/// with O_DIRECT, which QEMU traces as `pci_nvme_read ... nlb 3 ... lba LBA`.
pub fn guest_functions() -> String {
    let bs = MARKER_BLOCKS * MARKER_LBA_BYTES;
    format!(
        r#"lab_dma_map() {{
  mkdir -p "$1"
  cat /proc/iomem > "$1/iomem"
  for d in /sys/bus/pci/devices/*; do
    cat "$d/resource" > "$1/resource.${{d##*/}}" 2> /dev/null
  done
}}
lab_dma_mark() {{
  dev=$(ls /sys/block | grep '^nvme' | sort | head -n 1)
  dd if="/dev/$dev" of=/dev/null bs={bs} count=1 skip=$(($1 / {MARKER_BLOCKS})) iflag=direct 2> /dev/null
}}
"#
    )
}

/// A `lab run` job that measures `command`: the address map, then the command between
/// the markers of window 0, exiting with the command's status.
pub fn traced_job(command: &[String]) -> Job {
    let w = Window::nth(0);
    let script = format!(
        "{}lab_dma_map {GUEST_MAP_DIR}\nlab_dma_mark {}\n(\n{})\nrc=$?\nlab_dma_mark {}\nexit $rc\n",
        guest_functions(),
        w.begin_lba,
        job_from_argv(command),
        w.end_lba
    );
    Job {
        script,
        fetch_dirs: vec![GUEST_MAP_DIR.to_string()],
    }
}

/// Is `argv` a `p2pmem [--json] [--root DIR] copy ...` command?
pub fn is_p2pmem_copy(argv: &[String]) -> bool {
    let Some((prog, rest)) = argv.split_first() else {
        return false;
    };
    if prog != "p2pmem" && !prog.ends_with("/p2pmem") {
        return false;
    }
    let mut words = rest.iter();
    while let Some(w) = words.next() {
        match w.as_str() {
            "--root" => {
                words.next();
            }
            w if w.starts_with('-') => {}
            w => return w == "copy",
        }
    }
    false
}

/// Reads an address map saved by `lab_dma_map` (unpacked on the host).
pub fn load_memory_map(dir: &Path) -> Result<MemoryMap> {
    let read = |p: PathBuf| std::fs::read_to_string(&p).map_err(io_err("cannot read", p));
    let iomem = read(dir.join("iomem"))?;
    let mut resources = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io_err("cannot list", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err("cannot list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(bdf) = name.strip_prefix("resource.") {
            resources.push((bdf.to_string(), read(entry.path())?));
        }
    }
    resources.sort();
    let map = MemoryMap::from_guest(
        &iomem,
        resources.iter().map(|(b, t)| (b.as_str(), t.as_str())),
    );
    if map.ram.is_empty() {
        return Err(LabError::DmaTrace {
            trace: dir.join("iomem"),
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
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(io_err("cannot read", trace))?;
        if n == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        for a in &mut accs {
            a.feed(&line);
        }
    }
    Ok(accs.into_iter().map(DmaAccountant::finish).collect())
}

/// One measured window: the headline figures, where they come from, the detail.
#[derive(Debug, Clone, Serialize)]
pub struct DmaResult {
    /// `payload_bytes`, `host_memory_bytes`, `peer_bytes`, ...
    #[serde(flatten)]
    pub figures: DmaFigures,
    /// [`SOURCE`].
    pub source: &'static str,
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
            source: SOURCE,
            trace: trace.to_path_buf(),
            detail,
        })
    }
}

/// After a traced `lab run`: unpacks the guest's map (the job's first fetched directory)
/// into the run directory and measures window 0.
pub fn account_run(run_dir: &Path, map_tar: Option<&(i32, Vec<u8>)>) -> Result<DmaResult> {
    let trace = run_dir.join(TRACE_FILE);
    let missing = |why: &str| LabError::DmaTrace {
        trace: trace.clone(),
        why: why.to_string(),
    };
    let (rc, tar) = map_tar.ok_or_else(|| missing("the guest sent no address map"))?;
    if *rc != 0 {
        return Err(missing("the guest could not archive its address map"));
    }
    let dir = run_dir.join("guest-map");
    unpack_tar(tar, &dir)?;
    let map = load_memory_map(&dir)?;
    let report = account(&trace, &map, &[Window::nth(0)])?
        .pop()
        .ok_or_else(|| missing("no window was measured"))?;
    DmaResult::new(report, &trace)
}

/// One copy of `lab demo`, measured.
#[derive(Debug, Clone, Serialize)]
pub struct MeasuredCopy {
    /// The buffer: a provider's BDF or `host`.
    pub via: String,
    /// `p2pmem copy`'s exit status (None when it did not record one).
    pub exit: Option<i32>,
    /// The figures.
    #[serde(flatten)]
    pub dma: DmaResult,
}

/// The demo's measured copies, from its unpacked results (`results/dma/` holds the map,
/// `copy.pair` names the CMB copy's provider): window 0 the copy through the CMB,
/// window 1 the same copy through a host buffer. Empty when the copy step did not run.
pub fn demo_copies(run_dir: &Path, results: &Path) -> Result<Vec<MeasuredCopy>> {
    let text = |name: &str| std::fs::read_to_string(results.join(name)).ok();
    let Some(pair) = text("copy.pair") else {
        return Ok(Vec::new());
    };
    let via = pair.split_whitespace().next().unwrap_or("?").to_string();
    let trace = run_dir.join(TRACE_FILE);
    let map = load_memory_map(&results.join("dma"))?;
    let reports = account(&trace, &map, &[Window::nth(0), Window::nth(1)])?;
    let exit = |name: &str| text(name).and_then(|t| t.trim().parse().ok());
    let labels = [
        (via, exit("copy.exit")),
        ("host".to_string(), exit("host_copy.exit")),
    ];
    reports
        .into_iter()
        .zip(labels)
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

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn p2pmem_copy_commands_are_recognised() {
        assert!(is_p2pmem_copy(&argv("p2pmem copy a b")));
        assert!(is_p2pmem_copy(&argv("p2pmem --json copy a b --via host")));
        assert!(is_p2pmem_copy(&argv("/bin/p2pmem --root /x copy a b")));
        assert!(!is_p2pmem_copy(&argv("p2pmem --root copy topo")));
        assert!(!is_p2pmem_copy(&argv("p2pmem check a b")));
        assert!(!is_p2pmem_copy(&argv("sh -c p2pmem copy")));
        assert!(!is_p2pmem_copy(&[]));
    }

    #[test]
    fn trace_args_enable_every_event_and_escape_commas() {
        let a = qemu_trace_args(Path::new("/runs/a,b/dma-trace.log"));
        assert_eq!(a.len(), 2 * (event::ALL.len() + 1));
        assert!(a.contains(&"enable=pci_nvme_map_addr_cmb".to_string()));
        assert_eq!(
            a.last().map(String::as_str),
            Some("file=/runs/a,,b/dma-trace.log")
        );
    }

    #[test]
    fn traced_job_brackets_the_command_and_keeps_its_status() {
        let job = traced_job(&argv("p2pmem copy /dev/nvme0n1 /dev/nvme1n1"));
        let s = &job.script;
        let at = |needle: &str| s.find(needle).unwrap_or(usize::MAX);
        assert!(at("lab_dma_map /tmp/lab-dma") < at("lab_dma_mark 21"));
        assert!(at("lab_dma_mark 21") < at("p2pmem copy"));
        assert!(at("p2pmem copy") < at("lab_dma_mark 27"));
        assert!(s.ends_with("exit $rc\n"));
        assert!(s.contains("bs=1536 count=1 skip=$(($1 / 3)) iflag=direct"));
        assert_eq!(job.fetch_dirs, [GUEST_MAP_DIR]);
    }

    #[test]
    fn the_demo_job_measures_its_cmb_copy_then_a_host_copy() {
        let job = crate::pairs::pairs_job(crate::pairs::PairsOptions {
            capture: false,
            check: true,
            copy: true,
        });
        let s = &job.script;
        let at = |needle: &str| s.find(needle).unwrap_or(usize::MAX);
        assert!(at("lab_dma_map \"$OUT/dma\"") < at("lab_dma_mark 21"));
        assert!(at("lab_dma_mark 21") < at("--require-p2p --verify"));
        assert!(at("--require-p2p --verify") < at("lab_dma_mark 27"));
        assert!(at("lab_dma_mark 27") < at("lab_dma_mark 33"));
        assert!(at("lab_dma_mark 33") < at("--via host --verify"));
        assert!(at("--via host --verify") < at("lab_dma_mark 39"));
        assert!(
            !s.contains("@CMB_") && !s.contains("@HOST_"),
            "placeholders left"
        );
    }

    #[test]
    fn a_saved_map_and_trace_give_figures() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("iomem"), "00100000-3ffc8fff : System RAM\n").unwrap();
        std::fs::write(
            d.join("resource.0000:03:00.0"),
            "0x00000000fe800000 0x00000000fe803fff 0x0000000000140204\n",
        )
        .unwrap();
        let map = load_memory_map(d).unwrap();
        assert_eq!(map.bars.len(), 1);
        let trace = d.join(TRACE_FILE);
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
        std::fs::write(d.join("iomem"), "").unwrap();
        assert!(load_memory_map(d).is_err());
    }
}
