//! `p2pmem plan` input: a design file (TOML), then the same bytes as a flows file (one
//! `SRC:DST[:via=..][:rate=..]` or `nvmet:..` flow a line) and as one `--flow`. A design
//! that parses is planned as `plan --design` does (its flows resolved by name, the
//! fabric built, every flow routed with and without P2P), bounded to small designs so
//! each input stays fast. Checks the planner's own promises on what it returns: utilisations
//! and the scale are numbers and not negative, and P2P never raises the host-memory
//! load.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmem_model::plan::design::parse_design;
use p2pmem_model::plan::fabric::Fabric;
use p2pmem_model::plan::flow::{by_names, parse_flow, parse_flows, parse_rate};
use p2pmem_model::plan::{plan, PlanOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_flows(text);
    let _ = parse_flow(text);
    let _ = parse_rate(text);
    let Ok(d) = parse_design(text) else {
        return;
    };
    if d.topology.functions().count() > 512 || d.flows.len() > 256 {
        return;
    }
    let Ok(flows) = d
        .flows
        .iter()
        .map(|f| f.resolve(by_names(&d.names)))
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    let fabric = Fabric::new(&d.topology, &d.facts);
    let opts = PlanOptions {
        memory_bandwidth: d.memory_bandwidth,
        ..PlanOptions::default()
    };
    let Ok(p) = plan(&d.topology, &d.rules, &fabric, &flows, opts) else {
        return;
    };
    for loading in [&p.with_p2p, &p.without_p2p] {
        let utilisations = loading
            .links
            .iter()
            .map(|l| l.utilisation)
            .chain(loading.host_memory.iter().map(|h| h.utilisation))
            .chain([loading.max_scale]);
        for u in utilisations.flatten() {
            assert!(
                !u.is_nan() && u >= 0.0,
                "utilisation or scale {u}: {loading:?}"
            );
        }
    }
    let (with, without) = (
        p.with_p2p.host_memory_bytes_per_s,
        p.without_p2p.host_memory_bytes_per_s,
    );
    assert!(
        with <= without,
        "P2P raised host memory: {with} > {without}"
    );
});
