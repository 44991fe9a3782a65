//! The flow syntax of `p2pmem plan --flow` and of a flows file (one flow per line).
//!
//! * A copy between two block devices through a buffer:
//!   `SRC:DST[:via=auto|host|DEV][:rate=SIZE/s]`.
//! * An NVMe-oF target flow from the target's NIC to a namespace:
//!   `nvmet:NIC:NS[:transport=rdma|tcp][:p2pmem=1|0|DEV][:dir=write|read][:initiator=NIC][:rate=SIZE/s]`
//!   (`rdma` by default; nvmet-tcp never uses p2pmem, whatever the namespace's setting).
//!
//! Devices are PCI addresses (`0000:03:00.0`, `03:00.0`) or names (a design's names,
//! or what the caller resolves). Rates use binary suffixes: `rate=1G/s` is 2^30 bytes
//! per second. Bad input is an error message, never a panic.

use crate::bdf::Bdf;
use crate::size::parse_size;
use std::fmt;

/// The rate of a flow with no `rate=`: 1 GiB/s (stated in the plan's notes).
pub const DEFAULT_RATE: u64 = 1 << 30;

/// A device named in a flow, before resolution.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceRef {
    /// A PCI address.
    Bdf(Bdf),
    /// A name (a design's device name, or a block or RDMA device).
    Name(String),
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bdf(b) => write!(f, "{b}"),
            Self::Name(n) => f.write_str(n),
        }
    }
}

/// Where a copy's buffer lives (`p2pmem copy --via`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via<D> {
    /// The provider `pci_p2pmem_find_many()` picks for both devices; host memory if none.
    Auto,
    /// Host memory.
    Host,
    /// This provider.
    Provider(D),
}

/// A namespace's nvmet `p2pmem` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvmetP2p<D> {
    /// `0`: ordinary memory.
    Off,
    /// `1`: `pci_p2pmem_find_many([NIC, namespace])`.
    Auto,
    /// A chosen provider.
    Provider(D),
}

/// The transport of an nvmet flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NvmetTransport {
    /// nvmet-rdma: the NIC is the P2P client, so the namespace's `p2pmem` applies.
    #[default]
    Rdma,
    /// nvmet-tcp: the kernel's sockets move the data; no P2P client, host memory always.
    Tcp,
}

impl NvmetTransport {
    /// The name used in flows and configfs (`addr_trtype`).
    pub fn as_str(self) -> &'static str {
        self.facts().as_str_static()
    }

    /// The same transport as the nvmet facts know it.
    pub fn facts(self) -> crate::nvmet_plan::facts::Transport {
        match self {
            Self::Rdma => crate::nvmet_plan::facts::Transport::Rdma,
            Self::Tcp => crate::nvmet_plan::facts::Transport::Tcp,
        }
    }

    /// Why this transport never uses p2pmem (`None`: rdma), in the nvmet facts' words.
    pub fn never_p2pmem(self) -> Option<&'static str> {
        self.facts().never_p2pmem()
    }
}

/// What a flow moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowKind<D> {
    /// Read SRC into a buffer, write the buffer to DST.
    Copy {
        /// Source device.
        src: D,
        /// Destination device.
        dst: D,
        /// Where the buffer lives.
        via: Via<D>,
    },
    /// nvmet: a host writes to (or reads from) a namespace through the target's NIC.
    Nvmet {
        /// The target's NIC (an RDMA NIC for rdma).
        nic: D,
        /// rdma or tcp.
        transport: NvmetTransport,
        /// The namespace's NVMe controller.
        ns: D,
        /// The namespace's `p2pmem` setting.
        p2pmem: NvmetP2p<D>,
        /// `true`: host writes (NIC to namespace); `false`: reads.
        write: bool,
        /// The initiator's NIC, when the initiator host is in the design.
        initiator: Option<D>,
    },
}

/// One flow as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec<D = DeviceRef> {
    /// What it moves.
    pub kind: FlowKind<D>,
    /// Payload bytes per second; `None`: [`DEFAULT_RATE`].
    pub rate: Option<u64>,
    /// The text it was parsed from.
    pub text: String,
}

impl FlowSpec<DeviceRef> {
    /// The flow with each device resolved by `f` (an error names the flow).
    pub fn resolve<D>(
        &self,
        mut f: impl FnMut(&DeviceRef) -> Result<D, String>,
    ) -> Result<FlowSpec<D>, String> {
        let mut r = |d: &DeviceRef| f(d).map_err(|e| format!("flow '{}': {e}", self.text));
        let kind = match &self.kind {
            FlowKind::Copy { src, dst, via } => FlowKind::Copy {
                src: r(src)?,
                dst: r(dst)?,
                via: match via {
                    Via::Auto => Via::Auto,
                    Via::Host => Via::Host,
                    Via::Provider(p) => Via::Provider(r(p)?),
                },
            },
            FlowKind::Nvmet {
                nic,
                transport,
                ns,
                p2pmem,
                write,
                initiator,
            } => FlowKind::Nvmet {
                nic: r(nic)?,
                transport: *transport,
                ns: r(ns)?,
                p2pmem: match p2pmem {
                    NvmetP2p::Off => NvmetP2p::Off,
                    NvmetP2p::Auto => NvmetP2p::Auto,
                    NvmetP2p::Provider(p) => NvmetP2p::Provider(r(p)?),
                },
                write: *write,
                initiator: initiator.as_ref().map(&mut r).transpose()?,
            },
        };
        Ok(FlowSpec {
            kind,
            rate: self.rate,
            text: self.text.clone(),
        })
    }
}

