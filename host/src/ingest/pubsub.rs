//! A Redis pub/sub source: subscribes to its channels, hands every message to the decoder,
//! and when Redis goes away (connection closed, or a PING unanswered on a silent link)
//! reconnects with capped backoff and subscribes again. Pub/sub stores nothing: what is
//! published while the source is not subscribed is lost, as for the framework's own nodes.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Delivery, Reject, Source};

/// Backoff between reconnection attempts: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// How long connecting and subscribing, or one PING, may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a quiet subscription checks that Redis still answers.
const PING_INTERVAL: Duration = Duration::from_secs(5);

/// Consumes `channels` until `stop` is cancelled; `decode(channel, payload)` maps a message.
pub(super) async fn run(
    client: redis::Client,
    channels: Vec<String>,
    mut source: Source,
    stop: CancellationToken,
    decode: impl Fn(&str, &[u8]) -> Result<Delivery, Reject> + Send + 'static,
) {
    let mut backoff = BACKOFF.0;
    let mut was_up = true;
    while !stop.is_cancelled() {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channels).await?;
            redis::RedisResult::Ok(pubsub)
        };
        let pubsub = tokio::select! {
            () = stop.cancelled() => return,
            r = tokio::time::timeout(COMMAND_TIMEOUT, subscribed) => r,
        };
        let pubsub = match pubsub {
            Ok(Ok(p)) => p,
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
        let (mut sink, mut messages) = pubsub.split();
        let mut pings = tokio::time::interval(PING_INTERVAL);
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
                    break "PING unanswered";
                }
                m = messages.next() => m,
            };
            let Some(msg) = msg else {
                break "connection lost";
            };
            let channel = msg.get_channel_name();
            source.take(msg.get_payload_bytes(), |body| decode(channel, body));
        };
        source.set_up(false, why);
        was_up = false;
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
