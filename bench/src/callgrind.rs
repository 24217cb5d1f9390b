//! `switchboard-bench callgrind`: server instructions per delivery, a figure that does not
//! depend on how busy the machine is.
//!
//! The release host runs under `valgrind --tool=callgrind --instr-atstart=no`: nothing is
//! counted while it starts and the load generator opens its connections over loopback. Then
//! `callgrind_control --instr=on` starts the count, the workload runs to its end (every
//! message delivered), `callgrind_control --dump` writes the count and the profile, and
//! `--instr=off` stops counting before the connections close and the host stops. Startup,
//! connection setup and shutdown are therefore never in the figure.
//!
//! Workloads, each driven by the ordinary load generator:
//! - `fanout`: push-API messages to the benchmark's user type, one at a time, each once every
//!   subscriber has the one before (one frame per session per wake, as at low rates);
//! - `push`: pushes to one random user each, without `tenant_id`, one request at a time;
//! - `chat`: clients sending to random peers through `demo-chat`, after a warm-up.
//!
//! The profile of each run is kept (`<out-dir>/<workload>-<conns>-run<N>.callgrind`) for
//! `callgrind_annotate --inclusive=yes`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    commands::{Common, check_fits, print_machine},
    host::Host,
    scenario::{Counted, Session},
    server::Server,
};

/// Settings that keep timers out of the count: no protocol pings, idle timeouts, token
/// re-checks or plugin folder rescans during a measurement that may last minutes under
/// valgrind.
const QUIET_HOST: [(&str, &str); 4] = [
    ("SWITCHBOARD_SERVER__PING_INTERVAL_SECS", "3600"),
    ("SWITCHBOARD_SERVER__IDLE_TIMEOUT_SECS", "86400"),
    ("SWITCHBOARD_AUTH__RECHECK_INTERVAL_SECS", "86400"),
    ("SWITCHBOARD_PLUGINS__RESCAN_SECS", "86400"),
];

/// A workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Workload {
    /// Push-API messages to every subscriber (the user type), one message at a time.
    Fanout,
    /// Pushes to one random user each, without `tenant_id`.
    Push,
    /// Clients sending to random peers through demo-chat.
    Chat,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Fanout => "fanout",
            Workload::Push => "push",
            Workload::Chat => "chat",
        }
    }
}

/// Arguments of `callgrind`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    common: Common,
    /// Workloads to count (repeatable).
    #[arg(long, value_enum, default_values_t = [Workload::Fanout, Workload::Push])]
    workload: Vec<Workload>,
    /// Connections (repeatable: each workload runs at each count).
    #[arg(long, default_values_t = [300])]
    conns: Vec<u64>,
    /// Fan-out: messages, each to every connection.
    #[arg(long, default_value_t = 50)]
    messages: u64,
    /// Push: pushes, each to one random user.
    #[arg(long, default_value_t = 2_000)]
    pushes: u64,
    /// Chat: messages per second per client.
    #[arg(long, default_value_t = 0.2)]
    chat_rate: f64,
    /// Chat: seconds of sending before the count starts (instances, caches warm).
    #[arg(long, default_value_t = 10)]
    chat_warmup_secs: u64,
    /// Chat: seconds of counted sending.
    #[arg(long, default_value_t = 20)]
    chat_secs: u64,
    /// Where the profiles are kept.
    #[arg(long, default_value = "target/callgrind")]
    out_dir: PathBuf,
    /// The valgrind binary.
    #[arg(long, default_value = "valgrind")]
    valgrind: PathBuf,
    /// The callgrind_control script.
    #[arg(long, default_value = "callgrind_control")]
    callgrind_control: PathBuf,
}

/// One counted run.
struct Counting {
    workload: Workload,
    conns: u64,
    counted: Counted,
    /// Instructions the host executed during the workload.
    instructions: u64,
    profile: PathBuf,
}

impl Counting {
    /// Instructions per message sent (fan-out message, push, chat message).
    fn per_message(&self) -> f64 {
        self.instructions as f64 / self.counted.sent.max(1) as f64
    }

    /// Instructions per delivery (a frame some connection received).
    fn per_delivery(&self) -> f64 {
        self.instructions as f64 / self.counted.deliveries.max(1) as f64
    }
}

/// Runs every workload at every connection count, `--runs` times, and prints the counts.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let c = &args.common;
    for &conns in &args.conns {
        check_fits(conns, 1, "fewer --conns")?;
    }
    which(&args.valgrind, "--version").await?;
    which(&args.callgrind_control, "--version").await?;
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let out_dir = std::fs::canonicalize(&args.out_dir)?;
    print_machine(c);
    let mut done = Vec::new();
    for &workload in &args.workload {
        for &conns in &args.conns {
            for run in 1..=c.runs() {
                let counting = count(&args, &out_dir, workload, conns, run).await?;
                println!("{}", line(&counting));
                done.push(counting);
            }
        }
    }
    println!("\n{}", table(&done));
    Ok(())
}

