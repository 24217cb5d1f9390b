//! The NATS broker: deliveries travel between nodes over core NATS (no JetStream), on the
//! subject `<cluster name>.deliveries`; cluster presence goes over `<cluster name>.presence`
//! (see [`super::nats_presence`]).
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
    Broker, BrokerState, Publication,
    health::{COMMAND_TIMEOUT, Health},
    nats_presence::NatsPresence,
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

/// What [`start`] gives the server: the broker, the publications from other nodes, and
/// cluster presence.
pub(crate) type Started = (
    Arc<NatsBroker>,
    mpsc::Receiver<Publication>,
    Arc<NatsPresence>,
);

/// Connects to `cluster.nats_url` in the background (a NATS that is not there yet is retried,
/// like one that goes away later) and starts the publisher, subscriber, probe and presence
/// tasks; they end when `stop` is cancelled.
pub(crate) async fn start(
    cluster: &ClusterConfig,
    node_id: Arc<str>,
    registry: Arc<Registry>,
    stop: CancellationToken,
) -> anyhow::Result<Started> {
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
    let deliveries = client
        .subscribe(format!("{prefix}.deliveries"))
        .await
        .context("subscribing to deliveries")?;
    let probes = client
        .subscribe(format!("{prefix}.ping.{node_id}"))
        .await
        .context("subscribing to probes")?;
    let presence = NatsPresence::start(
        client.clone(),
        prefix,
        node_id.clone(),
        Duration::from_secs(cluster.presence_ttl_secs),
        registry,
        health.clone(),
        reconnected.1,
        stop.clone(),
    )
    .await?;
    let (outbound, outbound_rx) = mpsc::channel(PUBLISH_QUEUE);
    let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
    tokio::spawn(publish_loop(
        client.clone(),
        format!("{prefix}.deliveries"),
        outbound_rx,
        health.clone(),
        stop.clone(),
    ));
    tokio::spawn(subscribe_loop(
        deliveries,
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
    Ok((Arc::new(NatsBroker { outbound, health }), inbound, presence))
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
    subject: String,
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
        let count = batch.len() as u64;
        let send = async {
            for publication in batch.drain(..) {
                match serde_json::to_vec(&publication) {
                    Ok(payload) => client.publish(subject.clone(), payload.into()).await?,
                    Err(e) => tracing::error!(error = %e, "cannot encode a publication"),
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
    mut deliveries: async_nats::Subscriber,
    node_id: Arc<str>,
    inbound: mpsc::Sender<Publication>,
    stop: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => return,
            m = deliveries.next() => m,
        };
        // The subscription lives as long as the client, across reconnections.
        let Some(msg) = msg else { return };
        match serde_json::from_slice::<Publication>(&msg.payload) {
            Ok(p) if *p.origin == *node_id => {}
            Ok(p) => {
                if inbound.try_send(p).is_err() {
                    metrics::counter!("switchboard_messages_dropped_total", "reason" => "inbound_full")
                        .increment(1);
                }
            }
            Err(e) => tracing::warn!(error = %e, "nats broker: ignoring an unreadable publication"),
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
