//! Cluster-wide presence over heartbeats through a broker that stores nothing (NATS: the
//! subject `<cluster>.presence`; RabbitMQ: the fanout exchange `<cluster>.presence`). The
//! broker carries the messages through a [`Wire`]; the rest is the same for every broker.
//!
//! Every node publishes its own users to every node: in full every third of the
//! TTL (the heartbeat; split into parts of [`PART_USERS`] users), and after sessions come or
//! go only the users that changed (their session count now, 0 for gone). Every node keeps the
//! others' users in memory and answers presence queries from there and from its own registry,
//! so a query costs no round trip. A node whose last message is older than the TTL is left
//! out (a crashed node's users disappear within the TTL); a node that stops says so.
//!
//! Messages from one node arrive in order but may be lost (both brokers are at most once): each
//! carries the sender's sequence number, and a receiver that sees a gap, or a node it does not
//! know, asks that node for its users in full. A node that (re)connects asks every node.
//! While the broker is down, queries answer `None` and the caller falls back to this node's
//! own sessions, as with Redis.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt, future::BoxFuture, stream::BoxStream};
use serde::{Deserialize, Serialize};
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    health::{COMMAND_TIMEOUT, Health},
    wanted::Wanted,
};
use crate::sessions::{Registry, UserKey};

/// After a session comes or goes, wait this long for more changes before publishing (only
/// when the last message went out less than this long ago: a lone change goes out at once).
const SYNC_DEBOUNCE: Duration = Duration::from_millis(100);
/// Users in one full-snapshot message: keeps each well below NATS's default 1 MB payload.
const PART_USERS: usize = 2_000;

/// How heartbeats travel: the broker's publish to every node (this one included) and flush.
/// Messages from the other nodes come in through the stream given to [`BeatPresence::start`].
pub(super) trait Wire: Send + Sync + 'static {
    /// Publishes one message to every node.
    fn send(&self, payload: Vec<u8>) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Waits until what was sent has left this process.
    fn flush(&self) -> BoxFuture<'_, anyhow::Result<()>>;
}

/// One user's sessions on the sending node: (user type, tenant, user id, sessions).
type Entry = (u32, Option<Arc<str>>, Arc<str>, usize);

/// How long to wait after a change before publishing, the last message having gone out at
/// `written`: nothing after a quiet spell (a new session is known elsewhere one round trip
/// later, so targeted deliveries find it), the rest of [`SYNC_DEBOUNCE`] during a burst.
fn debounce(written: Instant) -> Duration {
    SYNC_DEBOUNCE.saturating_sub(written.elapsed())
}

/// A presence message.
#[derive(Debug, Serialize, Deserialize)]
struct Beat {
    /// The sending node.
    node: Arc<str>,
    /// Random per process: a restarted node starts a new sequence.
    epoch: u64,
    /// The sender's sequence number; all parts of one snapshot share it.
    seq: u64,
    #[serde(flatten)]
    kind: Kind,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Kind {
    /// Part `part` (from 0) of `parts` of every user of the sender.
    Full {
        part: u32,
        parts: u32,
        users: Vec<Entry>,
    },
    /// The users that changed since the previous message.
    Delta { users: Vec<Entry> },
    /// Asks `target` (every node when `None`) to send its users in full.
    Resync { target: Option<Arc<str>> },
    /// The sender is stopping.
    Leave,
}

/// What this node knows of another.
#[derive(Debug)]
struct Remote {
    epoch: u64,
    /// Sequence number of the last message applied.
    seq: u64,
    /// Last message of any kind.
    seen: Instant,
    users: HashMap<UserKey, usize>,
    /// A snapshot being received: its sequence number, parts so far, users.
    pending: Option<(u64, u32, HashMap<UserKey, usize>)>,
}

/// This node's presence over heartbeats, and queries across the cluster.
pub(crate) struct BeatPresence {
    /// The broker's side: publishing.
    wire: Box<dyn Wire>,
    node_id: Arc<str>,
    epoch: u64,
    ttl: Duration,
    registry: Arc<Registry>,
    health: Arc<Health>,
    remotes: parking_lot::Mutex<HashMap<Arc<str>, Remote>>,
    /// Set when a full snapshot should go out at the next round.
    full_wanted: AtomicBool,
    wake: Notify,
    /// Cancelled when the publishing task has ended, after it has said this node leaves;
    /// awaited on shutdown (by the server, and by a broker that must keep its link up until
    /// then).
    left: CancellationToken,
}

impl std::fmt::Debug for BeatPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeatPresence")
            .field("node_id", &self.node_id)
            .finish()
    }
}