/// Resolves names through `names` (a design's), addresses as they are.
pub fn by_names(
    names: &std::collections::BTreeMap<String, Bdf>,
) -> impl FnMut(&DeviceRef) -> Result<Bdf, String> + '_ {
    move |d| match d {
        DeviceRef::Bdf(b) => Ok(*b),
        DeviceRef::Name(n) => names
            .get(n)
            .copied()
            .ok_or_else(|| format!("no device named '{n}' in the design")),
    }
}

/// `rate=` value: `SIZE/s` or `SIZE`, binary units.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let r = parse_size(t).map_err(|e| format!("rate: {e} (write e.g. rate=1G/s)"))?;
    if r == 0 {
        return Err(format!("rate '{s}' is zero"));
    }
    Ok(r)
}

/// Takes one device from `tokens[i..]`: a PCI address spread over 2 or 3 colon-separated
/// tokens, else one token as a name.
fn take_device(
    tokens: &[&str],
    i: usize,
    what: &str,
    text: &str,
) -> Result<(DeviceRef, usize), String> {
    let Some(first) = tokens.get(i) else {
        return Err(format!("flow '{text}': {what} is missing"));
    };
    for n in [3usize, 2] {
        if i + n <= tokens.len() && !tokens[i..i + n].iter().any(|t| t.contains('=')) {
            if let Ok(b) = tokens[i..i + n].join(":").parse::<Bdf>() {
                return Ok((DeviceRef::Bdf(b), i + n));
            }
        }
    }
    if first.is_empty() || first.contains('=') {
        return Err(format!("flow '{text}': {what} is missing (got '{first}')"));
    }
    Ok((DeviceRef::Name((*first).to_string()), i + 1))
}

fn device_value(v: &str) -> DeviceRef {
    match v.parse::<Bdf>() {
        Ok(b) => DeviceRef::Bdf(b),
        Err(_) => DeviceRef::Name(v.to_string()),
    }
}

/// Parse one flow.
pub fn parse_flow(text: &str) -> Result<FlowSpec, String> {
    let t = text.trim();
    let tokens: Vec<&str> = t.split(':').collect();
    let nvmet = tokens.first() == Some(&"nvmet");
    let start = usize::from(nvmet);
    let (a, i) = take_device(
        &tokens,
        start,
        if nvmet { "the NIC" } else { "the source" },
        t,
    )?;
    let (b, mut i) = take_device(
        &tokens,
        i,
        if nvmet {
            "the namespace"
        } else {
            "the destination"
        },
        t,
    )?;
    let mut rate = None;
    let mut via = Via::Auto;
    let mut p2pmem = NvmetP2p::Auto;
    let mut write = true;
    let mut initiator = None;
    let mut transport = NvmetTransport::Rdma;
    while i < tokens.len() {
        let tok = tokens[i];
        let Some((k, v0)) = tok.split_once('=') else {
            return Err(format!(
                "flow '{t}': '{tok}' is not key=value (via=, rate=, transport=, p2pmem=, dir=, initiator=)"
            ));
        };
        // A PCI address as a value spans more tokens: join until it parses.
        let mut v = v0.to_string();
        let mut used = 1;
        if matches!(k, "via" | "p2pmem" | "initiator") {
            for n in [3usize, 2] {
                if i + n <= tokens.len() {
                    let joined = std::iter::once(v0)
                        .chain(tokens[i + 1..i + n].iter().copied())
                        .collect::<Vec<_>>()
                        .join(":");
                    if joined.parse::<Bdf>().is_ok() {
                        v = joined;
                        used = n;
                        break;
                    }
                }
            }
        }
        i += used;
        match (k, nvmet) {
            ("rate", _) => rate = Some(parse_rate(&v).map_err(|e| format!("flow '{t}': {e}"))?),
            ("via", false) => {
                via = match v.as_str() {
                    "auto" => Via::Auto,
                    "host" => Via::Host,
                    "" => return Err(format!("flow '{t}': via= needs auto, host or a provider")),
                    _ => Via::Provider(device_value(&v)),
                }
            }
            ("p2pmem", true) => {
                p2pmem = match v.as_str() {
                    "1" | "y" | "yes" | "on" | "auto" => NvmetP2p::Auto,
                    "0" | "n" | "no" | "off" => NvmetP2p::Off,
                    "" => return Err(format!("flow '{t}': p2pmem= needs 1, 0 or a provider")),
                    _ => NvmetP2p::Provider(device_value(&v)),
                }
            }
            ("dir", true) => {
                write = match v.as_str() {
                    "write" => true,
                    "read" => false,
                    _ => return Err(format!("flow '{t}': dir= is write or read, not '{v}'")),
                }
            }
            ("initiator", true) if !v.is_empty() => initiator = Some(device_value(&v)),
            ("transport", true) => {
                transport = match v.as_str() {
                    "rdma" => NvmetTransport::Rdma,
                    "tcp" => NvmetTransport::Tcp,
                    _ => {
                        return Err(format!(
                            "flow '{t}': transport= is rdma or tcp, not '{v}' (loop has no NIC)"
                        ))
                    }
                }
            }
            _ => {
                let allowed = if nvmet {
                    "transport=, p2pmem=, dir=, initiator=, rate="
                } else {
                    "via=, rate="
                };
                return Err(format!(
                    "flow '{t}': unknown option '{k}=' here (this kind of flow takes {allowed})"
                ));
            }
        }
    }
    let kind = if nvmet {
        FlowKind::Nvmet {
            nic: a,
            transport,
            ns: b,
            p2pmem,
            write,
            initiator,
        }
    } else {
        FlowKind::Copy {
            src: a,
            dst: b,
            via,
        }
    };
    Ok(FlowSpec {
        kind,
        rate,
        text: t.to_string(),
    })
}

