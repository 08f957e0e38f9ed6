use std::path::Path;

use super::accounts::{Password, diff, parse};
use super::*;
use crate::cache::Cache;
use crate::enforce::StatusBoard;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
rad:x:1000:1000:Rad Tech:/home/rad:/bin/bash
";
const SHADOW: &str = "root:*:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
www-data:*:19000:0:99999:7:::
rad:$6$salt$hash:19000:0:99999:7:::
";
const GROUP: &str = "root:x:0:
adm:x:4:
sudo:x:27:rad
rad:x:1000:
";

fn rules(extra: &[&str], allowed: &[&str]) -> Rules {
    Rules::from_state(&pb::UserState {
        alert_new_users: true,
        privileged_groups: extra.iter().map(|s| (*s).to_owned()).collect(),
        allowed_accounts: allowed.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    })
}

/// The changes from the base files to the edited ones, one line each:
/// "kind field=value ...".
fn check(passwd: &str, shadow: &str, group: &str, rules: &Rules, expected: &[&str]) {
    let before = parse(PASSWD, SHADOW, GROUP);
    let after = parse(passwd, shadow, group);
    let got: Vec<String> = diff(&before, &after, rules)
        .into_iter()
        .map(|c| {
            let mut f: Vec<String> = c.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            f.sort();
            format!("{} {}", c.kind, f.join(" "))
        })
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn parses_accounts_without_keeping_hashes() {
    let snap = parse(PASSWD, SHADOW, GROUP);
    assert_eq!(snap.users["rad"].password, Password::Set);
    assert_eq!(snap.users["daemon"].password, Password::Locked);
    assert_eq!(snap.members("sudo").into_iter().collect::<Vec<_>>(), ["rad"]);
    assert_eq!(snap.members("rad").into_iter().collect::<Vec<_>>(), ["rad"]);
    let json = serde_json::to_string(&snap).unwrap();
    assert!(!json.contains("$6$"), "{json}");
    // Garbage lines are skipped, not fatal.
    let odd = parse("x\n::::\nbob:x:notanumber:1::/:/bin/sh\n+nis\n# c\n", "", "g:x\n");
    assert!(odd.users.is_empty() && odd.groups.is_empty());
}

#[test]
fn every_kind_of_change() {
    let r = rules(&[], &[]);
    check(PASSWD, SHADOW, GROUP, &r, &[]);
    let added = format!("{PASSWD}eve:x:1001:1001::/home/eve:/bin/sh\n");
    check(&added, SHADOW, GROUP, &r, &["user-added gid=1001 shell=/bin/sh uid=1001 user=eve"]);
    check(&added, SHADOW, GROUP, &rules(&[], &["eve"]), &[]);
    let no_alert = Rules { alert_new_users: false, ..r.clone() };
    check(&added, SHADOW, GROUP, &no_alert, &[]);
    check(
        &PASSWD.replace("rad:x:1000:1000", "rad:x:0:1000"),
        SHADOW,
        GROUP,
        &r,
        &["uid-changed after=0 before=1000 uid=0 user=rad", "uid0-duplicate uid=0 user=rad"],
    );
    check(
        &PASSWD.replace("rad:x:1000:1000:Rad Tech:/home/rad:/bin/bash\n", ""),
        SHADOW,
        GROUP,
        &r,
        // Still listed in sudo's member list: still a member as far as group(5) goes.
        &["user-removed uid=1000 user=rad"],
    );
    check(
        PASSWD,
        &SHADOW.replace("$6$salt$hash", ""),
        GROUP,
        &r,
        &["password-emptied after=empty before=Set uid=1000 user=rad"],
    );
    check(
        &PASSWD.replace("/var/www:/usr/sbin/nologin", "/var/www:/bin/bash"),
        SHADOW,
        GROUP,
        &r,
        &["system-account-shell after=/bin/bash before=/usr/sbin/nologin uid=33 user=www-data"],
    );
    check(
        PASSWD,
        SHADOW,
        &GROUP
            .replace("adm:x:4:", "adm:x:4:rad")
            .replace("rad:x:1000:", "rad:x:1000:\ndocker:x:999:rad"),
        &rules(&["docker"], &[]),
        &[
            "privileged-group-added group=adm user=rad",
            "privileged-group-added group=docker user=rad",
        ],
    );
    let mut before = parse(PASSWD, SHADOW, GROUP);
    before.sudoers.insert("/etc/sudoers".into(), "aaaa".into());
    let mut after = before.clone();
    after.sudoers.insert("/etc/sudoers".into(), "bbbb".into());
    after.sudoers.insert("/etc/sudoers.d/eve".into(), "cccc".into());
    let kinds: Vec<String> = diff(&before, &after, &r).into_iter().map(|c| c.summary).collect();
    assert_eq!(kinds, ["/etc/sudoers changed", "/etc/sudoers.d/eve created"]);
}

fn seed_root(root: &Path) {
    std::fs::create_dir_all(root.join("etc/sudoers.d")).unwrap();
    std::fs::write(root.join("etc/passwd"), PASSWD).unwrap();
    std::fs::write(root.join("etc/shadow"), SHADOW).unwrap();
    std::fs::write(root.join("etc/group"), GROUP).unwrap();
    std::fs::write(root.join("etc/gshadow"), "root:*::\nsudo:*::rad\n").unwrap();
    std::fs::write(root.join("etc/sudoers"), "root ALL=(ALL:ALL) ALL\n").unwrap();
    // useradd --prefix reads these from the prefix.
    for f in ["login.defs"] {
        if Path::new("/etc").join(f).exists() {
            std::fs::copy(Path::new("/etc").join(f), root.join("etc").join(f)).unwrap();
        }
    }
}

fn policy(lock: bool) -> pb::UserState {
    pb::UserState {
        alert_new_users: true,
        allowed_accounts: vec!["svc".into()],
        lock_unexpected: lock,
        ..Default::default()
    }
}

#[tokio::test]
async fn baseline_then_events_then_lock_and_unlock() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    seed_root(&root);
    let cache = Cache::open(&dir.path().join("state")).unwrap();
    let host = Host::new(&root);
    let monitor = UsersMonitor::new(
        host.clone(),
        EventSink::new(cache.clone(), StatusBoard::default()),
        dir.path(),
        Duration::from_secs(60),
    );
    // The first scan takes the baseline and says nothing.
    let first = monitor.scan(&policy(true), 1).await.unwrap();
    assert_eq!((first.events, first.accounts), (0, 4));
    assert_eq!(cache.spool_len(), 0);
    // An unexpected account and an allowed one appear.
    let passwd =
        format!("{PASSWD}eve:x:1001:1001::/home/eve:/bin/sh\nsvc:x:1002:1002::/:/bin/sh\n");
    std::fs::write(root.join("etc/passwd"), passwd).unwrap();
    let shadow = format!("{SHADOW}eve:$6$x$y:1::::::\nsvc:$6$x$z:1::::::\n");
    std::fs::write(root.join("etc/shadow"), &shadow).unwrap();
    std::fs::write(root.join("etc/sudoers.d/eve"), "eve ALL=(ALL) NOPASSWD: ALL\n").unwrap();
    monitor.scan(&policy(true), 2).await.unwrap();
    let events = cache.spooled(100).unwrap();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.fields.get("user").or(e.fields.get("file")).unwrap().as_str()))
        .collect();
    assert_eq!(
        kinds,
        [("user-added", "eve"), ("sudoers-changed", "/etc/sudoers.d/eve"), ("user-locked", "eve")]
    );
    assert!(events.iter().all(|e| e.enforcer == "users" && e.revision == 2));
    let locked = std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    assert!(locked.contains("eve:!$6$x$y:") && locked.contains("svc:$6$x$z:"), "{locked}");
    // Nothing changed: nothing new.
    monitor.scan(&policy(true), 2).await.unwrap();
    assert_eq!(cache.spool_len(), 3);
    // Unlock reverses exactly Bulwark's lock and releases the account: not locked again.
    monitor.locks.unlock(&host, "eve").unwrap();
    assert_eq!(std::fs::read_to_string(root.join("etc/shadow")).unwrap(), shadow);
    monitor.scan(&policy(true), 2).await.unwrap();
    assert_eq!(std::fs::read_to_string(root.join("etc/shadow")).unwrap(), shadow);
    let again = monitor.locks.unlock(&host, "eve").unwrap_err().to_string();
    assert!(again.contains("not locked by Bulwark"), "{again}");
    assert!(monitor.locks.unlock(&host, "root").is_err());

    // An account created without a password (useradd's "!") and given one later is
    // locked when the password appears.
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    std::fs::write(root.join("etc/passwd"), format!("{passwd}trent:x:1003:1003::/:/bin/sh\n"))
        .unwrap();
    std::fs::write(root.join("etc/shadow"), format!("{shadow}trent:!:1::::::\n")).unwrap();
    monitor.scan(&policy(true), 3).await.unwrap();
    std::fs::write(root.join("etc/shadow"), format!("{shadow}trent:$6$a$b:1::::::\n")).unwrap();
    monitor.scan(&policy(true), 3).await.unwrap();
    let kinds: Vec<String> = cache
        .spooled(100)
        .unwrap()
        .iter()
        .skip(3)
        .map(|e| format!("{} {}", e.kind, e.fields["user"]))
        .collect();
    assert_eq!(kinds, ["user-added trent", "user-locked trent"]);
    let shadow_now = std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    assert!(shadow_now.contains("trent:!$6$a$b:"), "{shadow_now}");
}

