//! The parent's side of the workers: spawning them with their share of the connections,
//! sending commands, following their progress, and merging what they measured.

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use parking_lot::Mutex;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin},
    sync::{Notify, mpsc},
};

use crate::worker::{ChatPlan, Command, Event, Progress, ServerKind, Spec, WorkerStats};

/// How to spread connections over workers.
#[derive(Debug, Clone)]
pub(crate) struct FleetOptions {
    /// Worker processes at least (more are used when a worker would exceed `per_worker`).
    pub min_workers: usize,
    /// Connections one worker holds at most (one process may hold 20,000 open files).
    pub per_worker: u64,
    /// Loopback source addresses: `127.0.0.1` up to `127.0.0.<sources>`.
    pub sources: u8,
    /// Handshakes in flight per worker.
    pub connect_concurrency: usize,
    /// Time one connection attempt may take.
    pub connect_timeout: Duration,
}

/// One worker process.
struct Worker {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    /// Events other than progress.
    events: mpsc::UnboundedReceiver<Event>,
    /// The latest progress.
    progress: Arc<Mutex<Progress>>,
}

/// The workers of one run.
pub(crate) struct Fleet {
    workers: Vec<Worker>,
    /// Woken whenever any worker reports progress (one waiter: the scenario driving the run).
    changed: Arc<Notify>,
}

/// The outcome of connecting.
#[derive(Debug, Clone, Default)]
pub(crate) struct Connected {
    /// Connections open.
    pub ok: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Why the first failure failed.
    pub first_error: Option<String>,
    /// Time it took, in seconds.
    pub secs: f64,
}

impl Fleet {
    /// Spawns the workers for `conns` connections to `targets`.
    pub(crate) async fn spawn(
        options: &FleetOptions,
        server: ServerKind,
        targets: &[SocketAddr],
        conns: u64,
    ) -> anyhow::Result<Self> {
        let per_worker = options.per_worker.max(1);
        let count = (conns.div_ceil(per_worker) as usize)
            .max(options.min_workers)
            .max(1);
        let sources: Vec<Ipv4Addr> = (1..=options.sources.max(1))
            .map(|i| Ipv4Addr::new(127, 0, 0, i))
            .collect();
        let exe = std::env::current_exe().context("locating switchboard-bench")?;
        let changed = Arc::new(Notify::new());
        let mut workers = Vec::with_capacity(count);
        let mut first = 0;
        for w in 0..count as u64 {
            // Spread evenly: the first `conns % count` workers take one more.
            let share = conns / count as u64 + u64::from(w < conns % count as u64);
            let spec = Spec {
                server: server.clone(),
                targets: targets.to_vec(),
                first,
                count: share,
                sources: sources.clone(),
                connect_concurrency: options.connect_concurrency,
                connect_timeout_ms: options.connect_timeout.as_millis() as u64,
            };
            first += share;
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker")?;
            let pid = child.id().context("worker exited at once")?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let mut line = serde_json::to_vec(&spec)?;
            line.push(b'\n');
            stdin.write_all(&line).await?;
            let progress = Arc::new(Mutex::new(Progress::default()));
            let (tx, events) = mpsc::unbounded_channel();
            tokio::spawn(read_events(stdout, tx, progress.clone(), changed.clone()));
            workers.push(Worker {
                child,
                pid,
                stdin,
                events,
                progress,
            });
        }
        Ok(Self { workers, changed })
    }

    /// Opens every connection; fails if not one opened within `within`.
    pub(crate) async fn connect(&mut self, within: Duration) -> anyhow::Result<Connected> {
        self.send(&Command::Connect).await?;
        let mut total = Connected::default();
        for w in &mut self.workers {
            match next_event(w, within).await? {
                Event::Connected {
                    ok,
                    failed,
                    first_error,
                    secs,
                } => {
                    total.ok += ok;
                    total.failed += failed;
                    total.secs = total.secs.max(secs);
                    if total.first_error.is_none() {
                        total.first_error = first_error;
                    }
                }
                other => bail!("worker {}: expected connected, got {other:?}", w.pid),
            }
        }
        if total.ok == 0 {
            bail!(
                "no connection opened: {}",
                total.first_error.as_deref().unwrap_or("?")
            );
        }
        Ok(total)
    }

