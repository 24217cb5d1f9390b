//! A load-generating child process (`switchboard-bench worker`, started by [`crate::fleet`]).
//!
//! One process may hold at most 20,000 open files here, so the connections of a run are
//! spread over several workers. A worker reads its [`Spec`] and then [`Command`]s from stdin,
//! one JSON object per line, and writes [`Event`]s to stdout the same way. It runs on one
//! thread: the machine's two cores are shared with the server under test.
//!
//! Every connection counts the stamped frames it receives and records their latency (receive
//! time minus the stamp's send time) in the histogram of the stamp's phase. In a chat plan each
//! connection also sends to random peers at a fixed rate.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    sync::{Semaphore, mpsc, watch},
};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    histogram::{Histogram, Snapshot},
    wire::{self, Ws},
};

/// Phases a run may have (e.g. warm-up, steady, reload). A stamp names its phase.
pub(crate) const PHASES: usize = 4;

/// What a worker connects to, sent once as its first line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Spec {
    /// Which server and how to address it.
    pub server: ServerKind,
    /// Server addresses; connection `i` goes to `targets[i % len]`.
    pub targets: Vec<SocketAddr>,
    /// Global index of this worker's first connection (user ids are index + 1).
    pub first: u64,
    /// Connections this worker holds.
    pub count: u64,
    /// Loopback source addresses; connection `i` binds `sources[i % len]`.
    pub sources: Vec<Ipv4Addr>,
    /// Handshakes in flight at once.
    pub connect_concurrency: usize,
    /// Time one attempt to connect may take, in milliseconds.
    pub connect_timeout_ms: u64,
}

/// The server a worker talks to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum ServerKind {
    /// A Switchboard host: `/ws?token=...`, a session greeting first.
    Switchboard {
        /// The HS256 secret to sign tokens with.
        secret: String,
    },
    /// nginx + nchan: `/sub/<channel>`.
    Nchan {
        /// One channel per connection (`u<user id>`) rather than one shared channel (`all`).
        channel_per_connection: bool,
    },
}

/// What the parent asks of a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub(crate) enum Command {
    /// Open every connection; answered by [`Event::Connected`].
    Connect,
    /// Start sending chat messages.
    Chat(ChatPlan),
    /// Answered by [`Event::Stats`].
    Stats,
    /// Zeroes what [`Event::Stats`] reports, so the next measurement starts afresh. The
    /// per-connection counts behind [`Progress::min_received`] keep counting.
    Reset,
    /// Close everything and exit.
    Quit,
}

/// Every connection sends `rate` messages per second to random peers from `start_at_us` until
/// `end_at_us` (wall clock, µs), each at its own phase offset so sends are spread evenly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChatPlan {
    /// When sending starts.
    pub start_at_us: u64,
    /// When phase `p + 1` starts; before the first entry it is phase 0.
    pub phase_starts_us: Vec<u64>,
    /// When sending stops.
    pub end_at_us: u64,
    /// Messages per second per connection.
    pub rate: f64,
    /// Peers are users `1..=users`.
    pub users: u64,
}

impl ChatPlan {
    fn phase_at(&self, us: u64) -> u8 {
        let p = self.phase_starts_us.iter().filter(|&&s| us >= s).count();
        p.min(PHASES - 1) as u8
    }
}

/// What a worker reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
    /// Every connection was attempted.
    Connected {
        /// Connections open (for Switchboard: greeted with their session).
        ok: u64,
        /// Connections that failed after retries.
        failed: u64,
        /// Why the first failure failed.
        first_error: Option<String>,
        /// Time it took.
        secs: f64,
    },
    /// Counters, sent when they change (at most every 10 ms) once connected.
    Progress(Progress),
    /// Everything measured so far.
    Stats(WorkerStats),
}

/// Running counters of a worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// Messages sent (chat).
    pub sent: u64,
    /// Stamped frames received.
    pub received: u64,
    /// The fewest stamped frames any open connection has received.
    pub min_received: u64,
    /// Connections still open.
    pub open: u64,
    /// Error envelopes received.
    pub errors: u64,
}

/// Everything a worker measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WorkerStats {
    /// Messages sent, by phase.
    pub sent: Vec<u64>,
    /// Stamped frames received, by phase of their stamp.
    pub received: Vec<u64>,
    /// Latency (µs) of received frames, by phase.
    pub latency: Vec<Snapshot>,
    /// Error envelopes received, by code.
    pub errors: BTreeMap<String, u64>,
    /// Connections closed by the server or by an error, by close code or reason.
    pub closed: BTreeMap<String, u64>,
    /// Frames that were neither stamped nor errors.
    pub unmatched: u64,
    /// When the last stamped frame arrived (µs since the epoch).
    pub last_rx_us: u64,
}

