//! Tests of the password enforcer: the file model, plans (snapshots), the enforcer over a
//! temporary host root, the drift watch, and the real libpwquality (`pwscore`) reading a
//! file the enforcer wrote (root only: a private mount namespace over /etc/security).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use expect_test::{Expect, expect};

use super::files::{ConfigFile, DUPLICATE_MARKER, Syntax, Wanted};
use super::plan::{aging_out_of_policy, plan};
use super::profiles::{Desired, ManagedFile};
use super::*;

fn state(profile: &str) -> pb::PasswordState {
    pb::PasswordState { profile: profile.into(), ..Default::default() }
}

fn desired_state(passwords: Option<pb::PasswordState>, revision: u64) -> pb::DesiredState {
    pb::DesiredState { revision, passwords, ..Default::default() }
}

/// A temporary host root seeded with files; `None` content: the file is absent.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new(files: &[(&str, &str)]) -> Root {
        let root = Root { dir: tempfile::tempdir().expect("tempdir") };
        for (path, text) in files {
            root.write(path, text);
        }
        root
    }

    fn host(&self) -> Host {
        Host::new(self.dir.path())
    }

    fn path(&self, p: &str) -> std::path::PathBuf {
        self.host().path(p)
    }

    fn write(&self, p: &str, text: &str) {
        let path = self.path(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.path(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
    }
}

// ---------------------------------------------------------------- file model

#[test]
fn an_unedited_file_renders_exactly_as_read() {
    for text in ["", "a = 1", "# c\n\n  minlen=9  \nenforce_for_root\n", "x = 1\n\n\n"] {
        let (f, w) = ConfigFile::parse("/f", Syntax::KeyEquals, text);
        assert_eq!(f.render(), text);
        assert!(w.is_empty());
    }
}

fn check_set(syntax: Syntax, input: &str, sets: &[(&str, Wanted)], expected: Expect) {
    let (mut f, _) = ConfigFile::parse("/f", syntax, input);
    for (key, wanted) in sets {
        f.set(key, wanted);
    }
    expected.assert_eq(&f.render());
}

#[test]
fn set_keeps_comments_and_unrelated_lines_and_comments_duplicates() {
    check_set(
        Syntax::KeyEquals,
        "# Configuration for systemwide password quality limits\n\
         # minlen = 8\n\
         difok = 3\n\
         \tminlen=8\n\
         # a comment between\n\
         minlen = 10\n\
         usercheck = 1\n",
        &[
            ("minlen", Wanted::value(14)),
            ("enforce_for_root", Wanted::Flag),
            ("retry", Wanted::value(3)),
        ],
        expect![[r#"
            # Configuration for systemwide password quality limits
            # minlen = 8
            difok = 3
            	minlen=14
            # a comment between
            # bulwark: duplicate commented out: minlen = 10
            usercheck = 1
            # Added by Bulwark (password policy):
            enforce_for_root
            retry = 3
        "#]],
    );
}

#[test]
fn a_missing_key_goes_beside_its_commented_out_default() {
    check_set(
        Syntax::KeyValue,
        "# Only works if ENCRYPT_METHOD is set to YESCRYPT.\n\
         #YESCRYPT_COST_FACTOR 5\n\
         ENCRYPT_METHOD SHA512\n\
         UMASK\t\t022",
        &[
            ("YESCRYPT_COST_FACTOR", Wanted::value(5)),
            ("ENCRYPT_METHOD", Wanted::value("YESCRYPT")),
            ("UMASK", Wanted::value("027")),
        ],
        expect![[r#"
            # Only works if ENCRYPT_METHOD is set to YESCRYPT.
            #YESCRYPT_COST_FACTOR 5
            YESCRYPT_COST_FACTOR	5
            ENCRYPT_METHOD YESCRYPT
            UMASK		027
        "#]],
    );
}

#[test]
fn setting_twice_changes_nothing_more() {
    let input = "minlen = 8\nminlen = 9\n";
    let (mut f, _) = ConfigFile::parse("/f", Syntax::KeyEquals, input);
    f.set("minlen", &Wanted::value(14));
    let once = f.render();
    f.set("minlen", &Wanted::value(14));
    assert_eq!(f.render(), once);
    assert_eq!(once, format!("minlen = 14\n{DUPLICATE_MARKER}minlen = 9\n"));
}

#[test]
fn unparsable_lines_are_left_alone_and_named_with_file_and_line() {
    let text = "PASS_MAX_DAYS\t99999\nPASS_MIN_DAYS\nwhat-is-this 3\nUMASK 022\n";
    let (mut f, warnings) = ConfigFile::parse("/etc/login.defs", Syntax::KeyValue, text);
    let shown: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "/etc/login.defs:2: PASS_MIN_DAYS has no value; left alone",
            "/etc/login.defs:3: \"what-is-this\" is not a setting name; left alone"
        ]
    );
    f.set("PASS_MAX_DAYS", &Wanted::value(365));
    assert_eq!(f.render(), "PASS_MAX_DAYS\t365\nPASS_MIN_DAYS\nwhat-is-this 3\nUMASK 022\n");
}

#[test]
fn numbers_compare_by_value() {
    assert!(files::same_value("027", "27"));
    assert!(files::same_value(" -1", "-1"));
    assert!(!files::same_value("YESCRYPT", "yescrypt"));
    assert!(Wanted::Flag.satisfied_by(None));
    assert!(!Wanted::value(1).satisfied_by(None));
}

#[test]
fn drop_ins_are_read_in_ascii_order_before_the_main_file() {
    let root = Root::new(&[
        ("/etc/security/pwquality.conf", "# nothing set here\n"),
        ("/etc/security/pwquality.conf.d/b.conf", "minlen = 20\nminclass = 2\n"),
        ("/etc/security/pwquality.conf.d/Z.conf", "minlen = 30\nminclass = 4\n"),
        ("/etc/security/pwquality.conf.d/.hidden.conf", "minlen = 40\n"),
        ("/etc/security/pwquality.conf.d/c.conf.disabled", "minlen = 50\n"),
    ]);
    let (observed, _) = observe(&root.host()).unwrap();
    let names: Vec<&str> = observed.pwquality_dropins.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        names,
        ["/etc/security/pwquality.conf.d/Z.conf", "/etc/security/pwquality.conf.d/b.conf"]
    );
    // The last drop-in read wins while pwquality.conf does not set the key...
    let minlen = observed.effective(ManagedFile::Pwquality, "minlen").unwrap();
    assert_eq!((minlen.value.as_deref(), minlen.line), (Some("20"), 1));
    assert!(minlen.path.ends_with("/b.conf"));
    // ... and pwquality.conf, read last, wins over every drop-in.
    root.write("/etc/security/pwquality.conf", "minlen = 9\n");
    let (observed, _) = observe(&root.host()).unwrap();
    let minlen = observed.effective(ManagedFile::Pwquality, "minlen").unwrap();
    assert_eq!(
        (minlen.path.as_str(), minlen.value.as_deref()),
        (ManagedFile::Pwquality.path(), Some("9"))
    );
    let minclass = observed.effective(ManagedFile::Pwquality, "minclass").unwrap();
    assert_eq!(minclass.value.as_deref(), Some("2"));
}

// ---------------------------------------------------------------- profiles

#[test]
fn profiles_resolve_by_name_or_version_and_overrides_apply() {
    let d = Desired::from_state(&state("cis-debian12")).unwrap();
    assert_eq!(d.profile, "cis-debian12@1");
    assert_eq!(Desired::from_state(&state("nist-800-63b@1")).unwrap().profile, "nist-800-63b@1");
    let err = Desired::from_state(&state("cis-debian12@7")).unwrap_err().to_string();
    assert_eq!(
        err,
        "unknown password profile \"cis-debian12@7\" (known: cis-debian12@1, nist-800-63b@1)"
    );
    let s = pb::PasswordState {
        min_length: Some(12),
        lockout_attempts: Some(10),
        max_age_days: Some(90),
        ..state("cis-debian12")
    };
    let d = Desired::from_state(&s).unwrap();
    assert_eq!(d.overrides, ["minLength=12", "maxAgeDays=90", "lockoutAttempts=10"]);
    assert_eq!(d.max_age_days, Some(90));
    let pwq = &d.settings[&ManagedFile::Pwquality];
    assert!(pwq.contains(&("minlen", Wanted::value(12))));
    let bad = pb::PasswordState { min_length: Some(4), ..state("nist-800-63b") };
    let err = Desired::from_state(&bad).unwrap_err().to_string();
    assert_eq!(err, "passwords.minLength: 4 is below libpwquality's floor of 6");
}

#[test]
fn shadow_accounts_with_long_aging_are_found() {
    let shadow = "root:$y$j9T$abc:19000:0:99999:7:::\n\
                  daemon:*:19000:0:99999:7:::\n\
                  locked:!$y$x:19000:0:99999:7:::\n\
                  alice:$y$j9T$def:19000:1:90:7:::\n\
                  bob:$6$salt$hash:19000:0::7:::\n\
                  carol:$y$j9T$ghi:19000:1:400:7:::\n";
    assert_eq!(
        aging_out_of_policy(shadow, 365),
        ["root (max 99999)", "bob (no max)", "carol (max 400)"]
    );
    assert_eq!(aging_out_of_policy(shadow, 99999), Vec::<String>::new());
}

// ---------------------------------------------------------------- plans

const LOGIN_DEFS: &str = "\
# /etc/login.defs - Configuration control definitions for the login package.
MAIL_DIR        /var/mail
UMASK\t\t022
#
# Password aging controls:
PASS_MAX_DAYS\t99999
PASS_MIN_DAYS\t0
PASS_WARN_AGE\t7
ENCRYPT_METHOD SHA512
#YESCRYPT_COST_FACTOR 5
PASS_MAX_DAYS\t180
";

const PWQUALITY: &str = "\
# Configuration for systemwide password quality limits
# minlen = 8
minlen = 8
# dcredit = 0
# enforce_for_root
";

fn show_plan(desired: &Desired, observed: &Observed) -> String {
    let plan = plan(desired, observed);
    let mut out = String::new();
    for edit in &plan.edits {
        out.push_str(&format!(
            "=== {}{}\n",
            edit.file.path(),
            if edit.create { " (created)" } else { "" }
        ));
        for c in &edit.changes {
            out.push_str(&format!("- {c}\n"));
        }
        out.push_str(&edit.content);
    }
    out
}

#[test]
fn plan_for_cis_with_overrides() {
    let root = Root::new(&[
        ("/etc/login.defs", LOGIN_DEFS),
        ("/etc/security/pwquality.conf", PWQUALITY),
        ("/etc/security/pwquality.conf.d/50-site.conf", "maxrepeat = 3\nretry=1\n"),
    ]);
    let (observed, _) = observe(&root.host()).unwrap();
    let s = pb::PasswordState {
        min_length: Some(12),
        lockout_attempts: Some(10),
        unlock_time_seconds: Some(120),
        ..state("cis-debian12")
    };
    let desired = Desired::from_state(&s).unwrap();
    expect![[r#"
        === /etc/login.defs
        - login.defs PASS_MAX_DAYS=180 -> login.defs PASS_MAX_DAYS=365
        - login.defs PASS_MIN_DAYS=0 -> login.defs PASS_MIN_DAYS=1
        - login.defs ENCRYPT_METHOD=SHA512 -> login.defs ENCRYPT_METHOD=YESCRYPT
        - login.defs YESCRYPT_COST_FACTOR unset -> login.defs YESCRYPT_COST_FACTOR=5
        - login.defs UMASK=022 -> login.defs UMASK=027
        # /etc/login.defs - Configuration control definitions for the login package.
        MAIL_DIR        /var/mail
        UMASK		027
        #
        # Password aging controls:
        PASS_MAX_DAYS	365
        PASS_MIN_DAYS	1
        PASS_WARN_AGE	7
        ENCRYPT_METHOD YESCRYPT
        #YESCRYPT_COST_FACTOR 5
        YESCRYPT_COST_FACTOR	5
        # bulwark: duplicate commented out: PASS_MAX_DAYS	180
        === /etc/security/pwquality.conf
        - pwquality.conf minlen=8 -> pwquality.conf minlen=12
        - pwquality.conf minclass unset -> pwquality.conf minclass=3
        - pwquality.conf dcredit unset -> pwquality.conf dcredit=0
        - pwquality.conf ucredit unset -> pwquality.conf ucredit=0
        - pwquality.conf lcredit unset -> pwquality.conf lcredit=0
        - pwquality.conf ocredit unset -> pwquality.conf ocredit=0
        - pwquality.conf maxsequence unset -> pwquality.conf maxsequence=3
        - pwquality.conf difok unset -> pwquality.conf difok=2
        - pwquality.conf dictcheck unset -> pwquality.conf dictcheck=1
        - pwquality.conf enforce_for_root unset -> pwquality.conf enforce_for_root
        - pwquality.conf retry=1 (from /etc/security/pwquality.conf.d/50-site.conf:2) -> pwquality.conf retry=3
        # Configuration for systemwide password quality limits
        # minlen = 8
        minlen = 12
        # dcredit = 0
        dcredit = 0
        # enforce_for_root
        enforce_for_root
        # Added by Bulwark (password policy):
        minclass = 3
        ucredit = 0
        lcredit = 0
        ocredit = 0
        maxsequence = 3
        difok = 2
        dictcheck = 1
        retry = 3
        === /etc/security/faillock.conf (created)
        - faillock.conf deny unset -> faillock.conf deny=10
        - faillock.conf unlock_time unset -> faillock.conf unlock_time=120
        - faillock.conf fail_interval unset -> faillock.conf fail_interval=900
        - faillock.conf even_deny_root unset -> faillock.conf even_deny_root
        - faillock.conf root_unlock_time unset -> faillock.conf root_unlock_time=60
        # Created by Bulwark (password policy). Bulwark sets the keys it manages
        # here once; other lines are kept as written.
        # Added by Bulwark (password policy):
        deny = 10
        unlock_time = 120
        fail_interval = 900
        even_deny_root
        root_unlock_time = 60
    "#]]
    .assert_eq(&show_plan(&desired, &observed));
}

#[test]
fn plan_for_nist_and_none_when_in_force() {
    let root = Root::new(&[
        (
            "/etc/login.defs",
            "PASS_MAX_DAYS 99999\nPASS_MIN_DAYS 0\nENCRYPT_METHOD YESCRYPT\nYESCRYPT_COST_FACTOR 5\n",
        ),
        ("/etc/security/pwquality.conf", "minlen = 8\nminclass = 3\n"),
        (
            "/etc/security/faillock.conf",
            "# deny = 3\ndeny = 100\nunlock_time = 600\nfail_interval = 900\n",
        ),
    ]);
    let desired = Desired::from_state(&state("nist-800-63b")).unwrap();
    let (observed, _) = observe(&root.host()).unwrap();
    expect![[r#"
        === /etc/security/pwquality.conf
        - pwquality.conf minlen=8 -> pwquality.conf minlen=15
        - pwquality.conf minclass=3 -> pwquality.conf minclass=0
        - pwquality.conf dcredit unset -> pwquality.conf dcredit=0
        - pwquality.conf ucredit unset -> pwquality.conf ucredit=0
        - pwquality.conf lcredit unset -> pwquality.conf lcredit=0
        - pwquality.conf ocredit unset -> pwquality.conf ocredit=0
        - pwquality.conf maxrepeat unset -> pwquality.conf maxrepeat=0
        - pwquality.conf maxclassrepeat unset -> pwquality.conf maxclassrepeat=0
        - pwquality.conf dictcheck unset -> pwquality.conf dictcheck=1
        minlen = 15
        minclass = 0
        # Added by Bulwark (password policy):
        dcredit = 0
        ucredit = 0
        lcredit = 0
        ocredit = 0
        maxrepeat = 0
        maxclassrepeat = 0
        dictcheck = 1
    "#]]
    .assert_eq(&show_plan(&desired, &observed));
    for edit in plan(&desired, &observed).edits {
        apply(&root.host(), &edit).unwrap();
    }
    let (observed, _) = observe(&root.host()).unwrap();
    assert_eq!(show_plan(&desired, &observed), "");
}

// ---------------------------------------------------------------- the enforcer

/// Real-looking files: this machine's own (read only), else small stand-ins.
fn seeded_root() -> Root {
    let real = |p: &str, fallback: &str| {
        std::fs::read_to_string(p).unwrap_or_else(|_| fallback.to_owned())
    };
    Root::new(&[
        ("/etc/login.defs", &real("/etc/login.defs", LOGIN_DEFS)),
        ("/etc/security/pwquality.conf", &real("/etc/security/pwquality.conf", PWQUALITY)),
        ("/etc/security/faillock.conf", &real("/etc/security/faillock.conf", "# deny = 3\n")),
        (
            "/etc/shadow",
            "root:$y$j9T$abc:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nrad:$y$j9T$x:19000:1:90:7:::\n",
        ),
    ])
}

fn detail<'a>(pass: &'a Pass, key: &str) -> Option<&'a str> {
    pass.details.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn snapshot(root: &Root) -> Vec<String> {
    ManagedFile::ALL.iter().map(|f| root.read(f.path())).collect()
}

#[tokio::test]
async fn enforcer_applies_once_repairs_drift_and_audits() {
    let root = seeded_root();
    let original_pwq = root.read("/etc/security/pwquality.conf");
    let enforcer = PasswordEnforcer::new(root.host(), false);
    let desired = desired_state(Some(state("cis-debian12")), 4);

    // First pass: applied, compliant, the profile and effective values reported.
    let pass = enforcer.reconcile(&desired, &Trigger::NewState).await.unwrap();
    assert_eq!(pass.state, pb::EnforcerState::Compliant, "{}", pass.reason);
    assert!(pass.findings.is_empty());
    assert_eq!(detail(&pass, "profile"), Some("cis-debian12@1"));
    assert_eq!(detail(&pass, "pwquality.conf minlen"), Some("14"));
    assert_eq!(detail(&pass, "faillock.conf even_deny_root"), Some("set"));
    assert_eq!(detail(&pass, "login.defs PASS_MAX_DAYS"), Some("365"));
    assert_eq!(detail(&pass, "accounts_aging_out_of_policy"), Some("root (max 99999)"));
    assert!(pass.reason.contains("login.defs applies to new accounts only"), "{}", pass.reason);
    let backup = backup_path(&root.path("/etc/security/pwquality.conf"));
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original_pwq);
    let pwq = root.read("/etc/security/pwquality.conf");
    assert!(pwq.contains("\nminlen = 14\n") && pwq.contains("\nenforce_for_root\n"), "{pwq}");
    // Comments kept: every original line is still there, in order.
    let kept: Vec<&str> = pwq.lines().collect();
    let mut at = 0;
    for line in original_pwq.lines().filter(|l| l.starts_with('#')) {
        at = kept[at..]
            .iter()
            .position(|k| *k == line)
            .map(|p| at + p + 1)
            .unwrap_or_else(|| panic!("lost {line:?}"));
    }

    // Second pass: nothing changes, not even the files' modification times.
    let mtime = |p: &str| std::fs::metadata(root.path(p)).unwrap().modified().unwrap();
    let before = (snapshot(&root), mtime("/etc/login.defs"));
    let pass = enforcer.reconcile(&desired, &Trigger::Periodic).await.unwrap();
    assert_eq!((pass.state, pass.findings.len()), (pb::EnforcerState::Compliant, 0));
    assert_eq!((snapshot(&root), mtime("/etc/login.defs")), before);

    // Drift: someone lowers minlen; the next pass puts it back and says so.
    root.write("/etc/security/pwquality.conf", &pwq.replace("minlen = 14", "minlen = 8"));
    let pass = enforcer.reconcile(&desired, &Trigger::Drift("edited".into())).await.unwrap();
    assert_eq!(pass.state, pb::EnforcerState::DriftedRepaired);
    let f = &pass.findings[..];
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].kind, f[0].before.as_str(), f[0].after.as_str()),
        ("drift-repaired", "pwquality.conf minlen=8", "pwquality.conf minlen=14")
    );
    assert_eq!(root.read("/etc/security/pwquality.conf"), pwq);
    // The backup is the original, kept once.
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original_pwq);
    // A key moved to a drop-in that pwquality.conf overrides is no drift.
    root.write("/etc/security/pwquality.conf.d/90-local.conf", "minlen = 6\n");
    let pass = enforcer.reconcile(&desired, &Trigger::Periodic).await.unwrap();
    assert!(pass.findings.is_empty(), "{:?}", pass.findings);

    // Audit mode: the difference is reported once, nothing is written.
    let audit = desired_state(
        Some(pb::PasswordState { audit: true, min_length: Some(16), ..state("cis-debian12") }),
        5,
    );
    let before = snapshot(&root);
    let pass = enforcer.reconcile(&audit, &Trigger::NewState).await.unwrap();
    assert_eq!(pass.state, pb::EnforcerState::AuditNoncompliant);
    assert_eq!(
        pass.reason,
        "pwquality.conf minlen=14 -> pwquality.conf minlen=16; mode audit, nothing changed; \
         1 account(s) keep a password max age above 365 days (login.defs applies to new \
         accounts only): root (max 99999)"
    );
    assert_eq!(pass.findings.len(), 1);
    assert_eq!(pass.findings[0].kind, "drift-detected");
    let again = enforcer.reconcile(&audit, &Trigger::Periodic).await.unwrap();
    assert!(again.findings.is_empty());
    assert_eq!(snapshot(&root), before);

    // No passwords section: not managed, nothing touched.
    let pass = enforcer.reconcile(&desired_state(None, 6), &Trigger::NewState).await.unwrap();
    assert_eq!(pass.state, pb::EnforcerState::NotManaged);
    assert_eq!(snapshot(&root), before);
}