/// Parse a flows file: one flow per line; blank lines and `#` comments skipped. Errors
/// name the line.
pub fn parse_flows(text: &str) -> Result<Vec<FlowSpec>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        out.push(parse_flow(l).map_err(|e| format!("line {}: {e}", n + 1))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> DeviceRef {
        DeviceRef::Bdf(s.parse().unwrap())
    }

    #[test]
    fn copies_parse_with_addresses_and_names() {
        let f = parse_flow("0000:03:00.0:04:00.0:via=0000:05:00.0:rate=1G/s").unwrap();
        assert_eq!(
            f.kind,
            FlowKind::Copy {
                src: b("03:00.0"),
                dst: b("04:00.0"),
                via: Via::Provider(b("05:00.0"))
            }
        );
        assert_eq!(f.rate, Some(1 << 30));
        let f = parse_flow("nvme0:nvme1:via=host").unwrap();
        assert_eq!(
            f.kind,
            FlowKind::Copy {
                src: DeviceRef::Name("nvme0".into()),
                dst: DeviceRef::Name("nvme1".into()),
                via: Via::Host
            }
        );
        assert_eq!(f.rate, None);
        let f = parse_flow("nvme0:nvme1:rate=512M").unwrap();
        assert_eq!(f.rate, Some(512 << 20));
    }

    #[test]
    fn nvmet_flows_parse() {
        let f = parse_flow("nvmet:nic0:nvme3:p2pmem=0:dir=read:initiator=h1nic:rate=2G/s").unwrap();
        assert_eq!(
            f.kind,
            FlowKind::Nvmet {
                nic: DeviceRef::Name("nic0".into()),
                transport: NvmetTransport::Rdma,
                ns: DeviceRef::Name("nvme3".into()),
                p2pmem: NvmetP2p::Off,
                write: false,
                initiator: Some(DeviceRef::Name("h1nic".into())),
            }
        );
        let f = parse_flow("nvmet:01:00.0:02:00.0:p2pmem=0000:03:00.0").unwrap();
        assert!(matches!(
            f.kind,
            FlowKind::Nvmet {
                p2pmem: NvmetP2p::Provider(DeviceRef::Bdf(_)),
                write: true,
                ..
            }
        ));
    }

    #[test]
    fn nvmet_flows_take_a_transport() {
        let f = parse_flow("nvmet:tnic:nvme0:transport=tcp:p2pmem=1:initiator=inic").unwrap();
        assert!(matches!(
            f.kind,
            FlowKind::Nvmet {
                transport: NvmetTransport::Tcp,
                p2pmem: NvmetP2p::Auto,
                ..
            }
        ));
        assert_eq!(NvmetTransport::Tcp.as_str(), "tcp");
        assert!(NvmetTransport::Tcp
            .never_p2pmem()
            .is_some_and(|w| w.contains("TCP ports never use p2pmem")));
        assert_eq!(NvmetTransport::Rdma.never_p2pmem(), None);
        assert!(parse_flow("nvmet:a:b:transport=loop")
            .unwrap_err()
            .contains("rdma or tcp"));
        assert!(parse_flow("a:b:transport=tcp")
            .unwrap_err()
            .contains("unknown option"));
    }

    #[test]
    fn bad_flows_are_errors() {
        assert!(parse_flow("").is_err());
        assert!(parse_flow("nvme0").unwrap_err().contains("destination"));
        assert!(parse_flow("a:b:speed=3")
            .unwrap_err()
            .contains("unknown option"));
        assert!(parse_flow("a:b:rate=fast").is_err());
        assert!(parse_flow("a:b:rate=0/s").is_err());
        assert!(parse_flow("a:b:p2pmem=1").is_err());
        assert!(parse_flow("nvmet:a:b:dir=sideways").is_err());
        assert!(parse_flow("a:b:junk").is_err());
        let e = parse_flows("a:b\n\n# c\nx").unwrap_err();
        assert!(e.starts_with("line 4:"), "{e}");
        assert_eq!(parse_flows("a:b # one\nc:d").unwrap().len(), 2);
    }
}
