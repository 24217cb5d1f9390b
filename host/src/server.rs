//! Wiring: [`run`] takes a bound listener, a configuration and a shutdown future, builds every
//! part and serves until shutdown. `main` only parses the command line, loads the config and
//! binds, so tests run real servers on `127.0.0.1:0` with a shutdown of their own.

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use axum::{Router, routing::get};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    api,
    auth::Providers,
    cluster,
    config::{Config, TransportKind},
    delivery::Hub,
    plugins::PluginHost,
    sessions::Registry,
    state::AppState,
    transport,
};

pub use crate::state::LogFilterSetter;

/// What the binary adds to a server started by [`run_with`].
#[derive(Default)]
pub struct Options {
    /// The config file: a reload reads it again (with the environment's overrides).
    pub config_path: Option<PathBuf>,
    /// Reload the config on SIGHUP, drain the node on SIGUSR1.
    pub signals: bool,
    /// Changes the process's log filter when a reload changes `server.log_filter`.
    pub log_filter: Option<LogFilterSetter>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("config_path", &self.config_path)
            .field("signals", &self.signals)
            .finish_non_exhaustive()
    }
}

fn node_id(config: &Config) -> Arc<str> {
    match &config.cluster.node_id {
        Some(id) => id.as_str().into(),
        None => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            id[..12].into()
        }
    }
}

/// Builds the application router for `state`.
pub(crate) fn app(state: AppState) -> Router {
    let mut router = api::routes(&state).merge(crate::web::routes(state.config.server.dev_tokens));
    for endpoint in state.config.effective_endpoints() {
        let path = endpoint.path.clone();
        let transport = endpoint.transport;
        let endpoint = axum::Extension(Arc::new(endpoint));
        router = match transport {
            TransportKind::Websocket => {
                router.route(&path, get(transport::ws::upgrade).layer(endpoint))
            }
            TransportKind::Sse => router
                .route(&path, get(transport::sse::open).layer(endpoint.clone()))
                .route(
                    &format!("{}/close", path.trim_end_matches('/')),
                    get(transport::sse::close).layer(endpoint),
                ),
        };
    }
    router
        .fallback(crate::http_error::no_route)
        .method_not_allowed_fallback(crate::http_error::wrong_method)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// [`app`], refusing with an error instead of panicking when the router rejects a route.
/// Config validation refuses clashing endpoint paths first; this is the last guard.
pub(crate) fn checked_app(state: AppState) -> anyhow::Result<Router> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| app(state))).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown reason");
        anyhow::anyhow!("the endpoint routes cannot be served ({why}); check [[endpoints]] paths")
    })
}

/// Serves on `listener` until `shutdown` resolves, then closes every session with 1001 and
/// returns within `server.shutdown_timeout_secs`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with(listener, config, shutdown, Options::default()).await
}

