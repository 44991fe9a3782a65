//! Where the bench's buffers live, decided with the model for the one device under test:
//! `--via auto` takes the provider the kernel's `pci_p2pmem_find_many()` would pick for
//! that device (its own CMB first: distance 0), `--via BDF` checks that provider against
//! it, `--via host` skips P2P. A path the model predicts refused is refused here, before
//! any I/O, unless `--force`.

use crate::copy::placement::{no_userspace_p2p, STILL_WORKS};
use crate::copy::{
    client_of, explain_choice, unchecked, vet_named, ClientInfo, Endpoint, PlacementError, Via,
};
use crate::system::System;
use p2pmem_model::select;
use p2pmem_model::Bdf;
use serde::Serialize;
use std::path::Path;

/// The decision.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRoute {
    /// The provider whose p2pmem holds the buffers; `None`: host memory.
    pub provider: Option<Bdf>,
    /// One line: why these buffers.
    pub reason: String,
    /// The model's explanation of the path, line by line.
    pub model: Vec<String>,
    /// Loud messages for stderr (a fallback to host memory, a forced path).
    pub warnings: Vec<String>,
    /// The device as a P2P client (not read for `--via host`).
    pub client: Option<ClientInfo>,
}

fn host(reason: &str) -> BenchRoute {
    BenchRoute {
        provider: None,
        reason: reason.to_string(),
        model: Vec::new(),
        warnings: Vec::new(),
        client: None,
    }
}

fn fallback(why: String, client: Option<ClientInfo>) -> BenchRoute {
    BenchRoute {
        provider: None,
        reason: "host memory: no P2P path (--via auto)".to_string(),
        model: vec![why.clone()],
        warnings: vec![format!(
            "NO P2P PATH: {why}. Benchmarking with buffers in HOST memory instead"
        )],
        client,
    }
}

/// Decides where the buffers live. `sys` is the topology below `root`, or why it could
/// not be read.
pub fn decide(
    root: &Path,
    sys: Result<&System, String>,
    via: Via,
    ep: &Endpoint,
    force: bool,
) -> Result<BenchRoute, PlacementError> {
    match (via, sys) {
        (Via::Host, _) => Ok(host("host memory, as asked (--via host)")),
        (Via::Auto, Err(e)) => Ok(fallback(e, None)),
        (Via::Auto, Ok(sys)) if no_userspace_p2p(sys).is_some() => Ok(fallback(
            format!(
                "kernel {} has no userspace p2pmem (p2pmem/allocate arrived in 6.2). {}",
                sys.rules.kernel,
                STILL_WORKS.trim_end_matches('.')
            ),
            None,
        )),
        (Via::Provider(provider), Ok(sys)) if no_userspace_p2p(sys).is_some() => {
            Err(PlacementError::NoUserspaceP2p {
                kernel: sys.rules.kernel,
                provider,
            })
        }
        (Via::Provider(provider), Err(e)) => Err(unchecked(provider, &e)),
        (Via::Auto, Ok(sys)) => Ok(decide_auto(root, sys, ep)),
        (Via::Provider(provider), Ok(sys)) => decide_provider(root, sys, provider, ep, force),
    }
}

fn decide_auto(root: &Path, sys: &System, ep: &Endpoint) -> BenchRoute {
    let client = client_of(root, sys, ep);
    if let Some(why) = client.refusal() {
        return fallback(why, Some(client));
    }
    let Some(bdf) = client.bdf else {
        return fallback("the device has no PCI function".to_string(), Some(client));
    };
    let found = match select::find(&sys.topology, &sys.rules, &[bdf]) {
        Ok(f) => f,
        Err(e) => return fallback(e.to_string(), Some(client)),
    };
    let Some(&provider) = found.best.first() else {
        let why = if found.candidates.is_empty() {
            "no PCI function here has p2pmem (no provider)".to_string()
        } else {
            format!(
                "the kernel finds no published provider that {bdf} can reach \
                 (`p2pmem find {bdf}` shows each of the {})",
                found.candidates.len()
            )
        };
        return fallback(why, Some(client));
    };
    let model = explain_choice(sys, &found, provider, &[bdf], "bench");
    BenchRoute {
        provider: Some(provider),
        reason: format!("p2pmem of {provider}, the provider the kernel would choose for {bdf}"),
        model,
        warnings: Vec::new(),
        client: Some(client),
    }
}

fn decide_provider(
    root: &Path,
    sys: &System,
    provider: Bdf,
    ep: &Endpoint,
    force: bool,
) -> Result<BenchRoute, PlacementError> {
    let client = client_of(root, sys, ep);
    let (model, warnings) = vet_named(sys, provider, &[&client], force, "bench")?;
    Ok(BenchRoute {
        provider: Some(provider),
        reason: format!("p2pmem of {provider}, as asked (--via {provider})"),
        model,
        warnings,
        client: Some(client),
    })
}
