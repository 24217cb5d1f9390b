//! The Redis broker: deliveries travel between nodes over pub/sub, broadcasts on
//! `<cluster name>:deliveries` (every node subscribes) and targeted deliveries on
//! `<cluster name>:node:<node id>` (that node only; see [`super::route`]).
//!
//! Delivery is at most once. `publish` never waits: publications go through a bounded queue to
//! a publisher task; when the queue is full or Redis is unreachable they are counted in
//! `switchboard_messages_dropped_total{reason="broker_down"}` and dropped, while local delivery
//! goes on. The subscriber reconnects with capped exponential backoff and subscribes again
//! after every reconnect, so cross-node delivery resumes by itself when Redis returns.
//!
//! A Redis that stops answering without closing its connections (a half-open link, a stopped
//! process) is noticed too: both connections send a PING every `cluster.health_interval_ms`,
//! and an unanswered PING or a failed publish marks the broker down (`/readyz` 503,
//! `switchboard_broker_up` 0) until a PING is answered again.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    Broker, BrokerState, Publication,
    health::Health,
    route::{Route, Router},
};

/// Publications waiting for the publisher task.
const PUBLISH_QUEUE: usize = 10_000;
/// Publications sent in one pipeline at most.
const PUBLISH_BATCH: usize = 256;
/// Incoming publications waiting to be delivered locally.
const INBOUND_QUEUE: usize = 10_000;
/// Backoff between reconnection attempts: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// How long one Redis command may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// Health condition: subscribed, and the subscription connection answers PINGs.
const SUBSCRIBER: usize = 0;
/// Health condition: the publishing connection answers PINGs and its last publish went through.
const PUBLISHER: usize = 1;

/// Joins the node to the others through Redis pub/sub.
pub(crate) struct RedisBroker {
    outbound: mpsc::Sender<Publication>,
    /// Link state, for `publish`, `/readyz` and the gauge.
    health: Arc<Health>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("health", &self.health)
            .finish()
    }
}

/// A connection manager that gives up quickly, so a dead Redis costs a publish at most
/// [`COMMAND_TIMEOUT`] and never piles up retries.
pub(crate) fn connection_manager(client: &redis::Client) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(BACKOFF.1);
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

impl RedisBroker {
    /// Starts the publisher and subscriber tasks, which PING their connections every
    /// `health_interval`. Publications from other nodes come out of the returned receiver; the
    /// tasks end when `stop` is cancelled.
    pub(crate) fn start(
        client: redis::Client,
        cluster: &str,
        node_id: Arc<str>,
        health_interval: Duration,
        router: Arc<Router>,
        stop: CancellationToken,
    ) -> anyhow::Result<(Arc<Self>, mpsc::Receiver<Publication>)> {
        let channels = Channels {
            broadcast: format!("{cluster}:deliveries"),
            node_prefix: format!("{cluster}:node:"),
        };
        let (outbound, outbound_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        let health = Arc::new(Health::new("redis"));
        metrics::gauge!("switchboard_broker_up").set(0.0);
        let publisher = connection_manager(&client)?;
        tokio::spawn(publish_loop(
            publisher,
            channels.clone(),
            router,
            outbound_rx,
            health.clone(),
            health_interval,
            stop.clone(),
        ));
        tokio::spawn(subscribe_loop(
            client,
            channels,
            node_id,
            inbound_tx,
            health.clone(),
            health_interval,
            stop,
        ));
        Ok((Arc::new(Self { outbound, health }), inbound))
    }
}

impl Broker for RedisBroker {
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

/// The pub/sub channels of a cluster.
#[derive(Debug, Clone)]
struct Channels {
    /// Every node subscribes.
    broadcast: String,
    /// Followed by a node id: that node's own channel.
    node_prefix: String,
}

impl Channels {
    fn node(&self, node: &str) -> String {
        format!("{}{node}", self.node_prefix)
    }
}

/// Sends PING on `con`; true when PONG came back within [`COMMAND_TIMEOUT`].
async fn ping(con: &mut ConnectionManager) -> bool {
    let cmd = redis::cmd("PING");
    let pong = cmd.query_async::<redis::Value>(con);
    matches!(tokio::time::timeout(COMMAND_TIMEOUT, pong).await, Ok(Ok(_)))
}

async fn publish_loop(
    mut con: ConnectionManager,
    channels: Channels,
    router: Arc<Router>,
    mut rx: mpsc::Receiver<Publication>,
    health: Arc<Health>,
    health_interval: Duration,
    stop: CancellationToken,
) {
    let mut failing = false;
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut pings = tokio::time::interval(health_interval);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Whatever queued up while the last batch was on the wire goes out in one pipeline:
        // one round trip per batch, not per message.
        let received = tokio::select! {
            () = stop.cancelled() => return,
            _ = pings.tick() => {
                let answered = tokio::select! {
                    () = stop.cancelled() => return,
                    answered = ping(&mut con) => answered,
                };
                health.set(PUBLISHER, answered, "publisher PING unanswered");
                continue;
            }
            n = rx.recv_many(&mut batch, PUBLISH_BATCH) => n,
        };
        if received == 0 {
            return;
        }
        let routes = router.routes(&batch).await;
        let mut pipe = redis::pipe();
        let mut count = 0u64;
        for (publication, route) in batch.drain(..).zip(routes) {
            let payload = match serde_json::to_string(&publication) {
                Ok(payload) => payload,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a publication");
                    continue;
                }
            };
            match route {
                Route::Everyone => {
                    pipe.cmd("PUBLISH")
                        .arg(&channels.broadcast)
                        .arg(payload)
                        .ignore();
                    count += 1;
                }
                Route::Nodes(nodes) => {
                    for node in nodes {
                        pipe.cmd("PUBLISH")
                            .arg(channels.node(&node))
                            .arg(&payload)
                            .ignore();
                        count += 1;
                    }
                }
            }
        }
        if count == 0 {
            continue;
        }
        let sent = tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(&mut con)).await;
        match sent {
            Ok(Ok(())) => {
                metrics::counter!("switchboard_broker_published_total").increment(count);
                health.set(PUBLISHER, true, "");
                if failing {
                    tracing::info!("redis broker: publishing again");
                    failing = false;
                }
            }
            Ok(Err(_)) | Err(_) => {
                metrics::counter!("switchboard_messages_dropped_total", "reason" => "broker_down")
                    .increment(count);
                // Down until a PING is answered again.
                health.set(PUBLISHER, false, "publish failed");
                if !failing {
                    tracing::warn!(
                        "redis broker: cannot publish; cross-node deliveries are dropped until it recovers"
                    );
                    failing = true;
                }
            }
        }
    }
}

