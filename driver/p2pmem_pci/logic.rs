// SPDX-License-Identifier: GPL-2.0

//! What `p2pmem_pci` publishes, and why it refuses: the parts of the driver that are
//! plain arithmetic and text, in `core` only, so the very same file is compiled into the
//! kernel module and into host tests (`crates/p2pmem-lab/tests/driver_logic.rs`).
//!
//! A probe reads the device's six standard BARs into [`Bar`]s, looks up the user's
//! [`Request`] for the device (written to the driver's `ranges` attribute), and
//! [`choose_region`] returns the [`Region`] to hand to `pci_p2pdma_add_resource` or the
//! [`Refusal`] to log.

use core::fmt;

/// Standard BARs of a PCI function (`PCI_STD_NUM_BARS`).
pub(crate) const NUM_BARS: usize = 6;

/// Devices a driver-attribute table holds (requests, or active providers).
pub(crate) const TABLE_LEN: usize = 16;

/// A PCI function's name as the kernel spells it: `dddd:bb:dd.f`, lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bdf([u8; 12]);

impl Bdf {
    /// Parses `dddd:bb:dd.f` (hex digits in either case; device at most 0x1f, function
    /// at most 7). Anything else, surrounding blanks included, is `None`.
    pub(crate) fn parse(s: &[u8]) -> Option<Bdf> {
        if s.len() != 12 || s[4] != b':' || s[7] != b':' || s[10] != b'.' {
            return None;
        }
        let mut out = [0u8; 12];
        for (i, &c) in s.iter().enumerate() {
            out[i] = match i {
                4 | 7 | 10 => c,
                11 if (b'0'..=b'7').contains(&c) => c,
                11 => return None,
                _ if c.is_ascii_hexdigit() => c.to_ascii_lowercase(),
                _ => return None,
            };
        }
        let device = hex_value(out[8]) * 16 + hex_value(out[9]);
        (device <= 0x1f).then_some(Bdf(out))
    }

    /// The name as text.
    pub(crate) fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).unwrap_or("?")
    }
}

fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

impl fmt::Debug for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bdf({})", self.as_str())
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of address space a BAR decodes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum BarKind {
    /// I/O ports (`IORESOURCE_IO`).
    Io,
    /// Memory (`IORESOURCE_MEM`), prefetchable (`IORESOURCE_PREFETCH`) or not.
    Mem {
        /// Prefetchable: no read side effects.
        prefetch: bool,
    },
}

/// One implemented BAR as the PCI core assigned it (`pdev->resource[i]`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Bar {
    /// Memory or I/O.
    pub(crate) kind: BarKind,
    /// CPU physical start address.
    pub(crate) start: u64,
    /// Length in bytes (`pci_resource_len`).
    pub(crate) len: u64,
    /// False when the PCI core could not place it (`IORESOURCE_UNSET`/`DISABLED`).
    pub(crate) assigned: bool,
}

/// The user's choice for one device: a BAR (default: the largest prefetchable memory BAR)
/// and a range of it (default: all of it).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Request {
    /// BAR index 0-5; `None` for the default choice.
    pub(crate) bar: Option<u8>,
    /// Offset into the BAR.
    pub(crate) offset: u64,
    /// Bytes from the offset; `None` for "to the end of the BAR".
    pub(crate) size: Option<u64>,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bar {
            Some(bar) => write!(f, "bar={bar}")?,
            None => f.write_str("bar=default")?,
        }
        write!(f, " offset={:#x}", self.offset)?;
        match self.size {
            Some(size) => write!(f, " size={size:#x}"),
            None => f.write_str(" size=rest"),
        }
    }
}

/// A line written to the `ranges` attribute.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Command {
    /// `BDF key=value...`: use this for the device's next probe.
    Set(Bdf, Request),
    /// `BDF` alone: forget the device's request (back to the default).
    Clear(Bdf),
}

