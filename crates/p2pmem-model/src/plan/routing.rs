//! How the kernel routes each flow's bytes: which buffer it uses (the provider
//! `pci_p2pmem_find_many()` picks, a named one, or host memory), and for each DMA the
//! path it takes: below the common upstream device for `bus_addr`, up through the host
//! bridge for `thru_host_bridge`, into and out of host memory for a bounce. The
//! verdicts come from the model ([`PairIndex`], [`select::find_indexed`]); nothing here
//! re-derives the kernel's rules.

use super::fabric::{Edge, Fabric};
use super::flow::{FlowKind, FlowSpec, NvmetP2p, NvmetTransport, Via};
use crate::bdf::Bdf;
use crate::distance::matrix::{Outcome, PairIndex};
use crate::distance::MapType;
use crate::select;

/// One end of a DMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A device (its node).
    Dev(u32),
    /// Host memory of the host bridge node.
    Mem(u32),
}

/// One DMA stream, per byte of payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Leg {
    /// Where bytes come from.
    pub from: Place,
    /// Where they go.
    pub to: Place,
    /// Device to device through the host bridge (`thru_host_bridge`).
    pub via_host_bridge: bool,
    /// The provider whose BAR it reads or writes, and the device doing the DMA.
    pub bar: Option<(u32, u32)>,
}

/// The route of one flow, per byte of payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Route {
    /// Its DMA streams.
    pub legs: Vec<Leg>,
    /// The provider used, when P2P.
    pub provider: Option<Bdf>,
    /// Map types of the provider against each device (P2P only).
    pub map_types: Vec<MapType>,
    /// Providers tied for `auto` (the kernel picks one at random), when more than one.
    pub tied: Vec<Bdf>,
    /// Why the bytes go the way they do, in words.
    pub why: String,
}

impl Route {
    /// Through host memory rather than a provider.
    pub fn bounces(&self) -> bool {
        self.provider.is_none()
    }
}

fn node(fabric: &Fabric, b: Bdf) -> Result<u32, String> {
    fabric
        .node(&b)
        .ok_or_else(|| format!("{b} is not a PCI function of this system"))
}

fn root(fabric: &Fabric, n: u32) -> u32 {
    fabric.nodes[n as usize].root
}

/// A bounce: `src` into host memory, host memory to `dst`.
fn bounce(fabric: &Fabric, src: u32, dst: u32, why: String) -> Route {
    Route {
        legs: vec![
            Leg {
                from: Place::Dev(src),
                to: Place::Mem(root(fabric, src)),
                via_host_bridge: false,
                bar: None,
            },
            Leg {
                from: Place::Mem(root(fabric, dst)),
                to: Place::Dev(dst),
                via_host_bridge: false,
                bar: None,
            },
        ],
        why,
        ..Route::default()
    }
}

/// Through provider `p`: `src` DMAs into p's BAR, `dst` DMAs out of it.
fn through(fabric: &Fabric, p: u32, src: u32, dst: u32, into: Outcome, out: Outcome) -> Route {
    let thb = |o: Outcome| o.map_type == Some(MapType::ThruHostBridge);
    Route {
        legs: vec![
            Leg {
                from: Place::Dev(src),
                to: Place::Dev(p),
                via_host_bridge: thb(into),
                bar: Some((p, src)),
            },
            Leg {
                from: Place::Dev(p),
                to: Place::Dev(dst),
                via_host_bridge: thb(out),
                bar: Some((p, dst)),
            },
        ],
        provider: fabric.nodes[p as usize].bdf,
        map_types: [into.map_type, out.map_type]
            .into_iter()
            .flatten()
            .collect(),
        ..Route::default()
    }
}

/// Calls `f(node, up)` for each link edge a leg crosses (`up`: towards the host bridge).
pub fn walk_leg(fabric: &Fabric, leg: &Leg, mut f: impl FnMut(u32, bool)) -> bool {
    match (leg.from, leg.to) {
        (Place::Dev(a), Place::Mem(_)) => {
            fabric.climb(a, root(fabric, a), |n| f(n, true));
            false
        }
        (Place::Mem(_), Place::Dev(b)) => {
            fabric.climb(b, root(fabric, b), |n| f(n, false));
            false
        }
        (Place::Dev(a), Place::Dev(b)) => {
            let top = if leg.via_host_bridge {
                None
            } else {
                fabric.common(a, b)
            };
            match top {
                // Two functions of one device: the bytes stay inside it.
                Some(_) if a != b && fabric.owner[a as usize] == fabric.owner[b as usize] => false,
                Some(c) => {
                    fabric.climb(a, c, |n| f(n, true));
                    fabric.climb(b, c, |n| f(n, false));
                    false
                }
                None => {
                    fabric.climb(a, root(fabric, a), |n| f(n, true));
                    fabric.climb(b, root(fabric, b), |n| f(n, false));
                    root(fabric, a) != root(fabric, b)
                }
            }
        }
        (Place::Mem(_), Place::Mem(_)) => false,
    }
}

