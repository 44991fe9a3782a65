//! Planner tests: routes on small designs, the worked example, and properties over
//! random flows (conservation, monotonicity, P2P never adds host-memory load).

use super::design::parse_design;
use super::fabric::{Fabric, Role};
use super::flow::{by_names, parse_flow, FlowSpec};
use super::synth::{self, Shape};
use super::*;
use proptest::prelude::*;

const BOX: &str = r#"
[system]
cpu = "intel"
kernel = "6.12"

[[host_bridge]]
name = "cpu0"

[[root_port]]
name = "rp0"
parent = "cpu0"

[[root_port]]
name = "rp1"
parent = "cpu0"

[[switch]]
name = "sw0"
parent = "rp0"
link = "gen4x4"

[[endpoint]]
name = "nvme"
count = 4
parent = "sw0"
link = "gen4x4"

[[endpoint]]
name = "cmb"
parent = "sw0"
link = "gen4x4"
p2pmem = true

[[endpoint]]
name = "far"
parent = "rp1"
link = "gen4x4"
"#;

fn run(text: &str, flows: &[&str]) -> (Plan, Fabric, design::Design) {
    let d = parse_design(text).unwrap();
    let fabric = Fabric::new(&d.topology, &d.facts);
    let fl: Vec<FlowSpec<Bdf>> = d
        .flows
        .iter()
        .cloned()
        .chain(flows.iter().map(|f| parse_flow(f).unwrap()))
        .map(|f| f.resolve(by_names(&d.names)).unwrap())
        .collect();
    let p = plan(&d.topology, &d.rules, &fabric, &fl, PlanOptions::default()).unwrap();
    (p, fabric, d)
}

fn link<'p>(p: &'p Loading, down: &str) -> &'p LinkLoad {
    p.links.iter().find(|l| l.downstream == down).unwrap()
}

#[test]
fn a_copy_through_a_switch_provider_stays_below_the_switch() {
    let (p, _, d) = run(BOX, &["nvme0:nvme1:rate=1G/s"]);
    let f = &p.flows[0];
    assert_eq!(f.path, "p2p");
    assert_eq!(f.provider, Some(d.names["cmb"]));
    assert_eq!(f.map_types, vec![MapType::BusAddr, MapType::BusAddr]);
    let g = 1u64 << 30;
    assert_eq!(link(&p.with_p2p, "nvme0").up_bytes_per_s, g);
    assert_eq!(link(&p.with_p2p, "cmb").down_bytes_per_s, g);
    assert_eq!(link(&p.with_p2p, "cmb").up_bytes_per_s, g);
    assert_eq!(link(&p.with_p2p, "nvme1").down_bytes_per_s, g);
    assert_eq!(link(&p.with_p2p, "sw0").up_bytes_per_s, 0);
    assert_eq!(p.with_p2p.host_memory_bytes_per_s, 0);
    // Without P2P: twice the payload through memory, both ways over the switch's link.
    assert_eq!(p.without_p2p.host_memory_bytes_per_s, 2 * g);
    let up = link(&p.without_p2p, "sw0");
    assert_eq!((up.up_bytes_per_s, up.down_bytes_per_s), (g, g));
    assert_eq!(p.p2p_saves_host_memory_bytes_per_s, 2 * g);
    // The lab's categories: 2x payload into and out of the provider's BAR.
    let (fig, dev) = p.dma_figures(0, 1 << 20).unwrap();
    assert_eq!(
        (
            fig.host_memory_bytes,
            fig.other_device_bytes,
            fig.own_cmb_bytes
        ),
        (0, 2 << 20, 0)
    );
    assert_eq!(dev[&d.names["cmb"].to_string()], 2 << 20);
}

#[test]
fn refused_p2p_bounces_and_named_own_cmb_counts_as_own() {
    // far is on another root port: Intel host bridge 8086:0000 is not whitelisted.
    let (p, _, d) = run(
        BOX,
        &[
            "nvme0:far:rate=1G/s",
            "nvme0:far:via=cmb:rate=1G/s",
            "cmb:nvme2:via=cmb",
        ],
    );
    assert_eq!(p.flows[0].path, "host_memory");
    assert!(
        p.flows[0].why.contains("no published provider"),
        "{}",
        p.flows[0].why
    );
    assert_eq!(p.flows[1].path, "host_memory");
    assert!(p.flows[1].why.contains("refuses"), "{}", p.flows[1].why);
    let (fig, _) = p.dma_figures(1, 100).unwrap();
    assert_eq!(fig.host_memory_bytes, 200);
    assert_eq!(fig.host_memory_per_payload_byte, Some(2.0));
    let (fig, dev) = p.dma_figures(2, 100).unwrap();
    assert_eq!((fig.own_cmb_bytes, fig.other_device_bytes), (100, 100));
    assert_eq!(dev[&d.names["cmb"].to_string()], 200);
    assert!(p.notes.iter().any(|n| n.contains("1G/s")));
}

