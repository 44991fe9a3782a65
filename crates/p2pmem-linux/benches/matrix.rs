//! `cargo bench -p p2pmem-linux --bench matrix`: the full provider-by-client matrix of a
//! synthetic fabric, in memory, through `distance::matrix::PairIndex`, against the
//! per-pair path (`distance::decide` for each pair) measured in the same run.
//!
//! The fabric: `synth::write` of 8,192 functions in 20 PCI domains, 30-port switches, an
//! NVMe below each port, every other one a published provider (the 4,096-function fabric
//! of issue 15 twice over, so that it has 1,000 providers), read back with
//! `read_system`. Rows: the first 1,000 providers; columns: the first 2,000 NVMe
//! functions (providers and plain ones, every domain). Only the in-memory work is timed:
//! building the index and filling the 2,000,000 cells, 5 times, median reported.
//!
//! The baseline, `decide` per pair, takes seconds for the whole matrix, so it is timed on
//! the first `MATRIX_BENCH_BASELINE_ROWS` rows (default 25: 50,000 pairs) and its time per
//! pair scaled to the whole matrix; those rows are also compared cell by cell with the
//! fast matrix, and the bench fails if one differs. Without `--bench` (under
//! `cargo test`) it checks a small fabric's whole matrix against `decide` instead.

#[path = "../../p2pmem-model/benches/support/harness.rs"]
mod harness;

use p2pmem_linux::synth::{template_root, write, Made, Shape};
use p2pmem_linux::system::{read_system, System};
use p2pmem_model::distance::decide;
use p2pmem_model::distance::matrix::{Matrix, Outcome, PairIndex};
use p2pmem_model::Bdf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const FABRIC: Shape = Shape {
    functions: 8192,
    domains: 20,
    ports_per_switch: 30,
};
const PROVIDERS: usize = 1000;
const CLIENTS: usize = 2000;
const RUNS: usize = 5;
const DEFAULT_BASELINE_ROWS: usize = 25;

fn fabric(shape: Shape) -> Result<(tempfile::TempDir, Made, System), String> {
    // Tens of thousands of small files: in memory when the machine has /dev/shm.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .map_err(|e| e.to_string())?;
    let made = write(&template_root(), dir.path(), shape).map_err(|e| e.to_string())?;
    let sys = read_system(dir.path()).map_err(|e| e.to_string())?;
    Ok((dir, made, sys))
}

/// The rows and columns: providers, then NVMe functions, in the order written.
fn axes(made: &Made, rows: usize, columns: usize) -> Result<(Vec<Bdf>, Vec<Bdf>), String> {
    let mut nvme: Vec<Bdf> = made
        .providers
        .iter()
        .chain(&made.plain_nvme)
        .copied()
        .collect();
    nvme.sort_by_key(|b| made.functions.iter().position(|f| f == b));
    if made.providers.len() < rows || nvme.len() < columns {
        return Err(format!(
            "the fabric has {} providers and {} NVMe, fewer than {rows} x {columns}",
            made.providers.len(),
            nvme.len()
        ));
    }
    Ok((made.providers[..rows].to_vec(), nvme[..columns].to_vec()))
}

fn fast(sys: &System, rows: &[Bdf], columns: &[Bdf]) -> Result<(Matrix, Duration), String> {
    let start = Instant::now();
    let m = PairIndex::new(&sys.topology, &sys.rules)
        .matrix(rows, columns)
        .map_err(|e| e.to_string())?;
    Ok((m, start.elapsed()))
}

fn per_pair(
    sys: &System,
    rows: &[Bdf],
    columns: &[Bdf],
) -> Result<(Vec<Outcome>, Duration), String> {
    let start = Instant::now();
    let mut cells = Vec::with_capacity(rows.len() * columns.len());
    for p in rows {
        for c in columns {
            let v = decide(&sys.topology, &sys.rules, *p, *c).map_err(|e| e.to_string())?;
            cells.push(Outcome::of(&v));
        }
    }
    Ok((cells, start.elapsed()))
}