/// The cost of a route for choosing the worst of tied providers: time on each link per
/// byte (links of unknown speed count as 1 GB/s).
fn cost(fabric: &Fabric, r: &Route, efficiency: f64) -> f64 {
    let mut c = 0.0;
    for leg in &r.legs {
        walk_leg(fabric, leg, |n, _| {
            if let Edge::Link { speed, .. } = fabric.nodes[n as usize].edge {
                c += 1.0 / speed.map_or(1e9, |s| s.capacity(efficiency));
            }
        });
    }
    c
}

/// Context for routing many flows.
pub struct Router<'a, 't> {
    /// The fabric.
    pub fabric: &'a Fabric,
    /// The kernel's verdicts.
    pub index: PairIndex<'t>,
    /// Protocol efficiency (for the worst-case choice among ties).
    pub efficiency: f64,
}

impl Router<'_, '_> {
    /// The route of `flow` as the kernel takes it; with `p2p == false` as if every
    /// flow were told to use host memory (`via=host`, `p2pmem=0`).
    pub fn route(&mut self, flow: &FlowSpec<Bdf>, p2p: bool) -> Result<Route, String> {
        match &flow.kind {
            FlowKind::Copy { src, dst, via } => {
                let (s, d) = (node(self.fabric, *src)?, node(self.fabric, *dst)?);
                if !p2p {
                    return Ok(bounce(
                        self.fabric,
                        s,
                        d,
                        "P2P disabled for comparison".into(),
                    ));
                }
                match via {
                    Via::Host => Ok(bounce(self.fabric, s, d, "via=host".into())),
                    Via::Auto => self.auto(s, d, *src, *dst, "copy"),
                    Via::Provider(p) => {
                        let pn = node(self.fabric, *p)?;
                        let into = self.outcome(*p, *src)?;
                        let out = self.outcome(*p, *dst)?;
                        Ok(self.named(
                            pn,
                            s,
                            d,
                            *p,
                            into,
                            out,
                            "the copy would be refused; planned as a bounce through host memory",
                        ))
                    }
                }
            }
            FlowKind::Nvmet {
                nic,
                transport,
                ns,
                p2pmem,
                write,
                initiator,
            } => {
                let (n, m) = (node(self.fabric, *nic)?, node(self.fabric, *ns)?);
                // Data moves NIC -> namespace on a host write, namespace -> NIC on a read.
                let (s, d, sb, db) = if *write {
                    (n, m, *nic, *ns)
                } else {
                    (m, n, *ns, *nic)
                };
                let never = transport.never_p2pmem();
                let mut r = match (p2p, p2pmem) {
                    (false, _) => bounce(self.fabric, s, d, "P2P disabled for comparison".into()),
                    // nvmet-tcp's data buffers are host memory whatever p2pmem says: the
                    // NIC's DMA lands there, the namespace's DMA leaves from there.
                    (true, _) if *transport == NvmetTransport::Tcp => bounce(
                        self.fabric,
                        s,
                        d,
                        format!(
                            "{}; the target's bytes go through its host memory",
                            never.unwrap_or("tcp")
                        ),
                    ),
                    (true, NvmetP2p::Off) => {
                        bounce(self.fabric, s, d, "the namespace's p2pmem is 0".into())
                    }
                    (true, NvmetP2p::Auto) => self.auto(s, d, sb, db, "nvmet")?,
                    (true, NvmetP2p::Provider(p)) => {
                        let pn = node(self.fabric, *p)?;
                        let into = self.outcome(*p, sb)?;
                        let out = self.outcome(*p, db)?;
                        self.named(
                            pn,
                            s,
                            d,
                            *p,
                            into,
                            out,
                            "nvmet falls back to ordinary memory",
                        )
                    }
                };
                if let Some(i) = initiator {
                    // The initiator's own buffers are in its host memory.
                    let inode = node(self.fabric, *i)?;
                    let mem = Place::Mem(root(self.fabric, inode));
                    let leg = if *write {
                        Leg {
                            from: mem,
                            to: Place::Dev(inode),
                            via_host_bridge: false,
                            bar: None,
                        }
                    } else {
                        Leg {
                            from: Place::Dev(inode),
                            to: mem,
                            via_host_bridge: false,
                            bar: None,
                        }
                    };
                    r.legs.push(leg);
                }
                Ok(r)
            }
        }
    }