impl WorkerStats {
    /// Adds another worker's figures.
    pub(crate) fn merge(&mut self, other: &WorkerStats) {
        let grow = |v: &mut Vec<u64>, o: &Vec<u64>| {
            v.resize(v.len().max(o.len()), 0);
            v.iter_mut().zip(o).for_each(|(a, b)| *a += b);
        };
        grow(&mut self.sent, &other.sent);
        grow(&mut self.received, &other.received);
        self.latency.resize(
            self.latency.len().max(other.latency.len()),
            Snapshot::default(),
        );
        self.latency
            .iter_mut()
            .zip(&other.latency)
            .for_each(|(a, b)| a.merge(b));
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.closed {
            *self.closed.entry(k.clone()).or_default() += v;
        }
        self.unmatched += other.unmatched;
        self.last_rx_us = self.last_rx_us.max(other.last_rx_us);
    }

    /// Error envelopes of every code.
    pub(crate) fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Connections that closed.
    pub(crate) fn closed_total(&self) -> u64 {
        self.closed.values().sum()
    }
}

/// State every connection task of the worker shares.
struct Shared {
    /// Stamped frames received, per connection.
    received: Vec<AtomicU64>,
    /// Whether each connection is open.
    open: Vec<AtomicBool>,
    sent: [AtomicU64; PHASES],
    received_by_phase: [AtomicU64; PHASES],
    latency: [Histogram; PHASES],
    errors: Mutex<BTreeMap<String, u64>>,
    error_total: AtomicU64,
    closed: Mutex<BTreeMap<String, u64>>,
    unmatched: AtomicU64,
    last_rx_us: AtomicU64,
}

impl Shared {
    fn new(count: usize) -> Self {
        Self {
            received: (0..count).map(|_| AtomicU64::new(0)).collect(),
            open: (0..count).map(|_| AtomicBool::new(false)).collect(),
            sent: Default::default(),
            received_by_phase: Default::default(),
            latency: Default::default(),
            errors: Default::default(),
            error_total: AtomicU64::new(0),
            closed: Default::default(),
            unmatched: AtomicU64::new(0),
            last_rx_us: AtomicU64::new(0),
        }
    }

    fn on_text(&self, local: usize, text: &str) {
        if let Some(code) = wire::error_code(text) {
            *self.errors.lock().entry(code).or_default() += 1;
            self.error_total.fetch_add(1, Ordering::Relaxed);
        } else if let Some((ts, phase)) = wire::read_stamp(text) {
            let now = wire::now_us();
            let phase = usize::from(phase).min(PHASES - 1);
            self.latency[phase].record(now.saturating_sub(ts));
            self.received_by_phase[phase].fetch_add(1, Ordering::Relaxed);
            self.received[local].fetch_add(1, Ordering::Relaxed);
            self.last_rx_us.fetch_max(now, Ordering::Relaxed);
        } else {
            self.unmatched.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_closed(&self, local: usize, why: String) {
        self.open[local].store(false, Ordering::Relaxed);
        *self.closed.lock().entry(why).or_default() += 1;
    }

    fn reset(&self) {
        for a in self.sent.iter().chain(&self.received_by_phase) {
            a.store(0, Ordering::Relaxed);
        }
        self.latency.iter().for_each(Histogram::reset);
        self.errors.lock().clear();
        self.closed.lock().clear();
        self.unmatched.store(0, Ordering::Relaxed);
        self.last_rx_us.store(0, Ordering::Relaxed);
    }

    fn progress(&self) -> Progress {
        let mut open = 0;
        let mut min_received = u64::MAX;
        for (received, is_open) in self.received.iter().zip(&self.open) {
            if is_open.load(Ordering::Relaxed) {
                open += 1;
                min_received = min_received.min(received.load(Ordering::Relaxed));
            }
        }
        let sum = |a: &[AtomicU64]| a.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        Progress {
            sent: sum(&self.sent),
            received: sum(&self.received_by_phase),
            min_received: if open == 0 { 0 } else { min_received },
            open,
            errors: self.error_total.load(Ordering::Relaxed),
        }
    }

    fn stats(&self) -> WorkerStats {
        let load = |a: &[AtomicU64]| a.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        WorkerStats {
            sent: load(&self.sent),
            received: load(&self.received_by_phase),
            latency: self.latency.iter().map(Histogram::snapshot).collect(),
            errors: self.errors.lock().clone(),
            closed: self.closed.lock().clone(),
            unmatched: self.unmatched.load(Ordering::Relaxed),
            last_rx_us: self.last_rx_us.load(Ordering::Relaxed),
        }
    }
}

/// A small, fast, seedable generator for choosing chat peers and send offsets.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The `switchboard-bench worker` entry point.
pub(crate) fn run() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let spec: Spec = serde_json::from_str(&lines.next_line().await?.context("no spec on stdin")?)
        .context("reading the spec")?;
    let spec = Arc::new(spec);
    let (events, mut outbox) = mpsc::unbounded_channel::<Event>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(event) = outbox.recv().await {
            let mut line = serde_json::to_vec(&event).expect("events serialize");
            line.push(b'\n');
            if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                return;
            }
        }
    });
    let shared = Arc::new(Shared::new(spec.count as usize));
    let (plan_tx, plan_rx) = watch::channel::<Option<Arc<ChatPlan>>>(None);
    // Ends when stdin closes (the parent is gone) or on `quit`.
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Command>(&line).context("reading a command")? {
            Command::Connect => {
                let connected = connect_all(&spec, &shared, &plan_rx).await;
                let _ = events.send(connected);
                tokio::spawn(report_progress(shared.clone(), events.clone()));
            }
            Command::Chat(plan) => {
                let _ = plan_tx.send(Some(Arc::new(plan)));
            }
            Command::Stats => {
                let _ = events.send(Event::Stats(shared.stats()));
            }
            Command::Reset => shared.reset(),
            Command::Quit => break,
        }
    }
    drop(events);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    Ok(())
}

