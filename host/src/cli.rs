//! The `switchboard` command line: `serve`, `token`, `config check|defaults`, `plugin check`.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::{
    auth::{Authenticator, Principal},
    config::Config,
    delivery::Hub,
    plugins::{
        loaded::{LoadContext, LoadedPlugin},
        runtime::Runtime,
    },
    sessions::Registry,
};

/// Real-time messaging host with WebAssembly listener plugins.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host.
    Serve {
        /// Config file (TOML); every key can also be set as `SWITCHBOARD_<SECTION>__<KEY>`.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print a token signed with the configured key (for development and tests).
    Token {
        /// The user id.
        #[arg(long)]
        user_id: String,
        /// The user type.
        #[arg(long)]
        user_type: u32,
        /// The tenant id.
        #[arg(long)]
        tenant_id: Option<String>,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Config tools.
    Config {
        /// What to do with config files.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Plugin tools.
    Plugin {
        /// What to do with plugins.
        #[command(subcommand)]
        command: PluginCommand,
    },
}

/// `switchboard config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config file as `serve` would read it (environment overrides included) and
    /// print every problem; exit code 0 when it is good, 1 when it has problems, 2 when it
    /// cannot be read.
    Check {
        /// The config file.
        file: PathBuf,
    },
    /// Print a complete config file: every key at its default, with its description.
    Defaults,
}

/// `switchboard plugin ...`
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Validate a component against the plugin world and print what it claims.
    Check {
        /// The `.wasm` file (its sidecar `NAME.toml`, if any, is checked too).
        file: PathBuf,
        /// Config file (for plugin limits).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Loads the config from `path` and the process environment.
pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Config::load(path, std::env::vars())
}

/// `switchboard config check`: every problem on stderr, or `FILE: ok` on stdout; the exit code.
pub fn config_check(file: &std::path::Path) -> i32 {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{}: cannot be read: {e}", file.display());
            return 2;
        }
    };
    let problems = Config::check_all(
        &text,
        &file.display().to_string(),
        std::env::vars().collect(),
    );
    if problems.is_empty() {
        println!("{}: ok", file.display());
        return 0;
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    1
}

/// `switchboard token`: the token alone on stdout.
pub fn token(
    config: &Config,
    user_id: String,
    user_type: u32,
    tenant_id: Option<String>,
    ttl: Duration,
) -> anyhow::Result<String> {
    let auth = Authenticator::new(&config.auth)?;
    let principal = Principal {
        user_id: user_id.into(),
        user_type,
        tenant_id: tenant_id.map(Into::into),
    };
    auth.issue(&principal, ttl)
}

/// `switchboard plugin check`: a report of the plugin, or why it is not one.
pub async fn plugin_check(config: &Config, file: &std::path::Path) -> anyhow::Result<String> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let key = file
        .file_stem()
        .and_then(|s| s.to_str())
        .context("file name is not UTF-8")?;
    if file.extension().and_then(|e| e.to_str()) != Some("wasm") {
        anyhow::bail!("{} is not a .wasm file", file.display());
    }
    let runtime = Arc::new(Runtime::new(&config.plugins)?);
    let hub = Hub::single_node(Registry::new(1), "check".into());
    let cx = LoadContext {
        runtime: &runtime,
        cache: None,
        config: &config.plugins,
        hub: &hub,
    };
    let plugin = LoadedPlugin::load(&cx, dir, key, Default::default()).await?;
    Ok(serde_json::to_string_pretty(&plugin.description())?)
}
