//! The RabbitMQ broker: deliveries travel between nodes through the direct exchange
//! `<cluster name>.deliveries`, broadcasts with the routing key `all` and targeted deliveries
//! with `node.<node id>` (see [`super::route`]). Each node reads a queue of its own, bound to
//! both keys: exclusive and auto-delete (it goes with the node's connection), bounded by
//! `cluster.amqp_queue_max_length` with `cluster.amqp_overflow` (`drop-head`: a node that falls
//! behind loses its oldest deliveries and nobody else notices; `reject-publish`: the publish is
//! refused and the publisher hears of it). The queue is named
//! `<cluster name>.node.<node id>.<random>`, new for each connection, so a reconnecting node
//! never waits for the broker to let go of its old queue.
//!
//! Delivery is at most once, as with Redis and NATS. `publish` never waits: publications go
//! through a bounded queue to the link task, which publishes them with publisher confirms. A
//! publish the broker refuses (a nack) or does not confirm within a second is counted in
//! `switchboard_messages_dropped_total` (`broker_refused`, `broker_down`) and marks the broker
//! down, so later sends answer `cluster: "dropped"` until a probe is confirmed again. A node
//! takes deliveries with acknowledgements and at most [`PREFETCH`] unacknowledged: when local
//! delivery falls behind, the backlog waits in the node's bounded queue, not in memory.
//!
//! Health: the connection is up, its queues declared and consumed; and every
//! `cluster.health_interval_ms` a probe (a confirmed publish no queue takes) is confirmed
//! within a second. A broker that stops answering is marked down at the first missed probe;
//! after [`PROBES_BEFORE_RECONNECT`] in a row the connection is replaced. A lost connection
//! (a broker restart) is re-established with capped backoff, and the exchanges, queues,
//! bindings and consumers declared again, so cross-node delivery resumes by itself. A broker
//! that is not there at start is retried the same way: the host starts, `/readyz` says 503.
//!
//! Cluster presence goes in heartbeats through the fanout exchange `<cluster name>.presence`
//! (see [`super::beats`]), each node reading a queue of its own whose messages expire after the
//! presence TTL, or in Redis with `cluster.presence = "redis"`.

use std::{sync::Arc, time::Duration};

use futures_util::{FutureExt, StreamExt, future::BoxFuture};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
};
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

/// Publications waiting for the link task.
const PUBLISH_QUEUE: usize = 10_000;
/// Publications published before their confirms are awaited together.
const PUBLISH_BATCH: usize = 256;
/// Incoming publications waiting to be delivered locally.
const INBOUND_QUEUE: usize = 10_000;
/// Deliveries the broker sends a node before it acknowledges them.
const PREFETCH: u16 = 256;
/// Heartbeats waiting for cluster presence; more are dropped (presence asks again).
const BEATS_QUEUE: usize = 1024;
/// Heartbeats a node's presence queue holds at most.
const BEATS_QUEUE_MAX_LENGTH: i64 = 1000;
/// Backoff between reconnection attempts: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// How long connecting and declaring may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Missed probes in a row after which the connection is replaced.
const PROBES_BEFORE_RECONNECT: u32 = 3;
/// Routing key of broadcasts.
const BROADCAST_KEY: &str = "all";

/// Health condition: connected, queues declared and consumed.
const CONNECTED: usize = 0;
/// Health condition: the last probe was confirmed, and no publish was refused since.
const CONFIRMED: usize = 1;

/// Joins the node to the others through RabbitMQ.
pub(crate) struct RabbitBroker {
    outbound: mpsc::Sender<Publication>,
    /// Link state, for `publish`, `/readyz` and the gauge.
    health: Arc<Health>,
}

impl std::fmt::Debug for RabbitBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBroker")
            .field("health", &self.health)
            .finish()
    }
}

impl Broker for RabbitBroker {
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
        "rabbitmq"
    }
}

/// Where and how the link task connects.
#[derive(Debug)]
struct Link {
    url: String,
    node_id: Arc<str>,
    /// `<cluster name>.deliveries`.
    exchange: String,
    /// `<cluster name>.presence`; `None` when presence is kept in Redis.
    presence_exchange: Option<String>,
    /// `<cluster name>.node.<node id>`, completed per connection.
    queue_prefix: String,
    max_length: i64,
    overflow: &'static str,
    /// Presence TTL: heartbeats older than this are worthless.
    beat_ttl: Duration,
    health_interval: Duration,
}

/// The channel of the current connection, for presence heartbeats.
type CurrentChannel = Arc<parking_lot::Mutex<Option<Channel>>>;

/// Heartbeats of cluster presence through `<cluster name>.presence`.
struct AmqpWire {
    channel: CurrentChannel,
    exchange: String,
}

