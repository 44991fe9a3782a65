//! The agent's NVMe-oF initiator steps: a connect through `/dev/nvme-fabrics`, as
//! nvme-cli's `connect` does it (the options written, `instance=N,cntlid=M` read back
//! from the same descriptor), retried while the target is not serving yet; the
//! namespaces of the controller it made; and a wait for a block another machine writes.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use p2pmem_linux::dio::{Access, DirectFile};
use p2pmem_linux::p2pbuf::HostBuffer;
use p2pmem_wire::plan::{Connect, CONNECT_RETRY_MS, WAIT_POLL_MS};
use p2pmem_wire::report::Connected;

/// The kernel's fabrics control device.
const FABRICS_DEV: &str = "/dev/nvme-fabrics";

/// The largest answer read back from [`FABRICS_DEV`].
const ANSWER_MAX: u64 = 4096;

/// One write of the options; the kernel's answer (`instance=N,cntlid=M`).
fn connect_once(root: &Path, options: &str) -> std::io::Result<String> {
    let path = root.join(FABRICS_DEV.trim_start_matches('/'));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)?;
    f.write_all(options.as_bytes())?;
    let mut answer = String::new();
    f.take(ANSWER_MAX).read_to_string(&mut answer)?;
    Ok(answer)
}

/// `instance=N,cntlid=M` into (N, M).
fn parse_answer(text: &str) -> Option<(u32, u32)> {
    let mut instance = None;
    let mut cntlid = None;
    for kv in text.trim().split(',') {
        match kv.split_once('=') {
            Some(("instance", v)) => instance = v.trim().parse().ok(),
            Some(("cntlid", v)) => cntlid = v.trim().parse().ok(),
            _ => {}
        }
    }
    Some((instance?, cntlid?))
}

/// The block devices of controller `nvmeN` by NSID (`/sys/class/nvme/nvmeN/nvmeNn*`).
pub fn namespaces(root: &Path, instance: u32) -> Vec<(u32, String)> {
    let ctrl = format!("nvme{instance}");
    let dir = root.join("sys/class/nvme").join(&ctrl);
    let prefix = format!("{ctrl}n");
    let mut out: Vec<(u32, String)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(&prefix)?;
            if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let nsid = std::fs::read_to_string(e.path().join("nsid")).ok()?;
            Some((nsid.trim().parse().ok()?, format!("/dev/{name}")))
        })
        .filter(|(_, dev)| root.join(dev.trim_start_matches('/')).exists())
        .collect();
    out.sort();
    out
}

/// Connects as `c` says, retrying a refused connect every [`CONNECT_RETRY_MS`] for at
/// most `c.wait_ms`, then waits what is left of it for at least one namespace.
pub fn connect(root: &Path, c: &Connect) -> anyhow::Result<Connected> {
    let started = Instant::now();
    let limit = Duration::from_millis(c.wait_ms);
    let options = c.options();
    let mut attempts = 0u32;
    let mut last_refusal = None;
    let answer = loop {
        attempts += 1;
        match connect_once(root, &options) {
            Ok(a) => break a,
            Err(e) => {
                let why = format!("{e}");
                if started.elapsed() + Duration::from_millis(CONNECT_RETRY_MS) > limit {
                    bail!(
                        "writing `{options}` to {FABRICS_DEV} was refused {attempts} times in {:.1} s; the last time: {why}",
                        started.elapsed().as_secs_f64()
                    );
                }
                last_refusal = Some(why);
                std::thread::sleep(Duration::from_millis(CONNECT_RETRY_MS));
            }
        }
    };
    let (instance, cntlid) = parse_answer(&answer)
        .with_context(|| format!("{FABRICS_DEV} answered {answer:?}, not instance=N,cntlid=M"))?;
    let mut found = namespaces(root, instance);
    while found.is_empty() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(100));
        found = namespaces(root, instance);
    }
    if found.is_empty() {
        bail!(
            "controller nvme{instance} (cntlid {cntlid}) showed no namespace within {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let attr = |name: &str| {
        let path = root.join(format!("sys/class/nvme/nvme{instance}/{name}"));
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_string())
            .with_context(|| format!("cannot read {}", path.display()))
    };
    Ok(Connected {
        controller: format!("nvme{instance}"),
        instance,
        cntlid,
        transport: attr("transport")?,
        address: attr("address")?,
        attempts,
        last_refusal,
        namespaces: found,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Reads the block at `offset` of `path` (O_DIRECT) every [`WAIT_POLL_MS`] until it
/// starts with `text`; the seconds that took, or an error after `wait_ms`.
pub fn wait_for_block(path: &Path, offset: u64, text: &str, wait_ms: u64) -> anyhow::Result<f64> {
    const BLOCK: usize = 4096;
    if text.len() > BLOCK {
        bail!("the text to wait for is longer than one block ({BLOCK} bytes)");
    }
    let started = Instant::now();
    let file = DirectFile::open(path, Access::Read)?;
    let mut buf = HostBuffer::new(BLOCK)?;
    let mut polls = 0u64;
    loop {
        polls += 1;
        let got = file.pread_into(&mut buf, 0, BLOCK, offset)?;
        if got >= text.len() && buf.as_slice().starts_with(text.as_bytes()) {
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > Duration::from_millis(wait_ms) {
            let head = String::from_utf8_lossy(&buf.as_slice()[..got.min(64)]).into_owned();
            bail!(
                "{} at byte {offset} did not start with {text:?} within {:.1} s ({polls} reads; it starts with {head:?})",
                path.display(),
                started.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(WAIT_POLL_MS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_answer_is_read() {
        assert_eq!(parse_answer("instance=3,cntlid=1\n"), Some((3, 1)));
        assert_eq!(parse_answer("cntlid=7,instance=12"), Some((12, 7)));
        assert_eq!(parse_answer("instance=3"), None);
        assert_eq!(parse_answer(""), None);
    }

    #[test]
    fn namespaces_are_found_below_a_root() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("sys/class/nvme/nvme2");
        for (name, nsid) in [("nvme2n1", "1"), ("nvme2n2", "5"), ("nvme2c2n1", "1")] {
            std::fs::create_dir_all(c.join(name)).unwrap();
            std::fs::write(c.join(name).join("nsid"), format!("{nsid}\n")).unwrap();
        }
        std::fs::create_dir_all(d.path().join("dev")).unwrap();
        std::fs::write(d.path().join("dev/nvme2n1"), "").unwrap();
        // nvme2n2's node is not there yet: not listed.
        assert_eq!(namespaces(d.path(), 2), [(1, "/dev/nvme2n1".to_string())]);
        assert!(namespaces(d.path(), 9).is_empty());
    }
}
