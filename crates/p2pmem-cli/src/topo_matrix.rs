//! `p2pmem topo --matrix`: providers by clients in one table, as `nvidia-smi topo -m`
//! shows GPUs and NICs. Each cell is `check`'s verdict for the pair (the model's
//! [`select::check`], never a second implementation) in a few letters.

use crate::output::{lspci_name, opt_size, pci_name};
use anyhow::bail;
use p2pmem_linux::pci_names::PciNames;
use p2pmem_linux::resolve::resolve_client;
use p2pmem_linux::system::System;
use p2pmem_model::distance::MapType;
use p2pmem_model::select::{self, Check};
use p2pmem_model::Bdf;
use p2pmem_wire::pci::PciName;
use serde::Serialize;

/// The most endpoints (providers and clients together) a text table shows.
pub const MAX_ENDPOINTS: usize = 64;

/// The legend printed under the table, one line per code.
pub const LEGEND: [(&str, &str); 8] = [
    (
        "B<n>",
        "allowed, bus address: a common switch or port below the root, distance n",
    ),
    (
        "H<n>",
        "allowed, through the host bridge (whitelisted, or an AMD Zen CPU), distance n",
    ),
    (
        "xA",
        "refused: ACS redirect (RR/CR/EC) on the path sends it to a host bridge that refuses",
    ),
    (
        "xH",
        "refused: no common switch, and the host bridge is not whitelisted",
    ),
    (
        "x",
        "refused for another reason (see `p2pmem check PROVIDER CLIENT`)",
    ),
    (
        "?",
        "unknown: an ACS register could not be read (run as root)",
    ),
    ("-", "the row has no p2pmem/: not a provider"),
    (
        "*",
        "after a provider: its p2pmem is not published (find and nvmet never pick it)",
    ),
];

/// One endpoint: a row (provider), a column (client), or both.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// The short name in the table's headers (`nvme0`, `mlx5_0`, `E3`).
    pub label: String,
    /// Its PCI address.
    pub bdf: Bdf,
    /// Whether it is a row (has `p2pmem/`).
    pub provider: bool,
    /// Whether it is a column.
    pub client: bool,
    /// Whether its p2pmem is published (false when not a provider).
    pub published: bool,
    /// Its IDs and names.
    #[serde(flatten)]
    pub name: Option<PciName>,
}

/// One cell: `check PROVIDER CLIENT`'s verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// The row.
    pub provider: Bdf,
    /// The column.
    pub client: Bdf,
    /// The letters in the table (`B4`, `H7`, `xA`, `xH`, `x`, `?`, `-`).
    pub code: String,
    /// The verdict; null when unknown.
    pub supported: Option<bool>,
    /// `bus_addr`, `thru_host_bridge`, `not_supported`, or null when unknown.
    pub map_type: Option<&'static str>,
    /// The kernel's distance for the pair (computed for refused pairs too).
    pub distance: u32,
    /// Devices on the path with ACS redirect bits set.
    pub acs_redirect: Vec<Bdf>,
}

/// The matrix.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    /// The kernel whose rules applied.
    pub kernel: String,
    /// Rows and columns, by PCI address.
    pub endpoints: Vec<Endpoint>,
    /// Every provider × client cell, row by row.
    pub cells: Vec<Cell>,
}

/// The letters for one `check` of a single pair.
pub fn code(c: &Check) -> String {
    if !c.is_provider {
        return "-".to_string();
    }
    let Some(pair) = c.pairs.first() else {
        return "?".to_string();
    };
    match (c.supported, c.map_type) {
        (Some(true), Some(MapType::BusAddr)) => format!("B{}", pair.walk_distance),
        (Some(true), Some(MapType::ThruHostBridge)) => format!("H{}", pair.walk_distance),
        (Some(false), _) if !pair.acs_redirect.is_empty() => "xA".to_string(),
        (Some(false), _) if pair.rule_h.as_ref().and_then(|h| h.allowed()) == Some(false) => {
            "xH".to_string()
        }
        (Some(false), _) => "x".to_string(),
        _ => "?".to_string(),
    }
}

fn is_client(sys: &System, bdf: Bdf) -> bool {
    let f = sys.topology.get(&bdf);
    f.is_some_and(|f| f.is_nvme() || f.p2pmem.is_some())
        || sys.rdma.iter().any(|r| r.bdf == Some(bdf))
}

fn label(sys: &System, bdf: Bdf, index: usize) -> String {
    if let Some(c) = sys.nvme.iter().find(|c| c.bdf == Some(bdf)) {
        return c.name.clone();
    }
    if let Some(r) = sys.rdma.iter().find(|r| r.bdf == Some(bdf)) {
        return r.name.clone();
    }
    format!("E{index}")
}

fn resolve(sys: &System, names: &[String]) -> anyhow::Result<Vec<Bdf>> {
    names
        .iter()
        .map(|n| Ok(resolve_client(sys, n)?.bdf))
        .collect()
}

