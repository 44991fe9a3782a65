//! The guest side of `lab capture` and `lab demo`: one job that (optionally) captures
//! sysfs with `p2pmem capture`, lists the NVMe devices, and runs every (provider,
//! client) pair exactly once with `p2pmem agent dma-probe` (and, for the demo, the
//! prediction `p2pmem check --json` first), sleeping 2 s after a failing pair so that the
//! kernel's rate-limited `blk_print_req_error` lines are never suppressed. The results
//! come back as one tar stream of [`OUT`], read by [`PairsResult::load`].

use std::path::Path;

use p2pmem_model::dma_accounting::Window;
use serde_json::Value;

use crate::error::{io_err, LabError, Result};
use crate::lab::Job;

/// The guest directory holding the job's results.
pub const OUT: &str = "/tmp/lab-out";

/// What the pairs job does besides the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairsOptions {
    /// Run `p2pmem capture` into `OUT/capture` before any probe.
    pub capture: bool,
    /// Run `p2pmem check --json PROVIDER CLIENT` before each probe.
    pub check: bool,
    /// After the probes, copy 1 MiB between two NVMe through a CMB with `p2pmem copy`
    /// (when the guest binary has it), and check the bytes independently with sha256.
    pub copy: bool,
}

/// Bytes the demo copy moves.
pub const COPY_BYTES: u64 = 1 << 20;
/// Destination offset of the demo copy (a scratch area past the pattern).
pub const COPY_DST_OFFSET_MIB: u64 = 4;

