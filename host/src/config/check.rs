//! Range and consistency checks of `[server]` and `[cluster]` (`[auth]`'s are in `presets`).
//! Every limit has an explicit range, so a value that would overflow a duration, exhaust
//! memory or make a runtime primitive panic is refused at start with the key and the fix.

use std::ops::RangeInclusive;

use super::{BrokerKind, ClusterConfig, Invalid, PresenceKind, RedisUrl, ServerConfig};

/// Longest node id: it is part of every session id and Redis key of the node.
pub(crate) const MAX_NODE_ID_LEN: usize = 64;
/// Longest cluster name: it prefixes every Redis key and channel.
pub(crate) const MAX_CLUSTER_NAME_LEN: usize = 64;
/// Most seed nodes `cluster.redis_url` may list for a Redis Cluster.
pub(super) const MAX_REDIS_SEEDS: usize = 64;
/// Longest `cluster.nats_url` (all servers together), and longest AMQP URL.
pub(super) const MAX_NATS_URL_LEN: usize = 4096;

const SECS_IN_A_DAY: u64 = 86_400;

/// `key = value` must lie in `range`.
pub(super) fn in_range<T>(key: &str, value: T, range: RangeInclusive<T>) -> Result<(), Invalid>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if range.contains(&value) {
        return Ok(());
    }
    Err(Invalid::new(
        key,
        format!(
            "{value} is out of range; set it between {} and {}",
            range.start(),
            range.end()
        ),
    ))
}

/// `[server]` limits.
pub(super) fn server(s: &ServerConfig) -> Result<(), Invalid> {
    in_range("server.max_connections", s.max_connections, 1..=1_000_000)?;
    in_range(
        "server.max_connections_per_user",
        s.max_connections_per_user,
        1..=100_000,
    )?;
    in_range("server.max_frame_bytes", s.max_frame_bytes, 16..=16 << 20)?;
    in_range("server.outbound_queue", s.outbound_queue, 1..=1_000_000)?;
    in_range("server.ping_interval_secs", s.ping_interval_secs, 1..=3600)?;
    in_range(
        "server.idle_timeout_secs",
        s.idle_timeout_secs,
        1..=SECS_IN_A_DAY,
    )?;
    in_range("server.messages_per_sec", s.messages_per_sec, 1..=1_000_000)?;
    in_range("server.messages_burst", s.messages_burst, 1..=1_000_000)?;
    in_range(
        "server.shutdown_timeout_secs",
        s.shutdown_timeout_secs,
        0..=3600,
    )?;
    in_range("server.close_timeout_secs", s.close_timeout_secs, 1..=600)?;
    in_range(
        "server.handshakes_per_sec",
        s.handshakes_per_sec,
        1..=1_000_000,
    )?;
    in_range("server.handshakes_burst", s.handshakes_burst, 1..=1_000_000)?;
    in_range(
        "server.handshakes_per_source_per_sec",
        s.handshakes_per_source_per_sec,
        1..=1_000_000,
    )?;
    in_range(
        "server.handshakes_per_source_burst",
        s.handshakes_per_source_burst,
        1..=1_000_000,
    )?;
    in_range("server.header_timeout_secs", s.header_timeout_secs, 1..=300)?;
    in_range("server.body_timeout_secs", s.body_timeout_secs, 1..=300)?;
    // hyper refuses a read buffer under 8 KiB.
    in_range(
        "server.max_header_bytes",
        s.max_header_bytes,
        8192..=1 << 20,
    )?;
    in_range("server.max_push_bytes", s.max_push_bytes, 1024..=64 << 20)?;
    in_range(
        "server.max_pending_connections",
        s.max_pending_connections,
        1..=1_000_000,
    )?;
    in_range(
        "server.max_open_connections",
        s.max_open_connections,
        0..=10_000_000,
    )?;
    in_range("server.max_json_depth", s.max_json_depth, 1..=1024)?;
    in_range("server.drain_period_secs", s.drain_period_secs, 0..=3600)?;
    if s.log_filter.len() > 4096 {
        return Err(Invalid::new(
            "server.log_filter",
            "is longer than 4096 characters; shorten it",
        ));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&s.log_filter) {
        return Err(Invalid::new(
            "server.log_filter",
            format!("{e}; use directives like \"info,switchboard=debug\""),
        ));
    }
    let needed = s.max_connections + s.max_pending_connections;
    if s.max_open_connections != 0 && s.max_open_connections <= needed {
        return Err(Invalid::new(
            "server.max_open_connections",
            format!(
                "{} leaves no room for health checks and handshakes; set it above \
                 server.max_connections + server.max_pending_connections ({needed}), or to 0 \
                 to derive it",
                s.max_open_connections
            ),
        ));
    }
    for origin in &s.allowed_origins {
        if origin.is_empty() || origin.len() > 2048 || origin.chars().any(char::is_whitespace) {
            return Err(Invalid::new(
                "server.allowed_origins",
                format!("{origin:?} is not an origin; write it like \"https://app.example.com\""),
            ));
        }
    }
    Ok(())
}