/// Why a `ranges` line was rejected.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ParseError {
    /// Nothing but blanks.
    Empty,
    /// The first word is not `dddd:bb:dd.f`.
    BadBdf,
    /// A word is not `bar=`, `offset=` or `size=`, or a key is given twice.
    BadKey,
    /// A value is not a number (decimal, or hex with `0x`; optional K, M or G suffix),
    /// overflows, or is a zero size.
    BadNumber,
    /// `bar=` is not 0-5.
    BadBar,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Empty => "empty line; expected 'BDF [bar=N] [offset=BYTES] [size=BYTES]'",
            ParseError::BadBdf => "the first word must be a PCI address dddd:bb:dd.f",
            ParseError::BadKey => "words after the address must be bar=, offset= or size=, each at most once",
            ParseError::BadNumber => "numbers are decimal or 0x-hex with an optional K, M or G suffix; size must not be 0",
            ParseError::BadBar => "bar must be 0 to 5",
        })
    }
}

/// Parses one line written to `ranges`: `BDF [bar=N] [offset=BYTES] [size=BYTES]`, or
/// `BDF` alone to clear. A trailing newline and surrounding blanks are ignored.
pub(crate) fn parse_command(input: &[u8]) -> Result<Command, ParseError> {
    let mut words = input
        .split(|c| c.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let bdf = Bdf::parse(words.next().ok_or(ParseError::Empty)?).ok_or(ParseError::BadBdf)?;
    let mut req = Request::default();
    let (mut seen_bar, mut seen_offset, mut seen_size, mut any) = (false, false, false, false);
    for word in words {
        any = true;
        let eq = word
            .iter()
            .position(|&c| c == b'=')
            .ok_or(ParseError::BadKey)?;
        let (key, value) = (&word[..eq], &word[eq + 1..]);
        let number = parse_u64(value).ok_or(ParseError::BadNumber)?;
        let seen = match key {
            b"bar" => {
                if number >= NUM_BARS as u64 {
                    return Err(ParseError::BadBar);
                }
                req.bar = Some(number as u8);
                &mut seen_bar
            }
            b"offset" => {
                req.offset = number;
                &mut seen_offset
            }
            b"size" => {
                if number == 0 {
                    return Err(ParseError::BadNumber);
                }
                req.size = Some(number);
                &mut seen_size
            }
            _ => return Err(ParseError::BadKey),
        };
        if *seen {
            return Err(ParseError::BadKey);
        }
        *seen = true;
    }
    Ok(if any {
        Command::Set(bdf, req)
    } else {
        Command::Clear(bdf)
    })
}

/// A byte count: decimal or `0x` hex, with an optional binary suffix `K`, `M` or `G`
/// (either case). `None` on anything else or on overflow.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    let (digits, shift) = match s.last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let (digits, radix) = match digits {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        _ => (digits, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        let d = match c {
            b'0'..=b'9' => u64::from(c - b'0'),
            b'a'..=b'f' if radix == 16 => u64::from(c - b'a' + 10),
            b'A'..=b'F' if radix == 16 => u64::from(c - b'A' + 10),
            _ => return None,
        };
        v = v.checked_mul(radix)?.checked_add(d)?;
    }
    v.checked_mul(1u64 << shift)
}

/// What the driver registers: `pci_p2pdma_add_resource(pdev, bar, size, offset)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Region {
    /// BAR index.
    pub(crate) bar: u8,
    /// Offset into the BAR.
    pub(crate) offset: u64,
    /// Bytes registered.
    pub(crate) size: u64,
    /// CPU physical address of the first byte registered.
    pub(crate) start: u64,
    /// The whole BAR's length.
    pub(crate) bar_len: u64,
    /// True when the BAR was the default choice (no `bar=` in the request).
    pub(crate) default_bar: bool,
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bar={} offset={:#x} size={:#x} start={:#x} bar_len={:#x}",
            self.bar, self.offset, self.size, self.start, self.bar_len
        )
    }
}

