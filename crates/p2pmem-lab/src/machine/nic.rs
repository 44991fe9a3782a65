//! A guest's network card and the wire between two guests. A topology's `[nic]` puts
//! QEMU's `e1000e` on `pcie.0` at a fixed slot and MAC address (so the guest's
//! `eth0` and BDF are deterministic); [`NetLink`] joins two guests' cards with QEMU's
//! `socket` netdev in its UDP form (each QEMU sends its frames to the other's port), so
//! neither has to start first and nothing on the host is routed. The guests' IP
//! addresses are theirs to set (a plan step).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use serde::Deserialize;

use crate::machine::q35::ROOT_BUS;

/// The netdev id the card is wired to.
pub const NETDEV_ID: &str = "net0";

/// A network card on `pcie.0`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// The QEMU model.
    #[serde(default)]
    pub model: NicModel,
    /// Slot on `pcie.0`: `addr = 0x10` is `0000:00:10.0` in the guest.
    pub addr: u8,
    /// MAC address, `52:54:00:xx:xx:xx` style: six hex octets, unicast.
    pub mac: String,
}

/// QEMU network card models the lab kernel has a driver for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    /// Intel 82574L (`CONFIG_E1000E`), a PCIe endpoint.
    #[default]
    E1000e,
}

impl NicModel {
    /// QEMU's device name.
    pub fn qemu_device(self) -> &'static str {
        match self {
            NicModel::E1000e => "e1000e",
        }
    }
}

impl Nic {
    /// Checks the MAC address (the slot is checked with the other slots).
    pub fn check(&self) -> Result<(), String> {
        let octets: Vec<&str> = self.mac.split(':').collect();
        let hex = octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
        if octets.len() != 6 || !hex {
            return Err(format!(
                "key `nic.mac`: {:?} is not a MAC address (six hex octets, e.g. \"52:54:00:12:34:01\")",
                self.mac
            ));
        }
        let first = u8::from_str_radix(octets[0], 16).unwrap_or(1);
        if first & 1 == 1 {
            return Err(format!(
                "key `nic.mac`: {:?} is a multicast address",
                self.mac
            ));
        }
        Ok(())
    }

    /// The `-device` value; wired to [`NETDEV_ID`] when `linked`, else without a peer.
    pub fn qemu_device(&self, linked: bool) -> String {
        let mut s = format!(
            "{},id=nic0,mac={},bus={ROOT_BUS},addr={:#x}",
            self.model.qemu_device(),
            self.mac,
            self.addr
        );
        if linked {
            s.push_str(&format!(",netdev={NETDEV_ID}"));
        }
        s
    }
}

/// One end of a point-to-point wire between two guests: this QEMU's UDP port and the
/// peer's, both on the host's loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetLink {
    /// Where this QEMU receives.
    pub local: SocketAddrV4,
    /// Where it sends.
    pub peer: SocketAddrV4,
}

impl NetLink {
    /// Two ends of one wire, on two UDP ports the host had free: each is bound on
    /// 127.0.0.1 port 0 (the kernel picks) and released just before QEMU binds it.
    pub fn pair() -> std::io::Result<(NetLink, NetLink)> {
        let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = |s: &UdpSocket| s.local_addr().map(|a| a.port());
        let (pa, pb) = (port(&a)?, port(&b)?);
        let at = |p| SocketAddrV4::new(Ipv4Addr::LOCALHOST, p);
        Ok((
            NetLink {
                local: at(pa),
                peer: at(pb),
            },
            NetLink {
                local: at(pb),
                peer: at(pa),
            },
        ))
    }

    /// The `-netdev` argument pair.
    pub fn qemu_args(&self) -> [String; 2] {
        [
            "-netdev".to_string(),
            format!(
                "socket,id={NETDEV_ID},udp={},localaddr={}",
                self.peer, self.local
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(mac: &str) -> Nic {
        Nic {
            model: NicModel::E1000e,
            addr: 0x10,
            mac: mac.into(),
        }
    }

    #[test]
    fn macs_are_checked() {
        assert!(nic("52:54:00:12:34:01").check().is_ok());
        assert!(nic("52:54:00:12:34").check().is_err());
        assert!(nic("52:54:00:12:34:zz").check().is_err());
        assert!(nic("01:00:5e:00:00:01")
            .check()
            .unwrap_err()
            .contains("multicast"));
    }

    #[test]
    fn the_device_is_wired_only_when_linked() {
        let n = nic("52:54:00:12:34:01");
        assert_eq!(
            n.qemu_device(false),
            "e1000e,id=nic0,mac=52:54:00:12:34:01,bus=pcie.0,addr=0x10"
        );
        assert!(n.qemu_device(true).ends_with(",netdev=net0"));
    }

    #[test]
    fn the_two_ends_of_a_wire_point_at_each_other() {
        let (a, b) = NetLink::pair().unwrap();
        assert_eq!((a.local, a.peer), (b.peer, b.local));
        assert_ne!(a.local.port(), a.peer.port());
        let [k, v] = a.qemu_args();
        assert_eq!(k, "-netdev");
        assert_eq!(
            v,
            format!(
                "socket,id=net0,udp=127.0.0.1:{},localaddr=127.0.0.1:{}",
                a.peer.port(),
                a.local.port()
            )
        );
    }
}
