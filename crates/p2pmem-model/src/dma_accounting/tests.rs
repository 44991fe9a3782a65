use super::*;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const HALF: u64 = 512 << 10;

/// The guest's `/proc/iomem` top (lab, topology `switch`, 1 GiB guest).
const IOMEM: &str = "00000000-00000fff : Reserved
00001000-0009fbff : System RAM
000a0000-000bffff : PCI Bus 0000:00
00100000-3ffc8fff : System RAM
  01000000-01b7ffff : Kernel code
40000000-afffffff : PCI Bus 0000:00
c0000000-febfffff : PCI Bus 0000:00
  fb000000-fdffffff : PCI Bus 0000:01
      fc000000-fcffffff : 0000:03:00.0
100000000-8ffffffff : PCI Bus 0000:00
";

/// `resource` of 0000:03:00.0 (BAR0 registers, BAR2 the 16 MiB CMB).
const RES_A: &str = "0x00000000fe800000 0x00000000fe803fff 0x0000000000140204
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x00000000fc000000 0x00000000fcffffff 0x000000000014220c
0x0000000000000000 0x0000000000000000 0x0000000000000000
";
/// `resource` of 0000:04:00.0.
const RES_B: &str = "0x00000000fe600000 0x00000000fe603fff 0x0000000000140204
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x00000000fb000000 0x00000000fbffffff 0x000000000014220c
";

fn map() -> MemoryMap {
    MemoryMap::from_guest(IOMEM, [("0000:03:00.0", RES_A), ("0000:04:00.0", RES_B)])
}

