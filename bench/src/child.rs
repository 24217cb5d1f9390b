//! A server process the benchmark starts (a host, nginx, Redis): spawned with its own
//! temporary folder for logs and files, waited on until it answers, and stopped with a signal
//! and a grace period. Dropping one kills the process.

use std::{future::Future, path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// A running server process.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    /// What it is, for messages (`host`, `nginx`, `redis-server`).
    name: &'static str,
    child: Child,
    /// Its pid, for `/proc`.
    pub pid: u32,
    /// Its files and logs; removed when the process is gone.
    dir: tempfile::TempDir,
    /// Its log files, relative to `dir`, read for messages when it fails.
    logs: &'static [&'static str],
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A temporary folder for a process's files, named after it.
pub(crate) fn temp_dir(name: &str) -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("switchboard-bench-{name}-"))
        .tempdir()?)
}

impl ServerProcess {
    /// Spawns `command` (stdin closed, killed on drop), owning `dir`; `logs` name its log
    /// files in `dir`.
    pub(crate) fn spawn(
        name: &'static str,
        command: &mut Command,
        dir: tempfile::TempDir,
        logs: &'static [&'static str],
        hint: &str,
    ) -> anyhow::Result<Self> {
        let child = command
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}{hint}"))?;
        let pid = child
            .id()
            .with_context(|| format!("{name} exited at once"))?;
        Ok(Self {
            name,
            child,
            pid,
            dir,
            logs,
        })
    }

    /// Polls `ready` until it says yes; fails with the log's tail if the process exits or
    /// `within` passes first.
    pub(crate) async fn wait_ready<F: Future<Output = bool>>(
        &mut self,
        within: Duration,
        mut ready: impl FnMut() -> F,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited with {status}:\n{}", self.name, self.log_tail());
            }
            if ready().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} not ready within {within:?}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The folder of its files.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of its logs.
    pub(crate) fn log_tail(&self) -> String {
        let mut text = String::new();
        for log in self.logs {
            text += &std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default();
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub(crate) async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "{} ({}) did not exit within {grace:?} after SIGTERM; killing it",
                self.name, self.pid
            );
            self.child.kill().await?;
        }
        Ok(())
    }
}
