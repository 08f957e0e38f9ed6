//! Binary login records, the supplement to the text sources: `btmp` (failed attempts, which
//! sshd and login(1) append to) and `wtmp` (sessions opened). Records are glibc's
//! `struct utmp`, 384 bytes on x86_64 and aarch64 (both keep 32-bit times in it):
//!
//! | offset | field | |
//! |---:|---|---|
//! | 0 | `ut_type` | i16 (+2 padding) |
//! | 4 | `ut_pid` | i32 |
//! | 8 | `ut_line` | 32 bytes, e.g. `ssh:notty`, `pts/0`, `tty1` |
//! | 40 | `ut_id` | 4 bytes |
//! | 44 | `ut_user` | 32 bytes |
//! | 76 | `ut_host` | 256 bytes, the remote address or display |
//! | 332 | `ut_exit` | 2 × i16 |
//! | 336 | `ut_session` | i32 |
//! | 340 | `ut_tv` | i32 seconds, i32 microseconds |
//! | 348 | `ut_addr_v6`, unused | 16 + 20 bytes |
//!
//! Pure and total: any bytes give records or nothing, never a panic.

use super::parse::Attempt;

/// The size of one record.
pub const RECORD: usize = 384;

/// `ut_type` of a session that was opened.
const USER_PROCESS: i16 = 7;

/// Which file the records come from, which says what they mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// btmp: every record is a failed attempt.
    Failed,
    /// wtmp: `USER_PROCESS` records are successful logins; the rest (logouts, boots,
    /// run levels) are not attempts.
    Sessions,
}

impl Kind {
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::Failed => "btmp",
            Kind::Sessions => "wtmp",
        }
    }
}

/// One record's fields that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: i16,
    pub line: String,
    pub user: String,
    pub host: String,
    pub time_ms: i64,
}

/// A login attempt read from a record, with the record's time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub time_ms: i64,
    pub attempt: Attempt,
}

/// The whole records in `buf` (a trailing partial record is left out).
pub fn records(buf: &[u8]) -> Vec<Record> {
    buf.chunks_exact(RECORD).map(record).collect()
}

fn record(r: &[u8]) -> Record {
    let i16_at = |o: usize| i16::from_ne_bytes([r[o], r[o + 1]]);
    let i32_at = |o: usize| i32::from_ne_bytes([r[o], r[o + 1], r[o + 2], r[o + 3]]);
    Record {
        kind: i16_at(0),
        line: text(&r[8..40]),
        user: text(&r[44..76]),
        host: text(&r[76..332]),
        time_ms: i64::from(i32_at(340)) * 1000 + i64::from(i32_at(344)) / 1000,
    }
}

/// A fixed-size C string field: up to its first NUL (or all of it), lossily decoded.
fn text(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).trim().to_owned()
}

/// The login attempt `record` of a `kind` file is, if any.
pub fn login(record: &Record, kind: Kind) -> Option<Login> {
    if record.user.is_empty() {
        return None;
    }
    let (success, reason) = match kind {
        Kind::Failed => (false, "recorded in btmp"),
        Kind::Sessions if record.kind == USER_PROCESS => (true, ""),
        Kind::Sessions => return None,
    };
    Some(Login {
        time_ms: record.time_ms,
        attempt: Attempt {
            service: service(&record.line, &record.host).into(),
            user: record.user.clone(),
            source: if record.host.is_empty() { record.line.clone() } else { record.host.clone() },
            port: String::new(),
            method: String::new(),
            success,
            reason: reason.into(),
        },
    })
}

/// The service a record's terminal line stands for: sshd writes `ssh:notty` for failures
/// and `pts/N` with the remote host for sessions; login(1) uses `ttyN`; display managers
/// a display (`:0`).
fn service(line: &str, host: &str) -> &'static str {
    if line.starts_with("ssh") || (line.starts_with("pts/") && !host.is_empty()) {
        "sshd"
    } else if line.starts_with(':') || host.starts_with(':') {
        "gdm"
    } else if line.starts_with("tty") {
        "login"
    } else {
        "pts"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as glibc lays it out.
    pub(crate) fn raw(kind: i16, line: &str, user: &str, host: &str, secs: i32) -> Vec<u8> {
        let mut r = vec![0u8; RECORD];
        r[0..2].copy_from_slice(&kind.to_ne_bytes());
        r[8..8 + line.len()].copy_from_slice(line.as_bytes());
        r[44..44 + user.len()].copy_from_slice(user.as_bytes());
        r[76..76 + host.len()].copy_from_slice(host.as_bytes());
        r[340..344].copy_from_slice(&secs.to_ne_bytes());
        r[344..348].copy_from_slice(&250_000i32.to_ne_bytes());
        r
    }

    #[test]
    fn btmp_records_are_failures_and_wtmp_sessions_successes() {
        let mut buf = raw(6, "ssh:notty", "rad", "198.18.0.9", 1_700_000_000);
        buf.extend(raw(7, "pts/0", "rad", "198.18.0.9", 1_700_000_001));
        buf.extend(raw(8, "pts/0", "", "", 1_700_000_002));
        buf.extend(raw(7, "tty1", "bob", "", 1_700_000_003));
        buf.extend([1, 2, 3]); // a record still being written
        let recs = records(&buf);
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[0].time_ms, 1_700_000_000_250);
        let failed = login(&recs[0], Kind::Failed).unwrap();
        assert_eq!(
            (
                failed.attempt.service.as_str(),
                failed.attempt.user.as_str(),
                failed.attempt.source.as_str(),
                failed.attempt.success
            ),
            ("sshd", "rad", "198.18.0.9", false)
        );
        let session = login(&recs[1], Kind::Sessions).unwrap();
        assert!(session.attempt.success && session.attempt.service == "sshd");
        assert_eq!(login(&recs[2], Kind::Sessions), None, "a logout is not an attempt");
        let local = login(&recs[3], Kind::Sessions).unwrap();
        assert_eq!(
            (local.attempt.service.as_str(), local.attempt.source.as_str()),
            ("login", "tty1")
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_taken_without_panic(buf in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            for r in records(&buf) {
                let _ = login(&r, Kind::Failed);
                let _ = login(&r, Kind::Sessions);
            }
        }
    }
}
