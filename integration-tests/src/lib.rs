//! The Bulwark lab: real controller processes with test certificates on 127.0.0.1 or in a
//! network lab of namespaces, and helpers to wait on them. The end-to-end tests live in `tests/it/`.

pub mod agentproc;
pub mod agents;
pub mod certs;
pub mod cluster;
pub mod ctl;
pub mod etcd;
pub mod http;
pub mod loadgen;
pub mod netlab;
pub mod wait;

pub use cluster::{Cluster, ClusterOptions};
pub use netlab::{Lab, LabHost};
pub use wait::eventually;
