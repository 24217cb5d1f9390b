//! Joining several hosts into a cluster: the [`Broker`] that carries deliveries between nodes.
//!
//! - [`local`]: the default; a cluster of one, nothing to install.
//! - `health`: the link state every broker reports (`/readyz`, `switchboard_broker_up`).
//! - [`redis`]: Redis pub/sub between nodes; [`redis_cluster`]: sharded pub/sub on a Redis
//!   Cluster; `redis_link`: the command connection to either, for presence and plugin state.
//! - [`nats`]: core NATS subjects between nodes.
//! - [`rabbitmq`]: a RabbitMQ exchange with a queue per node.
//! - [`route`]: targeted routing, the one decision every broker follows: a delivery to
//!   sessions or users goes only to the nodes that hold them, on each node's own channel.
//! - `wanted`: a user a targeted publication is for, as the router asks presence.
//! - [`presence`]: cluster-wide presence, kept in Redis or exchanged in heartbeats over NATS
//!   or RabbitMQ ([`beats`]).
//!
//! Every broker has a broadcast channel that every node reads and a channel per node; each
//! node counts what it receives on either in `switchboard_cluster_received_total{route}`.

pub(crate) mod beats;
mod health;
pub(crate) mod local;
pub(crate) mod nats;
pub(crate) mod presence;
pub(crate) mod rabbitmq;
pub(crate) mod redis;
pub(crate) mod redis_cluster;
pub(crate) mod redis_link;
pub(crate) mod route;
mod wanted;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::{presence::ClusterPresence, route::Router};
use crate::{
    config::{BrokerKind, ClusterConfig, PresenceKind, RedisUrl, Routing},
    sessions::Registry,
    target::{Scope, Target},
    via::Via,
};

/// A delivery as it travels between nodes. Every node delivers it to its own sessions; the
/// node that published it ignores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Publication {
    /// Node id of the publisher.
    pub origin: String,
    /// Who it goes to.
    pub target: Target,
    /// Which tenants it may reach.
    pub scope: Scope,
    /// The message type.
    pub msg_type: String,
    /// The content as JSON text.
    pub content: Box<RawValue>,
    /// Which channels it may use (absent: any).
    #[serde(default, skip_serializing_if = "Via::is_any")]
    pub via: Via,
}

/// Health of the link to the other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BrokerState {
    /// Single node: nothing to be connected to.
    Local,
    /// Connected and subscribed.
    Up,
    /// Not connected; local delivery continues, cross-node deliveries are dropped.
    Down,
}

/// Carries deliveries between nodes. `publish` never waits: a broker queues internally and
/// counts what it has to drop.
pub(crate) trait Broker: Send + Sync + 'static {
    /// Whether other nodes may exist (false for the local broker: nothing is published).
    fn is_clustered(&self) -> bool;
    /// Sends a delivery to the other nodes, at most once. False when it was dropped at once
    /// (the link is down or the queue is full); true means queued, not yet confirmed.
    fn publish(&self, publication: Publication) -> bool;
    /// Current link state, for `/readyz` and metrics.
    fn state(&self) -> BrokerState;
    /// Broker name for logs and `/healthz`.
    fn name(&self) -> &'static str;
}

/// A node joined to the others.
pub(crate) struct Joined {
    /// Carries this node's deliveries to the others.
    pub broker: Arc<dyn Broker>,
    /// Publications from the other nodes, for local delivery.
    pub inbound: mpsc::Receiver<Publication>,
    /// Who is connected where.
    pub presence: Arc<ClusterPresence>,
}

/// Joins the cluster `config` names through its broker; `None` for the local broker. The
/// broker's and presence's tasks end when `stop` is cancelled.
pub(crate) async fn join(
    config: &ClusterConfig,
    node_id: Arc<str>,
    registry: Arc<Registry>,
    stop: CancellationToken,
) -> anyhow::Result<Option<Joined>> {
    let redis_presence =
        config.broker == BrokerKind::Redis || config.presence == PresenceKind::Redis;
    let presence = if redis_presence && config.broker != BrokerKind::Local {
        let link = redis_link::connect(&config.redis_url, health::COMMAND_TIMEOUT)
            .context("cluster.redis_url")?;
        let presence = presence::RedisPresence::start(
            link,
            &redis_link::key_prefix(&config.redis_url, &config.name),
            node_id.clone(),
            Duration::from_secs(config.presence_ttl_secs),
            registry.clone(),
            stop.clone(),
        );
        Some(Arc::new(ClusterPresence::Redis(presence)))
    } else {
        None
    };
    let targeted = config.routing == Routing::Targeted;
    let router = |presence: &Arc<ClusterPresence>| {
        Arc::new(Router::new(node_id.clone(), presence.clone(), targeted))
    };
    let joined = match config.broker {
        BrokerKind::Local => return Ok(None),
        BrokerKind::Redis => {
            let presence = presence.context("the redis broker keeps presence in redis")?;
            let health_interval = Duration::from_millis(config.health_interval_ms);
            let (broker, inbound): (Arc<dyn Broker>, _) = match &config.redis_url {
                RedisUrl::One(url) => {
                    let client =
                        ::redis::Client::open(url.as_str()).context("cluster.redis_url")?;
                    let (broker, inbound) = redis::RedisBroker::start(
                        client,
                        &config.name,
                        node_id.clone(),
                        health_interval,
                        router(&presence),
                        stop,
                    )?;
                    (broker, inbound)
                }
                RedisUrl::Cluster(urls) => {
                    let (broker, inbound) = redis_cluster::ShardedBroker::start(
                        urls,
                        &config.name,
                        node_id.clone(),
                        health_interval,
                        router(&presence),
                        stop,
                    )
                    .context("cluster.redis_url")?;
                    (broker, inbound)
                }
            };
            Joined {
                broker,
                inbound,
                presence,
            }
        }
        BrokerKind::Nats => {
            nats::start(config, node_id.clone(), registry, presence, targeted, stop).await?
        }
        BrokerKind::Rabbitmq => {
            rabbitmq::start(config, node_id.clone(), registry, presence, targeted, stop)?
        }
    };
    Ok(Some(joined))
}

/// Reads a publication that came over the wire; `None` for this node's own (it delivered
/// them when it published) and for unreadable ones (logged). Counts it in
/// `switchboard_cluster_received_total`, by the channel it came on.
pub(super) fn incoming(
    payload: &[u8],
    node_id: &str,
    on_own_channel: bool,
    broker: &str,
) -> Option<Publication> {
    match serde_json::from_slice::<Publication>(payload) {
        Ok(p) if *p.origin == *node_id => None,
        Ok(p) => {
            let route = if on_own_channel {
                "targeted"
            } else {
                "broadcast"
            };
            metrics::counter!("switchboard_cluster_received_total", "route" => route).increment(1);
            Some(p)
        }
        Err(e) => {
            tracing::warn!(error = %e, "{broker} broker: ignoring an unreadable publication");
            None
        }
    }
}

/// Hands a publication from another node to local delivery without waiting; counts it
/// dropped when local delivery is that far behind.
pub(super) fn forward(inbound: &mpsc::Sender<Publication>, p: Publication) {
    if inbound.try_send(p).is_err() {
        metrics::counter!("switchboard_messages_dropped_total", "reason" => "inbound_full")
            .increment(1);
    }
}
