//! `[[ivshmem]]` in a topology: QEMU's `ivshmem-plain` (1af4:1110), a conventional PCI
//! device whose BAR 2 is a 64-bit prefetchable window onto host RAM (a
//! `memory-backend-ram` object). The `p2pmem_pci` driver publishes it as p2pmem: a
//! generic P2P provider that, unlike an emulated NVMe CMB, is fast under TCG (about
//! 2 GB/s against 65 MB/s).
//!
//! It sits on the root bus (`parent = "pcie.0"`, with a slot `addr`), alone on a root
//! port or switch downstream port, or as one `function` of a multi-function device next
//! to NVMe functions on such a port.

use serde::Deserialize;

use crate::machine::q35::ROOT_BUS;

/// Default size of the shared memory (BAR 2), in MiB.
pub const DEFAULT_SIZE_MB: u32 = 64;

/// One `ivshmem-plain` device.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ivshmem {
    /// QEMU id; its memory backend is `<id>-mem`.
    pub id: String,
    /// `pcie.0`, a root port or a switch downstream port.
    pub parent: String,
    /// Size of the shared memory, which is BAR 2's size: a power of two in MiB.
    #[serde(default = "default_size")]
    pub size_mb: u32,
    /// Slot on `pcie.0` (required there; not allowed on a port, where the device is at
    /// slot 0).
    #[serde(default)]
    pub addr: Option<u8>,
    /// PCI function (0-7) of a multi-function device on a port.
    #[serde(default)]
    pub function: Option<u8>,
    /// Free text.
    #[serde(default)]
    pub desc: String,
}

fn default_size() -> u32 {
    DEFAULT_SIZE_MB
}

impl Ivshmem {
    /// Checks the keys that do not depend on the rest of the topology; `i` is its index
    /// for the error's key name.
    pub fn check(&self, i: usize) -> Result<(), String> {
        let key = |k: &str| format!("key `ivshmem[{i}].{k}`");
        if !(1..=1024).contains(&self.size_mb) || !self.size_mb.is_power_of_two() {
            return Err(format!(
                "{}: {} must be a power of two in 1..=1024 (it is a BAR's size)",
                key("size_mb"),
                self.size_mb
            ));
        }
        if self.desc.contains(['\n', '\r']) {
            return Err(format!("{}: must be one line", key("desc")));
        }
        if let Some(f) = self.function {
            if f > 7 {
                return Err(format!(
                    "{}: {f} is not a PCI function number (0-7)",
                    key("function")
                ));
            }
        }
        match (self.parent == ROOT_BUS, self.addr, self.function) {
            (true, None, _) => Err(format!(
                "{}: required on pcie.0 (the device's slot, e.g. 0x8)",
                key("addr")
            )),
            (true, Some(_), Some(_)) => Err(format!(
                "{}: multi-function devices are only supported on a port",
                key("function")
            )),
            (false, Some(_), _) => Err(format!(
                "{}: only on pcie.0; on a port the device sits at slot 0 (use `function` to share it)",
                key("addr")
            )),
            _ => Ok(()),
        }
    }

    /// The QEMU arguments: the memory backend object and the device. `multi` marks
    /// function 0 of a multi-function device.
    pub fn qemu_args(&self, multi: bool) -> Vec<String> {
        let mut dev = format!(
            "ivshmem-plain,id={},memdev={}-mem,bus={}",
            self.id, self.id, self.parent
        );
        match (self.addr, self.function) {
            (Some(slot), _) => dev.push_str(&format!(",addr={slot:#x}")),
            (None, Some(f)) => {
                dev.push_str(&format!(",addr=0.{f}"));
                if f == 0 && multi {
                    dev.push_str(",multifunction=on");
                }
            }
            (None, None) => {}
        }
        vec![
            "-object".into(),
            format!(
                "memory-backend-ram,id={}-mem,size={}M",
                self.id, self.size_mb
            ),
            "-device".into(),
            dev,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shm(parent: &str, addr: Option<u8>, function: Option<u8>) -> Ivshmem {
        Ivshmem {
            id: "shm0".into(),
            parent: parent.into(),
            size_mb: 64,
            addr,
            function,
            desc: String::new(),
        }
    }

    #[test]
    fn root_bus_needs_a_slot_and_ports_refuse_one() {
        assert!(shm("pcie.0", Some(8), None).check(0).is_ok());
        assert!(shm("pcie.0", None, None)
            .check(0)
            .unwrap_err()
            .contains("ivshmem[0].addr"));
        assert!(shm("rp1", Some(8), None)
            .check(0)
            .unwrap_err()
            .contains("only on pcie.0"));
        assert!(shm("pcie.0", Some(8), Some(1)).check(0).is_err());
        assert!(shm("rp1", None, Some(2)).check(0).is_ok());
        assert!(shm("rp1", None, Some(8))
            .check(3)
            .unwrap_err()
            .contains("ivshmem[3].function"));
        let mut odd = shm("rp1", None, None);
        odd.size_mb = 48;
        assert!(odd.check(0).unwrap_err().contains("size_mb"));
    }

    #[test]
    fn qemu_args_name_the_backend_and_the_place() {
        assert_eq!(
            shm("pcie.0", Some(8), None).qemu_args(false),
            [
                "-object",
                "memory-backend-ram,id=shm0-mem,size=64M",
                "-device",
                "ivshmem-plain,id=shm0,memdev=shm0-mem,bus=pcie.0,addr=0x8"
            ]
        );
        assert_eq!(
            shm("rp3", None, Some(2)).qemu_args(true)[3],
            "ivshmem-plain,id=shm0,memdev=shm0-mem,bus=rp3,addr=0.2"
        );
        assert_eq!(
            shm("rp3", None, Some(0)).qemu_args(true)[3],
            "ivshmem-plain,id=shm0,memdev=shm0-mem,bus=rp3,addr=0.0,multifunction=on"
        );
        assert_eq!(
            shm("dn2", None, None).qemu_args(false)[3],
            "ivshmem-plain,id=shm0,memdev=shm0-mem,bus=dn2"
        );
    }
}
