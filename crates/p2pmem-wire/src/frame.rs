//! The console frame stream: how the guest sends bytes to the host over the serial
//! console, the only channel a TCG guest without network has. Structured, never scraped
//! from human text:
//!
//! ```text
//! @@P2PMEM:START@@                         /init is running
//! @@P2PMEM:READY nvme=<have> want=<want>@@  block devices found before the plan
//! @@P2PMEM:BEGIN <id>@@                     a payload: base64 lines follow
//! <base64 ...>
//! @@P2PMEM:END <id> rc=<n> bytes=<n>@@      its status and decoded length
//! @@P2PMEM:DONE@@                           everything was sent
//! ```
//!
//! Everything outside frames is ordinary console text (the boot log). One [`Decoder`]
//! reads the stream: the QEMU runner feeds it live, line by line, and
//! [`decode_console`] runs the same decoder over a saved console log.

use base64::Engine;

const PREFIX: &str = "@@P2PMEM:";
const SUFFIX: &str = "@@";

/// The largest payload a frame may announce or accumulate (base64 text included): a
/// capture of the lab's sysfs is a few MiB; anything near this is a broken stream.
pub const MAX_FRAME_BYTES: usize = 256 << 20;

/// A malformed stream, with the console line it was found on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("console line {line}: {why}")]
pub struct FrameError {
    /// 1-based console line.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

/// One decoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Payload id (`step.3`, `data.3`, `boot`, `dmesg`, ...).
    pub id: String,
    /// The status sent with it.
    pub rc: i32,
    /// The decoded bytes.
    pub data: Vec<u8>,
}

/// What one console line meant, for a live reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `/init` started.
    Started,
    /// NVMe block devices found and expected.
    Ready(u32, u32),
    /// A payload is complete (the index into [`ConsoleReport::frames`]).
    Frame(usize),
    /// The guest sent everything.
    Done,
}

/// Everything the guest reported, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleReport {
    /// `/init` started.
    pub started: bool,
    /// NVMe block devices found and expected, once the wait ended.
    pub ready: Option<(u32, u32)>,
    /// Complete payloads.
    pub frames: Vec<Frame>,
    /// The guest sent everything.
    pub done: bool,
}

impl ConsoleReport {
    /// The first payload with `id`.
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

fn marker(line: &str) -> Option<Result<Marker<'_>, String>> {
    let at = line.find(PREFIX)?;
    let rest = line[at + PREFIX.len()..].trim_end();
    let glued = || {
        // A kernel line the serial console printed between the marker and its newline
        // (seen: `@@P2PMEM:START@@[    1.183072] input: ImExPS/2 ...` when a late boot
        // message raced /init's echo): the marker is whole, the rest is console text.
        let (body, after) = rest.split_once(SUFFIX)?;
        is_printk_line(after).then_some(body)
    };
    let Some(body) = rest.strip_suffix(SUFFIX).or_else(glued) else {
        return Some(Err(format!(
            "marker without closing @@: {:?}",
            truncate(line)
        )));
    };
    let mut words = body.split(' ');
    let kind = words.next().unwrap_or("");
    let kv = |w: Option<&str>, key: &str| -> Result<i64, String> {
        w.and_then(|w| w.strip_prefix(key))
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| format!("marker {kind} lacks {key}<number>: {:?}", truncate(line)))
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
            _ => Err(format!("BEGIN without id: {:?}", truncate(line))),
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
        other => Err(format!("unknown marker {:?}", truncate(other))),
    };
    Some(parsed)
}

/// Whether `s` starts as the kernel prints a line on the console with
/// `CONFIG_PRINTK_TIME`: `[` spaces, seconds, `.`, six digits, `] `.
fn is_printk_line(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('[') else {
        return false;
    };
    let Some((stamp, _)) = inner.split_once("] ") else {
        return false;
    };
    let Some((secs, micros)) = stamp.trim_start_matches(' ').split_once('.') else {
        return false;
    };
    !secs.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
        && micros.len() == 6
        && micros.bytes().all(|b| b.is_ascii_digit())
}

fn clamp_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}

/// An open frame: its id, the base64 text so far, the line it began on.
#[derive(Debug, Clone)]
struct Open {
    id: String,
    b64: String,
    begin: usize,
}

/// The frame decoder. Feed it console lines (or raw bytes) as they arrive; it keeps the
/// report so far. A malformed frame is an error naming the console line; text outside
/// frames is ignored. Never panics, and never holds more than [`MAX_FRAME_BYTES`] of
/// one frame.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    report: ConsoleReport,
    open: Option<Open>,
    line: usize,
    partial: Vec<u8>,
}

