//! The peer: nginx with the nchan module, run in the foreground from a configuration written
//! to a temporary folder (`bench/nchan/nginx.conf` with its placeholders filled in).

use std::{net::SocketAddr, path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::{
    host::{free_port, terminate},
    procstat::{self, Usage},
};

/// The configuration template.
const TEMPLATE: &str = include_str!("../nchan/nginx.conf");

/// How to start nginx.
#[derive(Debug, Clone)]
pub(crate) struct NchanOptions {
    /// The nginx binary.
    pub nginx: PathBuf,
    /// The nchan dynamic module.
    pub module: PathBuf,
    /// nginx worker processes.
    pub workers: usize,
}

/// A running nginx + nchan.
#[derive(Debug)]
pub(crate) struct Nchan {
    /// The master process.
    child: Child,
    /// The master's pid; the workers are its children.
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The configuration, logs and temp files.
    dir: tempfile::TempDir,
}

impl Nchan {
    /// Writes the configuration, starts nginx and waits until it answers.
    pub(crate) async fn start(options: &NchanOptions) -> anyhow::Result<Self> {
        if !options.module.exists() {
            bail!(
                "no nchan module at {} (apt-get install nginx libnginx-mod-nchan, or pass --nchan-module)",
                options.module.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("switchboard-bench-nchan-")
            .tempdir()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let config = TEMPLATE
            .replace("{{MODULE}}", &options.module.display().to_string())
            .replace("{{WORKERS}}", &options.workers.to_string())
            .replace("{{NOFILE}}", "20000")
            .replace("{{CONNECTIONS}}", "19800")
            .replace("{{DIR}}", &dir.path().display().to_string())
            .replace("{{LISTEN}}", &addr.to_string());
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config)?;
        let mut command = Command::new(&options.nginx);
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", options.nginx.display()))?;
        let pid = child.id().context("nginx exited at once")?;
        let mut nchan = Self {
            child,
            pid,
            addr,
            dir,
        };
        nchan.wait_ready(options.workers).await?;
        Ok(nchan)
    }

    async fn wait_ready(&mut self, workers: usize) -> anyhow::Result<()> {
        let url = format!("http://{}/ready", self.addr);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("nginx exited with {status}:\n{}", self.log_tail());
            }
            let answered = reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered && procstat::children(self.pid).len() >= workers {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("nginx not ready within 20 s:\n{}", self.log_tail())
    }

    /// Memory (sum of `Pss` over master and workers) and CPU time of master and workers.
    pub(crate) fn usage(&self) -> anyhow::Result<Usage> {
        procstat::tree(self.pid)
    }

    /// The last lines of nginx's logs.
    pub(crate) fn log_tail(&self) -> String {
        let mut text = String::new();
        for log in ["stderr.log", "error.log"] {
            text += &std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default();
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM (nginx's fast shutdown), then SIGKILL after 10 s.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        terminate(&mut self.child, self.pid, "TERM", Duration::from_secs(10)).await
    }
}