/// Why a probe publishes nothing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Refusal {
    /// The chosen BAR is not implemented by the device.
    Unimplemented {
        /// BAR index.
        bar: u8,
    },
    /// The chosen BAR decodes I/O ports.
    IoBar {
        /// BAR index.
        bar: u8,
    },
    /// The chosen BAR has no address (the PCI core could not place it).
    Unassigned {
        /// BAR index.
        bar: u8,
    },
    /// No `bar=` was given and the device has no prefetchable memory BAR.
    NoPrefetchableBar,
    /// The offset and size do not fit in the BAR.
    OutOfRange {
        /// BAR index.
        bar: u8,
        /// Requested offset.
        offset: u64,
        /// Requested size (`None`: the rest of the BAR).
        size: Option<u64>,
        /// BAR length.
        len: u64,
    },
    /// Less than one ZONE_DEVICE unit.
    TooSmall {
        /// BAR index.
        bar: u8,
        /// Bytes that would be registered.
        size: u64,
        /// The alignment unit.
        min: u64,
    },
    /// Start or size is not a multiple of the ZONE_DEVICE unit.
    Misaligned {
        /// BAR index.
        bar: u8,
        /// CPU physical start of the range.
        start: u64,
        /// Bytes.
        size: u64,
        /// The alignment unit.
        align: u64,
    },
}

impl Refusal {
    /// `ENODEV` (nothing suitable to publish) rather than `EINVAL` (a request that
    /// cannot be honoured).
    pub(crate) fn is_no_device(&self) -> bool {
        matches!(self, Refusal::NoPrefetchableBar)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Refusal::Unimplemented { bar } => {
                write!(f, "refused: BAR {bar} is not implemented by this device")
            }
            Refusal::IoBar { bar } => write!(
                f,
                "refused: BAR {bar} is an I/O port BAR; p2pmem needs a memory BAR"
            ),
            Refusal::Unassigned { bar } => write!(
                f,
                "refused: BAR {bar} has no address (the PCI core could not assign it)"
            ),
            Refusal::NoPrefetchableBar => f.write_str(
                "refused: no prefetchable memory BAR to publish by default; choose a BAR in /sys/bus/pci/drivers/p2pmem_pci/ranges",
            ),
            Refusal::OutOfRange {
                bar,
                offset,
                size,
                len,
            } => match size {
                Some(size) => write!(
                    f,
                    "refused: offset {offset:#x} + size {size:#x} does not fit in BAR {bar} ({len:#x} bytes)"
                ),
                None => write!(
                    f,
                    "refused: offset {offset:#x} is not inside BAR {bar} ({len:#x} bytes)"
                ),
            },
            Refusal::TooSmall { bar, size, min } => write!(
                f,
                "refused: BAR {bar}: {size:#x} bytes is too small for ZONE_DEVICE memory (at least {min:#x})"
            ),
            Refusal::Misaligned {
                bar,
                start,
                size,
                align,
            } => write!(
                f,
                "refused: BAR {bar}: range {start:#x}+{size:#x} is misaligned for ZONE_DEVICE memory (start and size must be multiples of {align:#x})"
            ),
        }
    }
}