fn entry(key: &UserKey, sessions: usize) -> Entry {
    (
        key.user_type,
        key.tenant.clone(),
        key.user_id.clone(),
        sessions,
    )
}

fn key_of(e: &Entry) -> UserKey {
    UserKey {
        user_type: e.0,
        tenant: e.1.clone(),
        user_id: e.2.clone(),
    }
}

impl BeatPresence {
    /// Starts publishing this node's users through `wire` and reading the others' from
    /// `beats`; stops and says this node leaves when `stop` is cancelled. `reconnected` is
    /// signalled on every (re)connection to the broker.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one broker, passed once"
    )]
    pub(super) fn start(
        wire: Box<dyn Wire>,
        beats: BoxStream<'static, bytes::Bytes>,
        node_id: Arc<str>,
        ttl: Duration,
        registry: Arc<Registry>,
        health: Arc<Health>,
        reconnected: Arc<Notify>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let presence = Arc::new(Self {
            wire,
            node_id,
            epoch: rand::random(),
            ttl: ttl.max(Duration::from_secs(3)),
            registry: registry.clone(),
            health,
            remotes: parking_lot::Mutex::new(HashMap::new()),
            full_wanted: AtomicBool::new(true),
            wake: Notify::new(),
            left: CancellationToken::new(),
        });
        registry.track_user_changes();
        tokio::spawn(receive_loop(presence.clone(), beats, stop.clone()));
        tokio::spawn(sync_loop(
            presence.clone(),
            registry.changes(),
            reconnected,
            stop,
        ));
        presence
    }

    /// Waits, at most three seconds, for the publishing task to say this node leaves and
    /// end; call after cancelling the `stop` token given to [`BeatPresence::start`].
    pub(crate) async fn leave_now(&self) {
        if tokio::time::timeout(Duration::from_secs(3), self.left.cancelled())
            .await
            .is_err()
        {
            tracing::warn!("cluster presence: could not say this node leaves");
        }
    }

    async fn send(&self, seq: u64, kind: Kind) -> anyhow::Result<()> {
        let beat = Beat {
            node: self.node_id.clone(),
            epoch: self.epoch,
            seq,
            kind,
        };
        self.wire.send(serde_json::to_vec(&beat)?).await
    }

    /// Publishes every user of this node, in parts.
    async fn send_full(&self, seq: u64) -> anyhow::Result<()> {
        let users: Vec<Entry> = self
            .registry
            .user_counts()
            .iter()
            .map(|(k, n)| entry(k, *n))
            .collect();
        let chunks: Vec<&[Entry]> = if users.is_empty() {
            vec![&[]]
        } else {
            users.chunks(PART_USERS).collect()
        };
        let parts = chunks.len() as u32;
        for (part, chunk) in chunks.into_iter().enumerate() {
            let kind = Kind::Full {
                part: part as u32,
                parts,
                users: chunk.to_vec(),
            };
            self.send(seq, kind).await?;
        }
        Ok(())
    }

    /// Takes a message from another node; returns the node to ask for a full snapshot.
    fn receive(&self, beat: Beat) -> Option<Arc<str>> {
        if beat.node == self.node_id {
            return None;
        }
        if let Kind::Resync { target } = &beat.kind
            && target.as_ref().is_none_or(|n| *n == self.node_id)
        {
            self.full_wanted.store(true, Ordering::Release);
            self.wake.notify_one();
        }
        let mut remotes = self.remotes.lock();
        // Nodes that went silent are forgotten even when nobody asks for presence.
        let ttl = self.ttl;
        remotes.retain(|_, r| r.seen.elapsed() < ttl);
        apply(&mut remotes, beat, Instant::now())
    }

    /// Runs `f` over the users of every other node heard from within the TTL; `None` while
    /// the broker is down (the tables may be stale).
    fn with_live_remotes<T>(
        &self,
        f: impl FnOnce(&mut dyn Iterator<Item = &Remote>) -> T,
    ) -> Option<T> {
        if !self.health.up() {
            return None;
        }
        let mut remotes = self.remotes.lock();
        let ttl = self.ttl;
        remotes.retain(|_, r| r.seen.elapsed() < ttl);
        Some(f(&mut remotes.values()))
    }

    /// The other nodes heard from within the TTL; `None` while the broker is down.
    pub(crate) fn other_nodes(&self) -> Option<Vec<Arc<str>>> {
        if !self.health.up() {
            return None;
        }
        let mut remotes = self.remotes.lock();
        let ttl = self.ttl;
        remotes.retain(|_, r| r.seen.elapsed() < ttl);
        Some(remotes.keys().cloned().collect())
    }

    /// For each wanted user, the other nodes that hold a session of it; `None` while the
    /// broker is down. A user wanted in every tenant costs one pass over each node's users
    /// per call (a batch of publications shares it).
    pub(crate) fn locate(&self, wanted: &[Wanted]) -> Option<Vec<BTreeSet<Arc<str>>>> {
        if !self.health.up() {
            return None;
        }
        let any_tenant = wanted.iter().any(|w| w.tenant.is_none());
        let mut found = vec![BTreeSet::new(); wanted.len()];
        let mut remotes = self.remotes.lock();
        let ttl = self.ttl;
        remotes.retain(|_, r| r.seen.elapsed() < ttl);
        for (node, remote) in remotes.iter() {
            let in_any_tenant: std::collections::HashSet<(u32, &str)> = if any_tenant {
                remote
                    .users
                    .keys()
                    .map(|k| (k.user_type, &*k.user_id))
                    .collect()
            } else {
                Default::default()
            };
            for (w, nodes) in wanted.iter().zip(found.iter_mut()) {
                let holds = match &w.tenant {
                    Some(tenant) => remote.users.contains_key(&UserKey {
                        user_type: w.user_type,
                        tenant: tenant.clone(),
                        user_id: w.user_id.clone(),
                    }),
                    None => in_any_tenant.contains(&(w.user_type, &*w.user_id)),
                };
                if holds {
                    nodes.insert(node.clone());
                }
            }
        }
        Some(found)
    }

    /// Sessions of a user on every node; `None` when the broker cannot be reached.
    pub(crate) async fn user_sessions(&self, key: &UserKey) -> Option<usize> {
        let local = self.registry.user_sessions(key);
        let remote = self.with_live_remotes(|rs| {
            rs.map(|r| r.users.get(key).copied().unwrap_or(0))
                .sum::<usize>()
        })?;
        Some(local + remote)
    }

    /// Sessions of a user on every node, in every tenant; `None` when the broker cannot be
    /// reached.
    pub(crate) async fn user_sessions_any_tenant(
        &self,
        user_type: u32,
        user_id: &Arc<str>,
    ) -> Option<usize> {
        let local = self.registry.user_sessions_any_tenant(user_type, user_id);
        let remote = self.with_live_remotes(|rs| {
            rs.flat_map(|r| r.users.iter())
                .filter(|(k, _)| k.user_type == user_type && k.user_id == *user_id)
                .map(|(_, n)| *n)
                .sum::<usize>()
        })?;
        Some(local + remote)
    }

    /// Online users of a user type on every node; `tenant` `None` means every tenant.
    /// `None` when the broker cannot be reached.
    pub(crate) async fn online_users(
        &self,
        tenant: Option<&Option<Arc<str>>>,
        user_type: u32,
    ) -> Option<Vec<String>> {
        let mut users: BTreeSet<String> = self
            .registry
            .online_users(tenant, user_type)
            .into_iter()
            .collect();
        self.with_live_remotes(|rs| {
            for r in rs {
                users.extend(
                    r.users
                        .keys()
                        .filter(|k| {
                            k.user_type == user_type && tenant.is_none_or(|t| k.tenant == *t)
                        })
                        .map(|k| k.user_id.to_string()),
                );
            }
        })?;
        Some(users.into_iter().collect())
    }
}

