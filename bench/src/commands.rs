//! The load scenarios as commands: which servers to start, which measurements to take on
//! them, and the table to print. Every run starts its servers afresh and stops them at the end.

use std::{future::Future, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};

use crate::{
    broker::{Broker, BrokerKind},
    fleet::FleetOptions,
    host::{Host, HostOptions},
    nchan::{Nchan, NchanOptions},
    report::{self, Row},
    scenario::{ChatRun, FanoutPlan, Session, Swapper},
    server::Server,
};

/// Connections one host takes at most here: 20,000 open files per process, less the 256 the
/// host keeps for its own files and the 256 pending (not yet authenticated) connections it is
/// started with (see `host.rs`).
const PER_HOST: u64 = 19_400;

/// Options every load scenario shares.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Common {
    /// The `switchboard` binary [default: the one next to this binary].
    #[arg(long)]
    host_bin: Option<PathBuf>,
    /// Folder of the example plugin components (`scripts/build-plugins.sh` fills it).
    #[arg(long, default_value = "target/plugins-dist")]
    plugins: PathBuf,
    /// HS256 secret: the host verifies tokens with it, the clients sign with it.
    #[arg(long, default_value = "switchboard-bench-secret-0123456789")]
    secret: String,
    /// Extra host setting as `SWITCHBOARD_<SECTION>__<KEY>=VALUE` (repeatable).
    #[arg(long = "host-env", value_parser = key_value)]
    host_env: Vec<(String, String)>,
    /// Load generator processes at least.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Connections per load generator process at most (one process may hold 20,000 files).
    #[arg(long, default_value_t = 18_000)]
    per_worker: u64,
    /// Loopback source addresses to spread connections over (127.0.0.1 ..= 127.0.0.N).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=250))]
    sources: u8,
    /// Handshakes in flight per load generator process.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Seconds one connection attempt may take.
    #[arg(long, default_value_t = 10)]
    connect_timeout_secs: u64,
    /// Seconds to let the server settle after connecting, before measuring.
    #[arg(long, default_value_t = 2)]
    settle_secs: u64,
    /// Runs; with more than one, every run is listed and the medians follow.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// The nginx binary.
    #[arg(long, default_value = "nginx")]
    nginx: PathBuf,
    /// The nchan dynamic module.
    #[arg(long, default_value = "/usr/lib/nginx/modules/ngx_nchan_module.so")]
    nchan_module: PathBuf,
    /// nginx worker processes.
    #[arg(long, default_value_t = 2)]
    nginx_workers: usize,
    /// The Redis server binary (clustered hosts).
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// The NATS server binary (`cluster --broker nats`).
    #[arg(long, default_value = "/usr/sbin/nats-server")]
    nats_server: PathBuf,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Which servers a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Against {
    /// Switchboard only.
    Switchboard,
    /// nginx + nchan only.
    Nchan,
    /// Both, one after the other.
    Both,
}

impl Against {
    fn servers(self) -> Vec<Which> {
        match self {
            Against::Switchboard => vec![Which::Switchboard],
            Against::Nchan => vec![Which::Nchan],
            Against::Both => vec![Which::Switchboard, Which::Nchan],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Switchboard,
    Nchan,
}

/// Arguments of `idle`.
#[derive(Debug, clap::Args)]
pub(crate) struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Idle connections.
    #[arg(long, default_value_t = 10_000)]
    conns: u64,
    /// Switchboard hosts to spread them over (each holds at most 19,400).
    #[arg(long, default_value_t = 1)]
    hosts: usize,
    /// Servers to measure.
    #[arg(long, value_enum, default_value_t = Against::Switchboard)]
    against: Against,
    /// nchan: one channel per connection instead of one shared channel.
    #[arg(long)]
    nchan_channel_per_connection: bool,
    /// Join the hosts into a cluster through a Redis of the benchmark's own.
    #[arg(long)]
    cluster: bool,
}

/// Arguments of the fan-out measurement.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FanoutOptions {
    /// Seconds of measured publishing.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Seconds of publishing before the measurement.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// As fast as possible: messages published ahead of the slowest subscriber at most.
    #[arg(long, default_value_t = 16)]
    window: u64,
    /// Publish requests in flight at most.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Padding bytes per message (the frame is about 90 bytes without).
    #[arg(long, default_value_t = 0)]
    pad: usize,
}

