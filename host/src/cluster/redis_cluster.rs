//! The Redis broker on a Redis Cluster (`cluster.redis_url` a list): deliveries travel over
//! sharded pub/sub, `SPUBLISH` / `SSUBSCRIBE`, broadcasts on `<cluster name>:deliveries` and
//! targeted deliveries on `<cluster name>:node:<node id>`, the same channels as on one Redis.
//!
//! A sharded channel lives on the shard that owns its hash slot, and a message published to it
//! is handled by that shard alone (classic `PUBLISH` on a cluster is copied to every shard).
//! The node channels carry no hash tag, so they hash to different slots and the targeted
//! deliveries, most of a chat's traffic, spread over the shards. The broadcast channel is one
//! channel on one shard: every node has to read every broadcast anyway, and one channel keeps
//! broadcasts from one node in the order they were sent. Across channels (a targeted delivery
//! and a broadcast) there is no order on a cluster, where they may sit on two shards.
//!
//! Delivery is at most once, as on one Redis: `publish` never waits; publications go through
//! a bounded queue to a publisher task, which sends what queued up as one pipeline per channel
//! (a pipeline must stay within one slot), all at once. What cannot be sent is counted in
//! `switchboard_messages_dropped_total{reason="broker_down"}` and dropped, while local delivery
//! goes on.
//!
//! The link is checked end to end every `cluster.health_interval_ms`: a PING to every master
//! the cluster names (by address: a cluster goes on serving the other masters' slots while one
//! is gone), and a probe this node publishes on its own channel and on the broadcast channel, which must
//! come back through its own subscriptions within a second. The client reconnects to a shard
//! that restarts and subscribes there again by itself; should a subscription still be missing
//! after three probes, the node drops the connection and subscribes from scratch. Until the
//! probes come back the broker is down (`/readyz` 503, `switchboard_broker_up` 0, and a push
//! answers `cluster: "dropped"`).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{PushInfo, PushKind, Value, cluster_async::ClusterConnection};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{
    Broker, BrokerState, Publication,
    health::{COMMAND_TIMEOUT, Health},
    route::{Route, Router},
};

/// Publications waiting for the publisher task.
const PUBLISH_QUEUE: usize = 10_000;
/// Publications sent in one round at most.
const PUBLISH_BATCH: usize = 256;
/// Incoming publications waiting to be delivered locally.
const INBOUND_QUEUE: usize = 10_000;
/// Backoff between connection attempts: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// Probes in a row that may miss before the connection is rebuilt and subscribed afresh.
const MISSES_BEFORE_RESUBSCRIBE: u32 = 3;

/// Health condition: both subscriptions carry this node's probes back.
const SUBSCRIBER: usize = 0;
/// Health condition: every master answers PING, and the last publish went through.
const PUBLISHER: usize = 1;

/// Joins the node to the others through a Redis Cluster's sharded pub/sub.
pub(crate) struct ShardedBroker {
    outbound: mpsc::Sender<Publication>,
    /// Link state, for `publish`, `/readyz` and the gauge.
    health: Arc<Health>,
}

impl std::fmt::Debug for ShardedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedBroker")
            .field("health", &self.health)
            .finish()
    }
}

/// The sharded channels of a cluster, as this node sees them.
#[derive(Debug, Clone)]
struct Channels {
    /// Every node subscribes.
    broadcast: String,
    /// Followed by a node id: that node's own channel.
    node_prefix: String,
    /// This node's own channel.
    own: String,
}

impl Channels {
    fn node(&self, node: &str) -> String {
        format!("{}{node}", self.node_prefix)
    }
}

/// The probes that came back: the highest sequence number seen on each channel.
#[derive(Debug, Default)]
struct Probes {
    /// Seen on this node's own channel.
    own: AtomicU64,
    /// Seen on the broadcast channel.
    broadcast: AtomicU64,
    /// Woken whenever a probe comes back.
    arrived: Notify,
}

impl Probes {
    fn back(&self, seq: u64) -> bool {
        self.own.load(Ordering::Acquire) >= seq && self.broadcast.load(Ordering::Acquire) >= seq
    }
}

