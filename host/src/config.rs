//! The configuration: a TOML file plus `SWITCHBOARD_<SECTION>__<KEY>` environment overrides.
//!
//! Every field has a default that serves a local single node, so an empty file (or no file) is
//! a valid configuration. Unknown keys are an error that names the key, so a typo never
//! silently falls back to a default. Every error names where the bad value came from (the file
//! and line, or the environment variable), the key, and the fix; none panics.

mod auth;
mod check;
pub mod defaults;
mod endpoints;
mod env;
mod ingest;
mod load;
pub mod plugin_ranges;
mod presets;

pub use auth::{AuthConfig, ExpiresFormat, HttpMethod, Preset, ProviderKind, TokenPlace};
pub(crate) use auth::{parse_condition, parse_offset as parse_utc_offset};
pub(crate) use presets::DEFAULT_PROVIDER;
pub use presets::effective as effective_provider;

pub use ingest::{IngestConfig, IngestKind};

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// A setting that is out of range or conflicts with another: the key and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct Invalid {
    /// The dotted key, e.g. `server.max_connections` or `endpoints[1].path`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl Invalid {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Prefix of environment variables that override file settings.
pub const ENV_PREFIX: &str = "SWITCHBOARD_";

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listening socket and connection limits.
    pub server: ServerConfig,
    /// How tokens are verified (and signed, for dev tokens).
    pub auth: AuthConfig,
    /// Server-to-server HTTP API.
    pub api: ApiConfig,
    /// The plugins folder and the sandbox limits of plugin calls.
    pub plugins: PluginsConfig,
    /// The message broker that joins several hosts into a cluster.
    pub cluster: ClusterConfig,
    /// Client endpoints; each has a path, a transport and a wire profile.
    pub endpoints: Vec<EndpointConfig>,
    /// Sources of messages a back end publishes through its framework's own sender.
    pub ingest: Vec<IngestConfig>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Open client connections across all endpoints; further upgrades get HTTP 503.
    pub max_connections: usize,
    /// Open connections of one user (tenant, user type, user id); further upgrades get 429.
    pub max_connections_per_user: usize,
    /// Largest client frame, in bytes; a larger one closes the connection with 1009.
    pub max_frame_bytes: usize,
    /// Messages queued for one connection; a client that lets it fill up is closed with 4001.
    pub outbound_queue: usize,
    /// Interval of protocol-level pings sent to WebSocket clients, in seconds.
    pub ping_interval_secs: u64,
    /// A connection that sends nothing (not even a pong) for this long is closed with 4000.
    pub idle_timeout_secs: u64,
    /// Client frames allowed per second per connection (token bucket refill rate).
    pub messages_per_sec: u32,
    /// Burst size of the per-connection token bucket.
    pub messages_burst: u32,
    /// On shutdown, how long to wait for connections to flush and close, in seconds.
    pub shutdown_timeout_secs: u64,
    /// How long a closing connection may take to flush and send its close frame, in seconds.
    pub close_timeout_secs: u64,
    /// Browser origins allowed to open connections (`Origin` header); empty allows any.
    /// Requests without an `Origin` (non-browser clients) are always allowed.
    pub allowed_origins: Vec<String>,
    /// Connection handshakes accepted per second across the node (token bucket refill);
    /// excess handshakes get 429 before the token is even verified.
    pub handshakes_per_sec: u32,
    /// Burst size of the handshake token bucket.
    pub handshakes_burst: u32,
    /// Handshakes that carry a token accepted per second from one source address, before the
    /// token is verified (token bucket refill); excess get 429. Behind a reverse proxy every
    /// client shares the proxy's address: raise it there.
    pub handshakes_per_source_per_sec: u32,
    /// Burst size of each source address's handshake token bucket.
    pub handshakes_per_source_burst: u32,
    /// Time a client has to send a request's headers, in seconds (also how long an idle
    /// keep-alive connection stays open); then the connection is closed.
    pub header_timeout_secs: u64,
    /// Time a client has to send a request body in full, in seconds; then it gets 408.
    pub body_timeout_secs: u64,
    /// Largest request head (request line and headers), in bytes; a larger one is refused
    /// with 431 and the connection closed.
    pub max_header_bytes: usize,
    /// Largest body of `POST /api/v1/messages`, in bytes; larger gets 413.
    pub max_push_bytes: usize,
    /// Open TCP connections that have not yet authenticated (no valid token or API key yet);
    /// when a new one arrives beyond this, the oldest such connection is closed.
    pub max_pending_connections: usize,
    /// Open TCP connections of every kind; past it the host stops accepting until one closes.
    /// 0: `max_connections + max_pending_connections + 256`, lowered to what the process's
    /// open-file limit allows (less 256 descriptors kept for files, plugins and Redis).
    pub max_open_connections: usize,
    /// Deepest JSON nesting accepted in message content (client frames, dispatches, pushes);
    /// deeper is refused with `too_deep`.
    pub max_json_depth: usize,
    /// Serve `POST /api/v1/dev/token`, which signs a token for anyone. Never enable in production.
    pub dev_tokens: bool,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    /// What is logged: `tracing` filter directives, e.g. `info,switchboard=debug`. The
    /// `SWITCHBOARD_LOG` (or `RUST_LOG`) variable, when set, is used instead.
    pub log_filter: String,
    /// A drain closes this node's sessions spread over this many seconds.
    pub drain_period_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 48080)),
            max_connections: 19_000,
            max_connections_per_user: 64,
            max_frame_bytes: 64 * 1024,
            outbound_queue: 256,
            ping_interval_secs: 25,
            idle_timeout_secs: 75,
            messages_per_sec: 50,
            messages_burst: 100,
            shutdown_timeout_secs: 10,
            close_timeout_secs: 5,
            allowed_origins: Vec::new(),
            handshakes_per_sec: 2000,
            handshakes_burst: 4000,
            handshakes_per_source_per_sec: 1000,
            handshakes_per_source_burst: 2000,
            header_timeout_secs: 10,
            body_timeout_secs: 10,
            max_header_bytes: 16 * 1024,
            max_push_bytes: 1024 * 1024,
            max_pending_connections: 512,
            max_open_connections: 0,
            max_json_depth: 64,
            dev_tokens: false,
            log_format: LogFormat::Text,
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
            drain_period_secs: 30,
        }
    }
}

