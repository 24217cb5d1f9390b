//! Switchboard: a real-time messaging host whose message handlers are WebAssembly plugins.
//!
//! Clients hold WebSocket connections; each message is a JSON envelope `{type, content}`
//! routed by type to the listener plugin that claimed it. Plugins send messages to sessions,
//! users, user types, tenants or everyone through host imports.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the TOML file and `SWITCHBOARD_<SECTION>__<KEY>` overrides |
//! | [`auth`] | tokens: where they are found, JWT verification, dev tokens |
//! | [`envelope`] | the wire format and the compatibility profiles |
//! | [`sessions`] | the session registry and each session's bounded outbound queue |
//! | [`delivery`] | targets, scopes, encode-once fan-out, the [`delivery::Hub`] |
//! | [`dispatch`] | the [`dispatch::Dispatcher`] seam between transports and listeners |
//! | [`transport`] | connection tasks: upgrade, read loop, write loop, heartbeats |
//! | [`close_codes`] | every close code the host sends, and what a client should do |
//! | [`plugins`] | the wasmtime runtime, loading, routes, hot reload, host imports |
//! | [`cluster`] | the broker that joins hosts into a cluster |
//! | [`api`] | the HTTP API: push, presence, plugins, health, metrics |
//! | [`accept`] | the accept loop: connection caps, header timeout, per-connection context |
//! | [`telemetry`] | every metric, described and registered at zero in one place |
//! | [`server`] | [`server::run`]: wires everything into one server |
//! | [`web`] | the demo web page, embedded in the binary |
//! | [`cli`] | the `switchboard` command line |

pub mod accept;
pub mod api;
pub mod auth;
pub mod cli;
pub mod close_codes;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod dispatch;
pub mod envelope;
pub mod plugins;
pub mod server;
pub mod sessions;
pub mod telemetry;
pub mod transport;
pub mod web;