impl Wire for AmqpWire {
    fn send(&self, payload: Vec<u8>) -> BoxFuture<'_, anyhow::Result<()>> {
        let channel = self.channel.lock().clone();
        async move {
            let channel = channel.ok_or_else(|| anyhow::anyhow!("not connected"))?;
            let confirm = channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    &payload,
                    BasicProperties::default(),
                )
                .await?;
            if !confirm.await?.is_ack() {
                anyhow::bail!("the broker refused a heartbeat");
            }
            Ok(())
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        // `send` waits for the broker's confirm.
        async { Ok(()) }.boxed()
    }
}

/// Starts the link task, which connects to `cluster.amqp_url` in the background (a broker
/// that is not there yet is retried, like one that goes away later); it ends when `stop` is
/// cancelled. `presence` is Redis's when configured; without it the nodes exchange heartbeats
/// through the broker.
pub(crate) fn start(
    cluster: &ClusterConfig,
    node_id: Arc<str>,
    registry: Arc<Registry>,
    presence: Option<Arc<ClusterPresence>>,
    targeted: bool,
    stop: CancellationToken,
) -> anyhow::Result<Joined> {
    let health = Arc::new(Health::new("rabbitmq"));
    metrics::gauge!("switchboard_broker_up").set(0.0);
    let name = &cluster.name;
    let ttl = Duration::from_secs(cluster.presence_ttl_secs);
    let channel: CurrentChannel = Arc::default();
    let reconnected = Arc::new(Notify::new());
    let (beats_tx, beats) = if presence.is_none() {
        let (tx, rx) = mpsc::channel::<bytes::Bytes>(BEATS_QUEUE);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let presence = match (presence, beats) {
        (Some(p), _) => p,
        (None, Some(rx)) => {
            let beats = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (b, rx))
            })
            .boxed();
            let wire = AmqpWire {
                channel: channel.clone(),
                exchange: format!("{name}.presence"),
            };
            Arc::new(ClusterPresence::Beats(BeatPresence::start(
                Box::new(wire),
                beats,
                node_id.clone(),
                ttl,
                registry,
                health.clone(),
                reconnected.clone(),
                stop.clone(),
            )))
        }
        (None, None) => anyhow::bail!("cluster presence has no way to travel"),
    };
    let link = Link {
        url: cluster.amqp_url.clone(),
        node_id: node_id.clone(),
        exchange: format!("{name}.deliveries"),
        presence_exchange: beats_tx.is_some().then(|| format!("{name}.presence")),
        queue_prefix: format!("{name}.node.{node_id}"),
        max_length: i64::from(cluster.amqp_queue_max_length),
        overflow: cluster.amqp_overflow.as_str(),
        beat_ttl: ttl,
        health_interval: Duration::from_millis(cluster.health_interval_ms),
    };
    let router = Arc::new(Router::new(node_id, presence.clone(), targeted));
    let (outbound, outbound_rx) = mpsc::channel(PUBLISH_QUEUE);
    let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
    let ends = Ends {
        outbound: outbound_rx,
        inbound: inbound_tx,
        beats: beats_tx,
        channel,
        reconnected,
    };
    // Presence says this node leaves through the link: the link closes after that.
    let link_stop = CancellationToken::new();
    tokio::spawn({
        let (presence, link_stop) = (presence.clone(), link_stop.clone());
        async move {
            stop.cancelled().await;
            presence.leave_now().await;
            link_stop.cancel();
        }
    });
    tokio::spawn(link_loop(link, ends, router, health.clone(), link_stop));
    Ok(Joined {
        broker: Arc::new(RabbitBroker { outbound, health }),
        inbound,
        presence,
    })
}

/// What the link task moves between the node and the broker, across connections.
struct Ends {
    /// This node's publications.
    outbound: mpsc::Receiver<Publication>,
    /// The other nodes' publications, to local delivery.
    inbound: mpsc::Sender<Publication>,
    /// Heartbeats, to cluster presence (when it travels through the broker).
    beats: Option<mpsc::Sender<bytes::Bytes>>,
    /// Where presence publishes its heartbeats.
    channel: CurrentChannel,
    /// Signalled on every (re)connection: presence exchanges users in full again.
    reconnected: Arc<Notify>,
}

/// One connection with its queues declared and consumed.
struct Session {
    connection: Connection,
    channel: Channel,
    deliveries: lapin::Consumer,
    beats: Option<lapin::Consumer>,
}

