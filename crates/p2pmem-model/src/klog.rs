//! Kernel log records as `klogctl(SYSLOG_ACTION_READ_ALL)` returns them:
//! `<P>[SSSSS.UUUUUU] text\n`, where `P` is `facility << 3 | level`, the timestamp
//! appears with `CONFIG_PRINTK_TIME` and a caller id such as `[  T123]` follows it with
//! `CONFIG_PRINTK_CALLER`. `dmesg` output has the same shape without `<P>`. Pure: the
//! one place the project strips these prefixes (the I/O lives in `p2pmem-linux`).

/// One record of the kernel log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KlogLine {
    /// Severity 0 (emerg) ..= 7 (debug), from `<P>`; `None` when the line has no prefix.
    pub level: Option<u8>,
    /// Facility (0 = kernel, 1 = user via /dev/kmsg, ...), from `<P>`.
    pub facility: Option<u32>,
    /// Timestamp in microseconds since boot, from `[SSSSS.UUUUUU]`.
    pub timestamp_us: Option<u64>,
    /// The message, with the prefixes and the single separating space removed.
    pub text: String,
}

/// Splits raw log bytes into records. Never panics; bytes that are not UTF-8 are replaced
/// (U+FFFD), a trailing `\r` is dropped, and lines empty before any stripping are
/// skipped. Lines without a `<P>` or timestamp prefix are kept with `None` there.
pub fn parse_klog(bytes: &[u8]) -> Vec<KlogLine> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|raw| !raw.is_empty() && *raw != b"\r")
        .map(|raw| parse_line(&String::from_utf8_lossy(raw)))
        .collect()
}

/// The message texts of [`parse_klog`], the form stored in `truth.json`.
pub fn klog_texts(bytes: &[u8]) -> Vec<String> {
    parse_klog(bytes).into_iter().map(|l| l.text).collect()
}

/// The records of [`parse_klog`] as `dmesg` prints them: `[SSSSS.UUUUUU] text` (the
/// kernel's `%5lu.%06lu`), or the bare text for a record without a timestamp.
pub fn dmesg_lines(bytes: &[u8]) -> Vec<String> {
    parse_klog(bytes)
        .into_iter()
        .map(|l| match l.timestamp_us {
            Some(us) => format!("[{:5}.{:06}] {}", us / 1_000_000, us % 1_000_000, l.text),
            None => l.text,
        })
        .collect()
}

fn parse_line(line: &str) -> KlogLine {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let (prio, rest) = strip_priority(line);
    let (timestamp, rest, had_time) = strip_timestamp(rest);
    let (rest, had_caller) = strip_caller(rest);
    // The kernel separates the prefix from the text with exactly one space.
    let text = if had_time || had_caller {
        rest.strip_prefix(' ').unwrap_or(rest)
    } else {
        rest
    };
    KlogLine {
        level: prio.map(|p| (p & 7) as u8),
        facility: prio.map(|p| p >> 3),
        timestamp_us: timestamp,
        text: text.to_string(),
    }
}

/// `<digits>` at the start (at most 10 digits, fitting a u32).
fn strip_priority(s: &str) -> (Option<u32>, &str) {
    let Some(body) = s.strip_prefix('<') else {
        return (None, s);
    };
    let Some(end) = body.find('>') else {
        return (None, s);
    };
    let digits = &body[..end];
    if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return (None, s);
    }
    match digits.parse::<u32>() {
        Ok(p) => (Some(p), &body[end + 1..]),
        Err(_) => (None, s),
    }
}

/// `[ spaces secs . micros ]` at the start. Returns the timestamp (`None` when the
/// shape matched but the value overflowed), the rest, and whether a timestamp was there.
fn strip_timestamp(s: &str) -> (Option<u64>, &str, bool) {
    let Some(body) = s.strip_prefix('[') else {
        return (None, s, false);
    };
    let Some(end) = body.find(']') else {
        return (None, s, false);
    };
    let inner = body[..end].trim_start_matches(' ');
    let Some((secs, frac)) = inner.split_once('.') else {
        return (None, s, false);
    };
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(secs) || !all_digits(frac) {
        return (None, s, false);
    }
    let value = secs.parse::<u64>().ok().and_then(|sec| {
        // Microseconds are six digits; scale whatever width was printed.
        let micros = match frac.len() {
            0..=6 => frac.parse::<u64>().ok()? * 10u64.pow(6 - frac.len() as u32),
            _ => frac[..6].parse::<u64>().ok()?,
        };
        sec.checked_mul(1_000_000)?.checked_add(micros)
    });
    (value, &body[end + 1..], true)
}

/// `[  T123]` / `[   C1]` (CONFIG_PRINTK_CALLER), directly after the timestamp or the
/// priority; never after the separating space, so message text such as `[drm]` stays.
fn strip_caller(s: &str) -> (&str, bool) {
    let Some(body) = s.strip_prefix('[') else {
        return (s, false);
    };
    let Some(end) = body.find(']') else {
        return (s, false);
    };
    let inner = body[..end].trim_start_matches(' ');
    let mut chars = inner.chars();
    let is_caller = matches!(chars.next(), Some('T' | 'C'))
        && !chars.as_str().is_empty()
        && chars.as_str().bytes().all(|b| b.is_ascii_digit());
    if is_caller {
        (&body[end + 1..], true)
    } else {
        (s, false)
    }
}
