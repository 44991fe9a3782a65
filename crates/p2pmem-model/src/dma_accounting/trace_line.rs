//! One line of QEMU's nvme trace (the `log` trace backend of QEMU 7.2), parsed.
//!
//! Lines look like `pci_nvme_map_addr addr 0xfc010000 len 524288`, optionally prefixed
//! with `PID@SECONDS.MICROS:` when QEMU runs with `-msg timestamp=on`. Only the events
//! the accounting needs are recognised; everything else, and every malformed line, is
//! `None`. Fields are found by name (`key value` or `key=value`), so a reordered or
//! extended format still parses. Never panics.

/// The nvme trace events the accounting uses, in QEMU 7.2's names.
pub mod event {
    /// A data pointer (PRP entry or SGL data block) mapped through the system address
    /// space: `addr 0x.. len N`. Followed by [`MAP_ADDR_CMB`] when it hit the device's CMB.
    pub const MAP_ADDR: &str = "pci_nvme_map_addr";
    /// The same pointer resolved inside the device's own CMB: `addr 0x.. len N`.
    pub const MAP_ADDR_CMB: &str = "pci_nvme_map_addr_cmb";
    /// A PRP data pointer: `trans_len T len L prp1 0x.. prp2 0x.. num_prps N`.
    pub const MAP_PRP: &str = "pci_nvme_map_prp";
    /// An SGL data pointer: `type 0xT len L`.
    pub const MAP_SGL: &str = "pci_nvme_map_sgl";
    /// An I/O command fetched from a submission queue: `cid C nsid N sqid S opc 0xO opname '..'`.
    pub const IO_CMD: &str = "pci_nvme_io_cmd";
    /// An admin command: `cid C sqid S opc 0xO opname '..'`.
    pub const ADMIN_CMD: &str = "pci_nvme_admin_cmd";
    /// A read's geometry: `cid C nsid N nlb B count BYTES lba 0xL`.
    pub const READ: &str = "pci_nvme_read";
    /// A write's geometry: `cid C opname '..' nsid N nlb B count BYTES lba 0xL`.
    pub const WRITE: &str = "pci_nvme_write";
    /// `create submission queue, addr=0x.., sqid=S, cqid=C, qsize=Q, qflags=F`.
    pub const CREATE_SQ: &str = "pci_nvme_create_sq";
    /// `create completion queue, addr=0x.., cqid=C, vector=V, qsize=Q, qflags=F, ien=I`.
    pub const CREATE_CQ: &str = "pci_nvme_create_cq";
    /// A completion queued for posting (one 16-byte CQE write): `cid C cqid Q ...`.
    pub const COMPLETION: &str = "pci_nvme_enqueue_req_completion";
    /// A 4-byte shadow doorbell read from the doorbell buffer (`sqid S new_shadow_doorbell N`).
    pub const SHADOW_DOORBELL_SQ: &str = "pci_nvme_shadow_doorbell_sq";
    /// The completion-queue twin of [`SHADOW_DOORBELL_SQ`].
    pub const SHADOW_DOORBELL_CQ: &str = "pci_nvme_shadow_doorbell_cq";
    /// A 4-byte event-index write into the doorbell buffer (`sqid S new_eventidx N`).
    pub const EVENTIDX_SQ: &str = "pci_nvme_eventidx_sq";
    /// The completion-queue twin of [`EVENTIDX_SQ`].
    pub const EVENTIDX_CQ: &str = "pci_nvme_eventidx_cq";
    /// Doorbell Buffer Config: `dbs_addr=0x.. eis_addr=0x..`.
    pub const DBBUF_CONFIG: &str = "pci_nvme_dbbuf_config";

    /// Every event above: the `-trace enable=` list the lab passes to QEMU.
    pub const ALL: &[&str] = &[
        MAP_ADDR,
        MAP_ADDR_CMB,
        MAP_PRP,
        MAP_SGL,
        IO_CMD,
        ADMIN_CMD,
        READ,
        WRITE,
        CREATE_SQ,
        CREATE_CQ,
        COMPLETION,
        SHADOW_DOORBELL_SQ,
        SHADOW_DOORBELL_CQ,
        EVENTIDX_SQ,
        EVENTIDX_CQ,
        DBBUF_CONFIG,
    ];
}

