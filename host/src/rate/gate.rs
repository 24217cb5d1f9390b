//! The inbound gate of a session: its message rate and the order of its messages, shared by
//! the WebSocket read loop and `POST /api/v1/dispatch`, so a message reaches the listeners
//! through either path under one budget and in arrival order. Dispatches made without a
//! session share a per-user budget instead.

use std::{collections::HashMap, sync::Arc, time::Instant};

use parking_lot::Mutex;

use super::{Rates, TokenBucket, Verdict};
use crate::sessions::UserKey;

/// Most users whose dispatch budgets are remembered; past it, idle budgets are forgotten.
const MAX_USER_BUDGETS: usize = 65_536;

/// One session's (or one user's) message budget and ordering lock.
#[derive(Debug)]
pub(crate) struct Gate {
    bucket: Mutex<TokenBucket>,
    /// Held while one message is dispatched; tokio's mutex is fair, so waiters go in the
    /// order they arrived.
    order: tokio::sync::Mutex<()>,
}

impl Gate {
    /// A gate with a full bucket of `burst`, refilled at `rate` per second.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self {
            bucket: Mutex::new(TokenBucket::new(rate, burst)),
            order: tokio::sync::Mutex::new(()),
        }
    }

    /// Takes a token for one inbound frame.
    pub(crate) fn take(&self) -> Verdict {
        self.bucket.lock().take(Instant::now())
    }

    /// Waits for the turn to dispatch; the turn lasts while the guard lives.
    pub(crate) async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.order.lock().await
    }
}

/// Every open session's gate by session id, and per-user budgets for session-less dispatch.
#[derive(Debug)]
pub(crate) struct Gates {
    /// Of gates opened from now on (a reload can change them).
    pub(crate) rates: Rates,
    sessions: Mutex<HashMap<Arc<str>, Arc<Gate>>>,
    users: Mutex<HashMap<UserKey, Arc<Gate>>>,
}

impl Gates {
    /// Gates with the per-connection message rate of `[server]`.
    pub(crate) fn new(rate: u32, burst: u32) -> Arc<Self> {
        Arc::new(Self {
            rates: Rates::new(rate, burst),
            sessions: Default::default(),
            users: Default::default(),
        })
    }

    fn new_gate(&self) -> Gate {
        let (rate, burst) = self.rates.get();
        Gate::new(rate, burst)
    }

    /// Opens the gate of session `id`; it closes when the guard is dropped.
    pub(crate) fn open(self: &Arc<Self>, id: Arc<str>) -> GateGuard {
        let gate = Arc::new(self.new_gate());
        self.sessions.lock().insert(id.clone(), gate.clone());
        GateGuard {
            gates: self.clone(),
            id,
            gate,
        }
    }

    /// The gate of an open session.
    pub(crate) fn session(&self, id: &str) -> Option<Arc<Gate>> {
        self.sessions.lock().get(id).cloned()
    }

    /// The budget of session-less dispatches of one user.
    pub(crate) fn user(&self, key: &UserKey) -> Arc<Gate> {
        let mut users = self.users.lock();
        if let Some(gate) = users.get(key) {
            return gate.clone();
        }
        if users.len() >= MAX_USER_BUDGETS {
            // Forget budgets nobody is using; if all are in use, forget them all (their
            // users get a fresh burst, which bounds memory at the price of precision).
            users.retain(|_, g| Arc::strong_count(g) > 1);
            if users.len() >= MAX_USER_BUDGETS {
                users.clear();
            }
        }
        let gate = Arc::new(self.new_gate());
        users.insert(key.clone(), gate.clone());
        gate
    }
}

/// Keeps a session's gate open.
#[derive(Debug)]
pub(crate) struct GateGuard {
    gates: Arc<Gates>,
    id: Arc<str>,
    gate: Arc<Gate>,
}

impl GateGuard {
    /// The gate.
    pub(crate) fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        self.gates.sessions.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_gate_lives_as_long_as_its_guard() {
        let gates = Gates::new(1, 1);
        let guard = gates.open("s1".into());
        assert!(gates.session("s1").is_some());
        assert_eq!(guard.gate().take(), Verdict::Allow);
        assert_eq!(gates.session("s1").unwrap().take(), Verdict::Refuse);
        drop(guard);
        assert!(gates.session("s1").is_none());
    }
}
