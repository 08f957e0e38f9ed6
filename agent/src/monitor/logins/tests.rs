use std::time::Duration;

use proptest::prelude::*;

use super::parse::{parse, parse_rfc3339, split_syslog};
use super::source::journal_entry;
use super::*;
use crate::cache::Cache;
use crate::enforce::StatusBoard;

/// `line` → "service user source method success reason" of the attempt it is, or "-".
fn check(line: &str, expected: &str) {
    let raw = split_syslog(line);
    let got = match parse(raw.program.as_deref(), &raw.message) {
        Some(Line::Attempt(a)) => {
            format!("{} {} {} {} {} {}", a.service, a.user, a.source, a.method, a.success, a.reason)
        }
        Some(Line::InvalidUser { user, source, .. }) => format!("invalid-user {user} {source}"),
        Some(Line::Closed { user, invalid, source, .. }) => {
            format!("closed {user} {invalid} {source}")
        }
        None => "-".into(),
    };
    assert_eq!(got.trim_end(), expected, "{line}");
}

#[test]
fn sshd_lines() {
    check(
        "2024-05-01T10:00:00.123456+02:00 ws1 sshd[812]: Accepted password for rad from 198.18.0.9 port 52200 ssh2",
        "sshd rad 198.18.0.9 password true",
    );
    check(
        "May  1 10:00:00 ws1 sshd-session[812]: Accepted publickey for rad from 2001:db8::1 port 52200 ssh2: ED25519 SHA256:abc",
        "sshd rad 2001:db8::1 publickey true",
    );
    check(
        "Failed password for rad from 198.18.0.9 port 40000 ssh2\r",
        "sshd rad 198.18.0.9 password false bad-password",
    );
    check(
        "sshd[1]: Failed password for invalid user bob from 198.18.0.9 port 1 ssh2",
        "sshd bob 198.18.0.9 password false invalid-user",
    );
    check(
        "sshd[1]: Failed publickey for rad from 198.18.0.9 port 1 ssh2: RSA SHA256:x",
        "sshd rad 198.18.0.9 publickey false bad-publickey",
    );
    check(
        "sshd[1]: Accepted keyboard-interactive/pam for rad from 10.0.0.1 port 2 ssh2",
        "sshd rad 10.0.0.1 keyboard-interactive/pam true",
    );
    check("sshd[1]: Failed none for invalid user x from 10.0.0.1 port 2 ssh2", "-");
    check("Invalid user nobody1 from 198.18.0.9 port 5", "invalid-user nobody1 198.18.0.9");
    check(
        "Connection closed by authenticating user rad 198.18.0.9 port 5 [preauth]",
        "closed rad false 198.18.0.9",
    );
    check(
        "Disconnected from invalid user a b 198.18.0.9 port 5 [preauth]",
        "closed a b true 198.18.0.9",
    );
    check("Connection closed by 198.18.0.9 port 5 [preauth]", "closed  false 198.18.0.9");
    check("Disconnected from user rad 198.18.0.9 port 5", "-");
    check("Received disconnect from 198.18.0.9 port 5:11: bye [preauth]", "-");
    check("Server listening on 0.0.0.0 port 22.", "-");
}

