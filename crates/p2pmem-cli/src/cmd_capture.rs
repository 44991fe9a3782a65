//! `p2pmem capture DIR`.

use crate::output::print_json;
use crate::Common;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `capture`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// A new or empty directory to write the capture into.
    pub dir: PathBuf,
}

/// Run `capture`.
pub fn run(common: &Common, args: &CaptureArgs) -> anyhow::Result<i32> {
    let rep = p2pmem_linux::capture::capture(&common.root, &args.dir)?;
    if common.json {
        print_json("capture", &rep)?;
    } else {
        println!(
            "captured {} PCI functions ({} files, {} links) into {}",
            rep.functions,
            rep.files,
            rep.links,
            rep.dir.display()
        );
        println!("replay with: p2pmem --root {} topo", rep.dir.display());
    }
    if !rep.truncated_config.is_empty() {
        eprintln!(
            "p2pmem: warning: config space of {} functions was cut to 64 bytes (not root): ACS state is unknown in this capture; capture as root for a complete one",
            rep.truncated_config.len()
        );
    }
    for p in &rep.problems {
        eprintln!("p2pmem: warning: not captured: {p}");
    }
    Ok(0)
}
