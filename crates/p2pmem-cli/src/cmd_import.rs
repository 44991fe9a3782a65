//! `p2pmem import lspci FILE DIR`: a capture directory from a bug report's lspci output.

use crate::output::print_json;
use crate::Common;
use anyhow::Context;
use clap::{Args, Subcommand};
use p2pmem_linux::import::{self, Facts};
use p2pmem_model::Bdf;
use std::path::PathBuf;

/// Arguments of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub what: ImportWhat,
}

/// What to import from.
#[derive(Debug, Subcommand)]
pub enum ImportWhat {
    /// Turn `lspci -D -vvv -xxxx` output (run as root: 4096 bytes of config space per
    /// function) into a capture directory DIR that every command reads with
    /// `--root DIR`. `-xxx` (256 bytes) and `lspci -tv` (the tree alone) are accepted
    /// too, with ACS unknown. What lspci cannot tell comes from the options, and every
    /// answer made from DIR says what was given and what is unknown.
    #[command(
        after_help = "Example:\n  p2pmem import lspci bug-1234-lspci.txt /tmp/bug-1234 \
--kernel 6.12.117 --cpu AuthenticAMD:23 --provider 0000:03:00.0=16M\n  \
p2pmem --root /tmp/bug-1234 topo --matrix"
    )]
    Lspci(LspciArgs),
}

/// Arguments of `import lspci`.
#[derive(Debug, Args)]
pub struct LspciArgs {
    /// The lspci output (`lspci -D -vvv -xxxx` as root; `-` for standard input).
    pub file: PathBuf,
    /// A new or empty directory to write the capture into.
    pub dir: PathBuf,
    /// The kernel release of the system (`uname -r`, e.g. 6.12.117); unknown if not
    /// given, and the newest rules are assumed.
    #[arg(long, value_name = "VERSION")]
    pub kernel: Option<String>,
    /// CPU 0's vendor and family as /proc/cpuinfo has them (`AuthenticAMD:23`); unknown
    /// if not given (then not an AMD Zen: the host-bridge whitelist applies).
    #[arg(long, value_name = "VENDOR:FAMILY", value_parser = parse_cpu)]
    pub cpu: Option<(String, u32)>,
    /// A function publishing p2pmem (`ls /sys/bus/pci/devices/*/p2pmem`), with its size
    /// (`16M`, from `p2pmem/size`) when known. Repeat for each provider; no other
    /// function publishes p2pmem in DIR.
    #[arg(long, value_name = "BDF[=SIZE]", value_parser = parse_provider)]
    pub provider: Vec<(Bdf, Option<u64>)>,
}

fn parse_cpu(s: &str) -> Result<(String, u32), String> {
    let (v, f) = s
        .split_once(':')
        .ok_or("expected VENDOR:FAMILY, e.g. AuthenticAMD:23")?;
    let family = match f.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => f.parse(),
    }
    .map_err(|_| format!("family {f:?} is not a number (decimal as in /proc/cpuinfo)"))?;
    if v.is_empty() || v.contains(char::is_whitespace) {
        return Err(format!("vendor {v:?} is not a vendor_id like AuthenticAMD"));
    }
    Ok((v.to_string(), family))
}

fn parse_provider(s: &str) -> Result<(Bdf, Option<u64>), String> {
    let (b, size) = match s.split_once('=') {
        Some((b, sz)) => (b, Some(p2pmem_model::size::parse_size(sz)?)),
        None => (s, None),
    };
    let bdf: Bdf = b.parse().map_err(|e| format!("{e}"))?;
    Ok((bdf, size))
}

/// Run `import`.
pub fn run(common: &Common, args: &ImportArgs) -> anyhow::Result<i32> {
    let ImportWhat::Lspci(a) = &args.what;
    let facts = Facts {
        kernel: a.kernel.clone(),
        cpu: a.cpu.clone(),
        providers: a.provider.clone(),
        source: None,
    };
    let rep = if a.file.as_os_str() == "-" {
        let bytes = p2pmem_linux::bounded::read_from(
            std::io::stdin().lock(),
            std::path::Path::new("standard input"),
            p2pmem_model::limits::LSPCI_TEXT,
        )?;
        let facts = Facts {
            source: Some("standard input".into()),
            ..facts
        };
        import::lspci(&String::from_utf8_lossy(&bytes), &facts, &a.dir)
    } else {
        import::lspci_file(&a.file, &facts, &a.dir)
    }
    .context("import lspci")?;
    if common.json {
        print_json("import", &rep)?;
    } else {
        println!(
            "imported {} PCI functions into {}",
            rep.functions,
            rep.dir.display()
        );
        println!("{}", rep.note.describe());
        println!("read it with: p2pmem --root {} topo", rep.dir.display());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_provider_options() {
        assert_eq!(
            parse_cpu("AuthenticAMD:23"),
            Ok(("AuthenticAMD".into(), 23))
        );
        assert_eq!(parse_cpu("AuthenticAMD:0x17").unwrap().1, 23);
        assert!(parse_cpu("AuthenticAMD").is_err());
        assert!(parse_cpu(":23").is_err());
        let (b, s) = parse_provider("0000:03:00.0=16M").unwrap();
        assert_eq!((b.to_string(), s), ("0000:03:00.0".into(), Some(16 << 20)));
        assert_eq!(parse_provider("0000:03:00.0").unwrap().1, None);
        assert!(parse_provider("0000:03:00.0=lots").is_err());
        assert!(parse_provider("nope").is_err());
    }
}
