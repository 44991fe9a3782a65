//! The guest protocol: what `/init` (guest/init.sh) prints on the serial console and how
//! the host decodes it. Structured, never scraped from human text:
//!
//! ```text
//! @@P2PMEM:START@@                         /init is running
//! @@P2PMEM:READY nvme=<have> want=<want>@@  block devices found before the job
//! @@P2PMEM:BEGIN <id>@@                     a payload: base64 lines follow
//! <base64 ...>
//! @@P2PMEM:END <id> rc=<n> bytes=<n>@@      its status and decoded length
//! @@P2PMEM:DONE@@                           everything was sent
//! ```
//!
//! Payload ids: `stdout` and `stderr` (rc = the job's exit status), `bootlog` (the kernel
//! log just before the job), `dmesg` (the kernel log after it), `dir<N>` (a tar stream of the N-th directory in `/lab/send`; rc = tar's status).
//! Everything outside frames is ordinary console text (the boot log).

use base64::Engine;

use crate::error::{LabError, Result};

const PREFIX: &str = "@@P2PMEM:";
const SUFFIX: &str = "@@";

/// One decoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Payload id (`stdout`, `stderr`, `dmesg`, `dir0`, ...).
    pub id: String,
    /// The status recorded with it.
    pub rc: i32,
    /// The decoded bytes.
    pub data: Vec<u8>,
}

/// Everything the guest reported, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestReport {
    /// `/init` started.
    pub started: bool,
    /// NVMe block devices found and expected, once the wait ended.
    pub ready: Option<(u32, u32)>,
    /// Complete payloads.
    pub frames: Vec<Frame>,
    /// The guest sent everything.
    pub done: bool,
}

impl GuestReport {
    /// The payload with `id`.
    pub fn frame(&self, id: &str) -> Option<&Frame> {
        self.frames.iter().find(|f| f.id == id)
    }
}

/// A marker line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Marker<'a> {
    Start,
    Ready(u32, u32),
    Begin(&'a str),
    End { id: &'a str, rc: i32, bytes: usize },
    Done,
}

fn marker(line: &str) -> Option<std::result::Result<Marker<'_>, String>> {
    let at = line.find(PREFIX)?;
    let body = line[at + PREFIX.len()..].trim_end();
    let Some(body) = body.strip_suffix(SUFFIX) else {
        return Some(Err(format!("marker without closing @@: {line:?}")));
    };
    let mut words = body.split(' ');
    let kind = words.next().unwrap_or("");
    let kv = |w: Option<&str>, key: &str| -> std::result::Result<i64, String> {
        w.and_then(|w| w.strip_prefix(key))
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| format!("marker {kind} lacks {key}<number>: {line:?}"))
    };
    let parsed = match kind {
        "START" => Ok(Marker::Start),
        "DONE" => Ok(Marker::Done),
        "READY" => (|| {
            let have = kv(words.next(), "nvme=")?;
            let want = kv(words.next(), "want=")?;
            Ok(Marker::Ready(clamp_u32(have), clamp_u32(want)))
        })(),
        "BEGIN" => match words.next() {
            Some(id) if !id.is_empty() => Ok(Marker::Begin(id)),
            _ => Err(format!("BEGIN without id: {line:?}")),
        },
        "END" => (|| {
            let id = words
                .next()
                .filter(|i| !i.is_empty())
                .ok_or("END without id")?;
            let rc = kv(words.next(), "rc=")?;
            let bytes = kv(words.next(), "bytes=")?;
            Ok(Marker::End {
                id,
                rc: i32::try_from(rc).unwrap_or(i32::MAX),
                bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
            })
        })(),
        other => Err(format!("unknown marker {other:?}")),
    };
    Some(parsed)
}

