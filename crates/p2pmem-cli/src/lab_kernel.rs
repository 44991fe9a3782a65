//! Which kernel `p2pmem lab` builds and boots: a line the lab pins (`--kernel 7.3`, a
//! Debian source package), a user's source tree (`--kernel-source DIR`), or a user's
//! prebuilt image (`--kernel-image FILE --kernel-config FILE`, with `--kernel-source DIR`
//! naming the tree it was built in when the `p2pmem_pci` module should be built for it).

use std::path::PathBuf;

use clap::Args;
use p2pmem_lab::build::lines::{Line, DEFAULT_LINE};
use p2pmem_lab::{KernelSource, KernelSpec};

/// The kernel options of `lab kernel|run|plan|capture|demo`.
#[derive(Debug, Clone, Args)]
pub struct KernelOpts {
    /// Kernel line to build (or reuse) and boot, from Debian's pinned source packages:
    /// 6.1, 6.12, 7.2 or 7.3 (default: $P2PMEM_LAB_KERNEL, else 6.12). The p2pmem_pci
    /// driver (Rust) is built for 6.12 and 7.3.
    #[arg(
        long,
        value_name = "LINE",
        env = p2pmem_lab::run::lab::KERNEL_ENV,
        default_value_t = DEFAULT_LINE,
        value_parser = pinned_line
    )]
    kernel: Line,
    /// Build the kernel from this source tree instead (out of tree, with the lab's
    /// fragment for the tree's line; nothing is written into the tree). With
    /// --kernel-image: the tree that image was built in, for the p2pmem_pci module.
    #[arg(long, value_name = "DIR", conflicts_with = "kernel")]
    kernel_source: Option<PathBuf>,
    /// Boot this prebuilt bzImage instead of building one (needs --kernel-config). Without
    /// --kernel-source the lab cannot build the p2pmem_pci module for it and runs without.
    #[arg(
        long,
        value_name = "FILE",
        requires = "kernel_config",
        conflicts_with = "kernel"
    )]
    kernel_image: Option<PathBuf>,
    /// The .config of --kernel-image (its line decides which lab options it is checked
    /// against).
    #[arg(long, value_name = "FILE", requires = "kernel_image")]
    kernel_config: Option<PathBuf>,
}

/// `--kernel LINE` for other commands (`lab matrix`).
pub fn pinned_line_arg(text: &str) -> Result<Line, String> {
    pinned_line(text)
}

/// `--kernel LINE`: a line the lab pins.
fn pinned_line(text: &str) -> Result<Line, String> {
    let line = Line::parse(text)
        .filter(|l| l.to_string() == text)
        .ok_or_else(|| {
            format!(
                "{text:?} is not a kernel line (MAJOR.MINOR): the lab pins {}",
                p2pmem_lab::build::lines::pinned_lines()
            )
        })?;
    KernelSource::line(line).map_err(|e| e.to_string())?;
    Ok(line)
}

impl KernelOpts {
    /// What to build or adopt.
    pub fn spec(&self) -> anyhow::Result<KernelSpec> {
        let source = match (&self.kernel_image, &self.kernel_config) {
            (Some(bzimage), Some(config)) => KernelSource::Image {
                bzimage: bzimage.clone(),
                config: config.clone(),
                tree: self.kernel_source.clone(),
            },
            _ => match &self.kernel_source {
                Some(tree) => KernelSource::Tree(tree.clone()),
                None => KernelSource::line(self.kernel)?,
            },
        };
        Ok(KernelSpec {
            source,
            fragment: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        kernel: KernelOpts,
    }

    fn parse(args: &[&str]) -> Result<KernelOpts, clap::Error> {
        let mut argv = vec!["p"];
        argv.extend_from_slice(args);
        let m = Cli::command().try_get_matches_from(argv)?;
        Cli::from_arg_matches(&m).map(|c| c.kernel)
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_default_is_6_12_and_every_pinned_line_is_accepted() {
        let spec = parse(&[]).unwrap().spec().unwrap();
        assert_eq!(spec.source, KernelSource::default());
        for line in ["6.1", "6.12", "7.2", "7.3"] {
            let spec = parse(&["--kernel", line]).unwrap().spec().unwrap();
            match spec.source {
                KernelSource::Pinned(p) => assert_eq!(p.line.to_string(), line),
                other => panic!("{line}: {other:?}"),
            }
        }
        for bad in ["6.6", "6.12.1", "latest", "06.12"] {
            let e = parse(&["--kernel", bad]).unwrap_err().to_string();
            assert!(e.contains("6.1, 6.12, 7.2, 7.3"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_tree_or_an_image_replaces_the_line() {
        let spec = parse(&["--kernel-source", "/src/linux"])
            .unwrap()
            .spec()
            .unwrap();
        assert_eq!(spec.source, KernelSource::Tree("/src/linux".into()));
        let spec = parse(&[
            "--kernel-image",
            "/b/bzImage",
            "--kernel-config",
            "/b/.config",
        ])
        .unwrap()
        .spec()
        .unwrap();
        assert_eq!(
            spec.source,
            KernelSource::Image {
                bzimage: "/b/bzImage".into(),
                config: "/b/.config".into(),
                tree: None
            }
        );
        let spec = parse(&[
            "--kernel-image",
            "/b/bzImage",
            "--kernel-config",
            "/b/.config",
            "--kernel-source",
            "/b",
        ])
        .unwrap()
        .spec()
        .unwrap();
        assert!(matches!(
            spec.source,
            KernelSource::Image { tree: Some(_), .. }
        ));
    }

    #[test]
    fn contradictions_are_refused() {
        assert!(parse(&["--kernel", "7.3", "--kernel-source", "/s"]).is_err());
        assert!(parse(&[
            "--kernel",
            "7.3",
            "--kernel-image",
            "/i",
            "--kernel-config",
            "/c"
        ])
        .is_err());
        assert!(parse(&["--kernel-image", "/i"]).is_err());
        assert!(parse(&["--kernel-config", "/c"]).is_err());
    }
}
