//! A Redis Cluster of the test's own: three `redis-server --cluster-enabled yes` masters on
//! free ports (no replicas), joined by `redis-cli --cluster create`, each of which the test
//! can kill, freeze and restart. A restarted master keeps its node id and slots (its
//! `nodes.conf` stays in its folder) and rejoins by itself.

use std::{path::PathBuf, process::Command};

use crate::{PATIENCE, cluster::ServerProcess, eventually};

/// Masters in a test cluster.
pub const MASTERS: usize = 3;

/// How long the masters wait for an unanswering peer before they mark it failed (and the
/// cluster stops serving): short, so that a killed master takes the cluster down at once and a
/// restarted one is taken back quickly.
const NODE_TIMEOUT_MS: &str = "1000";

/// A port that is free, with its cluster bus port (the port + 10000) free too.
fn free_port_pair() -> u16 {
    loop {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port > 55_535 {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// One master of a [`RedisCluster`].
#[derive(Debug)]
struct Master {
    process: ServerProcess,
    /// Its working folder: `nodes.conf` lives here across restarts.
    dir: PathBuf,
}

/// A three-master Redis Cluster.
#[derive(Debug)]
pub struct RedisCluster {
    masters: Vec<Master>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts three masters, joins them into a cluster that covers every slot, and waits
    /// until every master reports `cluster_state:ok`.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut masters = Vec::new();
        for _ in 0..MASTERS {
            let port = free_port_pair();
            let master_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&master_dir).unwrap();
            masters.push(Master {
                process: ServerProcess::on(port),
                dir: master_dir,
            });
        }
        let mut cluster = Self { masters, _dir: dir };
        for i in 0..MASTERS {
            cluster.launch(i).await;
        }
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(
                cluster
                    .masters
                    .iter()
                    .map(|m| format!("127.0.0.1:{}", m.process.port)),
            )
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok().await;
        cluster
    }

    /// The seed URLs as a TOML list, the form `cluster.redis_url` takes from the environment.
    pub fn url(&self) -> String {
        let urls: Vec<String> = self
            .masters
            .iter()
            .map(|m| format!("\"redis://127.0.0.1:{}\"", m.process.port))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// The ports of the masters.
    pub fn ports(&self) -> Vec<u16> {
        self.masters.iter().map(|m| m.process.port).collect()
    }

    /// Runs `redis-cli` against master `i` and returns what it printed, trimmed.
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.masters[i].process.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The master that owns the slot of `key`.
    pub fn owner_of(&self, key: &str) -> usize {
        let slot: u16 = self.cli(0, &["CLUSTER", "KEYSLOT", key]).parse().unwrap();
        (0..MASTERS)
            .find(|&i| {
                let nodes = self.cli(i, &["CLUSTER", "NODES"]);
                let myself = nodes.lines().find(|l| l.contains("myself")).unwrap_or("");
                myself.split_whitespace().skip(8).any(|range| {
                    let (from, to) = range.split_once('-').unwrap_or((range, range));
                    let (from, to): (u16, u16) = (from.parse().unwrap(), to.parse().unwrap());
                    (from..=to).contains(&slot)
                })
            })
            .expect("a master owns every slot")
    }

    /// Kills master `i` (SIGKILL): no goodbye to its clients.
    pub fn kill(&mut self, i: usize) {
        self.masters[i].process.kill();
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to master `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        self.masters[i].process.signal(signal);
    }

    /// Starts master `i` again on its port, with its cluster state, and waits until the
    /// cluster is whole again.
    pub async fn restart(&mut self, i: usize) {
        self.launch(i).await;
        self.wait_ok().await;
    }

    /// Starts master `i`'s process and waits until it answers.
    async fn launch(&mut self, i: usize) {
        let master = &mut self.masters[i];
        let port = master.process.port;
        let mut command = Command::new("redis-server");
        command
            .current_dir(&master.dir)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", NODE_TIMEOUT_MS])
            .args(["--save", "", "--appendonly", "no"]);
        master.process.replace(command);
        crate::cluster::wait_redis_pong(port).await;
    }

    /// Waits until every master reports `cluster_state:ok`.
    async fn wait_ok(&self) {
        eventually(PATIENCE * 3, "the redis cluster to be ok", async || {
            let ok = (0..MASTERS).all(|i| {
                self.cli(i, &["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
            });
            ok.then_some(())
        })
        .await;
    }
}
