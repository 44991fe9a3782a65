//! QEMU trace lines (`pci_nvme_*` events) and the DMA accountant they feed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmem_model::dma_accounting::memory_map::MemoryMap;
use p2pmem_model::dma_accounting::trace_line::parse_line;
use p2pmem_model::dma_accounting::{DmaAccountant, Window};

const IOMEM: &str = "00000000-00000fff : Reserved\n00001000-7fffffff : System RAM\n\
fe000000-fe003fff : 0000:00:04.0\n";
const RESOURCE: &str = "0x00000000fe000000 0x00000000fe003fff 0x0000000000140204\n";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let map = MemoryMap::from_guest(IOMEM, [("0000:00:04.0", RESOURCE)]);
    let mut acc = DmaAccountant::new(map, Window::nth(0));
    for line in text.lines() {
        let _ = parse_line(line);
        acc.feed(line);
    }
    let _ = acc.finish();
    // The guest's own texts are outside bytes too.
    let _ = MemoryMap::from_guest(&text, [("0000:00:04.0", &*text)]);
});
