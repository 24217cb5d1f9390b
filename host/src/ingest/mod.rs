//! Ingest: consuming what a back end's own WebSocket sender publishes, so its Java call sites
//! reach browsers through the host unchanged.
//!
//! Each `[[ingest]]` source subscribes to its framework's channel, exchange or topics
//! ([`pubsub`] for Redis, [`amqp`] for RabbitMQ, each reconnecting by itself), decodes the
//! framework's message exactly ([`yudao`], [`ruoyi`]) into a [`Delivery`], and hands it to the
//! [`Hub`]. What cannot be decoded or routed is counted and logged by reason ([`reject`]) and
//! skipped; the consumer goes on.
//!
//! **Every node consumes, and delivers to its own sessions only** ([`Hub::deliver_here`]). The
//! frameworks publish to all their nodes at once (Redis pub/sub reaches every subscriber;
//! yudao binds one auto-delete queue per node to its topic exchange), so each node already
//! receives each message once; a cluster publish on top would deliver it twice. This also
//! needs no leader among the nodes and keeps working while the cluster broker is down.

mod amqp;
mod pubsub;
mod reject;
mod ruoyi;
mod yudao;

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{IngestConfig, IngestKind, TransportKind},
    delivery::Hub,
    target::{Scope, Target},
    via::Via,
};

pub(crate) use reject::{Reason, Reject};

/// A framework message mapped to what the host delivers.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// Who receives it.
    pub target: Target,
    /// Which tenants it may reach.
    pub scope: Scope,
    /// The message type.
    pub msg_type: String,
    /// The content as JSON text.
    pub content: Box<RawValue>,
    /// The only transport whose sessions the framework meant, if one (RuoYi-Vue-Plus keeps
    /// WebSocket and SSE sessions apart): other sessions of the targeted users skip it.
    pub transport: Option<TransportKind>,
}

/// What a source loop shares with its decoder: the hub, the limits and the reject counts.
#[derive(Debug)]
pub(crate) struct Source {
    /// The source's name: the `source` label of its metrics.
    name: Arc<str>,
    /// Where deliveries go.
    hub: Arc<Hub>,
    /// Largest message decoded; larger ones are rejected unread.
    max_bytes: usize,
    /// Rejected messages, counted and logged by reason.
    rejects: reject::Rejects,
}

impl Source {
    fn new(config: &IngestConfig, hub: Arc<Hub>) -> Self {
        let name: Arc<str> = config.name().into();
        metrics::counter!("switchboard_ingest_messages_total", "source" => name.to_string())
            .increment(0);
        metrics::gauge!("switchboard_ingest_up", "source" => name.to_string()).set(0.0);
        Self {
            rejects: reject::Rejects::new(
                name.clone(),
                std::time::Duration::from_secs(config.reject_log_interval_secs),
            ),
            name,
            hub,
            max_bytes: config.max_message_bytes,
        }
    }

    /// Decodes one message with `decode` and delivers it, or counts why not.
    pub(crate) fn take(
        &mut self,
        payload: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<Delivery, Reject>,
    ) {
        if payload.len() > self.max_bytes {
            let reject = Reject::new(
                Reason::TooLarge,
                format!("{} bytes, more than {}", payload.len(), self.max_bytes),
            );
            self.rejects.record(&reject);
            return;
        }
        match decode(payload) {
            Ok(d) => {
                let via = d.transport.map(Via::transport).unwrap_or_default();
                let queued = self
                    .hub
                    .deliver_here(&d.target, &d.scope, &via, d.msg_type, d.content);
                metrics::counter!("switchboard_ingest_messages_total", "source" => self.name.to_string())
                    .increment(1);
                tracing::trace!(source = %self.name, to = ?d.target, transport = ?d.transport, queued, "ingested");
            }
            Err(reject) => self.rejects.record(&reject),
        }
    }

    /// Records whether the source is subscribed (`switchboard_ingest_up`), logging changes.
    pub(crate) fn set_up(&self, up: bool, why: &str) {
        let gauge = metrics::gauge!("switchboard_ingest_up", "source" => self.name.to_string());
        gauge.set(if up { 1.0 } else { 0.0 });
        if up {
            tracing::info!(source = %self.name, "ingest: consuming");
        } else {
            tracing::warn!(source = %self.name, why, "ingest: not consuming; reconnecting");
        }
    }
}

/// Starts one consumer task per source; they stop when `stop` is cancelled.
pub(crate) fn start(
    sources: &[IngestConfig],
    hub: &Arc<Hub>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    for config in sources {
        let source = Source::new(config, hub.clone());
        let stop = stop.clone();
        match config.kind {
            IngestKind::YudaoRedis => {
                let client = redis::Client::open(config.url())?;
                let channels = vec![config.channel().to_owned()];
                tokio::spawn(pubsub::run(client, channels, source, stop, |_, body| {
                    yudao::decode_redis(body)
                }));
            }
            IngestKind::RuoyiPlusRedis => {
                let topics = ruoyi::Topics::new(
                    config.key_prefix(),
                    config.user_types(),
                    config.message_type(),
                );
                let client = redis::Client::open(config.url())?;
                tokio::spawn(pubsub::run(
                    client,
                    topics.channels(),
                    source,
                    stop,
                    move |channel, body| topics.decode(channel, body),
                ));
            }
            IngestKind::YudaoRabbitmq => {
                let link = amqp::Link {
                    url: config.url().to_owned(),
                    exchange: config.exchange().to_owned(),
                    connection_name: format!("switchboard ingest {}", config.name()),
                };
                tokio::spawn(amqp::run(link, source, stop));
            }
        }
    }
    Ok(())
}
