//! The report as CSV: a header, then one row per (host, control) that applies, with the
//! status and the reason.

use super::ComplianceReport;

/// The header row.
pub const HEADER: [&str; 8] =
    ["host_id", "hostname", "site", "class", "framework", "control", "status", "reason"];

/// Renders `report.results` as CSV (RFC 4180 quoting, via the `csv` crate).
pub fn render(report: &ComplianceReport) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(HEADER)?;
    for r in &report.results {
        w.write_record([
            r.host_id.as_str(),
            &r.hostname,
            &r.site,
            &r.class,
            r.framework.name(),
            &r.control,
            r.status.name(),
            &r.reason,
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}
