//! `p2pmem provider bind|unbind`: publish any PCI device's memory BAR as p2pmem with the
//! `p2pmem_pci` driver (a Rust kernel module, `driver/p2pmem_pci/`), or stop.
//!
//! `bind` loads the module when needed, binds the device through sysfs (the region
//! chosen with `--bar/--offset/--size` goes to the driver's `ranges` attribute first),
//! waits for `p2pmem/`, then shows the provider with the model's verdict for every NVMe
//! and RDMA client of the system. Exit status: 0 done, 1 the kernel refused the bind
//! (its messages are quoted), 2 any other error.

use crate::cmd_copy::parse_size;
use crate::output::{opt_size, print_json, size};
use crate::Common;
use anyhow::Context;
use clap::{Args, Subcommand};
use p2pmem_linux::klog::Syslog;
use p2pmem_linux::provider::{
    self, ActiveRegion, BindAction, BindOptions, ProviderError, RegionRequest, DRIVER,
};
use p2pmem_linux::system::{read_system, System};
use p2pmem_model::distance::decide;
use p2pmem_model::Bdf;
use p2pmem_wire::bind::{BindReport, ClientVerdict};
use p2pmem_wire::report::BindAttempt;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `provider`.
#[derive(Debug, Args)]
pub struct ProviderArgs {
    #[command(subcommand)]
    command: ProviderCommand,
}

#[derive(Debug, Subcommand)]
enum ProviderCommand {
    /// Bind BDF to p2pmem_pci and publish a memory BAR as p2pmem (default: the whole
    /// largest prefetchable BAR). Loads the module if needed.
    #[command(after_help = "Examples:\n  p2pmem provider bind 0000:06:00.2\n  \
p2pmem provider bind 0000:00:08.0 --bar 2 --offset 2M --size 4M\n\n\
The range must be a multiple of 2 MiB and start 2 MiB-aligned (ZONE_DEVICE).\n\
QEMU ivshmem (1af4:1110) is bound by the module as soon as it loads; other devices \
are bound with driver_override, and must not be bound to another driver.")]
    Bind(BindArgs),
    /// Unbind BDF from p2pmem_pci: p2pmem/ goes away (user mappings of it are unmapped).
    Unbind(UnbindArgs),
}

#[derive(Debug, Args)]
struct BindArgs {
    /// The PCI function, e.g. 0000:06:00.2.
    bdf: Bdf,
    /// The BAR to publish (0-5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=5))]
    bar: Option<u8>,
    /// Offset into the BAR (e.g. 2M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    offset: Option<u64>,
    /// Bytes to publish from the offset (default: to the end of the BAR).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    size: Option<u64>,
    /// The module file to load (default: lib/modules/$(uname -r)/{extra,updates}/ or
    /// lib/modules/, as found).
    #[arg(long, value_name = "PATH")]
    module: Option<PathBuf>,
    /// Seconds to wait for p2pmem/ to appear.
    #[arg(long, value_name = "SECS", default_value = "10")]
    wait: u64,
}

#[derive(Debug, Args)]
struct UnbindArgs {
    /// The PCI function.
    bdf: Bdf,
    /// Seconds to wait for p2pmem/ to go away.
    #[arg(long, value_name = "SECS", default_value = "10")]
    wait: u64,
}

/// Run `provider`.
pub fn run(common: &Common, args: &ProviderArgs) -> anyhow::Result<i32> {
    match &args.command {
        ProviderCommand::Bind(a) => run_bind(common, a),
        ProviderCommand::Unbind(a) => run_unbind(common, a),
    }
}

/// How a bind ended short of an error.
pub enum BindEnd {
    /// Bound: the report `provider bind --json` prints, and the system read after it.
    Bound(Box<(BindReport, System)>),
    /// The kernel refused (exit 1): its reason.
    Refused(String),
}

/// Binds `bdf` to `p2pmem_pci` and reports what it published with the model's verdict
/// for every client: the engine of `provider bind`, shared with the lab agent.
pub fn bind_report(root: &Path, bdf: Bdf, opts: &BindOptions) -> anyhow::Result<BindEnd> {
    let outcome = match provider::bind(root, bdf, opts, &mut Syslog) {
        Ok(o) => o,
        Err(e @ ProviderError::Refused { .. }) => return Ok(BindEnd::Refused(e.to_string())),
        Err(e) => return Err(e).context(format!("cannot bind {bdf} to {DRIVER}")),
    };
    let sys = read_system(root)
        .with_context(|| format!("cannot read the system below {}", root.display()))?;
    let info = sys.topology.get(&bdf).and_then(|f| f.p2pmem);
    let report = BindReport {
        bdf,
        driver: DRIVER.to_string(),
        action: outcome.action,
        module_loaded: outcome.loaded,
        region: outcome.region,
        size: info.and_then(|i| i.size),
        available: info.and_then(|i| i.available),
        published: info.and_then(|i| i.published),
        kernel: sys.rules.kernel.to_string(),
        clients: clients(&sys, bdf),
    };
    Ok(BindEnd::Bound(Box::new((report, sys))))
}

