//! The kernel lines the lab builds, and the one table pinning each to a Debian source
//! package: the package, its exact version, the suite it is in and the sha256 of its
//! `.deb` (checked after download, see `debian.rs`). A line is a `major.minor` version;
//! the config fragment's conditions (`fragment.rs`) are written in lines too.

use std::fmt;

/// A kernel line: `major.minor` (6.12 for every 6.12.y).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Line {
    /// The major version.
    pub major: u32,
    /// The minor version (PATCHLEVEL).
    pub minor: u32,
}

impl Line {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Reads `6.12` (or a release such as `6.12.118` or `7.3.4-amd64`: only the first
    /// two numbers count). `None` when it does not start with two dotted numbers.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor_text = parts.next()?;
        let digits = minor_text
            .find(|c: char| !c.is_ascii_digit())
            .map_or(minor_text, |end| &minor_text[..end]);
        let minor = digits.parse().ok()?;
        Some(Self { major, minor })
    }

    /// The line of a source tree, from its top-level `Makefile` (`VERSION = 6`,
    /// `PATCHLEVEL = 12`).
    pub fn from_makefile(text: &str) -> Option<Self> {
        let value = |key: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().parse::<u32>().ok())?
            })
        };
        Some(Self::new(value("VERSION")?, value("PATCHLEVEL")?))
    }

    /// The line of a kernel `.config`, from its header (`# Linux/x86 6.12.118 Kernel
    /// Configuration`).
    pub fn from_config(text: &str) -> Option<Self> {
        text.lines().take(10).find_map(|l| {
            let rest = l.strip_prefix("# Linux/")?;
            let (_, version) = rest.split_once(' ')?;
            let version = version.strip_suffix(" Kernel Configuration")?;
            Self::parse(version)
        })
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Where a package is: the archive and the suite, as in a `sources.list` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    /// The archive's URL (`http://deb.debian.org/debian`).
    pub archive: &'static str,
    /// The suite (`bookworm-security`).
    pub name: &'static str,
}

/// Debian's main archive.
pub const DEBIAN: &str = "http://deb.debian.org/debian";
/// Debian's security archive.
pub const DEBIAN_SECURITY: &str = "http://deb.debian.org/debian-security";

/// Every suite a pin names: the lab's `sources.list` lists these (component `main`).
pub const SUITES: &[Suite] = &[
    Suite {
        archive: DEBIAN,
        name: "bookworm",
    },
    Suite {
        archive: DEBIAN,
        name: "sid",
    },
    Suite {
        archive: DEBIAN,
        name: "trixie-backports",
    },
    Suite {
        archive: DEBIAN_SECURITY,
        name: "bookworm-security",
    },
];

/// One line's source: a Debian `linux-source-X` package at one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// The line (`--kernel 6.12`).
    pub line: Line,
    /// The binary package (`linux-source-6.12`).
    pub package: &'static str,
    /// Its exact version.
    pub version: &'static str,
    /// The suite holding that version (documentation: apt finds it in any listed suite).
    pub suite: &'static str,
    /// Hex sha256 of the `.deb`.
    pub sha256: &'static str,
    /// Size of the `.deb` in bytes (for the progress line).
    pub size: u64,
}

impl Pin {
    /// The tarball inside the package: `usr/src/<package>.tar.xz`.
    pub fn tarball(&self) -> String {
        format!("usr/src/{}.tar.xz", self.package)
    }

    /// `package=version`, what `apt-get download` is given.
    pub fn apt_spec(&self) -> String {
        format!("{}={}", self.package, self.version)
    }

    /// The source's identity in the kernel cache key.
    pub fn identity(&self) -> String {
        format!(
            "debian {} {} sha256 {}",
            self.package, self.version, self.sha256
        )
    }
}