impl FanoutOptions {
    fn plan(&self, rate: f64) -> FanoutPlan {
        FanoutPlan {
            rate,
            duration: Duration::from_secs(self.duration_secs),
            warmup: Duration::from_secs(self.warmup_secs),
            drain: Duration::from_secs(10),
            window: self.window,
            publishers: self.publishers.max(1),
            pad: self.pad,
        }
    }
}

/// Arguments of `fanout`.
#[derive(Debug, clap::Args)]
pub(crate) struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    fanout: FanoutOptions,
    /// Subscribers.
    #[arg(long, default_value_t = 10_000)]
    subscribers: u64,
    /// Messages per second; 0 publishes as fast as deliveries keep up.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Servers to measure.
    #[arg(long, value_enum, default_value_t = Against::Switchboard)]
    against: Against,
}

/// Arguments of `chat`.
#[derive(Debug, clap::Args)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    common: Common,
    /// Clients.
    #[arg(long, default_value_t = 10_000)]
    clients: u64,
    /// Messages per second per client.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Seconds of sending before the measurement.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
}

/// Arguments of `push`.
#[derive(Debug, clap::Args)]
pub(crate) struct PushArgs {
    #[command(flatten)]
    common: Common,
    /// Sessions (each its own user); repeat to measure several counts in one invocation.
    #[arg(long, default_values_t = [2_000, 19_000])]
    conns: Vec<u64>,
    /// Pushes per second, each to one random user, without `tenant_id`.
    #[arg(long, default_value_t = 2_000.0)]
    rate: f64,
    /// Seconds of measured pushing.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Seconds of pushing before the measurement.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Push requests in flight at most.
    #[arg(long, default_value_t = 16)]
    publishers: usize,
}

/// Arguments of `reload`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReloadArgs {
    #[command(flatten)]
    common: Common,
    /// Clients.
    #[arg(long, default_value_t = 2_000)]
    clients: u64,
    /// Messages per second per client.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Seconds of steady state (measured, no reloads).
    #[arg(long, default_value_t = 10)]
    steady_secs: u64,
    /// Seconds of reloading (measured).
    #[arg(long, default_value_t = 10)]
    reload_secs: u64,
    /// Milliseconds between plugin file replacements.
    #[arg(long, default_value_t = 1000)]
    every_ms: u64,
    /// Seconds of sending before the measurement.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
}

/// Arguments of `compare`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompareArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    fanout: FanoutOptions,
    /// Connections (idle, then fan-out subscribers).
    #[arg(long, default_value_t = 10_000)]
    conns: u64,
    /// The fixed fan-out rate measured after the maximum, in messages per second.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
}

/// Arguments of `cluster`.
#[derive(Debug, clap::Args)]
pub(crate) struct ClusterArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    fanout: FanoutOptions,
    /// Hosts, joined through the broker.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// The broker that joins them: a Redis, a three-master Redis Cluster or a NATS server of
    /// the benchmark's own, or the machine's RabbitMQ.
    #[arg(long, value_enum, default_value_t = BrokerKind::Redis)]
    broker: BrokerKind,
    /// Connections, spread evenly over the hosts (idle, fan-out subscribers, chat clients).
    #[arg(long, default_value_t = 10_000)]
    conns: u64,
    /// The fixed fan-out rate measured after the maximum, in messages per second.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Chat messages per second per client.
    #[arg(long, default_value_t = 1.0)]
    chat_rate: f64,
    /// Seconds of measured chat.
    #[arg(long, default_value_t = 20)]
    chat_secs: u64,
}

/// Runs a command's future on a runtime of its own. SIGINT or SIGTERM drops it, and with it
/// every process it started (hosts, nginx, Redis and workers are killed on drop).
pub(crate) fn run(command: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            tokio::select! {
                result = command => result,
                signal = interrupted() => bail!("stopped by {}", signal?),
            }
        })
}

/// Resolves with the signal's name at the first SIGINT or SIGTERM.
async fn interrupted() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

