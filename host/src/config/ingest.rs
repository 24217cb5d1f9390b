//! `[[ingest]]`: sources that consume what a back end's own WebSocket sender publishes (yudao's
//! Redis or RabbitMQ sender, RuoYi-Vue-Plus's Redisson topics) and deliver it to sessions.
//!
//! Every key but `kind` has a default that matches the framework's own default, so
//! `kind = "yudao-redis"` alone consumes what a stock yudao publishes on the local Redis. A key
//! that belongs to another kind is an error, so a misplaced `exchange` never goes unnoticed.

use serde::{Deserialize, Serialize};

use super::Invalid;

/// Longest source name: it labels metrics and log lines.
pub(crate) const MAX_NAME_LEN: usize = 64;
/// Longest URL, channel, exchange, key prefix or message type.
const MAX_TEXT_LEN: usize = 1024;
/// Most user types a RuoYi-Vue-Plus user id is looked up in.
const MAX_USER_TYPES: usize = 16;
/// Most `[[ingest]]` sources.
const MAX_SOURCES: usize = 32;

/// Default Redis of the Redis kinds.
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default broker of the RabbitMQ kind (vhost `/`).
pub(super) const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// yudao's `RedisWebSocketMessage` channel: the message class's simple name.
const DEFAULT_YUDAO_CHANNEL: &str = "RedisWebSocketMessage";
/// yudao's `yudao.websocket.sender-rabbitmq.exchange`, `${spring.application.name}-websocket-exchange`
/// with the stock application name `yudao-server`.
const DEFAULT_YUDAO_EXCHANGE: &str = "yudao-server-websocket-exchange";
/// Message type given to RuoYi-Vue-Plus messages, which have none.
const DEFAULT_RUOYI_MESSAGE_TYPE: &str = "message";
/// User type of RuoYi-Vue-Plus's `sys_user` (see `[auth] user_type_names` in the README).
const DEFAULT_RUOYI_USER_TYPES: [u32; 1] = [1];

/// `[[ingest]]`: one source of messages published by a back end.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// What the back end publishes and where: `yudao-redis`, `yudao-rabbitmq` or
    /// `ruoyi-plus-redis`.
    pub kind: IngestKind,
    /// Name of the source in metrics (`source` label) and logs; default: the kind. Names must
    /// differ when a kind is configured twice.
    #[serde(default)]
    pub name: Option<String>,
    /// Redis URL (`redis://`) of the Redis kinds, AMQP URL (`amqp://`) of `yudao-rabbitmq`.
    #[serde(default)]
    pub url: Option<String>,
    /// `yudao-redis`: the pub/sub channel.
    #[serde(default)]
    pub channel: Option<String>,
    /// `yudao-rabbitmq`: the topic exchange (yudao's `yudao.websocket.sender-rabbitmq.exchange`).
    #[serde(default)]
    pub exchange: Option<String>,
    /// `ruoyi-plus-redis`: Redisson's key prefix (RuoYi-Vue-Plus's `redisson.keyPrefix`); the
    /// topics are then `<prefix>:global:websocket` and `<prefix>:global:sse`.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// `ruoyi-plus-redis`: user types whose sessions a RuoYi user id names.
    #[serde(default)]
    pub user_types: Option<Vec<u32>>,
    /// `ruoyi-plus-redis`: the message type deliveries carry (RuoYi messages have none; the
    /// `ruoyi-plus` profile sends the text alone, other profiles show this type).
    #[serde(default)]
    pub message_type: Option<String>,
    /// Largest message accepted, in bytes; larger ones are rejected (`too_large`).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Rejected messages are logged at most once per reason per this many seconds (they are
    /// all counted).
    #[serde(default = "default_reject_log_interval_secs")]
    pub reject_log_interval_secs: u64,
}

fn default_max_message_bytes() -> usize {
    1 << 20
}

fn default_reject_log_interval_secs() -> u64 {
    60
}

/// Which framework's sender a source consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IngestKind {
    /// yudao's `RedisWebSocketMessageSender`: JSON on a Redis pub/sub channel.
    YudaoRedis,
    /// yudao's `RabbitMQWebSocketMessageSender`: JSON on a RabbitMQ topic exchange.
    YudaoRabbitmq,
    /// RuoYi-Vue-Plus's `WebSocketUtils` and `SseMessageUtils`: Redisson topics.
    RuoyiPlusRedis,
}

impl IngestKind {
    /// The name written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            IngestKind::YudaoRedis => "yudao-redis",
            IngestKind::YudaoRabbitmq => "yudao-rabbitmq",
            IngestKind::RuoyiPlusRedis => "ruoyi-plus-redis",
        }
    }
}

