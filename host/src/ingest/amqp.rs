//! A RabbitMQ source for yudao's `RabbitMQWebSocketMessageSender`, which publishes each
//! message once to a topic exchange (routing key empty) for every node to consume.
//!
//! Like yudao's own consumer, each node binds a queue of its own to the exchange: exclusive
//! and auto-delete, so it disappears with the connection. The exchange is declared as yudao
//! declares it (topic, durable), so the host may start before the back end. Messages are
//! taken without acknowledgements (the queue exists only while this node listens). When the
//! connection or channel fails the source reconnects with capped backoff and binds a new
//! queue; messages published in between are not seen, as for yudao's own nodes. Put
//! `?heartbeat=N` in the URL to notice a silent broker within about 2·N seconds.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::{
    Connection, ConnectionProperties, ExchangeKind,
    options::{BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Reason, Reject, Source, yudao};

/// Backoff between reconnection attempts: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// How long connecting, declaring and binding may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the source consumes.
#[derive(Debug, Clone)]
pub(super) struct Link {
    /// The AMQP URL.
    pub url: String,
    /// yudao's topic exchange.
    pub exchange: String,
    /// The connection's name in the broker's management tools: `switchboard ingest <source>`.
    pub connection_name: String,
}

/// Consumes until `stop` is cancelled.
pub(super) async fn run(link: Link, mut source: Source, stop: CancellationToken) {
    let mut backoff = BACKOFF.0;
    let mut was_up = true;
    while !stop.is_cancelled() {
        let consumer = tokio::select! {
            () = stop.cancelled() => return,
            r = tokio::time::timeout(SETUP_TIMEOUT, subscribe(&link)) => r,
        };
        let (connection, mut consumer) = match consumer {
            Ok(Ok(c)) => c,
            failed => {
                if was_up {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "connect timed out".to_owned(),
                    };
                    source.set_up(false, &why);
                    was_up = false;
                }
                wait(&stop, &mut backoff).await;
                continue;
            }
        };
        source.set_up(true, "");
        backoff = BACKOFF.0;
        let why = loop {
            let delivery = tokio::select! {
                () = stop.cancelled() => {
                    let _ = connection.close(200, "shutting down".into()).await;
                    return;
                }
                d = consumer.next() => d,
            };
            match delivery {
                Some(Ok(d)) => source.take(&d.data, |body| {
                    if let Some(kind) = d.properties.content_type()
                        && !kind.as_str().contains("json")
                    {
                        return Err(Reject::new(
                            Reason::ContentType,
                            format!(
                                "content type {kind} is not JSON; configure yudao's Jackson2JsonMessageConverter"
                            ),
                        ));
                    }
                    yudao::decode_amqp(body, tenant(d.properties.headers().as_ref())?)
                }),
                Some(Err(e)) => break e.to_string(),
                None => break "consumer cancelled".to_owned(),
            }
        };
        source.set_up(false, &why);
        was_up = false;
        wait(&stop, &mut backoff).await;
    }
}

/// Connects, declares the exchange, binds a queue of this node's own and consumes from it.
async fn subscribe(link: &Link) -> lapin::Result<(Connection, lapin::Consumer)> {
    let properties =
        ConnectionProperties::default().with_connection_name(link.connection_name.as_str().into());
    let connection = Connection::connect(&link.url, properties).await?;
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            link.exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let queue_name = format!("{}.switchboard-{}", link.exchange, &id[..12]);
    let queue = channel
        .queue_declare(
            queue_name.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    // yudao publishes with an empty routing key; `#` takes every key.
    channel
        .queue_bind(
            queue.name().clone(),
            link.exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "switchboard".into(),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((connection, consumer))
}

/// The tenant from the AMQP header `tenant-id` (yudao's `TenantRabbitMQMessagePostProcessor`
/// writes a long).
fn tenant(headers: Option<&FieldTable>) -> Result<Option<String>, Reject> {
    let Some(value) = headers.and_then(|h| h.inner().get(yudao::TENANT_HEADER)) else {
        return Ok(None);
    };
    let json = match value {
        AMQPValue::Void => Value::Null,
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        AMQPValue::LongString(s) => Value::from(String::from_utf8_lossy(s.as_bytes()).as_ref()),
        other => {
            return Err(Reject::new(
                Reason::BadTenant,
                format!("header {} is {other:?}", yudao::TENANT_HEADER),
            ));
        }
    };
    yudao::tenant_text(&json)
}

async fn wait(stop: &CancellationToken, backoff: &mut Duration) {
    tokio::select! {
        () = stop.cancelled() => {},
        () = tokio::time::sleep(*backoff) => {},
    }
    *backoff = (*backoff * 2).min(BACKOFF.1);
}
