//! Joining several hosts into a cluster: the [`Broker`] that carries deliveries between nodes.
//!
//! - [`local`]: the default; a cluster of one, nothing to install.
//! - `health`: the link state every broker reports (`/readyz`, `switchboard_broker_up`).
//! - [`redis`]: Redis pub/sub between nodes.
//! - [`nats`]: core NATS subjects between nodes.
//! - [`presence`]: cluster-wide presence, kept in Redis or exchanged over NATS
//!   ([`nats_presence`]).

mod health;
pub(crate) mod local;
pub(crate) mod nats;
pub(crate) mod nats_presence;
pub(crate) mod presence;
pub(crate) mod redis;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
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