fn compare(m: &Matrix, slow: &[Outcome], rows: usize) -> Result<(), String> {
    let n = m.clients.len();
    for (i, o) in slow.iter().enumerate() {
        let (r, c) = (i / n, i % n);
        if r >= rows || m.get(r, c) != Some(o) {
            return Err(format!(
                "{} -> {}: matrix {:?}, decide {o:?}",
                m.providers[r.min(m.providers.len() - 1)],
                m.clients[c],
                m.get(r, c)
            ));
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn bench() -> Result<(), String> {
    let baseline_rows = match std::env::var("MATRIX_BENCH_BASELINE_ROWS") {
        Ok(v) => v
            .parse()
            .map_err(|e| format!("MATRIX_BENCH_BASELINE_ROWS={v}: {e}"))?,
        Err(_) => DEFAULT_BASELINE_ROWS,
    };
    let (_dir, made, sys) = fabric(FABRIC)?;
    let (rows, columns) = axes(&made, PROVIDERS, CLIENTS)?;
    let pairs = rows.len() * columns.len();
    println!(
        "matrix bench: {} functions ({} domains, {}-port switches), {} providers x {} clients = {pairs} pairs, kernel {}, CPU {}",
        made.functions.len(),
        FABRIC.domains,
        FABRIC.ports_per_switch,
        rows.len(),
        columns.len(),
        sys.rules.kernel,
        sys.rules.cpu.describe()
    );
    let mut runs = Vec::new();
    let mut last = None;
    for _ in 0..RUNS {
        let (m, t) = fast(&sys, &rows, &columns)?;
        runs.push(t);
        last = Some(m);
    }
    runs.sort();
    let median = runs[RUNS / 2];
    let m = last.ok_or("no run")?;
    let rows_b = baseline_rows.clamp(1, rows.len());
    let (slow, t_slow) = per_pair(&sys, &rows[..rows_b], &columns)?;
    compare(&m, &slow, rows_b)?;
    let per_pair_ns = t_slow.as_secs_f64() * 1e9 / slow.len() as f64;
    let slow_full = Duration::from_secs_f64(per_pair_ns * pairs as f64 / 1e9);
    let count = |f: &dyn Fn(&Outcome) -> bool| m.cells.iter().filter(|o| f(o)).count();
    println!(
        "outcomes: {} bus_addr, {} refused, {} other",
        count(&|o| o.map_type == Some(p2pmem_model::distance::MapType::BusAddr)),
        count(&|o| o.supported == Some(false)),
        count(
            &|o| o.map_type != Some(p2pmem_model::distance::MapType::BusAddr)
                && o.supported != Some(false)
        )
    );
    println!("{:<44} {:>12} {:>12}", "path", "matrix ms", "ns / pair");
    println!(
        "{:<44} {:>12.1} {:>12.1}",
        format!("PairIndex::matrix (median of {RUNS})"),
        ms(median),
        median.as_secs_f64() * 1e9 / pairs as f64
    );
    println!(
        "{:<44} {:>12.1} {:>12.1}",
        format!("baseline: decide per pair ({rows_b} rows, scaled)"),
        ms(slow_full),
        per_pair_ns
    );
    println!(
        "fast runs: min {:.1} ms, max {:.1} ms; baseline rows agree cell by cell ({} pairs)",
        ms(runs[0]),
        ms(runs[RUNS - 1]),
        slow.len()
    );
    println!(
        "ratio decide per pair / PairIndex: {:.0}x",
        slow_full.as_secs_f64() / median.as_secs_f64()
    );
    Ok(())
}

/// Under `cargo test`: a small fabric's whole matrix against `decide`.
fn test_small_fabric() -> Result<(), String> {
    let shape = Shape {
        functions: 200,
        domains: 3,
        ports_per_switch: 6,
    };
    let (_dir, made, sys) = fabric(shape)?;
    let all: Vec<Bdf> = made.functions.clone();
    let (m, _) = fast(&sys, &all, &all)?;
    let (slow, _) = per_pair(&sys, &all, &all)?;
    compare(&m, &slow, all.len())
}

fn main() -> ExitCode {
    let result = match harness::mode() {
        harness::Mode::Bench => bench(),
        harness::Mode::List => return ExitCode::SUCCESS,
        harness::Mode::Test => test_small_fabric().map(|()| {
            println!(
                "matrix bench: the small fabric's matrix is decide's (run with --bench to time)"
            )
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("matrix bench: {e}");
            ExitCode::FAILURE
        }
    }
}
