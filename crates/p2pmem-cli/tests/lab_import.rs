//! Lab tier: a bug report's `lspci -D -vvv -xxxx`, made in the guest by Debian's lspci
//! (the plan asks for `/usr/bin/lspci`, which goes into the initramfs with its libraries,
//! and `pci.ids`), imported with `p2pmem import lspci` and the facts lspci cannot show
//! (the kernel release, the CPU, the providers), decides every provider-client pair as
//! the sysfs capture of the same boot does, on every embedded topology: the same
//! `topo --matrix` cells, and the same `check` decision for every pair.

#![cfg(test)]

mod import_common;
mod lab_common;

use import_common::import_decides_alike;

use p2pmem_lab::machine::topology::EMBEDDED;
use p2pmem_wire::plan::{Plan, Step};

fn plan() -> Plan {
    let mut p = Plan::new();
    p.host_file("/usr/bin/lspci");
    p.host_file("/usr/share/misc/pci.ids");
    p.step("capture", Step::Capture);
    p.exec("lspci", &["lspci", "-D", "-vvv", "-xxxx"]);
    p
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn lspci_made_in_the_guest_imports_to_the_verdicts_of_the_sysfs_capture_on_every_topology() {
    use p2pmem_lab::run::parallel;
    let names: Vec<&str> = EMBEDDED.iter().map(|(n, _)| *n).collect();
    // Each worker compares its guest's capture and import (a few hundred `p2pmem`
    // processes on the host) as soon as that guest is done, while others boot.
    let pairs: usize = parallel::map_ordered(&names, parallel::guests_at_once(), |name| {
        let run = lab_common::run_plan(name, None, &plan());
        let lspci = run.exec("lspci").expect("lspci ran");
        assert_eq!(lspci.exit, Some(0), "{name}: {lspci:?}");
        let work = tempfile::tempdir().unwrap();
        let captured = work.path().join("capture");
        p2pmem_lab::run::lab::unpack_tar(run.attachment("capture").unwrap(), &captured).unwrap();
        let root = captured.join("root");
        let root = if root.is_dir() {
            root
        } else {
            captured.clone()
        };
        let text = work.path().join("lspci.txt");
        std::fs::write(&text, &lspci.stdout).unwrap();
        import_decides_alike(&text, &root, work.path())
    })
    .into_iter()
    .sum();
    eprintln!("{pairs} pairs alike on {} topologies", EMBEDDED.len());
    assert!(pairs > 0);
}
