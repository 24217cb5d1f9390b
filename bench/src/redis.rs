//! A Redis server of the benchmark's own for clustered hosts: `redis-server` in the foreground
//! on a free loopback port, nothing saved to disk, its folder temporary; alone, or one master
//! of a Redis Cluster ([`crate::broker`]).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use tokio::process::Command;

use crate::{
    child::{ServerProcess, free_port, temp_dir},
    procstat::{self, Usage},
};

/// A running Redis.
#[derive(Debug)]
pub(crate) struct Redis {
    /// The server process, owning its working folder and log.
    process: ServerProcess,
    /// Its pid, for `/proc`.
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Redis {
    /// Starts `binary` and waits until it answers `PING`.
    pub(crate) async fn start(binary: &PathBuf) -> anyhow::Result<Self> {
        Self::start_with(binary, free_port()?, &[]).await
    }

    /// Starts `binary` as a Redis Cluster master not yet joined to the others (on a port whose
    /// cluster bus port, 10000 above, is free too), and waits until it answers `PING`.
    pub(crate) async fn start_clustered(binary: &PathBuf) -> anyhow::Result<Self> {
        let port = loop {
            let port = free_port()?;
            if port <= 55_535 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
                break port;
            }
        };
        let cluster = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ];
        Self::start_with(binary, port, &cluster).await
    }

    async fn start_with(binary: &PathBuf, port: u16, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = temp_dir("redis")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(binary);
        command
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            // Every host holds a subscriber and a publisher connection; clients are few.
            .args(["--maxclients", "1000"])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::fs::File::create(dir.path().join("redis.log"))?)
            .stderr(Stdio::null());
        let mut process = ServerProcess::spawn(
            "redis-server",
            &mut command,
            dir,
            &["redis.log"],
            " (apt-get install redis-server, or pass --redis-server)",
        )?;
        process
            .wait_ready(Duration::from_secs(20), || async { ping(addr) })
            .await?;
        Ok(Self {
            pid: process.pid,
            process,
            addr,
        })
    }

    /// `redis://ADDR`.
    pub(crate) fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Memory (`VmRSS`) and CPU time.
    pub(crate) fn usage(&self) -> anyhow::Result<Usage> {
        procstat::process(self.pid)
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.process.stop(Duration::from_secs(10)).await
    }
}

/// Whether Redis at `addr` answers `PING` with `+PONG`.
fn ping(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    attempt().unwrap_or(false)
}
