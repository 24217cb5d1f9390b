//! Measurements on a [`Session`]: a started server with every benchmark connection open.
//! A session takes its measurements one after another on the same connections: idle memory
//! first, then fan-out or chat.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use futures_util::{StreamExt, stream::FuturesUnordered};
use tokio::time::Instant;

use crate::{
    fleet::{Connected, Fleet, FleetOptions},
    procstat::{self, Usage},
    report::Row,
    server::Server,
    wire,
    worker::{ChatPlan, Progress, WorkerStats},
};

/// A server with the benchmark's connections open.
pub(crate) struct Session {
    /// The server under test.
    pub server: Server,
    /// The connections.
    pub fleet: Fleet,
    /// Server usage before any connection.
    pub baseline: Usage,
    /// How connecting went.
    pub connected: Connected,
    /// Fan-out messages published so far in this session (successfully).
    published: u64,
}

impl Session {
    /// Takes the baseline once the server has settled, then opens `conns` connections and
    /// lets the server settle again.
    pub(crate) async fn open(
        server: Server,
        options: &FleetOptions,
        conns: u64,
        settle: Duration,
    ) -> anyhow::Result<Self> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let baseline = server.usage()?;
        let mut fleet = Fleet::spawn(options, server.worker_kind(), &server.addrs(), conns).await?;
        // Generous: about 2,000 connections a second is typical here.
        let within = Duration::from_secs(60 + conns / 200);
        let connected = match fleet.connect(within).await {
            Ok(c) => c,
            Err(e) => {
                let tail = server.log_tail();
                let _ = fleet.quit().await;
                let _ = server.stop().await;
                return Err(e.context(format!("server log:\n{tail}")));
            }
        };
        eprintln!(
            "{}: {} connections open in {:.1} s ({} failed{})",
            server.name(),
            connected.ok,
            connected.secs,
            connected.failed,
            connected
                .first_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default(),
        );
        tokio::time::sleep(settle).await;
        Ok(Self {
            server,
            fleet,
            baseline,
            connected,
            published: 0,
        })
    }

    /// Closes the connections and stops the server.
    pub(crate) async fn close(self) -> anyhow::Result<()> {
        self.fleet.quit().await?;
        self.server.stop().await
    }

    fn row(&self, scenario: &str) -> Row {
        Row {
            scenario: scenario.into(),
            server: self.server.name().into(),
            conns: self.connected.ok,
            ..Default::default()
        }
    }

    /// Memory held by the open, idle connections.
    pub(crate) fn idle(&self) -> anyhow::Result<Row> {
        let now = self.server.usage()?;
        let mut row = self.row("idle");
        row.set_memory(&self.baseline, &now);
        row.cpu_secs = now.cpu_secs - self.baseline.cpu_secs;
        if self.connected.failed > 0 {
            row.note = format!("{} connections failed", self.connected.failed);
        }
        Ok(row)
    }

    /// Fan-out: publishes for `plan.duration` after a warm-up, then waits for every open
    /// connection to have received everything (or `plan.drain`).
    pub(crate) async fn fanout(&mut self, plan: &FanoutPlan) -> anyhow::Result<Row> {
        let publisher = self.server.publisher(plan.pad)?;
        self.fleet.reset().await?;
        let warmup = self.publish(&publisher, 0, plan.warmup, plan).await?;
        self.drained(plan.drain).await;
        let before = self.mark()?;
        let open_before = before.progress.open;
        let t0 = wire::now_us();
        let burst = self.publish(&publisher, 1, plan.duration, plan).await?;
        let drained = self.drained(plan.drain).await;
        let after = self.mark()?;
        let stats = self.fleet.stats().await?;
        let label = match plan.rate {
            r if r > 0.0 => format!("fanout {r}/s"),
            _ => "fanout max".to_owned(),
        };
        let mut row = self.row(&label);
        row.conns = open_before;
        row.sent = burst.published;
        row.deliveries = stats.received.get(1).copied().unwrap_or(0);
        row.lost = (burst.published * open_before).saturating_sub(row.deliveries);
        row.errors = stats.error_total() + stats.closed_total() + burst.failed + warmup.failed;
        let secs = stats.last_rx_us.saturating_sub(t0) as f64 / 1e6;
        row.rate = if secs > 0.0 {
            row.deliveries as f64 / secs
        } else {
            0.0
        };
        if let Some(h) = stats.latency.get(1) {
            row.set_latency(h);
        }
        after.fill(&before, &self.baseline, &mut row);
        row.note = notes(&stats, &[burst.first_failure, warmup.first_failure]);
        if !drained {
            row.note += &format!(" not drained within {:?};", plan.drain);
        }
        Ok(row)
    }

    /// Per-user push: publishes pushes to random single users (no `tenant_id`) at
    /// `plan.rate` for `plan.duration` after a warm-up, then waits until each has arrived (or
    /// `plan.drain`). Every connection is its own user, so one push is one delivery.
    pub(crate) async fn push(&mut self, plan: &FanoutPlan) -> anyhow::Result<Row> {
        let publisher = self
            .server
            .user_publisher(self.connected.ok + self.connected.failed)?;
        self.fleet.reset().await?;
        let warmup = self.publish(&publisher, 0, plan.warmup, plan).await?;
        let before = self.mark()?;
        let t0 = wire::now_us();
        let burst = self.publish(&publisher, 1, plan.duration, plan).await?;
        let expected = warmup.published + burst.published;
        let drained = self
            .fleet
            .wait_for(plan.drain, |p| p.received >= expected)
            .await;
        let after = self.mark()?;
        let stats = self.fleet.stats().await?;
        let mut row = self.row(&format!("push {}/s", plan.rate));
        row.conns = before.progress.open;
        row.sent = burst.published;
        row.deliveries = stats.received.get(1).copied().unwrap_or(0);
        row.lost = row.sent.saturating_sub(row.deliveries);
        row.errors = stats.error_total() + stats.closed_total() + burst.failed + warmup.failed;
        let secs = stats.last_rx_us.saturating_sub(t0) as f64 / 1e6;
        row.rate = if secs > 0.0 {
            row.deliveries as f64 / secs
        } else {
            0.0
        };
        if let Some(h) = stats.latency.get(1) {
            row.set_latency(h);
        }
        after.fill(&before, &self.baseline, &mut row);
        row.note = notes(&stats, &[burst.first_failure, warmup.first_failure]);
        if self.connected.failed > 0 {
            row.note += &format!(" {} users without a connection;", self.connected.failed);
        }
        if !drained {
            row.note += &format!(" not drained within {:?};", plan.drain);
        }
        Ok(row)
    }

    /// Publishes one fan-out message with `publisher` (phase 0, not measured) and waits until
    /// every open connection has it; or pushes one message to one user and waits for it. Opens
    /// the publisher's HTTP connection before a measurement starts.
    pub(crate) async fn warm_up(
        &mut self,
        publisher: &crate::server::Publisher,
        within: Duration,
    ) -> anyhow::Result<()> {
        publisher.publish(0).await?;
        let arrived = match publisher.fans_out() {
            true => {
                self.published += 1;
                self.drained(within).await
            }
            false => self.fleet.wait_for(within, |p| p.received >= 1).await,
        };
        anyhow::ensure!(
            arrived,
            "the warm-up message did not arrive within {within:?}"
        );
        Ok(())
    }

    /// Publishes `count` fan-out messages one at a time: each once every open connection has
    /// received the one before (so every session has one frame per wake, as at low rates).
    pub(crate) async fn fanout_one_by_one(
        &mut self,
        publisher: &crate::server::Publisher,
        count: u64,
        within: Duration,
    ) -> anyhow::Result<Counted> {
        self.fleet.reset().await?;
        let deadline = Instant::now() + within;
        let mut failed = 0;
        for _ in 0..count {
            match publisher.publish(1).await {
                Ok(()) => self.published += 1,
                Err(_) => failed += 1,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(
                self.drained(left).await,
                "fan-out not delivered within {within:?}"
            );
        }
        self.counted(count - failed, failed).await
    }

    /// Pushes `count` messages to random single users with `publisher`, `concurrency`
    /// requests in flight, and waits until every one has arrived.
    pub(crate) async fn push_count(
        &mut self,
        publisher: &crate::server::Publisher,
        count: u64,
        concurrency: usize,
        within: Duration,
    ) -> anyhow::Result<Counted> {
        self.fleet.reset().await?;
        let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..count)
            .map(|_| publisher.publish(1))
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let failed = results.iter().filter(|r| r.is_err()).count() as u64;
        let sent = count - failed;
        anyhow::ensure!(
            self.fleet.wait_for(within, |p| p.received >= sent).await,
            "pushes not delivered within {within:?}"
        );
        self.counted(sent, failed).await
    }

    /// Starts chat through `demo-chat` at `rate` per connection: `warm` of warm-up (phase 1),
    /// then `measured` (phase 2). Returns when the measured phase starts and when it ends.
    pub(crate) async fn start_chat(
        &mut self,
        rate: f64,
        warm: Duration,
        measured: Duration,
    ) -> anyhow::Result<(Instant, Instant)> {
        self.fleet.reset().await?;
        let start = wire::now_us() + 500_000;
        let measured_from = start + warm.as_micros() as u64;
        let end = measured_from + measured.as_micros() as u64;
        self.fleet
            .chat(ChatPlan {
                start_at_us: start,
                phase_starts_us: vec![start, measured_from],
                end_at_us: end,
                rate,
                users: self.connected.ok + self.connected.failed,
            })
            .await?;
        Ok((wire::instant_at(measured_from), wire::instant_at(end)))
    }

    /// After [`Session::start_chat`]'s end: waits until every message has arrived and
    /// counts the measured phase's.
    pub(crate) async fn finish_chat(&mut self, within: Duration) -> anyhow::Result<Counted> {
        anyhow::ensure!(
            self.fleet
                .wait_for(within, |p| p.received + p.errors >= p.sent)
                .await,
            "chat not delivered within {within:?}"
        );
        let stats = self.fleet.stats().await?;
        Ok(Counted {
            sent: stats.sent.get(2).copied().unwrap_or(0),
            deliveries: stats.received.get(2).copied().unwrap_or(0),
            errors: stats.error_total() + stats.closed_total(),
            note: notes(&stats, &[]),
        })
    }

    async fn counted(&mut self, sent: u64, failed: u64) -> anyhow::Result<Counted> {
        let stats = self.fleet.stats().await?;
        Ok(Counted {
            sent,
            deliveries: stats.received.iter().sum(),
            errors: failed + stats.error_total() + stats.closed_total(),
            note: notes(&stats, &[]),
        })
    }

    /// Whether every open connection has received every message published so far.
    async fn drained(&self, within: Duration) -> bool {
        let published = self.published;
        self.fleet
            .wait_for(within, |p| p.open == 0 || p.min_received >= published)
            .await
    }

    /// Publishes with `phase` for `duration`: at `plan.rate` messages per second (open loop),
    /// or, at rate 0, as fast as deliveries keep up (at most `plan.window` messages ahead of
    /// the slowest connection, `plan.publishers` requests in flight).
    async fn publish(
        &mut self,
        publisher: &crate::server::Publisher,
        phase: u8,
        duration: Duration,
        plan: &FanoutPlan,
    ) -> anyhow::Result<Burst> {
        let mut burst = Burst::default();
        let start = Instant::now();
        let deadline = start + duration;
        let period = (plan.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / plan.rate));
        let mut next_at = start;
        let mut inflight = FuturesUnordered::new();
        // Only fan-out messages count towards what every connection should receive.
        let fans_out = publisher.fans_out();
        let mut others = 0;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let room = match period {
                Some(_) => next_at <= now,
                None => {
                    let p: Progress = self.fleet.progress();
                    self.published.saturating_sub(p.min_received) < plan.window
                }
            };
            if room && inflight.len() < plan.publishers {
                inflight.push(publisher.publish(phase));
                if fans_out {
                    self.published += 1;
                }
                burst.published += 1;
                if let Some(period) = period {
                    next_at += period;
                }
                continue;
            }
            let wake = match period {
                Some(_) => next_at.min(deadline),
                None => deadline,
            };
            tokio::select! {
                Some(result) = inflight.next(), if !inflight.is_empty() => {
                    let published = if fans_out { &mut self.published } else { &mut others };
                    outcome(result, &mut burst, published);
                }
                () = self.fleet.changed(), if period.is_none() => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        while let Some(result) = inflight.next().await {
            let published = if fans_out {
                &mut self.published
            } else {
                &mut others
            };
            outcome(result, &mut burst, published);
        }
        Ok(burst)
    }

    /// Chat through `demo-chat`: every connection sends `plan.rate` messages a second to random
    /// peers. Phase 0 is a warm-up; one row per later phase. `during` runs alongside phase `i`
    /// when given (the reload scenario swaps the plugin file then).
    pub(crate) async fn chat(
        &mut self,
        plan: &ChatRun,
        mut during: Option<(usize, &mut Swapper)>,
    ) -> anyhow::Result<Vec<Row>> {
        self.fleet.reset().await?;
        let start = wire::now_us() + 1_000_000;
        let mut boundaries = vec![start + plan.warmup.as_micros() as u64];
        for (_, d) in &plan.phases {
            boundaries.push(boundaries.last().expect("not empty") + d.as_micros() as u64);
        }
        let end = *boundaries.last().expect("not empty");
        self.fleet
            .chat(ChatPlan {
                start_at_us: start,
                phase_starts_us: boundaries[..boundaries.len() - 1].to_vec(),
                end_at_us: end,
                rate: plan.rate,
                users: self.connected.ok + self.connected.failed,
            })
            .await?;
        // Usage, generator CPU and error count at every phase boundary.
        let mut marks = Vec::new();
        for (i, &at) in boundaries.iter().enumerate() {
            let until = wire::instant_at(at);
            if let Some((phase, swapper)) = during.as_mut()
                && *phase == i
            {
                swapper.run_until(until).await?;
            } else {
                tokio::time::sleep_until(until).await;
            }
            marks.push(self.mark()?);
        }
        // Let what is in flight arrive; what never does is lost.
        let drained = self
            .fleet
            .wait_for(plan.drain, |p| p.received + p.errors >= p.sent)
            .await;
        let last = self.mark()?;
        let stats = self.fleet.stats().await?;
        let mut rows = Vec::new();
        for (i, (label, duration)) in plan.phases.iter().enumerate() {
            let phase = i + 1;
            let (from, to) = (
                &marks[i],
                if phase == plan.phases.len() {
                    &last
                } else {
                    &marks[i + 1]
                },
            );
            let mut row = self.row(label);
            row.conns = to.progress.open;
            row.sent = stats.sent.get(phase).copied().unwrap_or(0);
            row.deliveries = stats.received.get(phase).copied().unwrap_or(0);
            row.lost = row.sent.saturating_sub(row.deliveries);
            row.errors = to.progress.errors - from.progress.errors;
            row.rate = row.deliveries as f64 / duration.as_secs_f64();
            if let Some(h) = stats.latency.get(phase) {
                row.set_latency(h);
            }
            to.fill(from, &self.baseline, &mut row);
            row.note = notes(&stats, &[]);
            if !drained {
                row.note += &format!(" not drained within {:?};", plan.drain);
            }
            rows.push(row);
        }
        Ok(rows)
    }

    fn mark(&self) -> anyhow::Result<Mark> {
        Ok(Mark {
            usage: self.server.usage()?,
            client_cpu: self.fleet.cpu_secs()
                + procstat::cpu_secs(std::process::id()).unwrap_or(0.0),
            machine_cpu: procstat::machine_busy_secs(),
            progress: self.fleet.progress(),
        })
    }
}

