//! Enforcers: each keeps one part of the host in its declared state (observe, plan, apply).

pub mod firewall;