/// Applies a message from another node to what this node knows; returns the node to ask for
/// a full snapshot.
fn apply(remotes: &mut HashMap<Arc<str>, Remote>, beat: Beat, now: Instant) -> Option<Arc<str>> {
    let fresh = || Remote {
        epoch: beat.epoch,
        // Nothing applied yet: a delta cannot follow.
        seq: u64::MAX,
        seen: now,
        users: HashMap::new(),
        pending: None,
    };
    let remote = remotes.entry(beat.node.clone()).or_insert_with(fresh);
    remote.seen = now;
    if remote.epoch != beat.epoch {
        // Restarted: what it had before is gone.
        *remote = fresh();
    }
    match beat.kind {
        Kind::Leave => {
            remotes.remove(&beat.node);
            None
        }
        Kind::Resync { .. } => None,
        Kind::Delta { users } => {
            if remote.seq.checked_add(1) != Some(beat.seq) {
                // A message was lost, or this node joined late: the table may be wrong.
                return Some(beat.node);
            }
            remote.seq = beat.seq;
            for e in &users {
                if e.3 == 0 {
                    remote.users.remove(&key_of(e));
                } else {
                    remote.users.insert(key_of(e), e.3);
                }
            }
            None
        }
        Kind::Full { part, parts, users } => {
            let (seq, _, mut table) = match remote.pending.take() {
                Some(p) if p.0 == beat.seq && p.1 == part => p,
                _ if part == 0 => (beat.seq, 0, HashMap::new()),
                // A part is missing: wait for the next snapshot.
                _ => return None,
            };
            table.extend(users.iter().map(|e| (key_of(e), e.3)));
            if part + 1 >= parts {
                remote.users = table;
                remote.seq = seq;
            } else {
                remote.pending = Some((seq, part + 1, table));
            }
            None
        }
    }
}

