//! The login audit: every login attempt on the host, success or not, from the journal
//! and/or auth log files, as `login` events (fields `user`, `service`, `source`, `method`,
//! `success` = "true"/"false", `reason`, `host`), and a `brute-force` event (NIST AC-7)
//! when `brute_force_threshold` failures for one user or from one source fall within
//! `brute_force_window_seconds` — one per window, not one per failure. Events are spooled
//! with the source's position in one transaction, so a restart neither misses nor
//! repeats a line.
//!
//! btmp and wtmp are a supplement: sshd and login(1) write a record for most attempts
//! they also log, so a record becomes an event only when no text source reported the same
//! attempt (same user and outcome, compatible source, within [`MATCH_WITHIN_MS`]). Records
//! wait [`HOLD`] before they are judged, so the text sources can catch up; on a host
//! without a journal or auth log (a minimal modality image) they are the login audit.

pub mod parse;
pub mod source;
#[cfg(test)]
mod tests;
pub mod utmp;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bulwark_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use self::parse::{Attempt, Line, Raw};
use self::source::{Batch, Source};
use self::utmp::Login;
use super::EventSink;
use crate::enforce::reconcile::now_ms;
use crate::host::Host;

pub const NAME: &str = "logins";

/// A login attempt, as shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginEvent {
    pub time_ms: i64,
    pub host: String,
    pub attempt: Attempt,
}

