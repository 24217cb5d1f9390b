//! The HTTP API: server-to-server push and presence (API key), plugin status, health, metrics,
//! and dev tokens.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `POST /api/v1/messages` | API key | deliver `{to, type, content, tenant_id?, via?}` |
//! | `GET /api/v1/presence/users?user_type=&tenant_id=` | API key | online user ids (no `tenant_id`: every tenant) |
//! | `GET /api/v1/presence/users/{user_type}/{user_id}?tenant_id=` | API key | one user's sessions (no `tenant_id`: every tenant) |
//! | `POST /api/v1/dispatch[?session_id=]` | user token | an envelope, dispatched like a WebSocket frame |
//! | `GET /api/v1/plugins` | API key (full) or user token (names and types) | loaded plugins |
//! | `POST /api/v1/dev/token` | none; only with `server.dev_tokens` | sign a token |
//! | `POST /api/v1/admin/reload` | API key | re-read the config file, apply what can change live |
//! | `POST /api/v1/admin/drain` | API key | drain this node |
//! | `GET /api/v1/admin/status` | API key | this node at a glance (the admin page `/admin`) |
//! | `GET /healthz`, `/readyz`, `/metrics` | none | liveness, readiness, Prometheus |

mod admin;
mod dispatch;
pub(crate) mod guard;
mod target;

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{
        DefaultBodyLimit, Path, Query, State,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode},
    middleware,
    response::IntoResponse,
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::{json, value::RawValue};

use self::target::PushTarget;
use crate::http_error::ApiError;
use crate::{
    auth::Principal, cluster::BrokerState, delivery::ClusterLeg, sessions::UserKey, state::AppState,
};

/// Largest body of `POST /api/v1/dev/token`.
const DEV_TOKEN_BODY_BYTES: usize = 4096;

/// Routes of the HTTP API. Credentials are checked by middleware before a handler reads the
/// body; bodies are read whole, within per-route limits and `server.body_timeout_secs`.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let server = &state.config.server;
    let timeout = Duration::from_secs(server.body_timeout_secs);
    let body = |limit: usize, code: &'static str| {
        middleware::from_fn(move |req: axum::extract::Request, next: middleware::Next| {
            guard::read_body(limit, code, timeout, req, next)
        })
    };
    let api_key = middleware::from_fn_with_state(state.clone(), guard::api_key);
    let user_token = middleware::from_fn_with_state(state.clone(), guard::user_token);
    let dev_only = middleware::from_fn_with_state(state.clone(), guard::dev_only);
    // Layers run outermost last-added first: credentials, then the body, then the handler.
    Router::new()
        .route(
            "/api/v1/messages",
            post(push)
                .layer(DefaultBodyLimit::disable())
                .layer(body(server.max_push_bytes, "body_too_large"))
                .layer(api_key.clone()),
        )
        .route(
            "/api/v1/dispatch",
            post(dispatch::dispatch)
                .layer(DefaultBodyLimit::disable())
                .layer(body(server.max_frame_bytes, "frame_too_large"))
                .layer(user_token),
        )
        .route(
            "/api/v1/presence/users",
            get(online_users).layer(api_key.clone()),
        )
        .route(
            "/api/v1/presence/users/{user_type}/{user_id}",
            get(user_presence).layer(api_key.clone()),
        )
        .route(
            "/api/v1/admin/reload",
            post(admin::reload).layer(api_key.clone()),
        )
        .route(
            "/api/v1/admin/drain",
            post(admin::drain).layer(api_key.clone()),
        )
        .route("/api/v1/admin/status", get(admin::status).layer(api_key))
        .route("/api/v1/plugins", get(plugins))
        .route(
            "/api/v1/dev/token",
            post(dev_token)
                .layer(body(DEV_TOKEN_BODY_BYTES, "body_too_large"))
                .layer(dev_only),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushRequest {
    to: PushTarget,
    #[serde(rename = "type")]
    msg_type: String,
    #[serde(default = "null_content")]
    content: Box<RawValue>,
    #[serde(default)]
    tenant_id: Option<String>,
    /// Only these channels (transports and/or endpoint paths); absent: any.
    #[serde(default)]
    via: crate::via::Via,
}

fn null_content() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

async fn push(
    State(state): State<AppState>,
    body: Result<Json<PushRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(req) = body?;
    if req.msg_type.is_empty() || req.msg_type.len() > crate::envelope::MAX_TYPE_LEN {
        return Err(ApiError::bad_request(
            "bad_type",
            "\"type\" must be 1 to 128 characters",
        ));
    }
    crate::envelope::check_depth(req.content.get(), state.config.server.max_json_depth)
        .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
    if req.via.transports.len() > crate::via::MAX_VIA_ENTRIES
        || req.via.endpoints.len() > crate::via::MAX_VIA_ENTRIES
    {
        return Err(ApiError::bad_request(
            "bad_via",
            format!(
                "\"via\" lists at most {} transports and {} endpoints",
                crate::via::MAX_VIA_ENTRIES,
                crate::via::MAX_VIA_ENTRIES
            ),
        ));
    }
    let (target, scope) = req.to.resolve(req.tenant_id)?;
    let sent = state
        .hub
        .send(target, scope, req.via, req.msg_type, req.content);
    // `cluster: "dropped"` tells the caller that other nodes missed it (broker down) and a
    // retry may be worth it; local deliveries happened either way.
    Ok((
        StatusCode::ACCEPTED,
        Json(PushAnswer {
            local_deliveries: sent.local,
            cluster: sent.cluster,
        }),
    ))
}

/// `POST /api/v1/messages` answer.
#[derive(Serialize)]
struct PushAnswer {
    /// Sessions on this node the message was queued to.
    local_deliveries: usize,
    /// What became of the copy for the other nodes.
    cluster: ClusterLeg,
}

#[derive(Deserialize)]
struct OnlineQuery {
    user_type: u32,
    tenant_id: Option<String>,
}

async fn online_users(
    State(state): State<AppState>,
    query: Result<Query<OnlineQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = query?;
    let tenant = q.tenant_id.map(|t| Some(Arc::<str>::from(t)));
    let users = state.hub.online_users(tenant.as_ref(), q.user_type).await;
    Ok(Json(json!({ "users": users })))
}

#[derive(Deserialize)]
struct TenantQuery {
    tenant_id: Option<String>,
}

async fn user_presence(
    State(state): State<AppState>,
    path: Result<Path<(u32, String)>, PathRejection>,
    query: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path((user_type, user_id)), Query(q)) = (path?, query?);
    let user_id: Arc<str> = user_id.into();
    // Like the push API: without `tenant_id`, every tenant.
    let sessions = match q.tenant_id {
        Some(tenant) => {
            let key = UserKey {
                tenant: Some(tenant.into()),
                user_type,
                user_id,
            };
            state.hub.user_sessions(&key).await
        }
        None => {
            state
                .hub
                .user_sessions_any_tenant(user_type, &user_id)
                .await
        }
    };
    Ok(Json(
        json!({ "online": sessions > 0, "sessions": sessions }),
    ))
}

