//! The Bulwark host agent: enforcers (firewall, password policy, wireless) and monitors
//! (new users, logins) that keep a workstation or modality host in its declared state.

pub mod enforce;
pub mod host;