/// Build the matrix: rows are the providers (or `--provider`), columns every NVMe,
/// RDMA and provider function (or `--client`).
pub fn build(
    sys: &System,
    names: &PciNames,
    providers: &[String],
    clients: &[String],
) -> anyhow::Result<Matrix> {
    let rows: Vec<Bdf> = if providers.is_empty() {
        sys.topology.providers().map(|f| f.bdf).collect()
    } else {
        resolve(sys, providers)?
    };
    let cols: Vec<Bdf> = if clients.is_empty() {
        sys.topology
            .functions()
            .map(|f| f.bdf)
            .filter(|b| is_client(sys, *b))
            .collect()
    } else {
        resolve(sys, clients)?
    };
    let mut all: Vec<Bdf> = rows.iter().chain(&cols).copied().collect();
    all.sort();
    all.dedup();
    let endpoints = all
        .iter()
        .enumerate()
        .map(|(i, &bdf)| {
            let m = sys.topology.get(&bdf).and_then(|f| f.p2pmem);
            Endpoint {
                label: label(sys, bdf, i),
                bdf,
                provider: rows.contains(&bdf),
                client: cols.contains(&bdf),
                published: m.is_some_and(|m| m.is_published()),
                name: pci_name(sys, names, bdf),
            }
        })
        .collect();
    let mut cells = Vec::with_capacity(rows.len() * cols.len());
    for &p in &rows {
        for &c in &cols {
            let check = select::check(&sys.topology, &sys.rules, p, &[c])?;
            let pair = check.pairs.first();
            cells.push(Cell {
                provider: p,
                client: c,
                code: code(&check),
                supported: check.supported,
                map_type: check.map_type.map(MapType::as_str),
                distance: pair.map(|x| x.walk_distance).unwrap_or(0),
                acs_redirect: pair.map(|x| x.acs_redirect.clone()).unwrap_or_default(),
            });
        }
    }
    Ok(Matrix {
        kernel: sys.rules.kernel.to_string(),
        endpoints,
        cells,
    })
}

/// The table, its legend and the endpoints' key, for humans. Refuses more than
/// [`MAX_ENDPOINTS`] endpoints with a hint how to narrow the table down.
pub fn text(sys: &System, names: &PciNames, m: &Matrix) -> anyhow::Result<String> {
    let n = m.endpoints.len();
    if n > MAX_ENDPOINTS {
        bail!(
            "{n} providers and clients are too many for a readable table (at most \
             {MAX_ENDPOINTS}): pick rows and columns with --provider NAME and --client NAME \
             (each repeatable: PCI address, nvme0, nvme0n1, mlx5_0), or use --json"
        );
    }
    let rows: Vec<&Endpoint> = m.endpoints.iter().filter(|e| e.provider).collect();
    let cols: Vec<&Endpoint> = m.endpoints.iter().filter(|e| e.client).collect();
    let mut out = String::new();
    if rows.is_empty() || cols.is_empty() {
        out.push_str(if rows.is_empty() {
            "no P2P providers (no function has p2pmem/): the matrix is empty; see `p2pmem doctor`\n"
        } else {
            "no clients (NVMe, RDMA or provider functions): the matrix is empty\n"
        });
        return Ok(out);
    }
    let row_label = |e: &Endpoint| {
        if e.published {
            e.label.clone()
        } else {
            format!("{}*", e.label)
        }
    };
    let first = rows
        .iter()
        .map(|e| row_label(e).len())
        .max()
        .unwrap_or(0)
        .max("provider".len());
    let width = cols.iter().map(|e| e.label.len()).max().unwrap_or(0).max(4) + 1;
    out.push_str(&format!("{:first$}", "provider"));
    for c in &cols {
        out.push_str(&format!(" {:>width$}", c.label));
    }
    out.push('\n');
    let mut cells = m.cells.iter();
    for r in &rows {
        out.push_str(&format!("{:first$}", row_label(r)));
        for _ in &cols {
            let code = cells.next().map(|c| c.code.as_str()).unwrap_or("?");
            out.push_str(&format!(" {code:>width$}"));
        }
        out.push('\n');
    }
    out.push_str(&format!("\nLegend (kernel {}):\n", m.kernel));
    for (code, what) in LEGEND {
        out.push_str(&format!("  {code:<5} {what}\n"));
    }
    out.push_str("\nEndpoints:\n");
    let lw = m.endpoints.iter().map(|e| e.label.len()).max().unwrap_or(0);
    for e in &m.endpoints {
        let what = match sys.topology.get(&e.bdf) {
            Some(f) => {
                let mut s = lspci_name(names, f);
                if let Some(p) = f.p2pmem {
                    s.push_str(&format!("  p2pmem {}", opt_size(p.size)));
                }
                s
            }
            None => String::new(),
        };
        out.push_str(&format!("  {:<lw$}  {}  {what}\n", e.label, e.bdf));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legend_covers_every_code_shape() {
        for want in ["B<n>", "H<n>", "xA", "xH", "x", "?", "-", "*"] {
            assert!(LEGEND.iter().any(|(c, _)| *c == want), "{want}");
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn more_than_64_endpoints_says_how_to_narrow_down() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/truth/lab_default_k7.3/root");
        let sys = p2pmem_linux::system::read_system(&root).unwrap();
        let names = PciNames::bundled();
        let mut m = build(&sys, &names, &[], &[]).unwrap();
        let one = m.endpoints[0].clone();
        m.endpoints = (0..=MAX_ENDPOINTS)
            .map(|i| Endpoint {
                label: format!("E{i}"),
                ..one.clone()
            })
            .collect();
        let e = text(&sys, &names, &m).unwrap_err().to_string();
        assert!(e.contains("65 providers and clients"), "{e}");
        assert!(e.contains("--provider") && e.contains("--client"), "{e}");
        m.endpoints.truncate(MAX_ENDPOINTS);
        assert!(text(&sys, &names, &m).is_ok());
    }
}