fn marker(lba: u64) -> String {
    format!(
        "pci_nvme_io_cmd cid 705 nsid 0x1 sqid 1 opc 0x2 opname 'NVME_NVM_CMD_READ'
pci_nvme_read cid 705 nsid 1 nlb 3 count 1536 lba {lba:#x}
pci_nvme_map_prp trans_len 1536 len 1536 prp1 0x17cf240 prp2 0x0 num_prps 1
pci_nvme_map_addr addr 0x17cf240 len 1536
pci_nvme_enqueue_req_completion cid 705 cqid 1 dw0 0x0 dw1 0x0 status 0x0
"
    )
}

fn run(trace: &str) -> DmaReport {
    let mut acc = DmaAccountant::new(map(), Window::nth(0));
    for line in trace.lines() {
        acc.feed(line);
    }
    acc.finish()
}

/// A 1 MiB copy from 03:00.0 to 04:00.0 through 03:00.0's CMB, as QEMU 7.2 traced it.
fn cmb_copy() -> String {
    let mut t = String::from("pci_nvme_create_sq create submission queue, addr=0x700000, sqid=1, cqid=1, qsize=1023, qflags=1\n");
    t.push_str("pci_nvme_create_sq create submission queue, addr=0xfc000000, sqid=1, cqid=1, qsize=1023, qflags=1\n");
    t.push_str("pci_nvme_map_addr addr 0x7f8000 len 4096\n"); // boot noise, outside the window
    t.push_str(&marker(21));
    for (i, addr) in [0xfc01_0000u64, 0xfc09_0000].iter().enumerate() {
        t.push_str(&format!(
            "pci_nvme_io_cmd cid {c} nsid 0x1 sqid 1 opc 0x2 opname 'NVME_NVM_CMD_READ'
pci_nvme_read cid {c} nsid 1 nlb 1024 count 524288 lba {lba:#x}
pci_nvme_map_sgl type 0x0 len 524288
pci_nvme_map_addr addr {addr:#x} len 524288
pci_nvme_map_addr_cmb addr {addr:#x} len 524288
pci_nvme_enqueue_req_completion cid {c} cqid 1 dw0 0x0 dw1 0x0 status 0x0
",
            c = 385 + i,
            lba = i * 0x400
        ));
    }
    for (i, addr) in [0xfc01_0000u64, 0xfc09_0000].iter().enumerate() {
        t.push_str(&format!(
            "pci_nvme_io_cmd cid {c} nsid 0x1 sqid 1 opc 0x1 opname 'NVME_NVM_CMD_WRITE'
pci_nvme_write cid {c} opname 'NVME_NVM_CMD_WRITE' nsid 1 nlb 1024 count 524288 lba {lba:#x}
pci_nvme_map_sgl type 0x0 len 524288
pci_nvme_map_addr addr {addr:#x} len 524288
pci_nvme_eventidx_sq sqid 1 new_eventidx 3
pci_nvme_shadow_doorbell_sq sqid 1 new_shadow_doorbell 3
",
            c = 897 + i,
            lba = 0x2000 + i * 0x400
        ));
    }
    t.push_str("pci_nvme_io_cmd cid 899 nsid 0x1 sqid 1 opc 0x0 opname 'NVME_NVM_CMD_FLUSH'\n");
    t.push_str(&marker(27));
    t.push_str("pci_nvme_admin_cmd cid 12295 sqid 0 opc 0x0 opname 'NVME_ADM_CMD_DELETE_SQ'\n");
    t
}

/// The same copy through a host buffer (PRPs, one map_addr per 4 KiB page), then a
/// `--verify` read-back of both ranges.
fn host_copy(verify: bool) -> String {
    let mut t = marker(21);
    let cmd = |t: &mut String, c: u32, opc: u8, name: &str, buf: u64, prp2: u64| {
        t.push_str(&format!(
            "pci_nvme_io_cmd cid {c} nsid 0x1 sqid 1 opc {opc:#x} opname '{name}'\n"
        ));
        if opc == 1 {
            t.push_str(&format!(
                "pci_nvme_write cid {c} opname '{name}' nsid 1 nlb 1024 count 524288 lba 0x2000\n"
            ));
        } else {
            t.push_str(&format!(
                "pci_nvme_read cid {c} nsid 1 nlb 1024 count 524288 lba 0x0\n"
            ));
        }
        t.push_str(&format!("pci_nvme_map_prp trans_len 4096 len 524288 prp1 {buf:#x} prp2 {prp2:#x} num_prps 129\n"));
        for p in 0..128u64 {
            t.push_str(&format!(
                "pci_nvme_map_addr addr {:#x} len 4096\n",
                buf + p * 4096
            ));
        }
        t.push_str(&format!(
            "pci_nvme_enqueue_req_completion cid {c} cqid 1 dw0 0x0 dw1 0x0 status 0x0\n"
        ));
    };
    cmd(&mut t, 706, 2, "NVME_NVM_CMD_READ", 0x176_4000, 0x9e_1000);
    cmd(&mut t, 707, 2, "NVME_NVM_CMD_READ", 0x16e_4000, 0x9e_1000);
    cmd(&mut t, 193, 1, "NVME_NVM_CMD_WRITE", 0x176_4000, 0x9e_2000);
    cmd(&mut t, 194, 1, "NVME_NVM_CMD_WRITE", 0x16e_4000, 0x9e_2000);
    t.push_str("pci_nvme_io_cmd cid 195 nsid 0x1 sqid 1 opc 0x0 opname 'NVME_NVM_CMD_FLUSH'\n");
    if verify {
        for (c, buf) in [
            (708, 0xecb000),
            (709, 0xe4b000),
            (196, 0xdca000),
            (197, 0xd4a000),
        ] {
            cmd(&mut t, c, 2, "NVME_NVM_CMD_READ", buf, 0x9e_3000);
        }
    }
    t.push_str(&marker(27));
    t
}

#[test]
fn a_copy_through_a_cmb_moves_no_payload_through_host_memory() {
    let r = run(&cmb_copy());
    assert_eq!(r.window, WindowState::Closed);
    let f = r.figures();
    assert_eq!(f.payload_bytes, MIB);
    assert_eq!(f.host_memory_bytes, 0);
    assert_eq!(f.own_cmb_bytes, MIB, "the source reads into its own CMB");
    assert_eq!(
        f.other_device_bytes, MIB,
        "the destination reads the CMB over PCIe"
    );
    assert_eq!(f.peer_bytes, 2 * MIB);
    assert_eq!(f.host_memory_per_payload_byte, Some(0.0));
    assert_eq!(f.unattributed_bytes, 0);
    assert_eq!(r.devices.get("0000:03:00.0"), Some(&(2 * MIB)));
    // 2 reads + 2 writes + 1 flush; the closing marker is not counted.
    assert_eq!(r.queue.io_commands, 5);
    assert_eq!(r.queue.sqe_bytes, 5 * SQE_BYTES);
    assert_eq!(r.queue.doorbell_buffer_bytes, 4 * DOORBELL_BYTES);
    assert_eq!(r.queue.admin_commands, 0, "after the window");
    assert_eq!((r.queue.io_sqs_in_ram, r.queue.io_sqs_in_cmb), (1, 1));
    assert_eq!(
        r.queue.sgl_list_bytes, 0,
        "one data block descriptor in the SQE"
    );
}

#[test]
fn a_copy_through_a_host_buffer_moves_twice_the_payload_through_host_memory() {
    let r = run(&host_copy(false));
    let f = r.figures();
    assert_eq!(f.payload_bytes, MIB);
    assert_eq!(f.host_memory_bytes, 2 * MIB);
    assert_eq!(f.peer_bytes, 0);
    assert_eq!(f.host_memory_per_payload_byte, Some(2.0));
    assert_eq!(f.readback_bytes, 0);
    // 127 PRP list entries per 512 KiB command (PRP1 covers the first page).
    assert_eq!(r.queue.prp_list_bytes, 4 * 127 * PRP_ENTRY_BYTES);
    assert_eq!(r.queue.prp_list_host_memory_bytes, r.queue.prp_list_bytes);
    assert_eq!(
        r.queue.cqe_bytes,
        4 * CQE_BYTES + CQE_BYTES,
        "the opening marker's CQE is inside"
    );
}

#[test]
fn a_verify_read_back_is_reported_apart() {
    let f = run(&host_copy(true)).figures();
    assert_eq!(f.host_memory_per_payload_byte, Some(2.0));
    assert_eq!(f.readback_bytes, 2 * MIB);
}

#[test]
fn without_markers_nothing_counts_and_an_unclosed_window_says_so() {
    let r = run("pci_nvme_map_addr addr 0x7f8000 len 4096\n");
    assert_eq!(r.window, WindowState::NotOpened);
    assert_eq!(r.figures().host_memory_bytes, 0);
    assert_eq!(r.figures().host_memory_per_payload_byte, None);
    let mut t = marker(21);
    t.push_str("pci_nvme_io_cmd cid 1 nsid 0x1 sqid 1 opc 0x1 opname 'W'\npci_nvme_map_addr addr 0x7f8000 len 4096\n");
    let r = run(&t);
    assert_eq!(r.window, WindowState::Open);
    assert_eq!(
        r.write.host_memory, 4096,
        "the last pending pointer is resolved"
    );
    // Another window's markers do not open this one.
    let r = run(&host_copy(false).replace("lba 0x15", "lba 0x21"));
    assert_eq!(r.window, WindowState::NotOpened);
}

#[test]
fn admin_data_and_unattributed_addresses_are_kept_apart() {
    let mut t = marker(21);
    t.push_str("pci_nvme_admin_cmd cid 20508 sqid 0 opc 0x6 opname 'NVME_ADM_CMD_IDENTIFY'\n");
    t.push_str("pci_nvme_map_addr addr 0x7b2000 len 4096\n");
    t.push_str("pci_nvme_io_cmd cid 2 nsid 0x1 sqid 1 opc 0x1 opname 'W'\n");
    // 4 KiB straddling the end of RAM (0x3ffc8fff): 2 KiB RAM, 2 KiB firmware-reserved.
    t.push_str("pci_nvme_map_addr addr 0x3ffc8800 len 4096\n");
    t.push_str(&marker(27));
    let r = run(&t);
    assert_eq!(r.admin.host_memory, 4096);
    assert_eq!(r.queue.admin_commands, 1);
    assert_eq!(r.write.host_memory, 2048);
    assert_eq!(r.write.unattributed, 2048);
    assert_eq!(r.figures().unattributed_bytes, 2048);
}

#[test]
fn an_unpaired_cmb_line_or_a_different_twin_is_not_merged() {
    let mut t = marker(21);
    t.push_str("pci_nvme_io_cmd cid 2 nsid 0x1 sqid 1 opc 0x1 opname 'W'\n");
    t.push_str("pci_nvme_map_addr addr 0xfb000000 len 8192\n");
    t.push_str("pci_nvme_map_addr_cmb addr 0xfc000000 len 8192\n");
    let r = run(&t);
    assert_eq!(r.write.other_device, 8192);
    assert_eq!(r.write.own_cmb, 8192);
    assert_eq!(r.devices.get("0000:04:00.0"), Some(&8192));
}

#[test]
fn segment_sgls_count_their_descriptors() {
    let mut t = marker(21);
    t.push_str("pci_nvme_io_cmd cid 2 nsid 0x1 sqid 1 opc 0x1 opname 'W'\n");
    t.push_str("pci_nvme_map_sgl type 0x3 len 8192\n");
    t.push_str("pci_nvme_map_addr addr 0x100000 len 4096\n");
    t.push_str("pci_nvme_map_addr addr 0x200000 len 4096\n");
    let r = run(&t);
    assert_eq!(r.queue.sgl_list_bytes, 2 * SGL_DESCRIPTOR_BYTES);
}

#[test]
fn memory_map_reads_top_level_ram_and_memory_bars_only() {
    let m = map();
    assert_eq!(
        m.ram,
        [
            Range {
                start: 0x1000,
                end: 0x9fbff
            },
            Range {
                start: 0x10_0000,
                end: 0x3ffc_8fff
            }
        ]
    );
    assert_eq!(m.bars.len(), 4);
    assert_eq!(m.bar_owner(0xfc00_1234), Some("0000:03:00.0"));
    assert_eq!(m.bars[1].index, 2);
    assert!(m.is_ram(0x700000) && !m.is_ram(0xfc000000) && !m.is_ram(0));
    // An I/O-port BAR (flags without 0x200) and garbage are skipped.
    let io = MemoryMap::from_guest(
        "zzz\n1-0 : System RAM\n",
        [(
            "x",
            "0x000000000000c000 0x000000000000c03f 0x0000000000040101\nnot a line\n",
        )],
    );
    assert_eq!(io, MemoryMap::default());
}

#[test]
fn split_is_byte_exact_and_never_overflows() {
    let m = map();
    let s = m.split(0x9fb00, 0x200);
    assert_eq!((s.ram, s.other), (0x100, 0x100));
    let s = m.split(u64::MAX - 10, 100);
    assert_eq!(s.ram + s.other, 100);
    let s = m.split(0xfcff_f000, 0x2000);
    assert_eq!(s.bars.get("0000:03:00.0"), Some(&0x1000));
    assert_eq!(s.other, 0x1000);
}

#[test]
fn prp_list_entries_follow_the_page_arithmetic() {
    assert_eq!(prp_list_entries(4096, 4096), 0);
    assert_eq!(prp_list_entries(4096, 8192), 0, "PRP2 is a data page");
    assert_eq!(prp_list_entries(4096, 12288), 2);
    assert_eq!(prp_list_entries(4096, HALF), 127);
    assert_eq!(
        prp_list_entries(4096, 4096 + 512 * 4096),
        512,
        "one full list page"
    );
    assert_eq!(
        prp_list_entries(4096, 4096 + 513 * 4096),
        514,
        "one chain pointer"
    );
    assert_eq!(prp_list_entries(u64::MAX, 0), 0);
}

#[test]
fn trace_lines_parse_with_and_without_timestamps() {
    assert_eq!(
        parse_line("pci_nvme_map_addr addr 0xfc010000 len 524288"),
        Some(TraceEvent::MapAddr {
            addr: 0xfc01_0000,
            len: HALF
        })
    );
    assert_eq!(
        parse_line("12345@1700000000.123456:pci_nvme_map_addr_cmb addr 0x10 len 4"),
        Some(TraceEvent::MapAddrCmb { addr: 0x10, len: 4 })
    );
    assert_eq!(
        parse_line(
            "pci_nvme_map_prp trans_len 4096 len 524288 prp1 0x1764000 prp2 0x9e1000 num_prps 129"
        ),
        Some(TraceEvent::MapPrp {
            trans_len: 4096,
            len: HALF,
            prp2: 0x9e_1000
        })
    );
    assert_eq!(
        parse_line("pci_nvme_create_sq create submission queue, addr=0xfc000000, sqid=1, cqid=1, qsize=1023, qflags=1"),
        Some(TraceEvent::CreateSq { addr: 0xfc00_0000, sqid: 1 })
    );
    assert_eq!(
        parse_line("pci_nvme_write cid 897 opname 'NVME_NVM_CMD_WRITE' nsid 1 nlb 1024 count 524288 lba 0x2000"),
        Some(TraceEvent::Rw { write: true, nlb: 1024, lba: 0x2000 })
    );
    assert_eq!(
        parse_line("pci_nvme_dbbuf_config dbs_addr=0x6f2000 eis_addr=0x6f3000"),
        Some(TraceEvent::DbbufConfig {
            dbs: 0x6f_2000,
            eis: 0x6f_3000
        })
    );
    for bad in [
        "",
        "pci_nvme_map_addr",
        "pci_nvme_map_addr addr len 4",
        "pci_nvme_map_addr addr 0xzz len 4",
        "pci_nvme_io_cmd cid 1 sqid 99999999 opc 0x2",
        "pci_nvme_map_sgl type 0x1ff len 4",
        "x@1.2:pci_nvme_map_addr addr 0x1 len 1",
        "pci_nvme_mmio_read addr 0x8 size 4",
    ] {
        assert_eq!(parse_line(bad), None, "{bad:?}");
    }
    assert_eq!(trace_line::event::ALL.len(), 16);
}

proptest! {
    #[test]
    fn huge_lengths_saturate(lens in proptest::collection::vec(any::<u64>(), 0..8), cmb: bool) {
        let mut t = marker(21);
        t.push_str("pci_nvme_io_cmd cid 1 nsid 0x1 sqid 1 opc 0x1 opname 'W'\n");
        for len in &lens {
            t.push_str(&format!("pci_nvme_map_prp trans_len 0 len {len} prp1 0x0 prp2 0x100000 num_prps 1\n"));
            t.push_str(&format!("pci_nvme_map_addr addr 0xfc000000 len {len}\n"));
            if cmb {
                t.push_str(&format!("pci_nvme_map_addr_cmb addr 0xfc000000 len {len}\n"));
            }
        }
        let f = run(&t).figures();
        // The BAR (16 MiB, the rest beyond it) or the own CMB: saturated, never wrapped.
        prop_assert_eq!(f.peer_bytes.saturating_add(f.unattributed_bytes), f.payload_bytes);
        prop_assert_eq!(f.host_memory_bytes, 0);
    }

    #[test]
    fn garbage_never_panics(lines in proptest::collection::vec(".{0,80}", 0..40)) {
        let mut acc = DmaAccountant::new(map(), Window::nth(0));
        for l in &lines {
            let _ = parse_line(l);
            acc.feed(l);
        }
        let r = acc.finish();
        prop_assert_eq!(r.lines, lines.len() as u64);
    }

    #[test]
    fn event_shaped_garbage_never_panics(
        name in prop::sample::select(trace_line::event::ALL.to_vec()),
        words in proptest::collection::vec("(addr|len|0x[0-9a-f]{0,18}|[0-9]{0,21}|sqid=|=|,| )", 0..12),
    ) {
        let line = format!("{name} {}", words.join(" "));
        let mut acc = DmaAccountant::new(map(), Window::nth(0));
        acc.feed(&marker(21));
        acc.feed(&line);
        let _ = acc.finish().figures();
    }

    /// Every data byte inside the window lands in exactly one bucket.
    #[test]
    fn data_is_conserved(ptrs in proptest::collection::vec((any::<u64>(), 0u64..(1 << 40), 0u8..4, any::<bool>()), 0..30)) {
        let mut t = marker(21);
        let mut total = 0u64;
        for (addr, len, opc, cmb) in &ptrs {
            t.push_str(&format!("pci_nvme_io_cmd cid 1 nsid 0x1 sqid 1 opc {opc:#x} opname 'X'\n"));
            t.push_str(&format!("pci_nvme_map_addr addr {addr:#x} len {len}\n"));
            if *cmb {
                t.push_str(&format!("pci_nvme_map_addr_cmb addr {addr:#x} len {len}\n"));
            }
            total += len;
        }
        t.push_str(&marker(27));
        let r = run(&t);
        let sum = r.read.total() + r.write.total() + r.readback.total() + r.other_io.total() + r.admin.total();
        prop_assert_eq!(sum, total);
    }
}