/// The running kernel's release below `root`, for the module search.
pub fn release(root: &Path) -> Option<String> {
    p2pmem_linux::rootfs::RootFs::new(root)
        .read_opt_string("proc/sys/kernel/osrelease")
        .ok()
        .flatten()
}

fn run_bind(common: &Common, a: &BindArgs) -> anyhow::Result<i32> {
    let opts = BindOptions {
        region: RegionRequest {
            bar: a.bar,
            offset: a.offset,
            size: a.size,
        },
        module: a.module.clone(),
        release: release(&common.root),
        wait: Some(Duration::from_secs(a.wait)),
    };
    let (r, sys) = match bind_report(&common.root, a.bdf, &opts)? {
        BindEnd::Bound(b) => *b,
        BindEnd::Refused(why) => {
            eprintln!("p2pmem: {why}");
            return Ok(1);
        }
    };
    if common.json {
        print_json("provider_bind", &r)?;
        return Ok(0);
    }
    let outcome = &r;
    let info = sys.topology.get(&r.bdf).and_then(|f| f.p2pmem);
    let clients = &r.clients;
    if let Some(m) = &outcome.module_loaded {
        println!("loaded {DRIVER} from {}", m.display());
    }
    let what = match outcome.action {
        BindAction::Bound => "bound to",
        BindAction::Rebound => "rebound to",
        BindAction::AlreadyBound => "already bound to",
    };
    println!("{} {what} {DRIVER}", r.bdf);
    match &outcome.region {
        Some(r) => println!(
            "  publishes BAR {}: offset {:#x}, {} at {:#x} (the BAR is {})",
            r.bar,
            r.offset,
            size(r.size),
            r.start,
            size(r.bar_len)
        ),
        None => println!("  (the driver's providers file does not list it)"),
    }
    match info {
        Some(i) => println!(
            "  p2pmem/: size {}, available {}, {}",
            opt_size(i.size),
            opt_size(i.available),
            match i.published {
                Some(true) => "published",
                Some(false) => "not published",
                None => "published: ?",
            }
        ),
        None => println!("  p2pmem/: not found"),
    }
    let cpu = &sys.rules.cpu;
    println!(
        "clients (the model's verdict on kernel {}, CPU {} family {}):",
        sys.rules.kernel,
        cpu.vendor_id.as_deref().unwrap_or("?"),
        cpu.family
            .map_or_else(|| "?".to_string(), |f| f.to_string())
    );
    if clients.is_empty() {
        println!("  none: no NVMe or RDMA device with a PCI function");
    }
    for c in clients {
        let names = if c.names.is_empty() {
            String::new()
        } else {
            format!(" ({})", c.names.join(", "))
        };
        let verdict = match (c.supported, c.map_type.as_deref(), c.distance) {
            (Some(true), Some(m), Some(d)) => format!("can use it: {m}, distance {d}"),
            (Some(true), m, _) => format!("can use it: {}", m.unwrap_or("?")),
            (Some(false), _, _) => "refused".to_string(),
            (None, _, _) => "unknown (run as root to read ACS)".to_string(),
        };
        println!("  {}{names}: {verdict}", c.bdf);
        for m in &c.messages {
            println!("    kernel: {m}");
        }
    }
    Ok(0)
}

/// Every NVMe controller and RDMA device with a PCI function, with the model's verdict
/// for `provider`.
fn clients(sys: &System, provider: Bdf) -> Vec<ClientVerdict> {
    let mut out: Vec<ClientVerdict> = Vec::new();
    let named = sys
        .nvme
        .iter()
        .filter_map(|c| Some((c.bdf?, c.name.clone())))
        .chain(
            sys.rdma
                .iter()
                .filter_map(|r| Some((r.bdf?, r.name.clone()))),
        );
    for (bdf, name) in named {
        if let Some(c) = out.iter_mut().find(|c| c.bdf == bdf) {
            c.names.push(name);
            continue;
        }
        let mut names = vec![name];
        names.extend(
            sys.block
                .iter()
                .filter(|b| b.bdfs == [bdf] && !b.partition)
                .map(|b| b.name.clone()),
        );
        let (supported, map_type, distance, messages) =
            match decide(&sys.topology, &sys.rules, provider, bdf) {
                Ok(v) => (
                    v.supported,
                    v.map_type.map(|m| m.as_str().to_string()),
                    (v.supported == Some(true)).then_some(v.walk_distance),
                    v.messages.iter().map(|m| m.line.clone()).collect(),
                ),
                Err(e) => (None, None, None, vec![e.to_string()]),
            };
        out.push(ClientVerdict {
            bdf,
            names,
            supported,
            map_type,
            distance,
            messages,
        });
    }
    out.sort_by_key(|c| c.bdf);
    out
}