/// Real shadow-utils on a lab root: `useradd --prefix` and `usermod --prefix -aG sudo`
/// seen through inotify, spooled within the latency target.
#[tokio::test]
async fn useradd_and_usermod_are_seen_through_inotify() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    seed_root(&root);
    let cache = Cache::open(&dir.path().join("state")).unwrap();
    let board = StatusBoard::default();
    let monitor = UsersMonitor::new(
        Host::new(&root),
        EventSink::new(cache.clone(), board.clone()),
        dir.path(),
        Duration::from_secs(600),
    );
    let state = pb::DesiredState { revision: 1, users: Some(policy(false)), ..Default::default() };
    let (_tx, desired) = watch::channel(Some(Arc::new(state)));
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(monitor.run(desired, shutdown));
    let wait = |kind: &'static str| {
        let cache = cache.clone();
        async move {
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if cache.spooled(100).unwrap().iter().any(|e| e.kind == kind) {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("no {kind} event within 10 s: {:?}", cache.spooled(100).unwrap());
        }
    };
    // The baseline first.
    while board.get("users").is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let prefix = root.display().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["useradd", "--prefix", &prefix, "mallory"]);
    let added = wait("user-added").await;
    run(&["usermod", "--prefix", &prefix, "-aG", "sudo", "mallory"]);
    let group = wait("privileged-group-added").await;
    eprintln!("spooled after useradd {added:?}, after usermod {group:?}");
    let events = cache.spooled(100).unwrap();
    let group_event = events.iter().find(|e| e.kind == "privileged-group-added").unwrap();
    assert_eq!(group_event.fields["user"], "mallory");
    assert_eq!(group_event.fields["group"], "sudo");
    assert_eq!(events.iter().filter(|e| e.kind == "user-added").count(), 1);
    let _ = stop.send(true);
    task.await.unwrap();
}
