//! The `switchboard` binary: parses the command line, loads the config, binds, and runs.

use std::sync::Arc;

use clap::Parser;
use switchboard::{
    cli::{self, Cli, Command, ConfigCommand, PluginCommand},
    config::{DEFAULT_LOG_FILTER, LogFormat},
    server::{LogFilterSetter, Options},
};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt as _, util::SubscriberInitExt as _};

/// Logs to stderr, filtered by `SWITCHBOARD_LOG` or `RUST_LOG` when set, else by `filter`
/// (`server.log_filter`), which a reload can then change through the returned setter.
fn init_logging(format: LogFormat, filter: &str) -> Option<LogFilterSetter> {
    let from_env = EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .ok();
    let fixed = from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG_FILTER));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let json = format == LogFormat::Json;
    tracing_subscriber::registry()
        .with(filter)
        .with(switchboard::recent::layer())
        .with(json.then(|| {
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
        }))
        .with((!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr)))
        .init();
    if fixed {
        return None;
    }
    Some(Arc::new(move |directives: &str| {
        handle.reload(EnvFilter::try_new(directives)?)?;
        Ok(())
    }))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config: path } => {
            let config = cli::load_config(path.as_deref())?;
            let log_filter = init_logging(config.server.log_format, &config.server.log_filter);
            let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
            let options = Options {
                config_path: path,
                signals: true,
                log_filter,
            };
            switchboard::server::run_with(listener, config, shutdown_signal(), options).await
        }
        Command::Token {
            user_id,
            user_type,
            tenant_id,
            ttl,
            config,
        } => {
            let config = cli::load_config(config.as_deref())?;
            println!(
                "{}",
                cli::token(&config, user_id, user_type, tenant_id, ttl)?
            );
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => std::process::exit(cli::config_check(&file)),
        Command::Config {
            command: ConfigCommand::Defaults,
        } => {
            print!("{}", switchboard::config::defaults::render());
            Ok(())
        }
        Command::Plugin {
            command: PluginCommand::Check { file, config },
        } => {
            let config = cli::load_config(config.as_deref())?;
            init_logging(LogFormat::Text, &config.server.log_filter);
            println!("{}", cli::plugin_check(&config, &file).await?);
            Ok(())
        }
    }
}