impl Common {
    /// The HS256 secret tokens are signed with.
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    /// Runs asked for (at least one).
    pub(crate) fn runs(&self) -> usize {
        self.runs.max(1)
    }

    /// Time to let the server settle after connecting.
    pub(crate) fn settle(&self) -> Duration {
        Duration::from_secs(self.settle_secs)
    }

    pub(crate) fn fleet(&self) -> FleetOptions {
        FleetOptions {
            min_workers: self.workers,
            per_worker: self.per_worker,
            sources: self.sources,
            connect_concurrency: self.connect_concurrency,
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
        }
    }

    pub(crate) fn host_options(&self) -> anyhow::Result<HostOptions> {
        let binary = match &self.host_bin {
            Some(b) => b.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("this binary's folder")?
                .join("switchboard"),
        };
        Ok(HostOptions {
            binary,
            secret: self.secret.clone(),
            env: self.host_env.clone(),
            launcher: Vec::new(),
            stop_grace: Duration::from_secs(30),
            ready_within: Duration::from_secs(120),
        })
    }

    pub(crate) fn plugin(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.plugins.join(format!("{name}.wasm"));
        if !path.exists() {
            bail!(
                "no {} (build the example plugins: scripts/build-plugins.sh {})",
                path.display(),
                self.plugins.display()
            );
        }
        Ok(path)
    }

    /// Starts a server: `layout.hosts` Switchboard hosts serving `plugins` (joined through
    /// `layout.cluster`'s broker), or nginx + nchan.
    async fn start(
        &self,
        which: Which,
        layout: Layout,
        plugins: &[PathBuf],
    ) -> anyhow::Result<Server> {
        match which {
            Which::Switchboard => {
                let options = self.host_options()?;
                let broker = match layout.cluster {
                    Some(kind) => {
                        Some(Broker::start(kind, &self.redis_server, &self.nats_server).await?)
                    }
                    None => None,
                };
                let env = broker.as_ref().map(Broker::env).unwrap_or_default();
                let mut started = Vec::new();
                for _ in 0..layout.hosts.max(1) {
                    started.push(Host::start(&options, plugins, &env).await?);
                }
                Ok(Server::Switchboard {
                    hosts: started,
                    secret: self.secret.clone(),
                    broker,
                })
            }
            Which::Nchan => {
                let nchan = Nchan::start(&NchanOptions {
                    nginx: self.nginx.clone(),
                    module: self.nchan_module.clone(),
                    workers: self.nginx_workers.max(1),
                })
                .await?;
                Ok(Server::Nchan {
                    nchan,
                    channel_per_connection: layout.nchan_channel_per_connection,
                })
            }
        }
    }

    /// Starts a server and opens `conns` connections to it.
    async fn session(
        &self,
        which: Which,
        layout: Layout,
        plugins: &[PathBuf],
        conns: u64,
    ) -> anyhow::Result<Session> {
        let server = self.start(which, layout, plugins).await?;
        Session::open(
            server,
            &self.fleet(),
            conns,
            Duration::from_secs(self.settle_secs),
        )
        .await
    }
}

/// How a server is laid out.
#[derive(Debug, Clone, Copy, Default)]
struct Layout {
    /// Switchboard hosts (at least one).
    hosts: usize,
    /// The broker that joins the hosts, if any.
    cluster: Option<BrokerKind>,
    /// nchan: one channel per connection instead of one shared channel.
    nchan_channel_per_connection: bool,
}

impl Layout {
    const ONE: Layout = Layout {
        hosts: 1,
        cluster: None,
        nchan_channel_per_connection: false,
    };
}

/// Prints what the figures were taken on.
pub(crate) fn print_machine(common: &Common) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let host = common
        .host_options()
        .map(|o| o.binary.display().to_string())
        .unwrap_or_default();
    println!(
        "machine: {cores} cores ({cpu}), {mem_gib:.1} GiB; host binary {host}; load generator on the same machine\n"
    );
}

/// Refuses `conns` connections that `hosts` hosts cannot hold here.
pub(crate) fn check_fits(conns: u64, hosts: usize, flag: &str) -> anyhow::Result<()> {
    if conns > PER_HOST * hosts.max(1) as u64 {
        bail!(
            "{conns} connections need at least {} hosts ({flag}); one holds at most {PER_HOST} here",
            conns.div_ceil(PER_HOST)
        );
    }
    Ok(())
}

