//! The Bulwark host agent: enforcers (firewall, password policy, wireless) and monitors
//! (new users, logins) that keep a workstation or modality host in its declared state.
//!
//! Not built yet: the agent issues (agent core and firewall; host enforcers and monitors)
//! fill this crate in. It is part of the workspace now so the layout and lints are fixed.