#[test]
fn amd_zen_goes_through_the_host_bridge_and_acs_redirect_too() {
    let zen = BOX.replace("cpu = \"intel\"", "cpu = \"amd-zen\"");
    let (p, _, d) = run(&zen, &["nvme0:far:via=cmb:rate=1G/s"]);
    assert_eq!(p.flows[0].path, "p2p");
    assert_eq!(
        p.flows[0].map_types,
        vec![MapType::BusAddr, MapType::ThruHostBridge]
    );
    let g = 1u64 << 30;
    assert_eq!(link(&p.with_p2p, "sw0").up_bytes_per_s, g);
    assert_eq!(link(&p.with_p2p, "far").down_bytes_per_s, g);
    assert_eq!(p.with_p2p.host_memory_bytes_per_s, 0);
    let _ = d;
    // ACS redirect on the switch ports: P2P below the switch goes up to the host bridge.
    let acs = zen.replace(
        "link = \"gen4x4\"\n\n[[endpoint]]\nname = \"nvme\"",
        "link = \"gen4x4\"\nacs = \"redirect\"\n\n[[endpoint]]\nname = \"nvme\"",
    );
    assert!(acs.contains("redirect"));
    let (p, _, _) = run(&acs, &["nvme0:nvme1:via=cmb:rate=1G/s"]);
    assert_eq!(
        p.flows[0].map_types,
        vec![MapType::ThruHostBridge, MapType::ThruHostBridge]
    );
    let up = link(&p.with_p2p, "sw0");
    assert_eq!((up.up_bytes_per_s, up.down_bytes_per_s), (2 * g, 2 * g));
}

#[test]
fn ties_are_said_and_the_worst_is_planned() {
    let two = format!("{BOX}\n[[endpoint]]\nname = \"cmb2\"\nparent = \"sw0\"\nlink = \"gen3x1\"\np2pmem = true\n");
    let (p, _, d) = run(&two, &["nvme0:nvme1"]);
    let f = &p.flows[0];
    assert_eq!(f.tied.len(), 2);
    assert_eq!(
        f.provider,
        Some(d.names["cmb2"]),
        "the slower provider is the worst case"
    );
    assert!(f.why.contains("at random"));
}

#[test]
fn nvmet_flows_follow_the_namespace_setting() {
    let nic = format!("{BOX}\n[[endpoint]]\nname = \"nic\"\nkind = \"nic\"\nparent = \"sw0\"\nlink = \"gen4x16\"\n");
    let (p, _, d) = run(
        &nic,
        &[
            "nvmet:nic:nvme0",
            "nvmet:nic:nvme0:p2pmem=0",
            "nvmet:nic:nvme0:dir=read:p2pmem=cmb",
        ],
    );
    assert_eq!(p.flows[0].provider, Some(d.names["cmb"]));
    assert_eq!(p.flows[1].path, "host_memory");
    assert_eq!(p.flows[2].provider, Some(d.names["cmb"]));
    let g = 1u64 << 30;
    // Writes: the NIC sends (into cmb, into memory); the read: cmb to the NIC.
    assert_eq!(link(&p.with_p2p, "nic").up_bytes_per_s, 2 * g);
    assert_eq!(link(&p.with_p2p, "nic").down_bytes_per_s, g);
    assert_eq!(p.with_p2p.host_memory_bytes_per_s, 2 * g);
}