/// Accounts for one finished publish request.
fn outcome(result: anyhow::Result<()>, burst: &mut Burst, published: &mut u64) {
    if let Err(e) = result {
        // Not published: it must not count towards what connections should receive.
        *published = published.saturating_sub(1);
        burst.published -= 1;
        burst.failed += 1;
        burst.first_failure.get_or_insert(format!("{e:#}"));
    }
}

/// Counters at the start or end of a measurement.
struct Mark {
    /// The server's memory and CPU.
    usage: Usage,
    /// CPU of the load generator (workers and this process).
    client_cpu: f64,
    /// Busy CPU of the whole machine.
    machine_cpu: f64,
    /// The workers' counters.
    progress: Progress,
}

impl Mark {
    /// Fills the memory and CPU columns of `row` for the span from `start` to this mark.
    fn fill(&self, start: &Mark, baseline: &Usage, row: &mut Row) {
        row.set_memory(baseline, &self.usage);
        row.set_cpu(&start.usage, &self.usage);
        row.client_cpu_secs = self.client_cpu - start.client_cpu;
        row.other_cpu_secs =
            ((self.machine_cpu - start.machine_cpu) - row.cpu_secs - row.client_cpu_secs).max(0.0);
    }
}

/// Error codes, close codes and other oddities, for a row's note.
fn notes(stats: &WorkerStats, failures: &[Option<String>]) -> String {
    let mut note = String::new();
    if !stats.errors.is_empty() {
        note += &format!(" error envelopes {:?};", stats.errors);
    }
    if !stats.closed.is_empty() {
        note += &format!(" closed {:?};", stats.closed);
    }
    if stats.unmatched > 0 {
        note += &format!(" {} unexpected frames;", stats.unmatched);
    }
    for f in failures.iter().flatten() {
        note += &format!(" publish failed: {f};");
    }
    note.trim().to_owned()
}