impl Common {
    /// The frame of every scenario: prints the machine, then for each run and each of
    /// `servers` starts the server with `conns` connections, lets `measure` take its rows on
    /// them, prints the rows and stops the server; then prints every row and the medians.
    async fn measure_runs(
        &self,
        servers: &[Which],
        layout: Layout,
        plugins: &[PathBuf],
        conns: u64,
        mut measure: impl AsyncFnMut(Which, &mut Session) -> anyhow::Result<Vec<Row>>,
    ) -> anyhow::Result<()> {
        print_machine(self);
        let runs = self.runs.max(1);
        let mut rows = Vec::new();
        for _ in 0..runs {
            for &which in servers {
                let mut session = self.session(which, layout, plugins, conns).await?;
                for row in measure(which, &mut session).await? {
                    report::print_row(&row);
                    rows.push(row);
                }
                session.close().await?;
            }
        }
        println!("{}", report::summary(&rows, runs));
        Ok(())
    }
}

/// `idle`.
pub(crate) async fn idle(args: IdleArgs) -> anyhow::Result<()> {
    let c = &args.common;
    check_fits(args.conns, args.hosts, "--hosts")?;
    let mut servers = args.against.servers();
    if args.conns > PER_HOST && servers.contains(&Which::Nchan) {
        eprintln!("nchan: one nginx holds at most {PER_HOST} connections here; skipped");
        servers.retain(|&w| w != Which::Nchan);
    }
    let layout = Layout {
        hosts: args.hosts,
        cluster: args.cluster.then_some(BrokerKind::Redis),
        nchan_channel_per_connection: args.nchan_channel_per_connection,
    };
    c.measure_runs(&servers, layout, &[], args.conns, async |which, session| {
        let mut row = session.idle()?;
        if which == Which::Switchboard && (args.hosts > 1 || args.cluster) {
            row.scenario = format!(
                "idle, {} hosts{}",
                args.hosts,
                if args.cluster { " + redis" } else { "" }
            );
        }
        Ok(vec![row])
    })
    .await
}

/// `fanout`.
pub(crate) async fn fanout(args: FanoutArgs) -> anyhow::Result<()> {
    let c = &args.common;
    check_fits(args.subscribers, 1, "fewer --subscribers")?;
    let plan = args.fanout.plan(args.rate);
    c.measure_runs(
        &args.against.servers(),
        Layout::ONE,
        &[],
        args.subscribers,
        async |_, session| Ok(vec![session.fanout(&plan).await?]),
    )
    .await
}

/// `push`: per-user pushes at a fixed rate, at each session count in turn.
pub(crate) async fn push(args: PushArgs) -> anyhow::Result<()> {
    let c = &args.common;
    for &conns in &args.conns {
        check_fits(conns, 1, "fewer --conns")?;
    }
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    let plan = FanoutPlan {
        rate: args.rate,
        duration: Duration::from_secs(args.duration_secs),
        warmup: Duration::from_secs(args.warmup_secs),
        drain: Duration::from_secs(10),
        window: 0,
        publishers: args.publishers.max(1),
        pad: 0,
    };
    for &conns in &args.conns {
        c.measure_runs(
            &[Which::Switchboard],
            Layout::ONE,
            &[],
            conns,
            async |_, session| Ok(vec![session.push(&plan).await?]),
        )
        .await?;
    }
    Ok(())
}

/// `chat`.
pub(crate) async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let c = &args.common;
    check_fits(args.clients, 1, "fewer --clients")?;
    let plugin = c.plugin("demo-chat")?;
    let plan = ChatRun {
        rate: args.rate,
        warmup: Duration::from_secs(args.warmup_secs),
        phases: vec![(
            format!("chat {}/s", args.rate),
            Duration::from_secs(args.duration_secs),
        )],
        drain: Duration::from_secs(10),
    };
    c.measure_runs(
        &[Which::Switchboard],
        Layout::ONE,
        std::slice::from_ref(&plugin),
        args.clients,
        async |_, session| session.chat(&plan, None).await,
    )
    .await
}