    fn outcome(&mut self, p: Bdf, c: Bdf) -> Result<Outcome, String> {
        self.index.outcome(p, c).map_err(|e| e.to_string())
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the two devices as nodes and addresses, and the two verdicts"
    )]
    fn named(
        &self,
        pn: u32,
        s: u32,
        d: u32,
        p: Bdf,
        into: Outcome,
        out: Outcome,
        refused: &str,
    ) -> Route {
        let verdicts = [into, out];
        if verdicts.iter().any(|o| o.supported == Some(false)) {
            return bounce(
                self.fabric,
                s,
                d,
                format!("the kernel refuses P2P between {p} and a device ({refused})"),
            );
        }
        if verdicts.iter().any(|o| o.supported.is_none()) {
            return bounce(
                self.fabric,
                s,
                d,
                format!("whether the kernel allows {p} cannot be known (ACS or host bridge unreadable); planned as a bounce"),
            );
        }
        let mut r = through(self.fabric, pn, s, d, into, out);
        r.why = format!("through {p} as named");
        r
    }

    /// The first refused provider whose refusal an ACS redirect causes, with the boot
    /// parameter that removes it (from the model's full verdict, only for such providers).
    fn acs_fix(&mut self, found: &select::Found, a: Bdf, b: Bdf) -> Option<(Bdf, String)> {
        if !self.index.any_redirect() {
            return None;
        }
        for c in found
            .candidates
            .iter()
            .filter(|c| c.published && c.supported == Some(false))
        {
            let redirect = [a, b].iter().any(|x| {
                self.index
                    .outcome(c.provider, *x)
                    .is_ok_and(|o| o.acs_redirect)
            });
            if !redirect {
                continue;
            }
            let (topo, rules) = (self.index.topology(), self.index.rules());
            if let Some(fix) = select::check(topo, rules, c.provider, &[a, b])
                .ok()
                .and_then(|ch| ch.fixes.first().cloned())
            {
                return Some((c.provider, fix));
            }
        }
        None
    }

    /// `pci_p2pmem_find_many([src, dst])`: the closest published provider; on a tie the
    /// kernel picks at random, so the worst of the tied routes is planned.
    fn auto(&mut self, s: u32, d: u32, sb: Bdf, db: Bdf, what: &str) -> Result<Route, String> {
        let found = select::find_indexed(&mut self.index, &[sb, db]).map_err(|e| e.to_string())?;
        if found.best.is_empty() {
            let mut why = if what == "copy" {
                "no published provider the kernel accepts for both devices; the copy uses host memory"
            } else {
                "no published provider the kernel accepts for the NIC and the namespace; nvmet uses ordinary memory"
            }
            .to_string();
            if let Some((p, fix)) = self.acs_fix(&found, sb, db) {
                why.push_str(&format!(
                    "; an ACS redirect refuses {p}: booting with {fix} would let the kernel use it"
                ));
            }
            return Ok(bounce(self.fabric, s, d, why));
        }
        let mut worst: Option<(f64, Route)> = None;
        for p in &found.best {
            let pn = node(self.fabric, *p)?;
            let into = self.outcome(*p, sb)?;
            let out = self.outcome(*p, db)?;
            let r = through(self.fabric, pn, s, d, into, out);
            let c = cost(self.fabric, &r, self.efficiency);
            if worst.as_ref().is_none_or(|(w, _)| c > *w) {
                worst = Some((c, r));
            }
        }
        let Some((_, mut r)) = worst else {
            return Ok(bounce(self.fabric, s, d, "no provider".into()));
        };
        let p = match r
            .provider
            .and_then(|b| self.fabric.node(&b).map(|n| (b, n)))
        {
            Some((b, n)) if self.fabric.nodes[n as usize].label != b.to_string() => {
                format!("{} ({b})", self.fabric.nodes[n as usize].label)
            }
            Some((b, _)) => b.to_string(),
            None => String::new(),
        };
        let dist = found.best_distance.unwrap_or(0);
        if found.best.len() > 1 {
            r.tied = found.best.clone();
            r.why = format!(
                "{} providers tie at distance {dist} and the kernel picks one at random; planned the worst case, {p}",
                found.best.len()
            );
        } else {
            r.why = format!("the kernel picks {p} at distance {dist}");
        }
        Ok(r)
    }
}
