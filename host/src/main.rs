//! The `switchboard` binary: parses the command line, loads the config, binds, and runs.

use clap::Parser;
use switchboard::{
    cli::{self, Cli, Command, PluginCommand},
    config::LogFormat,
};
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
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
        Command::Serve { config } => {
            let config = cli::load_config(config.as_deref())?;
            init_logging(config.server.log_format);
            let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
            switchboard::server::run(listener, config, shutdown_signal()).await
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
        Command::Plugin {
            command: PluginCommand::Check { file, config },
        } => {
            let config = cli::load_config(config.as_deref())?;
            init_logging(LogFormat::Text);
            println!("{}", cli::plugin_check(&config, &file).await?);
            Ok(())
        }
    }
}