impl IngestConfig {
    /// The source's name: `name`, or the kind.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.kind.as_str())
    }

    /// The broker URL in force.
    pub fn url(&self) -> &str {
        self.url.as_deref().unwrap_or(match self.kind {
            IngestKind::YudaoRabbitmq => DEFAULT_AMQP_URL,
            IngestKind::YudaoRedis | IngestKind::RuoyiPlusRedis => DEFAULT_REDIS_URL,
        })
    }

    /// `yudao-redis`'s channel in force.
    pub fn channel(&self) -> &str {
        self.channel.as_deref().unwrap_or(DEFAULT_YUDAO_CHANNEL)
    }

    /// `yudao-rabbitmq`'s exchange in force.
    pub fn exchange(&self) -> &str {
        self.exchange.as_deref().unwrap_or(DEFAULT_YUDAO_EXCHANGE)
    }

    /// `ruoyi-plus-redis`'s key prefix in force (empty: none).
    pub fn key_prefix(&self) -> &str {
        self.key_prefix.as_deref().unwrap_or("")
    }

    /// `ruoyi-plus-redis`'s user types in force.
    pub fn user_types(&self) -> &[u32] {
        self.user_types
            .as_deref()
            .unwrap_or(&DEFAULT_RUOYI_USER_TYPES)
    }

    /// `ruoyi-plus-redis`'s message type in force.
    pub fn message_type(&self) -> &str {
        self.message_type
            .as_deref()
            .unwrap_or(DEFAULT_RUOYI_MESSAGE_TYPE)
    }
}

/// Checks every source: ranges, keys that belong to the kind, URLs, unique names.
pub(super) fn check(sources: &[IngestConfig]) -> Result<(), Invalid> {
    if sources.len() > MAX_SOURCES {
        return Err(Invalid::new(
            "ingest",
            format!(
                "{} sources configured; at most {MAX_SOURCES} are allowed",
                sources.len()
            ),
        ));
    }
    let mut names = std::collections::HashMap::new();
    for (i, source) in sources.iter().enumerate() {
        check_one(i, source)?;
        if let Some(first) = names.insert(source.name(), i) {
            return Err(Invalid::new(
                format!("ingest[{i}].name"),
                format!(
                    "{:?} is also the name of ingest[{first}]; give each source its own `name`",
                    source.name()
                ),
            ));
        }
    }
    Ok(())
}

