//! Switchboard: a real-time messaging host whose message handlers are WebAssembly plugins.
//!
//! Clients hold WebSocket connections; each message is a JSON envelope `{type, content}`
//! routed by type to the listener plugin that claimed it. Plugins send messages to sessions,
//! users, user types, tenants or everyone through host imports.
//!
//! # Layout
//!
//! Modules are layered: each imports only from the layers below it (a test reads the imports
//! and refuses a cycle). A message flows up and back down the layers in a straight line:
//! socket (`transport`) → envelope ([`envelope`]) → route and plugin ([`dispatch`],
//! [`plugins`]) → send ([`delivery`]) → queue ([`sessions`], [`frame`]) → socket.
//!
//! | layer | module | owns |
//! |---|---|---|
//! | 0 | [`config`] | the TOML file, `SWITCHBOARD_<SECTION>__<KEY>` overrides, every range |
//! | 0 | [`envelope`] | the wire format and the compatibility profiles |
//! | 0 | [`close_codes`] | every close code the host sends, and what a client should do |
//! | 0 | [`recent`] | the last warnings and errors logged, for the admin page |
//! | 0 | `telemetry` | every metric, described and registered at zero in one place |
//! | 0 | `target` | who a message goes to: targets and tenant scopes |
//! | 0 | `via` | which channels (transports, endpoints) a delivery may use |
//! | 1 | [`auth`] | tokens: where they are found, providers (JWT, Redis lookup, HTTP introspection, liveness keys), dev tokens |
//! | 1 | [`frame`] | what a session's queue holds: shared encode-once messages |
//! | 1 | `status` | the typed plugin status the API answers |
//! | 2 | [`sessions`] | the session registry and each session's bounded outbound queue |
//! | 3 | `rate` | token buckets, each session's message gate, per-source handshake budgets |
//! | 3 | `cluster` | the broker that joins hosts into a cluster, and cluster presence |
//! | 3 | `recheck` | closing sessions whose credentials expired or were revoked |
//! | 4 | [`delivery`] | encode-once fan-out to local sessions, the [`delivery::Hub`] |
//! | 5 | [`dispatch`] | the seam between transports and listeners |
//! | 5 | `ingest` | consuming what a back end's framework sender publishes (yudao, RuoYi-Vue-Plus) |
//! | 6 | [`plugins`] | the wasmtime runtime, loading, routes, hot reload, host imports, contract versions, key-value state |
//! | 7 | `http_error`, `accept`, `state` | the HTTP error shape, the accept loop, handler state |
//! | 8 | `reload`, `drain` | applying a re-read config live; taking the node out of service |
//! | 9 | `transport`, `api`, `web` | connections, the HTTP API (operator actions included), the demo page |
//! | 10 | [`server`] | [`server::run`]: wires everything into one server |
//! | 11 | [`cli`] | the `switchboard` command line |
//!
//! # Public API
//!
//! The binary, the end-to-end tests and the benchmarks use the library through:
//! - [`server::run`]: a host on a listener the caller bound, until a shutdown future resolves;
//! - [`config::Config`] and its sections: parse, validate and override a configuration;
//! - [`cli`]: the command line, `token` and `plugin_check`;
//! - [`envelope::Profile`] and [`auth`]'s token extraction and verification (property tests);
//! - [`plugins`]' runtime, code cache, loaded plugin and sidecar, with [`delivery::Hub`],
//!   [`sessions::Registry`] and [`sessions::Session`], to call a plugin without a server
//!   (the dispatch benchmark and the polyglot tests);
//! - [`close_codes`]: what clients are told when the host closes a connection.
//!
//! Everything else is `pub(crate)`.

#![warn(clippy::unwrap_used, clippy::expect_used)]

pub(crate) mod accept;
pub(crate) mod api;
pub mod auth;
pub mod cli;
pub mod close_codes;
pub(crate) mod cluster;
pub mod config;
pub mod delivery;
pub mod dispatch;
pub(crate) mod drain;
pub mod envelope;
pub mod frame;
pub(crate) mod http_error;
pub(crate) mod ingest;
pub mod plugins;
pub(crate) mod rate;
pub mod recent;
pub(crate) mod recheck;
pub(crate) mod reload;
pub mod server;
pub mod sessions;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod target;
pub(crate) mod telemetry;
pub(crate) mod transport;
pub(crate) mod via;
pub(crate) mod web;