fn clamp_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// Decodes the guest's frames from the console text. Text outside frames is ignored; a
/// malformed frame is an error naming the console line. Never panics.
pub fn parse_console(text: &str) -> Result<GuestReport> {
    let mut report = GuestReport::default();
    let mut open: Option<(String, String, usize)> = None; // id, base64 text, begin line
    for (i, raw) in text.split('\n').enumerate() {
        let lineno = i + 1;
        let line = raw.trim_end_matches('\r');
        let err = |why: String| LabError::Protocol { line: lineno, why };
        match marker(line) {
            None => {
                if let Some((_, b64, _)) = open.as_mut() {
                    let l = line.trim();
                    if !l
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
                    {
                        return Err(err(format!(
                            "non-base64 line inside a frame: {:?}",
                            truncate(line)
                        )));
                    }
                    b64.push_str(l);
                }
            }
            Some(Err(why)) => {
                if open.is_some() || line.trim_start().starts_with(PREFIX) {
                    return Err(err(why));
                }
            }
            Some(Ok(m)) => match (m, open.take()) {
                (Marker::End { id, rc, bytes }, Some((open_id, b64, _))) => {
                    if id != open_id {
                        return Err(err(format!("END {id} closes frame {open_id}")));
                    }
                    let data = base64::engine::general_purpose::STANDARD
                        .decode(b64.as_bytes())
                        .map_err(|e| err(format!("bad base64 in frame {id}: {e}")))?;
                    if data.len() != bytes {
                        return Err(err(format!(
                            "frame {id}: {} bytes decoded, {bytes} announced",
                            data.len()
                        )));
                    }
                    report.frames.push(Frame {
                        id: id.to_string(),
                        rc,
                        data,
                    });
                }
                (m, Some((open_id, _, begin))) => {
                    return Err(err(format!(
                        "marker {m:?} inside frame {open_id} opened at line {begin}"
                    )))
                }
                (Marker::Start, None) => report.started = true,
                (Marker::Ready(have, want), None) => report.ready = Some((have, want)),
                (Marker::Begin(id), None) => open = Some((id.to_string(), String::new(), lineno)),
                (Marker::End { id, .. }, None) => {
                    return Err(err(format!("END {id} without BEGIN")))
                }
                (Marker::Done, None) => report.done = true,
            },
        }
    }
    Ok(report)
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}

/// Encodes `frames` the way the guest does (for tests and fixtures).
pub fn encode_frame(id: &str, rc: i32, data: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let mut s = format!("{PREFIX}BEGIN {id}{SUFFIX}\n");
    for chunk in b64.as_bytes().chunks(76) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str(&format!(
        "{PREFIX}END {id} rc={rc} bytes={}{SUFFIX}\n",
        data.len()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_session_decodes() {
        let mut text = String::from("[    0.000000] Linux version 6.12\r\n@@P2PMEM:START@@\r\n");
        text.push_str("@@P2PMEM:READY nvme=2 want=2@@\n");
        text.push_str(&encode_frame("stdout", 3, b"hello\n"));
        text.push_str(&encode_frame("stderr", 3, b""));
        text.push_str(&encode_frame("dir0", 0, &[0u8; 300]));
        text.push_str("@@P2PMEM:DONE@@\n[    1.0] reboot: Power down\n");
        let r = parse_console(&text).unwrap();
        assert!(r.started && r.done);
        assert_eq!(r.ready, Some((2, 2)));
        assert_eq!(r.frame("stdout").unwrap().data, b"hello\n");
        assert_eq!(r.frame("stdout").unwrap().rc, 3);
        assert_eq!(r.frame("stderr").unwrap().data, b"");
        assert_eq!(r.frame("dir0").unwrap().data.len(), 300);
    }

    #[test]
    fn interleaved_kernel_line_is_an_error_naming_the_line() {
        let mut text = encode_frame("stdout", 0, &[7u8; 200]);
        let at = text.find('\n').unwrap() + 1;
        text.insert_str(at, "[  3.1] nvme nvme0: I/O timeout\n");
        let err = parse_console(&text).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn length_mismatch_and_unclosed_markers_are_errors() {
        let bad = "@@P2PMEM:BEGIN x@@\naGVsbG8=\n@@P2PMEM:END x rc=0 bytes=4@@\n";
        assert!(parse_console(bad).is_err());
        assert!(parse_console("@@P2PMEM:END x rc=0 bytes=0@@\n").is_err());
        assert!(parse_console("@@P2PMEM:BEGIN x@@\n@@P2PMEM:BEGIN y@@\n").is_err());
        // An unfinished frame at the end is not an error but yields no frame.
        let r = parse_console("@@P2PMEM:BEGIN x@@\naGVs\n").unwrap();
        assert!(r.frames.is_empty() && !r.done);
    }
}
