//! Kernel-log text (a `dmesg` capture, the ring buffer): the record parser, the
//! p2pdma decision-line matcher, and the nvmet `using p2pmem` lines.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = p2pmem_model::klog::parse_klog(data);
    let _ = p2pmem_model::klog::klog_texts(data);
    let lines = p2pmem_model::klog::dmesg_lines(data);
    for l in &lines {
        let _ = p2pmem_model::messages::is_p2pdma_decision_line(l);
        let _ = p2pmem_model::nvmet_plan::facts::parse_using_line(l);
    }
    let _ = p2pmem_linux::nvmet::facts::p2pmem_log(data);
});