impl LoginEvent {
    pub fn fields(&self) -> HashMap<String, String> {
        let a = &self.attempt;
        [
            ("user", a.user.clone()),
            ("service", a.service.clone()),
            ("source", a.source.clone()),
            ("method", a.method.clone()),
            ("success", a.success.to_string()),
            ("reason", a.reason.clone()),
            ("host", self.host.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    pub fn summary(&self) -> String {
        let a = &self.attempt;
        format!(
            "{} {} login for {} from {}{}",
            a.service,
            if a.success { "successful" } else { "failed" },
            if a.user.is_empty() { "?" } else { &a.user },
            if a.source.is_empty() { "?" } else { &a.source },
            if a.reason.is_empty() { String::new() } else { format!(" ({})", a.reason) }
        )
    }
}

/// Ties sshd's lines of one connection (address + port) together: an "Invalid user" line
/// names the user of the attempts that follow, and a connection closed before
/// authentication is an attempt only if no attempt of it was logged.
#[derive(Debug, Default)]
pub struct Sessions {
    open: HashMap<(String, String), Conn>,
    order: VecDeque<(String, String)>,
}

#[derive(Debug, Default)]
struct Conn {
    invalid_user: Option<String>,
    reported: bool,
}

/// Connections remembered at most.
const CONNS: usize = 10_000;

impl Sessions {
    fn conn(&mut self, source: &str, port: &str) -> &mut Conn {
        let key = (source.to_owned(), port.to_owned());
        if !self.open.contains_key(&key) {
            if self.order.len() >= CONNS
                && let Some(old) = self.order.pop_front()
            {
                self.open.remove(&old);
            }
            self.order.push_back(key.clone());
        }
        self.open.entry(key).or_default()
    }

    /// The attempt `line` amounts to, if any.
    pub fn attempt(&mut self, line: Line) -> Option<Attempt> {
        match line {
            Line::Attempt(a) => {
                if !a.port.is_empty() {
                    self.conn(&a.source, &a.port).reported = true;
                }
                Some(a)
            }
            Line::InvalidUser { user, source, port } => {
                self.conn(&source, &port).invalid_user = Some(user);
                None
            }
            Line::Closed { user, invalid, source, port } => {
                let conn = self.conn(&source, &port);
                if conn.reported {
                    return None;
                }
                conn.reported = true;
                let known_invalid = conn.invalid_user.clone();
                let invalid = invalid || known_invalid.is_some();
                let user = if user.is_empty() { known_invalid.unwrap_or_default() } else { user };
                Some(Attempt {
                    service: "sshd".into(),
                    user,
                    source,
                    port,
                    method: String::new(),
                    success: false,
                    reason: if invalid { "invalid-user" } else { "disconnected-before-auth" }
                        .into(),
                })
            }
        }
    }
}

/// Failures per user and per source within a sliding window.
#[derive(Debug, Default)]
pub struct BruteForce {
    keys: HashMap<String, Window>,
}

#[derive(Debug, Default)]
struct Window {
    failures: VecDeque<i64>,
    alerted_at: Option<i64>,
}

/// A brute-force finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    pub user: String,
    pub source: String,
    /// "user", "source" or "user+source": what crossed the threshold.
    pub by: String,
    pub count: usize,
}

impl BruteForce {
    /// Counts a failure at `at_ms`; returns an alarm when it makes the user's or the
    /// source's failures reach `threshold` within `window_ms`, at most one per window.
    pub fn failure(
        &mut self,
        user: &str,
        source: &str,
        at_ms: i64,
        threshold: usize,
        window_ms: i64,
    ) -> Option<Alarm> {
        if threshold == 0 || window_ms <= 0 {
            return None;
        }
        if self.keys.len() > 50_000 {
            self.keys.retain(|_, w| w.failures.back().is_some_and(|t| at_ms - t < window_ms));
        }
        let mut crossed = Vec::new();
        let mut count = 0;
        for (kind, value) in [("user", user), ("source", source)] {
            if value.is_empty() {
                continue;
            }
            let w = self.keys.entry(format!("{kind}:{value}")).or_default();
            w.failures.push_back(at_ms);
            while w.failures.front().is_some_and(|t| at_ms - t >= window_ms) {
                w.failures.pop_front();
            }
            let quiet = w.alerted_at.is_none_or(|a| at_ms - a >= window_ms);
            if w.failures.len() >= threshold && quiet {
                w.alerted_at = Some(at_ms);
                count = count.max(w.failures.len());
                crossed.push(kind);
            }
        }
        if crossed.is_empty() {
            return None;
        }
        // The other key of the same failure stays quiet for this window too: one attack,
        // one alarm.
        for (kind, value) in [("user", user), ("source", source)] {
            if let Some(w) = self.keys.get_mut(&format!("{kind}:{value}"))
                && w.failures.len() >= threshold
            {
                w.alerted_at = Some(at_ms);
            }
        }
        Some(Alarm { user: user.into(), source: source.into(), by: crossed.join("+"), count })
    }
}

/// The sources the monitor reads, and whether a source without a mark starts at its
/// beginning (sources named on the command line) or at its end (the host's defaults).
#[derive(Debug, Clone, Default)]
pub struct LoginSources {
    pub sources: Vec<Source>,
    pub from_start: bool,
}

impl LoginSources {
    /// `--auth-log`, `--journal-file`, `--journal-dir`, `--btmp`, `--wtmp` as given; with
    /// none of them, the system journal when the host has one, else /var/log/auth.log and
    /// /var/log/secure under the root (whichever exist), and /var/log/btmp and
    /// /var/log/wtmp under the root when they exist.
    pub fn resolve(host: &Host, given: &GivenSources) -> Self {
        let GivenSources { auth_logs, journal_files, journal_dirs, btmp, wtmp } = given;
        let records =
            |kind: utmp::Kind| move |path: &PathBuf| Source::Records { path: path.clone(), kind };
        let mut sources: Vec<Source> = auth_logs.iter().cloned().map(Source::File).collect();
        sources.extend(btmp.iter().map(records(utmp::Kind::Failed)));
        sources.extend(wtmp.iter().map(records(utmp::Kind::Sessions)));
        if !journal_files.is_empty() || !journal_dirs.is_empty() {
            sources.push(Source::Journal {
                files: journal_files.to_vec(),
                dirs: journal_dirs.to_vec(),
                root: host.root().to_owned(),
            });
        }
        if !sources.is_empty() {
            return Self { sources, from_start: true };
        }
        let has_journal = ["/var/log/journal", "/run/log/journal"].iter().any(|d| {
            std::fs::read_dir(host.path(d)).is_ok_and(|mut entries| entries.next().is_some())
        });
        if has_journal {
            sources.push(Source::Journal {
                files: Vec::new(),
                dirs: Vec::new(),
                root: host.root().to_owned(),
            });
        } else {
            for f in ["/var/log/auth.log", "/var/log/secure"] {
                if host.path(f).exists() {
                    sources.push(Source::File(host.path(f)));
                }
            }
        }
        for (f, kind) in
            [("/var/log/btmp", utmp::Kind::Failed), ("/var/log/wtmp", utmp::Kind::Sessions)]
        {
            if host.path(f).exists() {
                sources.push(Source::Records { path: host.path(f), kind });
            }
        }
        Self { sources, from_start: false }
    }
}

/// The login sources named on the command line. With none of them the agent reads the
/// host's: the system journal if it has one, else /var/log/auth.log and /var/log/secure,
/// and /var/log/btmp and /var/log/wtmp, all under --root.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GivenSources {
    /// A log file to read login attempts from (syslog format; repeatable).
    #[arg(long = "auth-log", value_name = "FILE")]
    pub auth_logs: Vec<PathBuf>,
    /// A journal file to read login attempts from (repeatable; tests, forensics).
    #[arg(long = "journal-file", value_name = "FILE")]
    pub journal_files: Vec<PathBuf>,
    /// A journal directory to read login attempts from (repeatable).
    #[arg(long = "journal-dir", value_name = "DIR")]
    pub journal_dirs: Vec<PathBuf>,
    /// A btmp file (failed logins, binary utmp records; repeatable): attempts the other
    /// sources did not report.
    #[arg(long = "btmp", value_name = "FILE")]
    pub btmp: Vec<PathBuf>,
    /// A wtmp file (sessions, binary utmp records; repeatable): logins the other sources
    /// did not report.
    #[arg(long = "wtmp", value_name = "FILE")]
    pub wtmp: Vec<PathBuf>,
}

pub struct LoginMonitor {
    pub sink: EventSink,
    pub sources: LoginSources,
    /// This host's name, for lines that do not carry one.
    pub hostname: String,
}

/// Between two marks of a source without events, at least this long (a busy journal
/// does not cost a flush per line that is not a login).
const IDLE_MARK_EVERY: Duration = Duration::from_secs(2);

/// How long btmp/wtmp records wait for the text sources' report of the same attempt.
pub const HOLD: Duration = Duration::from_secs(3);
/// A record and a text source's attempt this close in time are the same attempt.
pub const MATCH_WITHIN_MS: i64 = 5_000;
/// Text-source attempts remembered for matching records.
const RECENT: usize = 10_000;

/// An event to spool: (kind, summary, fields, time).
pub type AuditEvent = (&'static str, String, HashMap<String, String>, i64);

/// Turns lines and records into login and brute-force events.
#[derive(Debug, Default)]
pub struct Audit {
    pub sessions: Sessions,
    pub brute: BruteForce,
    /// Attempts the text sources reported lately, which btmp/wtmp records repeat.
    recent: VecDeque<LoginEvent>,
}

impl Audit {
    /// The events `lines` amount to under `policy`.
    pub fn lines(
        &mut self,
        lines: &[Raw],
        policy: &pb::LoginState,
        hostname: &str,
    ) -> Vec<AuditEvent> {
        let mut out = Vec::new();
        for raw in lines {
            let Some(line) = parse::parse(raw.program.as_deref(), &raw.message) else { continue };
            let Some(attempt) = self.sessions.attempt(line) else { continue };
            let login = LoginEvent {
                time_ms: raw.time_ms.unwrap_or_else(now_ms),
                host: raw.host.clone().unwrap_or_else(|| hostname.to_owned()),
                attempt,
            };
            if self.recent.len() >= RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(login.clone());
            self.event(login, policy, &mut out);
        }
        out
    }

    /// The events btmp/wtmp `logins` amount to: those no text source reported.
    pub fn records(
        &mut self,
        logins: &[Login],
        policy: &pb::LoginState,
        hostname: &str,
    ) -> Vec<AuditEvent> {
        let mut out = Vec::new();
        for l in logins {
            if let Some(i) = self.recent.iter().position(|seen| same_attempt(seen, l)) {
                // Each reported attempt stands for one record.
                self.recent.remove(i);
                continue;
            }
            let login = LoginEvent {
                time_ms: l.time_ms,
                host: hostname.to_owned(),
                attempt: l.attempt.clone(),
            };
            self.event(login, policy, &mut out);
        }
        out
    }

    /// The login event (when recorded) and any brute-force alarm of one attempt.
    fn event(&mut self, login: LoginEvent, policy: &pb::LoginState, out: &mut Vec<AuditEvent>) {
        {
            if policy.record {
                out.push(("login", login.summary(), login.fields(), login.time_ms));
            }
            if !login.attempt.success {
                let alarm = self.brute.failure(
                    &login.attempt.user,
                    &login.attempt.source,
                    login.time_ms,
                    policy.brute_force_threshold as usize,
                    i64::from(policy.brute_force_window_seconds) * 1000,
                );
                if let Some(a) = alarm {
                    let window = policy.brute_force_window_seconds.to_string();
                    let summary = format!(
                        "brute force: {} failed logins (user {}, source {}) within {window} s",
                        a.count,
                        if a.user.is_empty() { "?" } else { &a.user },
                        if a.source.is_empty() { "?" } else { &a.source },
                    );
                    let fields = [
                        ("user", a.user),
                        ("source", a.source),
                        ("count", a.count.to_string()),
                        ("window", window),
                        ("by", a.by),
                        ("service", login.attempt.service.clone()),
                        ("host", login.host.clone()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect();
                    out.push(("brute-force", summary, fields, login.time_ms));
                }
            }
        }
    }
}

/// Whether a btmp/wtmp record and a text source's attempt are one attempt. Sources are
/// compared when both are known (`/dev/tty1` in login's line is `tty1` in the record).
fn same_attempt(seen: &LoginEvent, record: &Login) -> bool {
    let (a, b) = (&seen.attempt, &record.attempt);
    let source = |s: &str| s.trim_start_matches("/dev/").to_owned();
    a.user == b.user
        && a.success == b.success
        && (seen.time_ms - record.time_ms).abs() <= MATCH_WITHIN_MS
        && (a.source.is_empty() || b.source.is_empty() || source(&a.source) == source(&b.source))
}

impl LoginMonitor {
    /// Runs until `shutdown` turns true: reads the sources while a `logins` section
    /// applies.
    pub async fn run(
        self,
        mut desired: watch::Receiver<Option<Arc<pb::DesiredState>>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut audit = Audit::default();
        let mut readers: Option<(tokio::task::JoinSet<()>, mpsc::Receiver<Batch>)> = None;
        let mut last_mark: HashMap<String, tokio::time::Instant> = HashMap::new();
        let mut recorded = 0u64;
        // btmp/wtmp batches waiting for the text sources, oldest first.
        let mut held: VecDeque<(tokio::time::Instant, Batch)> = VecDeque::new();
        loop {
            let state = desired.borrow_and_update().clone();
            let revision = state.as_ref().map_or(0, |d| d.revision);
            let policy = state.as_ref().and_then(|d| d.logins.clone());
            match &policy {
                None => {
                    readers = None;
                    held.clear();
                    self.sink.status(
                        NAME,
                        revision,
                        pb::EnforcerState::NotManaged,
                        "no logins section in the policies".into(),
                        Vec::new(),
                    );
                }
                Some(_) if readers.is_none() => match self.start() {
                    Ok(r) => readers = Some(r),
                    Err(reason) => self.sink.status(
                        NAME,
                        revision,
                        pb::EnforcerState::Failed,
                        reason,
                        Vec::new(),
                    ),
                },
                Some(_) => {}
            }
            self.report(revision, policy.is_some() && readers.is_some(), recorded);
            let next = async {
                match readers.as_mut() {
                    Some((_, rx)) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let due = async {
                match held.front() {
                    Some((at, _)) => tokio::time::sleep_until(*at).await,
                    None => std::future::pending().await,
                }
            };
            let (batch, events) = tokio::select! {
                c = desired.changed() => if c.is_err() { return } else { continue },
                batch = next => {
                    let (Some(batch), Some(policy)) = (batch, policy.as_ref()) else { continue };
                    if batch.supplement {
                        held.push_back((tokio::time::Instant::now() + HOLD, batch));
                        continue;
                    }
                    let events = audit.lines(&batch.lines, policy, &self.hostname);
                    (batch, events)
                }
                () = due => {
                    let (Some((_, batch)), Some(policy)) = (held.pop_front(), policy.as_ref()) else { continue };
                    let events = audit.records(&batch.logins, policy, &self.hostname);
                    (batch, events)
                }
                _ = shutdown.changed() => return,
            };
            // A batch that gave nothing moves its mark at most every IDLE_MARK_EVERY; records
            // that matched text-source attempts always do (after a restart nothing would
            // match them again).
            if events.is_empty()
                && batch.logins.is_empty()
                && last_mark.get(&batch.key).is_some_and(|t| t.elapsed() < IDLE_MARK_EVERY)
            {
                continue;
            }
            match self.spool(&batch, events, revision).await {
                Ok(n) => {
                    recorded += n as u64;
                    last_mark.insert(batch.key.clone(), tokio::time::Instant::now());
                }
                Err(reason) => {
                    // The sources restart from their last stored marks: nothing is lost.
                    tracing::error!(monitor = NAME, %reason, "cannot spool login events");
                    self.sink.status(NAME, revision, pb::EnforcerState::Failed, reason, Vec::new());
                    readers = None;
                    held.clear();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn report(&self, revision: u64, reading: bool, recorded: u64) {
        if !reading {
            return;
        }
        let sources: Vec<String> = self.sources.sources.iter().map(Source::describe).collect();
        self.sink.status(
            NAME,
            revision,
            pb::EnforcerState::Compliant,
            if sources.is_empty() {
                "no login source found on this host".into()
            } else {
                String::new()
            },
            vec![("sources".into(), sources.join(", ")), ("recorded".into(), recorded.to_string())],
        );
    }

    /// Starts one reader per source, each from its stored mark.
    fn start(&self) -> Result<(tokio::task::JoinSet<()>, mpsc::Receiver<Batch>), String> {
        let (tx, rx) = mpsc::channel(16);
        let mut set = tokio::task::JoinSet::new();
        for s in &self.sources.sources {
            let mark = self.sink.mark(&s.key()).map_err(|e| e.to_string())?;
            tracing::info!(monitor = NAME, source = %s.describe(), resume = mark.is_some(), "reading logins");
            set.spawn(source::follow(s.clone(), mark, self.sources.from_start, tx.clone()));
        }
        Ok((set, rx))
    }

    async fn spool(
        &self,
        batch: &Batch,
        events: Vec<AuditEvent>,
        revision: u64,
    ) -> Result<usize, String> {
        let mut out = Vec::with_capacity(events.len());
        for (kind, summary, fields, at_ms) in events {
            let mut e = self
                .sink
                .event(NAME, kind, revision, summary, fields)
                .map_err(|e| e.to_string())?;
            e.at_ms = at_ms;
            out.push(e);
        }
        self.sink.emit(&out, Some((&batch.key, &batch.mark))).await.map_err(|e| e.to_string())?;
        Ok(out.iter().filter(|e| e.kind == "login").count())
    }
}