impl ShardedBroker {
    /// Starts the link task (connect, subscribe, probe) and the publisher task. Publications
    /// from other nodes come out of the returned receiver; the tasks end when `stop` is
    /// cancelled.
    pub(crate) fn start(
        urls: &[String],
        cluster: &str,
        node_id: Arc<str>,
        health_interval: Duration,
        router: Arc<Router>,
        stop: CancellationToken,
    ) -> anyhow::Result<(Arc<Self>, mpsc::Receiver<Publication>)> {
        let node_prefix = format!("{cluster}:node:");
        let channels = Channels {
            broadcast: format!("{cluster}:deliveries"),
            own: format!("{node_prefix}{node_id}"),
            node_prefix,
        };
        let (outbound, outbound_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        let health = Arc::new(Health::new("redis"));
        metrics::gauge!("switchboard_broker_up").set(0.0);
        let probes = Arc::new(Probes::default());
        let client = super::redis_link::cluster_builder(urls, COMMAND_TIMEOUT)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(receiver(
                channels.clone(),
                node_id.clone(),
                inbound_tx,
                probes.clone(),
            ))
            .build()?;
        let (con_tx, con_rx) = watch::channel(None);
        tokio::spawn(publish_loop(
            con_rx,
            channels.clone(),
            router,
            outbound_rx,
            health.clone(),
            stop.clone(),
        ));
        tokio::spawn(link_loop(
            client,
            channels,
            node_id,
            con_tx,
            probes,
            health.clone(),
            health_interval,
            stop,
        ));
        Ok((Arc::new(Self { outbound, health }), inbound))
    }
}

impl Broker for ShardedBroker {
    fn is_clustered(&self) -> bool {
        true
    }

    fn publish(&self, publication: Publication) -> bool {
        self.health.offer(&self.outbound, publication)
    }

    fn state(&self) -> BrokerState {
        self.health.state()
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

/// The payload of a probe: `probe:<node id>:<sequence number>` (a publication is JSON, so it
/// never starts this way).
fn probe(node_id: &str, seq: u64) -> String {
    format!("probe:{node_id}:{seq}")
}

/// What the client calls with every push message of every shard, on the connection's own
/// task, so it must not wait: a publication from another node goes to local delivery (counted
/// and dropped when that is full), a probe of this node's is noted, anything else (this
/// node's probes' echo on other nodes, subscription confirmations) is ignored.
fn receiver(
    channels: Channels,
    node_id: Arc<str>,
    inbound: mpsc::Sender<Publication>,
    probes: Arc<Probes>,
) -> impl Fn(PushInfo) -> Result<(), std::convert::Infallible> + Send + Sync + 'static {
    let own_probe = format!("probe:{node_id}:");
    move |push: PushInfo| {
        if push.kind != PushKind::SMessage {
            return Ok(());
        }
        let [Value::BulkString(channel), Value::BulkString(payload)] = push.data.as_slice() else {
            return Ok(());
        };
        let on_own_channel = *channel != channels.broadcast.as_bytes();
        if payload.starts_with(b"probe:") {
            // Another node's probes (which come by on the broadcast channel) are ignored.
            let seq = payload
                .strip_prefix(own_probe.as_bytes())
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<u64>().ok());
            if let Some(seq) = seq {
                let seen = if on_own_channel {
                    &probes.own
                } else {
                    &probes.broadcast
                };
                seen.fetch_max(seq, Ordering::AcqRel);
                probes.arrived.notify_waiters();
            }
            return Ok(());
        }
        if let Some(p) = super::incoming(payload, &node_id, on_own_channel, "redis") {
            super::forward(&inbound, p);
        }
        Ok(())
    }
}

/// Keeps a subscribed connection: connects, subscribes, hands the connection to the
/// publisher, and probes it every `health_interval`; rebuilds it when probes keep missing.
#[expect(
    clippy::too_many_arguments,
    reason = "the task's whole state, passed once"
)]
async fn link_loop(
    client: redis::cluster::ClusterClient,
    channels: Channels,
    node_id: Arc<str>,
    connection: watch::Sender<Option<ClusterConnection>>,
    probes: Arc<Probes>,
    health: Arc<Health>,
    health_interval: Duration,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF.0;
    let mut seq = 0u64;
    while !stop.is_cancelled() {
        let subscribed = async {
            let mut con = client.get_async_connection().await?;
            // One channel a command: the two may hash to different slots (masters).
            con.ssubscribe(&channels.broadcast).await?;
            con.ssubscribe(&channels.own).await?;
            redis::RedisResult::Ok(con)
        };
        let con = tokio::select! {
            () = stop.cancelled() => return,
            r = tokio::time::timeout(COMMAND_TIMEOUT * 2, subscribed) => r,
        };
        let mut con = match con {
            Ok(Ok(con)) => con,
            Ok(Err(e)) => {
                health.set(SUBSCRIBER, false, &e.to_string());
                wait(&stop, &mut backoff).await;
                continue;
            }
            Err(_) => {
                health.set(SUBSCRIBER, false, "connect timed out");
                wait(&stop, &mut backoff).await;
                continue;
            }
        };
        connection.send_replace(Some(con.clone()));
        backoff = BACKOFF.0;
        let mut misses = 0;
        let mut ticks = tokio::time::interval(health_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while misses < MISSES_BEFORE_RESUBSCRIBE {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {},
            }
            seq += 1;
            let check = check(&mut con, &channels, &node_id, &probes, seq);
            let (answered, back) = tokio::select! {
                () = stop.cancelled() => return,
                r = check => r,
            };
            health.set(PUBLISHER, answered, "a master does not answer");
            health.set(SUBSCRIBER, back, "a probe did not come back");
            misses = if back { 0 } else { misses + 1 };
        }
        tracing::warn!("redis broker: subscriptions lost; subscribing again");
        connection.send_replace(None);
    }
}