/// `server.log_filter` by default: the host's own messages, the compiler's warnings only.
pub const DEFAULT_LOG_FILTER: &str = "info,wasmtime=warn,cranelift=warn";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[api]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Keys accepted in `Authorization: Bearer <key>` by the server-to-server API.
    /// Empty: the push and presence API answer 401 to everyone.
    pub keys: Vec<String>,
}

/// `[plugins]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Folder of `*.wasm` listener components (and optional `NAME.toml` sidecars).
    pub dir: PathBuf,
    /// Reload plugins when files in `dir` change.
    pub watch: bool,
    /// Quiet period before a burst of file changes is applied, in milliseconds.
    pub watch_debounce_ms: u64,
    /// Re-read the folder this often (seconds) even without file events; 0 turns it off.
    pub rescan_secs: u64,
    /// Folder for compiled code; default `<dir>/.cache`.
    pub cache_dir: Option<PathBuf>,
    /// Wall-time limit of one plugin call, in milliseconds.
    pub call_timeout_ms: u64,
    /// Linear memory cap of one plugin instance, in MiB.
    pub memory_limit_mb: u64,
    /// Optional instruction budget (fuel) per call; unset means only the time limit applies.
    pub fuel: Option<u64>,
    /// Concurrent calls into one plugin; further calls wait their turn.
    pub max_concurrent_calls: usize,
    /// Log lines one plugin may write per second; the excess is counted and dropped.
    pub log_lines_per_sec: u32,
    /// Sends one plugin call may make; further sends fail with `forbidden`.
    pub max_sends_per_call: u32,
    /// Largest plugin file read, in bytes; a larger file is refused without reading it.
    pub max_plugin_bytes: u64,
    /// Use the pooling instance allocator (falls back to on-demand when the machine cannot
    /// reserve its address space).
    pub pooling: bool,
    /// Key-value entries one plugin may hold, all tenants and buckets together.
    pub state_max_keys: u64,
    /// Bytes of keys and values one plugin may hold, all tenants and buckets together.
    pub state_max_bytes: u64,
    /// How long a key-value operation waits for Redis before it fails, in milliseconds.
    pub state_timeout_ms: u64,
    /// Longest outbound HTTP request of a plugin (DNS, connect, response and body), in
    /// milliseconds; it also ends a tenth of the call timeout before the call's deadline.
    pub http_timeout_ms: u64,
    /// Largest outbound HTTP response body a plugin may receive, in bytes.
    pub http_max_response_bytes: u64,
    /// Outbound HTTP requests of one plugin in flight at once; more fail at once with
    /// `connection-limit-reached`.
    pub http_max_concurrent_requests: usize,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./plugins"),
            watch: true,
            watch_debounce_ms: 200,
            rescan_secs: 30,
            cache_dir: None,
            call_timeout_ms: 1000,
            memory_limit_mb: 128,
            fuel: None,
            max_concurrent_calls: 64,
            log_lines_per_sec: 100,
            max_sends_per_call: 1000,
            max_plugin_bytes: 512 << 20,
            pooling: true,
            state_max_keys: 10_000,
            state_max_bytes: 16 << 20,
            state_timeout_ms: 500,
            http_timeout_ms: 500,
            http_max_response_bytes: 1 << 20,
            http_max_concurrent_requests: 16,
        }
    }
}