#[test]
fn bottleneck_and_max_scale_and_lanes() {
    let wide = BOX.replacen("link = \"gen4x4\"", "link = \"gen4x16\"", 1);
    let (p, _, _) = run(&wide, &["nvme0:far:rate=1G/s", "nvme1:far:rate=1G/s"]);
    let b = p.with_p2p.bottleneck.as_ref().unwrap();
    // far's x4 link carries 2 GiB/s down.
    assert_eq!(b.downstream.as_deref(), Some("far"));
    let cap = "gen4x4".parse::<link::LinkSpeed>().unwrap().capacity(0.85);
    let want = cap / (2.0 * (1u64 << 30) as f64);
    assert!((p.with_p2p.max_scale.unwrap() - want).abs() < 1e-9);
    assert!(
        p.suggestions.iter().any(|s| s.contains("gen4x16")),
        "{:?}",
        p.suggestions
    );
}

/// A count is bounded before anything is made of it: four billion NVMe fail at once,
/// naming the entry and the bound, instead of exhausting memory.
#[test]
fn a_huge_count_is_refused_before_it_is_expanded() {
    let text = "[[host_bridge]]\nname = \"cpu\"\n[[root_port]]\nname = \"rp\"\nparent = \"cpu\"\n\
                [[endpoint]]\nname = \"nvme\"\nparent = \"rp\"\ncount = 4000000000\n";
    let e = parse_design(text).unwrap_err();
    assert!(e.to_string().contains("nvme: count 4000000000"), "{e}");
    assert!(e.to_string().contains("65536"), "{e}");
    assert_eq!(e.line, Some(7), "{e}");
}

#[test]
fn design_errors_name_the_line() {
    let e = parse_design("[system]\ncpu = 3\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    let e = parse_design(&BOX.replace("parent = \"rp1\"", "parent = \"rp9\"")).unwrap_err();
    assert!(e.to_string().contains("rp9"), "{e}");
    assert!(e.line.is_some());
    let e = parse_design(&BOX.replace("gen4x4", "gen9x4")).unwrap_err();
    assert!(e.to_string().contains("gen9x4"), "{e}");
    let e = parse_design(
        "[[switch]]\nname = \"a\"\nparent = \"b\"\n[[switch]]\nname = \"b\"\nparent = \"a\"\n",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("not a root port") || e.to_string().contains("cycle"),
        "{e}"
    );
    let e = parse_design("[[bogus]]\n").unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    let two = BOX.replace(
        "name = \"far\"\nparent = \"rp1\"",
        "name = \"far\"\nparent = \"rp0\"",
    );
    assert!(parse_design(&two)
        .unwrap_err()
        .to_string()
        .contains("one link"));
}

#[test]
fn design_roles_and_links_come_out_right() {
    let d = parse_design(BOX).unwrap();
    let f = Fabric::new(&d.topology, &d.facts);
    let sw = f.node(&d.names["sw0"]).unwrap();
    assert_eq!(f.nodes[sw as usize].role, Some(Role::SwitchUpstream));
    assert_eq!(d.topology.functions().count(), 1 + 2 + 1 + 5 + 5 + 1);
}

/// The switch's ports: its upstream port and downstream ports.
fn switch_balance(fabric: &Fabric, l: &Loading) {
    for (i, n) in fabric.nodes.iter().enumerate() {
        if n.role != Some(Role::SwitchUpstream) {
            continue;
        }
        let (up, down) = l.node_load(i as u32).unwrap();
        let (mut inn, mut out) = (down, up);
        for (j, dp) in fabric.nodes.iter().enumerate() {
            if dp.parent != Some(i as u32) {
                continue;
            }
            for (k, c) in fabric.nodes.iter().enumerate() {
                if c.parent == Some(j as u32) {
                    let (u, d) = l.node_load(k as u32).unwrap();
                    inn += u;
                    out += d;
                }
            }
        }
        assert!(
            (inn - out).abs() < 1e-3,
            "switch {}: in {inn} out {out}",
            n.label
        );
    }
}