impl Decoder {
    /// A decoder at the start of a console.
    pub fn new() -> Self {
        Self::default()
    }

    /// The report so far.
    pub fn report(&self) -> &ConsoleReport {
        &self.report
    }

    /// The report, once the stream ended (an unfinished frame is dropped).
    pub fn finish(mut self) -> Result<ConsoleReport, FrameError> {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line_bytes(&rest)?;
        }
        Ok(self.report)
    }

    /// Feeds raw console bytes; complete lines are decoded, the rest kept for later.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, FrameError> {
        let mut events = Vec::new();
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(nl);
            rest = &tail[1..];
            if self.partial.is_empty() {
                events.extend(self.line_bytes(head)?);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                events.extend(self.line_bytes(&line)?);
            }
        }
        if self.partial.len() + rest.len() > MAX_FRAME_BYTES {
            return Err(self.err(self.line + 1, "a console line longer than the frame limit"));
        }
        self.partial.extend_from_slice(rest);
        Ok(events)
    }

    fn line_bytes(&mut self, line: &[u8]) -> Result<Option<Event>, FrameError> {
        self.feed_line(&String::from_utf8_lossy(line))
    }

    fn err(&self, line: usize, why: impl Into<String>) -> FrameError {
        FrameError {
            line,
            why: why.into(),
        }
    }

    /// Decodes one console line (without its newline).
    pub fn feed_line(&mut self, raw: &str) -> Result<Option<Event>, FrameError> {
        self.line += 1;
        let lineno = self.line;
        let line = raw.trim_end_matches('\r');
        match marker(line) {
            None => {
                if let Some(open) = self.open.as_mut() {
                    let l = line.trim();
                    if !l
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
                    {
                        let why = format!("non-base64 line inside a frame: {:?}", truncate(line));
                        return Err(self.err(lineno, why));
                    }
                    if open.b64.len() + l.len() > MAX_FRAME_BYTES {
                        let why = format!("frame {} is over {MAX_FRAME_BYTES} bytes", open.id);
                        return Err(self.err(lineno, why));
                    }
                    open.b64.push_str(l);
                }
                Ok(None)
            }
            Some(Err(why)) => {
                if self.open.is_some() || line.trim_start().starts_with(PREFIX) {
                    return Err(self.err(lineno, why));
                }
                Ok(None)
            }
            Some(Ok(m)) => self.marker(lineno, m),
        }
    }

    fn marker(&mut self, lineno: usize, m: Marker<'_>) -> Result<Option<Event>, FrameError> {
        let event = match (m, self.open.take()) {
            (Marker::End { id, rc, bytes }, Some(open)) => {
                if id != open.id {
                    let why = format!("END {id} closes frame {}", open.id);
                    return Err(self.err(lineno, why));
                }
                let data = base64::engine::general_purpose::STANDARD
                    .decode(open.b64.as_bytes())
                    .map_err(|e| self.err(lineno, format!("bad base64 in frame {id}: {e}")))?;
                if data.len() != bytes {
                    let why = format!(
                        "frame {id}: {} bytes decoded, {bytes} announced",
                        data.len()
                    );
                    return Err(self.err(lineno, why));
                }
                self.report.frames.push(Frame {
                    id: open.id,
                    rc,
                    data,
                });
                Event::Frame(self.report.frames.len() - 1)
            }
            (m, Some(open)) => {
                let why = format!(
                    "marker {m:?} inside frame {} opened at line {}",
                    open.id, open.begin
                );
                return Err(self.err(lineno, why));
            }
            (Marker::Start, None) => {
                self.report.started = true;
                Event::Started
            }
            (Marker::Ready(have, want), None) => {
                self.report.ready = Some((have, want));
                Event::Ready(have, want)
            }
            (Marker::Begin(id), None) => {
                self.open = Some(Open {
                    id: id.to_string(),
                    b64: String::new(),
                    begin: lineno,
                });
                return Ok(None);
            }
            (Marker::End { id, .. }, None) => {
                return Err(self.err(lineno, format!("END {id} without BEGIN")))
            }
            (Marker::Done, None) => {
                self.report.done = true;
                Event::Done
            }
        };
        Ok(Some(event))
    }
}

/// Decodes a whole saved console with the same [`Decoder`] the runner uses live.
pub fn decode_console(text: &str) -> Result<ConsoleReport, FrameError> {
    let mut d = Decoder::new();
    d.feed(text.as_bytes())?;
    d.finish()
}