#[test]
fn local_lines() {
    check(
        "Jan  2 03:04:05 ws1 login[99]: FAILED LOGIN (1) on '/dev/tty1' FOR 'bob', Authentication failure",
        "login bob /dev/tty1 password false Authentication failure",
    );
    check("login[99]: ROOT LOGIN  on '/dev/tty1'", "login root /dev/tty1 password true");
    check("login[99]: LOGIN ON tty2 BY bob", "login bob tty2 password true");
    check("su[5]: (to root) bob on pts/0", "su root bob password true");
    check(
        "su[5]: FAILED SU (to root) bob on pts/0",
        "su root bob password false authentication failure",
    );
    check(
        "sudo[7]:      bob : TTY=pts/0 ; PWD=/home/bob ; USER=root ; COMMAND=/usr/bin/id",
        "sudo bob pts/0 password true",
    );
    check(
        "sudo[7]: bob : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/sh",
        "sudo bob pts/0 password false 3 incorrect password attempts",
    );
    check(
        "sudo[7]: eve : user NOT in sudoers ; TTY=pts/1 ; PWD=/ ; USER=root ; COMMAND=/bin/sh",
        "sudo eve pts/1 password false user NOT in sudoers",
    );
    check(
        "gdm-password][3]: pam_unix(gdm-password:auth): authentication failure; logname= uid=0 euid=0 tty=/dev/tty1 ruser= rhost=  user=bob",
        "gdm-password bob /dev/tty1 password false authentication failure",
    );
    check(
        "gdm-password][3]: pam_unix(gdm-password:session): session opened for user bob(uid=1000) by (uid=0)",
        "gdm-password bob  password true",
    );
    check("sshd[3]: pam_unix(sshd:auth): authentication failure; user=bob", "-");
    check(
        "sshd[3]: pam_faillock(sshd:auth): Consecutive login failures for user bob account temporarily locked",
        "sshd bob  password false account-locked (faillock)",
    );
    check("CRON[5]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)", "-");
}

#[test]
fn timestamps() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_rfc3339("2023-11-14T22:13:20.5+00:00"), Some(1_700_000_000_500));
    assert_eq!(parse_rfc3339("2023-11-15T00:13:20+02:00"), Some(1_700_000_000_000));
    assert_eq!(parse_rfc3339("2023-13-15T00:13:20Z"), None);
    assert_eq!(split_syslog("May  1 10:00:00 ws1 sshd[1]: x").host.as_deref(), Some("ws1"));
}

proptest! {
    #[test]
    fn parsers_never_panic(line in ".{0,200}") {
        let raw = split_syslog(&line);
        let _ = parse(raw.program.as_deref(), &raw.message);
        let _ = journal_entry(&line);
        for program in ["sshd", "login", "su", "sudo", "gdm-password]"] {
            let _ = parse(Some(program), &line);
        }
    }

    #[test]
    fn parsers_never_panic_on_near_misses(
        head in prop::sample::select(vec![
            "Accepted ", "Failed ", "Invalid user ", "Connection closed by ",
            "Disconnected from invalid user ", "FAILED LOGIN ", "ROOT LOGIN ", "LOGIN ON ",
            "(to ", "FAILED SU ", "FAILED su for ", "pam_unix(", "pam_faillock(",
        ]),
        tail in "[ a-z0-9:.()'=;\\[\\]-]{0,60}",
    ) {
        let line = format!("{head}{tail}");
        for program in [None, Some("login"), Some("su"), Some("sudo")] {
            let _ = parse(program, &line);
            let _ = parse(program, &format!("{line} [preauth]"));
        }
        let _ = parse_rfc3339(&tail);
    }
}

fn policy(threshold: u32, window: u32) -> pb::LoginState {
    pb::LoginState {
        record: true,
        brute_force_threshold: threshold,
        brute_force_window_seconds: window,
        policy: "t".into(),
    }
}

fn lines(text: &str) -> Vec<Raw> {
    text.lines().map(split_syslog).collect()
}

#[test]
fn one_event_per_attempt_and_one_brute_force_per_window() {
    let mut audit = Audit::default();
    // What the real sshd logs for 5 failed and 1 accepted password logins by sshpass.
    let mut log = String::new();
    for port in 40000..40005 {
        log += &format!("Failed password for rad from 198.18.0.9 port {port} ssh2\n");
        log += &format!(
            "Connection closed by authenticating user rad 198.18.0.9 port {port} [preauth]\n"
        );
    }
    log += "Accepted password for rad from 198.18.0.9 port 40010 ssh2\n";
    log += "Invalid user ghost from 198.18.0.7 port 1 ssh2\n";
    log += "Connection closed by invalid user ghost 198.18.0.7 port 1 [preauth]\n";
    let events = audit.lines(&lines(&log), &policy(5, 300), "ws1");
    let kinds: Vec<&str> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        kinds,
        ["login", "login", "login", "login", "login", "brute-force", "login", "login"]
    );
    let brute = &events[5].2;
    assert_eq!(brute["user"], "rad");
    assert_eq!(brute["source"], "198.18.0.9");
    assert_eq!(brute["count"], "5");
    assert_eq!(brute["by"], "user+source");
    assert_eq!(events[6].2["success"], "true");
    assert_eq!(events[7].2["user"], "ghost");
    assert_eq!(events[7].2["reason"], "invalid-user");
    assert_eq!(events[0].2["host"], "ws1");
    // More failures in the same window: no second alarm.
    let more = audit.lines(
        &lines("Failed password for rad from 198.18.0.9 port 41000 ssh2\n"),
        &policy(5, 300),
        "ws1",
    );
    assert_eq!(more.len(), 1);
}

