//! Where the copy buffer lives, decided with the model: `--via auto` takes the provider
//! the kernel's `pci_p2pmem_find_many()` would pick with both devices' PCI functions as
//! clients, `--via BDF` checks that provider against both, `--via host` skips P2P.
//! A path the model predicts refused is refused here, before anything is written.

use super::endpoint::Endpoint;
use super::error::CopyError;
use super::placement::{no_userspace_p2p, PlacementError, STILL_WORKS};
use crate::dio::DirectKind;
use crate::p2pbuf::Location;
use crate::rootfs::RootFs;
use crate::system::{read_system, System};
use p2pmem_model::distance::MapType;
use p2pmem_model::errno;
use p2pmem_model::select::{self, Check, Found};
use p2pmem_model::Bdf;
use rustix::io::Errno;
use serde::Serialize;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Where to put the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The provider the kernel would choose; host memory when there is none.
    Auto,
    /// Host memory.
    Host,
    /// This provider's p2pmem.
    Provider(Bdf),
}

impl FromStr for Via {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "host" => Ok(Self::Host),
            other => other
                .parse()
                .map(Self::Provider)
                .map_err(|e| format!("'{other}' is not auto, host or a PCI address ({e})")),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Host => f.write_str("host"),
            Self::Provider(b) => write!(f, "{b}"),
        }
    }
}

/// An endpoint as a P2P client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientInfo {
    /// The block device doing the I/O (`nvme0n1`, `loop0`, `vda`), when known.
    pub device: Option<String>,
    /// Its PCI function, when it has one.
    pub bdf: Option<Bdf>,
    /// Why this endpoint cannot take p2pmem, when it cannot: what it is...
    pub why_not: Option<String>,
    /// ...and what follows from that (shared by endpoints of the same kind).
    pub because: Option<&'static str>,
}

impl ClientInfo {
    /// `why_not` and `because` in one sentence.
    pub fn refusal(&self) -> Option<String> {
        let w = self.why_not.as_ref()?;
        Some(match self.because {
            Some(b) => format!("{w}: {b}"),
            None => w.clone(),
        })
    }
}

/// The reasons several endpoints cannot take p2pmem, each explanation said once.
fn refusals(clients: &[&ClientInfo]) -> Option<String> {
    let whats: Vec<&str> = clients
        .iter()
        .filter_map(|c| c.why_not.as_deref())
        .collect();
    if whats.is_empty() {
        return None;
    }
    let mut becauses: Vec<&str> = clients.iter().filter_map(|c| c.because).collect();
    becauses.dedup();
    let mut out = whats.join("; ");
    if !becauses.is_empty() {
        out.push_str(": ");
        out.push_str(&becauses.join("; "));
    }
    Some(out)
}

const FILE_BECAUSE: &str = "whether a file system's direct I/O passes p2pmem pages to the \
    device is not modelled (kernel-p2pdma §5.4); copy between the block devices, or name a \
    provider with --via and add --force to try";
const MULTIPATH_BECAUSE: &str = "before Linux 7.2 a multipath head's queue is not marked \
    P2PDMA-capable and transfers fail with EREMOTEIO (kernel-p2pdma §5.5)";
const QUEUE_BECAUSE: &str = "only nvme-pci queues take p2pmem pages (kernel-p2pdma §5.5), so \
    the kernel would refuse the transfer with EREMOTEIO";

fn label(path: &Path, c: &ClientInfo) -> String {
    match (&c.device, c.bdf) {
        (Some(d), Some(b)) => format!("{} ({d}, {b})", path.display()),
        (Some(d), None) => format!("{} ({d})", path.display()),
        _ => path.display().to_string(),
    }
}