/// One health check: whether every master answered PING and the probes went out, and whether
/// probe `seq` came back on both channels, each within [`COMMAND_TIMEOUT`].
async fn check(
    con: &mut ClusterConnection,
    channels: &Channels,
    node_id: &str,
    probes: &Probes,
    seq: u64,
) -> (bool, bool) {
    let payload = probe(node_id, seq);
    let mut own = con.clone();
    let mut broadcast = con.clone();
    let mut publish_own = redis::cmd("SPUBLISH");
    publish_own.arg(&channels.own).arg(&payload);
    let mut publish_broadcast = redis::cmd("SPUBLISH");
    publish_broadcast.arg(&channels.broadcast).arg(&payload);
    let sent = async {
        let masters = ping_masters(con);
        let own = publish_own.query_async::<Value>(&mut own);
        let broadcast = publish_broadcast.query_async::<Value>(&mut broadcast);
        let (masters, own, broadcast) = tokio::join!(masters, own, broadcast);
        masters && own.is_ok() && broadcast.is_ok()
    };
    let answered = matches!(tokio::time::timeout(COMMAND_TIMEOUT, sent).await, Ok(true));
    let came_back = async {
        loop {
            let arrived = probes.arrived.notified();
            if probes.back(seq) {
                return;
            }
            arrived.await;
        }
    };
    let back = tokio::time::timeout(COMMAND_TIMEOUT, came_back)
        .await
        .is_ok();
    (answered, back)
}

/// Whether every master the cluster names (`CLUSTER SLOTS`, asked of any node) answers PING.
/// A master that is gone still owns its slots, so it is asked by its address: a Redis Cluster
/// goes on serving the others' slots (and sharded pub/sub on them, by default even once it
/// counts itself down), and a PING to "every master" would only ask the connected ones.
async fn ping_masters(con: &mut ClusterConnection) -> bool {
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    let Ok(slots) = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async::<Value>(con)
        .await
    else {
        return false;
    };
    let masters = masters(&slots);
    if masters.is_empty() {
        return false;
    }
    let pings = masters.into_iter().map(|(host, port)| {
        let mut con = con.clone();
        async move {
            let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            con.route_command(redis::cmd("PING"), to).await.is_ok()
        }
    });
    futures_util::future::join_all(pings)
        .await
        .into_iter()
        .all(|answered| answered)
}

/// The master of each slot range of a `CLUSTER SLOTS` reply, once each: every entry is
/// `[first slot, last slot, [host, port, id, ...], replicas...]`.
fn masters(slots: &Value) -> Vec<(String, u16)> {
    let Value::Array(ranges) = slots else {
        return Vec::new();
    };
    let mut masters: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        let Value::Array(range) = range else { continue };
        let Some(Value::Array(master)) = range.get(2) else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
            Some(Value::SimpleString(h)) => h.clone(),
            _ => continue,
        };
        let Some(Value::Int(port)) = master.get(1) else {
            continue;
        };
        let Ok(port) = u16::try_from(*port) else {
            continue;
        };
        if !masters.contains(&(host.clone(), port)) {
            masters.push((host, port));
        }
    }
    masters
}

async fn publish_loop(
    connection: watch::Receiver<Option<ClusterConnection>>,
    channels: Channels,
    router: Arc<Router>,
    mut rx: mpsc::Receiver<Publication>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let mut failing = false;
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return,
            n = rx.recv_many(&mut batch, PUBLISH_BATCH) => n,
        };
        if received == 0 {
            return;
        }
        let routes = router.routes(&batch).await;
        // Channel → its pipeline and how many publishes it holds.
        let mut pipes: HashMap<String, (redis::Pipeline, u64)> = HashMap::new();
        let mut add = |channel: String, payload: &str| {
            let (pipe, count) = pipes.entry(channel.clone()).or_default();
            pipe.cmd("SPUBLISH").arg(channel).arg(payload).ignore();
            *count += 1;
        };
        for (publication, route) in batch.drain(..).zip(routes) {
            let payload = match serde_json::to_string(&publication) {
                Ok(payload) => payload,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a publication");
                    continue;
                }
            };
            match route {
                Route::Everyone => add(channels.broadcast.clone(), &payload),
                Route::Nodes(nodes) => {
                    for node in nodes {
                        add(channels.node(&node), &payload);
                    }
                }
            }
        }
        if pipes.is_empty() {
            continue;
        }
        let con = connection.borrow().clone();
        let (sent, dropped) = match con {
            Some(con) => send(con, pipes).await,
            None => (0, pipes.values().map(|(_, n)| n).sum()),
        };
        if sent > 0 {
            metrics::counter!("switchboard_broker_published_total").increment(sent);
        }
        if dropped == 0 {
            if failing {
                tracing::info!("redis broker: publishing again");
                failing = false;
            }
            continue;
        }
        metrics::counter!("switchboard_messages_dropped_total", "reason" => "broker_down")
            .increment(dropped);
        // Down until the next check finds every master answering.
        health.set(PUBLISHER, false, "publish failed");
        if !failing {
            tracing::warn!(
                "redis broker: cannot publish; cross-node deliveries are dropped until it recovers"
            );
            failing = true;
        }
    }
}

