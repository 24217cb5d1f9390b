//! The NATS broker: deliveries travel between nodes over core NATS (no JetStream), broadcasts
//! on the subject `<cluster name>.deliveries` (every node subscribes) and targeted deliveries
//! on `<cluster name>.node.<node id>` (that node only; see [`super::route`]); cluster presence
//! goes in heartbeats over `<cluster name>.presence` (see [`super::beats`]), or in Redis with
//! `cluster.presence = "redis"`.
//!
//! Delivery is at most once, as with Redis. `publish` never waits: publications go through a
//! bounded queue to a publisher task; when the queue is full or NATS is unreachable they are
//! counted in `switchboard_messages_dropped_total{reason="broker_down"}` and dropped, while
//! local delivery goes on. The client reconnects by itself (capped exponential backoff) and
//! subscribes again after every reconnect, so cross-node delivery resumes when NATS returns.
//!
//! A server that stops answering without closing the connection is noticed too: every
//! `cluster.health_interval_ms` the node publishes a probe to `<cluster name>.ping.<node id>`
//! and waits for it to come back through the server; a probe not back within a second, or a
//! disconnection, marks the broker down (`/readyz` 503, `switchboard_broker_up` 0) until a
//! probe comes back again.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{
    Broker, BrokerState, Joined, Publication,
    beats::{BeatPresence, Wire},
    health::{COMMAND_TIMEOUT, Health},
    presence::ClusterPresence,
    route::{Route, Router},
};
use crate::{config::ClusterConfig, sessions::Registry};

/// Publications waiting for the publisher task.
const PUBLISH_QUEUE: usize = 10_000;
/// Publications taken from the queue at once.
const PUBLISH_BATCH: usize = 256;
/// Incoming publications waiting to be delivered locally.
const INBOUND_QUEUE: usize = 10_000;
/// Backoff between reconnection attempts: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// Messages buffered in the client while its connection is being written or re-established.
const CLIENT_CAPACITY: usize = 4096;

/// Health condition: the client is connected to a server.
const CONNECTED: usize = 0;
/// Health condition: the last probe came back through the server.
const PROBED: usize = 1;

/// Joins the node to the others through NATS.
pub(crate) struct NatsBroker {
    outbound: mpsc::Sender<Publication>,
    health: Arc<Health>,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("health", &self.health)
            .finish()
    }
}

/// Heartbeats of cluster presence on `<cluster name>.presence`.
struct NatsWire {
    client: async_nats::Client,
    subject: String,
}

impl Wire for NatsWire {
    fn send(&self, payload: Vec<u8>) -> futures_util::future::BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            self.client
                .publish(self.subject.clone(), payload.into())
                .await?;
            Ok(())
        })
    }

    fn flush(&self) -> futures_util::future::BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move { Ok(self.client.flush().await?) })
    }
}

/// Connects to `cluster.nats_url` in the background (a NATS that is not there yet is retried,
/// like one that goes away later) and starts the publisher, subscriber, probe and presence
/// tasks; they end when `stop` is cancelled. `presence` is Redis's when configured; without
/// it the nodes exchange heartbeats over NATS.
pub(crate) async fn start(
    cluster: &ClusterConfig,
    node_id: Arc<str>,
    registry: Arc<Registry>,
    presence: Option<Arc<ClusterPresence>>,
    targeted: bool,
    stop: CancellationToken,
) -> anyhow::Result<Joined> {
    let health = Arc::new(Health::new("nats"));
    metrics::gauge!("switchboard_broker_up").set(0.0);
    // Signalled on every (re)connection: probe at once, and exchange presence in full.
    let reconnected = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let health_interval = Duration::from_millis(cluster.health_interval_ms);
    let client = {
        let health = health.clone();
        let reconnected = reconnected.clone();
        async_nats::ConnectOptions::new()
            .name(format!("switchboard {node_id}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(COMMAND_TIMEOUT)
            .ping_interval(health_interval)
            .client_capacity(CLIENT_CAPACITY)
            .reconnect_delay_callback(backoff)
            .event_callback(move |event| {
                let health = health.clone();
                let reconnected = reconnected.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            health.set(CONNECTED, true, "");
                            reconnected.0.notify_one();
                            reconnected.1.notify_one();
                        }
                        async_nats::Event::Disconnected => {
                            health.set(CONNECTED, false, "disconnected");
                        }
                        _ => {}
                    }
                }
            })
            .connect(servers(&cluster.nats_url))
            .await
            .context("cluster.nats_url")?
    };
    let prefix = &cluster.name;
    let subjects = Subjects {
        broadcast: format!("{prefix}.deliveries"),
        node_prefix: format!("{prefix}.node."),
    };
    let deliveries = client
        .subscribe(subjects.broadcast.clone())
        .await
        .context("subscribing to deliveries")?;
    let own = client
        .subscribe(subjects.node(&node_id))
        .await
        .context("subscribing to this node's deliveries")?;
    let probes = client
        .subscribe(format!("{prefix}.ping.{node_id}"))
        .await
        .context("subscribing to probes")?;
    let presence = match presence {
        Some(p) => p,
        None => {
            let subject = format!("{prefix}.presence");
            let beats = client
                .subscribe(subject.clone())
                .await
                .context("subscribing to presence")?
                .map(|m| m.payload)
                .boxed();
            let wire = NatsWire {
                client: client.clone(),
                subject,
            };
            Arc::new(ClusterPresence::Beats(BeatPresence::start(
                Box::new(wire),
                beats,
                node_id.clone(),
                Duration::from_secs(cluster.presence_ttl_secs),
                registry,
                health.clone(),
                reconnected.1,
                stop.clone(),
            )))
        }
    };
    let router = Arc::new(Router::new(node_id.clone(), presence.clone(), targeted));
    let (outbound, outbound_rx) = mpsc::channel(PUBLISH_QUEUE);
    let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
    tokio::spawn(publish_loop(
        client.clone(),
        subjects,
        router,
        outbound_rx,
        health.clone(),
        stop.clone(),
    ));
    tokio::spawn(subscribe_loop(
        deliveries,
        own,
        node_id.clone(),
        inbound_tx,
        stop.clone(),
    ));
    tokio::spawn(probe_loop(
        client,
        format!("{prefix}.ping.{node_id}"),
        probes,
        health.clone(),
        health_interval,
        reconnected.0,
        stop,
    ));
    Ok(Joined {
        broker: Arc::new(NatsBroker { outbound, health }),
        inbound,
        presence,
    })
}