fn small() -> (design::Design, Fabric, Vec<FlowSpec<Bdf>>) {
    let shape = Shape {
        endpoints: 96,
        per_switch: 8,
        flows: 40,
        seed: 3,
    };
    let d = parse_design(&synth::design(shape)).unwrap();
    let f = Fabric::new(&d.topology, &d.facts);
    let flows = flow::parse_flows(&synth::flows(shape))
        .unwrap()
        .iter()
        .map(|x| x.resolve(by_names(&d.names)).unwrap())
        .collect();
    (d, f, flows)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_byte_into_a_switch_leaves_it(pick in proptest::collection::vec(0usize..40, 1..30), zen in any::<bool>()) {
        let (mut d, f, flows) = small();
        if zen {
            d.rules.cpu.vendor_id = Some("AuthenticAMD".into());
            d.rules.cpu.family = Some(0x19);
        }
        let chosen: Vec<_> = pick.iter().map(|i| flows[*i].clone()).collect();
        let p = plan(&d.topology, &d.rules, &f, &chosen, PlanOptions::default()).unwrap();
        switch_balance(&f, &p.with_p2p);
        switch_balance(&f, &p.without_p2p);
    }

    #[test]
    fn adding_a_flow_never_lowers_a_link(pick in proptest::collection::vec(0usize..40, 1..20), extra in 0usize..40) {
        let (d, f, flows) = small();
        let base: Vec<_> = pick.iter().map(|i| flows[*i].clone()).collect();
        let mut more = base.clone();
        more.push(flows[extra].clone());
        let a = plan(&d.topology, &d.rules, &f, &base, PlanOptions::default()).unwrap();
        let b = plan(&d.topology, &d.rules, &f, &more, PlanOptions::default()).unwrap();
        for (x, y) in a.with_p2p.links.iter().zip(&b.with_p2p.links) {
            prop_assert!(y.up_bytes_per_s >= x.up_bytes_per_s && y.down_bytes_per_s >= x.down_bytes_per_s);
        }
        prop_assert!(b.with_p2p.host_memory_bytes_per_s >= a.with_p2p.host_memory_bytes_per_s);
    }

    #[test]
    fn p2p_never_raises_host_memory_load(pick in proptest::collection::vec(0usize..40, 1..30)) {
        let (d, f, flows) = small();
        let chosen: Vec<_> = pick.iter().map(|i| flows[*i].clone()).collect();
        let p = plan(&d.topology, &d.rules, &f, &chosen, PlanOptions::default()).unwrap();
        prop_assert!(p.with_p2p.host_memory_bytes_per_s <= p.without_p2p.host_memory_bytes_per_s);
        for fl in &p.flows {
            prop_assert!(fl.accounting.host_memory == 0 || fl.path == "host_memory");
        }
    }
}

#[test]
fn the_benchmark_design_reads_and_plans() {
    let shape = Shape {
        flows: 500,
        ..Shape::BENCH
    };
    let d = parse_design(&synth::design(shape)).unwrap();
    let endpoints = d
        .topology
        .functions()
        .filter(|f| !f.is_bridge() && f.class != 0x060000)
        .count();
    assert!(endpoints >= 4096, "{endpoints}");
    let f = Fabric::new(&d.topology, &d.facts);
    let flows: Vec<_> = flow::parse_flows(&synth::flows(shape))
        .unwrap()
        .iter()
        .map(|x| x.resolve(by_names(&d.names)).unwrap())
        .collect();
    let p = plan(&d.topology, &d.rules, &f, &flows, PlanOptions::default()).unwrap();
    assert_eq!(p.flows.len(), 500);
    assert!(p.flows.iter().any(|f| f.path == "p2p"));
    assert!(p.with_p2p.max_scale.is_some());
}

#[test]
fn two_hosts_in_one_design_keep_their_memory_apart() {
    let text = include_str!("../../../../examples/designs/nvmeof-two-hosts.toml");
    let (p, _, d) = run(text, &[]);
    assert_eq!(p.flows.len(), 3);
    assert_eq!(p.flows[0].provider, Some(d.names["p2pcard"]));
    let g = 1u64 << 30;
    let mem = |l: &Loading, h: &str| {
        l.host_memory
            .iter()
            .find(|m| m.host == h)
            .unwrap()
            .bytes_per_s
    };
    // The initiator's buffers: every payload byte once.
    assert_eq!(mem(&p.with_p2p, "initiator"), 8 * g);
    // The target: only the p2pmem=0 read bounces (twice its 2 GiB/s).
    assert_eq!(mem(&p.with_p2p, "target"), 4 * g);
    assert_eq!(mem(&p.without_p2p, "target"), 16 * g);
    // The lab's categories for an nvmet flow through the card: NIC in, NVMe out.
    let (fig, _) = p.dma_figures(0, 1000).unwrap();
    assert_eq!(
        (fig.host_memory_bytes, fig.other_device_bytes),
        (1000, 2000)
    );
}

