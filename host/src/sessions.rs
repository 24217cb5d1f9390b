//! The session registry: every open connection of this node, by id and by
//! (tenant, user type, user id). One user may hold many sessions.
//!
//! Registration returns a [`Registered`] guard that unregisters on drop, so a session leaves
//! the registry on every kind of disconnect (close, error, timeout, shutdown, panic).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU16, Ordering},
    },
};

use parking_lot::RwLock;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{Credential, Principal},
    close_codes,
    config::TransportKind,
    envelope::Profile,
    frame::Frame,
    via::Via,
};

/// Random bits in a session id: enough that ids can be neither guessed nor repeated.
const SESSION_ID_RANDOM_BYTES: usize = 16;

/// A new session id: `<node id>-<32 hex digits>`, the digits 128 bits from the OS-seeded
/// CSPRNG. Unguessable, so a session id grants nothing by itself being known to exist, and
/// never reused across restarts, so a back end holding an old id cannot reach a new session.
pub(crate) fn new_session_id(node_id: &str) -> Arc<str> {
    let bytes: [u8; SESSION_ID_RANDOM_BYTES] = rand::random();
    format!("{node_id}-{}", hex::encode(bytes)).into()
}

/// The node id a session id names: everything before the last `-` (the random part has
/// none), so node ids that prefix each other (`a`, `a-1`) are told apart.
pub(crate) fn node_of(session_id: &str) -> Option<&str> {
    let (node, random) = session_id.rsplit_once('-')?;
    (random.len() == 2 * SESSION_ID_RANDOM_BYTES).then_some(node)
}

/// One open connection.
#[derive(Debug)]
pub struct Session {
    /// Unique in the cluster: `<node id>-<32 random hex digits>`.
    pub id: Arc<str>,
    /// Who is connected.
    pub principal: Principal,
    /// How frames are encoded for this client.
    pub profile: Profile,
    /// WebSocket or SSE.
    pub transport: TransportKind,
    /// Bounded outbound queue; its reader is the connection's write loop.
    queue: mpsc::Sender<Frame>,
    /// Cancelled to make the connection close (with `close_code`).
    closer: CancellationToken,
    /// The close code to send; 0 until someone asks to close (then shutdown's 1001 applies).
    close_code: AtomicU16,
    /// The token it was admitted with, for re-checks and `<sse path>/close`; unset for
    /// sessions made without a token (tests, transient dispatch sessions).
    credential: OnceLock<Credential>,
    /// The path of the endpoint it connected to, so a delivery can be limited to endpoints.
    endpoint: OnceLock<Arc<str>>,
    /// Channels that plugin sends made while handling this session may use (its endpoint's
    /// `reply_via`); unset: any.
    reply_via: OnceLock<Via>,
}

/// Result of queueing a frame for a session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// In the queue.
    Queued,
    /// The queue was full: the session is being closed as a slow consumer.
    Overflow,
    /// The session is already gone.
    Gone,
}

impl Session {
    /// Creates a session and the receiving end of its outbound queue. `closer` should be a
    /// child of the server's shutdown token.
    pub fn new(
        id: Arc<str>,
        principal: Principal,
        profile: Profile,
        transport: TransportKind,
        queue_len: usize,
        closer: CancellationToken,
    ) -> (Arc<Self>, mpsc::Receiver<Frame>) {
        let (queue, rx) = mpsc::channel(queue_len);
        let session = Arc::new(Self {
            id,
            principal,
            profile,
            transport,
            queue,
            closer,
            close_code: AtomicU16::new(0),
            credential: OnceLock::new(),
            endpoint: OnceLock::new(),
            reply_via: OnceLock::new(),
        });
        (session, rx)
    }

    /// Records the credential and endpoint the session was admitted with, and where plugin
    /// replies to it may go (once, before it is registered).
    pub(crate) fn admitted_with(&self, credential: Credential, endpoint: Arc<str>, reply_via: Via) {
        let _ = self.credential.set(credential);
        let _ = self.endpoint.set(endpoint);
        let _ = self.reply_via.set(reply_via);
    }

    /// Channels plugin sends made while handling this session may use.
    pub(crate) fn reply_via(&self) -> Via {
        self.reply_via.get().cloned().unwrap_or_default()
    }

    /// The credential it was admitted with.
    pub(crate) fn credential(&self) -> Option<&Credential> {
        self.credential.get()
    }

