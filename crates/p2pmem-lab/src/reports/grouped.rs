//! The demo's pairs as a reader wants them: grouped by outcome (the prediction, the
//! kernel's verdict, the map type, the read and write results, agreement), and each
//! distinct kernel message once, with the pairs it was logged for. A message differs
//! from pair to pair only in the pair's own names, so those are replaced by `PROVIDER`,
//! `CLIENT` and `DISK` before messages are compared.

use crate::reports::demo::DemoPair;

/// Pairs with the same outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairGroup {
    /// The outcome in words, e.g. `p2p ok, bus address` or `refused (read EREMOTEIO,
    /// write EREMOTEIO)`.
    pub outcome: String,
    /// Whether every pair's prediction agreed with the kernel (`None`: some incomplete).
    pub agreed: Option<bool>,
    /// Indices into the pairs, in their order.
    pub pairs: Vec<usize>,
    /// Each distinct kernel message (as a template) with the pairs that logged it, in
    /// order of first appearance.
    pub messages: Vec<(String, Vec<usize>)>,
}

/// The key that puts two pairs in one group.
fn outcome(p: &DemoPair) -> String {
    let verdict = match (p.predicted, p.kernel) {
        (_, Some(true)) => match p.map_type.as_deref() {
            Some("bus_addr") => "p2p ok, bus address".to_string(),
            Some("thru_host_bridge") => "p2p ok, through the host bridge".to_string(),
            _ => "p2p ok".to_string(),
        },
        (_, Some(false)) => {
            let mut parts = Vec::new();
            if let Some(r) = p.read.as_deref().filter(|r| *r != "ok") {
                parts.push(format!("read {r}"));
            }
            if let Some(w) = p.write.as_deref().filter(|w| *w != "ok") {
                parts.push(format!("write {w}"));
            }
            if let Some(n) = p.nvmet.as_deref().filter(|n| *n != "ok") {
                parts.push(format!("NVMe target {n}"));
            }
            if parts.is_empty() {
                "refused".to_string()
            } else {
                format!("refused ({})", parts.join(", "))
            }
        }
        (_, None) => "no kernel verdict".to_string(),
    };
    match p.agree {
        Some(true) => verdict,
        Some(false) => format!(
            "{verdict}; predicted {}",
            match p.predicted {
                Some(true) => "p2p ok",
                Some(false) => "refused",
                None => "nothing",
            }
        ),
        None => verdict,
    }
}

/// The client's disk name (`nvme1n1` of `/dev/nvme1n1`), else its PCI address.
pub fn disk(p: &DemoPair) -> &str {
    p.client_blkdev
        .rsplit('/')
        .next()
        .filter(|d| !d.is_empty())
        .unwrap_or(&p.client)
}

/// `line` with the pair's own names replaced, so the same message of two pairs compares
/// equal.
pub fn template(p: &DemoPair, line: &str) -> String {
    let disk = disk(p);
    let mut out = line.replace(&p.provider, "PROVIDER");
    if p.client != p.provider {
        out = out.replace(&p.client, "CLIENT");
    }
    if disk != p.client {
        out = out.replace(disk, "DISK");
    }
    out
}

/// The pairs grouped by outcome, groups in order of first appearance.
pub fn group(pairs: &[DemoPair]) -> Vec<PairGroup> {
    let mut groups: Vec<PairGroup> = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let key = outcome(p);
        let at = match groups.iter().position(|g| g.outcome == key) {
            Some(at) => at,
            None => {
                groups.push(PairGroup {
                    outcome: key,
                    agreed: Some(true),
                    pairs: Vec::new(),
                    messages: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[at];
        g.pairs.push(i);
        g.agreed = match (g.agreed, p.agree) {
            (Some(a), Some(b)) => Some(a && b),
            _ => None,
        };
        for line in &p.kernel_log {
            let t = template(p, line);
            match g.messages.iter_mut().find(|(m, _)| *m == t) {
                Some((_, who)) => {
                    if who.last() != Some(&i) {
                        who.push(i);
                    }
                }
                None => g.messages.push((t, vec![i])),
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(provider: &str, client: &str, disk: &str, ok: bool, log: &[&str]) -> DemoPair {
        DemoPair {
            provider: provider.into(),
            client: client.into(),
            client_blkdev: format!("/dev/{disk}"),
            predicted: Some(ok),
            map_type: Some(if ok { "bus_addr" } else { "not_supported" }.into()),
            prediction_error: None,
            kernel: Some(ok),
            oracle: "dma".into(),
            nvmet: None,
            read: Some(if ok { "ok" } else { "EREMOTEIO" }.into()),
            write: Some(if ok { "ok" } else { "EREMOTEIO" }.into()),
            kernel_error: None,
            agree: Some(true),
            disagreement: None,
            kernel_log: log.iter().map(|s| s.to_string()).collect(),
            predicted_messages: vec![],
        }
    }

    #[test]
    fn the_same_message_of_two_pairs_is_shown_once_with_both() {
        let refused = |p: &str, c: &str, d: &str| {
            let l1 = format!("nvme {c}: cannot be used for peer-to-peer DMA as the client and provider ({p}) do not share an upstream bridge or whitelisted host bridge");
            let l2 = format!("invalid error, dev {d}, sector 0 op 0x0:(READ) flags 0x4800");
            pair(p, c, d, false, &[&l1, &l2])
        };
        let pairs = vec![
            pair("0000:03:00.0", "0000:04:00.0", "nvme1n1", true, &[]),
            refused("0000:03:00.0", "0000:05:00.0", "nvme2n1"),
            pair("0000:04:00.0", "0000:03:00.0", "nvme0n1", true, &[]),
            refused("0000:04:00.0", "0000:06:00.0", "nvme3n1"),
        ];
        let g = group(&pairs);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].outcome, "p2p ok, bus address");
        assert_eq!(g[0].pairs, [0, 2]);
        assert!(g[0].messages.is_empty());
        assert_eq!(g[1].outcome, "refused (read EREMOTEIO, write EREMOTEIO)");
        assert_eq!(g[1].agreed, Some(true));
        assert_eq!(g[1].messages.len(), 2);
        assert_eq!(
            g[1].messages[0].0,
            "nvme CLIENT: cannot be used for peer-to-peer DMA as the client and provider (PROVIDER) do not share an upstream bridge or whitelisted host bridge"
        );
        assert_eq!(g[1].messages[0].1, [1, 3]);
        assert_eq!(
            g[1].messages[1].0,
            "invalid error, dev DISK, sector 0 op 0x0:(READ) flags 0x4800"
        );
    }

    #[test]
    fn a_disagreement_is_its_own_group() {
        let mut wrong = pair("0000:03:00.0", "0000:05:00.0", "nvme2n1", false, &[]);
        wrong.predicted = Some(true);
        wrong.agree = Some(false);
        let pairs = vec![
            pair("0000:03:00.0", "0000:06:00.0", "nvme3n1", false, &[]),
            wrong,
        ];
        let g = group(&pairs);
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].agreed, Some(false));
        assert!(
            g[1].outcome.ends_with("; predicted p2p ok"),
            "{}",
            g[1].outcome
        );
    }
}