/// The client behind an endpoint: the block device's PCI function, and whether its
/// queue takes P2P pages (kernel-p2pdma §5.5: nvme-pci namespaces; md raid0/1/10 and
/// nvme-rdma only on recent kernels, not recognised here).
pub fn client_of(root: &Path, sys: &System, ep: &Endpoint) -> ClientInfo {
    let (maj, min) = ep.block_dev();
    let fs = RootFs::new(root);
    let device = fs
        .resolve(format!("sys/dev/block/{maj}:{min}"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let entry = device
        .as_deref()
        .and_then(|d| sys.block.iter().find(|b| b.name == d));
    let bdf = entry.and_then(|b| match b.bdfs.as_slice() {
        [one] => Some(*one),
        _ => None,
    });
    let name = device
        .clone()
        .unwrap_or_else(|| format!("block device {maj}:{min}"));
    let (why_not, because) = if ep.kind() == DirectKind::RegularFile {
        (
            Some(format!(
                "{} is a regular file on {name}",
                ep.path().display()
            )),
            Some(FILE_BECAUSE),
        )
    } else if let Some(b) = entry.filter(|b| b.multipath_head) {
        (
            Some(format!("{} is an NVMe multipath head disk", b.name)),
            Some(MULTIPATH_BECAUSE),
        )
    } else if bdf.is_none() || !name.starts_with("nvme") {
        (
            Some(format!(
                "{} ({name}) is not an NVMe PCI namespace",
                ep.path().display()
            )),
            Some(QUEUE_BECAUSE),
        )
    } else {
        (None, None)
    };
    ClientInfo {
        device,
        bdf,
        why_not,
        because,
    }
}

/// The decision.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// The provider whose p2pmem holds the buffer; `None`: host memory.
    pub provider: Option<Bdf>,
    /// One line: why this buffer.
    pub reason: String,
    /// The model's explanation of the path, line by line.
    pub model: Vec<String>,
    /// Loud messages for stderr (a fallback to host memory, a forced path).
    pub warnings: Vec<String>,
    /// The source as a client.
    pub src: Option<ClientInfo>,
    /// The destination as a client.
    pub dst: Option<ClientInfo>,
}

/// The PCI system below `root` that a `via` route is decided on, or why it was not read
/// (for the route to say).
pub(crate) fn routing_system(root: &Path, via: Via) -> Result<System, String> {
    if via == Via::Host {
        return Err("not read (--via host)".to_string());
    }
    read_system(root).map_err(|_| format!("cannot read the PCI topology below {}", root.display()))
}

/// The refusal of a provider the user named when the system could not be read (`why`).
pub(crate) fn unchecked(provider: Bdf, why: &str) -> PlacementError {
    PlacementError::P2pRefused {
        provider,
        why: format!("the path cannot be checked: {why}"),
    }
}

/// Vets a provider the user named (`--via BDF`) for the endpoints of a `what` ("copy",
/// "bench"), seen as `clients`: refuses a BDF that is not a PCI function here, refuses
/// (or, with `force`, warns about) endpoints that cannot take p2pmem, then
/// [`vet_provider`]. Returns the model's explanation and the warnings.
pub(crate) fn vet_named(
    sys: &System,
    provider: Bdf,
    clients: &[&ClientInfo],
    force: bool,
    what: &str,
) -> Result<(Vec<String>, Vec<String>), PlacementError> {
    if sys.topology.get(&provider).is_none() {
        return Err(PlacementError::P2pRefused {
            provider,
            why: "it is not a PCI function of this system".to_string(),
        });
    }
    let mut warnings = Vec::new();
    if let Some(why) = refusals(clients) {
        if !force {
            return Err(PlacementError::P2pRefused {
                provider,
                why: format!("{why} (--force tries anyway)"),
            });
        }
        warnings.push(format!("--force: trying p2pmem anyway although {why}"));
    }
    let bdfs: Vec<Bdf> = clients.iter().filter_map(|c| c.bdf).collect();
    let model = vet_provider(sys, provider, &bdfs, force, what, &mut warnings)?;
    Ok((model, warnings))
}

/// The model's account of the provider that `--via auto` took from `found` for
/// `clients`, with a line when several tie (the kernel would pick one at random; this
/// `what` takes the first).
pub(crate) fn explain_choice(
    sys: &System,
    found: &Found,
    provider: Bdf,
    clients: &[Bdf],
    what: &str,
) -> Vec<String> {
    let mut model = match select::check(&sys.topology, &sys.rules, provider, clients) {
        Ok(c) => explain_check(sys, &c),
        Err(e) => vec![e.to_string()],
    };
    if found.best.len() > 1 {
        model.push(format!(
            "  {} providers tie at distance {}; the kernel would pick one at random, this {what} takes the first",
            found.best.len(),
            found.best_distance.unwrap_or(0)
        ));
    }
    model
}

/// The model's account of a failed request, when it is the kind a refused P2P path
/// gives (EREMOTEIO, EINVAL, EOPNOTSUPP) with the buffer in p2pmem and both the system
/// and the device as a client known.
pub(crate) fn refusal_explanation(
    location: Location,
    errno: Option<i32>,
    sys: Option<&System>,
    client: Option<&ClientInfo>,
) -> Option<String> {
    match (location, errno, sys, client) {
        (Location::P2p(provider), Some(e), Some(sys), Some(client))
            if e == Errno::REMOTEIO.raw_os_error()
                || e == Errno::INVAL.raw_os_error()
                || e == Errno::OPNOTSUPP.raw_os_error() =>
        {
            Some(explain_refusal(sys, provider, client, e))
        }
        _ => None,
    }
}

/// Vets `provider` for `clients` with the model: refuses a function without p2pmem, and
/// refuses (or, with `force`, warns about) a pair the model predicts the kernel refuses,
/// so that `what` ("copy", "bench") never fails on its first request. Returns the
/// model's explanation.
fn vet_provider(
    sys: &System,
    provider: Bdf,
    clients: &[Bdf],
    force: bool,
    what: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, PlacementError> {
    let check = select::check(&sys.topology, &sys.rules, provider, clients).map_err(|e| {
        PlacementError::P2pRefused {
            provider,
            why: e.to_string(),
        }
    })?;
    let model = explain_check(sys, &check);
    if !check.is_provider {
        return Err(PlacementError::P2pRefused {
            provider,
            why: "it has no p2pmem/ directory: it is not a P2PDMA provider".to_string(),
        });
    }
    match check.supported {
        Some(false) if !force => {
            return Err(PlacementError::P2pRefused {
                provider,
                why: format!(
                    "the model predicts the kernel refuses it, so the {what} would fail on its \
                     first request: {} (--force tries anyway)",
                    model.join(" / ")
                ),
            });
        }
        Some(false) => warnings.push(format!(
            "--force: trying {provider} although the model predicts the kernel refuses it"
        )),
        None => warnings.push(format!(
            "the model cannot tell whether the kernel allows {provider} for {} \
             (run as root to read ACS); trying it",
            if clients.len() == 1 {
                "this device"
            } else {
                "these devices"
            }
        )),
        Some(true) => {}
    }
    Ok(model)
}

/// The model's account of a check, line by line.
pub fn explain_check(sys: &System, c: &Check) -> Vec<String> {
    let mut out = Vec::new();
    let dist = c
        .distance
        .map(|d| format!(", distance {d}"))
        .unwrap_or_default();
    let map = c.map_type.map_or("unknown", MapType::as_str);
    let verdict = match c.supported {
        Some(true) => "allowed",
        Some(false) => "refused",
        None => "cannot tell",
    };
    out.push(format!(
        "{}: {verdict} by the kernel's rules on {} (map type {map}{dist})",
        c.provider, sys.rules.kernel
    ));
    for p in &c.pairs {
        let path = match p.common_upstream {
            Some(u) if u == p.client && u == p.provider => {
                "the provider is the client itself".to_string()
            }
            Some(u) => format!("common upstream device {u}"),
            None => "no common upstream device: through the host bridge".to_string(),
        };
        let mut line = format!("  {} -> {}: {path}", p.provider, p.client);
        if let Some(h) = &p.rule_h {
            let why = match h {
                p2pmem_model::distance::RuleH::AmdZen { cpu } => {
                    format!("{cpu} is AMD Zen or later")
                }
                p2pmem_model::distance::RuleH::Whitelisted { bridges }
                | p2pmem_model::distance::RuleH::Refused { bridges }
                | p2pmem_model::distance::RuleH::Unknown { bridges } => bridges
                    .iter()
                    .map(|b| b.why.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            line.push_str(&format!("; host bridge: {why}"));
        }
        if !p.acs_redirect.is_empty() {
            let list: Vec<String> = p.acs_redirect.iter().map(ToString::to_string).collect();
            line.push_str(&format!("; ACS redirect at {}", list.join(", ")));
        }
        out.push(line);
    }
    for m in &c.messages {
        out.push(format!("  kernel: {m}"));
    }
    for f in &c.fixes {
        out.push(format!("  fix (kernel command line): {f}"));
    }
    for u in &c.unknowns {
        out.push(format!("  unknown: {u}"));
    }
    if c.supported == Some(false) && c.is_provider {
        if let Some(e) = errno::o_direct_not_supported(sys.rules.kernel) {
            out.push(format!(
                "  an O_DIRECT transfer through this p2pmem fails with {} on this kernel",
                e.name
            ));
        }
    }
    out
}

/// Decides where the buffer lives. `sys` is the topology below `root`, or why it could
/// not be read.
pub fn decide(
    root: &Path,
    sys: Result<&System, String>,
    via: Via,
    src: &Endpoint,
    dst: &Endpoint,
    force: bool,
    require_p2p: bool,
) -> Result<Route, CopyError> {
    match (via, sys) {
        (Via::Host, _) if require_p2p => Err(CopyError::NoP2pPath {
            why: "--via host asks for host memory".to_string(),
        }),
        (Via::Host, _) => Ok(Route {
            provider: None,
            reason: "host memory, as asked (--via host)".to_string(),
            model: Vec::new(),
            warnings: Vec::new(),
            src: None,
            dst: None,
        }),
        (Via::Auto, Err(e)) => host_fallback(e, require_p2p, None, None),
        (Via::Auto, Ok(sys)) if no_userspace_p2p(sys).is_some() => host_fallback(
            format!(
                "kernel {} has no userspace p2pmem (p2pmem/allocate arrived in 6.2). {}",
                sys.rules.kernel,
                STILL_WORKS.trim_end_matches('.')
            ),
            require_p2p,
            None,
            None,
        ),
        (Via::Provider(provider), Ok(sys)) if no_userspace_p2p(sys).is_some() => {
            Err(PlacementError::NoUserspaceP2p {
                kernel: sys.rules.kernel,
                provider,
            }
            .into())
        }
        (Via::Provider(provider), Err(e)) => Err(unchecked(provider, &e).into()),
        (Via::Auto, Ok(sys)) => decide_auto(root, sys, src, dst, require_p2p),
        (Via::Provider(provider), Ok(sys)) => decide_provider(root, sys, provider, src, dst, force),
    }
}

fn decide_auto(
    root: &Path,
    sys: &System,
    src: &Endpoint,
    dst: &Endpoint,
    require_p2p: bool,
) -> Result<Route, CopyError> {
    let sc = client_of(root, sys, src);
    let dc = client_of(root, sys, dst);
    if let Some(why) = refusals(&[&sc, &dc]) {
        return host_fallback(why, require_p2p, Some(sc), Some(dc));
    }
    let (Some(sb), Some(db)) = (sc.bdf, dc.bdf) else {
        return host_fallback(
            "a device has no PCI function".to_string(),
            require_p2p,
            Some(sc),
            Some(dc),
        );
    };
    let clients = [sb, db];
    let found = match select::find(&sys.topology, &sys.rules, &clients) {
        Ok(f) => f,
        Err(e) => return host_fallback(e.to_string(), require_p2p, Some(sc), Some(dc)),
    };
    let Some(&provider) = found.best.first() else {
        let published = found.candidates.iter().filter(|c| c.published).count();
        let why = if found.candidates.is_empty() {
            "no PCI function here has p2pmem (no provider)".to_string()
        } else if published == 0 {
            format!(
                "none of the {} provider(s) is published, and the kernel only picks published ones",
                found.candidates.len()
            )
        } else {
            format!(
                "the kernel finds no provider that both {} and {} can reach \
                 ({published} published provider(s) considered; `p2pmem find {sb} {db}` shows each)",
                label(src.path(), &sc),
                label(dst.path(), &dc)
            )
        };
        return host_fallback(why, require_p2p, Some(sc), Some(dc));
    };
    let model = explain_choice(sys, &found, provider, &clients, "copy");
    Ok(Route {
        provider: Some(provider),
        reason: format!(
            "p2pmem of {provider}, the provider the kernel would choose for {} and {}",
            label(src.path(), &sc),
            label(dst.path(), &dc)
        ),
        model,
        warnings: Vec::new(),
        src: Some(sc),
        dst: Some(dc),
    })
}

fn decide_provider(
    root: &Path,
    sys: &System,
    provider: Bdf,
    src: &Endpoint,
    dst: &Endpoint,
    force: bool,
) -> Result<Route, CopyError> {
    let sc = client_of(root, sys, src);
    let dc = client_of(root, sys, dst);
    let (model, warnings) = vet_named(sys, provider, &[&sc, &dc], force, "copy")?;
    Ok(Route {
        provider: Some(provider),
        reason: format!("p2pmem of {provider}, as asked (--via {provider})"),
        model,
        warnings,
        src: Some(sc),
        dst: Some(dc),
    })
}

fn host_fallback(
    why: String,
    require_p2p: bool,
    src: Option<ClientInfo>,
    dst: Option<ClientInfo>,
) -> Result<Route, CopyError> {
    if require_p2p {
        return Err(CopyError::NoP2pPath { why });
    }
    Ok(Route {
        provider: None,
        reason: "host memory: no P2P path (--via auto)".to_string(),
        model: vec![why.clone()],
        warnings: vec![format!(
            "NO P2P PATH: {why}. Copying through HOST memory instead: the payload crosses host RAM \
             (--require-p2p makes this an error)"
        )],
        src,
        dst,
    })
}

/// The model's account of an EREMOTEIO/EINVAL from a transfer between `provider`'s
/// p2pmem and the device `client`.
pub fn explain_refusal(sys: &System, provider: Bdf, client: &ClientInfo, errno: i32) -> String {
    let name = errno::o_direct_not_supported(sys.rules.kernel).map(|e| e.name);
    let got = crate::sys::errno_label(errno);
    if let Some(why) = client.refusal() {
        return why;
    }
    let Some(bdf) = client.bdf else {
        return "the device has no PCI function the model knows".to_string();
    };
    match select::check(&sys.topology, &sys.rules, provider, &[bdf]) {
        Ok(c) if c.supported == Some(false) => format!(
            "the kernel refuses {provider} -> {bdf}, as predicted ({}); kernel {} reports that as {}",
            explain_check(sys, &c).join(" / "),
            sys.rules.kernel,
            name.unwrap_or("an error")
        ),
        Ok(c) if c.supported == Some(true) => format!(
            "the model predicts {provider} -> {bdf} is allowed (map type {}), so {got} points \
             elsewhere: a block queue without P2PDMA support (§5.5), a misaligned request, or a \
             kernel rule the model does not know; see the kernel log",
            c.map_type.map_or("unknown", MapType::as_str)
        ),
        Ok(_) => format!(
            "the model cannot tell whether {provider} -> {bdf} is allowed (ACS unreadable: run as root)"
        ),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
