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
use tokio::process::{Child, Command};

use crate::procstat::{self, Usage};

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
}

/// A running host.
#[derive(Debug)]
pub(crate) struct Host {
    /// The host process.
    child: Child,
    /// Its pid, for `/proc`.
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its plugins folder (the reload scenario replaces files in it).
    pub plugins_dir: PathBuf,
    /// Holds the plugins folder, the compiled code cache and the log until the host is gone.
    dir: tempfile::TempDir,
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
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
        let dir = tempfile::Builder::new()
            .prefix("switchboard-bench-host-")
            .tempdir()?;
        let plugins_dir = dir.path().join("plugins");
        std::fs::create_dir(&plugins_dir)?;
        for plugin in plugins {
            let name = plugin.file_name().context("plugin file name")?;
            std::fs::copy(plugin, plugins_dir.join(name))
                .with_context(|| format!("copying {}", plugin.display()))?;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = std::fs::File::create(dir.path().join("host.log"))?;
        let mut command = Command::new(&options.binary);
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
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", options.binary.display()))?;
        let pid = child.id().context("host exited at once")?;
        let mut host = Self {
            child,
            pid,
            addr,
            plugins_dir,
            dir,
        };
        host.wait_ready(Duration::from_secs(120)).await?;
        Ok(host)
    }

    async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let url = format!("http://{}/readyz", self.addr);
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("host exited with {status}:\n{}", self.log_tail());
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("host not ready within {within:?}:\n{}", self.log_tail())
    }

    /// The host's memory (`VmRSS`) and CPU time.
    pub(crate) fn usage(&self) -> anyhow::Result<Usage> {
        procstat::process(self.pid)
    }

    /// The last lines of the host's log.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The host's log file.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join("host.log")
    }

    /// The temporary folder the host's files live in.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET /metrics`.
    pub(crate) async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(format!("http://{}/metrics", self.addr))
            .await?
            .text()
            .await?)
    }

    /// SIGTERM, then SIGKILL if the host has not exited within 30 s.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        terminate(&mut self.child, self.pid, "TERM", Duration::from_secs(30)).await
    }
}

/// Sends `signal` to `pid` and waits up to `grace` for `child` to exit, then kills it.
pub(crate) async fn terminate(
    child: &mut Child,
    pid: u32,
    signal: &str,
    grace: Duration,
) -> anyhow::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await;
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        eprintln!("process {pid} did not exit within {grace:?} after SIG{signal}; killing it");
        child.kill().await?;
    }
    Ok(())
}

/// The value of a Prometheus counter line `name{labels} value` (summed over matching lines).
pub(crate) fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
