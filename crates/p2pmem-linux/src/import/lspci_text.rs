//! The text of `lspci -D -vvv -xxxx` (or `-xxx`, `-x`, or the tree of `lspci -tv`), read
//! into PCI functions: address, config-space bytes, BAR regions and driver.
//!
//! Pure: parses a `&str`, never touches a file, never panics (it is fuzzed). A line it
//! cannot read is an error naming the line number.

use p2pmem_model::Bdf;
use serde::{Deserialize, Serialize};

/// Which form of lspci output a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LspciForm {
    /// Functions with hex dumps of config space (`-x`, `-xxx`, `-xxxx`): `bytes` is the
    /// longest dump (64, 256 or 4096).
    Dump {
        /// The longest dump, in bytes.
        bytes: usize,
    },
    /// The tree of `lspci -tv` (no config space: ACS and IDs unknown).
    Tree,
}

impl LspciForm {
    /// For humans: `lspci -xxxx (4096 bytes of config space)`.
    pub fn describe(&self) -> String {
        match self {
            Self::Dump { bytes } if *bytes >= 4096 => {
                "lspci -xxxx (4096 bytes of config space)".into()
            }
            Self::Dump { bytes } if *bytes >= 256 => {
                "lspci -xxx (256 bytes of config space: no extended capabilities, ACS unknown)"
                    .into()
            }
            Self::Dump { bytes } => {
                format!("lspci -x ({bytes} bytes of config space: no capabilities, ACS unknown)")
            }
            Self::Tree => "lspci -tv (the tree only: no config space, ACS unknown)".into(),
        }
    }
}

/// A memory or I/O region as lspci -v prints it (`Region 2: Memory at f8000000
/// (64-bit, prefetchable) [size=16M]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// BAR number 0..=5, or 6 for the expansion ROM.
    pub index: usize,
    /// Start address.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Memory (else I/O ports).
    pub memory: bool,
    /// 64-bit.
    pub wide: bool,
    /// Prefetchable.
    pub prefetchable: bool,
}

/// One PCI function of lspci's output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LspciFunction {
    /// Its address.
    pub bdf: Option<Bdf>,
    /// The line its header is on (1-based).
    pub line: usize,
    /// Config space bytes from the hex dump (empty in the tree form).
    pub config: Vec<u8>,
    /// Regions with their sizes.
    pub regions: Vec<Region>,
    /// `Kernel driver in use: X`.
    pub driver: Option<String>,
    /// Tree form: the bridge it is below, if any.
    pub parent: Option<Bdf>,
    /// Tree form with `-nn`: vendor and device.
    pub ids: Option<(u16, u16)>,
}

/// lspci output read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lspci {
    /// Which form it was.
    pub form: LspciForm,
    /// The functions, in the order listed.
    pub functions: Vec<(Bdf, LspciFunction)>,
}

/// Why lspci's text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}: {text:?}")]
pub struct LspciError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub why: String,
    /// The line (shortened).
    pub text: String,
}

fn err(line: usize, text: &str, why: impl Into<String>) -> LspciError {
    LspciError {
        line,
        why: why.into(),
        text: text.chars().take(80).collect(),
    }
}

/// Most functions one file may list (256 buses of 32 devices of 8 functions, in a few
/// domains).
pub const MAX_FUNCTIONS: usize = 1 << 16;

/// Read lspci's text, detecting its form.
pub fn parse(text: &str) -> Result<Lspci, LspciError> {
    let first = text
        .lines()
        .map(str::trim_end)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if first.starts_with("-[") || first.starts_with("+-[") || first.starts_with("\\-[") {
        return parse_tree(text);
    }
    parse_dump(text)
}

/// A function header: `0000:03:00.0 Non-Volatile memory controller: ...` (or without
/// the domain, `03:00.0 ...`, read as domain 0).
fn header(line: &str) -> Option<Bdf> {
    let token = line.split_whitespace().next()?;
    if !token.contains('.') || token.split(':').count() < 2 {
        return None;
    }
    token.parse().ok()
}

/// A hex dump line: `10: 00 00 a0 fe ...`, returning the offset and bytes.
fn hex_line(line: &str) -> Option<Result<(usize, Vec<u8>), &'static str>> {
    let (off, rest) = line.split_once(": ")?;
    if off.is_empty() || off.len() > 4 || !off.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let off = usize::from_str_radix(off, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for w in rest.split_whitespace() {
        if w.len() != 2 {
            return Some(Err("expected two hex digits per byte"));
        }
        match u8::from_str_radix(w, 16) {
            Ok(b) => bytes.push(b),
            Err(_) => return Some(Err("expected two hex digits per byte")),
        }
    }
    if bytes.len() != 16 {
        return Some(Err("expected 16 bytes on a hex dump line"));
    }
    Some(Ok((off, bytes)))
}

