//! Waiting by polling with a deadline, never by bare sleeps.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::time::Instant;

/// Polls `check` every 50 ms until it returns `Ok`, or fails after `timeout` with the last
/// error and what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                bail!("timed out after {timeout:?} waiting for {what}: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Reads `follow` (a `FollowEvents` stream) until the event of account `user` arrives;
/// fails when none comes within 10 s of the previous one or the stream ends.
pub async fn next_event_for_user(
    follow: &mut tonic::Streaming<bulwark_proto::v1::StoredEvent>,
    user: &str,
) -> Result<()> {
    use anyhow::Context;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), follow.message()).await;
        let e = next
            .with_context(|| format!("no event for {user} within 10 s"))??
            .context("the event stream ended")?;
        if e.event.is_some_and(|e| e.fields.get("user").map(String::as_str) == Some(user)) {
            return Ok(());
        }
    }
}
