//! Cluster-wide presence: [`ClusterPresence`] answers through whichever broker joins the nodes
//! (and tells targeted routing where users are); [`RedisPresence`] keeps it in Redis
//! (heartbeats over NATS or RabbitMQ: [`super::beats`]).
//!
//! In Redis (one Redis, or a Redis Cluster where every key of a cluster shares one hash slot:
//! see [`super::redis_link`]), each node writes its own users, per (user type, tenant), as
//! hashes `user id → session count` with a TTL it keeps refreshing, and its heartbeat into the
//! `<cluster>:nodes` sorted set. After sessions come or go it writes only the users that
//! changed; the whole set is rewritten every third of the TTL and after a failed write.
//! Queries read every live node's hashes (this node's answer comes from its registry, so it is
//! never stale). A node that dies without cleaning up drops out when its heartbeat is older
//! than the TTL, and its keys expire; every full write also trims such nodes from the set,
//! so it does not grow with every node that ever ran.
//!
//! On shutdown the writing task removes this node's entries as its last act, so no write of
//! its own can land after the removal.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{redis_link::Link, wanted::Wanted};
use crate::sessions::{Registry, UserKey};

/// After a session comes or goes, wait this long for more changes before writing.
const SYNC_DEBOUNCE: Duration = Duration::from_millis(100);
/// After a failed write, wait this long before the next (a full rewrite).
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

/// Cluster-wide presence through the cluster's broker. Every query answers `None` when the
/// broker cannot be asked; the caller then falls back to this node's own sessions.
#[derive(Debug)]
pub(crate) enum ClusterPresence {
    /// Kept in Redis.
    Redis(Arc<RedisPresence>),
    /// Exchanged in heartbeats over NATS or RabbitMQ.
    Beats(Arc<super::beats::BeatPresence>),
    /// Never answers (unit tests of routing).
    #[cfg(test)]
    Unreachable,
}

impl ClusterPresence {
    /// Sessions of a user on every node.
    pub(crate) async fn user_sessions(&self, key: &UserKey) -> Option<usize> {
        match self {
            Self::Redis(p) => p.user_sessions(key).await,
            Self::Beats(p) => p.user_sessions(key).await,
            #[cfg(test)]
            Self::Unreachable => None,
        }
    }

    /// Sessions of a user on every node, in every tenant.
    pub(crate) async fn user_sessions_any_tenant(
        &self,
        user_type: u32,
        user_id: &Arc<str>,
    ) -> Option<usize> {
        match self {
            Self::Redis(p) => p.user_sessions_any_tenant(user_type, user_id).await,
            Self::Beats(p) => p.user_sessions_any_tenant(user_type, user_id).await,
            #[cfg(test)]
            Self::Unreachable => None,
        }
    }

    /// Online users of a user type on every node; `tenant` `None` means every tenant.
    pub(crate) async fn online_users(
        &self,
        tenant: Option<&Option<Arc<str>>>,
        user_type: u32,
    ) -> Option<Vec<String>> {
        match self {
            Self::Redis(p) => p.online_users(tenant, user_type).await,
            Self::Beats(p) => p.online_users(tenant, user_type).await,
            #[cfg(test)]
            Self::Unreachable => None,
        }
    }

    /// The other live nodes of the cluster; `None` when the broker cannot be asked.
    pub(crate) async fn other_nodes(&self) -> Option<Vec<Arc<str>>> {
        match self {
            Self::Redis(p) => p.other_nodes().await,
            Self::Beats(p) => p.other_nodes(),
            #[cfg(test)]
            Self::Unreachable => None,
        }
    }

    /// For each wanted user, the other nodes that hold a session of it (targeted routing).
    pub(crate) async fn locate(&self, wanted: &[Wanted]) -> Option<Vec<BTreeSet<Arc<str>>>> {
        match self {
            Self::Redis(p) => p.locate(wanted).await,
            Self::Beats(p) => p.locate(wanted),
            #[cfg(test)]
            Self::Unreachable => None,
        }
    }

    /// Waits for this node's presence to be withdrawn; call after cancelling the cluster's
    /// stop token.
    pub(crate) async fn leave_now(&self) {
        match self {
            Self::Redis(p) => p.leave_now().await,
            Self::Beats(p) => p.leave_now().await,
            #[cfg(test)]
            Self::Unreachable => {}
        }
    }
}

/// This node's presence in Redis, and queries across the cluster.
pub(crate) struct RedisPresence {
    con: Link,
    /// What every key starts with: the cluster name (hash-tagged on a Redis Cluster).
    cluster: String,
    node_id: Arc<str>,
    ttl: Duration,
    registry: Arc<Registry>,
    /// Cancelled when the writing task has ended, after it has removed this node's entries;
    /// awaited on shutdown.
    left: CancellationToken,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("node_id", &self.node_id)
            .finish()
    }
}

