//! QEMU argument generation matches, argument for argument, the commands that recorded
//! the ground truth in shared/truth (the truth files are read when present; the expected
//! argv of s01 is also spelled out here so the test never depends on them).

#![cfg(test)]

use std::path::Path;

use p2pmem_lab::machine::qemu_args::{qemu_args, qemu_script, MachineFiles};
use p2pmem_lab::machine::topology::Topology;

fn scratch_args(name: &str) -> Vec<String> {
    let topo = Topology::embedded(name).unwrap();
    let images = format!("$SCRATCH/img/{name}");
    qemu_args(
        &topo,
        &MachineFiles {
            kernel: Path::new("$SCRATCH/bzImage"),
            initrd: Path::new("$SCRATCH/build/initramfs.cpio.gz"),
            images: Path::new(&images),
            serial: "stdio",
        },
        None,
    )
}

/// The argv recorded in shared/truth/s01_switch_cmbmix_fam15/truth.json.
const S01: &str = "qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 1 -m 1024 -M q35 -nodefaults -no-reboot -display none -vga none -serial stdio -kernel $SCRATCH/bzImage -initrd $SCRATCH/build/initramfs.cpio.gz -append console=ttyS0~panic=-1 -device pcie-root-port,id=rp1,bus=pcie.0,addr=0x4,chassis=1,slot=0 -device x3130-upstream,id=up1,bus=rp1 -device xio3130-downstream,id=dn0,bus=up1,addr=0x0,chassis=2,slot=0 -device xio3130-downstream,id=dn1,bus=up1,addr=0x1,chassis=3,slot=0 -device xio3130-downstream,id=dn2,bus=up1,addr=0x2,chassis=4,slot=0 -drive file=$SCRATCH/img/s01_switch_cmbmix_fam15/swA.img,if=none,id=drv_swA,format=raw -device nvme,serial=swA,drive=drv_swA,bus=dn0,cmb_size_mb=16 -drive file=$SCRATCH/img/s01_switch_cmbmix_fam15/swB.img,if=none,id=drv_swB,format=raw -device nvme,serial=swB,drive=drv_swB,bus=dn1,cmb_size_mb=16 -drive file=$SCRATCH/img/s01_switch_cmbmix_fam15/swC.img,if=none,id=drv_swC,format=raw -device nvme,serial=swC,drive=drv_swC,bus=dn2 -device pcie-root-port,id=rp2,bus=pcie.0,addr=0x5,chassis=5,slot=0 -drive file=$SCRATCH/img/s01_switch_cmbmix_fam15/rpD.img,if=none,id=drv_rpD,format=raw -device nvme,serial=rpD,drive=drv_rpD,bus=rp2,cmb_size_mb=16 -device pxb-pcie,id=pxb1,bus_nr=0x80,bus=pcie.0,addr=0x10 -device pcie-root-port,id=rpx1,bus=pxb1,addr=0x0,chassis=6,slot=0 -drive file=$SCRATCH/img/s01_switch_cmbmix_fam15/pxE.img,if=none,id=drv_pxE,format=raw -device nvme,serial=pxE,drive=drv_pxE,bus=rpx1,cmb_size_mb=16";

#[test]
fn s01_args_match_the_recorded_command() {
    // `~` stands for the space inside the -append value.
    let expected: Vec<String> = S01.split(' ').map(|w| w.replace('~', " ")).collect();
    assert_eq!(scratch_args("s01_switch_cmbmix_fam15"), expected);
}

