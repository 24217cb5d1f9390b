//! A Redis server of the benchmark's own for clustered hosts: `redis-server` in the foreground
//! on a free loopback port, nothing saved to disk, its folder temporary.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::{
    host::{free_port, terminate},
    procstat::{self, Usage},
};

/// A running Redis.
#[derive(Debug)]
pub(crate) struct Redis {
    child: Child,
    /// Its pid, for `/proc`.
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its working folder and log.
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts `binary` and waits until it answers `PING`.
    pub(crate) async fn start(binary: &PathBuf) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-bench-redis-")
            .tempdir()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            // Every host holds a subscriber and a publisher connection; clients are few.
            .args(["--maxclients", "1000"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("redis.log"))?)
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (apt-get install redis-server, or pass --redis-server)",
                    binary.display()
                )
            })?;
        let pid = child.id().context("redis-server exited at once")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("redis-server exited with {status}");
            }
            if ping(addr) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("redis-server not answering on {addr} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            child,
            pid,
            addr,
            dir,
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
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        let result = terminate(&mut self.child, self.pid, "TERM", Duration::from_secs(10)).await;
        drop(self.dir);
        result
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
