//! Real processes for cluster tests: a `redis-server`, a Redis Cluster
//! ([`crate::redis_cluster`]) or a `nats-server` of the test's own on free ports, or the
//! machine's RabbitMQ (a cluster name of the test's own, reached directly or through a
//! [`crate::proxy::Proxy`] the test can cut), and `switchboard serve` processes joined through
//! it. [`Fabric`] is any of them, for the suite that runs on every broker.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use serde_json::Value;

use crate::{
    PATIENCE,
    client::Client,
    eventually, guests,
    host::{API_KEY, SECRET, token},
    proxy::Proxy,
    redis_cluster::RedisCluster,
};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a `redis-server` binary is on the PATH.
pub fn redis_available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Fails the test unless a `redis-server` binary exists; true, so callers read as a
/// precondition.
pub fn require_redis() -> bool {
    assert!(
        redis_available(),
        "no redis-server binary on PATH: the end-to-end tier needs scripts/setup.sh, which installs one"
    );
    true
}

/// A broker server the tests start, kill, freeze and restart on one fixed free port.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    /// Its port on 127.0.0.1, kept across restarts.
    pub(crate) port: u16,
    child: Option<Child>,
}

impl ServerProcess {
    fn new() -> Self {
        Self::on(free_port())
    }

    /// Not started yet; will listen on `port`.
    pub(crate) fn on(port: u16) -> Self {
        Self { port, child: None }
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the running process.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.pid().expect("the server runs");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Kills the running process, if any (SIGKILL: no goodbye to its clients; it also ends a
    /// stopped one).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the running process and starts `command` in its place, its output discarded.
    pub(crate) fn replace(&mut self, mut command: Command) {
        self.kill();
        let name = command.get_program().to_string_lossy().into_owned();
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        self.child = Some(child);
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `redis-server` child process.
#[derive(Debug)]
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    process: ServerProcess,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers.
    pub async fn start() -> Self {
        let process = ServerProcess::new();
        let mut server = Self {
            port: process.port,
            process,
        };
        server.restart().await;
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Runs `redis-cli` against it and returns what it printed, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Kills it (SIGKILL): no goodbye to its clients.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        self.process.replace(command);
        wait_redis_pong(self.port).await;
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }
}

/// Waits until the Redis on `port` answers PING.
pub(crate) async fn wait_redis_pong(port: u16) {
    eventually(PATIENCE, "redis to answer PING", async || {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await.ok()?;
        (&buf == b"+PONG\r\n").then_some(())
    })
    .await;
}

/// The `nats-server` binary: on the PATH, or where Debian puts it (`/usr/sbin`, not on every
/// user's PATH).
pub fn nats_binary() -> Option<PathBuf> {
    let runs = |bin: &std::path::Path| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    [
        PathBuf::from("nats-server"),
        PathBuf::from("/usr/sbin/nats-server"),
    ]
    .into_iter()
    .find(|b| runs(b))
}

/// Fails the test unless a `nats-server` binary exists; true, so callers read as a
/// precondition.
pub fn require_nats() -> bool {
    assert!(
        nats_binary().is_some(),
        "no nats-server binary: the end-to-end tier needs scripts/setup.sh, which installs one"
    );
    true
}

/// A `nats-server` child process.
#[derive(Debug)]
pub struct NatsServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    process: ServerProcess,
}

impl NatsServer {
    /// Starts one on a free port and waits until it greets clients.
    pub async fn start() -> Self {
        let process = ServerProcess::new();
        let mut server = Self {
            port: process.port,
            process,
        };
        server.restart().await;
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL): no goodbye to its clients.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        let mut command = Command::new(nats_binary().expect("nats-server exists"));
        command.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        self.process.replace(command);
        let port = self.port;
        eventually(PATIENCE, "nats to greet a client", async || {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.ok()?;
            (&buf == b"INFO ").then_some(())
        })
        .await;
    }
}

/// The machine's RabbitMQ, which the tests cannot restart: 127.0.0.1:5672, guest/guest.
pub const RABBITMQ: &str = "127.0.0.1:5672";

/// Fails the test unless RabbitMQ accepts connections on [`RABBITMQ`]; true, so callers read
/// as a precondition.
pub fn require_rabbitmq() -> bool {
    assert!(
        std::net::TcpStream::connect(RABBITMQ).is_ok(),
        "no RabbitMQ on {RABBITMQ}: the end-to-end tier needs scripts/setup.sh, which installs one"
    );
    true
}

/// A cluster of the test's own on RabbitMQ: its own exchanges and queues under a unique
/// cluster name, so tests running at once never see each other's deliveries.
#[derive(Debug, Clone)]
pub struct Rabbit {
    /// `amqp://guest:guest@host:port/%2f`.
    pub url: String,
    /// The cluster name every node of the test uses.
    pub name: String,
}

impl Rabbit {
    /// The machine's RabbitMQ, directly.
    pub fn direct() -> Self {
        Self::at(RABBITMQ)
    }