/// How to run a fan-out.
#[derive(Debug, Clone)]
pub(crate) struct FanoutPlan {
    /// Messages per second; 0 for as fast as deliveries keep up.
    pub rate: f64,
    /// Measured publishing time.
    pub duration: Duration,
    /// Publishing before the measurement.
    pub warmup: Duration,
    /// Time allowed for the last messages to arrive.
    pub drain: Duration,
    /// At rate 0: messages published ahead of the slowest connection at most.
    pub window: u64,
    /// Publish requests in flight at most.
    pub publishers: usize,
    /// Padding bytes per message.
    pub pad: usize,
}

/// What a count-driven workload did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counted {
    /// Messages sent (published, pushed, or sent by chat clients).
    pub sent: u64,
    /// Stamped frames received.
    pub deliveries: u64,
    /// Failed publishes, error envelopes and closed connections.
    pub errors: u64,
    /// Error codes and close codes, if any.
    pub note: String,
}

/// Messages one publishing phase sent.
#[derive(Debug, Default)]
struct Burst {
    published: u64,
    failed: u64,
    first_failure: Option<String>,
}

/// How to run a chat.
#[derive(Debug, Clone)]
pub(crate) struct ChatRun {
    /// Messages per second per connection.
    pub rate: f64,
    /// Sending before the measured phases.
    pub warmup: Duration,
    /// Measured phases: the row label and how long each lasts.
    pub phases: Vec<(String, Duration)>,
    /// Time allowed for the last messages to arrive.
    pub drain: Duration,
}