fn tenant_tag(tenant: &Option<Arc<str>>) -> String {
    match tenant {
        Some(t) => format!("t={t}"),
        None => "-".into(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl RedisPresence {
    /// Starts writing this node's presence: after every registry change (debounced) and every
    /// third of the TTL. Stops and removes this node's entries when `stop` is cancelled.
    pub(crate) fn start(
        con: Link,
        key_prefix: &str,
        node_id: Arc<str>,
        ttl: Duration,
        registry: Arc<Registry>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let presence = Arc::new(Self {
            con,
            cluster: key_prefix.to_owned(),
            node_id,
            ttl: ttl.max(Duration::from_secs(3)),
            registry: registry.clone(),
            left: CancellationToken::new(),
        });
        registry.track_user_changes();
        tokio::spawn(sync_loop(presence.clone(), registry.changes(), stop));
        presence
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.cluster)
    }

    fn groups_key(&self, node: &str) -> String {
        format!("{}:presence:{node}:groups", self.cluster)
    }

    fn group_key(&self, node: &str, user_type: u32, tenant: &Option<Arc<str>>) -> String {
        format!(
            "{}:presence:{node}:{user_type}:{}",
            self.cluster,
            tenant_tag(tenant)
        )
    }

    /// Rewrites this node's entries from the registry, atomically.
    async fn sync(&self) -> redis::RedisResult<()> {
        // Group key → (user id, sessions).
        let mut groups: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
        for (key, sessions) in self.registry.user_counts() {
            groups
                .entry(self.group_key(&self.node_id, key.user_type, &key.tenant))
                .or_default()
                .push((key.user_id.to_string(), sessions));
        }
        let mut con = self.con.clone();
        let groups_key = self.groups_key(&self.node_id);
        let ttl = self.ttl.as_secs().max(1);
        let mut pipe = self.clearing_pipeline(&mut con).await?;
        for (key, users) in &groups {
            pipe.hset_multiple(key, users).ignore();
            pipe.expire(key, ttl as i64).ignore();
            pipe.sadd(&groups_key, key).ignore();
        }
        pipe.expire(&groups_key, ttl as i64).ignore();
        let now = now_ms();
        pipe.zadd(self.nodes_key(), &*self.node_id, now).ignore();
        // Nodes whose heartbeat expired are gone (their keys expired with it).
        let expired = now.saturating_sub(self.ttl.as_millis() as u64);
        pipe.zrembyscore(self.nodes_key(), "-inf", format!("({expired}"))
            .ignore();
        pipe.query_async::<()>(&mut con).await
    }

    /// Writes the session counts of the users that changed (0: removed), and the heartbeat.
    async fn sync_users(&self, changed: &[(UserKey, usize)]) -> redis::RedisResult<()> {
        let mut con = self.con.clone();
        let groups_key = self.groups_key(&self.node_id);
        let ttl = self.ttl.as_secs().max(1) as i64;
        let mut pipe = redis::pipe();
        for (key, sessions) in changed {
            let group = self.group_key(&self.node_id, key.user_type, &key.tenant);
            if *sessions == 0 {
                pipe.hdel(&group, &*key.user_id).ignore();
            } else {
                pipe.hset(&group, &*key.user_id, *sessions).ignore();
                pipe.expire(&group, ttl).ignore();
                pipe.sadd(&groups_key, &group).ignore();
            }
        }
        pipe.expire(&groups_key, ttl).ignore();
        pipe.zadd(self.nodes_key(), &*self.node_id, now_ms())
            .ignore();
        pipe.query_async::<()>(&mut con).await
    }

    /// Waits, at most three seconds, for the writing task to remove this node's entries and
    /// end; call after cancelling the `stop` token given to [`RedisPresence::start`].
    pub(crate) async fn leave_now(&self) {
        if tokio::time::timeout(Duration::from_secs(3), self.left.cancelled())
            .await
            .is_err()
        {
            tracing::warn!("cluster presence: could not remove this node's entries");
        }
    }

    /// Removes this node's entries.
    async fn leave(&self) -> redis::RedisResult<()> {
        let mut con = self.con.clone();
        let mut pipe = self.clearing_pipeline(&mut con).await?;
        pipe.zrem(self.nodes_key(), &*self.node_id).ignore();
        pipe.query_async::<()>(&mut con).await
    }

    /// An atomic pipeline that starts by deleting every key this node wrote.
    async fn clearing_pipeline(&self, con: &mut Link) -> redis::RedisResult<redis::Pipeline> {
        let groups_key = self.groups_key(&self.node_id);
        let old: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&groups_key)
            .query_async(con)
            .await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in &old {
            pipe.del(key).ignore();
        }
        pipe.del(&groups_key).ignore();
        Ok(pipe)
    }

    /// The other nodes whose heartbeat is younger than the TTL.
    async fn other_live_nodes(&self, con: &mut Link) -> redis::RedisResult<Vec<String>> {
        let since = now_ms().saturating_sub(self.ttl.as_millis() as u64);
        let nodes: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.nodes_key())
            .arg(since)
            .arg("+inf")
            .query_async(con)
            .await?;
        Ok(nodes.into_iter().filter(|n| **n != *self.node_id).collect())
    }

    /// The other live nodes; `None` when Redis cannot be asked.
    pub(crate) async fn other_nodes(&self) -> Option<Vec<Arc<str>>> {
        let mut con = self.con.clone();
        let nodes = tokio::time::timeout(Duration::from_secs(1), self.other_live_nodes(&mut con));
        match nodes.await {
            Ok(Ok(nodes)) => Some(nodes.into_iter().map(Into::into).collect()),
            _ => None,
        }
    }

    /// Sessions of a user on every node; `None` when Redis cannot be asked.
    pub(crate) async fn user_sessions(&self, key: &UserKey) -> Option<usize> {
        let local = self.registry.user_sessions(key);
        let mut con = self.con.clone();
        let remote = async {
            let nodes = self.other_live_nodes(&mut con).await?;
            let mut pipe = redis::pipe();
            for node in &nodes {
                pipe.hget(
                    self.group_key(node, key.user_type, &key.tenant),
                    &*key.user_id,
                );
            }
            let counts: Vec<Option<usize>> = pipe.query_async(&mut con).await?;
            redis::RedisResult::Ok(counts.into_iter().flatten().sum::<usize>())
        };
        match tokio::time::timeout(Duration::from_secs(1), remote).await {
            Ok(Ok(remote)) => Some(local + remote),
            _ => None,
        }
    }

    /// Sessions of a user on every node, in every tenant; `None` when Redis cannot be asked.
    pub(crate) async fn user_sessions_any_tenant(
        &self,
        user_type: u32,
        user_id: &Arc<str>,
    ) -> Option<usize> {
        let local = self.registry.user_sessions_any_tenant(user_type, user_id);
        let mut con = self.con.clone();
        let remote = async {
            let nodes = self.other_live_nodes(&mut con).await?;
            let keys = self.group_keys_of_type(&mut con, &nodes, user_type).await?;
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.hget(key, &**user_id);
            }
            let counts: Vec<Option<usize>> = pipe.query_async(&mut con).await?;
            redis::RedisResult::Ok(counts.into_iter().flatten().sum::<usize>())
        };
        match tokio::time::timeout(Duration::from_secs(1), remote).await {
            Ok(Ok(remote)) => Some(local + remote),
            _ => None,
        }
    }

    /// The group keys of `user_type`, in every tenant, that `nodes` wrote.
    async fn group_keys_of_type(
        &self,
        con: &mut Link,
        nodes: &[String],
        user_type: u32,
    ) -> redis::RedisResult<Vec<String>> {
        let mut pipe = redis::pipe();
        for node in nodes {
            pipe.smembers(self.groups_key(node));
        }
        let groups: Vec<Vec<String>> = pipe.query_async(con).await?;
        Ok(nodes
            .iter()
            .zip(groups)
            .flat_map(|(node, keys)| {
                let prefix = format!("{}:presence:{node}:{user_type}:", self.cluster);
                keys.into_iter().filter(move |k| k.starts_with(&prefix))
            })
            .collect())
    }

    /// For each wanted user, the other live nodes that hold a session of it; `None` when
    /// Redis cannot be asked. Two or three round trips, whatever the number of users.
    pub(crate) async fn locate(&self, wanted: &[Wanted]) -> Option<Vec<BTreeSet<Arc<str>>>> {
        let mut con = self.con.clone();
        let work = async {
            let nodes = self.other_live_nodes(&mut con).await?;
            // A user wanted in every tenant is looked for under every group of its type.
            let groups: Vec<Vec<String>> = if wanted.iter().any(|w| w.tenant.is_none()) {
                let mut pipe = redis::pipe();
                for node in &nodes {
                    pipe.smembers(self.groups_key(node));
                }
                pipe.query_async(&mut con).await?
            } else {
                Vec::new()
            };
            let mut pipe = redis::pipe();
            // (wanted index, node index) of each HEXISTS in the pipeline.
            let mut asked: Vec<(usize, usize)> = Vec::new();
            for (wi, w) in wanted.iter().enumerate() {
                for (ni, node) in nodes.iter().enumerate() {
                    match &w.tenant {
                        Some(tenant) => {
                            let key = self.group_key(node, w.user_type, tenant);
                            pipe.hexists(key, &*w.user_id);
                            asked.push((wi, ni));
                        }
                        None => {
                            let prefix =
                                format!("{}:presence:{node}:{}:", self.cluster, w.user_type);
                            let keys = groups.get(ni).into_iter().flatten();
                            for key in keys.filter(|k| k.starts_with(&prefix)) {
                                pipe.hexists(key, &*w.user_id);
                                asked.push((wi, ni));
                            }
                        }
                    }
                }
            }
            let hits: Vec<bool> = if asked.is_empty() {
                Vec::new()
            } else {
                pipe.query_async(&mut con).await?
            };
            let mut found = vec![BTreeSet::new(); wanted.len()];
            for ((wi, ni), hit) in asked.into_iter().zip(hits) {
                if hit {
                    found[wi].insert(Arc::from(nodes[ni].as_str()));
                }
            }
            redis::RedisResult::Ok(found)
        };
        match tokio::time::timeout(Duration::from_secs(1), work).await {
            Ok(Ok(found)) => Some(found),
            _ => None,
        }
    }

    /// Online users of a user type on every node; `tenant` `None` means every tenant.
    /// `None` when Redis cannot be asked.
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
        let mut con = self.con.clone();
        let remote = async {
            let nodes = self.other_live_nodes(&mut con).await?;
            let keys: Vec<String> = match tenant {
                Some(t) => nodes
                    .iter()
                    .map(|n| self.group_key(n, user_type, t))
                    .collect(),
                None => self.group_keys_of_type(&mut con, &nodes, user_type).await?,
            };
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.hkeys(key);
            }
            let ids: Vec<Vec<String>> = pipe.query_async(&mut con).await?;
            redis::RedisResult::Ok(ids)
        };
        match tokio::time::timeout(Duration::from_secs(1), remote).await {
            Ok(Ok(ids)) => {
                users.extend(ids.into_iter().flatten());
                Some(users.into_iter().collect())
            }
            _ => None,
        }
    }
}

