//! The `p2pmem_pci` part of the pairs job (`lab demo`, `lab capture`): before anything
//! looks for providers, every QEMU `ivshmem` device is bound with `p2pmem provider bind`
//! (which loads `/lib/modules/p2pmem_pci.ko`), so its BAR is a p2pmem provider like an
//! NVMe CMB; an ivshmem is a provider only, never an NVMe client. After the probes, the
//! demo copies 2 MiB between the first two NVMe that a bound ivshmem reaches, through
//! it, and checks the bytes independently. Results go to `OUT/driver/`.

use std::path::Path;

use serde_json::Value;

use crate::pairs::CopyRun;

/// Binds every ivshmem (1af4:1110) when the guest has the module and a `p2pmem` with
/// `provider`; one line `BDF EXIT` per device in `OUT/driver/bind.txt`.
pub const BIND_SCRIPT: &str = r#"mkdir -p "$OUT/driver"
: > "$OUT/driver/bind.txt"
if [ -f /lib/modules/p2pmem_pci.ko ] && p2pmem provider --help > /dev/null 2>&1; then
  for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor")" = 0x1af4 ] && [ "$(cat "$d/device")" = 0x1110 ] || continue
    bdf=$(basename "$d")
    p2pmem --json provider bind "$bdf" < /dev/null > "$OUT/driver/$bdf.json" 2> "$OUT/driver/$bdf.err"
    echo "$bdf $?" >> "$OUT/driver/bind.txt"
  done
fi
"#;

/// Bytes the driver copy moves: the whole sector pattern of a lab disk.
pub const DRIVER_COPY_BYTES: u64 = 2 << 20;

/// Destination offset of the driver copy (past the pattern, the CMB copy's 4 MiB and the
/// host copy's 5 MiB; the lab's disks are 8 MiB).
pub const DRIVER_COPY_DST_OFFSET_MIB: u64 = 6;

/// The first bound ivshmem that two NVMe can both use (by the kernel's probes): copy the
/// first one's 2 MiB to the second at 6 MiB through it.
pub const DRIVER_COPY_SCRIPT: &str = r#"while read -r dprov drc; do
  [ "$drc" = 0 ] || continue
  dsrc=; ddst=
  while read -r n prov bdf blk prc crc; do
    [ "$prov" = "$dprov" ] || continue
    grep -Eq '"read": *"ok"' "$OUT/pairs/$n.probe.json" || continue
    grep -Eq '"write": *"ok"' "$OUT/pairs/$n.probe.json" || continue
    if [ -z "$dsrc" ]; then dsrc=$blk; elif [ -z "$ddst" ]; then ddst=$blk; fi
  done < "$OUT/pairs/index"
  [ -n "$ddst" ] || continue
  echo "$dprov $dsrc $ddst" > "$OUT/driver/copy.pair"
  p2pmem --json copy "$dsrc" "$ddst" --via "$dprov" --require-p2p --verify --length 2M --dst-offset 6M < /dev/null > "$OUT/driver/copy.json" 2> "$OUT/driver/copy.err"
  echo $? > "$OUT/driver/copy.exit"
  a=$(dd if="$dsrc" bs=1M count=2 2>/dev/null | sha256sum | cut -d' ' -f1)
  b=$(dd if="$ddst" bs=1M skip=6 count=2 2>/dev/null | sha256sum | cut -d' ' -f1)
  echo "$a $b" > "$OUT/driver/copy.sha256"
  break
done < "$OUT/driver/bind.txt"
"#;

/// One `p2pmem provider bind` in the guest.
#[derive(Debug, Clone)]
pub struct DriverBind {
    /// The ivshmem's PCI function.
    pub bdf: String,
    /// Exit status.
    pub exit: i32,
    /// Its JSON output.
    pub report: Option<Value>,
    /// Its stderr.
    pub stderr: String,
}

/// What the driver part of the job brought back (empty when it did not run).
#[derive(Debug, Clone, Default)]
pub struct DriverRun {
    /// The binds, in PCI order.
    pub binds: Vec<DriverBind>,
    /// The copy through a driver-published provider, when one was attempted.
    pub copy: Option<CopyRun>,
}