/// Operators (API key) see everything; users (a valid token) see what they can send to.
async fn plugins(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let Err(key_error) = guard::check_api_key(&state, &headers) else {
        return Ok(Json(state.dispatcher.status()).into_response());
    };
    let bearer = crate::auth::bearer(&headers);
    let verified = match bearer {
        Some(token) => {
            let request = crate::auth::RequestInfo {
                query: None,
                headers: &headers,
            };
            let auth = state.auth();
            Some(auth.default_provider().authenticate(token, &request).await)
        }
        None => None,
    };
    match verified {
        Some(Ok(_)) => Ok(Json(state.dispatcher.status().summary()).into_response()),
        // A bearer that is neither a key nor a valid token: say what was wrong with it as a token.
        Some(Err(token_error)) if bearer.is_some_and(|b| b.contains('.')) => {
            Err(token_error.into())
        }
        _ => Err(key_error),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevTokenRequest {
    user_id: String,
    user_type: u32,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    ttl_secs: Option<u64>,
}

async fn dev_token(
    State(state): State<AppState>,
    body: Result<Json<DevTokenRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(req) = body?;
    let principal = Principal {
        user_id: req.user_id.into(),
        user_type: req.user_type,
        tenant_id: req.tenant_id.filter(|t| !t.is_empty()).map(Into::into),
    };
    let ttl = Duration::from_secs(req.ttl_secs.unwrap_or(3600).clamp(1, 86_400));
    let token = state
        .auth()
        .default_provider()
        .issue(&principal, ttl)
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot sign dev token");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "signing_unavailable",
                "no signing key is configured",
            )
        })?;
    Ok(Json(json!({ "token": token })))
}

/// `GET /healthz`: the process answers, and what it holds.
#[derive(Serialize)]
struct Health<'a> {
    /// Always `ok`.
    status: &'static str,
    node_id: &'a str,
    /// `local`, `redis` or `nats`.
    broker: &'static str,
    /// Open sessions on this node.
    sessions: usize,
    /// Distinct users among them.
    users: usize,
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    Json(Health {
        status: "ok",
        node_id: &state.hub.node_id,
        broker: state.hub.broker.name(),
        sessions: state.hub.registry.len(),
        users: state.hub.registry.user_count(),
    })
    .into_response()
}

/// `GET /readyz`: whether this node should get traffic.
#[derive(Serialize)]
struct Readiness {
    ready: bool,
    broker: BrokerState,
    /// The plugin folder has been read once and its watchers run.
    plugins_loaded: bool,
    /// The node is draining (see `POST /api/v1/admin/drain`).
    draining: bool,
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let broker = state.hub.broker.state();
    let plugins = state.dispatcher.ready();
    let draining = state.draining.is_cancelled();
    let ready =
        broker != BrokerState::Down && plugins && !state.shutdown.is_cancelled() && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            broker,
            plugins_loaded: plugins,
            draining,
        }),
    )
}

async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