/// `[cluster]`: limits, and names that end up in session ids and Redis keys.
pub(super) fn cluster(c: &ClusterConfig) -> Result<(), Invalid> {
    in_range(
        "cluster.presence_ttl_secs",
        c.presence_ttl_secs,
        3..=SECS_IN_A_DAY,
    )?;
    in_range(
        "cluster.health_interval_ms",
        c.health_interval_ms,
        100..=60_000,
    )?;
    name("cluster.name", &c.name, MAX_CLUSTER_NAME_LEN)?;
    if let Some(id) = &c.node_id {
        name("cluster.node_id", id, MAX_NODE_ID_LEN)?;
    }
    let uses_redis = c.broker == BrokerKind::Redis
        || (c.broker != BrokerKind::Local && c.presence == PresenceKind::Redis);
    if uses_redis {
        redis_url(&c.redis_url)?;
    }
    if c.broker == BrokerKind::Nats {
        nats_url(&c.nats_url)?;
    }
    if c.broker == BrokerKind::Rabbitmq {
        amqp_url("cluster.amqp_url", &c.amqp_url)?;
        if c.name.starts_with("amq.") {
            return Err(Invalid::new(
                "cluster.name",
                format!(
                    "{:?}: RabbitMQ reserves names starting with \"amq.\" for itself; choose another",
                    c.name
                ),
            ));
        }
        in_range(
            "cluster.amqp_queue_max_length",
            c.amqp_queue_max_length,
            1..=1_000_000,
        )?;
    }
    Ok(())
}

/// An AMQP URL: `amqp://` (no TLS in this build), parsed as the client will.
pub(super) fn amqp_url(key: &str, url: &str) -> Result<(), Invalid> {
    const FIX: &str = "use amqp://user:password@host[:port]/vhost";
    if url.len() > MAX_NATS_URL_LEN {
        return Err(Invalid::new(
            key,
            format!("is longer than {MAX_NATS_URL_LEN} characters; shorten it"),
        ));
    }
    if !url.starts_with("amqp://") {
        return Err(Invalid::new(key, format!("{url:?}: {FIX}")));
    }
    url.parse::<lapin::uri::AMQPUri>()
        .map(drop)
        .map_err(|e| Invalid::new(key, format!("{url:?} is not an AMQP URL ({e}); {FIX}")))
}

/// `cluster.redis_url`: a URL the Redis client accepts, or 1 to [`MAX_REDIS_SEEDS`] distinct
/// `redis://` URLs of a Redis Cluster's nodes (database 0 only: a cluster has no other).
fn redis_url(value: &RedisUrl) -> Result<(), Invalid> {
    const KEY: &str = "cluster.redis_url";
    let parse = |url: &str, fix: &str| {
        if url.len() > MAX_NATS_URL_LEN {
            return Err(Invalid::new(
                KEY,
                format!("is longer than {MAX_NATS_URL_LEN} characters; shorten it"),
            ));
        }
        redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| Invalid::new(KEY, format!("{url:?} is not a Redis URL ({e}); {fix}")))
    };
    match value {
        RedisUrl::One(url) => parse(url, "use redis://[:password@]host[:port][/db]").map(drop),
        RedisUrl::Cluster(urls) => {
            const FIX: &str = "list the Redis Cluster's nodes as redis://[:password@]host:port, \
                               or give one URL (a string) for a single Redis";
            if urls.is_empty() {
                return Err(Invalid::new(KEY, format!("the list is empty; {FIX}")));
            }
            if urls.len() > MAX_REDIS_SEEDS {
                return Err(Invalid::new(
                    KEY,
                    format!(
                        "lists {} nodes; at most {MAX_REDIS_SEEDS} seeds are needed (the client learns the others from any of them)",
                        urls.len()
                    ),
                ));
            }
            for (i, url) in urls.iter().enumerate() {
                if !url.starts_with("redis://") {
                    return Err(Invalid::new(
                        KEY,
                        format!("{url:?}: a Redis Cluster is reached over redis:// only; {FIX}"),
                    ));
                }
                let info = parse(url, FIX)?;
                if info.redis_settings().db() != 0 {
                    return Err(Invalid::new(
                        KEY,
                        format!(
                            "{url:?} names database {}; a Redis Cluster has only database 0: drop the /db",
                            info.redis_settings().db()
                        ),
                    ));
                }
                if urls[..i].contains(url) {
                    return Err(Invalid::new(KEY, format!("{url:?} is listed twice")));
                }
            }
            Ok(())
        }
    }
}