#[test]
fn brute_force_counts_within_the_window_only() {
    let mut b = BruteForce::default();
    let w = 10_000;
    for t in [0, 4_000, 8_000] {
        assert_eq!(
            b.failure("u", "s", t, 3, w).map(|a| a.count),
            if t == 8_000 { Some(3) } else { None }
        );
    }
    // Spread out: never three within 10 s.
    let mut spread = BruteForce::default();
    for i in 0..10 {
        assert!(spread.failure("u", "s", i * 6_000, 3, w).is_none());
    }
    // A new window alarms again.
    assert!(b.failure("u", "s", 9_000, 3, w).is_none());
    assert!(b.failure("u", "s", 17_000, 3, w).is_none());
    assert!(b.failure("u", "s", 18_000, 3, w).is_some());
}

async fn open_cache(dir: &std::path::Path) -> Cache {
    for _ in 0..100 {
        if let Ok(c) = Cache::open(dir) {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Cache::open(dir).unwrap()
}

fn desired(threshold: u32) -> watch::Receiver<Option<Arc<pb::DesiredState>>> {
    let state = pb::DesiredState {
        revision: 4,
        logins: Some(policy(threshold, 300)),
        ..Default::default()
    };
    let (tx, rx) = watch::channel(Some(Arc::new(state)));
    // Keep the channel open for the test's life.
    std::mem::forget(tx);
    rx
}

fn logins_in(cache: &Cache) -> Vec<pb::AgentEvent> {
    cache.spooled(100_000).unwrap().into_iter().filter(|e| e.kind == "login").collect()
}

async fn wait_for(cache: &Cache, n: usize) -> Vec<pb::AgentEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = logins_in(cache);
        if got.len() >= n || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a monitor over `sources` until `n` login events are spooled, then stops it.
async fn run_until(dir: &std::path::Path, sources: Vec<Source>, n: usize) -> Vec<pb::AgentEvent> {
    let cache = open_cache(dir).await;
    let monitor = LoginMonitor {
        sink: EventSink::new(cache.clone(), StatusBoard::default()),
        sources: LoginSources { sources, from_start: true },
        hostname: "ws1".into(),
    };
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(monitor.run(desired(0), shutdown));
    let got = wait_for(&cache, n).await;
    // Settle: nothing more must come.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = if logins_in(&cache).len() > got.len() { logins_in(&cache) } else { got };
    let _ = stop.send(true);
    task.await.unwrap();
    got
}

fn append(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn failed(port: u32) -> String {
    format!(
        "2024-05-01T10:00:00Z ws1 sshd[1]: Failed password for rad from 198.18.0.9 port {port} ssh2\n"
    )
}

#[tokio::test]
async fn a_log_file_is_followed_across_restarts_and_rotation_without_loss_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("auth.log");
    append(&log, &(0..3).map(failed).collect::<String>());
    // A line without its newline yet is not read.
    append(
        &log,
        "2024-05-01T10:00:00Z ws1 sshd[1]: Failed password for rad from 198.18.0.9 port 3",
    );
    let got = run_until(&state, vec![Source::File(log.clone())], 3).await;
    assert_eq!(got.len(), 3);

    // While stopped: the line completes, more come, then logrotate renames the file and a
    // new one starts.
    append(&log, " ssh2\n");
    append(&log, &(4..6).map(failed).collect::<String>());
    // Named as RHEL's logrotate (dateext) does.
    std::fs::rename(&log, dir.path().join("auth.log-20260101")).unwrap();
    append(&log, &(6..8).map(failed).collect::<String>());
    let got = run_until(&state, vec![Source::File(log.clone())], 8).await;
    let ports: Vec<String> = got.iter().map(|e| e.summary.clone()).collect();
    assert_eq!(got.len(), 8, "{ports:#?}");

    // Truncated in place (copytruncate): read from the start again.
    std::fs::write(&log, failed(8)).unwrap();
    let got = run_until(&state, vec![Source::File(log)], 9).await;
    assert_eq!(got.len(), 9);
}

#[tokio::test]
async fn the_journal_is_read_through_journalctl_from_a_persisted_cursor() {
    let remote = std::path::Path::new("/lib/systemd/systemd-journal-remote");
    assert!(
        remote.exists(),
        "{} is missing: install the package systemd-journal-remote",
        remote.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let export = |name: &str, entries: &[(&str, &str, u64)]| {
        let mut text = String::new();
        for (ident, message, secs) in entries {
            text += &format!(
                "__REALTIME_TIMESTAMP={}\n_HOSTNAME=ws7\nSYSLOG_IDENTIFIER={ident}\nMESSAGE={message}\n\n",
                secs * 1_000_000
            );
        }
        let input = dir.path().join(format!("{name}.export"));
        std::fs::write(&input, text).unwrap();
        let out = dir.path().join(format!("{name}.journal"));
        let status = std::process::Command::new(remote)
            .arg(format!("--output={}", out.display()))
            .arg(&input)
            .output()
            .unwrap();
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
        out
    };
    let file = export(
        "a",
        &[
            (
                "sshd-session",
                "Failed password for invalid user bob from 198.18.0.9 port 52200 ssh2",
                1_700_000_000,
            ),
            ("systemd", "Started something.", 1_700_000_001),
            (
                "sshd-session",
                "Accepted publickey for rad from 198.18.0.10 port 52201 ssh2: ED25519 SHA256:x",
                1_700_000_002,
            ),
            ("sudo", "rad : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/usr/bin/id", 1_700_000_003),
        ],
    );
    let state = dir.path().join("state");
    let source = Source::Journal { files: vec![file.clone()], dirs: Vec::new(), root: "/".into() };
    let got = run_until(&state, vec![source.clone()], 3).await;
    let summary: Vec<(String, String, String, i64)> = got
        .iter()
        .map(|e| {
            (
                e.fields["user"].clone(),
                e.fields["success"].clone(),
                e.fields["host"].clone(),
                e.at_ms,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("bob".into(), "false".into(), "ws7".into(), 1_700_000_000_000),
            ("rad".into(), "true".into(), "ws7".into(), 1_700_000_002_000),
            ("rad".into(), "true".into(), "ws7".into(), 1_700_000_003_000),
        ]
    );
    // Restarted with the same journal: the cursor says all was read; nothing repeats.
    let again = run_until(&state, vec![source], 3).await;
    assert_eq!(again.len(), 3);
}

/// Binary records made by the real `utmpdump -r` (util-linux) from its text form.
fn utmp_records(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("utmpdump")
        .arg("-r")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("utmpdump (util-linux) runs");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "utmpdump -r failed");
    out.stdout
}

/// utmpdump's text line for a record.
fn utmp_line(kind: u8, user: &str, line: &str, host: &str, time: &str) -> String {
    format!("[{kind}] [01234] [    ] [{user:<8}] [{line:<12}] [{host:<20}] [{host:<15}] [{time}]\n")
}

#[test]
fn records_written_by_utmpdump_are_read_field_by_field() {
    let bin = utmp_records(
        &(utmp_line(6, "rad", "ssh:notty", "198.18.0.9", "2024-05-01T10:00:00,250000+00:00")
            + &utmp_line(7, "bob", "pts/0", "198.18.0.7", "2024-05-01T10:00:05,000000+00:00")
            + &utmp_line(8, "", "pts/0", "", "2024-05-01T10:09:00,000000+00:00")),
    );
    assert_eq!(bin.len(), 3 * utmp::RECORD);
    let recs = utmp::records(&bin);
    let t0 = parse_rfc3339("2024-05-01T10:00:00Z").unwrap();
    assert_eq!(
        (recs[0].kind, recs[0].user.as_str(), recs[0].line.as_str(), recs[0].host.as_str()),
        (6, "rad", "ssh:notty", "198.18.0.9")
    );
    assert_eq!(recs[0].time_ms, t0 + 250);
    let failed = utmp::login(&recs[0], utmp::Kind::Failed).unwrap();
    assert_eq!(failed.attempt.service, "sshd");
    assert!(!failed.attempt.success);
    let session = utmp::login(&recs[1], utmp::Kind::Sessions).unwrap();
    assert_eq!((session.attempt.user.as_str(), session.time_ms), ("bob", t0 + 5_000));
    assert!(session.attempt.success);
    assert_eq!(utmp::login(&recs[2], utmp::Kind::Sessions), None);
}

fn record_login(user: &str, source: &str, success: bool, time_ms: i64) -> utmp::Login {
    utmp::Login {
        time_ms,
        attempt: Attempt {
            service: "sshd".into(),
            user: user.into(),
            source: source.into(),
            success,
            ..Default::default()
        },
    }
}

#[test]
fn records_repeat_text_attempts_once_each_and_add_the_ones_no_text_source_saw() {
    let mut audit = Audit::default();
    let t = parse_rfc3339("2024-05-01T10:00:00Z").unwrap();
    let text: String = (0..2).map(|p| failed(40_000 + p)).collect();
    assert_eq!(audit.lines(&lines(&text), &policy(3, 300), "ws1").len(), 2);
    // Three btmp records: two are the logged failures, one nobody logged (a third attempt
    // whose log line was lost); a record of another user or a far-off time is new too.
    let records = [
        record_login("rad", "198.18.0.9", false, t + 200),
        record_login("rad", "198.18.0.9", false, t + 300),
        record_login("rad", "198.18.0.9", false, t + 400),
        record_login("eve", "198.18.0.9", false, t + 400),
        record_login("rad", "198.18.0.9", false, t + MATCH_WITHIN_MS + 1_000),
    ];
    let events = audit.records(&records, &policy(3, 300), "ws1");
    let kinds: Vec<&str> = events.iter().map(|e| e.0).collect();
    // The third failure of rad within the window is the brute-force alarm's third.
    assert_eq!(kinds, ["login", "brute-force", "login", "login"], "{events:#?}");
    assert_eq!(events[0].3, t + 400);
    assert_eq!(events[2].2["user"], "eve");
    // A session record matches an accepted login, not a failure.
    audit.lines(
        &lines("sshd[1]: Accepted password for rad from 198.18.0.9 port 9 ssh2"),
        &policy(3, 300),
        "ws1",
    );
    let now = now_ms();
    assert!(
        audit
            .records(&[record_login("rad", "198.18.0.9", true, now)], &policy(3, 300), "ws1")
            .is_empty()
    );
}

#[tokio::test]
async fn btmp_is_followed_across_restarts_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let btmp = dir.path().join("btmp");
    let rec = |user: &str, sec: u32| {
        utmp_line(
            6,
            user,
            "ssh:notty",
            "198.18.0.9",
            &format!("2024-05-01T10:00:{sec:02},000000+00:00"),
        )
    };
    let source = || vec![Source::Records { path: btmp.clone(), kind: utmp::Kind::Failed }];
    let append_records = |text: String| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&btmp).unwrap();
        f.write_all(&utmp_records(&text)).unwrap();
    };
    append_records(rec("u0", 0) + &rec("u1", 1));
    let got = run_until(&state, source(), 2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].fields["user"], "u0");
    assert_eq!(got[0].fields["reason"], "recorded in btmp");
    // While stopped: one more record, then logrotate moves btmp and creates a new one.
    append_records(rec("u2", 2));
    std::fs::rename(&btmp, dir.path().join("btmp.1")).unwrap();
    append_records(rec("u3", 3));
    let got = run_until(&state, source(), 4).await;
    let users: Vec<&str> = got.iter().map(|e| e.fields["user"].as_str()).collect();
    assert_eq!(users, ["u0", "u1", "u2", "u3"]);
}
