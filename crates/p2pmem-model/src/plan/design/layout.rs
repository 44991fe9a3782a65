//! Where a design's devices land: PCI addresses numbered as firmware would (each host
//! bridge its own domain, root ports on the root bus, a switch as an upstream port, an
//! internal bus and a downstream port per child, buses depth first), and the model's
//! functions with their roles, links and declared ACS.

use super::{line_of, DesignError, Entry, Kind};
use crate::acs::AcsState;
use crate::bdf::{Bdf, HostBridgeId};
use crate::plan::fabric::{FabricFacts, Role};
use crate::topology::{Function, P2pmemInfo};
use std::collections::{BTreeMap, HashMap};

/// The last bus number of a domain.
const MAX_BUS: u32 = 255;

pub(super) fn function(
    bdf: Bdf,
    hb: HostBridgeId,
    path: Vec<Bdf>,
    ids: (u16, u16, u32),
    acs: AcsState,
    p2pmem: Option<P2pmemInfo>,
) -> Function {
    Function {
        bdf,
        host_bridge: hb,
        path,
        vendor: ids.0,
        device: ids.1,
        class: ids.2,
        config: None,
        driver: None,
        p2pmem,
        acs_override: Some(acs),
    }
}

pub(super) struct Builder<'a> {
    pub(super) entries: &'a [Entry],
    pub(super) children: &'a HashMap<&'a str, Vec<usize>>,
    pub(super) functions: &'a mut Vec<Function>,
    pub(super) facts: &'a mut FabricFacts,
    pub(super) names: &'a mut BTreeMap<String, Bdf>,
    pub(super) next_bus: &'a mut u32,
    pub(super) hb: HostBridgeId,
    pub(super) redirect: AcsState,
    pub(super) off: AcsState,
}

impl Builder<'_> {
    fn bus(&mut self, name: &str, text: &str) -> Result<u8, DesignError> {
        let b = *self.next_bus;
        if b > MAX_BUS {
            return Err(DesignError {
                line: line_of(text, name),
                what: format!("{name}: host bridge {} needs more than 256 buses; split the design over more host bridges", self.hb),
            });
        }
        *self.next_bus += 1;
        Ok(b as u8)
    }

    fn add(
        &mut self,
        bdf: Bdf,
        path: &[Bdf],
        ids: (u16, u16, u32),
        acs: AcsState,
        p2pmem: Option<P2pmemInfo>,
        role: Role,
    ) -> Vec<Bdf> {
        let mut p = path.to_vec();
        p.push(bdf);
        self.functions
            .push(function(bdf, self.hb, p.clone(), ids, acs, p2pmem));
        self.facts.roles.insert(bdf, role);
        p
    }

    /// Place entry `i` at `at` below `path`.
    pub(super) fn place(
        &mut self,
        i: usize,
        at: Bdf,
        path: Vec<Bdf>,
        text: &str,
    ) -> Result<(), DesignError> {
        let e = &self.entries[i];
        let kids = self
            .children
            .get(e.name.as_str())
            .cloned()
            .unwrap_or_default();
        let dom = self.hb.domain;
        self.names.insert(e.name.clone(), at);
        self.facts.labels.insert(at, e.name.clone());
        if e.link.current.is_some() || e.link.max.is_some() {
            self.facts.links.insert(at, e.link);
        }
        match e.kind {
            Kind::Endpoint { class, p2pmem } => {
                let info = p2pmem.then_some(P2pmemInfo {
                    size: Some(1 << 30),
                    available: Some(1 << 30),
                    published: Some(true),
                });
                self.add(
                    at,
                    &path,
                    (0x1b36, 0x0010, class),
                    AcsState::Absent,
                    info,
                    Role::Endpoint,
                );
            }
            Kind::Root => {
                let acs = if e.redirect { self.redirect } else { self.off };
                let path = self.add(
                    at,
                    &path,
                    (0x8086, 0x0001, 0x060400),
                    acs,
                    None,
                    Role::RootPort,
                );
                match kids.as_slice() {
                    [] => {}
                    [one] => {
                        let bus = self.bus(&e.name, text)?;
                        self.place(*one, Bdf { domain: dom, bus, device: 0, function: 0 }, path, text)?;
                    }
                    _ => {
                        return Err(DesignError {
                            line: line_of(text, &e.name),
                            what: format!("root port {} has {} children; a root port has one link (put a switch below it)", e.name, kids.len()),
                        })
                    }
                }
            }
            Kind::Switch => {
                let up = self.add(
                    at,
                    &path,
                    (0x104c, 0x8232, 0x060400),
                    AcsState::Absent,
                    None,
                    Role::SwitchUpstream,
                );
                if kids.len() > 32 {
                    return Err(DesignError {
                        line: line_of(text, &e.name),
                        what: format!(
                            "switch {} has {} children; at most 32 downstream ports",
                            e.name,
                            kids.len()
                        ),
                    });
                }
                if kids.is_empty() {
                    return Ok(());
                }
                let internal = self.bus(&e.name, text)?;
                let acs = if e.redirect { self.redirect } else { self.off };
                for (j, k) in kids.iter().enumerate() {
                    let dp = Bdf {
                        domain: dom,
                        bus: internal,
                        device: j as u8,
                        function: 0,
                    };
                    let dpath = self.add(
                        dp,
                        &up,
                        (0x104c, 0x8233, 0x060400),
                        acs,
                        None,
                        Role::SwitchDownstream,
                    );
                    self.facts.labels.insert(dp, format!("{}.dp{j}", e.name));
                    let bus = self.bus(&e.name, text)?;
                    self.place(
                        *k,
                        Bdf {
                            domain: dom,
                            bus,
                            device: 0,
                            function: 0,
                        },
                        dpath,
                        text,
                    )?;
                }
            }
        }
        Ok(())
    }
}
