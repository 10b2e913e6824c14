//! Waiting for a condition, with a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] probes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Probes every [`POLL_INTERVAL`] until `probe` yields `Some`, and returns it; panics with
/// `what` once `deadline` has passed.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_every(what, deadline, POLL_INTERVAL, probe).await
}

/// [`eventually`], probing every `interval`.
pub async fn eventually_every<T, F, Fut>(
    what: &str,
    deadline: Duration,
    interval: Duration,
    mut probe: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(interval).await;
    }
}