#[derive(Serialize)]
struct UnbindJson<'a> {
    bdf: Bdf,
    driver: &'static str,
    action: &'static str,
    region: Option<&'a ActiveRegion>,
}

fn run_unbind(common: &Common, a: &UnbindArgs) -> anyhow::Result<i32> {
    let unbound = provider::unbind(&common.root, a.bdf, Some(Duration::from_secs(a.wait)))
        .with_context(|| format!("cannot unbind {} from {DRIVER}", a.bdf))?;
    let (action, region) = match unbound {
        provider::Unbound::Unbound(region) => ("unbound", region),
        provider::Unbound::HalfBound => ("cleared_half_bind", None),
    };
    if common.json {
        print_json(
            "provider_unbind",
            &UnbindJson {
                bdf: a.bdf,
                driver: DRIVER,
                action,
                region: region.as_ref(),
            },
        )?;
    } else if action == "cleared_half_bind" {
        println!(
            "{} was not bound, but its driver_override named {DRIVER} (a bind that was interrupted); cleared it",
            a.bdf
        );
    } else {
        println!("{} unbound from {DRIVER}; p2pmem/ is gone", a.bdf);
        if let Some(r) = region {
            println!(
                "  it published BAR {}: offset {:#x}, {}",
                r.bar,
                r.offset,
                size(r.size)
            );
        }
    }
    Ok(0)
}

/// `lab demo`: the ivshmem devices the guest bound with `provider bind`.
pub fn print_demo_binds(binds: &[BindAttempt]) {
    if binds.is_empty() {
        return;
    }
    println!("ivshmem devices, published by {DRIVER} (a Rust kernel module):");
    for b in binds {
        let r = b.report.as_ref();
        let bar = r.and_then(|r| r.region).map(|g| g.bar);
        match (b.exit, r.and_then(|r| r.size), bar) {
            (0, Some(bytes), Some(bar)) => println!(
                "  {}  BAR {bar}: p2pmem {} ({})",
                b.bdf,
                size(bytes),
                if r.and_then(|r| r.published) == Some(true) {
                    "published"
                } else {
                    "not published"
                }
            ),
            (0, _, _) => println!("  {}  bound", b.bdf),
            (rc, _, _) => println!(
                "  {}  NOT bound (exit {rc}): {}",
                b.bdf,
                b.messages.first().map(String::as_str).unwrap_or("").trim()
            ),
        }
    }
}

/// `lab demo`: the copy through a provider the driver published, with its speed.
pub fn print_demo_copy(s: &p2pmem_lab::reports::demo::DemoSummary) {
    if s.driver_providers.is_empty()
        && s.driver_copy_verified.is_none()
        && s.driver_not_built.is_none()
    {
        return;
    }
    let speed = s
        .driver_copy_report
        .as_ref()
        .map(|r| format!(" at {:.0} MB/s", r.report.bytes_per_second / 1e6))
        .unwrap_or_default();
    println!(
        "verified copy through the p2pmem_pci provider: {}{speed}",
        s.driver_copy
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProviderArgs,
    }

    fn parse(args: &[&str]) -> Result<ProviderArgs, clap::Error> {
        let m = Cli::command().try_get_matches_from(args)?;
        Cli::from_arg_matches(&m).map(|c| c.args)
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bind_takes_a_bar_and_a_range_in_units() {
        let a = parse(&[
            "p",
            "bind",
            "0000:00:08.0",
            "--bar",
            "2",
            "--offset",
            "2M",
            "--size",
            "4M",
        ])
        .unwrap();
        match a.command {
            ProviderCommand::Bind(b) => {
                assert_eq!(b.bdf.to_string(), "0000:00:08.0");
                assert_eq!(
                    (b.bar, b.offset, b.size),
                    (Some(2), Some(2 << 20), Some(4 << 20))
                );
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse(&["p", "bind", "0000:00:08.0", "--bar", "6"]).is_err());
        assert!(parse(&["p", "bind", "not-a-bdf"]).is_err());
    }
}
