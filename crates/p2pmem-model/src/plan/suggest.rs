//! Suggestions that follow from a plan's numbers: what P2P saves, which flows leave the
//! bottleneck's subtree and why, a provider that would keep them inside, more lanes.

use super::fabric::{Edge, Fabric, Role};
use super::link::{human_rate, LinkSpeed};
use super::routing::{walk_leg, Place};
use super::Plan;
use crate::distance::MapType;

fn below(fabric: &Fabric, mut n: u32, top: u32) -> bool {
    loop {
        if n == top {
            return true;
        }
        match fabric.nodes[n as usize].parent {
            Some(p) => n = p,
            None => return false,
        }
    }
}

fn scale(s: Option<f64>) -> String {
    s.map_or("unbounded".into(), |v| format!("{v:.2}"))
}

pub(super) fn suggestions(fabric: &Fabric, plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    let (w, wo) = (&plan.with_p2p, &plan.without_p2p);
    if plan.p2p_saves_host_memory_bytes_per_s > 0 || w.max_scale != wo.max_scale {
        let scales = match (w.max_scale, wo.max_scale) {
            (None, None) => String::new(),
            _ => format!(
                "; all flows together can scale by {} with P2P, {} without",
                scale(w.max_scale),
                scale(wo.max_scale)
            ),
        };
        out.push(format!(
            "P2P keeps {} off host memory ({} with P2P, {} without){scales}",
            human_rate(plan.p2p_saves_host_memory_bytes_per_s as f64),
            human_rate(w.host_memory_bytes_per_s as f64),
            human_rate(wo.host_memory_bytes_per_s as f64),
        ));
    }
    let Some(b) = &w.bottleneck else {
        return out;
    };
    if b.kind == "host_memory" {
        let n = plan
            .flows
            .iter()
            .filter(|f| f.path == "host_memory")
            .count();
        out.push(format!(
            "host memory of {} is the bottleneck ({:.0}% used); {n} flows bounce through it",
            b.host.as_deref().unwrap_or("host"),
            b.utilisation * 100.0
        ));
        return out;
    }
    let Some(bn) = fabric.nodes.iter().position(|n| {
        Some(&n.label) == b.downstream.as_ref() && matches!(n.edge, Edge::Link { .. })
    }) else {
        return out;
    };
    let bn = bn as u32;
    let label = &fabric.nodes[bn as usize].label;
    let above = fabric.parent_label(bn);
    let (on, leave) = leaving(fabric, plan, bn);
    out.push(format!(
        "the bottleneck is the link {above} -> {label} ({}, {:.0}% used {}); {on} flow(s) cross it",
        match fabric.nodes[bn as usize].edge {
            Edge::Link { speed: Some(s), .. } => s.to_string(),
            _ => "unknown speed".into(),
        },
        b.utilisation * 100.0,
        b.direction
    ));
    if let Some(l) = leave {
        out.push(l);
    }
    // Other switches whose upstream links carry flows that need not leave them.
    let mut others: Vec<(u32, u64)> = fabric
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| *i as u32 != bn && n.role == Some(Role::SwitchUpstream))
        .filter_map(|(i, _)| {
            let (u, d) = w.node_load(i as u32)?;
            let load = (u + d) as u64;
            (load > 0).then_some((i as u32, load))
        })
        .collect();
    others.sort_by_key(|(_, l)| std::cmp::Reverse(*l));
    for (n, _) in others.into_iter().take(3) {
        if let (_, Some(l)) = leaving(fabric, plan, n) {
            out.push(l);
        }
    }
    let bdf = fabric.nodes[bn as usize].bdf;
    let users = plan
        .flows
        .iter()
        .filter(|f| f.provider.is_some() && f.provider == bdf && f.accounting.own_cmb == 0)
        .count();
    if users > 0 {
        out.push(format!(
            "{users} flow(s) keep their buffer in {label}, so its own link carries each byte twice (in and out); the kernel picks at random among equally close providers, so a second provider on the same switch would take about half of them"
        ));
    }
    if let Some(l) = lanes(fabric, w, bn, "") {
        out.push(l);
    }
    if let Some(wb) = wo
        .bottleneck
        .as_ref()
        .filter(|x| x.kind == "link" && x.downstream != b.downstream)
    {
        if let Some(n) = fabric.nodes.iter().position(|n| {
            Some(&n.label) == wb.downstream.as_ref() && matches!(n.edge, Edge::Link { .. })
        }) {
            if let Some(l) = lanes(fabric, wo, n as u32, "without P2P, ") {
                out.push(l);
            }
        }
    }
    out
}

