//! The broker that joins clustered hosts (`--broker`): a Redis, a three-master Redis Cluster
//! or a `nats-server` of the benchmark's own on free loopback ports, or the machine's RabbitMQ
//! under a cluster name of the run's own. Their processes count as part of the server (the
//! machine's RabbitMQ is not the benchmark's, and is not counted).

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::{
    child::{ServerProcess, free_port, temp_dir},
    procstat::{self, Usage},
    redis::Redis,
};

/// Masters of a benchmark Redis Cluster.
const MASTERS: usize = 3;
/// The machine's RabbitMQ.
const RABBITMQ: &str = "127.0.0.1:5672";

/// Which broker joins the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BrokerKind {
    /// One Redis, pub/sub.
    Redis,
    /// A Redis Cluster of three masters, sharded pub/sub.
    RedisCluster,
    /// A NATS server, core subjects.
    Nats,
    /// The machine's RabbitMQ.
    Rabbitmq,
}

impl BrokerKind {
    /// The name `--broker` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::RedisCluster => "redis-cluster",
            Self::Nats => "nats",
            Self::Rabbitmq => "rabbitmq",
        }
    }
}

/// A running broker.
#[derive(Debug)]
pub(crate) enum Broker {
    /// One Redis.
    Redis(Redis),
    /// The masters of a Redis Cluster.
    RedisCluster(Vec<Redis>),
    /// A NATS server and its port.
    Nats(ServerProcess, u16),
    /// The machine's RabbitMQ, and the cluster name of this run.
    Rabbitmq(String),
}

impl Broker {
    /// Starts `kind` (`redis_server` and `nats_server` are the binaries).
    pub(crate) async fn start(
        kind: BrokerKind,
        redis_server: &PathBuf,
        nats_server: &PathBuf,
    ) -> anyhow::Result<Self> {
        Ok(match kind {
            BrokerKind::Redis => Self::Redis(Redis::start(redis_server).await?),
            BrokerKind::RedisCluster => Self::RedisCluster(redis_cluster(redis_server).await?),
            BrokerKind::Nats => {
                let dir = temp_dir("nats")?;
                let port = free_port()?;
                let mut command = Command::new(nats_server);
                command
                    .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.path().join("nats.log"))?);
                let mut process = ServerProcess::spawn(
                    "nats-server",
                    &mut command,
                    dir,
                    &["nats.log"],
                    " (scripts/setup.sh installs it, or pass --nats-server)",
                )?;
                process
                    .wait_ready(Duration::from_secs(20), || async move {
                        tokio::net::TcpStream::connect(("127.0.0.1", port))
                            .await
                            .is_ok()
                    })
                    .await?;
                Self::Nats(process, port)
            }
            BrokerKind::Rabbitmq => {
                std::net::TcpStream::connect(RABBITMQ)
                    .with_context(|| format!("no RabbitMQ on {RABBITMQ}"))?;
                let unique = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis();
                Self::Rabbitmq(format!("bench-{}-{unique}", std::process::id()))
            }
        })
    }

    /// The environment that joins a host through this broker.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("SWITCHBOARD_CLUSTER__NAME".into(), "bench".into())];
        let mut set = |k: &str, v: String| env.push((format!("SWITCHBOARD_CLUSTER__{k}"), v));
        match self {
            Self::Redis(r) => {
                set("BROKER", "redis".into());
                set("REDIS_URL", r.url());
            }
            Self::RedisCluster(masters) => {
                let urls: Vec<String> =
                    masters.iter().map(|m| format!("\"{}\"", m.url())).collect();
                set("BROKER", "redis".into());
                set("REDIS_URL", format!("[{}]", urls.join(", ")));
            }
            Self::Nats(_, port) => {
                set("BROKER", "nats".into());
                set("NATS_URL", format!("nats://127.0.0.1:{port}"));
            }
            Self::Rabbitmq(name) => {
                set("BROKER", "rabbitmq".into());
                set("AMQP_URL", format!("amqp://guest:guest@{RABBITMQ}/%2f"));
                set("NAME", name.clone());
            }
        }
        env
    }

    /// Memory and CPU of the broker's own processes.
    pub(crate) fn usage(&self) -> anyhow::Result<Usage> {
        let usages: Vec<Usage> = match self {
            Self::Redis(r) => vec![r.usage()?],
            Self::RedisCluster(masters) => masters
                .iter()
                .map(Redis::usage)
                .collect::<anyhow::Result<_>>()?,
            Self::Nats(p, _) => vec![procstat::process(p.pid)?],
            Self::Rabbitmq(_) => Vec::new(),
        };
        let mut total = Usage::default();
        for u in usages {
            total.memory_kib += u.memory_kib;
            total.cpu_secs += u.cpu_secs;
        }
        Ok(total)
    }

    /// Stops its processes.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Redis(r) => r.stop().await,
            Self::RedisCluster(masters) => {
                for m in masters {
                    m.stop().await?;
                }
                Ok(())
            }
            Self::Nats(p, _) => p.stop(Duration::from_secs(10)).await,
            Self::Rabbitmq(_) => Ok(()),
        }
    }
}

/// Starts three cluster-enabled masters, joins them with `redis-cli --cluster create` and
/// waits until each reports `cluster_state:ok`.
async fn redis_cluster(binary: &PathBuf) -> anyhow::Result<Vec<Redis>> {
    let mut masters = Vec::new();
    for _ in 0..MASTERS {
        masters.push(Redis::start_clustered(binary).await?);
    }
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(masters.iter().map(|m| m.addr.to_string()))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .await
        .context("redis-cli (apt-get install redis-tools)")?;
    if !out.status.success() {
        bail!(
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for m in &masters {
        loop {
            let info = Command::new("redis-cli")
                .args(["-p", &m.addr.port().to_string(), "CLUSTER", "INFO"])
                .output()
                .await?;
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the redis cluster was not ok within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(masters)
}