/// `cluster.nats_url`: one or more comma-separated `nats://` URLs. TLS (`tls://`) and
/// WebSocket (`ws://`) servers are not supported by this build.
fn nats_url(value: &str) -> Result<(), Invalid> {
    const KEY: &str = "cluster.nats_url";
    if value.len() > MAX_NATS_URL_LEN {
        return Err(Invalid::new(
            KEY,
            format!("is longer than {MAX_NATS_URL_LEN} characters; shorten it"),
        ));
    }
    for url in value.split(',').map(str::trim) {
        let fix = "use nats://host:port, several separated by commas";
        if url.is_empty() {
            return Err(Invalid::new(
                KEY,
                format!("{value:?} has an empty server (a stray comma?); {fix}"),
            ));
        }
        let parsed = url
            .parse::<async_nats::ServerAddr>()
            .map_err(|e| Invalid::new(KEY, format!("{url:?} is not a NATS URL ({e}); {fix}")))?;
        let address = parsed.into_inner();
        if address.scheme() != "nats" || !url.starts_with("nats://") {
            return Err(Invalid::new(
                KEY,
                format!("{url:?}: only nats:// servers are supported; {fix}"),
            ));
        }
        if address.host_str().is_none_or(str::is_empty) {
            return Err(Invalid::new(KEY, format!("{url:?} names no host; {fix}")));
        }
    }
    Ok(())
}

/// A name of 1 to `max` characters from `A-Z a-z 0-9 _ . -`: safe in Redis keys (`:` is
/// their separator) and in session ids, which end in `-<random hex>`.
fn name(key: &str, value: &str, max: usize) -> Result<(), Invalid> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if value.is_empty() || value.len() > max || !value.chars().all(allowed) {
        return Err(Invalid::new(
            key,
            format!("{value:?} is not allowed; use 1 to {max} characters from A-Z a-z 0-9 _ . -"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_checked() {
        let ok = |id: &str| {
            cluster(&ClusterConfig {
                node_id: Some(id.into()),
                ..Default::default()
            })
        };
        assert!(ok("a").is_ok());
        assert!(ok("a-1").is_ok());
        assert!(ok("node_7.eu").is_ok());
        for bad in ["", "a:b", "a b", "ü", &"x".repeat(MAX_NODE_ID_LEN + 1)] {
            assert!(ok(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nats_urls_are_checked_for_the_nats_broker() {
        let check = |broker, url: &str| {
            cluster(&ClusterConfig {
                broker,
                nats_url: url.into(),
                ..Default::default()
            })
        };
        for good in [
            "nats://127.0.0.1:4222",
            "nats://user:pw@nats.internal",
            "nats://a:4222, nats://b:4222",
        ] {
            assert!(check(BrokerKind::Nats, good).is_ok(), "{good:?}");
        }
        let long = format!("nats://{}", "a".repeat(MAX_NATS_URL_LEN));
        for bad in [
            "",
            "127.0.0.1:4222",
            "tls://127.0.0.1:4222",
            "redis://127.0.0.1:6379",
            "nats://",
            "nats://a:4222,",
            "nats://a:99999",
            &long,
        ] {
            let e = check(BrokerKind::Nats, bad).expect_err(bad);
            assert!(e.to_string().contains("cluster.nats_url"), "{e}");
        }
        // Another broker does not read it.
        assert!(check(BrokerKind::Redis, "").is_ok());
    }
}
