//! QEMU's machine protocol (QMP) over the run's Unix socket, for what a plan asks the
//! host to do to the machine while it runs: hot-unplug an NVMe controller. QMP speaks
//! one JSON object a line; events may come between a command and its answer and are
//! skipped. The lab's devices have no `id=` (the argv matches the recorded captures), so a
//! controller is found by its `serial` property among `/machine/peripheral-anon`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// The socket's file name in the run directory.
pub const QMP_SOCKET: &str = "qmp.sock";

/// The QEMU argv words that open the socket.
pub fn qmp_args(socket: &Path) -> [String; 2] {
    [
        "-qmp".to_string(),
        format!("unix:{},server=on,wait=off", socket.display()),
    ]
}

/// One QMP session.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// The longest line read from QMP.
const MAX_LINE: usize = 1 << 20;

impl Qmp {
    /// Connects and leaves capabilities negotiation mode.
    pub fn connect(socket: &Path) -> Result<Self, String> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.line()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("not a QMP greeting: {greeting}"));
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn line(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = Read::take(&mut self.reader, MAX_LINE as u64)
            .read_line(&mut line)
            .map_err(|e| format!("reading from QMP: {e}"))?;
        if n == 0 {
            return Err("QMP closed the connection".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("QMP sent `{}`: {e}", line.trim()))
    }

    /// Runs `command` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, String> {
        let request = json!({"execute": command, "arguments": arguments});
        writeln!(self.writer, "{request}").map_err(|e| format!("writing to QMP: {e}"))?;
        loop {
            let v = self.line()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(format!("QMP {command}: {e}"));
            }
            // An event: skip it.
        }
    }

    /// The QOM path of the NVMe controller whose `serial` is `serial`.
    pub fn nvme_by_serial(&mut self, serial: &str) -> Result<String, String> {
        let base = "/machine/peripheral-anon";
        let children = self.execute("qom-list", json!({"path": base}))?;
        for child in children.as_array().into_iter().flatten() {
            let (Some(name), Some(kind)) = (
                child.get("name").and_then(Value::as_str),
                child.get("type").and_then(Value::as_str),
            ) else {
                continue;
            };
            if kind != "child<nvme>" {
                continue;
            }
            let path = format!("{base}/{name}");
            let got = self.execute("qom-get", json!({"path": path, "property": "serial"}))?;
            if got.as_str() == Some(serial) {
                return Ok(path);
            }
        }
        Err(format!("QEMU has no NVMe controller with serial {serial}"))
    }

    /// `device_del` of the NVMe controller with `serial`; returns its QOM path. The guest
    /// removes it later (PCIe native hotplug: the attention button's 5 s window).
    pub fn unplug_nvme(&mut self, serial: &str) -> Result<String, String> {
        let path = self.nvme_by_serial(serial)?;
        self.execute("device_del", json!({"id": path}))?;
        Ok(path)
    }
}