/// A recognised trace event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceEvent {
    /// [`event::MAP_ADDR`].
    MapAddr {
        /// Guest physical (bus) address.
        addr: u64,
        /// Bytes.
        len: u64,
    },
    /// [`event::MAP_ADDR_CMB`].
    MapAddrCmb {
        /// Guest physical (bus) address inside the device's CMB.
        addr: u64,
        /// Bytes.
        len: u64,
    },
    /// [`event::MAP_PRP`].
    MapPrp {
        /// Bytes covered by PRP1 (up to its page end).
        trans_len: u64,
        /// Total bytes of the transfer.
        len: u64,
        /// PRP2: a data page or the address of a PRP list.
        prp2: u64,
    },
    /// [`event::MAP_SGL`].
    MapSgl {
        /// Type of the first descriptor (0 data block, 2 segment, 3 last segment).
        kind: u8,
    },
    /// [`event::IO_CMD`] or [`event::ADMIN_CMD`].
    Command {
        /// An admin command (admin queue) rather than an I/O command.
        admin: bool,
        /// Submission queue id.
        sqid: u16,
        /// Opcode.
        opc: u8,
    },
    /// [`event::READ`] or [`event::WRITE`].
    Rw {
        /// A write (host to device) rather than a read.
        write: bool,
        /// Logical blocks.
        nlb: u64,
        /// First logical block.
        lba: u64,
    },
    /// [`event::CREATE_SQ`].
    CreateSq {
        /// Queue base address.
        addr: u64,
        /// Queue id.
        sqid: u16,
    },
    /// [`event::CREATE_CQ`].
    CreateCq {
        /// Queue base address.
        addr: u64,
    },
    /// [`event::COMPLETION`].
    Completion,
    /// [`event::SHADOW_DOORBELL_SQ`] or [`event::SHADOW_DOORBELL_CQ`].
    ShadowDoorbell,
    /// [`event::EVENTIDX_SQ`] or [`event::EVENTIDX_CQ`].
    EventIdx,
    /// [`event::DBBUF_CONFIG`].
    DbbufConfig {
        /// Shadow doorbell buffer.
        dbs: u64,
        /// Event index buffer.
        eis: u64,
    },
}

/// Parses one trace line; `None` for other events and for anything malformed.
pub fn parse_line(line: &str) -> Option<TraceEvent> {
    let line = strip_prefix(line.trim());
    let (name, rest) = line.split_once(' ').unwrap_or((line, ""));
    let f = Fields(rest);
    let ev = match name {
        event::MAP_ADDR => TraceEvent::MapAddr {
            addr: f.num("addr")?,
            len: f.num("len")?,
        },
        event::MAP_ADDR_CMB => TraceEvent::MapAddrCmb {
            addr: f.num("addr")?,
            len: f.num("len")?,
        },
        event::MAP_PRP => TraceEvent::MapPrp {
            trans_len: f.num("trans_len")?,
            len: f.num("len")?,
            prp2: f.num("prp2")?,
        },
        event::MAP_SGL => TraceEvent::MapSgl {
            kind: u8::try_from(f.num("type")?).ok()?,
        },
        event::IO_CMD | event::ADMIN_CMD => TraceEvent::Command {
            admin: name == event::ADMIN_CMD,
            sqid: u16::try_from(f.num("sqid")?).ok()?,
            opc: u8::try_from(f.num("opc")?).ok()?,
        },
        event::READ | event::WRITE => TraceEvent::Rw {
            write: name == event::WRITE,
            nlb: f.num("nlb")?,
            lba: f.num("lba")?,
        },
        event::CREATE_SQ => TraceEvent::CreateSq {
            addr: f.num("addr")?,
            sqid: u16::try_from(f.num("sqid")?).ok()?,
        },
        event::CREATE_CQ => TraceEvent::CreateCq {
            addr: f.num("addr")?,
        },
        event::COMPLETION => TraceEvent::Completion,
        event::SHADOW_DOORBELL_SQ | event::SHADOW_DOORBELL_CQ => TraceEvent::ShadowDoorbell,
        event::EVENTIDX_SQ | event::EVENTIDX_CQ => TraceEvent::EventIdx,
        event::DBBUF_CONFIG => TraceEvent::DbbufConfig {
            dbs: f.num("dbs_addr")?,
            eis: f.num("eis_addr")?,
        },
        _ => return None,
    };
    Some(ev)
}

/// Drops a `PID@SECONDS.MICROS:` prefix (`-msg timestamp=on`).
fn strip_prefix(line: &str) -> &str {
    let Some((head, rest)) = line.split_once(':') else {
        return line;
    };
    let Some((pid, time)) = head.split_once('@') else {
        return line;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let time_ok = time
        .split_once('.')
        .is_some_and(|(s, us)| digits(s) && digits(us));
    if digits(pid) && time_ok {
        rest
    } else {
        line
    }
}

/// The `key value` / `key=value` fields of an event's text.
struct Fields<'a>(&'a str);

impl Fields<'_> {
    /// The number after `key` (`key 12`, `key 0x1f`, `key=0x1f,`); the first match wins.
    fn num(&self, key: &str) -> Option<u64> {
        let mut words = self
            .0
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty());
        while let Some(w) = words.next() {
            if w == key {
                return parse_num(words.next()?);
            }
            if let Some(v) = w.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
                return parse_num(v);
            }
        }
        None
    }
}

/// `123` or `0x7b`.
fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}