/// The delivery subjects of a cluster.
#[derive(Debug)]
struct Subjects {
    /// Every node subscribes.
    broadcast: String,
    /// Followed by a node id: that node's own subject.
    node_prefix: String,
}

impl Subjects {
    fn node(&self, node: &str) -> String {
        format!("{}{node}", self.node_prefix)
    }
}

/// The servers of `cluster.nats_url`, comma-separated.
fn servers(url: &str) -> Vec<&str> {
    url.split(',').map(str::trim).collect()
}

/// Delay before reconnection attempt `attempts`: 100 ms doubling up to 2 s.
fn backoff(attempts: usize) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16) as u32;
    (BACKOFF.0 * 2u32.pow(doublings)).min(BACKOFF.1)
}

impl Broker for NatsBroker {
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
        "nats"
    }
}

async fn publish_loop(
    client: async_nats::Client,
    subjects: Subjects,
    router: Arc<Router>,
    mut rx: mpsc::Receiver<Publication>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut failing = false;
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return,
            n = rx.recv_many(&mut batch, PUBLISH_BATCH) => n,
        };
        if received == 0 {
            return;
        }
        let routes = router.routes(&batch).await;
        let mut count = 0u64;
        let send = async {
            for (publication, route) in batch.drain(..).zip(routes) {
                let payload: bytes::Bytes = match serde_json::to_vec(&publication) {
                    Ok(payload) => payload.into(),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode a publication");
                        continue;
                    }
                };
                match route {
                    Route::Everyone => {
                        count += 1;
                        client.publish(subjects.broadcast.clone(), payload).await?;
                    }
                    Route::Nodes(nodes) => {
                        for node in nodes {
                            count += 1;
                            client
                                .publish(subjects.node(&node), payload.clone())
                                .await?;
                        }
                    }
                }
            }
            Ok::<(), async_nats::PublishError>(())
        };
        // The client buffers while it reconnects; a buffer that stays full means NATS is gone.
        let sent = tokio::select! {
            () = stop.cancelled() => return,
            sent = tokio::time::timeout(COMMAND_TIMEOUT, send) => sent,
        };
        batch.clear();
        if matches!(sent, Ok(Ok(()))) {
            metrics::counter!("switchboard_broker_published_total").increment(count);
            if failing {
                tracing::info!("nats broker: publishing again");
                failing = false;
            }
        } else {
            metrics::counter!("switchboard_messages_dropped_total", "reason" => "broker_down")
                .increment(count);
            // Down until a probe comes back.
            health.set(PROBED, false, "publish failed");
            if !failing {
                tracing::warn!(
                    "nats broker: cannot publish; cross-node deliveries are dropped until it recovers"
                );
                failing = true;
            }
        }
    }
}

async fn subscribe_loop(
    deliveries: async_nats::Subscriber,
    own: async_nats::Subscriber,
    node_id: Arc<str>,
    inbound: mpsc::Sender<Publication>,
    stop: CancellationToken,
) {
    // (came on this node's own subject, payload)
    let mut both = futures_util::stream::select(
        deliveries.map(|m| (false, m.payload)),
        own.map(|m| (true, m.payload)),
    );
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => return,
            m = both.next() => m,
        };
        // The subscriptions live as long as the client, across reconnections.
        let Some((on_own_subject, payload)) = msg else {
            return;
        };
        if let Some(p) = super::incoming(&payload, &node_id, on_own_subject, "nats") {
            super::forward(&inbound, p);
        }
    }
}

/// Sends a probe through the server every `interval` (and at once after a reconnection);
/// the broker is up while probes come back within [`COMMAND_TIMEOUT`].
async fn probe_loop(
    client: async_nats::Client,
    subject: String,
    mut probes: async_nats::Subscriber,
    health: Arc<Health>,
    interval: Duration,
    reconnected: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {},
            () = reconnected.notified() => {},
        }
        n += 1;
        let token = n.to_string();
        let round_trip = async {
            client
                .publish(subject.clone(), token.clone().into())
                .await
                .ok()?;
            client.flush().await.ok()?;
            // Probes that came back too late are skipped.
            while let Some(m) = probes.next().await {
                if *m.payload == *token.as_bytes() {
                    return Some(());
                }
            }
            None
        };
        let back = tokio::select! {
            () = stop.cancelled() => return,
            r = tokio::time::timeout(COMMAND_TIMEOUT, round_trip) => matches!(r, Ok(Some(()))),
        };
        health.set(PROBED, back, "probe unanswered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(6), Duration::from_secs(2));
        assert_eq!(backoff(usize::MAX), Duration::from_secs(2));
    }
}
