//! Write a synthetic capture at fabric scale (see `p2pmem_linux::synth`):
//!
//! ```sh
//! cargo run --release -p p2pmem-linux --example synth_capture -- OUT [FUNCTIONS [DOMAINS [PORTS]]]
//! ```
//!
//! Defaults: 4,096 functions, 10 domains, 30-port switches. OUT must not exist. Prints
//! the counts, and the first providers and plain NVMe functions, on stdout.

use p2pmem_linux::synth::{template_root, write, Shape};
use std::path::PathBuf;
use std::process::ExitCode;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> Result<T, String> {
    match args.get(i) {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| format!("argument {i}: {s:?} is not a number")),
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first().map(PathBuf::from) else {
        return Err("usage: synth_capture OUT [FUNCTIONS [DOMAINS [PORTS]]]".into());
    };
    if out.exists() {
        return Err(format!("{} exists; give a new directory", out.display()));
    }
    let f = Shape::FABRIC;
    let shape = Shape {
        functions: arg(&args, 1, f.functions)?,
        domains: arg(&args, 2, f.domains)?,
        ports_per_switch: arg(&args, 3, f.ports_per_switch)?,
    };
    let made = write(&template_root(), &out, shape).map_err(|e| e.to_string())?;
    let list = |v: &[p2pmem_model::Bdf]| {
        v.iter()
            .take(8)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "{}: {} functions, {} providers, {} plain NVMe",
        out.display(),
        made.functions.len(),
        made.providers.len(),
        made.plain_nvme.len()
    );
    println!("providers: {}", list(&made.providers));
    println!("plain: {}", list(&made.plain_nvme));
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synth_capture: {e}");
            ExitCode::from(2)
        }
    }
}
