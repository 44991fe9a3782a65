//! `cargo bench -p p2pmem-model --bench plan`: `p2pmem plan` at issue 16's scale, a
//! synthetic design of 4,096 devices (`plan::synth::Shape::BENCH`: 256 switches of 16
//! endpoints, one p2pmem provider and one RDMA NIC each, 19 host bridges) and 10,000
//! flows (60% copies within a switch, 30% across, 10% nvmet), on one core.
//!
//! Timed, 5 runs, median: reading the design text, building the fabric, and the plan
//! (every flow routed with P2P and without, loads, bottleneck, suggestions). The
//! baseline, measured in the same run, is what the plan would cost if each `auto` flow
//! asked `select::find` on its own (a fresh `PairIndex` per search, as one
//! `p2pmem copy --via auto` does): timed on the first `PLAN_BENCH_BASELINE_FLOWS` flows
//! (default 200) and scaled to all of them; the providers both pick must agree.
//! Without `--bench` (under `cargo test`) it checks that agreement on a small design.

#[path = "support/harness.rs"]
mod harness;

use p2pmem_model::plan::design::{parse_design, Design};
use p2pmem_model::plan::fabric::Fabric;
use p2pmem_model::plan::flow::{by_names, parse_flows, FlowKind, FlowSpec};
use p2pmem_model::plan::synth::{self, Shape};
use p2pmem_model::plan::{plan, Plan, PlanOptions};
use p2pmem_model::select;
use p2pmem_model::Bdf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const RUNS: usize = 5;

fn inputs(shape: Shape) -> Result<(String, Design, Vec<FlowSpec<Bdf>>), String> {
    let text = synth::design(shape);
    let d = parse_design(&text).map_err(|e| e.to_string())?;
    let flows = parse_flows(&synth::flows(shape))?
        .iter()
        .map(|f| f.resolve(by_names(&d.names)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((text, d, flows))
}

fn run(d: &Design, fabric: &Fabric, flows: &[FlowSpec<Bdf>]) -> Result<Plan, String> {
    plan(&d.topology, &d.rules, fabric, flows, PlanOptions::default()).map_err(|e| e.to_string())
}

/// The baseline: `select::find` per auto copy flow; checks it picks what the plan did.
fn baseline(
    d: &Design,
    p: &Plan,
    flows: &[FlowSpec<Bdf>],
    n: usize,
) -> Result<(usize, Duration), String> {
    let t = Instant::now();
    let mut asked = 0;
    for (i, f) in flows.iter().enumerate().take(n) {
        let FlowKind::Copy {
            src,
            dst,
            via: p2pmem_model::plan::flow::Via::Auto,
        } = &f.kind
        else {
            continue;
        };
        let found =
            select::find(&d.topology, &d.rules, &[*src, *dst]).map_err(|e| e.to_string())?;
        asked += 1;
        let planned = p.flows[i].provider;
        let ok = match planned {
            None => found.best.is_empty(),
            Some(b) => found.best.contains(&b),
        };
        if !ok {
            return Err(format!(
                "flow {}: plan used {planned:?}, find says {:?}",
                f.text, found.best
            ));
        }
    }
    Ok((asked, t.elapsed()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench() -> Result<(), String> {
    let shape = Shape::BENCH;
    let (text, d, flows) = inputs(shape)?;
    let endpoints = d
        .topology
        .functions()
        .filter(|f| !f.is_bridge() && f.class != 0x060000)
        .count();
    let (mut read, mut build, mut planned) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        let d2 = parse_design(&text).map_err(|e| e.to_string())?;
        read.push(t.elapsed());
        let t = Instant::now();
        let fabric = Fabric::new(&d2.topology, &d2.facts);
        build.push(t.elapsed());
        let t = Instant::now();
        let p = run(&d2, &fabric, &flows)?;
        planned.push(t.elapsed());
        last = Some(p);
    }
    let p = last.ok_or("no run")?;
    let n: usize = std::env::var("PLAN_BENCH_BASELINE_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (asked, took) = baseline(&d, &p, &flows, n)?;
    let autos = flows
        .iter()
        .filter(|f| {
            matches!(
                f.kind,
                FlowKind::Copy {
                    via: p2pmem_model::plan::flow::Via::Auto,
                    ..
                }
            )
        })
        .count();
    let per = took.as_secs_f64() / asked.max(1) as f64;
    let base_total = per * autos as f64;
    let (r, b, pl) = (median(read), median(build), median(planned));
    let total = r + b + pl;
    println!(
        "plan bench: {endpoints} endpoints, {} functions, {} flows, {} links",
        d.topology.functions().count(),
        flows.len(),
        p.with_p2p.links.len()
    );
    println!(
        "  read design   {:>9.1} ms (median of {RUNS})",
        r.as_secs_f64() * 1e3
    );
    println!("  build fabric  {:>9.1} ms", b.as_secs_f64() * 1e3);
    println!(
        "  plan          {:>9.1} ms ({:.1} us per flow, with and without P2P)",
        pl.as_secs_f64() * 1e3,
        pl.as_secs_f64() * 1e6 / flows.len() as f64
    );
    println!("  total         {:>9.1} ms", total.as_secs_f64() * 1e3);
    println!(
        "  baseline: select::find per auto flow (fresh index each), {asked} flows timed, scaled to {autos}: {:.1} ms for the searches alone; plan is {:.1}x faster in all",
        base_total * 1e3,
        base_total / pl.as_secs_f64()
    );
    println!(
        "  max_scale {:.3} with P2P, {:.3} without",
        p.with_p2p.max_scale.unwrap_or(f64::NAN),
        p.without_p2p.max_scale.unwrap_or(f64::NAN)
    );
    if total > Duration::from_secs(1) {
        println!("  NOTE: over the 1 s target of issue 16 on this machine");
    }
    Ok(())
}

fn test_small() -> Result<(), String> {
    let shape = Shape {
        endpoints: 160,
        per_switch: 16,
        flows: 300,
        seed: 7,
    };
    let (_, d, flows) = inputs(shape)?;
    let fabric = Fabric::new(&d.topology, &d.facts);
    let p = run(&d, &fabric, &flows)?;
    let (asked, _) = baseline(&d, &p, &flows, flows.len())?;
    if asked == 0 {
        return Err("no auto flows checked".into());
    }
    println!(
        "plan bench: {asked} auto flows pick what select::find picks (run with --bench to time)"
    );
    Ok(())
}

fn main() -> ExitCode {
    let result = match harness::mode() {
        harness::Mode::Bench => bench(),
        harness::Mode::List => return ExitCode::SUCCESS,
        harness::Mode::Test => test_small(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plan bench: {e}");
            ExitCode::FAILURE
        }
    }
}
