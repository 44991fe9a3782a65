//! Kernel versions, and version ranges that kernel facts hold for.
//!
//! `/proc/sys/kernel/osrelease` reads like `6.12.117`, `6.1.0-18-amd64` or
//! `7.3.0-rc1+`; only the numeric `major.minor[.patch]` prefix decides which rules apply.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A kernel version, compared as (major, minor, patch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// Major number.
    pub major: u16,
    /// Minor number.
    pub minor: u16,
    /// Patch (stable) number, 0 when absent.
    pub patch: u16,
}

impl KernelVersion {
    /// A version from its parts.
    pub const fn new(major: u16, minor: u16, patch: u16) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// The oldest version whose rules this model implements.
    pub const OLDEST_MODELLED: Self = Self::new(5, 4, 0);
    /// The newest version whose rules were read from source (the pci tree after 7.3-rc1).
    pub const NEWEST_READ: Self = Self::new(7, 3, 0);
}

/// Why an osrelease string has no version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' is not a kernel version: expected MAJOR.MINOR[.PATCH][suffix]")]
pub struct KernelVersionError {
    /// What was given.
    pub input: String,
}

impl FromStr for KernelVersion {
    type Err = KernelVersionError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || KernelVersionError {
            input: input.to_string(),
        };
        let s = input.trim();
        let numeric: String = s
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = numeric.split('.').filter(|p| !p.is_empty());
        let major = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        let minor = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        let patch = match parts.next() {
            Some(p) => p.parse().map_err(|_| err())?,
            None => 0,
        };
        Ok(Self::new(major, minor, patch))
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl<'de> Deserialize<'de> for KernelVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for KernelVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A half-open range of kernel versions `[since, until)`; `until: None` means "still
/// true in the newest source read".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    /// First version the fact holds for.
    pub since: KernelVersion,
    /// First version it no longer holds for.
    pub until: Option<KernelVersion>,
}

impl VersionRange {
    /// Holds from `since` on.
    pub const fn since(major: u16, minor: u16) -> Self {
        Self {
            since: KernelVersion::new(major, minor, 0),
            until: None,
        }
    }

    /// Holds from `since` up to, not including, `until`.
    pub const fn between(since: (u16, u16), until: (u16, u16)) -> Self {
        Self {
            since: KernelVersion::new(since.0, since.1, 0),
            until: Some(KernelVersion::new(until.0, until.1, 0)),
        }
    }

    /// Does the fact hold for `v`?
    pub fn contains(&self, v: KernelVersion) -> bool {
        v >= self.since && self.until.is_none_or(|u| v < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_osrelease_forms() {
        assert_eq!(
            "6.12.117".parse::<KernelVersion>().unwrap(),
            KernelVersion::new(6, 12, 117)
        );
        assert_eq!(
            "6.1.0-18-amd64".parse::<KernelVersion>().unwrap(),
            KernelVersion::new(6, 1, 0)
        );
        assert_eq!(
            "7.3.0-rc1+\n".parse::<KernelVersion>().unwrap(),
            KernelVersion::new(7, 3, 0)
        );
        assert_eq!(
            "5.4".parse::<KernelVersion>().unwrap(),
            KernelVersion::new(5, 4, 0)
        );
        assert!("linux".parse::<KernelVersion>().is_err());
        assert!("6".parse::<KernelVersion>().is_err());
        assert!("99999999.1".parse::<KernelVersion>().is_err());
    }

    #[test]
    fn ranges() {
        let r = VersionRange::between((6, 0), (6, 17));
        assert!(r.contains(KernelVersion::new(6, 0, 0)));
        assert!(r.contains(KernelVersion::new(6, 16, 12)));
        assert!(!r.contains(KernelVersion::new(6, 17, 0)));
        assert!(VersionRange::since(5, 9).contains(KernelVersion::new(7, 3, 0)));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") { let _ = s.parse::<KernelVersion>(); }
    }
}
