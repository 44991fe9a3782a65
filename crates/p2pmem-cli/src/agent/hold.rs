//! `p2pmem agent hold-p2pmem`: map a provider's p2pmem and keep the mapping while
//! something else happens to the provider (the lab unbinds it or unloads its driver),
//! then touch it again and say what happened. Lines on stdout, flushed as they happen:
//! `mapped ...`, `touching`, then `read ...` when the access returned, or `gone: ...`
//! (exit status 1) when the mapping had been torn down: the access raised SIGBUS in
//! the guard process of [`P2pBuffer`]'s CPU accessors, and this process lives on to say
//! so.

use anyhow::Context;
use p2pmem_linux::p2pbuf::{CpuAccessError, DmaBuffer, P2pBuffer};
use p2pmem_model::Bdf;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `p2pmem agent hold-p2pmem`.
#[derive(Debug, clap::Args)]
pub struct HoldArgs {
    /// The p2pmem provider.
    #[arg(long, value_name = "BDF")]
    pub provider: Bdf,
    /// Bytes to map.
    #[arg(long, value_name = "SIZE", default_value = "2M", value_parser = crate::cmd_copy::parse_size)]
    pub len: u64,
    /// Keep the mapping until this file exists, then touch it.
    #[arg(long, value_name = "FILE")]
    pub until: PathBuf,
    /// Give up waiting after this many seconds.
    #[arg(long, value_name = "SECS", default_value = "300")]
    pub timeout: u64,
    /// Root directory that holds `sys/`.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

const PATTERN: u8 = 0xa5;

fn say(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("writing to stdout")?;
    out.flush().context("writing to stdout")
}

/// Runs it; 0 when the second access returned, 1 when the memory was gone (the access
/// raised SIGBUS in the guard process), 2 when the mapping could not be made, the file
/// never appeared or an access failed otherwise.
pub fn run(a: &HoldArgs) -> anyhow::Result<i32> {
    let len = usize::try_from(a.len).context("--len does not fit in memory")?;
    let mut buf = P2pBuffer::map(&a.root, a.provider, len)
        .with_context(|| format!("cannot map {len} bytes of {}'s p2pmem", a.provider))?;
    buf.fill(PATTERN).context("cannot fill the fresh mapping")?;
    let mut head = [0u8; 8];
    buf.copy_to_host(0, &mut head)
        .context("cannot read the fresh mapping back")?;
    say(&format!(
        "mapped {} bytes of {} p2pmem, first bytes {:02x?}",
        buf.len(),
        a.provider,
        head
    ))?;
    let start = Instant::now();
    while !a.until.exists() {
        if start.elapsed() > Duration::from_secs(a.timeout) {
            say("timeout: the file never appeared")?;
            return Ok(2);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    say("touching")?;
    let mut again = [0u8; 8];
    match buf.copy_to_host(0, &mut again) {
        Ok(()) => {}
        Err(e @ CpuAccessError::DeviceMemoryGone { .. }) => {
            say(&format!("gone: {e}"))?;
            return Ok(1);
        }
        Err(e) => return Err(e).context("the second access failed"),
    }
    say(&format!(
        "read {again:02x?} ({})",
        if again == [PATTERN; 8] {
            "the pattern is still there"
        } else {
            "the pattern is gone"
        }
    ))?;
    Ok(0)
}
