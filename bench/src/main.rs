//! `switchboard-bench`: figures for the host, printed as a table.
//!
//! - `dispatch`: per-message cost of plugin dispatch (fresh instance + call + one send that
//!   reaches a session queue), in process, no sockets.

mod dispatch;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Dispatch(args) => dispatch::run(args),
    }
}