/// `16M`, `4K`, `256`, `1G`, `2T`.
fn size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 10),
        b'M' => (&s[..s.len() - 1], 20),
        b'G' => (&s[..s.len() - 1], 30),
        b'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// `Region 2: Memory at f8000000 (64-bit, prefetchable) [size=16M]` and `Expansion ROM
/// at ...`; `None` for anything else (unassigned, disabled without an address).
fn region(line: &str) -> Option<Region> {
    let t = line.trim();
    let (index, rest) = if let Some(r) = t.strip_prefix("Region ") {
        let (n, rest) = r.split_once(": ")?;
        (n.parse::<usize>().ok().filter(|n| *n < 6)?, rest)
    } else {
        (6, t.strip_prefix("Expansion ROM ")?)
    };
    let (memory, rest) = if let Some(r) = rest.strip_prefix("Memory at ") {
        (true, r)
    } else if let Some(r) = rest.strip_prefix("I/O ports at ") {
        (false, r)
    } else if let Some(r) = rest.strip_prefix("at ") {
        (true, r)
    } else {
        return None;
    };
    let addr = rest.split_whitespace().next()?;
    let start = u64::from_str_radix(addr, 16).ok()?;
    let sz = rest.split("[size=").nth(1)?.split(']').next()?;
    Some(Region {
        index,
        start,
        size: size(sz)?,
        memory,
        wide: rest.contains("64-bit"),
        prefetchable: rest.contains(" prefetchable"),
    })
}

fn parse_dump(text: &str) -> Result<Lspci, LspciError> {
    let mut functions: Vec<(Bdf, LspciFunction)> = Vec::new();
    let mut longest = 0;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            if let Some(h) = hex_line(line) {
                let (off, bytes) = h.map_err(|why| err(n, line, why))?;
                let Some((_, f)) = functions.last_mut() else {
                    return Err(err(n, line, "a hex dump line before any function"));
                };
                if off != f.config.len() {
                    return Err(err(
                        n,
                        line,
                        format!(
                            "hex dump offset {off:x} where {:x} was expected",
                            f.config.len()
                        ),
                    ));
                }
                if off + 16 > 4096 {
                    return Err(err(n, line, "hex dump beyond 4096 bytes of config space"));
                }
                f.config.extend_from_slice(&bytes);
                longest = longest.max(f.config.len());
                continue;
            }
            let Some(bdf) = header(line) else {
                return Err(err(
                    n,
                    line,
                    "not a function header (DDDD:BB:DD.F ...), hex dump line or indented detail",
                ));
            };
            if functions.iter().any(|(b, _)| *b == bdf) {
                return Err(err(n, line, format!("{bdf} listed twice")));
            }
            if functions.len() >= MAX_FUNCTIONS {
                return Err(err(n, line, "more functions than a PCI system can have"));
            }
            functions.push((
                bdf,
                LspciFunction {
                    bdf: Some(bdf),
                    line: n,
                    ..LspciFunction::default()
                },
            ));
            continue;
        }
        // An indented detail line: only a few are of use.
        let Some((_, f)) = functions.last_mut() else {
            return Err(err(n, line, "an indented line before any function"));
        };
        let t = line.trim();
        if let Some(d) = t.strip_prefix("Kernel driver in use:") {
            let d = d.trim();
            if !d.is_empty() && !d.contains('/') && d != "." && d != ".." {
                f.driver = Some(d.to_string());
            }
        } else if let Some(r) = region(t) {
            f.regions.push(r);
        }
    }
    if functions.is_empty() {
        return Err(err(1, "", "no PCI function found: is this lspci output?"));
    }
    if longest == 0 {
        return Err(err(
            1,
            text.lines().next().unwrap_or(""),
            "no config space hex dump: run lspci -D -vvv -xxxx (as root), or lspci -tv for the tree alone",
        ));
    }
    for (bdf, f) in &functions {
        if f.config.len() < 64 {
            return Err(err(
                f.line,
                &bdf.to_string(),
                "this function has less than 64 bytes of config space dump",
            ));
        }
    }
    Ok(Lspci {
        form: LspciForm::Dump { bytes: longest },
        functions,
    })
}

/// Two hex digits (`[01-05]` or `[03]`'s first number).
fn bus_range(s: &str) -> Option<u8> {
    let first = s.split('-').next()?;
    u8::from_str_radix(first, 16).ok()
}

