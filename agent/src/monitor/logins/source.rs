//! Where login lines come from: log files (auth.log, secure, or any named file) and the
//! binary btmp/wtmp records, followed across rotation and truncation from a persisted
//! position (inode + offset), and the journal through `journalctl -f -o json` from a
//! persisted cursor. Each source sends [`Batch`]es of lines (or records) with the mark to
//! store once their events are spooled.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use super::parse::{Raw, split_syslog};
use super::utmp::{self, Login};

/// Largest read from a log file in one batch.
const CHUNK: u64 = 1 << 20;
/// How often a log file is checked for new lines.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A syslog-format file (as given, not under the root).
    File(PathBuf),
    /// A btmp or wtmp file of `struct utmp` records.
    Records { path: PathBuf, kind: utmp::Kind },
    /// `journalctl` over these files / directories; both empty: the system journal (of
    /// `root` when it is not `/`).
    Journal { files: Vec<PathBuf>, dirs: Vec<PathBuf>, root: PathBuf },
}

impl Source {
    /// The key its mark is stored under in the agent cache.
    pub fn key(&self) -> String {
        match self {
            Source::File(p) => format!("logins.file:{}", p.display()),
            Source::Records { path, kind } => {
                format!("logins.{}:{}", kind.file_name(), path.display())
            }
            Source::Journal { files, dirs, root } => {
                let mut all: Vec<String> =
                    files.iter().chain(dirs).map(|p| p.display().to_string()).collect();
                if all.is_empty() {
                    all.push(format!("system@{}", root.display()));
                }
                format!("logins.journal:{}", all.join(","))
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::File(p) | Source::Records { path: p, .. } => p.display().to_string(),
            Source::Journal { files, dirs, .. } if files.is_empty() && dirs.is_empty() => {
                "journal".into()
            }
            Source::Journal { .. } => {
                format!("journal ({})", self.key().trim_start_matches("logins.journal:"))
            }
        }
    }
}

/// Lines (or records) read, and the mark that says they were.
#[derive(Debug, Default)]
pub struct Batch {
    pub key: String,
    pub lines: Vec<Raw>,
    /// From btmp/wtmp: attempts already, the supplement to the lines of the other sources.
    pub logins: Vec<Login>,
    /// From a btmp/wtmp source: judged after [`super::HOLD`], in order.
    pub supplement: bool,
    pub mark: Vec<u8>,
}

/// How a followed file is cut into entries.
#[derive(Debug, Clone, Copy)]
enum Framing {
    Lines,
    Records(utmp::Kind),
}

/// What one read of a file gave.
#[derive(Debug, Default)]
struct Chunk {
    lines: Vec<Raw>,
    logins: Vec<Login>,
}

impl Chunk {
    fn extend(&mut self, other: Chunk) {
        self.lines.extend(other.lines);
        self.logins.extend(other.logins);
    }
}

/// A file position: which file (inode) and how far into it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub inode: u64,
    pub offset: u64,
}

/// Follows `source` from `mark` (or, without one, from the start when `from_start`, else
/// from its end) until `tx` closes.
pub async fn follow(
    source: Source,
    mark: Option<Vec<u8>>,
    from_start: bool,
    tx: mpsc::Sender<Batch>,
) {
    let key = source.key();
    match source {
        Source::File(path) => {
            let pos = mark.and_then(|m| serde_json::from_slice::<Position>(&m).ok());
            tail_file(path, Framing::Lines, key, pos, from_start, tx).await
        }
        Source::Records { path, kind } => {
            let pos = mark.and_then(|m| serde_json::from_slice::<Position>(&m).ok());
            tail_file(path, Framing::Records(kind), key, pos, from_start, tx).await
        }
        Source::Journal { files, dirs, root } => {
            let cursor = mark.and_then(|m| String::from_utf8(m).ok());
            follow_journal(files, dirs, root, key, cursor, from_start, tx).await
        }
    }
}

