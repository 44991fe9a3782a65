//! Where the bytes went: attributes each DMA that QEMU's emulated NVMe controllers made
//! to guest RAM ("host memory"), to the controller's own CMB, or to another device's BAR,
//! from QEMU's nvme trace and the guest's address map. Pure arithmetic over parsed lines:
//! the lab hands lines over one at a time, so any trace size streams.
//!
//! What QEMU 7.2 traces (verified in the lab): every data pointer of a command is one
//! `pci_nvme_map_addr addr A len L`; when it lies in the controller's own CMB QEMU
//! short-circuits it and the next line is `pci_nvme_map_addr_cmb addr A len L` with the
//! same values. Data lines follow their command line (`pci_nvme_io_cmd` /
//! `pci_nvme_admin_cmd`) because QEMU handles one command at a time under its big lock.
//! Queue traffic is not traced as DMA and is counted from its events instead: a 64-byte
//! SQE per command, a 16-byte CQE per completion, 4 bytes per doorbell-buffer access,
//! 8 bytes per PRP list entry and 16 per SGL descriptor read from a segment.
//!
//! The window: the lab brackets the measured command with two O_DIRECT reads of
//! [`MARKER_BLOCKS`] blocks at [`Window::begin_lba`] and [`Window::end_lba`]; only what
//! lies between them counts. Reads after the last write or flush of the window (the
//! read-back of `p2pmem copy --verify`) are reported apart as `readback`.

pub mod memory_map;
pub mod trace_line;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use memory_map::{MemoryMap, Range, Split};
pub use trace_line::{parse_line, TraceEvent};

/// Blocks read by a window marker (a read of exactly this many blocks at a marker LBA).
pub const MARKER_BLOCKS: u64 = 3;

/// Bytes of a submission queue entry.
pub const SQE_BYTES: u64 = 64;
/// Bytes of a completion queue entry.
pub const CQE_BYTES: u64 = 16;
/// Bytes of one shadow doorbell or event index.
pub const DOORBELL_BYTES: u64 = 4;
/// Bytes of one PRP list entry.
pub const PRP_ENTRY_BYTES: u64 = 8;
/// Bytes of one SGL descriptor.
pub const SGL_DESCRIPTOR_BYTES: u64 = 16;
/// The controller page size Linux uses for PRPs (`NVME_CTRL_PAGE_SIZE`).
pub const CTRL_PAGE: u64 = 4096;

const OPC_FLUSH: u8 = 0x00;
const OPC_WRITE: u8 = 0x01;
const OPC_READ: u8 = 0x02;

/// The marker reads that open and close one measurement window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// LBA of the opening marker read.
    pub begin_lba: u64,
    /// LBA of the closing marker read.
    pub end_lba: u64,
}

impl Window {
    /// The `n`-th window of a run: LBAs 21 and 27, then 33 and 39, ... (multiples of
    /// [`MARKER_BLOCKS`], so `dd bs=1536 skip=LBA/3` reads them with 512-byte blocks).
    pub fn nth(n: u32) -> Self {
        let base = 21 + 12 * u64::from(n);
        Self {
            begin_lba: base,
            end_lba: base + 6,
        }
    }
}

/// Data bytes by where their DMA went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByTarget {
    /// Guest RAM: host memory.
    pub host_memory: u64,
    /// The controller's own CMB (QEMU's short-circuit).
    pub own_cmb: u64,
    /// Another device's BAR (device to device across PCIe).
    pub other_device: u64,
    /// Neither RAM nor a BAR of the guest's map.
    pub unattributed: u64,
}

impl ByTarget {
    /// All bytes.
    pub fn total(&self) -> u64 {
        self.host_memory
            .saturating_add(self.own_cmb)
            .saturating_add(self.other_device)
            .saturating_add(self.unattributed)
    }

    /// Bytes that stayed in device memory.
    pub fn device(&self) -> u64 {
        self.own_cmb.saturating_add(self.other_device)
    }

    fn add(&mut self, o: &ByTarget) {
        self.host_memory = self.host_memory.saturating_add(o.host_memory);
        self.own_cmb = self.own_cmb.saturating_add(o.own_cmb);
        self.other_device = self.other_device.saturating_add(o.other_device);
        self.unattributed = self.unattributed.saturating_add(o.unattributed);
    }
}

