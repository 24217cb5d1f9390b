//! The peer: nginx with the nchan module, run in the foreground from a configuration written
//! to a temporary folder (`bench/nchan/nginx.conf` with its placeholders filled in).

use std::{net::SocketAddr, path::PathBuf, process::Stdio, time::Duration};

use anyhow::bail;
use tokio::process::Command;

use crate::{
    child::{ServerProcess, free_port, temp_dir},
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
    /// The master process, owning the configuration, logs and temp files.
    process: ServerProcess,
    /// The master's pid; the workers are its children.
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Nchan {
    /// Writes the configuration, starts nginx and waits until it answers with every worker up.
    pub(crate) async fn start(options: &NchanOptions) -> anyhow::Result<Self> {
        if !options.module.exists() {
            bail!(
                "no nchan module at {} (apt-get install nginx libnginx-mod-nchan, or pass --nchan-module)",
                options.module.display()
            );
        }
        let dir = temp_dir("nchan")?;
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
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log"))?);
        let mut process =
            ServerProcess::spawn("nginx", &mut command, dir, &["stderr.log", "error.log"], "")?;
        let pid = process.pid;
        let url = format!("http://{addr}/ready");
        process
            .wait_ready(Duration::from_secs(20), || async {
                let answered = reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success());
                answered && procstat::children(pid).len() >= options.workers
            })
            .await?;
        Ok(Self { process, pid, addr })
    }

    /// Memory (sum of `Pss` over master and workers) and CPU time of master and workers.
    pub(crate) fn usage(&self) -> anyhow::Result<Usage> {
        procstat::tree(self.pid)
    }

    /// The last lines of nginx's logs.
    pub(crate) fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// SIGTERM (nginx's fast shutdown), then SIGKILL after 10 s.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.process.stop(Duration::from_secs(10)).await
    }
}
