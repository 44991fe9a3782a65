//! Shared output helpers: loading the system, JSON printing, sizes, problem reports.

use crate::Common;
use anyhow::Context;
use p2pmem_linux::system::{read_system_scoped, Scope, System};

/// Read the system below `--root`, reporting partial-read problems on stderr (text mode)
/// so stdout stays clean.
pub fn load(common: &Common) -> anyhow::Result<System> {
    load_scoped(common, &Scope::All)
}

/// [`load`], reading in full only the PCI functions `scope` asks for (see
/// [`read_system_scoped`]).
pub fn load_scoped(common: &Common, scope: &Scope) -> anyhow::Result<System> {
    let sys = read_system_scoped(&common.root, scope)
        .with_context(|| format!("cannot read the system below {}", common.root.display()))?;
    if !common.json {
        for p in &sys.problems {
            eprintln!("p2pmem: warning: {}: {}", p.path, p.what);
        }
    }
    Ok(sys)
}

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Bytes for humans: `16.0 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// An optional size for humans.
pub fn opt_size(bytes: Option<u64>) -> String {
    bytes.map(size).unwrap_or_else(|| "?".to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::size(512), "512 B");
        assert_eq!(super::size(16 << 20), "16.0 MiB");
        assert_eq!(super::size((16 << 20) - (64 << 10)), "15.9 MiB");
    }
}