/// `[cluster]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `local` (single node, nothing to install), `redis`, `nats` or `rabbitmq`.
    pub broker: BrokerKind,
    /// Redis for the `redis` broker, and for cluster presence with `presence = "redis"`: one
    /// URL (`"redis://host:6379"`, a single Redis with pub/sub), or a list of `redis://` URLs,
    /// the seed nodes of a Redis Cluster (sharded pub/sub). A list always means a Redis
    /// Cluster, even with one entry: the client learns every master from any seed it reaches;
    /// name several so a node can start while one seed is down (1 to 64 entries).
    pub redis_url: RedisUrl,
    /// NATS server URL for the `nats` broker (`nats://[user:password@]host[:port]`; several,
    /// comma-separated, for a NATS cluster).
    pub nats_url: String,
    /// AMQP URL for the `rabbitmq` broker (`amqp://user:password@host[:port]/vhost`).
    pub amqp_url: String,
    /// Deliveries a node's RabbitMQ queue holds for it at most (1 to 1000000).
    pub amqp_queue_max_length: u32,
    /// What RabbitMQ does when a node's queue is full: `drop-head` (the node loses its oldest
    /// deliveries; publishers never notice) or `reject-publish` (the publish is refused, and
    /// the publisher's broker counts as down until its next probe).
    pub amqp_overflow: AmqpOverflow,
    /// Where cluster presence is kept: `broker` (Redis keys with the `redis` broker, heartbeats
    /// over the `nats` and `rabbitmq` brokers) or `redis` (Redis keys at `redis_url`, with any
    /// broker).
    pub presence: PresenceKind,
    /// `targeted`: a delivery to a session, a user or a list of users is published only to
    /// the nodes that hold them (as cluster presence knows it); `broadcast`: every
    /// delivery goes to every node.
    pub routing: Routing,
    /// Cluster name; prefixes every Redis key and channel, every NATS subject and every
    /// RabbitMQ exchange and queue, so clusters can share a server.
    pub name: String,
    /// This node's id; generated at start when unset. 1 to 64 characters from
    /// `A-Z a-z 0-9 _ . -`.
    pub node_id: Option<String>,
    /// Seconds a node's presence entries live without a refresh (3 to 86400): in Redis, or,
    /// with NATS, in the other nodes' memory.
    pub presence_ttl_secs: u64,
    /// How often the broker checks its link, in milliseconds (100 to 60000): Redis PINGs its
    /// connections (on a Redis Cluster, every master, and a probe goes through this node's
    /// sharded channels), NATS sends a probe through the server. One unanswered within a second
    /// marks the broker down (`/readyz` 503).
    pub health_interval_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            broker: BrokerKind::Local,
            redis_url: RedisUrl::One("redis://127.0.0.1:6379".into()),
            nats_url: "nats://127.0.0.1:4222".into(),
            amqp_url: ingest::DEFAULT_AMQP_URL.into(),
            amqp_queue_max_length: 10_000,
            amqp_overflow: AmqpOverflow::DropHead,
            presence: PresenceKind::Broker,
            routing: Routing::Targeted,
            name: "switchboard".into(),
            node_id: None,
            presence_ttl_secs: 15,
            health_interval_ms: 1000,
        }
    }
}