    /// RabbitMQ reached at `addr` (a proxy in front of it).
    pub fn at(addr: &str) -> Self {
        let unique = format!(
            "t{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
                % 1_000_000_000
        );
        Self {
            url: format!("amqp://guest:guest@{addr}/%2f"),
            name: unique,
        }
    }
}

/// Every broker the cluster suite runs on, by the name [`Fabric::start`] takes.
pub const BROKERS: [&str; 4] = ["redis", "redis-cluster", "nats", "rabbitmq"];

/// A broker a cluster test runs on, to start nodes joined through it and to take it away and
/// bring it back.
#[derive(Debug)]
pub enum Fabric {
    /// A `redis-server` of the test's own.
    Redis(RedisServer),
    /// A three-master Redis Cluster of the test's own, and the master an outage takes away.
    RedisCluster(RedisCluster, usize),
    /// A `nats-server` of the test's own.
    Nats(NatsServer),
    /// The machine's RabbitMQ under a cluster name of the test's own, through a proxy of the
    /// test's own (cut, it looks like a restart to the nodes; paused, like a silent broker).
    Rabbitmq(Rabbit, Proxy),
}

impl Fabric {
    /// Starts the broker (a name on RabbitMQ) named `broker`, one of [`BROKERS`].
    pub async fn start(broker: &str) -> Self {
        match broker {
            "redis" => {
                require_redis();
                Self::Redis(RedisServer::start().await)
            }
            "redis-cluster" => {
                require_redis();
                let cluster = RedisCluster::start().await;
                // The master holding the cluster's presence (every node's cluster name is the
                // default): an outage of it takes presence away as well as deliveries.
                let victim = cluster.owner_of("{switchboard}");
                Self::RedisCluster(cluster, victim)
            }
            "nats" => {
                require_nats();
                Self::Nats(NatsServer::start().await)
            }
            "rabbitmq" => {
                require_rabbitmq();
                let proxy = Proxy::start(RABBITMQ).await;
                Self::Rabbitmq(Rabbit::at(&proxy.addr()), proxy)
            }
            other => panic!("no broker {other}"),
        }
    }

    /// The name [`Fabric::start`] took.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::RedisCluster(..) => "redis-cluster",
            Self::Nats(_) => "nats",
            Self::Rabbitmq(..) => "rabbitmq",
        }
    }

    /// Starts a node joined through this broker with the named guests, and waits until ready.
    pub async fn node(&self, node_id: &str, plugins: &[&str], env: &[(&str, &str)]) -> Node {
        let node = self.spawn_node(node_id, plugins, env);
        node.wait_ready().await;
        node
    }

    /// Starts a node joined through this broker without waiting for it to be ready.
    pub fn spawn_node(&self, node_id: &str, plugins: &[&str], env: &[(&str, &str)]) -> Node {
        match self {
            Self::Redis(r) => Node::spawn(node_id, &r.url(), plugins, env),
            Self::RedisCluster(c, _) => Node::spawn(node_id, &c.url(), plugins, env),
            Self::Nats(n) => {
                let mut env = env.to_vec();
                let url = n.url();
                env.push(("SWITCHBOARD_CLUSTER__BROKER", "nats"));
                env.push(("SWITCHBOARD_CLUSTER__NATS_URL", &url));
                Node::spawn(node_id, "redis://127.0.0.1:1", plugins, &env)
            }
            Self::Rabbitmq(r, _) => Node::spawn_rabbitmq(node_id, r, plugins, env),
        }
    }

    /// Takes the broker away: kills the server (of a Redis Cluster, one master: the cluster
    /// stops serving within its node timeout), or cuts RabbitMQ's proxy (every connection
    /// closes, new ones are refused).
    pub fn outage(&mut self) {
        match self {
            Self::Redis(r) => r.kill(),
            Self::RedisCluster(c, victim) => c.kill(*victim),
            Self::Nats(n) => n.kill(),
            Self::Rabbitmq(_, proxy) => proxy.cut(),
        }
    }

    /// Brings the broker back after [`Fabric::outage`] (on the same port; a Redis Cluster
    /// master with its slots), and waits until it serves.
    pub async fn recover(&mut self) {
        match self {
            Self::Redis(r) => r.restart().await,
            Self::RedisCluster(c, victim) => c.restart(*victim).await,
            Self::Nats(n) => n.restart().await,
            Self::Rabbitmq(_, proxy) => proxy.restore().await,
        }
    }

    /// Makes the broker stop answering while its connections stay open (`paused` true: the
    /// server is stopped with SIGSTOP, or RabbitMQ's proxy stops forwarding), or lets it go on.
    pub fn pause(&self, paused: bool) {
        let signal = if paused { "STOP" } else { "CONT" };
        match self {
            Self::Redis(r) => r.signal(signal),
            Self::RedisCluster(c, victim) => c.signal(*victim, signal),
            Self::Nats(n) => n.signal(signal),
            Self::Rabbitmq(_, proxy) => proxy.pause(paused),
        }
    }
}

