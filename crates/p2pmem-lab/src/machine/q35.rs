//! Facts of QEMU's q35 machine that the topology and the devices placed on it
//! (`ivshmem`, `qemu_args`) share. A leaf module: it imports nothing from the crate, so
//! `topology` and `ivshmem` can both use it without importing each other both ways.

/// The implicit PCIe root bus of the q35 machine.
pub const ROOT_BUS: &str = "pcie.0";