fn truth_args(scenario: &str) -> Option<Vec<String>> {
    let root = std::env::var("P2PMEM_SHARED")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures").to_string());
    let path = Path::new(&root)
        .join("truth")
        .join(scenario)
        .join("truth.json");
    let text = std::fs::read_to_string(&path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    Some(
        v["qemu_args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect(),
    )
}

#[test]
fn args_match_shared_truth_when_present() {
    let mut compared = 0;
    for scenario in ["s01_switch_cmbmix_fam15", "s05_multifunction_fam15"] {
        if let Some(expected) = truth_args(scenario) {
            assert_eq!(scratch_args(scenario), expected, "{scenario}");
            compared += 1;
        }
    }
    // shared/ sits beside the repo in every checkout this project runs in.
    assert_eq!(
        compared, 2,
        "fixtures/truth not found (scripts/import-truth); or set P2PMEM_SHARED"
    );
}

#[test]
fn cpu_override_and_cmdline() {
    let topo = Topology::embedded("multifunction_acs").unwrap();
    let files = MachineFiles {
        kernel: Path::new("k"),
        initrd: Path::new("i"),
        images: Path::new("img"),
        serial: "stdio",
    };
    let a = qemu_args(&topo, &files, Some("max,family=23"));
    let cpu = a.iter().position(|x| x == "-cpu").unwrap();
    assert_eq!(a[cpu + 1], "max,family=23");
    let ap = a.iter().position(|x| x == "-append").unwrap();
    assert_eq!(
        a[ap + 1],
        "console=ttyS0 panic=-1 pci=config_acs=11xx@0000:00:07.0"
    );
    assert!(!a.iter().any(|x| x.contains("kvm")));
    assert!(a.contains(
        &"nvme,serial=mfA,drive=drv_mfA,bus=rp1,addr=0.0,multifunction=on,cmb_size_mb=16"
            .to_string()
    ));
    assert!(
        a.contains(&"nvme,serial=mfB,drive=drv_mfB,bus=rp1,addr=0.1,cmb_size_mb=16".to_string())
    );
}

#[test]
fn nested_switch_chassis_numbers_are_unique() {
    let a = scratch_args("nested");
    let chassis: Vec<&str> = a
        .iter()
        .filter_map(|x| x.split(',').find(|p| p.starts_with("chassis=")))
        .collect();
    let unique: std::collections::HashSet<_> = chassis.iter().collect();
    assert_eq!(chassis.len(), 5);
    assert_eq!(unique.len(), 5);
    assert!(a.contains(&"x3130-upstream,id=up2,bus=dn0".to_string()));
}

#[test]
fn script_quotes_the_append_value() {
    let a = scratch_args("s01_switch_cmbmix_fam15");
    let s = qemu_script(&a, "test");
    assert!(s.starts_with("#!/bin/sh\n# test\nqemu-system-x86_64 \\\n  -accel tcg,thread=multi"));
    assert!(s.contains("  -append 'console=ttyS0 panic=-1' \\\n"));
    assert!(s.contains("  -device pcie-root-port,id=rp1,bus=pcie.0,addr=0x4,chassis=1,slot=0 \\\n"));
}

#[test]
fn an_iommu_is_the_first_device_and_moves_nothing_else() {
    for (with, without) in [
        ("rootports_iommu", "rootports_max"),
        ("switch_iommu", "switch"),
    ] {
        let a = scratch_args(with);
        let b = scratch_args(without);
        let first = a.iter().position(|x| x == "-device").unwrap();
        assert_eq!(a[first + 1], "intel-iommu,intremap=off", "{with}");
        let ap = a.iter().position(|x| x == "-append").unwrap();
        assert_eq!(a[ap + 1], "console=ttyS0 panic=-1 intel_iommu=on", "{with}");
        // Everything else is the same argv, the devices in the same order with the same
        // buses and addresses (so the same BDFs), image paths aside.
        let rest = |args: &[String], name: &str| -> Vec<String> {
            args.iter()
                .filter(|x| !x.starts_with("intel-iommu") && !x.starts_with("console="))
                .map(|x| x.replace(&format!("img/{name}/"), "img/"))
                .collect()
        };
        let mut a_rest = rest(&a, with);
        let first = a_rest.iter().position(|x| x == "-device").unwrap();
        a_rest.remove(first);
        assert_eq!(a_rest, rest(&b, without), "{with}");
    }
    assert!(!scratch_args("switch").iter().any(|x| x.contains("iommu")));
}

#[test]
fn a_nic_comes_last_and_is_wired_only_to_a_link() {
    let text = "cpu = \"max\"\n[[root_port]]\nid = \"rp1\"\naddr = 4\n[[nvme]]\nserial = \"a\"\nparent = \"rp1\"\n[nic]\naddr = 0x10\nmac = \"52:54:00:12:34:01\"\n";
    let topo = Topology::parse(text, Path::new("t.toml"), "t").unwrap();
    let files = MachineFiles {
        kernel: Path::new("k"),
        initrd: Path::new("i"),
        images: Path::new("img"),
        serial: "stdio",
    };
    let alone = qemu_args(&topo, &files, None);
    assert_eq!(
        alone.last().map(String::as_str),
        Some("e1000e,id=nic0,mac=52:54:00:12:34:01,bus=pcie.0,addr=0x10")
    );
    assert!(!alone.iter().any(|a| a == "-netdev"));
    let (link, _) = p2pmem_lab::machine::nic::NetLink::pair().unwrap();
    let linked = p2pmem_lab::machine::qemu_args::qemu_args_linked(&topo, &files, None, Some(&link));
    let n = linked.len();
    assert_eq!(linked[n - 4], "-netdev");
    assert_eq!(linked[n - 3], link.qemu_args()[1]);
    assert_eq!(
        linked[n - 1],
        "e1000e,id=nic0,mac=52:54:00:12:34:01,bus=pcie.0,addr=0x10,netdev=net0"
    );
    // Everything before the card is what the topology gives without one.
    assert_eq!(linked[..n - 4], alone[..alone.len() - 2]);
}