#[test]
fn nvmet_tcp_bounces_through_the_targets_memory_whatever_p2pmem_says() {
    let text = include_str!("../../../../examples/designs/lab-two-hosts-tcp.toml");
    let (p, _, d) = run(text, &[]);
    let f = &p.flows[0];
    assert_eq!(
        (f.kind, f.transport, f.path),
        ("nvmet", Some("tcp"), "host_memory")
    );
    assert_eq!(f.provider, None);
    assert!(f.why.contains("TCP ports never use p2pmem"), "{}", f.why);
    let mem = |l: &Loading, h: &str| {
        l.host_memory
            .iter()
            .find(|m| m.host == h)
            .unwrap()
            .bytes_per_s
    };
    let m = 1u64 << 20;
    // Target: NIC into memory, memory out to the NVMe. Initiator: its NIC reads memory.
    assert_eq!(mem(&p.with_p2p, "target"), 2 * m);
    assert_eq!(mem(&p.with_p2p, "initiator"), m);
    assert_eq!(p.p2p_saves_host_memory_bytes_per_s, 0);
    assert_eq!(f.accounting.host_memory, 3);
    assert!(f.accounting.devices.is_empty());
    // The same namespace over rdma with p2pmem=1, on a Zen host (whose host bridge
    // forwards P2P between the root ports), would use its own CMB: no bounce.
    let rdma = text
        .replace("transport=tcp:", "")
        .replace("cpu = \"amd-pre-zen\"", "cpu = \"amd-zen\"");
    let (p, _, _) = run(&rdma, &[]);
    assert_eq!(p.flows[0].transport, Some("rdma"));
    assert_eq!(p.flows[0].provider, Some(d.names["tgtA"]));
    assert_eq!(mem(&p.with_p2p, "target"), 0);
}

#[test]
fn functions_of_one_device_share_its_link() {
    use crate::topology::tests::{bdf, func};
    use crate::topology::{P2pmemInfo, Topology};
    let mut f0 = func(&["00:06.0", "06:00.0"], Some(0), None);
    f0.p2pmem = Some(P2pmemInfo {
        size: Some(1 << 24),
        available: Some(1 << 24),
        published: Some(true),
    });
    let topo = Topology::new(vec![
        func(&["00:00.0"], None, None),
        func(&["00:06.0"], Some(4), Some(0)),
        f0,
        func(&["00:06.0", "06:00.1"], Some(0), None),
    ])
    .unwrap();
    let rules = crate::distance::Rules {
        kernel: crate::kernel_version::KernelVersion::new(6, 12, 0),
        cpu: crate::cpu::CpuInfo::default(),
    };
    let facts = fabric::FabricFacts {
        link_default: Some("gen3x4".parse().unwrap()),
        ..Default::default()
    };
    let f = Fabric::new(&topo, &facts);
    let flows: Vec<FlowSpec<Bdf>> = ["06:00.1:06:00.0:via=06:00.0", "06:00.1:06:00.0:via=host"]
        .iter()
        .map(|s| {
            parse_flow(s)
                .unwrap()
                .resolve(|d| match d {
                    flow::DeviceRef::Bdf(b) => Ok(*b),
                    flow::DeviceRef::Name(n) => Err(n.clone()),
                })
                .unwrap()
        })
        .collect();
    let p = plan(&topo, &rules, &f, &flows[..1], PlanOptions::default()).unwrap();
    assert_eq!(
        p.with_p2p.links.len(),
        1,
        "one physical link for the two functions"
    );
    let l = &p.with_p2p.links[0];
    assert_eq!(
        (l.up_bytes_per_s, l.down_bytes_per_s),
        (0, 0),
        "inside the device"
    );
    let p = plan(&topo, &rules, &f, &flows[1..], PlanOptions::default()).unwrap();
    let l = &p.with_p2p.links[0];
    assert_eq!(l.downstream_bdf, Some(bdf("06:00.0")));
    assert_eq!((l.up_bytes_per_s, l.down_bytes_per_s), (1 << 30, 1 << 30));
}

#[test]
fn an_acs_refusal_names_its_fix() {
    let acs = BOX.replace(
        "link = \"gen4x4\"\n\n[[endpoint]]\nname = \"nvme\"",
        "link = \"gen4x4\"\nacs = \"redirect\"\n\n[[endpoint]]\nname = \"nvme\"",
    );
    let (p, _, _) = run(&acs, &["nvme0:nvme1"]);
    let f = &p.flows[0];
    assert_eq!(f.path, "host_memory");
    assert!(f.why.contains("pci=disable_acs_redir="), "{}", f.why);
}
