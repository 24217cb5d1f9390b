//! A Switchboard host started by the benchmark: the release binary, configured only through
//! `SWITCHBOARD_*` environment overrides, on a free loopback port, with its own temporary
//! plugins folder and its log in a file.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::{
    child::{ServerProcess, free_port, temp_dir},
    procstat::{self, Usage},
};

/// The host's log file, in its folder.
const LOG: &str = "host.log";

/// The API key every benchmark host accepts.
pub(crate) const API_KEY: &str = "bench-api-key";

/// How to start hosts.
#[derive(Debug, Clone)]
pub(crate) struct HostOptions {
    /// The `switchboard` binary.
    pub binary: PathBuf,
    /// The HS256 secret the host verifies tokens with (clients sign with it too).
    pub secret: String,
    /// Extra `SWITCHBOARD_*` overrides, applied last.
    pub env: Vec<(String, String)>,
    /// A program the host runs under, with its arguments (e.g. `valgrind --tool=callgrind`);
    /// empty: the host runs by itself. The process started is then the launcher, which must
    /// keep the host's pid (valgrind does).
    pub launcher: Vec<String>,
    /// How long the host may take to exit after SIGTERM before it is killed.
    pub stop_grace: Duration,
    /// How long the host may take to start (plugins loaded).
    pub ready_within: Duration,
}

/// A running host.
#[derive(Debug)]
pub(crate) struct Host {
    /// The host process, owning the temporary folder with the plugins folder, the compiled
    /// code cache and the log.
    process: ServerProcess,
    /// Its pid, for `/proc`.
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its plugins folder (the reload scenario replaces files in it).
    pub plugins_dir: PathBuf,
    /// How long it may take to exit after SIGTERM.
    stop_grace: Duration,
}

impl Host {
    /// Starts a host serving the given plugin files, with `env` on top of the benchmark's
    /// settings, and waits until `/readyz` answers 200 (plugins loaded).
    pub(crate) async fn start(
        options: &HostOptions,
        plugins: &[PathBuf],
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        if !options.binary.exists() {
            bail!(
                "no host binary at {} (build it: cargo build --release -p switchboard, or pass --host-bin)",
                options.binary.display()
            );
        }
        let dir = temp_dir("host")?;
        let plugins_dir = dir.path().join("plugins");
        std::fs::create_dir(&plugins_dir)?;
        for plugin in plugins {
            let name = plugin.file_name().context("plugin file name")?;
            std::fs::copy(plugin, plugins_dir.join(name))
                .with_context(|| format!("copying {}", plugin.display()))?;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = std::fs::File::create(dir.path().join(LOG))?;
        let mut command = match options.launcher.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&options.binary);
                c
            }
            None => Command::new(&options.binary),
        };
        command
            .arg("serve")
            .env("SWITCHBOARD_LOG", "warn")
            .env("SWITCHBOARD_SERVER__LISTEN", addr.to_string())
            .env("SWITCHBOARD_AUTH__JWT_SECRET", &options.secret)
            .env("SWITCHBOARD_API__KEYS", format!("[\"{API_KEY}\"]"))
            .env("SWITCHBOARD_PLUGINS__DIR", &plugins_dir)
            // A process holds at most 20,000 open files here; the host keeps 256 for its own
            // files and, here, 256 for handshakes in flight (the load generator runs 128 at once).
            .env("SWITCHBOARD_SERVER__MAX_CONNECTIONS", "19400")
            .env("SWITCHBOARD_SERVER__MAX_PENDING_CONNECTIONS", "256")
            .envs(env.iter().cloned())
            .envs(options.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(log);
        let mut process = ServerProcess::spawn("host", &mut command, dir, &[LOG], "")?;
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/readyz");
        process
            .wait_ready(options.ready_within, || async {
                client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await?;
        Ok(Self {
            pid: process.pid,
            process,
            addr,
            plugins_dir,
            stop_grace: options.stop_grace,
        })
    }

    /// The host's memory (`VmRSS`) and CPU time.
    pub(crate) fn usage(&self) -> anyhow::Result<Usage> {
        procstat::process(self.pid)
    }

    /// The last lines of the host's log.
    pub(crate) fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// The temporary folder the host's files live in.
    pub(crate) fn dir(&self) -> &Path {
        self.process.dir()
    }

    /// `GET /metrics`.
    pub(crate) async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(format!("http://{}/metrics", self.addr))
            .await?
            .text()
            .await?)
    }

    /// SIGTERM, then SIGKILL if the host has not exited within its grace period.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.process.stop(self.stop_grace).await
    }
}

/// The value of a Prometheus counter line `name{labels} value` (summed over matching lines).
pub(crate) fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