/// Connects, then runs the connection until it fails or `stop` is cancelled; again and again.
async fn link_loop(
    link: Link,
    mut ends: Ends,
    router: Arc<Router>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF.0;
    let mut said_down = false;
    while !stop.is_cancelled() {
        let session = tokio::select! {
            () = stop.cancelled() => return,
            r = tokio::time::timeout(SETUP_TIMEOUT, connect(&link)) => r,
        };
        let session = match session {
            Ok(Ok(s)) => s,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "connect timed out".to_owned(),
                };
                if !said_down {
                    tracing::warn!(
                        reason = %why,
                        "rabbitmq broker: cannot connect; local delivery continues, retrying"
                    );
                    said_down = true;
                }
                health.set(CONNECTED, false, &why);
                wait(&stop, &mut backoff).await;
                continue;
            }
        };
        said_down = false;
        backoff = BACKOFF.0;
        *ends.channel.lock() = Some(session.channel.clone());
        health.set(CONNECTED, true, "");
        ends.reconnected.notify_one();
        let Session {
            connection,
            channel,
            deliveries,
            beats,
        } = session;
        let why = tokio::select! {
            () = stop.cancelled() => {
                *ends.channel.lock() = None;
                // Closing deletes this node's queues at once.
                let _ = tokio::time::timeout(COMMAND_TIMEOUT, connection.close(200, "shutting down".into())).await;
                return;
            }
            why = consume(deliveries, &link.node_id, &ends.inbound) => why,
            why = consume_beats(beats, ends.beats.as_ref()) => why,
            why = publish(&channel, &link, &router, &mut ends.outbound, &health) => why,
            why = probe(&channel, &link, &health) => why,
        };
        *ends.channel.lock() = None;
        health.set(CONNECTED, false, &why);
        let _ = tokio::time::timeout(
            COMMAND_TIMEOUT,
            connection.close(200, "reconnecting".into()),
        )
        .await;
        wait(&stop, &mut backoff).await;
    }
}

/// Queue arguments: bounded, with the configured overflow.
fn bounded(max_length: i64, overflow: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(max_length));
    args.insert("x-overflow".into(), AMQPValue::LongString(overflow.into()));
    args
}