    /// The path of the endpoint it connected to.
    pub(crate) fn endpoint(&self) -> Option<&str> {
        self.endpoint.get().map(|e| &**e)
    }

    /// Queues a frame without waiting. A full queue closes the session: a client that does not
    /// read must never slow down deliveries to others.
    pub(crate) fn push(&self, frame: Frame) -> Pushed {
        match self.queue.try_send(frame) {
            Ok(()) => Pushed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.closer.is_cancelled() {
                    tracing::info!(session = %self.id, "closing slow consumer: outbound queue full");
                    metrics::counter!("switchboard_slow_consumers_closed_total").increment(1);
                }
                metrics::counter!("switchboard_messages_dropped_total", "reason" => "slow_consumer")
                    .increment(1);
                self.close(close_codes::SLOW_CONSUMER);
                Pushed::Overflow
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::Gone,
        }
    }

    /// The span its connection runs in: every log line about the session (and about plugin
    /// calls it makes) carries its id, user and tenant (JSON logs list them as span fields).
    /// At the ERROR level so that any filter that lets a line through keeps its context.
    pub(crate) fn span(&self) -> tracing::Span {
        tracing::error_span!(
            "session",
            session = %self.id,
            user_type = self.principal.user_type,
            user = %self.principal.user_id,
            tenant = self.principal.tenant_id.as_deref().unwrap_or(""),
        )
    }

    /// Asks the connection to close with `code`. The first code asked for wins.
    pub(crate) fn close(&self, code: u16) {
        let _ = self
            .close_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.closer.cancel();
    }

    /// Resolves when the session has been asked to close (or the host shuts down).
    pub(crate) async fn closing(&self) {
        self.closer.cancelled().await
    }

    /// Whether the session has been asked to close.
    pub(crate) fn is_closing(&self) -> bool {
        self.closer.is_cancelled()
    }

    /// The code to close with: the one asked for, else 1001 (host going away).
    pub(crate) fn close_code(&self) -> u16 {
        match self.close_code.load(Ordering::Acquire) {
            0 => close_codes::GOING_AWAY,
            code => code,
        }
    }

    fn user_key(&self) -> UserKey {
        UserKey::of(&self.principal)
    }
}

/// A user within a tenant: the key of the per-user index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct UserKey {
    /// The tenant (`None`: no tenant).
    pub tenant: Option<Arc<str>>,
    /// The user type.
    pub user_type: u32,
    /// The user id.
    pub user_id: Arc<str>,
}

impl UserKey {
    /// The key of the user a principal names.
    pub(crate) fn of(principal: &Principal) -> Self {
        Self {
            tenant: principal.tenant_id.clone(),
            user_type: principal.user_type,
            user_id: principal.user_id.clone(),
        }
    }
}

type Group = (Option<Arc<str>>, u32);
/// A user in whatever tenant: (user type, user id).
type AnyTenantUser = (u32, Arc<str>);

#[derive(Default)]
struct Index {
    by_id: HashMap<Arc<str>, Arc<Session>>,
    by_user: HashMap<UserKey, Vec<Arc<Session>>>,
    /// Sessions of one (tenant, user type), for user-type fan-out without a scan.
    by_group: HashMap<Group, HashMap<Arc<str>, Arc<Session>>>,
    /// The tenants in which a (user type, user id) has sessions, so a user is found in every
    /// tenant (push without `tenant_id`, presence without `tenant_id`) without a scan.
    tenants_of: HashMap<AnyTenantUser, Vec<Option<Arc<str>>>>,
    /// Users whose session count changed since the last `take_changed_users`; kept only
    /// while someone takes them (see `track_user_changes`).
    changed_users: Option<HashSet<UserKey>>,
}

/// Why a session could not be registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegisterError {
    /// The user already holds the maximum number of sessions.
    #[error("too many connections for this user (limit {0})")]
    UserLimit(usize),
}