/// Sends [`Event::Progress`] whenever the counters change, at most every 10 ms, and at
/// least every 250 ms.
async fn report_progress(shared: Arc<Shared>, events: mpsc::UnboundedSender<Event>) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Progress::default();
    let mut last_sent = Instant::now();
    loop {
        tick.tick().await;
        let now = shared.progress();
        if now != last || last_sent.elapsed() >= Duration::from_millis(250) {
            if events.send(Event::Progress(now)).is_err() {
                return;
            }
            last = now;
            last_sent = Instant::now();
        }
    }
}

/// Opens every connection of the spec (`connect_concurrency` at a time, each with up to three
/// attempts) and leaves each one running in a task of its own.
async fn connect_all(
    spec: &Arc<Spec>,
    shared: &Arc<Shared>,
    plan: &watch::Receiver<Option<Arc<ChatPlan>>>,
) -> Event {
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(spec.connect_concurrency.max(1)));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    for local in 0..spec.count as usize {
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let (spec, shared, plan, done) =
            (spec.clone(), shared.clone(), plan.clone(), done_tx.clone());
        tokio::spawn(async move {
            let global = spec.first + local as u64;
            let opened = open(&spec, global).await;
            drop(permit);
            match opened {
                Ok(ws) => {
                    shared.open[local].store(true, Ordering::Relaxed);
                    let _ = done.send(Ok(()));
                    drop(done);
                    drive(ws, local, global + 1, &shared, plan).await;
                }
                Err(e) => {
                    let _ = done.send(Err(format!("{e:#}")));
                }
            }
        });
    }
    drop(done_tx);
    let (mut ok, mut failed, mut first_error) = (0, 0, None);
    while ok + failed < spec.count
        && let Some(result) = done_rx.recv().await
    {
        match result {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    Event::Connected {
        ok,
        failed,
        first_error,
        secs: started.elapsed().as_secs_f64(),
    }
}

/// Opens connection `global` (user `global + 1`), with up to three attempts. A Switchboard
/// connection counts as open once its session greeting has arrived.
async fn open(spec: &Spec, global: u64) -> anyhow::Result<Ws> {
    let server = spec.targets[(global % spec.targets.len() as u64) as usize];
    let source = spec.sources[(global % spec.sources.len() as u64) as usize];
    let user = global + 1;
    let url = match &spec.server {
        ServerKind::Switchboard { secret } => {
            format!("ws://{server}/ws?token={}", wire::token(secret, user)?)
        }
        ServerKind::Nchan {
            channel_per_connection: true,
        } => format!("ws://{server}/sub/u{user}"),
        ServerKind::Nchan { .. } => format!("ws://{server}/sub/all"),
    };
    let timeout = Duration::from_millis(spec.connect_timeout_ms);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            let mut ws = wire::connect(source, server, &url, timeout).await?;
            if let ServerKind::Switchboard { .. } = spec.server {
                let greeting = tokio::time::timeout(timeout, ws.next())
                    .await
                    .context("no session greeting")?;
                match greeting {
                    Some(Ok(Message::Text(t))) if t.as_str().contains(r#""type":"session""#) => {}
                    other => anyhow::bail!("expected the session greeting, got {other:?}"),
                }
            }
            anyhow::Ok(ws)
        }
        .await;
        match result {
            Ok(ws) => return Ok(ws),
            Err(e) if attempt >= 3 => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(250 * attempt)).await,
        }
    }
}