/// Connects, declares the exchanges and this node's queues, and consumes them.
async fn connect(link: &Link) -> anyhow::Result<Session> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("switchboard {}", link.node_id).into());
    let connection = Connection::connect(&link.url, properties).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    // Not durable: the nodes declare them again after a broker restart.
    let declare = |name: &str, kind: ExchangeKind| {
        let channel = channel.clone();
        let name = ShortString::from(name);
        async move {
            channel
                .exchange_declare(
                    name,
                    kind,
                    ExchangeDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await
        }
    };
    declare(&link.exchange, ExchangeKind::Direct).await?;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let queue = own_queue(
        &channel,
        format!("{}.{suffix}", link.queue_prefix),
        bounded(link.max_length, link.overflow),
    )
    .await?;
    for key in [BROADCAST_KEY.to_owned(), format!("node.{}", link.node_id)] {
        channel
            .queue_bind(
                queue.clone(),
                link.exchange.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let deliveries = channel
        .basic_consume(
            queue,
            "deliveries".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let beats = match &link.presence_exchange {
        None => None,
        Some(exchange) => {
            declare(exchange, ExchangeKind::Fanout).await?;
            let mut args = bounded(BEATS_QUEUE_MAX_LENGTH, "drop-head");
            let ttl_ms = i64::try_from(link.beat_ttl.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
            let name = format!("{}.presence.{suffix}", link.queue_prefix);
            let queue = own_queue(&channel, name, args).await?;
            channel
                .queue_bind(
                    queue.clone(),
                    exchange.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            // Heartbeats are worthless once read: no acknowledgements.
            let consumer = channel
                .basic_consume(
                    queue,
                    "presence".into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        exclusive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            Some(consumer)
        }
    };
    Ok(Session {
        connection,
        channel,
        deliveries,
        beats,
    })
}

/// Declares a queue of this connection's own: exclusive, gone with the connection.
async fn own_queue(
    channel: &Channel,
    name: String,
    args: FieldTable,
) -> anyhow::Result<ShortString> {
    let name = ShortString::try_new(name)?;
    let queue = channel
        .queue_declare(
            name,
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            args,
        )
        .await?;
    Ok(queue.name().clone())
}

/// Hands the other nodes' publications to local delivery, acknowledging each once it is
/// handed over (so a backlog waits in the bounded queue); returns why the consumer ended.
async fn consume(
    mut deliveries: lapin::Consumer,
    node_id: &str,
    inbound: &mpsc::Sender<Publication>,
) -> String {
    loop {
        let delivery = match deliveries.next().await {
            Some(Ok(d)) => d,
            Some(Err(e)) => return e.to_string(),
            None => return "consumer cancelled".to_owned(),
        };
        let on_own_key = delivery.routing_key.as_str() != BROADCAST_KEY;
        if let Some(p) = super::incoming(&delivery.data, node_id, on_own_key, "rabbitmq")
            && inbound.send(p).await.is_err()
        {
            return "stopping".to_owned();
        }
        if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
            return e.to_string();
        }
    }
}

/// Hands heartbeats to cluster presence; pends forever when presence is kept elsewhere.
async fn consume_beats(
    beats: Option<lapin::Consumer>,
    to: Option<&mpsc::Sender<bytes::Bytes>>,
) -> String {
    let (Some(mut beats), Some(to)) = (beats, to) else {
        return std::future::pending().await;
    };
    loop {
        match beats.next().await {
            // A full queue drops a heartbeat; presence notices the gap and asks again.
            Some(Ok(d)) => drop(to.try_send(d.data.into())),
            Some(Err(e)) => return e.to_string(),
            None => return "presence consumer cancelled".to_owned(),
        }
    }
}

/// Publishes this node's publications along their routes, a batch at a time, and waits for
/// the broker's confirms; returns why the connection failed.
async fn publish(
    channel: &Channel,
    link: &Link,
    router: &Router,
    rx: &mut mpsc::Receiver<Publication>,
    health: &Health,
) -> String {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        if rx.recv_many(&mut batch, PUBLISH_BATCH).await == 0 {
            return std::future::pending().await;
        }
        let routes = router.routes(&batch).await;
        let mut confirms = Vec::new();
        let mut failed = None;
        for (publication, route) in batch.drain(..).zip(routes) {
            let payload = match serde_json::to_vec(&publication) {
                Ok(payload) => payload,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a publication");
                    continue;
                }
            };
            let keys: Vec<String> = match route {
                Route::Everyone => vec![BROADCAST_KEY.to_owned()],
                Route::Nodes(nodes) => nodes.iter().map(|n| format!("node.{n}")).collect(),
            };
            for key in keys {
                if failed.is_some() {
                    dropped("broker_down", 1);
                    continue;
                }
                let sent = channel
                    .basic_publish(
                        link.exchange.as_str().into(),
                        key.into(),
                        BasicPublishOptions::default(),
                        &payload,
                        BasicProperties::default(),
                    )
                    .await;
                match sent {
                    Ok(confirm) => confirms.push(confirm),
                    Err(e) => {
                        dropped("broker_down", 1);
                        failed = Some(e.to_string());
                    }
                }
            }
        }
        let sent = confirms.len() as u64;
        let confirmed =
            tokio::time::timeout(COMMAND_TIMEOUT, futures_util::future::join_all(confirms)).await;
        match confirmed {
            Ok(results) => {
                let acked = results
                    .iter()
                    .filter(|r| matches!(r, Ok(c) if c.is_ack()))
                    .count() as u64;
                metrics::counter!("switchboard_broker_published_total").increment(acked);
                if acked < sent {
                    dropped("broker_refused", sent - acked);
                    health.set(CONFIRMED, false, "the broker refused publishes");
                }
            }
            Err(_) => {
                dropped("broker_down", sent);
                health.set(CONFIRMED, false, "publishes not confirmed");
            }
        }
        if let Some(why) = failed {
            return why;
        }
    }
}

fn dropped(reason: &'static str, n: u64) {
    metrics::counter!("switchboard_messages_dropped_total", "reason" => reason).increment(n);
}

/// Every health interval, a publish no queue takes, confirmed by the broker within a second,
/// proves the broker accepts publishes; returns after too many missed in a row.
async fn probe(channel: &Channel, link: &Link, health: &Health) -> String {
    let mut ticks = tokio::time::interval(link.health_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut missed = 0;
    loop {
        ticks.tick().await;
        let round_trip = async {
            let confirm = channel
                .basic_publish(
                    link.exchange.as_str().into(),
                    "probe".into(),
                    BasicPublishOptions::default(),
                    b"",
                    BasicProperties::default(),
                )
                .await?;
            lapin::Result::Ok(confirm.await?.is_ack())
        };
        let confirmed = matches!(
            tokio::time::timeout(COMMAND_TIMEOUT, round_trip).await,
            Ok(Ok(true))
        );
        health.set(CONFIRMED, confirmed, "probe not confirmed");
        missed = if confirmed { 0 } else { missed + 1 };
        if missed >= PROBES_BEFORE_RECONNECT {
            return format!("{missed} probes in a row not confirmed");
        }
    }
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

    #[test]
    fn queues_are_bounded_as_configured() {
        let args = bounded(7, "reject-publish");
        let inner = args.inner();
        assert_eq!(inner.get("x-max-length"), Some(&AMQPValue::LongLongInt(7)));
        assert_eq!(
            inner.get("x-overflow"),
            Some(&AMQPValue::LongString("reject-publish".into()))
        );
    }
}