/// All open sessions of this node.
pub struct Registry {
    index: RwLock<Index>,
    /// Sessions one user may hold at once on this node.
    max_per_user: usize,
    /// Signalled on every registration and removal (cluster presence writes on it).
    changed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sessions", &self.len())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new(max_per_user: usize) -> Arc<Self> {
        Arc::new(Self {
            index: RwLock::new(Index::default()),
            max_per_user,
            changed: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Adds a session; it stays until the returned guard is dropped.
    pub fn register(self: &Arc<Self>, session: Arc<Session>) -> Result<Registered, RegisterError> {
        self.register_replacing(session, |_| false)
    }

    /// Adds a session that replaces the user's sessions for which `replaces` is true: those
    /// do not count against the per-user limit, and are closed with 4002 only once the new
    /// one is registered, so a refused newcomer leaves the user's sessions as they were.
    pub(crate) fn register_replacing(
        self: &Arc<Self>,
        session: Arc<Session>,
        replaces: impl Fn(&Session) -> bool,
    ) -> Result<Registered, RegisterError> {
        let key = session.user_key();
        let mut index = self.index.write();
        let user_sessions = index.by_user.entry(key.clone()).or_default();
        let kept = user_sessions.iter().filter(|s| !replaces(s)).count();
        if kept >= self.max_per_user {
            if user_sessions.is_empty() {
                index.by_user.remove(&key);
            }
            return Err(RegisterError::UserLimit(self.max_per_user));
        }
        let first_in_tenant = user_sessions.is_empty();
        for old in user_sessions.iter().filter(|s| replaces(s)) {
            old.close(close_codes::SESSION_REPLACED);
        }
        user_sessions.push(session.clone());
        if first_in_tenant {
            index
                .tenants_of
                .entry((key.user_type, key.user_id.clone()))
                .or_default()
                .push(key.tenant.clone());
        }
        if let Some(changed) = &mut index.changed_users {
            changed.insert(key.clone());
        }
        index
            .by_group
            .entry((key.tenant, key.user_type))
            .or_default()
            .insert(session.id.clone(), session.clone());
        index.by_id.insert(session.id.clone(), session.clone());
        metrics::gauge!("switchboard_sessions").set(index.by_id.len() as f64);
        drop(index);
        self.changed.notify_one();
        Ok(Registered {
            registry: self.clone(),
            session,
        })
    }

    fn unregister(&self, session: &Session) {
        let key = session.user_key();
        let mut index = self.index.write();
        index.by_id.remove(&session.id);
        if let Some(changed) = &mut index.changed_users {
            changed.insert(key.clone());
        }
        if let Some(list) = index.by_user.get_mut(&key) {
            list.retain(|s| s.id != session.id);
            if list.is_empty() {
                index.by_user.remove(&key);
                let user = (key.user_type, key.user_id.clone());
                if let Some(tenants) = index.tenants_of.get_mut(&user) {
                    tenants.retain(|t| *t != key.tenant);
                    if tenants.is_empty() {
                        index.tenants_of.remove(&user);
                    }
                }
            }
        }
        let group = (key.tenant, key.user_type);
        if let Some(members) = index.by_group.get_mut(&group) {
            members.remove(&session.id);
            if members.is_empty() {
                index.by_group.remove(&group);
            }
        }
        metrics::gauge!("switchboard_sessions").set(index.by_id.len() as f64);
        drop(index);
        self.changed.notify_one();
    }

    /// Signalled after sessions come or go.
    pub(crate) fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    /// Starts recording which users' session counts change, for `take_changed_users`. The
    /// taker must take regularly: the set holds every user changed since the last take.
    pub(crate) fn track_user_changes(&self) {
        self.index.write().changed_users.get_or_insert_default();
    }

    /// The users whose session count changed since the last call, with their count now (0:
    /// no session left here).
    pub(crate) fn take_changed_users(&self) -> Vec<(UserKey, usize)> {
        let mut index = self.index.write();
        let changed = match &mut index.changed_users {
            Some(changed) => std::mem::take(changed),
            None => return Vec::new(),
        };
        changed
            .into_iter()
            .map(|key| {
                let n = index.by_user.get(&key).map_or(0, Vec::len);
                (key, n)
            })
            .collect()
    }

    /// Every user with their number of sessions here.
    pub(crate) fn user_counts(&self) -> Vec<(UserKey, usize)> {
        let index = self.index.read();
        index
            .by_user
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    }

    /// Number of open sessions.
    pub(crate) fn len(&self) -> usize {
        self.index.read().by_id.len()
    }

    /// Number of distinct users with a session.
    pub(crate) fn user_count(&self) -> usize {
        self.index.read().by_user.len()
    }

    /// A session by id.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.index.read().by_id.get(id).cloned()
    }

    /// Calls `f` for every session of the user.
    pub(crate) fn for_user(&self, key: &UserKey, mut f: impl FnMut(&Arc<Session>)) {
        if let Some(list) = self.index.read().by_user.get(key) {
            list.iter().for_each(&mut f);
        }
    }

    /// Calls `f` for every session of a user in every tenant: O(that user's sessions).
    pub(crate) fn for_user_any_tenant(
        &self,
        user_type: u32,
        user_id: &Arc<str>,
        mut f: impl FnMut(&Arc<Session>),
    ) {
        let index = self.index.read();
        let Some(tenants) = index.tenants_of.get(&(user_type, user_id.clone())) else {
            return;
        };
        for tenant in tenants {
            let key = UserKey {
                tenant: tenant.clone(),
                user_type,
                user_id: user_id.clone(),
            };
            if let Some(list) = index.by_user.get(&key) {
                list.iter().for_each(&mut f);
            }
        }
    }

    /// Number of sessions of a user here, in every tenant.
    pub(crate) fn user_sessions_any_tenant(&self, user_type: u32, user_id: &Arc<str>) -> usize {
        let mut n = 0;
        self.for_user_any_tenant(user_type, user_id, |_| n += 1);
        n
    }

    /// Calls `f` for every session of a user type; `tenant` `Some(t)` limits it to one tenant,
    /// `None` to every tenant.
    pub(crate) fn for_user_type(
        &self,
        tenant: Option<&Option<Arc<str>>>,
        user_type: u32,
        mut f: impl FnMut(&Arc<Session>),
    ) {
        let index = self.index.read();
        match tenant {
            Some(t) => {
                if let Some(members) = index.by_group.get(&(t.clone(), user_type)) {
                    members.values().for_each(&mut f);
                }
            }
            None => index
                .by_group
                .iter()
                .filter(|((_, ut), _)| *ut == user_type)
                .flat_map(|(_, m)| m.values())
                .for_each(&mut f),
        }
    }

    /// Calls `f` for every session; `tenant` as in [`Registry::for_user_type`].
    pub(crate) fn for_all(
        &self,
        tenant: Option<&Option<Arc<str>>>,
        mut f: impl FnMut(&Arc<Session>),
    ) {
        let index = self.index.read();
        match tenant {
            Some(t) => index
                .by_group
                .iter()
                .filter(|((gt, _), _)| gt == t)
                .flat_map(|(_, m)| m.values())
                .for_each(&mut f),
            None => index.by_id.values().for_each(&mut f),
        }
    }

    /// Ids of the users of a user type that have a session here.
    pub(crate) fn online_users(
        &self,
        tenant: Option<&Option<Arc<str>>>,
        user_type: u32,
    ) -> Vec<String> {
        let mut ids = Vec::new();
        self.for_user_type(tenant, user_type, |s| {
            ids.push(s.principal.user_id.to_string())
        });
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Number of sessions of one user here.
    pub(crate) fn user_sessions(&self, key: &UserKey) -> usize {
        self.index.read().by_user.get(key).map_or(0, Vec::len)
    }
}

/// Keeps a session registered; unregisters it when dropped.
#[derive(Debug)]
pub struct Registered {
    registry: Arc<Registry>,
    session: Arc<Session>,
}

impl Registered {
    /// The registered session.
    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.session
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.unregister(&self.session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, tenant: Option<&str>, user_type: u32, user: &str) -> Arc<Session> {
        session_and_queue(id, tenant, user_type, user).0
    }

    fn session_and_queue(
        id: &str,
        tenant: Option<&str>,
        user_type: u32,
        user: &str,
    ) -> (Arc<Session>, mpsc::Receiver<Frame>) {
        Session::new(
            id.into(),
            Principal {
                user_id: user.into(),
                user_type,
                tenant_id: tenant.map(Into::into),
            },
            Profile::Native,
            TransportKind::Websocket,
            2,
            CancellationToken::new(),
        )
    }

    #[test]
    fn changed_users_are_recorded_only_when_tracked_and_taken_once() {
        let r = Registry::new(2);
        let untracked = r.register(session("x", None, 1, "0")).unwrap();
        assert!(r.take_changed_users().is_empty(), "nothing kept untracked");
        r.track_user_changes();
        let a = r.register(session("a", Some("t"), 1, "1")).unwrap();
        let b = r.register(session("b", Some("t"), 1, "1")).unwrap();
        let c = r.register(session("c", Some("t"), 1, "2")).unwrap();
        drop(c);
        let mut taken = r.take_changed_users();
        taken.sort_by(|x, y| x.0.user_id.cmp(&y.0.user_id));
        let counts: Vec<(&str, usize)> = taken.iter().map(|(k, n)| (&*k.user_id, *n)).collect();
        assert_eq!(counts, vec![("1", 2), ("2", 0)]);
        assert!(r.take_changed_users().is_empty(), "taken once");
        drop((a, b, untracked));
        let taken = r.take_changed_users();
        let mut ids: Vec<&str> = taken.iter().map(|(k, _)| &*k.user_id).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec!["0", "1"]);
        assert!(taken.iter().all(|(_, n)| *n == 0));
    }

    #[test]
    fn indexes_follow_guards() {
        let r = Registry::new(2);
        let a = r.register(session("a", Some("t1"), 2, "1")).unwrap();
        let b = r.register(session("b", Some("t1"), 2, "1")).unwrap();
        let c = r.register(session("c", Some("t2"), 2, "9")).unwrap();
        assert_eq!(
            r.register(session("d", Some("t1"), 2, "1")).unwrap_err(),
            RegisterError::UserLimit(2)
        );
        assert_eq!((r.len(), r.user_count()), (3, 2));
        let t1 = Some(Arc::<str>::from("t1"));
        assert_eq!(r.online_users(Some(&t1), 2), vec!["1"]);
        assert_eq!(r.online_users(None, 2), vec!["1", "9"]);
        let mut n = 0;
        r.for_all(Some(&t1), |_| n += 1);
        assert_eq!(n, 2);
        drop((a, b, c));
        assert_eq!(r.len(), 0);
        assert_eq!(r.user_count(), 0);
        assert!(r.index.read().by_group.is_empty());
        assert!(r.index.read().tenants_of.is_empty());
    }

    #[test]
    fn session_ids_are_random_and_name_their_node() {
        let ids: HashSet<Arc<str>> = (0..1000).map(|_| new_session_id("a-1")).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(node_of(id), Some("a-1"), "{id}");
            assert_ne!(node_of(id), Some("a"), "{id}");
        }
        assert_eq!(node_of("a-1"), None, "the old counter form names no node");
        assert_eq!(node_of("nodash"), None);
    }