    /// Zeroes the workers' measurements (see [`Command::Reset`]).
    pub(crate) async fn reset(&mut self) -> anyhow::Result<()> {
        self.send(&Command::Reset).await
    }

    /// Starts the chat plan on every worker.
    pub(crate) async fn chat(&mut self, plan: ChatPlan) -> anyhow::Result<()> {
        self.send(&Command::Chat(plan)).await
    }

    /// Progress of all workers: sums, and the smallest `min_received` of those with open
    /// connections.
    pub(crate) fn progress(&self) -> Progress {
        let mut total = Progress {
            min_received: u64::MAX,
            ..Default::default()
        };
        for w in &self.workers {
            let p = *w.progress.lock();
            total.sent += p.sent;
            total.received += p.received;
            total.open += p.open;
            total.errors += p.errors;
            if p.open > 0 {
                total.min_received = total.min_received.min(p.min_received);
            }
        }
        if total.open == 0 {
            total.min_received = 0;
        }
        total
    }

    /// Resolves at the next progress report of any worker (or after 50 ms).
    pub(crate) async fn changed(&self) {
        let _ = tokio::time::timeout(Duration::from_millis(50), self.changed.notified()).await;
    }

    /// Waits until `done(progress)` holds or `within` passes; returns whether it held.
    pub(crate) async fn wait_for(
        &self,
        within: Duration,
        done: impl Fn(&Progress) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if done(&self.progress()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            self.changed().await;
        }
    }

    /// Everything the workers measured, merged.
    pub(crate) async fn stats(&mut self) -> anyhow::Result<WorkerStats> {
        self.send(&Command::Stats).await?;
        let mut total = WorkerStats::default();
        for w in &mut self.workers {
            match next_event(w, Duration::from_secs(30)).await? {
                Event::Stats(s) => total.merge(&s),
                other => bail!("worker {}: expected stats, got {other:?}", w.pid),
            }
        }
        Ok(total)
    }

    /// CPU seconds the workers have used.
    pub(crate) fn cpu_secs(&self) -> f64 {
        self.workers
            .iter()
            .filter_map(|w| crate::procstat::cpu_secs(w.pid).ok())
            .sum()
    }

    /// Closes every connection and waits for the workers to exit.
    pub(crate) async fn quit(mut self) -> anyhow::Result<()> {
        let _ = self.send(&Command::Quit).await;
        for w in &mut self.workers {
            if tokio::time::timeout(Duration::from_secs(20), w.child.wait())
                .await
                .is_err()
            {
                w.child.kill().await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, command: &Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(command)?;
        line.push(b'\n');
        for w in &mut self.workers {
            w.stdin
                .write_all(&line)
                .await
                .with_context(|| format!("worker {} is gone", w.pid))?;
            w.stdin.flush().await?;
        }
        Ok(())
    }
}

async fn next_event(w: &mut Worker, within: Duration) -> anyhow::Result<Event> {
    match tokio::time::timeout(within, w.events.recv()).await {
        Ok(Some(event)) => Ok(event),
        Ok(None) => bail!("worker {} exited", w.pid),
        Err(_) => bail!("worker {} did not answer within {within:?}", w.pid),
    }
}

async fn read_events(
    stdout: tokio::process::ChildStdout,
    events: mpsc::UnboundedSender<Event>,
    progress: Arc<Mutex<Progress>>,
    changed: Arc<Notify>,
) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<Event>(&line) {
            Ok(Event::Progress(p)) => {
                *progress.lock() = p;
                changed.notify_one();
            }
            Ok(event) => {
                if events.send(event).is_err() {
                    return;
                }
            }
            Err(e) => eprintln!("worker sent an unreadable line ({e}): {line}"),
        }
    }
}