/// The lines users run, pinned (sha256 of each `.deb` as downloaded from
/// deb.debian.org; apt checks it against the signed index too).
pub const PINS: &[Pin] = &[
    Pin {
        line: Line::new(6, 1),
        package: "linux-source-6.1",
        version: "6.1.192-3",
        suite: "bookworm-security",
        sha256: "5259c57ca92092da39bd2ea803046da0e3c28f2b6a11ea20f6297468188ceb67",
        size: 139_330_232,
    },
    Pin {
        line: Line::new(6, 12),
        package: "linux-source-6.12",
        version: "6.12.118-1~deb12u1",
        suite: "bookworm-security",
        sha256: "896aff3b39299fa0dd36fef4f5db56ab189182e39abbbb1227dafdc7fcfe3fc3",
        size: 153_531_472,
    },
    Pin {
        line: Line::new(7, 2),
        package: "linux-source-7.2",
        version: "7.2.13-1",
        suite: "sid",
        sha256: "30a8c5fc63f9028a62e6d7b3f7f43bee67425dbce2a05fceba83f9b87c92083d",
        size: 164_108_840,
    },
    Pin {
        line: Line::new(7, 3),
        package: "linux-source-7.3",
        version: "7.3.4-1~bpo13+1",
        suite: "trixie-backports",
        sha256: "703e369ddd4cce971452f5a593ee55df3a5c10c83caf0fa0df039633ed181ee3",
        size: 166_780_612,
    },
];

/// The line built when none is named.
pub const DEFAULT_LINE: Line = Line::new(6, 12);

/// The pin of `line`, if the lab pins it.
pub fn pin(line: Line) -> Option<&'static Pin> {
    PINS.iter().find(|p| p.line == line)
}

/// The pinned lines, for messages: `6.1, 6.12, 7.2, 7.3`.
pub fn pinned_lines() -> String {
    PINS.iter()
        .map(|p| p.line.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_from_names_and_releases() {
        assert_eq!(Line::parse("6.12"), Some(Line::new(6, 12)));
        assert_eq!(Line::parse("6.12.118"), Some(Line::new(6, 12)));
        assert_eq!(Line::parse("7.3.4-amd64"), Some(Line::new(7, 3)));
        assert_eq!(Line::parse("7.3-rc1"), Some(Line::new(7, 3)));
        assert_eq!(Line::parse(" 6.1 "), Some(Line::new(6, 1)));
        for bad in ["", "6", "6.", ".1", "x.1", "6.x", "-6.1"] {
            assert_eq!(Line::parse(bad), None, "{bad}");
        }
        assert!(Line::new(6, 1) < Line::new(6, 12));
        assert!(Line::new(6, 12) < Line::new(7, 2));
        assert_eq!(Line::new(6, 12).to_string(), "6.12");
    }

    #[test]
    fn lines_of_a_tree_and_of_a_config() {
        let makefile = "# SPDX-License-Identifier: GPL-2.0\nVERSION = 7\nPATCHLEVEL = 3\nSUBLEVEL = 4\nEXTRAVERSION =\nNAME = Baby Opossum Posse\n";
        assert_eq!(Line::from_makefile(makefile), Some(Line::new(7, 3)));
        assert_eq!(Line::from_makefile("VERSION = 7\n"), None);
        assert_eq!(Line::from_makefile("VERSION = x\nPATCHLEVEL = 3\n"), None);
        let config = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 6.12.118 Kernel Configuration\n#\n";
        assert_eq!(Line::from_config(config), Some(Line::new(6, 12)));
        let config = "#\n# Linux/x86_64 7.3.4-amd64 Kernel Configuration\n";
        assert_eq!(Line::from_config(config), Some(Line::new(7, 3)));
        assert_eq!(Line::from_config("CONFIG_X=y\n"), None);
    }

    #[test]
    fn every_pin_is_well_formed_and_unique() {
        let mut lines = std::collections::HashSet::new();
        for p in PINS {
            assert!(lines.insert(p.line), "{} pinned twice", p.line);
            assert_eq!(p.package, format!("linux-source-{}", p.line));
            assert!(p.version.starts_with(&format!("{}.", p.line)), "{p:?}");
            assert_eq!(p.sha256.len(), 64, "{p:?}");
            assert!(p
                .sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(SUITES.iter().any(|s| s.name == p.suite), "{p:?}");
            assert!(p.size > 100_000_000, "{p:?}");
        }
        assert!(pin(DEFAULT_LINE).is_some());
        assert_eq!(pinned_lines(), "6.1, 6.12, 7.2, 7.3");
        let p = pin(Line::new(7, 3)).unwrap();
        assert_eq!(p.apt_spec(), "linux-source-7.3=7.3.4-1~bpo13+1");
        assert_eq!(p.tarball(), "usr/src/linux-source-7.3.tar.xz");
        assert!(p.identity().contains(p.sha256));
    }
}