#[tokio::test]
async fn missing_files_are_created_and_unreadable_ones_fail_with_their_path() {
    let root = Root::new(&[("/etc/hostname", "lab\n")]);
    let enforcer = PasswordEnforcer::new(root.host(), false);
    let desired = desired_state(Some(state("nist-800-63b")), 1);
    let pass = enforcer.reconcile(&desired, &Trigger::NewState).await.unwrap();
    assert_eq!(pass.state, pb::EnforcerState::Compliant);
    let faillock = root.read("/etc/security/faillock.conf");
    assert!(faillock.starts_with(files::CREATED_HEADER), "{faillock}");
    assert!(!backup_path(&root.path("/etc/security/faillock.conf")).exists());

    // A directory where login.defs should be cannot be read: a failure naming the path.
    std::fs::remove_file(root.path("/etc/login.defs")).unwrap();
    std::fs::create_dir(root.path("/etc/login.defs")).unwrap();
    let err = enforcer.reconcile(&desired, &Trigger::Periodic).await.unwrap_err().to_string();
    assert!(err.starts_with("cannot read /etc/login.defs: "), "{err}");
}

#[tokio::test]
async fn unknown_profile_fails_without_touching_files() {
    let root = seeded_root();
    let before = snapshot(&root);
    let enforcer = PasswordEnforcer::new(root.host(), false);
    let err = enforcer
        .reconcile(&desired_state(Some(state("pci-dss")), 1), &Trigger::NewState)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("unknown password profile \"pci-dss\""), "{err}");
    assert_eq!(snapshot(&root), before);
}