/// Command and queue traffic inside the window, counted apart from data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTraffic {
    /// I/O commands.
    pub io_commands: u64,
    /// Admin commands.
    pub admin_commands: u64,
    /// SQE fetches, [`SQE_BYTES`] per command (from RAM, or from the controller's CMB
    /// when its submission queue lives there; the trace does not name the controller).
    pub sqe_bytes: u64,
    /// CQE writes, [`CQE_BYTES`] per completion.
    pub cqe_bytes: u64,
    /// Shadow doorbell reads and event index writes (doorbell buffer in RAM).
    pub doorbell_buffer_bytes: u64,
    /// PRP list entries read, [`PRP_ENTRY_BYTES`] each.
    pub prp_list_bytes: u64,
    /// The part of `prp_list_bytes` whose list lies in RAM.
    pub prp_list_host_memory_bytes: u64,
    /// SGL descriptors read from segments, [`SGL_DESCRIPTOR_BYTES`] each.
    pub sgl_list_bytes: u64,
    /// I/O submission queues created in RAM during the whole trace.
    pub io_sqs_in_ram: u64,
    /// I/O submission queues created in a device BAR (a CMB).
    pub io_sqs_in_cmb: u64,
}

impl QueueTraffic {
    /// All queue and command bytes.
    pub fn total(&self) -> u64 {
        self.sqe_bytes
            .saturating_add(self.cqe_bytes)
            .saturating_add(self.doorbell_buffer_bytes)
            .saturating_add(self.prp_list_bytes)
            .saturating_add(self.sgl_list_bytes)
    }
}

/// Whether the markers were seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowState {
    /// The opening marker never came.
    #[default]
    NotOpened,
    /// Opened, never closed (the trace ended early).
    Open,
    /// Both markers seen.
    Closed,
}

/// Everything counted in one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DmaReport {
    /// Marker state.
    pub window: WindowState,
    /// Data of read commands (device to memory) up to the last write or flush.
    pub read: ByTarget,
    /// Data of write commands (memory to device).
    pub write: ByTarget,
    /// Data of reads after the last write or flush (a verify read-back).
    pub readback: ByTarget,
    /// Data of other I/O commands, and data mapped outside any command.
    pub other_io: ByTarget,
    /// Data of admin commands.
    pub admin: ByTarget,
    /// Data bytes through each device's BARs, own CMB included.
    pub devices: BTreeMap<String, u64>,
    /// Queue and command traffic.
    pub queue: QueueTraffic,
    /// Trace lines read (all of them, inside the window or not).
    pub lines: u64,
}

/// The headline figures of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DmaFigures {
    /// Bytes written to the destination (data of write commands).
    pub payload_bytes: u64,
    /// Data bytes of reads and writes that went through guest RAM.
    pub host_memory_bytes: u64,
    /// Data bytes of reads and writes that stayed in device memory.
    pub peer_bytes: u64,
    /// The part of `peer_bytes` inside a controller's own CMB.
    pub own_cmb_bytes: u64,
    /// The part of `peer_bytes` that crossed to another device's BAR.
    pub other_device_bytes: u64,
    /// Data bytes in neither RAM nor a BAR.
    pub unattributed_bytes: u64,
    /// `host_memory_bytes / payload_bytes`: 2.0 through a host buffer, 0.0 through a CMB.
    pub host_memory_per_payload_byte: Option<f64>,
    /// Read-back bytes after the copy (not part of the figures above).
    pub readback_bytes: u64,
    /// Queue and command bytes (not part of the figures above).
    pub queue_bytes: u64,
}