/// What ends a connection's loop: the close code or reason.
type Closed = String;

/// Handles one frame; `Err` when the connection is over.
fn on_frame(
    frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    local: usize,
    shared: &Shared,
) -> Result<(), Closed> {
    match frame {
        Some(Ok(Message::Text(text))) => {
            shared.on_text(local, text.as_str());
            Ok(())
        }
        Some(Ok(Message::Close(frame))) => {
            Err(frame.map_or_else(|| "close".to_owned(), |f| u16::from(f.code).to_string()))
        }
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(format!("error: {e}")),
        None => Err("eof".to_owned()),
    }
}

/// One connection: counts what arrives; once a chat plan comes, also sends on schedule.
async fn drive(
    mut ws: Ws,
    local: usize,
    user: u64,
    shared: &Shared,
    plan_rx: watch::Receiver<Option<Arc<ChatPlan>>>,
) {
    let why = match receive(&mut ws, local, shared, plan_rx).await {
        Ok(plan) => match chat(&mut ws, local, user, shared, &plan).await {
            Ok(()) => receive_only(&mut ws, local, shared).await,
            Err(why) => why,
        },
        Err(why) => why,
    };
    shared.on_closed(local, why);
}

/// Receives until a chat plan with sending arrives.
async fn receive(
    ws: &mut Ws,
    local: usize,
    shared: &Shared,
    mut plan_rx: watch::Receiver<Option<Arc<ChatPlan>>>,
) -> Result<Arc<ChatPlan>, Closed> {
    loop {
        tokio::select! {
            frame = ws.next() => on_frame(frame, local, shared)?,
            changed = plan_rx.changed() => {
                if changed.is_err() {
                    return Err(receive_only(ws, local, shared).await);
                }
                let plan = plan_rx.borrow_and_update().clone();
                if let Some(plan) = plan && plan.rate > 0.0 && plan.users > 1 {
                    return Ok(plan);
                }
            }
        }
    }
}

/// Receives until the connection ends.
async fn receive_only(ws: &mut Ws, local: usize, shared: &Shared) -> Closed {
    loop {
        if let Err(why) = on_frame(ws.next().await, local, shared) {
            return why;
        }
    }
}

/// Sends to random peers at the plan's rate, from a random offset within the first period,
/// receiving all the while, until the plan ends.
async fn chat(
    ws: &mut Ws,
    local: usize,
    user: u64,
    shared: &Shared,
    plan: &ChatPlan,
) -> Result<(), Closed> {
    let mut rng = XorShift::new(user);
    let period_us = ((1e6 / plan.rate) as u64).max(1);
    let mut next_us = plan.start_at_us + rng.next() % period_us;
    let wake = tokio::time::sleep_until(wire::instant_at(next_us));
    tokio::pin!(wake);
    while next_us < plan.end_at_us {
        tokio::select! {
            frame = ws.next() => on_frame(frame, local, shared)?,
            () = &mut wake => {
                let mut to = 1 + rng.next() % (plan.users - 1);
                if to >= user {
                    to += 1;
                }
                let phase = plan.phase_at(wire::now_us());
                if let Err(e) = ws.send(Message::text(wire::chat_frame(phase, to))).await {
                    return Err(format!("send error: {e}"));
                }
                shared.sent[usize::from(phase)].fetch_add(1, Ordering::Relaxed);
                next_us += period_us;
                wake.as_mut().reset(wire::instant_at(next_us));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_the_plan() {
        let plan = ChatPlan {
            start_at_us: 0,
            phase_starts_us: vec![100, 200],
            end_at_us: 300,
            rate: 1.0,
            users: 2,
        };
        assert_eq!(plan.phase_at(50), 0);
        assert_eq!(plan.phase_at(100), 1);
        assert_eq!(plan.phase_at(250), 2);
    }

    #[test]
    fn stats_merge() {
        let mut a = WorkerStats {
            sent: vec![1, 2],
            received: vec![1],
            ..Default::default()
        };
        a.closed.insert("4001".into(), 1);
        let mut b = a.clone();
        b.sent = vec![1, 1, 1];
        b.last_rx_us = 7;
        a.merge(&b);
        assert_eq!(a.sent, vec![2, 3, 1]);
        assert_eq!(a.received, vec![2]);
        assert_eq!(a.closed_total(), 2);
        assert_eq!(a.last_rx_us, 7);
    }
}
