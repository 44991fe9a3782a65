//! Planning for the NVMe target (nvmet) as configured through configfs: its configuration
//! as data, the pre-flight of a namespace's `p2pmem` setting, which provider each RDMA
//! controller would get, and the ordered configfs steps that turn one configuration into
//! another.
//!
//! The kernel places nvmet data buffers in P2P memory per namespace
//! (`subsystems/<nqn>/namespaces/<nsid>/p2pmem`), checks the setting when the namespace is
//! enabled (`nvmet_p2pmem_ns_enable`) and chooses a provider per controller when a host
//! connects (`nvmet_p2pmem_ns_add_p2p`); only nvmet-rdma passes a P2P client. Everything
//! here is pure: the Linux layer reads configfs and sysfs and hands the facts over.

pub mod config;
pub mod connections;
pub mod facts;
pub mod ports;
pub mod preflight;
pub mod restore;

pub use config::{ConfigError, Namespace, Port, SavedConfig, Subsystem, TargetConfig};
pub use connections::{guard, Blocked, Connected, Connections};
pub use facts::{BlockDriver, Transport};
pub use ports::{plan_target, PortFacts, PortPlan, RdmaDevice, TargetPlan};
pub use preflight::{BackingFacts, EnableOutcome, Env, NsPreflight};
pub use restore::{plan_restore, Step};

#[cfg(test)]
mod tests;