/// `reload`.
pub(crate) async fn reload(args: ReloadArgs) -> anyhow::Result<()> {
    let c = &args.common;
    check_fits(args.clients, 1, "fewer --clients")?;
    let plugin = c.plugin("demo-chat")?;
    let plan = ChatRun {
        rate: args.rate,
        warmup: Duration::from_secs(args.warmup_secs),
        phases: vec![
            (
                "reload: steady".to_owned(),
                Duration::from_secs(args.steady_secs),
            ),
            (
                format!("reload: swap every {} ms", args.every_ms),
                Duration::from_secs(args.reload_secs),
            ),
        ],
        drain: Duration::from_secs(10),
    };
    c.measure_runs(
        &[Which::Switchboard],
        Layout::ONE,
        std::slice::from_ref(&plugin),
        args.clients,
        async |_, session| {
            let Server::Switchboard { hosts, .. } = &session.server else {
                bail!("reload runs on Switchboard");
            };
            let host = &hosts[0];
            let mut swapper = Swapper::new(
                &host.plugins_dir,
                "demo-chat.wasm",
                host.dir(),
                Duration::from_millis(args.every_ms.max(1)),
            )?;
            let before = host.metrics().await.unwrap_or_default();
            let mut measured = session.chat(&plan, Some((2, &mut swapper))).await?;
            let Server::Switchboard { hosts, .. } = &session.server else {
                bail!("reload runs on Switchboard");
            };
            let after = hosts[0].metrics().await.unwrap_or_default();
            let count = |text: &str, result: &str| {
                crate::host::metric(
                    text,
                    &format!("switchboard_plugin_reloads_total{{result=\"{result}\"}}"),
                )
            };
            let loaded = count(&after, "loaded") - count(&before, "loaded");
            let rejected = count(&after, "rejected") - count(&before, "rejected");
            if let Some(row) = measured.last_mut() {
                row.note = format!(
                    "{} file swaps, {loaded} reloads, {rejected} rejected; {}",
                    swapper.swaps, row.note
                )
                .trim_end_matches("; ")
                .to_owned();
            }
            Ok(measured)
        },
    )
    .await
}

/// `compare`: on each server in turn, idle memory with `conns` connections, then the fan-out
/// maximum, then fan-out at a fixed rate, on the same connections.
pub(crate) async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let c = &args.common;
    check_fits(args.conns, 1, "fewer --conns")?;
    c.measure_runs(
        &[Which::Switchboard, Which::Nchan],
        Layout::ONE,
        &[],
        args.conns,
        async |_, session| {
            let mut rows = vec![session.idle()?];
            for rate in [0.0, args.rate] {
                rows.push(session.fanout(&args.fanout.plan(rate)).await?);
            }
            Ok(rows)
        },
    )
    .await
}

/// `cluster`: `nodes` hosts joined by `broker`, connections spread over them; on the same
/// connections: idle memory, fan-out maximum and at a fixed rate (published on the first host,
/// so the others' subscribers are reached through the broker), then chat to random peers
/// (most on another host).
pub(crate) async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let c = &args.common;
    check_fits(args.conns, args.nodes, "--nodes")?;
    let plugin = c.plugin("demo-chat")?;
    let layout = Layout {
        hosts: args.nodes.max(1),
        cluster: Some(args.broker),
        nchan_channel_per_connection: false,
    };
    let prefix = format!("cluster {}x {}", layout.hosts, args.broker.name());
    let chat = ChatRun {
        rate: args.chat_rate,
        warmup: Duration::from_secs(3),
        phases: vec![(
            format!("{prefix} chat {}/s", args.chat_rate),
            Duration::from_secs(args.chat_secs),
        )],
        drain: Duration::from_secs(10),
    };
    c.measure_runs(
        &[Which::Switchboard],
        layout,
        std::slice::from_ref(&plugin),
        args.conns,
        async |_, session| {
            let mut measured = vec![session.idle()?];
            for rate in [0.0, args.rate] {
                measured.push(session.fanout(&args.fanout.plan(rate)).await?);
            }
            for row in &mut measured {
                row.scenario = format!("{prefix} {}", row.scenario);
            }
            measured.extend(session.chat(&chat, None).await?);
            Ok(measured)
        },
    )
    .await
}
