//! The lab's kernel config fragment (`kernel/p2pmem-lab.config`): one file for every
//! kernel line, with the differences between lines written inside it.
//!
//! Each line is an option (`CONFIG_X=y`, `# CONFIG_X is not set`), a comment or empty.
//! An option may start with a condition in brackets naming the lines it holds for; a
//! condition is one or more terms separated by spaces, and holds when any term does:
//!
//! ```text
//! CONFIG_PCI_P2PDMA=y                  every line
//! [6.12] CONFIG_RUST=y                 6.12.y only
//! [<7.3] CONFIG_PROC_SYSCTL=y          every line before 7.3
//! [>=7.3] CONFIG_SYSCTL=y              7.3 and later
//! [6.1 >=7.2] # CONFIG_RUST is not set 6.1, and 7.2 and later
//! ```
//!
//! [`Fragment::for_line`] gives the options that hold for one line; each of them must
//! hold in the final `.config` ([`unmet`]), and one line may not state an option twice.

use std::collections::HashSet;
use std::fmt;

use crate::build::lines::Line;

/// The fragment the lab builds with.
pub const FRAGMENT: &str = include_str!("../../kernel/p2pmem-lab.config");

/// One option that must hold in the final `.config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `CONFIG_X=value` must appear verbatim.
    Set(String),
    /// `# CONFIG_X is not set`: `CONFIG_X=` must not appear.
    Unset(String),
}

impl Requirement {
    /// The symbol, `CONFIG_X`.
    pub fn symbol(&self) -> &str {
        match self {
            Requirement::Set(l) => l.split('=').next().unwrap_or(l),
            Requirement::Unset(s) => s,
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Set(l) => f.write_str(l),
            Requirement::Unset(s) => write!(f, "# {s} is not set"),
        }
    }
}

/// One term of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Term {
    /// `6.12`: that line.
    Exactly(Line),
    /// `>=7.2`: that line and later ones.
    AtLeast(Line),
    /// `<6.12`: lines before it.
    Below(Line),
}

impl Term {
    fn parse(text: &str) -> Option<Self> {
        let strict = |t: &str| {
            let line = Line::parse(t)?;
            (line.to_string() == t).then_some(line)
        };
        if let Some(rest) = text.strip_prefix(">=") {
            strict(rest).map(Term::AtLeast)
        } else if let Some(rest) = text.strip_prefix('<') {
            strict(rest).map(Term::Below)
        } else {
            strict(text).map(Term::Exactly)
        }
    }

    fn holds(self, line: Line) -> bool {
        match self {
            Term::Exactly(l) => line == l,
            Term::AtLeast(l) => line >= l,
            Term::Below(l) => line < l,
        }
    }
}

/// An option and the lines it holds for (`None`: every line).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    number: usize,
    when: Option<Vec<Term>>,
    requirement: Requirement,
}

/// A parsed fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    entries: Vec<Entry>,
}

/// What is wrong with a fragment, at which line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel config fragment line {number}: {why}")]
pub struct FragmentError {
    /// The line number.
    pub number: usize,
    /// What is wrong.
    pub why: String,
}

/// Reads `CONFIG_X=value` or `# CONFIG_X is not set`; `None` for anything else.
fn requirement(text: &str) -> Option<Requirement> {
    if let Some(rest) = text.strip_prefix("# ") {
        let sym = rest.strip_suffix(" is not set")?;
        return is_symbol(sym).then(|| Requirement::Unset(sym.to_string()));
    }
    let (sym, value) = text.split_once('=')?;
    (is_symbol(sym) && !value.is_empty() && !value.contains(char::is_whitespace))
        .then(|| Requirement::Set(text.to_string()))
}