/// One run: a host under callgrind, `conns` connections, the workload counted.
async fn count(
    args: &Args,
    out_dir: &Path,
    workload: Workload,
    conns: u64,
    run: usize,
) -> anyhow::Result<Counting> {
    let c = &args.common;
    let name = format!("{}-{conns}-run{run}", workload.name());
    let base = out_dir.join(format!("{name}.out"));
    let profile = out_dir.join(format!("{name}.callgrind"));
    let measured = PathBuf::from(format!("{}.1", base.display()));
    for stale in [&base, &measured, &profile] {
        let _ = std::fs::remove_file(stale);
    }
    let mut options = c.host_options()?;
    options.launcher = vec![
        args.valgrind.display().to_string(),
        "--tool=callgrind".into(),
        "--instr-atstart=no".into(),
        format!("--callgrind-out-file={}", base.display()),
    ];
    // Slow under valgrind: starting (compiling plugins) and the graceful shutdown.
    options.ready_within = Duration::from_secs(600);
    options.stop_grace = Duration::from_secs(600);
    let plugins = match workload {
        Workload::Chat => vec![c.plugin("demo-chat")?],
        Workload::Fanout | Workload::Push => Vec::new(),
    };
    let env: Vec<(String, String)> = QUIET_HOST
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let host = Host::start(&options, &plugins, &env).await?;
    let pid = host.pid;
    let server = Server::Switchboard {
        hosts: vec![host],
        secret: c.secret().to_owned(),
        broker: None,
    };
    let mut session = Session::open(server, &c.fleet(), conns, c.settle()).await?;
    let within = Duration::from_secs(600);
    let control = |what: &'static str| callgrind_control(&args.callgrind_control, pid, what);
    let counted = match workload {
        Workload::Fanout => {
            let publisher = session.server.publisher(0)?;
            session.warm_up(&publisher, within).await?;
            control("--instr=on").await?;
            session
                .fanout_one_by_one(&publisher, args.messages, within)
                .await?
        }
        Workload::Push => {
            let users = session.connected.ok + session.connected.failed;
            let publisher = session.server.user_publisher(users)?;
            session.warm_up(&publisher, within).await?;
            control("--instr=on").await?;
            session
                .push_count(&publisher, args.pushes, 1, within)
                .await?
        }
        Workload::Chat => {
            let (from, end) = session
                .start_chat(
                    args.chat_rate,
                    Duration::from_secs(args.chat_warmup_secs),
                    Duration::from_secs(args.chat_secs),
                )
                .await?;
            tokio::time::sleep_until(from).await;
            control("--instr=on").await?;
            tokio::time::sleep_until(end).await;
            session.finish_chat(within).await?
        }
    };
    control("--dump=measured").await?;
    control("--instr=off").await?;
    session.close().await?;
    let instructions = read_total(&measured)?;
    std::fs::rename(&measured, &profile)?;
    // What the host ran after the count stopped (nothing is counted then).
    let _ = std::fs::remove_file(&base);
    Ok(Counting {
        workload,
        conns,
        counted,
        instructions,
        profile,
    })
}

/// Fails with a hint when `program` does not run.
async fn which(program: &Path, arg: &str) -> anyhow::Result<()> {
    let ok = tokio::process::Command::new(program)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !ok {
        bail!(
            "{} does not run (install valgrind: apt-get install valgrind)",
            program.display()
        );
    }
    Ok(())
}

/// `callgrind_control <what> <pid>`, which waits until the host has done it.
async fn callgrind_control(program: &Path, pid: u32, what: &str) -> anyhow::Result<()> {
    let run = tokio::process::Command::new(program)
        .arg(what)
        .arg(pid.to_string())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .with_context(|| format!("callgrind_control {what}: no answer within 120 s"))??;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !text.contains("OK") {
        bail!(
            "callgrind_control {what} {pid} failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The instruction count of a callgrind profile: its `summary:` line (events: `Ir`).
fn read_total(profile: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(profile)
        .with_context(|| format!("reading the profile {}", profile.display()))?;
    summary(&text).with_context(|| format!("no summary line in {}", profile.display()))
}

fn summary(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn line(c: &Counting) -> String {
    format!(
        "{} {} conns: {} sent, {} deliveries, {} errors: {} instructions, {:.0} per message, {:.0} per delivery ({}){}",
        c.workload.name(),
        c.conns,
        c.counted.sent,
        c.counted.deliveries,
        c.counted.errors,
        c.instructions,
        c.per_message(),
        c.per_delivery(),
        c.profile.display(),
        if c.counted.note.is_empty() {
            String::new()
        } else {
            format!("; {}", c.counted.note)
        }
    )
}

/// Every run, then per workload and connection count the spread between runs.
fn table(runs: &[Counting]) -> String {
    let mut out = String::from(
        "| workload | conns | sent | deliveries | errors | host instructions | per message | per delivery |\n|---|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for c in runs {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.0} |\n",
            c.workload.name(),
            c.conns,
            c.counted.sent,
            c.counted.deliveries,
            c.counted.errors,
            c.instructions,
            c.per_message(),
            c.per_delivery(),
        );
    }
    let mut groups: Vec<(Workload, u64)> = runs.iter().map(|c| (c.workload, c.conns)).collect();
    groups.dedup();
    for (workload, conns) in groups {
        let per: Vec<f64> = runs
            .iter()
            .filter(|c| c.workload == workload && c.conns == conns)
            .map(Counting::per_delivery)
            .collect();
        if per.len() > 1 {
            let (min, max) = per
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            out += &format!(
                "\n{} {conns}: per delivery {min:.0} to {max:.0} over {} runs ({:.2} % apart)",
                workload.name(),
                per.len(),
                (max - min) / min * 100.0
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary_line() {
        let text = "events: Ir\nsummary: 4285181\ntotals: 4285190\n";
        assert_eq!(summary(text), Some(4_285_181));
        assert_eq!(summary("events: Ir\n"), None);
    }
}