/// `cluster.redis_url`: one Redis, or the seed nodes of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(
    untagged,
    expecting = "expected a redis:// URL (a string), or a list of redis:// URLs (the seed nodes of a Redis Cluster)"
)]
pub enum RedisUrl {
    /// A single Redis (a string in the file).
    One(String),
    /// The seed nodes of a Redis Cluster (a list in the file).
    Cluster(Vec<String>),
}

impl RedisUrl {
    /// The URL of a single Redis; `None` for a Redis Cluster.
    pub fn single(&self) -> Option<&str> {
        match self {
            Self::One(url) => Some(url),
            Self::Cluster(_) => None,
        }
    }
}

/// Which broker joins the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// In-process; a cluster of one.
    Local,
    /// Redis pub/sub.
    Redis,
    /// Core NATS subjects.
    Nats,
    /// A RabbitMQ exchange with a queue per node.
    Rabbitmq,
}

/// What RabbitMQ does with a delivery for a node whose queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AmqpOverflow {
    /// Drops the queue's oldest delivery: a node that falls behind loses old messages, and
    /// nobody else notices.
    DropHead,
    /// Refuses the publish: the publisher hears of it (`cluster: "dropped"` from then on,
    /// until its next probe goes through).
    RejectPublish,
}

impl AmqpOverflow {
    /// The value of the queue argument `x-overflow`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DropHead => "drop-head",
            Self::RejectPublish => "reject-publish",
        }
    }
}

/// Where cluster presence is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceKind {
    /// Through the broker: Redis keys (`redis`), heartbeats (`nats`, `rabbitmq`).
    Broker,
    /// Redis keys at `cluster.redis_url`, whatever the broker.
    Redis,
}

/// Which nodes a delivery is published to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// Deliveries to sessions and users go only to the nodes that hold them.
    Targeted,
    /// Every delivery goes to every node.
    Broadcast,
}