fn is_symbol(s: &str) -> bool {
    s.strip_prefix("CONFIG_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    })
}

impl Fragment {
    /// Parses fragment text. Errors name the line: a condition that is not one of the
    /// three term forms, a conditioned line that is not an option, a line starting with
    /// `CONFIG_` that is not one.
    pub fn parse(text: &str) -> Result<Self, FragmentError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let number = i + 1;
            let err = |why: String| FragmentError { number, why };
            let line = raw.trim();
            let (when, body) = match line.strip_prefix('[') {
                Some(rest) => {
                    let (cond, body) = rest
                        .split_once(']')
                        .ok_or_else(|| err("a condition `[` without its `]`".into()))?;
                    let terms = cond
                        .split_whitespace()
                        .map(|t| {
                            Term::parse(t).ok_or_else(|| {
                                err(format!(
                                    "condition term {t:?} is not a line (6.12), >=LINE or <LINE"
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if terms.is_empty() {
                        return Err(err("an empty condition".into()));
                    }
                    (Some(terms), body.trim())
                }
                None => (None, line),
            };
            match requirement(body) {
                Some(requirement) => entries.push(Entry {
                    number,
                    when,
                    requirement,
                }),
                None if when.is_some() => {
                    return Err(err(format!(
                        "{body:?} after a condition is not an option (CONFIG_X=value or # CONFIG_X is not set)"
                    )))
                }
                None if body.starts_with("CONFIG_") => {
                    return Err(err(format!("{body:?} is not CONFIG_X=value")))
                }
                None if body.is_empty() || body.starts_with('#') => {}
                None => return Err(err(format!("{body:?} is neither an option nor a comment"))),
            }
        }
        Ok(Self { entries })
    }

    /// The options that hold for `line`, in file order. An option stated twice for one
    /// line is an error naming both lines.
    pub fn for_line(&self, line: Line) -> Result<Vec<Requirement>, FragmentError> {
        let mut seen: Vec<(&str, usize)> = Vec::new();
        let mut out = Vec::new();
        for e in &self.entries {
            let holds = e
                .when
                .as_ref()
                .is_none_or(|terms| terms.iter().any(|t| t.holds(line)));
            if !holds {
                continue;
            }
            let sym = e.requirement.symbol();
            if let Some((_, first)) = seen.iter().find(|(s, _)| *s == sym) {
                return Err(FragmentError {
                    number: e.number,
                    why: format!("{sym} is stated again for {line} (first at line {first})"),
                });
            }
            seen.push((sym, e.number));
            out.push(e.requirement.clone());
        }
        Ok(out)
    }
}

/// Merges `reqs` into a `.config` text: every symbol they mention is dropped from `base`
/// and their lines appended (what `merge_config.sh` does).
pub fn merge_config(base: &str, reqs: &[Requirement]) -> String {
    let syms: HashSet<&str> = reqs.iter().map(Requirement::symbol).collect();
    let mut out = String::with_capacity(base.len() + 64 * reqs.len());
    for line in base.lines() {
        let t = line.trim();
        let sym = if let Some(rest) = t.strip_prefix("# ") {
            rest.strip_suffix(" is not set")
        } else {
            t.split('=').next().filter(|_| t.contains('='))
        };
        if sym.is_some_and(|s| syms.contains(s)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    for req in reqs {
        out.push_str(&req.to_string());
        out.push('\n');
    }
    out
}

/// The requirements that `config` does not satisfy, in order.
pub fn unmet<'a>(config: &str, reqs: &'a [Requirement]) -> Vec<&'a Requirement> {
    let lines: HashSet<&str> = config.lines().map(str::trim).collect();
    reqs.iter()
        .filter(|req| match req {
            Requirement::Set(l) => !lines.contains(l.as_str()),
            Requirement::Unset(s) => {
                let prefix = format!("{s}=");
                lines.iter().any(|l| l.starts_with(&prefix))
            }
        })
        .collect()
}

/// Is `CONFIG_X=y` (or `=m`) set in `config`?
pub fn config_has(config: &str, symbol: &str) -> bool {
    config.lines().map(str::trim).any(|l| {
        l.strip_prefix(symbol)
            .and_then(|r| r.strip_prefix('='))
            .is_some_and(|v| v == "y" || v == "m")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::lines::PINS;

    fn set(s: &str) -> Requirement {
        Requirement::Set(s.into())
    }
    fn unset(s: &str) -> Requirement {
        Requirement::Unset(s.into())
    }
    const L6_1: Line = Line::new(6, 1);
    const L6_12: Line = Line::new(6, 12);
    const L7_2: Line = Line::new(7, 2);
    const L7_3: Line = Line::new(7, 3);

    #[test]
    fn conditions_select_lines() {
        let f = Fragment::parse(
            "# comment\n\nCONFIG_A=y\n[6.12] CONFIG_B=y\n[6.1 >=7.2] # CONFIG_B is not set\n[<7.3] CONFIG_C=y\n[>=7.3] CONFIG_D=y\n",
        )
        .unwrap();
        assert_eq!(
            f.for_line(L6_1).unwrap(),
            [set("CONFIG_A=y"), unset("CONFIG_B"), set("CONFIG_C=y")]
        );
        assert_eq!(
            f.for_line(L6_12).unwrap(),
            [set("CONFIG_A=y"), set("CONFIG_B=y"), set("CONFIG_C=y")]
        );
        assert_eq!(
            f.for_line(L7_2).unwrap(),
            [set("CONFIG_A=y"), unset("CONFIG_B"), set("CONFIG_C=y")]
        );
        assert_eq!(
            f.for_line(L7_3).unwrap(),
            [set("CONFIG_A=y"), unset("CONFIG_B"), set("CONFIG_D=y")]
        );
        // A line between the named ones: only the range terms hold.
        assert_eq!(
            f.for_line(Line::new(6, 15)).unwrap(),
            [set("CONFIG_A=y"), set("CONFIG_C=y")]
        );
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        for (text, number, what) in [
            ("CONFIG_A=y\n[6.12 CONFIG_B=y\n", 2, "without its `]`"),
            ("[] CONFIG_B=y\n", 1, "empty condition"),
            ("[6.x] CONFIG_B=y\n", 1, "\"6.x\""),
            ("[=6.12] CONFIG_B=y\n", 1, "\"=6.12\""),
            ("[6.12.1] CONFIG_B=y\n", 1, "\"6.12.1\""),
            ("[06.12] CONFIG_B=y\n", 1, "\"06.12\""),
            ("[6.12] # a comment\n", 1, "not an option"),
            ("\n\nCONFIG_B\n", 3, "not CONFIG_X=value"),
            ("CONFIG_b=y\n", 1, "not CONFIG_X=value"),
            ("CONFIG_B=\n", 1, "not CONFIG_X=value"),
            ("B=y\n", 1, "neither an option nor a comment"),
        ] {
            let e = Fragment::parse(text).unwrap_err();
            assert_eq!(e.number, number, "{text:?}: {e}");
            assert!(e.to_string().contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn an_option_stated_twice_for_a_line_is_an_error() {
        let f = Fragment::parse("CONFIG_A=y\n[>=7.2] # CONFIG_A is not set\n").unwrap();
        assert_eq!(f.for_line(L6_12).unwrap(), [set("CONFIG_A=y")]);
        let e = f.for_line(L7_3).unwrap_err();
        assert_eq!(e.number, 2);
        assert!(
            e.to_string()
                .contains("CONFIG_A is stated again for 7.3 (first at line 1)"),
            "{e}"
        );
    }

    #[test]
    fn the_lab_fragment_holds_for_every_pinned_line() {
        let f = Fragment::parse(FRAGMENT).unwrap();
        for pin in PINS {
            let reqs = f.for_line(pin.line).unwrap();
            assert!(reqs.contains(&set("CONFIG_PCI_P2PDMA=y")), "{}", pin.line);
            assert!(reqs.contains(&set("CONFIG_PRINTK=y")), "{}", pin.line);
            // One kernel per line serves with and without the IOMMU: built in, off
            // unless the command line says intel_iommu=on.
            assert!(
                reqs.contains(&set("CONFIG_IOMMU_SUPPORT=y")),
                "{}",
                pin.line
            );
            assert!(reqs.contains(&set("CONFIG_INTEL_IOMMU=y")), "{}", pin.line);
            assert!(reqs.contains(&set("CONFIG_INTEL_IOMMU_DEFAULT_OFF=y")));
            assert!(reqs.contains(&unset("CONFIG_INTEL_IOMMU_DEFAULT_ON")));
            assert!(reqs.contains(&set("CONFIG_MODULES=y")), "{}", pin.line);
            assert!(reqs.len() > 40, "{}", pin.line);
        }
        // Rust only where the p2pmem_pci driver builds.
        let rust = |l| f.for_line(l).unwrap().contains(&set("CONFIG_RUST=y"));
        let no_rust = |l| f.for_line(l).unwrap().contains(&unset("CONFIG_RUST"));
        for l in [L6_12, L7_3] {
            assert!(rust(l) && !no_rust(l), "{l}");
        }
        for l in [L6_1, L7_2] {
            assert!(!rust(l) && no_rust(l), "{l}");
        }
        // 7.3 renamed PROC_SYSCTL to SYSCTL.
        let has = |l, r: &Requirement| f.for_line(l).unwrap().contains(r);
        assert!(has(L7_2, &set("CONFIG_PROC_SYSCTL=y")));
        assert!(!has(L7_3, &set("CONFIG_PROC_SYSCTL=y")));
        assert!(has(L7_3, &set("CONFIG_SYSCTL=y")));
    }

    #[test]
    fn merge_replaces_base_values() {
        let base = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_KERNEL_XZ=y\n";
        let reqs = [set("CONFIG_B=y"), unset("CONFIG_C")];
        assert_eq!(
            merge_config(base, &reqs),
            "CONFIG_A=y\nCONFIG_KERNEL_XZ=y\nCONFIG_B=y\n# CONFIG_C is not set\n"
        );
    }

    #[test]
    fn every_unmet_option_is_named() {
        let reqs = [
            set("CONFIG_PCI_P2PDMA=y"),
            unset("CONFIG_RUST"),
            set("CONFIG_X=y"),
        ];
        assert_eq!(
            unmet("CONFIG_PCI=y\nCONFIG_RUST=y\n", &reqs),
            [&reqs[0], &reqs[1], &reqs[2]]
        );
        assert!(unmet("CONFIG_PCI_P2PDMA=y\nCONFIG_X=y\n", &reqs).is_empty());
        assert_eq!(reqs[1].to_string(), "# CONFIG_RUST is not set");
    }

    #[test]
    fn config_has_reads_y_and_m() {
        let c = "CONFIG_RUST=y\nCONFIG_RUSTY=y\nCONFIG_M=m\n# CONFIG_N is not set\n";
        assert!(config_has(c, "CONFIG_RUST"));
        assert!(config_has(c, "CONFIG_M"));
        assert!(!config_has(c, "CONFIG_N"));
        assert!(!config_has(c, "CONFIG_RUS"));
    }
}