impl DriverRun {
    /// Reads `OUT/driver/` (the unpacked `OUT` is `dir`); missing files are empty.
    pub fn load(dir: &Path) -> Self {
        let d = dir.join("driver");
        let opt = |name: &str| std::fs::read_to_string(d.join(name)).ok();
        let binds = opt("bind.txt")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (bdf, rc) = l.split_once(' ')?;
                Some(DriverBind {
                    bdf: bdf.to_string(),
                    exit: rc.trim().parse().unwrap_or(-1),
                    report: opt(&format!("{bdf}.json")).and_then(|j| serde_json::from_str(&j).ok()),
                    stderr: opt(&format!("{bdf}.err")).unwrap_or_default(),
                })
            })
            .collect();
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
        Self { binds, copy }
    }

    /// The devices the driver published.
    pub fn providers(&self) -> Vec<String> {
        self.binds
            .iter()
            .filter(|b| b.exit == 0)
            .map(|b| b.bdf.clone())
            .collect()
    }
}

/// The driver copy in words, and whether it verified (`None`: not run). Never faked:
/// the copy must exit 0 through the named provider and the lab's sha256 of both ranges
/// must match.
pub fn driver_copy_step(run: &DriverRun) -> (String, Option<bool>) {
    if run.binds.is_empty() {
        return (
            "not run: no ivshmem bound by p2pmem_pci in this topology".into(),
            None,
        );
    }
    let Some(c) = &run.copy else {
        let failed: Vec<String> = run
            .binds
            .iter()
            .filter(|b| b.exit != 0)
            .map(|b| {
                let why = b
                    .stderr
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                format!("{} (exit {}: {})", b.bdf, b.exit, why.trim())
            })
            .collect();
        return (
            if failed.is_empty() {
                "not run: no p2pmem_pci provider is usable by two NVMe".into()
            } else {
                format!("not run: binding failed for {}", failed.join(", "))
            },
            None,
        );
    };
    let what = format!(
        "2 MiB {} -> {} at 6 MiB through {} (ivshmem published by p2pmem_pci)",
        c.src, c.dst, c.via
    );
    c.verdict(&what, "the provider")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join("driver").join(name), text).unwrap();
    }

    #[test]
    fn a_verified_copy_needs_exit_sha_and_the_provider() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        assert_eq!(driver_copy_step(&DriverRun::load(d)).1, None);
        std::fs::create_dir_all(d.join("driver")).unwrap();
        write(d, "bind.txt", "0000:06:00.2 0\n0000:00:09.0 1\n");
        write(d, "0000:06:00.2.json", r#"{"action":"already_bound"}"#);
        write(
            d,
            "0000:00:09.0.err",
            "p2pmem: the kernel refused to bind\n",
        );
        let run = DriverRun::load(d);
        assert_eq!(run.providers(), ["0000:06:00.2"]);
        assert!(run.binds[0].report.is_some());
        let (text, ok) = driver_copy_step(&run);
        assert_eq!(ok, None);
        assert!(
            text.contains("0000:00:09.0 (exit 1: p2pmem: the kernel refused"),
            "{text}"
        );
        write(d, "copy.pair", "0000:06:00.2 /dev/nvme3n1 /dev/nvme4n1\n");
        write(d, "copy.exit", "0\n");
        write(d, "copy.json", r#"{"via":"0000:06:00.2","bytes":2097152}"#);
        let sha = "a".repeat(64);
        write(d, "copy.sha256", &format!("{sha} {sha}\n"));
        let (text, ok) = driver_copy_step(&DriverRun::load(d));
        assert_eq!(ok, Some(true), "{text}");
        write(d, "copy.json", r#"{"via":"host","bytes":2097152}"#);
        let (text, ok) = driver_copy_step(&DriverRun::load(d));
        assert_eq!(ok, Some(false));
        assert!(text.contains("not in the provider"), "{text}");
    }

    #[test]
    fn scripts_bind_only_ivshmem_and_copy_through_it() {
        assert!(BIND_SCRIPT.contains("0x1af4") && BIND_SCRIPT.contains("0x1110"));
        assert!(BIND_SCRIPT.contains("p2pmem --json provider bind"));
        assert!(DRIVER_COPY_SCRIPT.contains("--require-p2p --verify --length 2M --dst-offset 6M"));
        assert_eq!(DRIVER_COPY_BYTES, 2 << 20);
        assert_eq!(DRIVER_COPY_DST_OFFSET_MIB, 6);
    }
}
