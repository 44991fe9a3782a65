//! Many pairs at once: the verdict of every (provider, client) pair without the words.
//!
//! [`decide`](super::decide) explains one pair: every ACS test, the host bridges'
//! reasons, the kernel's messages, in strings. A fabric of 1,000 providers and 2,000
//! clients has two million pairs, and `find` weighs every provider against its clients;
//! they need only the outcome. [`PairIndex`] reads the topology once into flat tables
//! (each function's upstream chain as node numbers, each node's ACS as one byte, rule H
//! once per pair of host bridges) and walks the two chains exactly as `decide` does,
//! allocating nothing per pair. Its [`Outcome`] is, field for field, what `decide` gives
//! (tests hold the two together on every fixture and the synthetic fabric).

use super::{rule_h, DecideError, MapType, PairVerdict, Rules};
use crate::bdf::{Bdf, HostBridgeId};
use crate::topology::Topology;
use rustc_hash::FxHashMap;

/// What the kernel decides for one pair, without the reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Outcome {
    /// The map type; `None` when unreadable ACS registers leave it open.
    pub map_type: Option<MapType>,
    /// Whether the kernel allows the pair; `None` when it cannot be known.
    pub supported: Option<bool>,
    /// The walk distance (computed for refused pairs too).
    pub walk_distance: u32,
    /// An ACS redirect on the path sent it to the host bridge: only then does the
    /// kernel print messages (and does `find` print the host-bridge warning).
    pub acs_redirect: bool,
}

impl Outcome {
    /// The outcome part of a full verdict.
    pub fn of(v: &PairVerdict) -> Self {
        Self {
            map_type: v.map_type,
            supported: v.supported,
            walk_distance: v.walk_distance,
            acs_redirect: v.common_upstream.is_some() && !v.acs_redirect.is_empty(),
        }
    }
}

/// A node's ACS as P2PDMA tests it.
const ACS_OK: u8 = 0;
const ACS_REDIRECT: u8 = 1;
const ACS_UNKNOWN: u8 = 2;

/// Rule H per pair of host bridges, not yet computed.
const RULE_H_UNSET: u8 = 0xff;

/// The topology as flat tables for deciding many pairs.
#[derive(Debug)]
pub struct PairIndex<'t> {
    topo: &'t Topology,
    rules: &'t Rules,
    /// Each function's number, and each address on a path that is not a function.
    number: FxHashMap<Bdf, u32>,
    /// The functions by number.
    bdfs: Vec<Bdf>,
    /// Per function: its chain (itself first, up to the root bus) as node numbers, in
    /// `chains[start..start + len]`.
    chain_at: Vec<(u32, u32)>,
    chains: Vec<u32>,
    /// Per function: its host bridge's number.
    host_bridge: Vec<u32>,
    /// Per node (a function, or an address on a path that is not one): its ACS.
    acs: Vec<u8>,
    /// Rule H for each (provider's, client's) host bridge: 0 refused, 1 allowed,
    /// 2 unknown, [`RULE_H_UNSET`] not asked yet.
    rule_h: Vec<u8>,
    bridges: Vec<HostBridgeId>,
    /// The providers (`p2pmem/`) in address order, with whether each is published;
    /// listed once for the many searches of a plan.
    providers: Option<Vec<(Bdf, bool)>>,
}

impl<'t> PairIndex<'t> {
    /// Index `topo` for decisions under `rules`.
    pub fn new(topo: &'t Topology, rules: &'t Rules) -> Self {
        let mut number: FxHashMap<Bdf, u32> = FxHashMap::default();
        let mut acs = Vec::new();
        let mut bdfs = Vec::new();
        for f in topo.functions() {
            number.insert(f.bdf, acs.len() as u32);
            bdfs.push(f.bdf);
            acs.push(acs_byte(f.acs().redirects_p2p()));
        }
        let functions = acs.len();
        let bridges = topo.host_bridges();
        let mut chain_at = Vec::with_capacity(functions);
        let mut chains = Vec::new();
        let mut host_bridge = Vec::with_capacity(functions);
        for f in topo.functions() {
            let start = chains.len() as u32;
            for b in f.path.iter().rev() {
                let n = match number.get(b) {
                    Some(n) => *n,
                    None => {
                        // On a path but not a function here: its ACS cannot be read.
                        let n = acs.len() as u32;
                        number.insert(*b, n);
                        acs.push(ACS_UNKNOWN);
                        n
                    }
                };
                chains.push(n);
            }
            chain_at.push((start, f.path.len() as u32));
            let hb = bridges.binary_search(&f.host_bridge).unwrap_or(0);
            host_bridge.push(hb as u32);
        }
        let rule_h = vec![RULE_H_UNSET; bridges.len() * bridges.len()];
        Self {
            topo,
            rules,
            number,
            bdfs,
            chain_at,
            chains,
            host_bridge,
            acs,
            rule_h,
            bridges,
            providers: None,
        }
    }

    /// The providers in address order with whether each is published (listed once; give
    /// the list back with [`Self::put_providers`]).
    pub(crate) fn take_providers(&mut self) -> Vec<(Bdf, bool)> {
        self.providers.take().unwrap_or_else(|| {
            self.topo
                .providers()
                .map(|f| (f.bdf, f.p2pmem.is_some_and(|m| m.is_published())))
                .collect()
        })
    }

    /// Keep the list [`Self::take_providers`] gave.
    pub(crate) fn put_providers(&mut self, list: Vec<(Bdf, bool)>) {
        self.providers = Some(list);
    }

    /// Does any node of the topology redirect peer traffic by ACS?
    pub fn any_redirect(&self) -> bool {
        self.acs.contains(&ACS_REDIRECT)
    }