fn check_one(i: usize, s: &IngestConfig) -> Result<(), Invalid> {
    let key = |k: &str| format!("ingest[{i}].{k}");
    let kind = s.kind;
    // Keys of another kind: say which kind reads them.
    let foreign: [(&str, bool, IngestKind); 5] = [
        ("channel", s.channel.is_some(), IngestKind::YudaoRedis),
        ("exchange", s.exchange.is_some(), IngestKind::YudaoRabbitmq),
        (
            "key_prefix",
            s.key_prefix.is_some(),
            IngestKind::RuoyiPlusRedis,
        ),
        (
            "user_types",
            s.user_types.is_some(),
            IngestKind::RuoyiPlusRedis,
        ),
        (
            "message_type",
            s.message_type.is_some(),
            IngestKind::RuoyiPlusRedis,
        ),
    ];
    for (name, set, owner) in foreign {
        if set && owner != kind {
            return Err(Invalid::new(
                key(name),
                format!(
                    "is read only by kind = \"{}\", not \"{}\"; remove it",
                    owner.as_str(),
                    kind.as_str()
                ),
            ));
        }
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if let Some(name) = &s.name
        && (name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(allowed))
    {
        return Err(Invalid::new(
            key("name"),
            format!(
                "{name:?} is not allowed; use 1 to {MAX_NAME_LEN} characters from A-Z a-z 0-9 _ . -"
            ),
        ));
    }
    for (name, value, may_be_empty) in [
        ("channel", s.channel.as_deref(), false),
        ("exchange", s.exchange.as_deref(), false),
        ("key_prefix", s.key_prefix.as_deref(), true),
        ("message_type", s.message_type.as_deref(), false),
        ("url", s.url.as_deref(), false),
    ] {
        if let Some(value) = value
            && ((!may_be_empty && value.is_empty()) || value.len() > MAX_TEXT_LEN)
        {
            return Err(Invalid::new(
                key(name),
                format!("must be 1 to {MAX_TEXT_LEN} characters; remove it for the default"),
            ));
        }
    }
    if s.message_type.as_ref().is_some_and(|t| t.len() > 128) {
        return Err(Invalid::new(
            key("message_type"),
            "must be 1 to 128 characters, like every message type",
        ));
    }
    if let Some(types) = &s.user_types
        && (types.is_empty() || types.len() > MAX_USER_TYPES)
    {
        return Err(Invalid::new(
            key("user_types"),
            format!("must list 1 to {MAX_USER_TYPES} user types, e.g. [1]"),
        ));
    }
    if !(64..=64 << 20).contains(&s.max_message_bytes) {
        return Err(Invalid::new(
            key("max_message_bytes"),
            format!(
                "{} is out of range; set it between 64 and {}",
                s.max_message_bytes,
                64 << 20
            ),
        ));
    }
    if !(1..=3600).contains(&s.reject_log_interval_secs) {
        return Err(Invalid::new(
            key("reject_log_interval_secs"),
            format!(
                "{} is out of range; set it between 1 and 3600",
                s.reject_log_interval_secs
            ),
        ));
    }
    check_url(&key("url"), kind, s.url())
}

/// The URL must parse, with the scheme the kind speaks (no TLS in this build).
fn check_url(key: &str, kind: IngestKind, url: &str) -> Result<(), Invalid> {
    match kind {
        IngestKind::YudaoRedis | IngestKind::RuoyiPlusRedis => {
            if !url.starts_with("redis://") {
                return Err(Invalid::new(
                    key,
                    format!("{url:?}: use redis://[user:password@]host[:port][/db]"),
                ));
            }
            redis::Client::open(url)
                .map(drop)
                .map_err(|e| Invalid::new(key, format!("{url:?} is not a Redis URL ({e})")))
        }
        IngestKind::YudaoRabbitmq => super::check::amqp_url(key, url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<IngestConfig>, String> {
        let config = crate::config::Config::parse(text, []).map_err(|e| format!("{e:#}"))?;
        Ok(config.ingest)
    }

    #[test]
    fn defaults_follow_the_frameworks() {
        let sources = parse(
            "[[ingest]]\nkind = \"yudao-redis\"\n[[ingest]]\nkind = \"yudao-rabbitmq\"\n\
             [[ingest]]\nkind = \"ruoyi-plus-redis\"\n",
        )
        .unwrap();
        assert_eq!(sources[0].channel(), "RedisWebSocketMessage");
        assert_eq!(sources[0].url(), "redis://127.0.0.1:6379");
        assert_eq!(sources[1].exchange(), "yudao-server-websocket-exchange");
        assert!(sources[1].url().starts_with("amqp://"));
        assert_eq!(sources[2].user_types(), &[1]);
        assert_eq!(sources[2].name(), "ruoyi-plus-redis");
    }

    #[test]
    fn the_list_comes_from_the_environment_too() {
        let env = [(
            "SWITCHBOARD_INGEST".to_owned(),
            "[{kind = \"yudao-redis\", name = \"a\"}]".to_owned(),
        )];
        let config = crate::config::Config::parse("", env).unwrap();
        assert_eq!(config.ingest[0].name(), "a");
    }

    #[test]
    fn bad_sources_name_the_key_and_the_fix() {
        for (text, key) in [
            (
                "kind = \"yudao-redis\"\nexchange = \"x\"",
                "ingest[0].exchange",
            ),
            (
                "kind = \"yudao-rabbitmq\"\nurl = \"redis://x\"",
                "ingest[0].url",
            ),
            (
                "kind = \"yudao-redis\"\nurl = \"amqp://x\"",
                "ingest[0].url",
            ),
            (
                "kind = \"ruoyi-plus-redis\"\nuser_types = []",
                "ingest[0].user_types",
            ),
            (
                "kind = \"yudao-redis\"\nmax_message_bytes = 1",
                "ingest[0].max_message_bytes",
            ),
            (
                "kind = \"yudao-redis\"\nreject_log_interval_secs = 0",
                "ingest[0].reject_log_interval_secs",
            ),
            ("kind = \"yudao-redis\"\nname = \"a b\"", "ingest[0].name"),
            (
                "kind = \"yudao-redis\"\nchannel = \"\"",
                "ingest[0].channel",
            ),
        ] {
            let err = parse(&format!("[[ingest]]\n{text}\n")).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = parse("[[ingest]]\nkind = \"yudao-redis\"\n[[ingest]]\nkind = \"yudao-redis\"\n")
            .unwrap_err();
        assert!(err.contains("ingest[1].name"), "{err}");
        let err = parse("[[ingest]]\nkind = \"kafka\"\n").unwrap_err();
        assert!(err.contains("kind"), "{err}");
    }
}
