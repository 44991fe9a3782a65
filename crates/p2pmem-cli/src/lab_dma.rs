//! Showing where the bytes went in the lab (`lab run` of a `p2pmem copy`, `lab demo`):
//! the figures measured by `p2pmem_lab::trace` from QEMU's nvme DMA trace, as text lines
//! for people and as JSON for `--json`.

use std::io::Write;

use p2pmem_lab::plans::dma::{account_run, DmaResult, MeasuredCopy, RunDma};
use p2pmem_lab::PlanRun;
use p2pmem_model::dma_accounting::DmaFigures;

use crate::output::size;

/// One line: payload, host memory and the ratio, device memory, the rest.
pub fn figures_line(f: &DmaFigures, commands: u64) -> String {
    let ratio = f.host_memory_per_payload_byte.map_or_else(
        || "no payload written".to_string(),
        |r| format!("{r:.2} per payload byte"),
    );
    let mut s = format!(
        "payload {}; through host memory {} ({ratio}); in device memory {}",
        size(f.payload_bytes),
        size(f.host_memory_bytes),
        size(f.peer_bytes)
    );
    if f.peer_bytes > 0 {
        s.push_str(&format!(
            " ({} inside a controller's own CMB, {} device to device across PCIe)",
            size(f.own_cmb_bytes),
            size(f.other_device_bytes)
        ));
    }
    if f.unattributed_bytes > 0 {
        s.push_str(&format!(
            "; {} outside guest RAM and the BARs",
            size(f.unattributed_bytes)
        ));
    }
    s.push_str(&format!(
        "; queue/command traffic {} ({commands} commands, counted apart)",
        size(f.queue_bytes)
    ));
    if f.readback_bytes > 0 {
        s.push_str(&format!(
            "; read-back after the copy {} (--verify, counted apart)",
            size(f.readback_bytes)
        ));
    }
    s
}

fn commands(d: &DmaResult) -> u64 {
    d.detail.queue.io_commands + d.detail.queue.admin_commands
}

/// The demo's lines (empty when nothing was measured and nothing failed).
pub fn demo_lines(copies: &[MeasuredCopy], error: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = error {
        out.push(format!("where the bytes went: not measured: {e}"));
    }
    if copies.is_empty() {
        return out;
    }
    out.push("where the bytes went (QEMU's nvme DMA trace, every DMA of each copy):".into());
    for c in copies {
        let what = if c.via == "host" {
            "through a host buffer".to_string()
        } else {
            format!("through the CMB of {}", c.via)
        };
        let status = match c.exit {
            Some(0) => String::new(),
            Some(rc) => format!(" [p2pmem copy exit status {rc}]"),
            None => " [p2pmem copy left no exit status]".to_string(),
        };
        out.push(format!("  {what}{status}:"));
        out.push(format!(
            "    {}",
            figures_line(&c.dma.figures, commands(&c.dma))
        ));
    }
    if let Some(c) = copies.first() {
        out.push(format!("  trace: {}", c.dma.trace.display()));
    }
    out
}

/// After a traced `lab run`: the figures on stderr (text) or as one JSON line
/// `{"dma_accounting": {...}, "dma_error": null}` on stdout after the guest's output.
/// A run that cannot be measured says why; the job's exit status is left alone.
pub fn report_run(out: &PlanRun, map_step: &str, json: bool) -> anyhow::Result<()> {
    let result = out
        .address_map(map_step)
        .and_then(|map| account_run(&out.run_dir, map));
    if json {
        let (ok, err) = match &result {
            Ok(d) => (Some(d.clone()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let line = p2pmem_wire::doc::line(
            "lab_run_dma",
            &RunDma {
                dma_accounting: ok,
                dma_error: err,
            },
        )?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        return Ok(());
    }
    match result {
        Ok(d) => {
            eprintln!(
                "lab: where the bytes went (QEMU's nvme DMA trace, every DMA of the command):"
            );
            eprintln!("lab:   {}", figures_line(&d.figures, commands(&d)));
            eprintln!("lab:   trace: {}", d.trace.display());
        }
        Err(e) => eprintln!("lab: where the bytes went: not measured: {e}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(host: u64, own: u64, other: u64) -> DmaFigures {
        DmaFigures {
            payload_bytes: 1 << 20,
            host_memory_bytes: host,
            peer_bytes: own + other,
            own_cmb_bytes: own,
            other_device_bytes: other,
            unattributed_bytes: 0,
            host_memory_per_payload_byte: Some(host as f64 / (1 << 20) as f64),
            readback_bytes: 2 << 20,
            queue_bytes: 1200,
        }
    }

    #[test]
    fn lines_show_the_ratio_and_where_the_rest_went() {
        let cmb = figures_line(&figures(0, 1 << 20, 1 << 20), 5);
        assert!(cmb.starts_with("payload 1.0 MiB; through host memory 0 B (0.00 per payload byte); in device memory 2.0 MiB (1.0 MiB inside a controller's own CMB, 1.0 MiB device to device"), "{cmb}");
        assert!(cmb.contains("read-back after the copy 2.0 MiB"), "{cmb}");
        let host = figures_line(&figures(2 << 20, 0, 0), 5);
        assert!(
            host.contains("2.0 MiB (2.00 per payload byte); in device memory 0 B;"),
            "{host}"
        );
        assert!(demo_lines(&[], None).is_empty());
        assert_eq!(demo_lines(&[], Some("x")).len(), 1);
    }
}