/// `lspci -tv`: the tree drawn in columns. A branch (`+-` or `\-`) at column c belongs
/// to the bus that the `+` first opened at c; a bridge's `-[SS-EE]-` opens bus SS for
/// the device (or branch) that follows it.
fn parse_tree(text: &str) -> Result<Lspci, LspciError> {
    let mut functions: Vec<(Bdf, LspciFunction)> = Vec::new();
    // Column of a branch point -> (domain, bus, parent bridge).
    let mut branches: std::collections::BTreeMap<usize, (u32, u8, Option<Bdf>)> =
        Default::default();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        if line.is_empty() {
            continue;
        }
        let b = line.as_bytes();
        let mut c = 0;
        // Where we are: (domain, bus, parent) for the next device token.
        let mut cur: Option<(u32, u8, Option<Bdf>)> = None;
        while c < b.len() {
            match b[c] {
                b' ' | b'|' => c += 1,
                b'-' => c += 1,
                b'+' | b'\\' => {
                    if b[c] == b'+' {
                        if let Some(here) = cur {
                            branches.insert(c, here);
                        }
                    }
                    let Some(&here) = branches.get(&c) else {
                        return Err(err(
                            n,
                            line,
                            format!("a branch at column {c} below nothing"),
                        ));
                    };
                    // Branches right of this one are closed.
                    branches.retain(|k, _| *k <= c);
                    if b[c] == b'\\' {
                        branches.remove(&c);
                    }
                    cur = Some(here);
                    c += 1;
                }
                b'[' => {
                    let end = line[c..]
                        .find(']')
                        .map(|e| c + e)
                        .ok_or_else(|| err(n, line, "an unclosed ["))?;
                    let inner = &line[c + 1..end];
                    if let Some((dom, bus)) = inner.split_once(':') {
                        let domain = u32::from_str_radix(dom, 16)
                            .map_err(|_| err(n, line, "a root bus not like [0000:00]"))?;
                        let bus = u8::from_str_radix(bus, 16)
                            .map_err(|_| err(n, line, "a root bus not like [0000:00]"))?;
                        branches.clear();
                        cur = Some((domain, bus, None));
                    } else {
                        let sec = bus_range(inner)
                            .ok_or_else(|| err(n, line, "a bus range not like [01-05]"))?;
                        let Some((domain, _, _)) = cur else {
                            return Err(err(n, line, "a bus range after no bridge"));
                        };
                        let bridge = functions.last().map(|(b, _)| *b);
                        cur = Some((domain, sec, bridge));
                    }
                    c = end + 1;
                }
                _ => {
                    // A device token `DD.F`, then maybe two spaces and a name.
                    let rest = &line[c..];
                    let tok: String = rest
                        .chars()
                        .take_while(|ch| ch.is_ascii_hexdigit() || *ch == '.')
                        .collect();
                    let Some((domain, bus, parent)) = cur else {
                        return Err(err(n, line, "a device outside any bus"));
                    };
                    let (dev, func) = tok
                        .split_once('.')
                        .ok_or_else(|| err(n, line, "expected a device like 00.0"))?;
                    let dev = u8::from_str_radix(dev, 16)
                        .map_err(|_| err(n, line, "expected a device like 00.0"))?;
                    let func = u8::from_str_radix(func, 16)
                        .map_err(|_| err(n, line, "expected a device like 00.0"))?;
                    let bdf = Bdf::new(domain, bus, dev, func)
                        .ok_or_else(|| err(n, line, "device or function out of range"))?;
                    if functions.iter().any(|(x, _)| *x == bdf) {
                        return Err(err(n, line, format!("{bdf} listed twice")));
                    }
                    if functions.len() >= MAX_FUNCTIONS {
                        return Err(err(n, line, "more functions than a PCI system can have"));
                    }
                    c += tok.len();
                    let after = &line[c..];
                    let mut ids = None;
                    if after.starts_with("  ") {
                        // The name runs to the end of the line; `-nn` ends it with
                        // `[vvvv:dddd]`.
                        if let Some(open) = after.rfind('[') {
                            let inside = after[open + 1..].trim_end_matches(']');
                            if let Some((v, d)) = inside.split_once(':') {
                                if let (Ok(v), Ok(d)) =
                                    (u16::from_str_radix(v, 16), u16::from_str_radix(d, 16))
                                {
                                    ids = Some((v, d));
                                }
                            }
                        }
                        c = b.len();
                    }
                    functions.push((
                        bdf,
                        LspciFunction {
                            bdf: Some(bdf),
                            line: n,
                            parent,
                            ids,
                            ..LspciFunction::default()
                        },
                    ));
                    // The bus continues for a bridge's `-[..]`.
                    cur = Some((domain, bus, parent));
                }
            }
        }
    }
    if functions.is_empty() {
        return Err(err(1, "", "no PCI function found in the tree"));
    }
    Ok(Lspci {
        form: LspciForm::Tree,
        functions,
    })
}

#[cfg(test)]
pub(crate) mod tests;
