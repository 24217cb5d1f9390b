//! Wiring: [`run`] takes a bound listener, a configuration and a shutdown future, builds every
//! part and serves until shutdown. `main` only parses the command line, loads the config and
//! binds, so tests run real servers on `127.0.0.1:0` with a shutdown of their own.

use std::{
    future::Future,
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::Context as _;
use axum::{Router, routing::get};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    api,
    auth::Authenticator,
    cluster::{self, Broker, presence::ClusterPresence},
    config::{BrokerKind, Config, TransportKind},
    delivery::Hub,
    dispatch::Dispatcher,
    plugins::PluginHost,
    sessions::Registry,
    transport,
};

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Verifies client tokens.
    pub auth: Arc<Authenticator>,
    /// Delivery to local sessions and the cluster.
    pub hub: Arc<Hub>,
    /// Routes client messages to listeners.
    pub dispatcher: Arc<dyn Dispatcher>,
    /// One permit per open connection: `server.max_connections`.
    pub connections: Arc<Semaphore>,
    /// Node-wide handshake rate: `server.handshakes_per_sec`, spent on valid tokens only.
    pub handshakes: Arc<parking_lot::Mutex<crate::transport::rate::TokenBucket>>,
    /// Handshake rate per source address: `server.handshakes_per_source_per_sec`.
    pub sources: Arc<crate::transport::sources::SourceBudgets>,
    /// Each session's message budget and ordering, and per-user budgets of session-less
    /// dispatches.
    pub gates: Arc<crate::transport::gate::Gates>,
    /// Cancelled when the host starts shutting down; every session's closer is a child.
    pub shutdown: CancellationToken,
    /// Connection tasks, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

impl AppState {
    /// A new session id, unguessable and unique in the cluster (see
    /// [`crate::sessions::new_session_id`]).
    pub fn next_session_id(&self) -> Arc<str> {
        crate::sessions::new_session_id(&self.hub.node_id)
    }
}

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// The process-wide Prometheus recorder (the `metrics` facade allows one per process).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by an embedding program); then
            // this handle renders an empty page rather than failing the host.
            let _ = metrics::set_global_recorder(recorder);
            // Histogram samples pile up (8 bytes each) until drained into buckets; without a
            // scraper they would grow with every plugin call, so drain them on a timer.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP);
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawning the metrics upkeep thread");
            handle
        })
        .clone()
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
pub fn app(state: AppState) -> Router {
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
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// [`app`], refusing with an error instead of panicking when the router rejects a route.
/// Config validation refuses clashing endpoint paths first; this is the last guard.
pub fn checked_app(state: AppState) -> anyhow::Result<Router> {
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
    // First: metric handles taken while starting (a plugin's counters) bind to the recorder
    // installed at that moment.
    let metrics = metrics_handle();
    crate::telemetry::describe();
    let limits =
        crate::accept::Limits::new(&config.server, crate::accept::raise_open_file_limit())?;
    let config = Arc::new(config);
    let auth = Arc::new(Authenticator::new(&config.auth).context("auth config")?);
    let node_id = node_id(&config);
    let registry = Registry::new(config.server.max_connections_per_user);
    // Stopped after the sessions have closed, so the cluster hears of their departure.
    let cluster_stop = CancellationToken::new();
    // Every early return below (`?`) drops this and so stops the cluster tasks: a failed
    // start leaves nothing running and no presence behind.
    let cluster_guard = cluster_stop.clone().drop_guard();
    let (hub, inbound) = match config.cluster.broker {
        BrokerKind::Local => {
            let hub = Hub {
                registry,
                broker: Arc::new(cluster::local::LocalBroker),
                node_id: node_id.clone(),
                presence: None,
            };
            (Arc::new(hub), None)
        }
        BrokerKind::Redis => {
            let client = redis::Client::open(config.cluster.redis_url.as_str())
                .context("cluster.redis_url")?;
            let (broker, inbound) = cluster::redis::RedisBroker::start(
                client.clone(),
                &config.cluster.name,
                node_id.clone(),
                Duration::from_millis(config.cluster.health_interval_ms),
                cluster_stop.clone(),
            )?;
            let presence = cluster::presence::RedisPresence::start(
                &client,
                &config.cluster.name,
                node_id.clone(),
                Duration::from_secs(config.cluster.presence_ttl_secs),
                registry.clone(),
                cluster_stop.clone(),
            )?;
            let hub = Hub {
                registry,
                broker: broker as Arc<dyn Broker>,
                node_id: node_id.clone(),
                presence: Some(Arc::new(ClusterPresence::Redis(presence))),
            };
            (Arc::new(hub), Some(inbound))
        }
        BrokerKind::Nats => {
            let (broker, inbound, presence) = cluster::nats::start(
                &config.cluster,
                node_id.clone(),
                registry.clone(),
                cluster_stop.clone(),
            )
            .await?;
            let hub = Hub {
                registry,
                broker: broker as Arc<dyn Broker>,
                node_id: node_id.clone(),
                presence: Some(Arc::new(ClusterPresence::Nats(presence))),
            };
            (Arc::new(hub), Some(inbound))
        }
    };
    if let Some(mut inbound) = inbound {
        let hub = hub.clone();
        tokio::spawn(async move {
            while let Some(publication) = inbound.recv().await {
                hub.deliver_publication(publication);
            }
        });
    }
    let plugins = PluginHost::start(&config.plugins, hub.clone())
        .await
        .context("starting the plugin host")?;
    let state = AppState {
        config: config.clone(),
        auth,
        hub,
        dispatcher: plugins.clone(),
        connections: Arc::new(Semaphore::new(limits.sessions)),
        handshakes: Arc::new(parking_lot::Mutex::new(
            crate::transport::rate::TokenBucket::new(
                config.server.handshakes_per_sec,
                config.server.handshakes_burst,
            ),
        )),
        sources: Arc::new(crate::transport::sources::SourceBudgets::new(
            config.server.handshakes_per_source_per_sec,
            config.server.handshakes_per_source_burst,
        )),
        gates: crate::transport::gate::Gates::new(
            config.server.messages_per_sec,
            config.server.messages_burst,
        ),
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        metrics,
    };
    let broker_up = state.hub.broker.state() != crate::cluster::BrokerState::Down;
    metrics::gauge!("switchboard_broker_up").set(if broker_up { 1.0 } else { 0.0 });
    let state_presence = state.hub.presence.clone();
    let addr = listener.local_addr()?;
    tracing::info!(%addr, node_id = %node_id, broker = state.hub.broker.name(), "switchboard listening");

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
