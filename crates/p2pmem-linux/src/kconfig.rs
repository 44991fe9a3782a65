//! The running kernel's build configuration, where the system exposes it
//! (`/proc/config.gz`, or `/boot/config-<release>`).

use crate::bounded;
use crate::rootfs::RootFs;
use p2pmem_model::limits;
use serde::Serialize;
use std::collections::BTreeMap;

/// `CONFIG_*` options and their values (`y`, `m`, `n` for "is not set", or a string).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KernelConfig {
    /// Where it was read from.
    pub source: String,
    /// Options by name without the `CONFIG_` prefix.
    pub options: BTreeMap<String, String>,
}

impl KernelConfig {
    /// Parse a `.config` text.
    pub fn parse(source: &str, text: &str) -> Self {
        let mut options = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("# CONFIG_") {
                if let Some(name) = rest.strip_suffix(" is not set") {
                    options.insert(name.to_string(), "n".to_string());
                }
            } else if let Some(rest) = line.strip_prefix("CONFIG_") {
                if let Some((k, v)) = rest.split_once('=') {
                    options.insert(k.to_string(), v.trim_matches('"').to_string());
                }
            }
        }
        Self {
            source: source.to_string(),
            options,
        }
    }

    /// `Some(true)` when `name` (without `CONFIG_`) is `y` or `m`, `Some(false)` when not
    /// set, `None` when the config does not mention it.
    pub fn enabled(&self, name: &str) -> Option<bool> {
        self.options.get(name).map(|v| v == "y" || v == "m")
    }

    /// Read the config of `release` from the root, if any source exists.
    pub fn read(root: &RootFs, release: Option<&str>) -> Option<Self> {
        if let Ok(gz) = root.read("proc/config.gz", limits::KERNEL_CONFIG) {
            // The gunzipped text has the same bound: a gzip bomb stops there.
            let unzipped = bounded::read_from(
                flate2::read::GzDecoder::new(&gz[..]),
                &root.path("proc/config.gz"),
                limits::KERNEL_CONFIG,
            );
            if let Ok(text) = unzipped {
                return Some(Self::parse(
                    "/proc/config.gz",
                    &String::from_utf8_lossy(&text),
                ));
            }
        }
        let release = release?;
        let rel = format!("boot/config-{release}");
        let bytes = root.read(&rel, limits::KERNEL_CONFIG).ok()?;
        Some(Self::parse(
            &format!("/{rel}"),
            &String::from_utf8_lossy(&bytes),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_set_unset_and_strings() {
        let c = KernelConfig::parse("x", "CONFIG_PCI_P2PDMA=y\n# CONFIG_IOMMU_SUPPORT is not set\nCONFIG_NVME_CORE=m\nCONFIG_LOCALVERSION=\"-lab\"\n");
        assert_eq!(c.enabled("PCI_P2PDMA"), Some(true));
        assert_eq!(c.enabled("IOMMU_SUPPORT"), Some(false));
        assert_eq!(c.enabled("NVME_CORE"), Some(true));
        assert_eq!(c.enabled("ZONE_DEVICE"), None);
        assert_eq!(c.options["LOCALVERSION"], "-lab");
    }

    #[test]
    fn reads_boot_config_and_config_gz() {
        let d = tempfile::tempdir().unwrap();
        let r = RootFs::new(d.path());
        std::fs::create_dir_all(r.path("boot")).unwrap();
        std::fs::write(
            r.path("boot/config-6.1.0-18-amd64"),
            "# CONFIG_PCI_P2PDMA is not set\n",
        )
        .unwrap();
        let c = KernelConfig::read(&r, Some("6.1.0-18-amd64")).unwrap();
        assert_eq!(c.enabled("PCI_P2PDMA"), Some(false));
        std::fs::create_dir_all(r.path("proc")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"CONFIG_PCI_P2PDMA=y\n").unwrap();
        std::fs::write(r.path("proc/config.gz"), gz.finish().unwrap()).unwrap();
        let c = KernelConfig::read(&r, Some("6.1.0-18-amd64")).unwrap();
        assert_eq!(
            (c.source.as_str(), c.enabled("PCI_P2PDMA")),
            ("/proc/config.gz", Some(true))
        );
    }
}