/// Waits for a drift message naming `path`.
async fn drift_named(rx: &mut mpsc::Receiver<String>, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(msg)) if msg.contains(path) => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("drift watch ended"),
            Err(_) => panic!("no drift event for {path} within 5 s"),
        }
    }
}

#[tokio::test]
async fn drift_watch_sees_edits_renames_and_new_drop_ins() {
    let root = seeded_root();
    let enforcer = PasswordEnforcer::new(root.host(), false);
    let mut rx = enforcer.watch_drift().await.expect("a drift watch");
    // Unrelated files in the watched directories say nothing.
    root.write("/etc/hostname", "lab\n");
    // An editor-style write: a temp file renamed over the managed one.
    root.write("/etc/security/.pwq.swp", "minlen = 6\n");
    std::fs::rename(root.path("/etc/security/.pwq.swp"), root.path("/etc/security/pwquality.conf"))
        .unwrap();
    drift_named(&mut rx, "/etc/security/pwquality.conf").await;
    root.write("/etc/login.defs", "PASS_MAX_DAYS 99999\n");
    drift_named(&mut rx, "/etc/login.defs").await;
    // pwquality.conf.d did not exist when the watch started.
    root.write("/etc/security/pwquality.conf.d/10-x.conf", "minlen = 6\n");
    drift_named(&mut rx, "/etc/security/pwquality.conf.d").await;
    root.write("/etc/security/pwquality.conf.d/20-y.conf", "minlen = 6\n");
    drift_named(&mut rx, "/etc/security/pwquality.conf.d/20-y.conf").await;
    // Only managed paths were named.
    while let Ok(msg) = rx.try_recv() {
        assert!(!msg.contains("hostname") && !msg.contains(".swp"), "{msg}");
    }
}