/// Runs each named case (an `async fn(&str)` taking a broker name) as one test per broker in
/// [`BROKERS`]: `redis::case`, `redis_cluster::case`, `nats::case`, `rabbitmq::case`.
#[macro_export]
macro_rules! for_each_broker {
    ($($case:ident),* $(,)?) => {
        $crate::for_each_broker!(@broker redis, "redis", $($case),*);
        $crate::for_each_broker!(@broker redis_cluster, "redis-cluster", $($case),*);
        $crate::for_each_broker!(@broker nats, "nats", $($case),*);
        $crate::for_each_broker!(@broker rabbitmq, "rabbitmq", $($case),*);
    };
    (@broker $module:ident, $broker:literal, $($case:ident),*) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case($broker).await;
                }
            )*
        }
    };
}

/// The host binary the tests start: `switchboard-e2e`, the host's `main.rs` as a binary of
/// this package (see tests/Cargo.toml), which `cargo test` of this package has built with the
/// tests, from the same dependency graph. Elsewhere (not under `cargo test` of this package)
/// it is built once per process, with the end-to-end tier's package set and features
/// (scripts/test.sh), so nothing that tier built is compiled again.
pub fn host_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // A test runs from <target>/<profile>/deps/; binaries go to <target>/<profile>/.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let bin = profile_dir.join("switchboard-e2e");
        // Cargo sets the package name when it runs a test of this package, after building
        // the package's binaries.
        if std::env::var("CARGO_PKG_NAME").is_ok_and(|p| p == env!("CARGO_PKG_NAME"))
            && bin.exists()
        {
            return bin;
        }
        let target_dir = profile_dir.parent().unwrap().to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--workspace",
                "--features",
                "switchboard-tests/e2e",
            ])
            .args(["--bin", "switchboard-e2e", "--manifest-path"])
            .arg(guests::repo_root().join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target_dir)
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the host binary");
        bin
    })
    .clone()
}

