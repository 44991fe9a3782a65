//! Can this machine tell how many bytes of a copy crossed host memory? Only memory-
//! controller counters could (perf's uncore IMC PMUs, `uncore_imc*` in
//! `/sys/bus/event_source/devices`), and even they count every agent's traffic on the
//! socket, not one copy's. p2pmem does not read them, so outside the lab the figure is
//! always "not measured", with the reason; the lab measures it exactly from QEMU's DMA
//! trace (`p2pmem lab run -- p2pmem copy ...`).

use std::path::Path;

/// Where perf's PMUs are listed, below the root.
pub const PMU_DIR: &str = "sys/bus/event_source/devices";

/// The host-memory figure of a copy outside the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMemoryMeasurement {
    /// Bytes through host memory, when measured (never, today).
    pub bytes: Option<u64>,
    /// Why there is no figure.
    pub reason: String,
}

/// The memory-controller PMUs below `root` (`uncore_imc_0`, ...), sorted.
pub fn memory_controller_pmus(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.join(PMU_DIR)) else {
        return Vec::new();
    };
    let mut pmus: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("uncore_imc"))
        .collect();
    pmus.sort();
    pmus
}

/// What `p2pmem copy` can say about host-memory bytes on the machine below `root`.
pub fn host_memory_measurement(root: &Path) -> HostMemoryMeasurement {
    let lab = "the lab measures it exactly: p2pmem lab run -- p2pmem copy ...";
    let pmus = memory_controller_pmus(root);
    let reason = if pmus.is_empty() {
        format!(
            "not measurable on this machine: no memory-controller counters (no uncore_imc PMU in /{PMU_DIR}); {lab}"
        )
    } else {
        format!(
            "not measured: memory-controller counters exist ({}) but count all traffic on the socket, not this copy's, and p2pmem does not read them; {lab}",
            pmus.join(", ")
        )
    };
    HostMemoryMeasurement {
        bytes: None,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_pmus_it_is_not_measurable() {
        let tmp = tempfile::tempdir().unwrap();
        let m = host_memory_measurement(tmp.path());
        assert_eq!(m.bytes, None);
        assert!(
            m.reason.starts_with("not measurable on this machine"),
            "{}",
            m.reason
        );
        let dir = tmp.path().join(PMU_DIR);
        std::fs::create_dir_all(dir.join("cpu")).unwrap();
        assert!(memory_controller_pmus(tmp.path()).is_empty());
        std::fs::create_dir_all(dir.join("uncore_imc_1")).unwrap();
        std::fs::create_dir_all(dir.join("uncore_imc_0")).unwrap();
        assert_eq!(
            memory_controller_pmus(tmp.path()),
            ["uncore_imc_0", "uncore_imc_1"]
        );
        let m = host_memory_measurement(tmp.path());
        assert_eq!(m.bytes, None);
        assert!(
            m.reason.contains("uncore_imc_0, uncore_imc_1"),
            "{}",
            m.reason
        );
    }
}