/// Replaces a plugin file at a fixed interval with alternating copies: the original and one
/// with a custom section appended (same code, different bytes, so the host reloads it).
pub(crate) struct Swapper {
    /// The plugin file in the host's plugins folder.
    target: PathBuf,
    /// Where the next version is written before it is renamed over `target` (same file
    /// system, outside the watched folder), so the host never reads a half-written file.
    staging: PathBuf,
    /// The two versions.
    versions: [Vec<u8>; 2],
    /// Interval between swaps.
    every: Duration,
    /// Swaps done.
    pub swaps: u64,
}

impl Swapper {
    /// Swaps `plugins_dir/file_name` every `every`, staging in `staging_dir`.
    pub(crate) fn new(
        plugins_dir: &Path,
        file_name: &str,
        staging_dir: &Path,
        every: Duration,
    ) -> anyhow::Result<Self> {
        let target = plugins_dir.join(file_name);
        let original =
            std::fs::read(&target).with_context(|| format!("reading {}", target.display()))?;
        let mut other = original.clone();
        other.extend(custom_section("switchboard-bench", b"reload copy"));
        Ok(Self {
            target,
            staging: staging_dir.join(format!("{file_name}.next")),
            versions: [original, other],
            every,
            swaps: 0,
        })
    }

    /// Swaps at every interval until `until`.
    pub(crate) async fn run_until(&mut self, until: Instant) -> anyhow::Result<()> {
        let mut next = Instant::now();
        while next < until {
            tokio::time::sleep_until(next).await;
            self.swaps += 1;
            let version = &self.versions[(self.swaps % 2) as usize];
            std::fs::write(&self.staging, version)?;
            std::fs::rename(&self.staging, &self.target)?;
            next += self.every;
        }
        tokio::time::sleep_until(until).await;
        Ok(())
    }
}

/// A WebAssembly custom section (id 0): LEB128 size, LEB128 name length, name, payload.
/// Components accept custom sections anywhere at the top level.
fn custom_section(name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut section = vec![0];
    leb128(body.len(), &mut section);
    section.extend(body);
    section
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_section_layout() {
        assert_eq!(custom_section("ab", b"x"), vec![0, 4, 2, b'a', b'b', b'x']);
        let long = custom_section("n", &[0; 200]);
        assert_eq!(&long[..3], &[0, 202, 1]);
    }
}