/// `[[endpoints]]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// URL path, e.g. `/ws`.
    pub path: String,
    /// `websocket` or `sse`.
    #[serde(default = "default_transport")]
    pub transport: TransportKind,
    /// Wire profile: `native`, `yudao` or `ruoyi-plus`.
    #[serde(default)]
    pub profile: crate::envelope::Profile,
    /// Message type of plain-text frames (`ruoyi-plus` profile).
    #[serde(default = "default_text_type")]
    pub text_type: String,
    /// One session per user on this endpoint: a new connection closes the older one with 4002.
    #[serde(default)]
    pub single_session: bool,
    /// Heartbeat interval in seconds: SSE comment heartbeats (default 60); for WebSocket,
    /// overrides `server.ping_interval_secs`.
    #[serde(default)]
    pub heartbeat_secs: Option<u64>,
    /// The auth provider of this endpoint: a name under `[auth.providers]`, or `default`
    /// (`[auth]`, also when unset).
    #[serde(default)]
    pub auth: Option<String>,
    /// Where plugin sends made while handling this endpoint's sessions may go: `any`,
    /// `transport` (only sessions of this endpoint's transport) or `endpoint` (only this
    /// endpoint's sessions). Default: `transport` for the `ruoyi-plus` profile (RuoYi keeps
    /// WebSocket and SSE apart), `any` otherwise.
    #[serde(default)]
    pub reply_via: Option<ReplyVia>,
}

/// Where plugin replies to an endpoint's sessions may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyVia {
    /// Every session the plugin names.
    Any,
    /// Only sessions of the endpoint's transport.
    Transport,
    /// Only sessions of the endpoint itself.
    Endpoint,
}

impl EndpointConfig {
    /// `reply_via`, or the profile's default.
    pub fn effective_reply_via(&self) -> ReplyVia {
        self.reply_via.unwrap_or(match self.profile {
            crate::envelope::Profile::RuoyiPlus => ReplyVia::Transport,
            _ => ReplyVia::Any,
        })
    }
}

fn default_text_type() -> String {
    "ruoyi-text".into()
}

fn default_transport() -> TransportKind {
    TransportKind::Websocket
}

/// How clients connect to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// WebSocket, both directions.
    Websocket,
    /// Server-sent events down, `POST /api/v1/dispatch` up.
    Sse,
}

impl Config {
    /// Loads `path` (if given) and applies environment overrides from `env`.
    pub fn load(
        path: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let (text, source) = match path {
            Some(path) => (
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?,
                path.display().to_string(),
            ),
            None => (String::new(), "config".to_owned()),
        };
        Self::parse_named(&text, &source, env)
    }