/// `POST {base}/api/v1/messages` with the API key: status and JSON body. For tasks that
/// outlive a borrow of their [`Node`]; `Node::push` is the same.
pub async fn push(http: &reqwest::Client, base: &str, body: Value) -> (u16, Value) {
    let r = http
        .post(format!("{base}/api/v1/messages"))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// A `switchboard serve` process.
#[derive(Debug)]
pub struct Node {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its node id.
    pub node_id: String,
    child: Child,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Node {
    /// Starts a single node on the local broker with the named guests.
    pub async fn start_local(plugins: &[&str], env: &[(&str, &str)]) -> Self {
        let mut env = env.to_vec();
        env.push(("SWITCHBOARD_CLUSTER__BROKER", "local"));
        Self::start("solo", "redis://127.0.0.1:1", plugins, &env).await
    }

    /// The plugins folder of this node.
    pub fn plugins_dir(&self) -> PathBuf {
        self._dir.path().join("plugins")
    }

    /// Starts a node joined through RabbitMQ with the named guests, and waits until ready.
    pub async fn start_rabbitmq(
        node_id: &str,
        rabbit: &Rabbit,
        plugins: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let node = Self::spawn_rabbitmq(node_id, rabbit, plugins, env);
        node.wait_ready().await;
        node
    }

    /// Starts a node joined through RabbitMQ without waiting for it to be ready.
    pub fn spawn_rabbitmq(
        node_id: &str,
        rabbit: &Rabbit,
        plugins: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut env = env.to_vec();
        env.push(("SWITCHBOARD_CLUSTER__BROKER", "rabbitmq"));
        env.push(("SWITCHBOARD_CLUSTER__AMQP_URL", &rabbit.url));
        env.push(("SWITCHBOARD_CLUSTER__NAME", &rabbit.name));
        Self::spawn(node_id, "redis://127.0.0.1:1", plugins, &env)
    }

    /// Starts a node joined to `redis_url` with the named guests, and waits until ready.
    pub async fn start(
        node_id: &str,
        redis_url: &str,
        plugins: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let node = Self::spawn(node_id, redis_url, plugins, env);
        node.wait_ready().await;
        node
    }

    /// Starts a node joined to `redis_url` (a URL, or a TOML list of a Redis Cluster's) without
    /// waiting for it; `env` may choose another broker.
    pub fn spawn(node_id: &str, redis_url: &str, plugins: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let plugins_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins_dir).unwrap();
        for name in plugins {
            std::fs::copy(guests::path(name), plugins_dir.join(format!("{name}.wasm"))).unwrap();
        }
        let port = free_port();
        let mut cmd = Command::new(host_binary());
        cmd.arg("serve")
            .env("SWITCHBOARD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("SWITCHBOARD_AUTH__JWT_SECRET", SECRET)
            .env("SWITCHBOARD_API__KEYS", format!("[\"{API_KEY}\"]"))
            .env("SWITCHBOARD_PLUGINS__DIR", &plugins_dir)
            .env(
                "SWITCHBOARD_PLUGINS__CACHE_DIR",
                guests::guest_target_dir().join("cwasm-cache"),
            )
            .env("SWITCHBOARD_CLUSTER__BROKER", "redis")
            .env("SWITCHBOARD_CLUSTER__REDIS_URL", redis_url)
            .env("SWITCHBOARD_CLUSTER__NODE_ID", node_id)
            .env("SWITCHBOARD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("host.log")).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("switchboard starts");
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            node_id: node_id.to_owned(),
            child,
            _dir: dir,
            http: reqwest::Client::new(),
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        eventually(PATIENCE * 6, "node to be ready", async || {
            let r = self.http.get(self.url("/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    /// What the process has logged so far (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("host.log")).unwrap_or_default()
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connects a user to `/ws`.
    pub async fn connect(&self, user_id: &str, user_type: u32, tenant: Option<&str>) -> Client {
        let t = token(SECRET, user_id, user_type, tenant, 3600);
        Client::connect(&format!("ws://{}/ws?token={t}", self.addr), &[])
            .await
            .expect("connects")
    }

    /// `POST /api/v1/messages`.
    pub async fn push(&self, body: Value) -> (u16, Value) {
        push(&self.http, &self.url(""), body).await
    }

    /// `GET path` with the API key.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(API_KEY)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// The Prometheus page.
    pub async fn metrics(&self) -> String {
        let r = self.http.get(self.url("/metrics")).send().await.unwrap();
        r.text().await.unwrap()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size of the process, from /proc.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the process to exit; returns how long it took.
    pub async fn terminate(&mut self, within: Duration) -> Duration {
        let started = std::time::Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        eventually(within, "the node to exit", async || {
            self.child.try_wait().unwrap().map(|_| ())
        })
        .await;
        started.elapsed()
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits until this node's cluster presence counts `sessions` sessions of the user
    /// (`tenant` `None`: every tenant): from then on, targeted deliveries from this node reach
    /// them.
    pub async fn wait_sees(
        &self,
        user_type: u32,
        user_id: &str,
        tenant: Option<&str>,
        sessions: u64,
    ) {
        let path = match tenant {
            Some(t) => format!("/api/v1/presence/users/{user_type}/{user_id}?tenant_id={t}"),
            None => format!("/api/v1/presence/users/{user_type}/{user_id}"),
        };
        let what = format!(
            "{} to see {sessions} sessions of user {user_id}",
            self.node_id
        );
        eventually(PATIENCE, &what, async || {
            let (_, body) = self.get(&path).await;
            (body["sessions"] == sessions).then_some(())
        })
        .await;
    }

    /// SIGKILL: the node gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what the node logged.
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of node {} ---", self.node_id);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