    /// The topology it indexes.
    pub fn topology(&self) -> &'t Topology {
        self.topo
    }

    /// The rules it decides by.
    pub fn rules(&self) -> &'t Rules {
        self.rules
    }

    /// The number of a function of the topology (not of a path-only address).
    fn function_number(&self, role: &'static str, bdf: Bdf) -> Result<usize, DecideError> {
        match self.number.get(&bdf) {
            Some(n) if (*n as usize) < self.chain_at.len() => Ok(*n as usize),
            _ => Err(DecideError::NoSuchFunction { role, bdf }),
        }
    }

    /// What [`decide`](super::decide) gives for the pair, without its reasons.
    pub fn outcome(&mut self, provider: Bdf, client: Bdf) -> Result<Outcome, DecideError> {
        let c = self.function_number("client", client)?;
        let p = self.function_number("provider", provider)?;
        Ok(self.outcome_of(p, c))
    }

    /// The outcome of every provider (rows) against every client (columns).
    pub fn matrix(&mut self, providers: &[Bdf], clients: &[Bdf]) -> Result<Matrix, DecideError> {
        let cs = clients
            .iter()
            .map(|c| self.function_number("client", *c))
            .collect::<Result<Vec<_>, _>>()?;
        let ps = providers
            .iter()
            .map(|p| self.function_number("provider", *p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut cells = Vec::with_capacity(ps.len() * cs.len());
        for p in &ps {
            for c in &cs {
                cells.push(self.outcome_of(*p, *c));
            }
        }
        Ok(Matrix {
            providers: providers.to_vec(),
            clients: clients.to_vec(),
            cells,
        })
    }

    /// `decide`'s walk: the first node of the provider's chain that is on the client's
    /// chain is the common upstream device; the ACS of the provider's chain up to it
    /// and of the client's chain below it is tested.
    fn outcome_of(&mut self, p: usize, c: usize) -> Outcome {
        let (pa, pl) = self.chain_at[p];
        let (ca, cl) = self.chain_at[c];
        let chain_a = &self.chains[pa as usize..(pa + pl) as usize];
        let chain_b = &self.chains[ca as usize..(ca + cl) as usize];
        let mut common = None;
        let mut tested = 0u8;
        for (dist_a, a) in chain_a.iter().enumerate() {
            tested |= 1 << self.acs[*a as usize];
            if let Some(dist_b) = chain_b.iter().position(|b| b == a) {
                common = Some((dist_a, dist_b));
                break;
            }
        }
        let Some((dist_a, dist_b)) = common else {
            let allowed = self.rule_h_of(p, c);
            let (map_type, supported) = through_host_bridge(allowed);
            return Outcome {
                map_type,
                supported,
                walk_distance: pl + cl,
                acs_redirect: false,
            };
        };
        for b in &chain_b[..dist_b] {
            tested |= 1 << self.acs[*b as usize];
        }
        let walk_distance = (dist_a + dist_b) as u32;
        let redirect = tested & (1 << ACS_REDIRECT) != 0;
        let unknown = tested & (1 << ACS_UNKNOWN) != 0;
        let (map_type, supported) = match (redirect, unknown) {
            (false, false) => (Some(MapType::BusAddr), Some(true)),
            (false, true) => (None, (self.rule_h_of(p, c) == Some(true)).then_some(true)),
            (true, _) => through_host_bridge(self.rule_h_of(p, c)),
        };
        Outcome {
            map_type,
            supported,
            walk_distance,
            acs_redirect: redirect,
        }
    }

    /// Rule H for the pair's host bridges, computed once per pair of host bridges.
    fn rule_h_of(&mut self, p: usize, c: usize) -> Option<bool> {
        let n = self.bridges.len();
        let (hp, hc) = (self.host_bridge[p] as usize, self.host_bridge[c] as usize);
        let slot = hp * n + hc;
        if self.rule_h[slot] == RULE_H_UNSET {
            let mut scratch = Vec::new();
            // Rule H reads only the two functions' host bridges.
            let (pf, cf) = (self.bdfs[p], self.bdfs[c]);
            let allowed = rule_h(self.topo, pf, cf, false, self.rules, &mut scratch).allowed();
            self.rule_h[slot] = match allowed {
                Some(false) => 0,
                Some(true) => 1,
                None => 2,
            };
        }
        match self.rule_h[slot] {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

fn acs_byte(redirects: Option<bool>) -> u8 {
    match redirects {
        Some(false) => ACS_OK,
        Some(true) => ACS_REDIRECT,
        None => ACS_UNKNOWN,
    }
}

/// `finish_host_bridge`: the outcome of a path through the host bridge.
fn through_host_bridge(allowed: Option<bool>) -> (Option<MapType>, Option<bool>) {
    match allowed {
        Some(true) => (Some(MapType::ThruHostBridge), Some(true)),
        Some(false) => (Some(MapType::NotSupported), Some(false)),
        None => (None, None),
    }
}

/// Every provider's outcome against every client, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    /// The rows.
    pub providers: Vec<Bdf>,
    /// The columns.
    pub clients: Vec<Bdf>,
    /// `cells[row * clients.len() + column]`.
    pub cells: Vec<Outcome>,
}

impl Matrix {
    /// The outcome of provider `row` and client `column`.
    pub fn get(&self, row: usize, column: usize) -> Option<&Outcome> {
        if column >= self.clients.len() {
            return None;
        }
        self.cells.get(row * self.clients.len() + column)
    }

    /// One provider's outcomes, in client order.
    pub fn row(&self, row: usize) -> &[Outcome] {
        let n = self.clients.len();
        self.cells.get(row * n..(row + 1) * n).unwrap_or(&[])
    }
}