/// [`run`], with reloads from `options.config_path` and the process's signals.
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: Options,
) -> anyhow::Result<()> {
    // First: metric handles taken while starting (a plugin's counters) bind to the recorder
    // installed at that moment.
    let metrics = crate::telemetry::recorder()?;
    crate::telemetry::describe();
    let limits =
        crate::accept::Limits::new(&config.server, crate::accept::raise_open_file_limit())?;
    let config = Arc::new(config);
    let auth = Arc::new(ArcSwap::from_pointee(
        Providers::new(&config.auth).context("auth config")?,
    ));
    let node_id = node_id(&config);
    let registry = Registry::new(config.server.max_connections_per_user);
    // Stopped after the sessions have closed, so the cluster hears of their departure.
    let cluster_stop = CancellationToken::new();
    // Every early return below (`?`) drops this and so stops the cluster tasks: a failed
    // start leaves nothing running and no presence behind.
    let cluster_guard = cluster_stop.clone().drop_guard();
    let joined = cluster::join(
        &config.cluster,
        node_id.clone(),
        registry.clone(),
        cluster_stop.clone(),
    )
    .await?;
    let (hub, inbound) = match joined {
        None => (Hub::single_node(registry, node_id.clone()), None),
        Some(j) => (
            Hub::clustered(registry, j.broker, node_id.clone(), j.presence),
            Some(j.inbound),
        ),
    };
    if let Some(mut inbound) = inbound {
        let hub = hub.clone();
        tokio::spawn(async move {
            while let Some(publication) = inbound.recv().await {
                hub.deliver_publication(publication);
            }
        });
    }
    // Consumers of the back end's own sender; they stop with the cluster tasks.
    crate::ingest::start(&config.ingest, &hub, &cluster_stop.child_token())
        .context("starting the [[ingest]] sources")?;
    let shutdown_token = CancellationToken::new();
    crate::recheck::start(auth.clone(), hub.registry.clone(), shutdown_token.clone());
    let kv_store = crate::plugins::kv::StateStore::for_host(&config.plugins, &config.cluster)?;
    let plugins = PluginHost::start(&config.plugins, hub.clone(), kv_store)
        .await
        .context("starting the plugin host")?;
    let state = AppState {
        config: config.clone(),
        live: Arc::new(ArcSwap::new(config.clone())),
        providers: auth,
        config_path: options.config_path.map(Arc::new),
        log_filter: options.log_filter,
        draining: CancellationToken::new(),
        hub,
        dispatcher: plugins.clone(),
        connections: Arc::new(Semaphore::new(limits.sessions)),
        handshakes: Arc::new(parking_lot::Mutex::new(crate::rate::TokenBucket::new(
            config.server.handshakes_per_sec,
            config.server.handshakes_burst,
        ))),
        sources: Arc::new(crate::rate::sources::SourceBudgets::new(
            config.server.handshakes_per_source_per_sec,
            config.server.handshakes_per_source_burst,
        )),
        gates: crate::rate::gate::Gates::new(
            config.server.messages_per_sec,
            config.server.messages_burst,
        ),
        shutdown: shutdown_token,
        tracker: TaskTracker::new(),
        metrics,
    };
    let broker_up = state.hub.broker.state() != crate::cluster::BrokerState::Down;
    metrics::gauge!("switchboard_broker_up").set(if broker_up { 1.0 } else { 0.0 });
    let state_presence = state.hub.presence.clone();
    let addr = listener.local_addr()?;
    tracing::info!(%addr, node_id = %node_id, broker = state.hub.broker.name(), "switchboard listening");

    if options.signals {
        listen_for_signals(state.clone())?;
    }
    let token = state.shutdown.clone();
    let tracker = state.tracker.clone();
    let grace = Duration::from_secs(config.server.shutdown_timeout_secs);
    let router = match checked_app(state) {
        Ok(router) => router,
        Err(e) => {
            plugins.stop();
            return Err(e);
        }
    };
    let serve = crate::accept::serve(
        listener,
        router,
        config.server.clone(),
        limits,
        token.clone(),
    );
    let server = tokio::spawn(serve);
    shutdown.await;
    tracing::info!("shutting down: closing sessions with 1001");
    // Cancelling the root token closes every session (their closers are children).
    token.cancel();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("sessions did not close within {grace:?}; exiting anyway");
    }
    plugins.stop();
    // The presence task writes its last entries, then removes them, and only then ends: no
    // write can land after the removal.
    drop(cluster_guard);
    if let Some(presence) = &state_presence {
        presence.leave_now().await;
    }
    match tokio::time::timeout(Duration::from_secs(1), server).await {
        Ok(joined) => joined.context("server task")?,
        Err(_) => tracing::warn!("HTTP server did not stop within 1s after sessions closed"),
    }
    Ok(())
}

/// SIGHUP: reload the config; SIGUSR1: drain. The task ends with the host.
fn listen_for_signals(state: AppState) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let mut user1 = signal(SignalKind::user_defined1()).context("listening for SIGUSR1")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => return,
                Some(()) = hangup.recv() => {
                    let outcome = crate::reload::from_file(&state);
                    crate::reload::log_outcome("SIGHUP", &outcome);
                }
                Some(()) = user1.recv() => {
                    crate::drain::start(&state);
                }
            }
        }
    });
    Ok(())
}