// ---------------------------------------------------------------- the real libpwquality

/// Runs `pwscore` in a private mount namespace where `root`'s etc/security is bind-mounted
/// over /etc/security (the machine's own /etc is never changed). Ok(score) or Err(why).
fn pwscore(root: &Path, password: &str) -> Result<String, String> {
    let security = root.join("etc/security");
    let script = "mount --bind \"$1\" /etc/security && printf '%s\\n' \"$2\" | pwscore";
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", script, "sh"])
        .arg(&security)
        .arg(password)
        .output()
        .unwrap_or_else(|e| panic!("the pwscore test needs `unshare` (util-linux): {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if stderr.contains("unshare failed") || stderr.contains("mount:") {
        panic!(
            "the pwscore test needs root (a private mount namespace and a bind mount): {stderr}"
        );
    }
    if stderr.contains("pwscore: not found") || stderr.contains("pwscore: command not found") {
        panic!("the pwscore test needs pwscore (apt-get install libpwquality-tools): {stderr}");
    }
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(stderr)
    }
}

#[tokio::test]
async fn real_pwscore_follows_the_file_the_enforcer_wrote() {
    let root = seeded_root();
    let enforcer = PasswordEnforcer::new(root.host(), false);

    let cis = pb::PasswordState { min_length: Some(12), ..state("cis-debian12") };
    let pass = enforcer.reconcile(&desired_state(Some(cis), 1), &Trigger::NewState).await.unwrap();
    assert_eq!(pass.state, pb::EnforcerState::Compliant, "{}", pass.reason);
    let short = pwscore(root.dir.path(), "Kx7pq2Lmw9a").unwrap_err();
    assert!(short.contains("shorter than 12"), "{short}");
    let one_class = pwscore(root.dir.path(), "qmzvtrlxpwkhnbgd").unwrap_err();
    assert!(one_class.contains("less than 3 character classes"), "{one_class}");
    pwscore(root.dir.path(), "Kx7pq2Lmw9a8").expect("CIS accepts 12 characters of 3 classes");

    // NIST: length, no composition rules.
    let pass = enforcer
        .reconcile(&desired_state(Some(state("nist-800-63b")), 2), &Trigger::NewState)
        .await
        .unwrap();
    assert_eq!(pass.state, pb::EnforcerState::Compliant, "{}", pass.reason);
    pwscore(root.dir.path(), "qmzvtrlxpwkhnbgd").expect("NIST accepts 16 lowercase letters");
    let short = pwscore(root.dir.path(), "Kx7pq2Lmw9a8bZ").unwrap_err();
    assert!(short.contains("shorter than 15"), "{short}");
}
