//! Running QEMU: the runner that watches the console and decodes the guest's frames as
//! they arrive, and [`lab::Lab::run_plan`], one guest run end to end.

pub mod lab;
pub mod parallel;
pub mod qemu;
pub mod qmp;