/// The rotated copy of `path` that is the file `inode`, whatever logrotate named it
/// (`auth.log.1`, `secure-20250101`, ...): a file beside it, named after it, with that
/// inode. A rotation that compressed it at once leaves none.
fn rotated(path: &Path, inode: u64) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    std::fs::read_dir(path.parent()?).ok()?.flatten().map(|e| e.path()).find(|p| {
        p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&name))
            && p != path
            && std::fs::metadata(p).is_ok_and(|m| m.ino() == inode)
    })
}

/// Reads complete lines (or records) of `path` from `offset`, at most [`CHUNK`] bytes;
/// returns them and the offset after the last one.
fn read_chunk(
    path: &Path,
    framing: Framing,
    offset: u64,
    to_eof: bool,
) -> std::io::Result<(Chunk, u64)> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(CHUNK).read_to_end(&mut buf)?;
    let mut chunk = Chunk::default();
    let used = match framing {
        Framing::Lines => {
            let used = match buf.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                // A line longer than a chunk is taken as it is; a rotated file's last line
                // may lack its newline.
                None if buf.len() as u64 == CHUNK || to_eof => buf.len(),
                None => 0,
            };
            chunk.lines = String::from_utf8_lossy(&buf[..used])
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(split_syslog)
                .collect();
            used
        }
        Framing::Records(kind) => {
            // A partial record is still being written; at the end of a rotated file it
            // never will be, and is skipped.
            let whole = buf.len() - buf.len() % utmp::RECORD;
            chunk.logins =
                utmp::records(&buf[..whole]).iter().filter_map(|r| utmp::login(r, kind)).collect();
            if to_eof { buf.len() } else { whole }
        }
    };
    Ok((chunk, offset + used as u64))
}