    #[test]
    fn a_user_is_found_in_every_tenant_through_the_index() {
        let r = Registry::new(4);
        let a = r.register(session("a", Some("t1"), 2, "1")).unwrap();
        let b = r.register(session("b", Some("t2"), 2, "1")).unwrap();
        let c = r.register(session("c", None, 2, "1")).unwrap();
        let d = r.register(session("d", Some("t2"), 2, "1")).unwrap();
        let _other = r.register(session("e", Some("t1"), 2, "2")).unwrap();
        let _other_type = r.register(session("f", Some("t1"), 3, "1")).unwrap();
        let user: Arc<str> = "1".into();
        let ids = |r: &Registry| {
            let mut ids = Vec::new();
            r.for_user_any_tenant(2, &user, |s| ids.push(s.id.to_string()));
            ids.sort();
            ids
        };
        assert_eq!(ids(&r), vec!["a", "b", "c", "d"]);
        assert_eq!(r.user_sessions_any_tenant(2, &user), 4);
        drop((b, c));
        assert_eq!(ids(&r), vec!["a", "d"]);
        drop((a, d));
        assert!(ids(&r).is_empty());
        assert_eq!(
            r.index.read().tenants_of.len(),
            2,
            "only users 2 and 1/type 3 remain"
        );
    }

    #[test]
    fn full_queue_closes_with_slow_consumer_code() {
        let (s, _queue) = session_and_queue("a", None, 1, "1");
        let frame = || Frame::Text("x".into());
        assert_eq!(s.push(frame()), Pushed::Queued);
        assert_eq!(s.push(frame()), Pushed::Queued);
        assert_eq!(s.push(frame()), Pushed::Overflow);
        assert!(s.is_closing());
        assert_eq!(s.close_code(), close_codes::SLOW_CONSUMER);
    }
}
