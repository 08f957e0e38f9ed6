//! Parsers for the login lines of auth logs and the journal: sshd and sshd-session
//! (accepted / failed password, publickey and keyboard-interactive, invalid user,
//! disconnect before authentication), login, su, sudo, gdm (PAM) and pam_faillock. Pure
//! and total: any input gives `None` or a [`Line`], never a panic (a property test feeds
//! arbitrary lines).

/// A log line split into its syslog parts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Raw {
    /// Milliseconds since the epoch, when the line carries a full timestamp.
    pub time_ms: Option<i64>,
    pub host: Option<String>,
    /// The program (syslog tag without the pid), e.g. "sshd-session".
    pub program: Option<String>,
    pub message: String,
}

/// What a line says about a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// An authentication attempt's outcome.
    Attempt(Attempt),
    /// sshd: "Invalid user NAME from ADDR port P" (the attempt lines follow).
    InvalidUser { user: String, source: String, port: String },
    /// sshd: a connection that ended before authentication ("[preauth]").
    Closed { user: String, invalid: bool, source: String, port: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attempt {
    pub service: String,
    pub user: String,
    /// Address for remote logins; the terminal or invoking user for local ones.
    pub source: String,
    /// sshd's port, to tie lines of one connection together.
    pub port: String,
    pub method: String,
    pub success: bool,
    pub reason: String,
}

/// Splits a syslog line: `[TIMESTAMP HOST ]PROGRAM[PID]: MESSAGE`, RFC 3339 or BSD
/// timestamps; a line without a tag (sshd `-E` files) is all message.
pub fn split_syslog(line: &str) -> Raw {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut raw = Raw::default();
    let mut rest = line;
    if let Some((first, after)) = line.split_once(' ') {
        if let Some(ms) = parse_rfc3339(first) {
            raw.time_ms = Some(ms);
            rest = after;
        } else if is_bsd_time(line) {
            // "Mmm dd hh:mm:ss ": no year or zone; the reader's clock is used instead.
            rest = line.get(16..).unwrap_or("");
        }
        if rest.len() != line.len()
            && let Some((host, after)) = rest.split_once(' ')
        {
            raw.host = Some(host.to_owned());
            rest = after;
        }
    }
    match tag(rest) {
        Some((program, message)) => {
            raw.program = Some(program.to_owned());
            raw.message = message.to_owned();
        }
        None => raw.message = rest.to_owned(),
    }
    raw
}

/// `prog[pid]: rest` or `prog: rest` with a plausible program name.
fn tag(s: &str) -> Option<(&str, &str)> {
    let (head, message) = s.split_once(": ")?;
    let program = match head.split_once('[') {
        Some((p, pid)) if pid.ends_with(']') => p,
        Some(_) => return None,
        None => head,
    };
    let plausible = !program.is_empty()
        && program.len() <= 64
        && program.chars().all(|c| c.is_ascii_alphanumeric() || "-_./()]".contains(c));
    plausible.then_some((program, message))
}

fn is_bsd_time(s: &str) -> bool {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let b = s.as_bytes();
    b.len() > 16
        && MONTHS.iter().any(|m| s.starts_with(m))
        && b[3] == b' '
        && b[6] == b' '
        && b[9] == b':'
        && b[12] == b':'
        && b[15] == b' '
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 9 {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to milliseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(['T', 't'])?;
    let mut d = date.split('-');
    let (y, mo, da) = (digits(d.next()?)?, digits(d.next()?)?, digits(d.next()?)?);
    if d.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let (clock, offset_s) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off.get(1..)?.split_once(':')?;
        (c, sign * (digits(oh)? * 3600 + digits(om)? * 60))
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.split(':');
    let (h, mi, se) = (digits(t.next()?)?, digits(t.next()?)?, digits(t.next()?)?);
    if t.next().is_some() || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let ms = if frac.is_empty() {
        0
    } else {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        format!("{frac:0<3}").get(..3).and_then(digits)?
    };
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    Some(secs * 1000 + ms)
}

/// The service a program logs as: sshd-session is sshd; journald's "gdm-password]" quirk
/// is trimmed.
pub fn service_of(program: &str) -> String {
    let p = program.trim_end_matches(']');
    match p {
        "sshd-session" | "sshd-auth" => "sshd".into(),
        other => other.to_owned(),
    }
}

/// What `message` (logged by `program`, if known) says about a login.
pub fn parse(program: Option<&str>, message: &str) -> Option<Line> {
    let message = message.trim();
    let service = program.map(service_of);
    if let Some(pam) = message.strip_prefix("pam_faillock(") {
        return pam_faillock(pam);
    }
    if message.starts_with("pam_unix(") {
        return pam_unix(message);
    }
    match service.as_deref() {
        None | Some("sshd") => sshd(message),
        Some("login") => login(message),
        Some("su") => su(message),
        Some("sudo") => sudo(message),
        _ => None,
    }
}

/// "ADDR port PORT[ ...]" → (addr, port).
fn addr_port(s: &str) -> Option<(String, String)> {
    let (addr, rest) = s.split_once(" port ")?;
    let port = rest.split_whitespace().next()?;
    if addr.is_empty() || addr.contains(' ') || port.parse::<u16>().is_err() {
        return None;
    }
    Some((addr.to_owned(), port.to_owned()))
}

fn sshd(m: &str) -> Option<Line> {
    for (prefix, success) in [("Accepted ", true), ("Failed ", false)] {
        if let Some(rest) = m.strip_prefix(prefix) {
            let (method, rest) = rest.split_once(" for ")?;
            if method == "none" || method.contains(' ') {
                return None;
            }
            let (who, place) = rest.rsplit_once(" from ")?;
            let (source, port) = addr_port(place)?;
            let (user, invalid) = match who.strip_prefix("invalid user ") {
                Some(u) => (u, true),
                None => (who, false),
            };
            let reason = match (success, invalid) {
                (true, _) => String::new(),
                (false, true) => "invalid-user".into(),
                (false, false) => format!("bad-{}", method.split('/').next().unwrap_or(method)),
            };
            return Some(Line::Attempt(Attempt {
                service: "sshd".into(),
                user: user.to_owned(),
                source,
                port,
                method: method.to_owned(),
                success,
                reason,
            }));
        }
    }
    if let Some(rest) = m.strip_prefix("Invalid user ") {
        let (user, place) = rest.rsplit_once(" from ")?;
        let (source, port) = addr_port(place)?;
        return Some(Line::InvalidUser { user: user.to_owned(), source, port });
    }
    if !m.ends_with("[preauth]") {
        return None;
    }
    let rest = ["Connection closed by ", "Disconnected from ", "Connection reset by "]
        .iter()
        .find_map(|p| m.strip_prefix(p))?;
    let (user, invalid, place) = if let Some(r) = rest.strip_prefix("authenticating user ") {
        let (user, place) = r.split_once(' ')?;
        (user, false, place)
    } else if let Some(r) = rest.strip_prefix("invalid user ") {
        // The name may be empty ("invalid user  ADDR") or contain spaces: take from the end.
        let place_at = r.rfind(" port ")?;
        let addr_at = r[..place_at].rfind(' ').map_or(0, |i| i + 1);
        (r[..addr_at].trim_end(), true, &r[addr_at..])
    } else if rest.starts_with("user ") {
        return None;
    } else {
        ("", false, rest)
    };
    let (source, port) = addr_port(place)?;
    Some(Line::Closed { user: user.to_owned(), invalid, source, port })
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

fn local(service: &str, user: &str, source: &str, success: bool, reason: &str) -> Option<Line> {
    Some(Line::Attempt(Attempt {
        service: service.into(),
        user: user.into(),
        source: source.into(),
        port: String::new(),
        method: "password".into(),
        success,
        reason: reason.into(),
    }))
}

fn login(m: &str) -> Option<Line> {
    if m.starts_with("FAILED LOGIN") {
        let user = between(m, "FOR '", "'").or_else(|| between(m, "FOR ", ","))?;
        let source = between(m, "on '", "'").or_else(|| between(m, "FROM ", " FOR")).unwrap_or("");
        let reason = m.rsplit_once(", ").map_or("authentication failure", |(_, r)| r);
        return local("login", user, source, false, reason);
    }
    if let Some(rest) = m.strip_prefix("ROOT LOGIN ") {
        let source = between(rest, "'", "'").unwrap_or_else(|| {
            let r = rest.trim_start();
            r.strip_prefix("ON ").or_else(|| r.strip_prefix("on ")).unwrap_or(r)
        });
        return local("login", "root", source.trim(), true, "");
    }
    if let Some(rest) = m.strip_prefix("LOGIN ON ") {
        let (tty, user) = rest.split_once(" BY ")?;
        let user = user.split_whitespace().next()?;
        return local("login", user, tty, true, "");
    }
    None
}

fn su(m: &str) -> Option<Line> {
    let (failed, rest) = match m.strip_prefix("FAILED SU ") {
        Some(r) => (true, r),
        None => (false, m),
    };
    if let Some(r) = rest.strip_prefix("(to ") {
        let (target, by) = r.split_once(") ")?;
        let invoker = by.split(" on ").next().unwrap_or(by);
        return local(
            "su",
            target,
            invoker,
            !failed,
            if failed { "authentication failure" } else { "" },
        );
    }
    if let Some(r) = m.strip_prefix("FAILED su for ") {
        let (target, invoker) = r.split_once(" by ")?;
        return local("su", target, invoker, false, "authentication failure");
    }
    None
}

fn sudo(m: &str) -> Option<Line> {
    let (user, rest) = m.split_once(" : ")?;
    let user = user.trim();
    if user.is_empty() || user.contains(' ') {
        return None;
    }
    let first = rest.split(" ; ").next()?.trim();
    let tty = between(rest, "TTY=", " ;").unwrap_or("");
    let attempt = |success, reason: &str| local("sudo", user, tty, success, reason);
    if first.starts_with("TTY=") {
        attempt(true, "")
    } else if first.contains('=') {
        None
    } else {
        attempt(false, first)
    }
}

/// `key=value` out of a PAM message (`rhost=`, `user=`, `tty=`).
fn pam_field<'a>(m: &'a str, key: &str) -> &'a str {
    m.split_whitespace().find_map(|w| w.strip_prefix(key)).unwrap_or("")
}

fn pam_service(m: &str) -> Option<(&str, &str)> {
    let inner = between(m, "(", ")")?;
    inner.split_once(':')
}

/// Display-manager logins, known only through PAM.
fn is_display_manager(service: &str) -> bool {
    ["gdm", "lightdm", "sddm", "xdm", "kdm"].iter().any(|d| service.starts_with(d))
}

fn pam_unix(m: &str) -> Option<Line> {
    let (service, kind) = pam_service(m)?;
    if !is_display_manager(service) {
        return None;
    }
    let rhost = pam_field(m, "rhost=");
    let source = if rhost.is_empty() { pam_field(m, "tty=") } else { rhost };
    if kind == "auth" && m.contains("authentication failure") {
        return local(service, pam_field(m, "user="), source, false, "authentication failure");
    }
    if kind == "session" {
        let user = between(m, "session opened for user ", "(")?;
        return local(service, user, source, true, "");
    }
    None
}

fn pam_faillock(m: &str) -> Option<Line> {
    let (service, _) = m.split_once(':')?;
    let user = between(m, "failures for user ", " ")?;
    let service = service_of(service);
    Some(Line::Attempt(Attempt {
        service,
        user: user.to_owned(),
        method: "password".into(),
        success: false,
        reason: "account-locked (faillock)".into(),
        ..Attempt::default()
    }))
}
