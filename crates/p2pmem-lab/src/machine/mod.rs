//! The machine described: a PCIe topology in TOML, its `ivshmem` devices and network
//! card, the q35 facts
//! they sit on, the disk images, and the QEMU command line that builds it all.

mod disk;
mod ivshmem;
pub mod nic;
mod q35;
pub mod qemu_args;
pub mod topology;

pub(crate) use disk::create_images;
