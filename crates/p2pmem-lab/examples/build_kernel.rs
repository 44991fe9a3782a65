//! Builds (or reuses) the lab kernel and prints its path: `cargo run --example build_kernel`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cache = p2pmem_lab::Cache::from_env();
    let k = p2pmem_lab::ensure_kernel(
        &cache,
        &p2pmem_lab::KernelSpec::default(),
        p2pmem_lab::Progress::stderr(),
    )?;
    println!("{}", k.bzimage.display());
    Ok(())
}
