//! `switchboard-bench`: figures for the host, printed as a table.
//!
//! - `dispatch`: per-message cost of plugin dispatch (fresh instance + call + one send that
//!   reaches a session queue), in process, no sockets.
//! - `idle`, `fanout`, `push`, `chat`, `reload`, `compare`, `cluster`: a load generator that starts real hosts
//!   (and nginx + nchan as a peer) and drives them over loopback WebSockets; see
//!   `BENCHMARKS.md`.
//! - `callgrind`: the host under valgrind's callgrind, instructions counted only while a fixed
//!   small workload runs: a figure that does not depend on the machine's load.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`commands`] | the load scenarios as commands: what to start, measure and print |
//! | [`callgrind`] | server instructions per delivery: the host under valgrind, counted around a fixed workload |
//! | [`scenario`] | a [`scenario::Session`] (server + open connections) and its measurements |
//! | [`server`] | the server under test: Switchboard hosts or nchan; publishing |
//! | [`host`] / [`nchan`] / [`redis`] / [`broker`] | starting and stopping a host / nginx + nchan / Redis / the broker of a cluster (Redis, Redis Cluster, NATS, RabbitMQ) |
//! | [`fleet`] / [`worker`] | the load generator's child processes and their protocol |
//! | [`wire`] | tokens, stamped payloads, opening a WebSocket from a chosen source address |
//! | [`histogram`] | latency histograms that merge across processes |
//! | [`procstat`] | server memory and CPU from `/proc` |
//! | [`report`] | the table, medians and ratios |

mod broker;
mod callgrind;
mod child;
mod commands;
mod dispatch;
mod fleet;
mod histogram;
mod host;
mod nchan;
mod procstat;
mod redis;
mod report;
mod scenario;
mod server;
mod wire;
mod worker;

use clap::{Parser, Subcommand};

/// Switchboard benchmarks.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Plugin dispatch overhead per message.
    Dispatch(dispatch::Args),
    /// Idle authenticated connections: server memory per connection.
    Idle(commands::IdleArgs),
    /// One publisher, many subscribers of one user type: deliveries/s, latency, CPU.
    Fanout(commands::FanoutArgs),
    /// Pushes to random single users (no tenant_id) at a fixed rate: CPU per push by session count.
    Push(commands::PushArgs),
    /// Server instructions per delivery (valgrind's callgrind) over a fixed small workload.
    Callgrind(callgrind::Args),
    /// Clients sending to random peers through the demo-chat plugin: end-to-end latency.
    Chat(commands::ChatArgs),
    /// Chat while the plugin file is replaced every second: loss and the latency spike.
    Reload(commands::ReloadArgs),
    /// Idle and fan-out against Switchboard and nginx + nchan in one run, with ratios.
    Compare(commands::CompareArgs),
    /// Idle, fan-out and chat across several hosts joined by a broker (`--broker`).
    Cluster(commands::ClusterArgs),
    /// A load-generating child process (started by the other commands).
    #[command(hide = true)]
    Worker,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Dispatch(args) => dispatch::run(args),
        Command::Idle(args) => commands::run(commands::idle(args)),
        Command::Fanout(args) => commands::run(commands::fanout(args)),
        Command::Push(args) => commands::run(commands::push(args)),
        Command::Callgrind(args) => commands::run(callgrind::run(args)),
        Command::Chat(args) => commands::run(commands::chat(args)),
        Command::Reload(args) => commands::run(commands::reload(args)),
        Command::Compare(args) => commands::run(commands::compare(args)),
        Command::Cluster(args) => commands::run(commands::cluster(args)),
        Command::Worker => worker::run(),
    }
}
