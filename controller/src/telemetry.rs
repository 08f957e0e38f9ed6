//! Logging for both binaries: `BULWARK_LOG` (an EnvFilter, default `info`) and
//! `BULWARK_LOG_FORMAT=json|plain` (default plain), to stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_env("BULWARK_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let json = std::env::var("BULWARK_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    // `try_init` fails only when a subscriber is already set (tests); keep that one.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