async fn tail_file(
    path: PathBuf,
    framing: Framing,
    key: String,
    pos: Option<Position>,
    from_start: bool,
    tx: mpsc::Sender<Batch>,
) {
    let mut pos = pos;
    let mut warned = false;
    loop {
        if tx.is_closed() {
            return;
        }
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                if !warned {
                    tracing::info!(file = %path.display(), error = %e, "login log not there (yet)");
                    warned = true;
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        warned = false;
        let current = match pos {
            None => Position { inode: meta.ino(), offset: if from_start { 0 } else { meta.len() } },
            Some(p) if p.inode != meta.ino() => {
                // Rotated: finish the old file first, then start the new one at 0.
                let mut rest = Chunk::default();
                if let Some(old) = rotated(&path, p.inode) {
                    let mut offset = p.offset;
                    while let Ok((more, next)) = read_chunk(&old, framing, offset, true) {
                        if next == offset {
                            break;
                        }
                        rest.extend(more);
                        offset = next;
                    }
                    tracing::info!(file = %path.display(), lines = rest.lines.len() + rest.logins.len(), "log rotated; read the rest of the old file");
                } else {
                    tracing::warn!(file = %path.display(), "log replaced and the old file is gone; lines written to it after the last read are lost");
                }
                let next = Position { inode: meta.ino(), offset: 0 };
                if !send(&tx, &key, framing, rest, &next).await {
                    return;
                }
                next
            }
            Some(p) if meta.len() < p.offset => {
                tracing::info!(file = %path.display(), "log truncated; reading from its start");
                Position { inode: p.inode, offset: 0 }
            }
            Some(p) => p,
        };
        pos = Some(current);
        if meta.len() > current.offset {
            let (p, off) = (path.clone(), current.offset);
            match tokio::task::spawn_blocking(move || read_chunk(&p, framing, off, false)).await {
                Ok(Ok((chunk, next))) if next > current.offset => {
                    let next = Position { inode: current.inode, offset: next };
                    if !send(&tx, &key, framing, chunk, &next).await {
                        return;
                    }
                    pos = Some(next);
                    continue;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read login log")
                }
                Err(e) => tracing::warn!(error = %e, "login log reader failed"),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn send(
    tx: &mpsc::Sender<Batch>,
    key: &str,
    framing: Framing,
    chunk: Chunk,
    pos: &Position,
) -> bool {
    let batch = Batch {
        key: key.to_owned(),
        lines: chunk.lines,
        logins: chunk.logins,
        supplement: matches!(framing, Framing::Records(_)),
        mark: serde_json::to_vec(pos).unwrap_or_default(),
    };
    tx.send(batch).await.is_ok()
}

/// A journal entry (`journalctl -o json`) as a line; `None` for entries without a
/// message. `MESSAGE` may be a string or, for binary messages, an array of bytes.
pub fn journal_entry(json: &str) -> Option<(Raw, String)> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let cursor = v.get("__CURSOR")?.as_str()?.to_owned();
    let text = |key: &str| v.get(key).and_then(|s| s.as_str()).map(str::to_owned);
    let message = match v.get("MESSAGE") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(bytes)) => {
            let bytes: Vec<u8> = bytes
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => String::new(),
    };
    let raw = Raw {
        time_ms: text("__REALTIME_TIMESTAMP")
            .and_then(|t| t.parse::<i64>().ok())
            .map(|us| us / 1000),
        host: text("_HOSTNAME"),
        program: text("SYSLOG_IDENTIFIER").or_else(|| text("_COMM")),
        message,
    };
    Some((raw, cursor))
}

#[allow(clippy::too_many_arguments)]
async fn follow_journal(
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    root: PathBuf,
    key: String,
    mut cursor: Option<String>,
    from_start: bool,
    tx: mpsc::Sender<Batch>,
) {
    loop {
        let mut cmd = tokio::process::Command::new("journalctl");
        // --merge: without it, --follow limits itself to the current boot.
        cmd.args(["-o", "json", "--no-pager", "--follow", "--merge"]);
        for f in &files {
            cmd.arg(format!("--file={}", f.display()));
        }
        for d in &dirs {
            cmd.arg(format!("--directory={}", d.display()));
        }
        if files.is_empty() && dirs.is_empty() && root != Path::new("/") {
            cmd.arg(format!("--root={}", root.display()));
        }
        match &cursor {
            Some(c) => cmd.arg(format!("--after-cursor={c}")),
            None if from_start => cmd.arg("--no-tail"),
            None => cmd.args(["--lines", "0"]),
        };
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null()).kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot run journalctl; retrying in 30 s");
                tokio::time::sleep(Duration::from_secs(30)).await;
                continue;
            }
        };
        let Some(stdout) = child.stdout.take() else { return };
        let mut lines = BufReader::new(stdout).lines();
        'read: loop {
            let first = tokio::select! {
                () = tx.closed() => return,
                l = lines.next_line() => l,
            };
            let Ok(Some(first)) = first else { break 'read };
            let mut batch = Vec::new();
            let mut last = None;
            let mut next = Some(first);
            // Whatever else is ready goes in the same batch.
            while let Some(line) = next.take() {
                if let Some((raw, c)) = journal_entry(&line) {
                    batch.push(raw);
                    last = Some(c);
                }
                if batch.len() < 1000
                    && let Ok(Ok(Some(l))) =
                        tokio::time::timeout(Duration::from_millis(5), lines.next_line()).await
                {
                    next = Some(l);
                }
            }
            let Some(c) = last else { continue };
            cursor = Some(c.clone());
            if tx
                .send(Batch {
                    key: key.clone(),
                    lines: batch,
                    mark: c.into_bytes(),
                    ..Batch::default()
                })
                .await
                .is_err()
            {
                return;
            }
        }
        let status = child.wait().await;
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = e.read_to_string(&mut err).await;
        }
        tracing::warn!(status = ?status.ok(), stderr = %err.trim(), "journalctl ended; following again in 2 s");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