/// Sends every channel's pipeline at once, each to its shard; how many publishes went through
/// and how many were dropped (a pipeline that failed or took longer than [`COMMAND_TIMEOUT`]).
async fn send(
    con: ClusterConnection,
    pipes: HashMap<String, (redis::Pipeline, u64)>,
) -> (u64, u64) {
    let sends = pipes.into_values().map(|(pipe, count)| {
        let mut con = con.clone();
        async move {
            let sent =
                tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(&mut con)).await;
            (matches!(sent, Ok(Ok(()))), count)
        }
    });
    let results = futures_util::future::join_all(sends).await;
    results
        .into_iter()
        .fold((0, 0), |(sent, dropped), (ok, n)| {
            if ok {
                (sent + n, dropped)
            } else {
                (sent, dropped + n)
            }
        })
}

async fn wait(stop: &CancellationToken, backoff: &mut Duration) {
    tokio::select! {
        () = stop.cancelled() => {},
        () = tokio::time::sleep(*backoff) => {},
    }
    *backoff = (*backoff * 2).min(BACKOFF.1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(channel: &str, payload: &str) -> PushInfo {
        PushInfo {
            kind: PushKind::SMessage,
            data: vec![
                Value::BulkString(channel.into()),
                Value::BulkString(payload.into()),
            ],
        }
    }

    #[test]
    fn masters_are_read_from_cluster_slots_once_each() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.into()),
                Value::Int(port),
                Value::BulkString("id".into()),
            ])
        };
        let range = |from: i64, to: i64, master: Value| {
            Value::Array(vec![Value::Int(from), Value::Int(to), master, node("r", 1)])
        };
        let slots = Value::Array(vec![
            range(0, 99, node("10.0.0.1", 7000)),
            range(100, 199, node("10.0.0.2", 7000)),
            range(200, 299, node("10.0.0.1", 7000)),
            Value::Int(3),
        ]);
        assert_eq!(
            masters(&slots),
            vec![("10.0.0.1".to_owned(), 7000), ("10.0.0.2".to_owned(), 7000)]
        );
        assert!(masters(&Value::Nil).is_empty());
    }

    #[tokio::test]
    async fn the_receiver_notes_own_probes_and_forwards_others_publications() {
        let channels = Channels {
            broadcast: "c:deliveries".into(),
            node_prefix: "c:node:".into(),
            own: "c:node:me".into(),
        };
        let probes = Arc::new(Probes::default());
        let (tx, mut rx) = mpsc::channel(4);
        let receive = receiver(channels, "me".into(), tx, probes.clone());
        receive(push("c:node:me", &probe("me", 3))).unwrap();
        assert!(!probes.back(3), "the broadcast probe has not come back yet");
        receive(push("c:deliveries", &probe("me", 3))).unwrap();
        assert!(probes.back(3));
        // Another node's probe, a stale one, and garbage are ignored.
        receive(push("c:deliveries", &probe("other", 9))).unwrap();
        receive(push("c:deliveries", &probe("me", 1))).unwrap();
        receive(push("c:deliveries", "probe:me:x")).unwrap();
        assert!(probes.back(3) && !probes.back(4));
        let publication = |origin: &str| {
            serde_json::to_string(&Publication {
                origin: origin.into(),
                target: crate::target::Target::Everyone,
                scope: crate::target::Scope::All,
                msg_type: "t".into(),
                content: serde_json::value::RawValue::from_string("1".into()).unwrap(),
                via: Default::default(),
            })
            .unwrap()
        };
        receive(push("c:deliveries", &publication("other"))).unwrap();
        receive(push("c:deliveries", &publication("me"))).unwrap();
        let got = rx.try_recv().unwrap();
        assert_eq!(&*got.origin, "other");
        assert!(
            rx.try_recv().is_err(),
            "this node's own publication is not delivered twice"
        );
    }
}