async fn receive_loop(
    presence: Arc<BeatPresence>,
    mut beats: BoxStream<'static, bytes::Bytes>,
    stop: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => return,
            m = beats.next() => m,
        };
        let Some(payload) = msg else { return };
        let beat = match serde_json::from_slice::<Beat>(&payload) {
            Ok(beat) => beat,
            Err(e) => {
                tracing::warn!(error = %e, "cluster presence: ignoring an unreadable message");
                continue;
            }
        };
        if let Some(node) = presence.receive(beat) {
            let ask = Kind::Resync { target: Some(node) };
            // Best effort: the node's next full snapshot repairs the table anyway.
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, presence.send(0, ask)).await;
        }
    }
}

async fn sync_loop(
    presence: Arc<BeatPresence>,
    changed: Arc<Notify>,
    reconnected: Arc<Notify>,
    stop: CancellationToken,
) {
    let refresh = presence.ttl / 3;
    let mut seq = 0u64;
    let mut failing = false;
    let mut last_full: Option<Instant> = None;
    let mut hello = true;
    loop {
        if hello {
            // Joining, or back after a disconnection: every node sends its users in full.
            let ask = presence.send(seq, Kind::Resync { target: None });
            hello = !matches!(tokio::time::timeout(COMMAND_TIMEOUT, ask).await, Ok(Ok(())));
        }
        // Taken every round, so the set never holds more than one round's changes.
        let users = presence.registry.take_changed_users();
        let full = failing
            || presence.full_wanted.swap(false, Ordering::AcqRel)
            || last_full.is_none_or(|t| t.elapsed() >= refresh);
        seq += 1;
        let write = async {
            if full {
                presence.send_full(seq).await
            } else {
                let users = users.iter().map(|(k, n)| entry(k, *n)).collect();
                presence.send(seq, Kind::Delta { users }).await
            }
        };
        let sent = tokio::select! {
            () = stop.cancelled() => break,
            sent = tokio::time::timeout(Duration::from_secs(2), write) => sent,
        };
        let written = Instant::now();
        match sent {
            Ok(Ok(())) => {
                if full {
                    last_full = Some(Instant::now());
                }
                if failing {
                    tracing::info!("cluster presence: publishing again");
                    failing = false;
                }
            }
            _ => {
                if !failing {
                    tracing::warn!("cluster presence: cannot publish heartbeats; retrying");
                    failing = true;
                }
            }
        }
        let wait = refresh.saturating_sub(last_full.map_or(Duration::ZERO, |t| t.elapsed()));
        tokio::select! {
            () = stop.cancelled() => break,
            () = changed.notified() => {
                // Let a burst of connects or disconnects settle into one message.
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(debounce(written)) => {},
                }
            }
            () = presence.wake.notified() => {}
            () = reconnected.notified() => hello = true,
            () = tokio::time::sleep(wait) => {},
        }
    }
    let leave = async {
        presence.send(seq + 1, Kind::Leave).await?;
        presence.wire.flush().await?;
        anyhow::Ok(())
    };
    if !matches!(
        tokio::time::timeout(Duration::from_secs(2), leave).await,
        Ok(Ok(()))
    ) {
        tracing::warn!("cluster presence: could not say this node leaves");
    }
    presence.left.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(node: &str, epoch: u64, seq: u64, kind: Kind) -> Beat {
        Beat {
            node: node.into(),
            epoch,
            seq,
            kind,
        }
    }

    fn e(user: &str, sessions: usize) -> Entry {
        (1, Some("t".into()), user.into(), sessions)
    }

    fn full(part: u32, parts: u32, users: Vec<Entry>) -> Kind {
        Kind::Full { part, parts, users }
    }

    fn users(remotes: &HashMap<Arc<str>, Remote>, node: &str) -> Vec<(String, usize)> {
        let mut v: Vec<_> = remotes
            .get(node)
            .map(|r| {
                r.users
                    .iter()
                    .map(|(k, n)| (k.user_id.to_string(), *n))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn snapshots_then_deltas_in_sequence() {
        let mut r = HashMap::new();
        let now = Instant::now();
        // Two parts make one snapshot; a table is replaced only when it is complete.
        assert_eq!(
            apply(&mut r, beat("a", 7, 1, full(0, 2, vec![e("x", 1)])), now),
            None
        );
        assert_eq!(users(&r, "a"), vec![]);
        assert_eq!(
            apply(&mut r, beat("a", 7, 1, full(1, 2, vec![e("y", 2)])), now),
            None
        );
        assert_eq!(users(&r, "a"), vec![("x".into(), 1), ("y".into(), 2)]);
        let delta = Kind::Delta {
            users: vec![e("x", 0), e("z", 1)],
        };
        assert_eq!(apply(&mut r, beat("a", 7, 2, delta), now), None);
        assert_eq!(users(&r, "a"), vec![("y".into(), 2), ("z".into(), 1)]);
        // A gap: not applied, and the sender is asked for everything.
        let late = Kind::Delta {
            users: vec![e("w", 1)],
        };
        assert_eq!(apply(&mut r, beat("a", 7, 4, late), now), Some("a".into()));
        assert_eq!(users(&r, "a"), vec![("y".into(), 2), ("z".into(), 1)]);
        // A snapshot repairs it, and deltas follow on from it.
        apply(&mut r, beat("a", 7, 5, full(0, 1, vec![e("w", 1)])), now);
        assert_eq!(users(&r, "a"), vec![("w".into(), 1)]);
        let next = Kind::Delta {
            users: vec![e("v", 3)],
        };
        assert_eq!(apply(&mut r, beat("a", 7, 6, next), now), None);
        assert_eq!(users(&r, "a"), vec![("v".into(), 3), ("w".into(), 1)]);
    }

    #[test]
    fn a_delta_from_an_unknown_or_restarted_node_asks_for_a_snapshot() {
        let mut r = HashMap::new();
        let now = Instant::now();
        let delta = || Kind::Delta {
            users: vec![e("x", 1)],
        };
        assert_eq!(
            apply(&mut r, beat("b", 1, 9, delta()), now),
            Some("b".into())
        );
        apply(&mut r, beat("b", 1, 10, full(0, 1, vec![e("x", 1)])), now);
        assert_eq!(users(&r, "b"), vec![("x".into(), 1)]);
        // Same node id, new process: its old users are gone at once.
        assert_eq!(
            apply(&mut r, beat("b", 2, 1, delta()), now),
            Some("b".into())
        );
        assert_eq!(users(&r, "b"), vec![]);
    }

    #[test]
    fn a_missing_part_leaves_the_table_as_it_was_and_leave_removes_the_node() {
        let mut r = HashMap::new();
        let now = Instant::now();
        apply(&mut r, beat("c", 1, 1, full(0, 1, vec![e("x", 1)])), now);
        apply(&mut r, beat("c", 1, 2, full(0, 3, vec![e("y", 1)])), now);
        apply(&mut r, beat("c", 1, 2, full(2, 3, vec![e("z", 1)])), now);
        assert_eq!(users(&r, "c"), vec![("x".into(), 1)]);
        apply(&mut r, beat("c", 1, 3, Kind::Leave), now);
        assert!(!r.contains_key("c"));
    }

    #[test]
    fn wire_format_round_trips() {
        let b = beat("n", 3, 4, full(0, 1, vec![e("x", 2)]));
        let text = serde_json::to_string(&b).unwrap();
        assert!(text.contains("\"kind\":\"full\""), "{text}");
        let back: Beat = serde_json::from_str(&text).unwrap();
        assert_eq!((back.seq, back.epoch), (4, 3));
        // Every kind reads back (a field of a kind must not clash with the envelope's).
        for kind in [
            Kind::Resync {
                target: Some("m".into()),
            },
            Kind::Resync { target: None },
            Kind::Delta {
                users: vec![e("x", 0)],
            },
            Kind::Leave,
        ] {
            let text = serde_json::to_string(&beat("n", 3, 5, kind)).unwrap();
            let back: Beat = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(&*back.node, "n", "{text}");
        }
    }
}