/// How long to wait after a change before writing, the last write having ended at `written`:
/// nothing after a quiet spell (a new session is known elsewhere one round trip later, so
/// targeted deliveries find it), the rest of [`SYNC_DEBOUNCE`] during a burst.
fn debounce(written: tokio::time::Instant) -> Duration {
    SYNC_DEBOUNCE.saturating_sub(written.elapsed())
}

async fn sync_loop(presence: Arc<RedisPresence>, changed: Arc<Notify>, stop: CancellationToken) {
    let refresh = presence.ttl / 3;
    let mut failing = false;
    let mut last_full: Option<tokio::time::Instant> = None;
    loop {
        // Taken every round, so the set never holds more than one round's changes.
        let users = presence.registry.take_changed_users();
        let full = failing || last_full.is_none_or(|t| t.elapsed() >= refresh);
        let write = async {
            if full {
                presence.sync().await
            } else {
                presence.sync_users(&users).await
            }
        };
        // Stopping interrupts a write that hangs; one already sent precedes the removal below
        // on the same connection.
        let sync = tokio::select! {
            () = stop.cancelled() => break,
            sync = tokio::time::timeout(Duration::from_secs(2), write) => sync,
        };
        let written = tokio::time::Instant::now();
        match sync {
            Ok(Ok(())) => {
                if full {
                    last_full = Some(tokio::time::Instant::now());
                }
                if failing {
                    tracing::info!("cluster presence: writing again");
                    failing = false;
                }
            }
            _ => {
                if !failing {
                    tracing::warn!("cluster presence: cannot write to redis; retrying");
                    failing = true;
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = changed.notified() => {
                // Let a burst of connects or disconnects settle into one write.
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(debounce(written)) => {},
                }
            }
            // After a failed write, try again soon: a Redis that comes back (empty, after a
            // restart) learns this node's users within a second, not a third of the TTL.
            () = tokio::time::sleep(if failing { RETRY_AFTER_FAILURE.min(refresh) } else { refresh }) => {},
        }
    }
    if tokio::time::timeout(Duration::from_secs(2), presence.leave())
        .await
        .is_err()
    {
        tracing::warn!("cluster presence: could not remove this node's entries");
    }
    presence.left.cancel();
}