    /// Parses TOML text and applies environment overrides.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        Self::parse_named(text, "config", env)
    }

    /// Like [`Config::parse`]; errors start with `source` (the file name) or the variable.
    fn parse_named(
        text: &str,
        source: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        load::parse(text, source, &env).map_err(|p| anyhow::anyhow!("{p}"))
    }

    /// Every problem of a config file and the environment's overrides, each once (an empty
    /// list: it loads). A problem's line is set aside to look past it.
    pub fn check_all(text: &str, source: &str, env: Vec<(String, String)>) -> Vec<String> {
        load::check_all(text, source, env)
    }

    /// A config from a table of values, checked as a loaded one is.
    pub(crate) fn deserialize_table(table: toml::Table) -> anyhow::Result<Self> {
        let config = Config::deserialize(toml::Value::Table(table))?;
        config.validate()?;
        Ok(config)
    }

    /// Endpoints in force: the configured ones, or the defaults when none are configured.
    pub fn effective_endpoints(&self) -> Vec<EndpointConfig> {
        if !self.endpoints.is_empty() {
            return self.endpoints.clone();
        }
        use crate::envelope::Profile;
        let ep = |path: &str, transport, profile| EndpointConfig {
            path: path.into(),
            transport,
            profile,
            text_type: default_text_type(),
            single_session: false,
            heartbeat_secs: None,
            auth: None,
            reply_via: None,
        };
        vec![
            ep("/ws", TransportKind::Websocket, Profile::Native),
            ep("/sse", TransportKind::Sse, Profile::Native),
            ep("/infra/ws", TransportKind::Websocket, Profile::Yudao),
            ep(
                "/resource/websocket",
                TransportKind::Websocket,
                Profile::RuoyiPlus,
            ),
            ep("/resource/sse", TransportKind::Sse, Profile::RuoyiPlus),
        ]
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        check::server(&self.server)?;
        presets::check_all(&self.auth)?;
        check::cluster(&self.cluster)?;
        endpoints::check(&self.endpoints)?;
        ingest::check(&self.ingest)?;
        presets::check_endpoints(&self.auth, &self.endpoints)?;
        plugin_ranges::check_host(&self.plugins)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_file_gives_local_defaults() {
        let c = Config::parse("", []).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:48080");
        assert_eq!(c.cluster.broker, BrokerKind::Local);
        assert_eq!(c.plugins.dir, PathBuf::from("./plugins"));
        assert_eq!(c.effective_endpoints()[0].path, "/ws");
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = Config::parse("[server]\nlisen = \"1.2.3.4:5\"\n", []).unwrap_err();
        assert!(format!("{err:#}").contains("lisen"), "{err:#}");
        let err = Config::parse("[servr]\n", []).unwrap_err();
        assert!(format!("{err:#}").contains("servr"), "{err:#}");
    }

    #[test]
    fn env_overrides_file_values_with_typed_values() {
        let c = Config::parse(
            "[server]\nlisten = \"127.0.0.1:1\"\n",
            env(&[
                ("SWITCHBOARD_SERVER__LISTEN", "127.0.0.1:0"),
                ("SWITCHBOARD_SERVER__OUTBOUND_QUEUE", "7"),
                ("SWITCHBOARD_API__KEYS", "[\"k1\", \"k2\"]"),
                ("SWITCHBOARD_AUTH__JWT_SECRET", "1234567890123456789"),
                ("SWITCHBOARD_CLUSTER__NODE_ID", "1"),
                ("SWITCHBOARD_CLUSTER__PRESENCE_TTL_SECS", "20"),
                ("SWITCHBOARD_LOG", "debug"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 0);
        assert_eq!(c.server.outbound_queue, 7);
        assert_eq!(c.api.keys, vec!["k1", "k2"]);
        // All digits, but a secret is a string.
        assert_eq!(c.auth.jwt_secret.as_deref(), Some("1234567890123456789"));
        assert_eq!(c.cluster.node_id.as_deref(), Some("1"));
        assert_eq!(c.cluster.presence_ttl_secs, 20);
    }

    #[test]
    fn unknown_env_key_is_an_error() {
        let err = Config::parse("", env(&[("SWITCHBOARD_SERVER__NOPE", "1")])).unwrap_err();
        assert!(format!("{err:#}").contains("nope"), "{err:#}");
    }

    #[test]
    fn endpoints_from_file_and_env() {
        let c = Config::parse("[[endpoints]]\npath = \"/a\"\nprofile = \"yudao\"\n", []).unwrap();
        assert_eq!(c.effective_endpoints().len(), 1);
        let c = Config::parse(
            "",
            env(&[(
                "SWITCHBOARD_ENDPOINTS",
                "[{path = \"/x\", transport = \"sse\"}]",
            )]),
        )
        .unwrap();
        assert_eq!(c.endpoints[0].transport, TransportKind::Sse);
    }

    #[test]
    fn zero_limits_are_rejected() {
        assert!(Config::parse("[server]\noutbound_queue = 0\n", []).is_err());
        assert!(Config::parse("[[endpoints]]\npath = \"ws\"\n", []).is_err());
    }

    #[test]
    fn edge_limits_are_range_checked_with_the_key_and_the_fix() {
        for (text, key) in [
            (
                "[server]\nheader_timeout_secs = 0",
                "server.header_timeout_secs",
            ),
            (
                "[server]\nmax_header_bytes = 100",
                "server.max_header_bytes",
            ),
            ("[server]\nmax_json_depth = 5000", "server.max_json_depth"),
            (
                "[server]\nmax_open_connections = 100",
                "server.max_open_connections",
            ),
        ] {
            let err = format!("{:#}", Config::parse(text, []).unwrap_err());
            assert!(err.contains(key) && err.contains("set it"), "{text}: {err}");
        }
    }
}
