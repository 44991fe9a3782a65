//! Synthetic designs for tests and benchmarks: many host bridges, each root port with
//! one switch, each switch with NVMe, one p2pmem device (a published provider) and one
//! RDMA NIC; and random flows over them, reproducible from a seed.

use std::fmt::Write;

/// The size of a synthetic design and its flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Endpoints in all (rounded up to whole switches).
    pub endpoints: usize,
    /// Endpoints per switch (one provider and one NIC among them); at most 32.
    pub per_switch: usize,
    /// Flows.
    pub flows: usize,
    /// Seed of the flows.
    pub seed: u64,
}

impl Shape {
    /// Issue 16's scale: 4,096 devices and 10,000 flows.
    pub const BENCH: Self = Self {
        endpoints: 4096,
        per_switch: 16,
        flows: 10_000,
        seed: 16,
    };

    fn switches(&self) -> usize {
        self.endpoints.div_ceil(self.per_switch.clamp(3, 32))
    }
}

/// Switches per host bridge: each takes 2 + per_switch buses of the 255.
fn per_host_bridge(per_switch: usize) -> usize {
    (255 / (2 + per_switch)).max(1)
}

/// The design text.
pub fn design(shape: Shape) -> String {
    let per = shape.per_switch.clamp(3, 32);
    let switches = shape.switches();
    let hbs = switches.div_ceil(per_host_bridge(per));
    let mut t = String::from("[system]\ncpu = \"intel\"\nkernel = \"6.12\"\n\n");
    for h in 0..hbs {
        let _ = writeln!(t, "[[host_bridge]]\nname = \"hb{h}\"\n");
    }
    for s in 0..switches {
        let h = s / per_host_bridge(per);
        let _ = writeln!(
            t,
            "[[root_port]]\nname = \"rp{s}\"\nparent = \"hb{h}\"\n\n[[switch]]\nname = \"sw{s}\"\nparent = \"rp{s}\"\nlink = \"gen4x16\"\n\n[[endpoint]]\nname = \"s{s}n\"\ncount = {}\nparent = \"sw{s}\"\nlink = \"gen4x4\"\n\n[[endpoint]]\nname = \"s{s}p\"\nkind = \"memory\"\np2pmem = true\nparent = \"sw{s}\"\nlink = \"gen4x8\"\n\n[[endpoint]]\nname = \"s{s}nic\"\nkind = \"nic\"\nparent = \"sw{s}\"\nlink = \"gen4x16\"\n",
            per - 2
        );
    }
    t
}

/// A small linear congruential generator (reproducible, no dependency).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

/// Flows over [`design`]'s devices, one per line: 60% copies within a switch, 30%
/// across the fabric, 10% nvmet flows from a switch's NIC to any NVMe.
pub fn flows(shape: Shape) -> String {
    let per = shape.per_switch.clamp(3, 32);
    let nvme = per - 2;
    let switches = shape.switches();
    let mut r = Lcg(shape.seed);
    let mut t = String::new();
    for _ in 0..shape.flows {
        let rate = 64 << r.below(5);
        let s = r.below(switches);
        let a = r.below(nvme);
        match r.below(10) {
            0..=5 => {
                let b = (a + 1 + r.below(nvme - 1)) % nvme;
                let _ = writeln!(t, "s{s}n{a}:s{s}n{b}:rate={rate}M/s");
            }
            6..=8 => {
                let s2 = r.below(switches);
                let b = r.below(nvme);
                let _ = writeln!(t, "s{s}n{a}:s{s2}n{b}:rate={rate}M/s");
            }
            _ => {
                let s2 = r.below(switches);
                let _ = writeln!(t, "nvmet:s{s}nic:s{s2}n{a}:rate={rate}M/s");
            }
        }
    }
    t
}
