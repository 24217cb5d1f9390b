//! Draining a node: it stops taking connections (503 `draining`), `/readyz` answers 503 so a
//! load balancer moves traffic away, and its sessions are closed with 1012 (reconnect at
//! once) spread evenly over `server.drain_period_secs`, so the rest of the cluster is not hit
//! by every client at once. A session closes after the message it is handling and its queued
//! frames; the node keeps running, empty, until it is stopped.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::{close_codes, sessions::Session, state::AppState};

/// What a drain request started.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Started {
    /// Whether this request started it (false: a drain was already under way).
    pub started: bool,
    /// Sessions it closes.
    pub sessions: usize,
    /// Over how long.
    pub period_secs: u64,
}

/// Starts draining, unless a drain is under way.
pub(crate) fn start(state: &AppState) -> Started {
    let period_secs = state.live().server.drain_period_secs;
    if state.draining.is_cancelled() {
        return Started {
            started: false,
            sessions: state.hub.registry.len(),
            period_secs,
        };
    }
    state.draining.cancel();
    metrics::gauge!("switchboard_draining").set(1.0);
    let mut sessions: Vec<Arc<Session>> = Vec::new();
    state
        .hub
        .registry
        .for_all(None, |s| sessions.push(s.clone()));
    let count = sessions.len();
    tracing::info!(
        sessions = count,
        period_secs,
        "draining: refusing new connections, closing sessions with 1012"
    );
    let shutdown = state.shutdown.clone();
    let registry = state.hub.registry.clone();
    tokio::spawn(async move {
        let begin = Instant::now();
        let period = Duration::from_secs(period_secs);
        for (i, session) in sessions.into_iter().enumerate() {
            // Session i of n closes at i/n of the period: the first at once, evenly after.
            let at = begin + period.mul_f64(i as f64 / count as f64);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(at) => {}
            }
            session.close(close_codes::SERVICE_RESTART);
        }
        // A session admitted while the drain began (its token was being verified).
        registry.for_all(None, |s| s.close(close_codes::SERVICE_RESTART));
        tracing::info!("drained: every session was asked to reconnect elsewhere");
    });
    Started {
        started: true,
        sessions: count,
        period_secs,
    }
}