/// "More lanes on the bottleneck link": its maximum when it trained below it, else x16.
fn lanes(fabric: &Fabric, w: &super::Loading, bn: u32, prefix: &str) -> Option<String> {
    let b = w.bottleneck.as_ref()?;
    let label = &fabric.nodes[bn as usize].label;
    let above = fabric.parent_label(bn);
    let Edge::Link {
        speed: Some(s),
        max,
        ..
    } = fabric.nodes[bn as usize].edge
    else {
        return None;
    };
    let (m, why) = match max {
        Some(m) if m.capacity(1.0) > s.capacity(1.0) => (m, "its maximum, max_link"),
        _ if s.width < 16 => (
            LinkSpeed {
                gen: s.gen,
                width: 16,
            },
            "more lanes",
        ),
        _ => return None,
    };
    let ratio = m.capacity(1.0) / s.capacity(1.0);
    let others = w
        .links
        .iter()
        .filter(|l| l.downstream != *label)
        .filter_map(|l| l.utilisation)
        .chain(w.host_memory.iter().filter_map(|h| h.utilisation))
        .fold(0.0f64, f64::max);
    let new_max = others.max(b.utilisation / ratio);
    let new_scale = (new_max > 0.0).then(|| 1.0 / new_max);
    // Only when it helps: another link may saturate at nearly the same scale.
    if new_scale
        .zip(w.max_scale)
        .is_some_and(|(n, o)| n <= o * 1.01)
    {
        return None;
    }
    Some(format!(
        "{prefix}with {m} ({why}) instead of {s} on {above} -> {label}, all flows could scale by {} instead of {}",
        scale(new_scale),
        scale(w.max_scale)
    ))
}

/// The flows crossing the link above `bn`, and a sentence on those whose devices are
/// all below it (they leave the switch, and why).
fn leaving(fabric: &Fabric, plan: &Plan, bn: u32) -> (usize, Option<String>) {
    let label = &fabric.nodes[bn as usize].label;
    let mut on = 0usize;
    let mut inside = Vec::new();
    let mut reasons: Vec<(String, usize)> = Vec::new();
    for f in &plan.flows {
        let mut hit = false;
        for leg in &f.route.legs {
            walk_leg(fabric, leg, |n, _| hit |= n == bn);
        }
        if !hit {
            continue;
        }
        on += 1;
        let devs: Vec<u32> = f
            .route
            .legs
            .iter()
            .flat_map(|l| [l.from, l.to])
            .filter_map(|p| match p {
                Place::Dev(d) => Some(d),
                Place::Mem(_) => None,
            })
            .filter(|d| Some(*d) != f.route.legs.iter().find_map(|l| l.bar.map(|x| x.0)))
            .collect();
        if !devs.is_empty() && devs.iter().all(|d| below(fabric, *d, bn)) {
            let why = if f.path == "host_memory" {
                f.why.clone()
            } else if f.map_types.contains(&MapType::ThruHostBridge) {
                format!(
                    "P2P through the host bridge via {}",
                    f.provider.map(|p| p.to_string()).unwrap_or_default()
                )
            } else {
                format!(
                    "its provider {} is outside",
                    f.provider.map(|p| p.to_string()).unwrap_or_default()
                )
            };
            match reasons.iter_mut().find(|(r, _)| *r == why) {
                Some((_, n)) => *n += 1,
                None => reasons.push((why, 1)),
            }
            inside.push(f);
        }
    }
    if !inside.is_empty() {
        let bytes: u64 = inside.iter().map(|f| f.rate_bytes_per_s).sum();
        reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
        let why: Vec<String> = reasons
            .iter()
            .take(3)
            .map(|(r, n)| format!("{n}: {r}"))
            .collect();
        let what = match fabric.nodes[bn as usize].role {
            Some(Role::SwitchUpstream) => "the switch",
            _ => "this link",
        };
        let asked = reasons
            .iter()
            .all(|(r, _)| r == "via=host" || r.contains("p2pmem is 0"));
        let remedy = if asked {
            "they ask for host memory; via=auto (or the namespace's p2pmem=1) lets the kernel keep them inside".to_string()
        } else {
            format!("a published provider below {label} that the kernel accepts for both devices (no ACS redirect on the switch ports) would keep them inside")
        };
        return (
            on,
            Some(format!(
                "{} flow(s) ({}) have both devices below {label} yet leave {what} ({}); {remedy}",
                inside.len(),
                human_rate(bytes as f64),
                why.join("; ")
            )),
        );
    }
    (on, None)
}