impl DmaReport {
    /// The headline figures.
    pub fn figures(&self) -> DmaFigures {
        let mut data = self.read;
        data.add(&self.write);
        let payload = self.write.total();
        DmaFigures {
            payload_bytes: payload,
            host_memory_bytes: data.host_memory,
            peer_bytes: data.device(),
            own_cmb_bytes: data.own_cmb,
            other_device_bytes: data.other_device,
            unattributed_bytes: data.unattributed,
            host_memory_per_payload_byte: (payload > 0)
                .then(|| data.host_memory as f64 / payload as f64),
            readback_bytes: self.readback.total(),
            queue_bytes: self.queue.total(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    OtherIo,
    Admin,
}

#[derive(Debug, Clone, Copy)]
struct Command {
    kind: Kind,
    /// A window marker: its data is never counted.
    marker: bool,
    /// Its SQE was counted (to undo for the closing marker).
    counted: bool,
    /// Its SGL starts with a segment descriptor: descriptors are read from memory.
    sgl_list: bool,
}

/// The streaming accountant of one window: [`DmaAccountant::feed`] each trace line,
/// then [`DmaAccountant::finish`].
#[derive(Debug, Clone)]
pub struct DmaAccountant {
    map: MemoryMap,
    window: Window,
    cmd: Option<Command>,
    pending_map: Option<(u64, u64)>,
    pending_reads: ByTarget,
    report: DmaReport,
}

impl DmaAccountant {
    /// An accountant for `window` over the guest's `map`.
    pub fn new(map: MemoryMap, window: Window) -> Self {
        Self {
            map,
            window,
            cmd: None,
            pending_map: None,
            pending_reads: ByTarget::default(),
            report: DmaReport::default(),
        }
    }

    fn open(&self) -> bool {
        self.report.window == WindowState::Open
    }

    /// Takes one trace line (any text: what is not a known event is skipped).
    pub fn feed(&mut self, line: &str) {
        self.report.lines += 1;
        if let Some(ev) = parse_line(line) {
            self.event(ev);
        }
    }

    /// Takes one parsed event.
    pub fn event(&mut self, ev: TraceEvent) {
        if let Some((addr, len)) = self.pending_map.take() {
            if ev == (TraceEvent::MapAddrCmb { addr, len }) {
                self.own_cmb(addr, len);
                return;
            }
            self.system(addr, len);
        }
        let open = self.open();
        match ev {
            TraceEvent::MapAddr { addr, len } => self.pending_map = Some((addr, len)),
            TraceEvent::MapAddrCmb { addr, len } => self.own_cmb(addr, len),
            TraceEvent::Command { admin, opc, .. } => {
                let kind = match (admin, opc) {
                    (true, _) => Kind::Admin,
                    (false, OPC_READ) => Kind::Read,
                    (false, OPC_WRITE) => Kind::Write,
                    _ => Kind::OtherIo,
                };
                if open {
                    let q = &mut self.report.queue;
                    if admin {
                        q.admin_commands += 1;
                    } else {
                        q.io_commands += 1;
                    }
                    q.sqe_bytes += SQE_BYTES;
                    if !admin && (opc == OPC_WRITE || opc == OPC_FLUSH) {
                        let reads = std::mem::take(&mut self.pending_reads);
                        self.report.read.add(&reads);
                    }
                }
                self.cmd = Some(Command {
                    kind,
                    marker: false,
                    counted: open,
                    sgl_list: false,
                });
            }
            TraceEvent::Rw { write, nlb, lba } => {
                if write || nlb != MARKER_BLOCKS {
                    return;
                }
                let state = self.report.window;
                if lba == self.window.begin_lba && state == WindowState::NotOpened {
                    self.report.window = WindowState::Open;
                } else if lba == self.window.end_lba && state == WindowState::Open {
                    self.report.window = WindowState::Closed;
                    if let Some(c) = self.cmd.filter(|c| c.counted) {
                        let q = &mut self.report.queue;
                        q.sqe_bytes = q.sqe_bytes.saturating_sub(SQE_BYTES);
                        if c.kind == Kind::Admin {
                            q.admin_commands = q.admin_commands.saturating_sub(1);
                        } else {
                            q.io_commands = q.io_commands.saturating_sub(1);
                        }
                    }
                } else {
                    return;
                }
                if let Some(c) = self.cmd.as_mut() {
                    c.marker = true;
                }
            }
            TraceEvent::MapPrp {
                trans_len,
                len,
                prp2,
            } if open && !self.cmd.is_some_and(|c| c.marker) => {
                let bytes = prp_list_entries(trans_len, len).saturating_mul(PRP_ENTRY_BYTES);
                let q = &mut self.report.queue;
                q.prp_list_bytes = q.prp_list_bytes.saturating_add(bytes);
                if self.map.is_ram(prp2) {
                    q.prp_list_host_memory_bytes =
                        q.prp_list_host_memory_bytes.saturating_add(bytes);
                }
            }
            TraceEvent::MapSgl { kind } => {
                if let Some(c) = self.cmd.as_mut() {
                    c.sgl_list = kind == 2 || kind == 3;
                }
            }
            TraceEvent::CreateSq { addr, sqid } if sqid != 0 => {
                let q = &mut self.report.queue;
                if self.map.is_ram(addr) {
                    q.io_sqs_in_ram += 1;
                } else if self.map.bar_owner(addr).is_some() {
                    q.io_sqs_in_cmb += 1;
                }
            }
            TraceEvent::Completion if open => self.report.queue.cqe_bytes += CQE_BYTES,
            TraceEvent::ShadowDoorbell | TraceEvent::EventIdx if open => {
                self.report.queue.doorbell_buffer_bytes += DOORBELL_BYTES;
            }
            _ => {}
        }
    }

    /// The bucket for data of the current command, or `None` outside the window or for
    /// a marker's own data.
    fn bucket(&mut self) -> Option<&mut ByTarget> {
        if !self.open() {
            return None;
        }
        let kind = match self.cmd {
            Some(c) if c.marker => return None,
            Some(c) => {
                if c.sgl_list {
                    self.report.queue.sgl_list_bytes += SGL_DESCRIPTOR_BYTES;
                }
                c.kind
            }
            None => Kind::OtherIo,
        };
        Some(match kind {
            Kind::Read => &mut self.pending_reads,
            Kind::Write => &mut self.report.write,
            Kind::OtherIo => &mut self.report.other_io,
            Kind::Admin => &mut self.report.admin,
        })
    }

    fn own_cmb(&mut self, addr: u64, len: u64) {
        let owner = self.map.bar_owner(addr).map(str::to_string);
        let Some(b) = self.bucket() else { return };
        b.own_cmb = b.own_cmb.saturating_add(len);
        if let Some(bdf) = owner {
            let d = self.report.devices.entry(bdf).or_default();
            *d = d.saturating_add(len);
        }
    }

    fn system(&mut self, addr: u64, len: u64) {
        let split = self.map.split(addr, len);
        let Some(b) = self.bucket() else { return };
        let bars = split.bars.values().fold(0u64, |a, n| a.saturating_add(*n));
        b.host_memory = b.host_memory.saturating_add(split.ram);
        b.other_device = b.other_device.saturating_add(bars);
        b.unattributed = b.unattributed.saturating_add(split.other);
        for (bdf, n) in split.bars {
            let d = self.report.devices.entry(bdf).or_default();
            *d = d.saturating_add(n);
        }
    }

    /// The report: a pending data pointer is resolved, and reads since the last write or
    /// flush become the read-back.
    pub fn finish(mut self) -> DmaReport {
        if let Some((addr, len)) = self.pending_map.take() {
            self.system(addr, len);
        }
        self.report.readback = self.pending_reads;
        self.report
    }
}

/// PRP list entries a transfer of `len` bytes needs when PRP1 covers `trans_len`: none
/// when PRP2 is absent or a data page, else one per remaining page, plus a chain pointer
/// at the end of every list page but the last (a list page holds 512 entries).
/// QEMU may read more of a list page than this; the figure is what the transfer needs.
pub fn prp_list_entries(trans_len: u64, len: u64) -> u64 {
    let rest = len.saturating_sub(trans_len);
    if rest <= CTRL_PAGE {
        return 0;
    }
    let pages = rest.div_ceil(CTRL_PAGE);
    let per_page = CTRL_PAGE / PRP_ENTRY_BYTES;
    let chains = pages.saturating_sub(per_page).div_ceil(per_page - 1);
    pages.saturating_add(chains)
}

#[cfg(test)]
mod tests;