/// The guest job.
pub fn pairs_job(opts: PairsOptions) -> Job {
    let mut s = String::new();
    s.push_str(&format!("OUT={OUT}\n"));
    s.push_str(
        r#"mkdir -p "$OUT/pairs"
cat /proc/cpuinfo > "$OUT/cpuinfo"
cat /proc/cmdline > "$OUT/cmdline"
uname -r > "$OUT/osrelease"
"#,
    );
    s.push_str(crate::provider_job::BIND_SCRIPT);
    if opts.capture {
        s.push_str(
            r#"p2pmem capture "$OUT/capture" > "$OUT/capture.log" 2>&1
echo $? > "$OUT/capture.rc"
"#,
        );
    }
    s.push_str(
        r#": > "$OUT/nvme.txt"
for b in $(ls /sys/block | grep '^nvme' | sort); do
  ctrl=$(basename "$(readlink -f "/sys/block/$b/device")")
  bdf=$(basename "$(readlink -f "/sys/class/nvme/$ctrl/device")")
  serial=$(tr -d ' ' < "/sys/class/nvme/$ctrl/serial")
  echo "$serial $ctrl $bdf /dev/$b" >> "$OUT/nvme.txt"
done
providers=$(for p in /sys/bus/pci/devices/*/p2pmem; do [ -d "$p" ] && basename "$(dirname "$p")"; done | sort)
p2pmem copy --help > /dev/null 2>&1
echo $? > "$OUT/copy.rc"
: > "$OUT/pairs/index"
sort -k3 "$OUT/nvme.txt" > "$OUT/clients.txt"
n=0
for prov in $providers; do
  while read -r serial ctrl bdf blk; do
"#,
    );
    if opts.check {
        s.push_str(
            r#"    p2pmem check --json "$prov" "$bdf" < /dev/null > "$OUT/pairs/$n.check.json" 2> "$OUT/pairs/$n.check.err"
    crc=$?
"#,
        );
    } else {
        s.push_str("    crc=-\n");
    }
    s.push_str(
        r#"    p2pmem agent dma-probe --provider "$prov" --client "$blk" --json < /dev/null > "$OUT/pairs/$n.probe.json" 2> "$OUT/pairs/$n.probe.err"
    prc=$?
    echo "$n $prov $bdf $blk $prc $crc" >> "$OUT/pairs/index"
    if ! grep -Eq '"read": *"ok"' "$OUT/pairs/$n.probe.json" || ! grep -Eq '"write": *"ok"' "$OUT/pairs/$n.probe.json"; then
      sleep 2
    fi
    n=$((n + 1))
  done < "$OUT/clients.txt"
done
"#,
    );
    if opts.copy {
        s.push_str(&crate::trace::guest_functions());
        s.push_str(&copy_script());
        s.push_str(crate::provider_job::DRIVER_COPY_SCRIPT);
    }
    Job {
        script: s,
        fetch_dirs: vec![OUT.to_string()],
    }
}

/// The first working pair between two different NVMe whose provider is itself an NVMe:
/// copy the provider's first MiB to the client at 4 MiB through the provider's CMB, then
/// the same MiB to 5 MiB through a host buffer, each between the DMA-trace markers of its
/// window (0 and 1, see [`crate::trace`]); the guest's address map goes to `OUT/dma`.
fn copy_script() -> String {
    let (cmb, host) = (Window::nth(0), Window::nth(1));
    COPY_SCRIPT
        .replace("@CMB_BEGIN@", &cmb.begin_lba.to_string())
        .replace("@CMB_END@", &cmb.end_lba.to_string())
        .replace("@HOST_BEGIN@", &host.begin_lba.to_string())
        .replace("@HOST_END@", &host.end_lba.to_string())
}

const COPY_SCRIPT: &str = r#"if [ "$(cat "$OUT/copy.rc")" = 0 ]; then
  lab_dma_map "$OUT/dma"
  while read -r n prov bdf blk prc crc; do
    [ "$prov" = "$bdf" ] && continue
    grep -Eq '"read": *"ok"' "$OUT/pairs/$n.probe.json" || continue
    src=$(awk -v p="$prov" '$3 == p { print $4 }' "$OUT/nvme.txt")
    [ -n "$src" ] || continue
    echo "$prov $src $blk" > "$OUT/copy.pair"
    lab_dma_mark @CMB_BEGIN@
    p2pmem --json copy "$src" "$blk" --via "$prov" --require-p2p --verify --length 1M --dst-offset 4M < /dev/null > "$OUT/copy.json" 2> "$OUT/copy.err"
    echo $? > "$OUT/copy.exit"
    lab_dma_mark @CMB_END@
    lab_dma_mark @HOST_BEGIN@
    p2pmem --json copy "$src" "$blk" --via host --verify --length 1M --dst-offset 5M < /dev/null > "$OUT/host_copy.json" 2> "$OUT/host_copy.err"
    echo $? > "$OUT/host_copy.exit"
    lab_dma_mark @HOST_END@
    a=$(dd if="$src" bs=1M count=1 2>/dev/null | sha256sum | cut -d' ' -f1)
    b=$(dd if="$blk" bs=1M skip=4 count=1 2>/dev/null | sha256sum | cut -d' ' -f1)
    echo "$a $b" > "$OUT/copy.sha256"
    break
  done < "$OUT/pairs/index"
fi
"#;

/// The demo copy, as run in the guest.
#[derive(Debug, Clone)]
pub struct CopyRun {
    /// The provider whose CMB held the buffer.
    pub via: String,
    /// Source block device (the provider's namespace).
    pub src: String,
    /// Destination block device.
    pub dst: String,
    /// `p2pmem copy` exit status.
    pub exit: i32,
    /// Its JSON report, if it printed one.
    pub report: Option<Value>,
    /// Its stderr.
    pub stderr: String,
    /// sha256 of the source range and of the destination range, read back by the lab.
    pub sha256: Option<(String, String)>,
}

impl CopyRun {
    /// Judge the run: verified when `p2pmem copy --verify` exited 0, its report names
    /// `via` as the buffer, and the lab's own sha256 of both ranges match. `what`
    /// describes the copy, `place` where the buffer was meant to be ("the CMB").
    pub fn verdict(&self, what: &str, place: &str) -> (String, Option<bool>) {
        let sha_ok = self
            .sha256
            .as_ref()
            .is_some_and(|(a, b)| a == b && a.len() == 64);
        let via_ok = self
            .report
            .as_ref()
            .and_then(|r| r.get("via"))
            .and_then(Value::as_str)
            == Some(self.via.as_str());
        if self.exit == 0 && sha_ok && via_ok {
            return (
                format!(
                    "verified: {what} (p2pmem copy --verify ok; the lab's sha256 of both ranges match)"
                ),
                Some(true),
            );
        }
        let why = self
            .stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        (
            format!(
                "FAILED: {what}: exit status {}, sha256 {}, buffer {}in {place}{}",
                self.exit,
                if sha_ok { "match" } else { "differ" },
                if via_ok { "" } else { "not " },
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            ),
            Some(false),
        )
    }
}

/// One NVMe controller as the guest saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNvme {
    /// Serial number.
    pub serial: String,
    /// Controller name (`nvme0`).
    pub ctrl: String,
    /// PCI function.
    pub bdf: String,
    /// Namespace block device (`/dev/nvme0n1`).
    pub blkdev: String,
}

/// One (provider, client) pair's results.
#[derive(Debug, Clone)]
pub struct PairResult {
    /// Provider BDF.
    pub provider: String,
    /// Client BDF.
    pub client: String,
    /// Client block device.
    pub blkdev: String,
    /// `p2pmem agent dma-probe` exit status.
    pub probe_rc: i32,
    /// Its JSON output, if it printed valid JSON.
    pub probe: Option<Value>,
    /// Its stderr.
    pub probe_err: String,
    /// `p2pmem check` exit status (None when not run).
    pub check_rc: Option<i32>,
    /// Its JSON output, if any.
    pub check: Option<Value>,
    /// Its stderr.
    pub check_err: String,
}

/// Everything the pairs job brought back.
#[derive(Debug, Clone)]
pub struct PairsResult {
    /// `/proc/cpuinfo`.
    pub cpuinfo: String,
    /// `/proc/cmdline`, trimmed.
    pub cmdline: String,
    /// `uname -r`.
    pub osrelease: String,
    /// `p2pmem capture` status and log, when run.
    pub capture: Option<(i32, String)>,
    /// NVMe devices in block-device order.
    pub nvme: Vec<GuestNvme>,
    /// Whether the guest binary has a `copy` subcommand.
    pub copy_available: bool,
    /// The pairs in run order.
    pub pairs: Vec<PairResult>,
    /// The demo copy, when one was attempted.
    pub copy: Option<CopyRun>,
    /// The `p2pmem_pci` binds and the copy through a provider it published.
    pub driver: crate::provider_job::DriverRun,
}

impl PairsResult {
    /// Reads the unpacked `OUT` directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| -> Result<String> {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(io_err("cannot read the guest's", p))
        };
        let opt = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let nvme = read("nvme.txt")?
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() == 4).then(|| GuestNvme {
                    serial: w[0].into(),
                    ctrl: w[1].into(),
                    bdf: w[2].into(),
                    blkdev: w[3].into(),
                })
            })
            .collect();
        let mut pairs = Vec::new();
        for line in read("pairs/index")?.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() != 6 {
                return Err(LabError::Protocol {
                    line: 0,
                    why: format!("bad pairs/index line {line:?}"),
                });
            }
            let n = w[0];
            let json = |suffix: &str| -> Option<Value> {
                serde_json::from_str(&opt(&format!("pairs/{n}.{suffix}"))?).ok()
            };
            pairs.push(PairResult {
                provider: w[1].into(),
                client: w[2].into(),
                blkdev: w[3].into(),
                probe_rc: w[4].parse().unwrap_or(-1),
                probe: json("probe.json"),
                probe_err: opt(&format!("pairs/{n}.probe.err")).unwrap_or_default(),
                check_rc: w[5].parse().ok(),
                check: json("check.json"),
                check_err: opt(&format!("pairs/{n}.check.err")).unwrap_or_default(),
            });
        }
        let capture = opt("capture.rc").map(|rc| {
            (
                rc.trim().parse().unwrap_or(-1),
                opt("capture.log").unwrap_or_default(),
            )
        });
        let copy = opt("copy.pair").and_then(|pair| {
            let w: Vec<&str> = pair.split_whitespace().collect();
            (w.len() == 3).then(|| CopyRun {
                via: w[0].into(),
                src: w[1].into(),
                dst: w[2].into(),
                exit: opt("copy.exit")
                    .and_then(|e| e.trim().parse().ok())
                    .unwrap_or(-1),
                report: opt("copy.json").and_then(|j| serde_json::from_str(&j).ok()),
                stderr: opt("copy.err").unwrap_or_default(),
                sha256: opt("copy.sha256").and_then(|t| {
                    let (a, b) = t.trim().split_once(' ')?;
                    Some((a.to_string(), b.to_string()))
                }),
            })
        });
        Ok(Self {
            copy,
            cpuinfo: read("cpuinfo")?,
            cmdline: read("cmdline")?.trim().to_string(),
            osrelease: read("osrelease")?.trim().to_string(),
            capture,
            nvme,
            copy_available: opt("copy.rc").is_some_and(|rc| rc.trim() == "0"),
            pairs,
            driver: crate::provider_job::DriverRun::load(dir),
        })
    }
}

/// `(vendor_id, cpu family)` from `/proc/cpuinfo` text.
pub fn cpu_identity(cpuinfo: &str) -> (Option<String>, Option<u32>) {
    let field = |key: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    (
        field("vendor_id"),
        field("cpu family").and_then(|f| f.parse().ok()),
    )
}

/// Is this probe result a working transfer (read and write both `ok`)?
pub fn probe_ok(probe: &Value) -> bool {
    probe.get("read").and_then(Value::as_str) == Some("ok")
        && probe.get("write").and_then(Value::as_str) == Some("ok")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_identity_reads_vendor_and_family() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: 1\n";
        assert_eq!(cpu_identity(text), (Some("AuthenticAMD".into()), Some(23)));
        assert_eq!(cpu_identity(""), (None, None));
    }

    #[test]
    fn job_fetches_out_and_runs_each_pair_once() {
        let job = pairs_job(PairsOptions {
            capture: true,
            check: true,
            copy: true,
        });
        assert_eq!(job.fetch_dirs, [OUT]);
        assert_eq!(job.script.matches("p2pmem agent dma-probe").count(), 1);
        assert!(job.script.contains("p2pmem check --json"));
        assert!(job.script.contains("sleep 2"));
        let plain = pairs_job(PairsOptions {
            capture: false,
            check: false,
            copy: false,
        });
        assert!(!plain.script.contains("p2pmem capture"));
        assert!(!plain.script.contains("p2pmem check"));
        assert!(!plain.script.contains("copy \""));
        assert!(job.script.contains("--require-p2p --verify"));
    }

    #[test]
    fn load_reads_index_and_tolerates_missing_json() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("pairs")).unwrap();
        std::fs::write(d.join("cpuinfo"), "vendor_id : AuthenticAMD\n").unwrap();
        std::fs::write(d.join("cmdline"), "console=ttyS0 panic=-1\n").unwrap();
        std::fs::write(d.join("osrelease"), "6.12.117\n").unwrap();
        std::fs::write(d.join("nvme.txt"), "swA nvme0 0000:03:00.0 /dev/nvme0n1\n").unwrap();
        std::fs::write(d.join("copy.rc"), "2\n").unwrap();
        std::fs::write(
            d.join("pairs/index"),
            "0 0000:03:00.0 0000:03:00.0 /dev/nvme0n1 0 -\n1 0000:03:00.0 0000:04:00.0 /dev/nvme1n1 1 -\n",
        )
        .unwrap();
        std::fs::write(
            d.join("pairs/0.probe.json"),
            r#"{"read":"ok","write":"ok"}"#,
        )
        .unwrap();
        let r = PairsResult::load(d).unwrap();
        assert_eq!(r.cmdline, "console=ttyS0 panic=-1");
        assert_eq!(r.nvme[0].bdf, "0000:03:00.0");
        assert!(!r.copy_available);
        assert_eq!(r.pairs.len(), 2);
        assert!(probe_ok(r.pairs[0].probe.as_ref().unwrap()));
        assert!(r.pairs[1].probe.is_none());
        assert_eq!(r.pairs[1].probe_rc, 1);
        assert_eq!(r.pairs[0].check_rc, None);
        assert!(r.copy.is_none());
    }
}
