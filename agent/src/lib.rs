//! The Bulwark host agent: syncs its desired state from the controllers over mutual TLS,
//! keeps the last one on disk and enforces it (firewall, password policy, and later
//! wireless), repairs drift, monitors accounts and logins, and reports status and events
//! back.

pub mod cache;
pub mod enforce;
pub mod enroll;
pub mod host;
pub mod identity;
pub mod metrics;
pub mod monitor;
pub mod run;
pub mod sync;