/// The marker `/init` prints when it starts.
pub fn start_marker() -> String {
    format!("{PREFIX}START{SUFFIX}")
}

/// The marker sent after the last frame.
pub fn done_marker() -> String {
    format!("{PREFIX}DONE{SUFFIX}")
}

/// Encodes one payload as the guest sends it.
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
    use proptest::prelude::*;

    #[test]
    fn a_kernel_line_glued_to_a_marker_is_console_text() {
        // Captured in the lab (7.2, multifunction topology): a late boot message printed
        // between /init's marker and its newline.
        let mut text = String::from(
            "[    1.108545] Run /init as init process\n\
             @@P2PMEM:START@@[    1.183072] input: ImExPS/2 Generic Explorer Mouse as /devices/platform/i8042/serio1/input/input3\n\
             \n\
             @@P2PMEM:READY nvme=2 want=2@@[   12.000001] nvme nvme1: 1/0/0 default/read/poll queues\n",
        );
        text.push_str(&encode_frame("boot", 0, b"ok"));
        text.push_str("@@P2PMEM:DONE@@\n");
        let r = decode_console(&text).unwrap();
        assert!(r.started && r.done);
        assert_eq!(r.ready, Some((2, 2)));
        assert_eq!(r.frame("boot").unwrap().data, b"ok");
        // Anything else after a marker is still a broken stream.
        for bad in [
            "@@P2PMEM:START@@garbage\n",
            "@@P2PMEM:START@@[ 1.18] short stamp\n",
            "@@P2PMEM:START@@[    1.183072]no space\n",
            "@@P2PMEM:START\n",
        ] {
            assert!(decode_console(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn full_session_decodes() {
        let mut text = String::from("[    0.000000] Linux version 6.12\r\n@@P2PMEM:START@@\r\n");
        text.push_str("@@P2PMEM:READY nvme=2 want=2@@\n");
        text.push_str(&encode_frame("stdout", 3, b"hello\n"));
        text.push_str(&encode_frame("stderr", 3, b""));
        text.push_str(&encode_frame("dir0", 0, &[0u8; 300]));
        text.push_str("@@P2PMEM:DONE@@\n[    1.0] reboot: Power down\n");
        let r = decode_console(&text).unwrap();
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
        let err = decode_console(&text).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn length_mismatch_and_unclosed_markers_are_errors() {
        let bad = "@@P2PMEM:BEGIN x@@\naGVsbG8=\n@@P2PMEM:END x rc=0 bytes=4@@\n";
        assert!(decode_console(bad).is_err());
        assert!(decode_console("@@P2PMEM:END x rc=0 bytes=0@@\n").is_err());
        assert!(decode_console("@@P2PMEM:BEGIN x@@\n@@P2PMEM:BEGIN y@@\n").is_err());
        // An unfinished frame at the end is not an error but yields no frame.
        let r = decode_console("@@P2PMEM:BEGIN x@@\naGVs\n").unwrap();
        assert!(r.frames.is_empty() && !r.done);
    }

    #[test]
    fn live_feeding_in_odd_pieces_gives_events_in_order() {
        let mut text = start_marker() + "\n";
        text.push_str(&encode_frame("step.0", 0, b"{\"a\":1}"));
        text.push_str(&encode_frame("step.1", 0, &[1u8; 1000]));
        text.push_str(&(done_marker() + "\n"));
        let mut d = Decoder::new();
        let mut events = Vec::new();
        for piece in text.as_bytes().chunks(7) {
            events.extend(d.feed(piece).unwrap());
        }
        assert_eq!(
            events,
            [
                Event::Started,
                Event::Frame(0),
                Event::Frame(1),
                Event::Done
            ]
        );
        let r = d.finish().unwrap();
        assert_eq!(r, decode_console(&text).unwrap());
        assert_eq!(r.frames[1].data, [1u8; 1000]);
    }

    proptest! {
        #[test]
        fn any_payload_round_trips(id in "[a-z][a-z0-9.]{0,12}", rc in -3i32..300, data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let text = format!("noise\n{}tail", encode_frame(&id, rc, &data));
            let r = decode_console(&text).unwrap();
            let f = r.frame(&id).unwrap();
            prop_assert_eq!(f.rc, rc);
            prop_assert_eq!(&f.data, &data);
        }

        #[test]
        fn garbage_never_panics(text in "(@@P2PMEM:|[A-Za-z0-9+/= @]|\n){0,400}") {
            let _ = decode_console(&text);
        }
    }
}
