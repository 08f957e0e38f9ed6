//! `bulwarkctl policy ...`.

use std::path::PathBuf;

use clap::Subcommand;

use super::CtlError;
use crate::policy::{self, Severity};

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Check policy files offline: syntax, fields, types, ranges, references between
    /// documents and contradictory rules. Every problem is printed as FILE:LINE:COL: PATH:
    /// MESSAGE; the exit status is 1 when there is any error.
    Validate {
        /// Files, or directories of *.yaml / *.yml files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

pub fn validate(paths: &[PathBuf]) -> Result<(), CtlError> {
    let sources = policy::read_paths(paths).map_err(CtlError::Io)?;
    let loaded = policy::load_sources(&sources, &[]);
    for d in &loaded.diagnostics {
        println!("{d}");
    }
    let errors = loaded.errors().count();
    let warnings = loaded.diagnostics.iter().filter(|d| d.severity == Severity::Warning).count();
    let summary = format!(
        "{} documents in {} files: {errors} errors, {warnings} warnings",
        loaded.documents.len(),
        sources.len()
    );
    if errors > 0 {
        return Err(CtlError::Usage(summary));
    }
    eprintln!("{summary}");
    Ok(())
}
