//! Harness for the end-to-end tests: builds the guest components from source, runs real hosts
//! on `127.0.0.1:0` with their own shutdown, and talks to them over real sockets.
//!
//! Waiting is always polling with a deadline, never a fixed sleep.

pub mod backend;
pub mod client;
pub mod cluster;
pub mod guests;
pub mod host;
pub mod java;
pub mod proxy;
pub mod redis_cluster;
pub mod sse;

use std::time::Duration;

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `check` until it returns `Some`, or panics after `within` with `what`.
pub async fn eventually<T>(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    let mut backoff = Duration::from_millis(2);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
}

/// The value of one series on a Prometheus page, named with its labels as the page writes
/// them (`name{label="v"}`); `None` when the page does not have it.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
