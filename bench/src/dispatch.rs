//! Plugin dispatch overhead: for each message, a fresh `Store`, instantiation from the
//! `InstancePre`, the `on-message` call, and the plugin's one send, queued for a session.
//! Runs on one thread, so the figure is the cost on one core.

use std::{path::PathBuf, sync::Arc, time::Instant};

use anyhow::Context as _;
use switchboard::{
    auth::Principal,
    config::{Config, TransportKind},
    delivery::Hub,
    envelope::Profile,
    plugins::{
        loaded::{LoadContext, LoadedPlugin},
        runtime::Runtime,
    },
    sessions::{Registry, Session},
};
use tokio_util::sync::CancellationToken;

/// Arguments of `dispatch`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The plugin component (its message type is the first it claims).
    #[arg(long, default_value = "target/plugins-dist/echo.wasm")]
    plugin: PathBuf,
    /// Messages per run.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Runs; the median run is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Message content (JSON).
    #[arg(long, default_value = r#"{"text":"hello","n":42}"#)]
    content: String,
    /// Reuse pooled instances (sidecar `[instances] reuse = true`) instead of a fresh one per
    /// message.
    #[arg(long)]
    reuse: bool,
}

/// Runs the benchmark and prints the table.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let config = Config::parse("", [])?;
    let runtime = Arc::new(Runtime::new(&config.plugins)?);
    let hub = Hub::single_node(Registry::new(4), "bench".into());
    let cx = LoadContext {
        runtime: &runtime,
        cache: None,
        config: &config.plugins,
        hub: &hub,
    };
    let key = args
        .plugin
        .file_stem()
        .and_then(|s| s.to_str())
        .context("plugin file name")?;
    // The plugin runs from a folder of its own, with the sidecar this run asks for.
    let dir = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(&args.plugin, dir.join(format!("{key}.wasm")))?;
    let sidecar = format!("[instances]\nreuse = {}\n", args.reuse);
    std::fs::write(dir.join(format!("{key}.toml")), sidecar)?;
    let loaded = LoadedPlugin::load(&cx, &dir, key, Default::default()).await;
    let _ = std::fs::remove_dir_all(&dir);
    let plugin = loaded?;
    let msg_type = plugin.info.message_types[0].clone();
    let (session, mut queue) = Session::new(
        "bench-1".into(),
        Principal {
            user_id: "1".into(),
            user_type: 1,
            tenant_id: None,
        },
        Profile::Native,
        TransportKind::Websocket,
        1024,
        CancellationToken::new(),
    );
    let _registered = hub.registry.register(session.clone())?;

    let mut one = async || {
        plugin
            .on_message(&runtime, &session, &msg_type, &args.content)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut delivered = 0;
        while queue.try_recv().is_ok() {
            delivered += 1;
        }
        anyhow::Ok(delivered)
    };
    // Warm up: first calls fault in code pages and fill the allocator's pools.
    for _ in 0..1000 {
        one().await?;
    }
    let rss_after_warmup = rss_kib();
    let mut per_message_us = Vec::new();
    let mut deliveries = 0;
    for _ in 0..args.runs {
        let started = Instant::now();
        for _ in 0..args.messages {
            deliveries += one().await?;
        }
        per_message_us.push(started.elapsed().as_secs_f64() * 1e6 / args.messages as f64);
    }
    assert_eq!(
        deliveries,
        args.messages * args.runs,
        "every call delivered one message"
    );
    per_message_us.sort_by(f64::total_cmp);
    let median = per_message_us[per_message_us.len() / 2];
    println!(
        "plugin dispatch: {} ({} messages x {} runs, one core, {} instances)",
        plugin.label(),
        args.messages,
        args.runs,
        if args.reuse { "reused" } else { "fresh" }
    );
    println!(
        "process RSS: {} KiB after warm-up, {} KiB after {} dispatches",
        rss_after_warmup,
        rss_kib(),
        args.messages * args.runs
    );
    println!("| run | us/message |");
    println!("|---|---|");
    for (i, us) in per_message_us.iter().enumerate() {
        println!("| {} | {us:.2} |", i + 1);
    }
    println!(
        "median: {median:.2} us/message = {:.0} messages/s per core",
        1e6 / median
    );
    Ok(())
}

/// Resident set size of this process.
fn rss_kib() -> u64 {
    crate::procstat::process(std::process::id()).map_or(0, |u| u.memory_kib)
}