async fn subscribe_loop(
    client: redis::Client,
    channels: Channels,
    node_id: Arc<str>,
    inbound: mpsc::Sender<Publication>,
    health: Arc<Health>,
    health_interval: Duration,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF.0;
    let down = |why: &str| health.set(SUBSCRIBER, false, why);
    while !stop.is_cancelled() {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            let own = channels.node(&node_id);
            pubsub.subscribe(&[&channels.broadcast, &own]).await?;
            redis::RedisResult::Ok(pubsub)
        };
        let pubsub = tokio::select! {
            () = stop.cancelled() => return,
            r = tokio::time::timeout(COMMAND_TIMEOUT * 2, subscribed) => r,
        };
        let pubsub = match pubsub {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                down(&e.to_string());
                wait(&stop, &mut backoff).await;
                continue;
            }
            Err(_) => {
                down("connect timed out");
                wait(&stop, &mut backoff).await;
                continue;
            }
        };
        health.set(SUBSCRIBER, true, "");
        backoff = BACKOFF.0;
        let (mut sink, mut messages) = pubsub.split();
        let mut pings = tokio::time::interval(health_interval);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let why = loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return,
                _ = pings.tick() => {
                    // A subscription on a link that went silent would wait forever.
                    let pong = tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>());
                    let answered = tokio::select! {
                        () = stop.cancelled() => return,
                        r = pong => matches!(r, Ok(Ok(_))),
                    };
                    if answered {
                        continue;
                    }
                    break "subscriber PING unanswered";
                }
                m = messages.next() => m,
            };
            let Some(msg) = msg else {
                break "connection lost";
            };
            let on_own_channel = msg.get_channel_name() != channels.broadcast;
            if let Some(p) =
                super::incoming(msg.get_payload_bytes(), &node_id, on_own_channel, "redis")
            {
                super::forward(&inbound, p);
            }
        };
        down(why);
        wait(&stop, &mut backoff).await;
    }
}

async fn wait(stop: &CancellationToken, backoff: &mut Duration) {
    tokio::select! {
        () = stop.cancelled() => {},
        () = tokio::time::sleep(*backoff) => {},
    }
    *backoff = (*backoff * 2).min(BACKOFF.1);
}