/// The region to register for a device with these BARs and this request. `align` is
/// the ZONE_DEVICE unit (`1 << SUBSECTION_SHIFT`, 2 MiB on x86-64): `memremap_pages`
/// fails for ranges whose start or size is not a multiple of it.
pub(crate) fn choose_region(
    bars: &[Option<Bar>; NUM_BARS],
    req: Option<&Request>,
    align: u64,
) -> Result<Region, Refusal> {
    let req = req.copied().unwrap_or_default();
    let (index, bar) = match req.bar {
        Some(i) => {
            let bar = bars
                .get(usize::from(i))
                .copied()
                .flatten()
                .ok_or(Refusal::Unimplemented { bar: i })?;
            (i, bar)
        }
        None => largest_prefetchable(bars).ok_or(Refusal::NoPrefetchableBar)?,
    };
    if bar.kind == BarKind::Io {
        return Err(Refusal::IoBar { bar: index });
    }
    if !bar.assigned {
        return Err(Refusal::Unassigned { bar: index });
    }
    let out_of_range = Refusal::OutOfRange {
        bar: index,
        offset: req.offset,
        size: req.size,
        len: bar.len,
    };
    if req.offset >= bar.len {
        return Err(out_of_range);
    }
    let size = req.size.unwrap_or(bar.len - req.offset);
    match req.offset.checked_add(size) {
        Some(end) if end <= bar.len => {}
        _ => return Err(out_of_range),
    }
    let start = bar.start.checked_add(req.offset).ok_or(out_of_range)?;
    let align = align.max(1);
    if size < align {
        return Err(Refusal::TooSmall {
            bar: index,
            size,
            min: align,
        });
    }
    if start % align != 0 || size % align != 0 {
        return Err(Refusal::Misaligned {
            bar: index,
            start,
            size,
            align,
        });
    }
    Ok(Region {
        bar: index,
        offset: req.offset,
        size,
        start,
        bar_len: bar.len,
        default_bar: req.bar.is_none(),
    })
}

/// The largest prefetchable memory BAR; the lowest index wins a tie.
fn largest_prefetchable(bars: &[Option<Bar>; NUM_BARS]) -> Option<(u8, Bar)> {
    let mut best: Option<(u8, Bar)> = None;
    for (i, bar) in bars.iter().enumerate() {
        let Some(bar) = bar else { continue };
        if bar.kind != (BarKind::Mem { prefetch: true }) {
            continue;
        }
        if best.is_none_or(|(_, b)| bar.len > b.len) {
            best = Some((i as u8, *bar));
        }
    }
    best
}

/// A fixed-size map from device to value: no allocation, so it can live under a lock
/// that is taken in probe, remove and sysfs callbacks alike.
pub(crate) struct Table<T: Copy> {
    slots: [Option<(Bdf, T)>; TABLE_LEN],
}

/// The table already holds [`TABLE_LEN`] other devices.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Full;

impl<T: Copy> Table<T> {
    /// An empty table.
    pub(crate) const fn new() -> Self {
        Self {
            slots: [None; TABLE_LEN],
        }
    }

    /// The value for `bdf`.
    pub(crate) fn get(&self, bdf: &Bdf) -> Option<T> {
        self.slots
            .iter()
            .flatten()
            .find(|(b, _)| b == bdf)
            .map(|(_, v)| *v)
    }

    /// Sets or replaces the value for `bdf`.
    pub(crate) fn set(&mut self, bdf: Bdf, value: T) -> Result<(), Full> {
        if let Some(slot) = self.slots.iter_mut().flatten().find(|(b, _)| *b == bdf) {
            slot.1 = value;
            return Ok(());
        }
        let free = self.slots.iter_mut().find(|s| s.is_none()).ok_or(Full)?;
        *free = Some((bdf, value));
        Ok(())
    }

    /// Forgets `bdf`; true when it was there.
    pub(crate) fn remove(&mut self, bdf: &Bdf) -> bool {
        for slot in self.slots.iter_mut() {
            if matches!(slot, Some((b, _)) if b == bdf) {
                *slot = None;
                return true;
            }
        }
        false
    }

    /// The entries, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &(Bdf, T)> {
        self.slots.iter().flatten()
    }
}

/// A `fmt::Write` into a fixed buffer (a sysfs `show` page): what does not fit is
/// dropped, and the write that did not fit returns `fmt::Error`.
pub(crate) struct PageWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> PageWriter<'a> {
    /// Writes into `buf` from its start.
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    /// Bytes written.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl fmt::Write for PageWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            return Err(fmt::Error);
        }
        Ok(())
    }
}
