//! Sessions end with their credentials: each provider's live sessions are re-checked every
//! `recheck_interval_secs` (expiry, liveness key, lookup or introspection asked afresh).
//! An expired one is closed with 4003, a revoked one (logout, kick-out) with 4004; SSE
//! streams end the same way. A back end that cannot be asked closes nothing: the next round
//! asks again. Sessions sharing a token are asked about once per round.

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;
use futures_util::{StreamExt as _, stream};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{Credential, Providers, Recheck},
    close_codes,
    sessions::{Registry, Session},
};

/// Back-end questions in flight at once per provider, so a round over many sessions cannot
/// flood the back end.
const CONCURRENCY: usize = 16;

/// Starts one re-check task per provider; they end when `stop` is cancelled. Each round uses
/// the providers in force (a reload swaps them; it keeps their number and order).
pub(crate) fn start(
    providers: Arc<ArcSwap<Providers>>,
    registry: Arc<Registry>,
    stop: CancellationToken,
) {
    for (index, provider) in providers.load().iter() {
        let every = provider.recheck_interval();
        let (providers, registry, stop) = (providers.clone(), registry.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                round(&providers.load_full(), index, &registry).await;
            }
        });
    }
}

/// One round over provider `index`'s sessions.
async fn round(providers: &Providers, index: usize, registry: &Registry) {
    let provider = providers.get(index);
    // Sessions by token: one question per token.
    let mut by_token: HashMap<Arc<str>, (Credential, Vec<Arc<Session>>)> = HashMap::new();
    registry.for_all(None, |s| {
        if let Some(c) = s.credential()
            && c.provider == index
            && !s.is_closing()
            && (provider.can_be_revoked() || c.expires_at.is_some())
        {
            by_token
                .entry(c.token.clone())
                .or_insert_with(|| (c.clone(), Vec::new()))
                .1
                .push(s.clone());
        }
    });
    stream::iter(by_token.into_values())
        .for_each_concurrent(CONCURRENCY, |(credential, sessions)| async move {
            let outcome = provider.recheck(&credential).await;
            metrics::counter!("switchboard_auth_rechecks_total", "result" => outcome.label())
                .increment(1);
            let code = match outcome {
                Recheck::Expired => close_codes::EXPIRED,
                Recheck::Revoked => close_codes::REVOKED,
                Recheck::Valid | Recheck::Unavailable => return,
            };
            for session in sessions {
                tracing::info!(session = %session.id, provider = provider.name(), outcome = outcome.label(), "closing a session whose credential ended");
                metrics::counter!("switchboard_auth_sessions_closed_total", "reason" => outcome.label())
                    .increment(1);
                session.close(code);
            }
        })
        .await;
}
