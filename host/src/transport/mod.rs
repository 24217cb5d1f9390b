//! Client connections. What every transport shares lives here: admitting a connection
//! (token, limits, registration) and handling one inbound text frame; each transport has a
//! file of its own.
//!
//! - [`ws`]: WebSocket, both directions.
//! - [`sse`]: server-sent events down; `POST /api/v1/dispatch` up.

pub(crate) mod sse;
pub(crate) mod ws;

use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::{
    accept::Conn,
    auth::{Credential, FoundToken, RequestInfo, find_token},
    config::{EndpointConfig, ReplyVia},
    envelope::{self, Inbound},
    frame::Frame,
    http_error::ApiError,
    sessions::{RegisterError, Registered, Session},
    state::AppState,
    via::Via,
};

/// A connection that passed authentication and the limits, registered as a session.
pub(crate) struct Admitted {
    /// Keeps the session registered until dropped.
    pub registration: Registered,
    /// The session's outbound queue.
    pub outbound: mpsc::Receiver<Frame>,
    /// Holds one of `server.max_connections` until dropped.
    pub permit: OwnedSemaphorePermit,
    /// Where the token was found (for echoing a WebSocket subprotocol).
    pub token: FoundToken,
    /// The session's message budget and ordering, shared with `POST /api/v1/dispatch`.
    pub gate: crate::rate::gate::GateGuard,
    /// The TCP connection; an upgraded WebSocket holds it (and its open-connection permit)
    /// for the life of the socket.
    pub conn: Option<Conn>,
}

impl Admitted {
    /// The admitted session.
    pub(crate) fn session(&self) -> &Arc<Session> {
        self.registration.session()
    }
}

/// Authenticates a connection request with its endpoint's provider and registers its
/// session, or says why not with an HTTP status (401 token, 429 rates and the per-user limit,
/// 503 connection limit, auth back end down or shutting down). Cheap checks come first; the
/// source address's handshake budget is spent before the token is verified, the node's only
/// on a valid token, so clients without one cannot make legitimate handshakes wait.
pub(crate) async fn admit(
    state: &AppState,
    endpoint: &EndpointConfig,
    conn: Option<&Conn>,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Admitted, ApiError> {
    refuse_if_leaving(state)?;
    check_origin(&state.live().server.allowed_origins, headers)?;
    let token = find_token(query, headers)?;
    let now = std::time::Instant::now();
    if let Some(conn) = conn
        && !state.sources.take(conn.peer(), now)
    {
        return Err(handshake_rate_limited("source_handshake_rate"));
    }
    let auth = state.auth();
    let provider = auth.index_of(endpoint.auth.as_deref());
    let request = RequestInfo { query, headers };
    let verified = auth
        .get(provider)
        .authenticate(&token.token, &request)
        .await?;
    refuse_if_leaving(state)?;
    let principal = verified.principal;
    if let Some(conn) = conn {
        conn.authenticated();
    }
    if state.handshakes.lock().take(now) != crate::rate::Verdict::Allow {
        return Err(handshake_rate_limited("handshake_rate"));
    }
    let permit = state.connections.clone().try_acquire_owned().map_err(|_| {
        metrics::counter!("switchboard_connections_rejected_total", "reason" => "max_connections")
            .increment(1);
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "host is at its connection limit",
        )
    })?;
    let (session, outbound) = Session::new(
        state.next_session_id(),
        principal,
        endpoint.profile,
        endpoint.transport,
        state.config.server.outbound_queue,
        state.shutdown.child_token(),
    );
    session.admitted_with(
        Credential {
            token: token.token.as_str().into(),
            provider,
            expires_at: verified.expires_at,
        },
        endpoint.path.as_str().into(),
        match endpoint.effective_reply_via() {
            ReplyVia::Any => Via::default(),
            ReplyVia::Transport => Via::transport(endpoint.transport),
            ReplyVia::Endpoint => Via::endpoint(&endpoint.path),
        },
    );
    // One session per user on this endpoint: the older ones are replaced only if the new
    // one is admitted, and do not count against the per-user limit.
    let replaces = |old: &Session| {
        endpoint.single_session
            && old.profile == session.profile
            && old.transport == session.transport
    };
    let registration = state
        .hub
        .registry
        .register_replacing(session.clone(), replaces)
        .map_err(|e| match e {
            RegisterError::UserLimit(_) => {
                metrics::counter!("switchboard_connections_rejected_total", "reason" => "user_limit")
                    .increment(1);
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_user_connections",
                    e.to_string(),
                )
            }
        })?;
    Ok(Admitted {
        gate: state.gates.open(session.id.clone()),
        registration,
        outbound,
        permit,
        token,
        conn: conn.cloned(),
    })
}

/// 503 while the host shuts down or drains: clients should connect to another node.
fn refuse_if_leaving(state: &AppState) -> Result<(), ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "host is shutting down",
        ));
    }
    if state.draining.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this node is draining; connect to another node",
        ));
    }
    Ok(())
}

fn handshake_rate_limited(reason: &'static str) -> ApiError {
    metrics::counter!("switchboard_connections_rejected_total", "reason" => reason).increment(1);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "handshake_rate_limited",
        "too many connection attempts; retry with backoff",
    )
}

/// Counts one open connection in `switchboard_connections{transport, profile}` while it
/// lives: a guard, so every way a connection ends (including a client that leaves while its
/// handshake is still being handled) takes it off the gauge.
pub(crate) struct ConnectionGauge(metrics::Gauge);

impl ConnectionGauge {
    /// Counts a connection of `transport` and `profile` until dropped.
    pub(crate) fn new(transport: &'static str, profile: envelope::Profile) -> Self {
        let gauge = metrics::gauge!("switchboard_connections", "transport" => transport, "profile" => profile.name());
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Browsers send `Origin`; with an allowlist configured, other origins get 403.
fn check_origin(allowed: &[String], headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return Ok(());
    };
    if allowed.is_empty()
        || allowed
            .iter()
            .any(|a| a.as_bytes() == origin.as_bytes() || a == "*")
    {
        return Ok(());
    }
    metrics::counter!("switchboard_connections_rejected_total", "reason" => "origin").increment(1);
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        "this origin may not connect",
    ))
}

/// Queues the native profile's greeting: `{"type":"session","content":{"session_id", "user_id",
/// "user_type", "tenant_id", "node_id"}}`, so a client learns the id others can address it by.
/// Other profiles get no greeting: their front ends would not expect one.
pub(crate) fn greet(state: &AppState, session: &Session) {
    if session.profile != crate::envelope::Profile::Native {
        return;
    }
    /// The greeting's content.
    #[derive(serde::Serialize)]
    struct Greeting<'a> {
        session_id: &'a str,
        user_id: &'a str,
        user_type: u32,
        tenant_id: Option<&'a str>,
        node_id: &'a str,
    }
    let greeting = Greeting {
        session_id: &session.id,
        user_id: &session.principal.user_id,
        user_type: session.principal.user_type,
        tenant_id: session.principal.tenant_id.as_deref(),
        node_id: &state.hub.node_id,
    };
    match serde_json::value::to_raw_value(&greeting) {
        Ok(raw) => {
            session.push(Frame::Text(session.profile.encode("session", &raw).into()));
        }
        Err(e) => tracing::error!(error = %e, "cannot encode the greeting"),
    }
}

/// What an inbound text frame asks for, after heartbeats are answered.
pub(crate) enum Work {
    /// A message for the listener of its type.
    Message {
        /// The envelope's type.
        msg_type: String,
        /// The envelope's content, checked JSON.
        content: Box<serde_json::value::RawValue>,
    },
    /// Bad input, to be reported (native profile) or logged in its turn.
    Bad {
        /// The stable error code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Reads one inbound text frame of `session`: a heartbeat is answered at once (so it is never
/// held up behind a slow listener); a message or bad input is returned, to be handled in
/// order with the session's other messages by [`run`].
pub(crate) fn read_text(
    state: &AppState,
    session: &Session,
    text_type: &str,
    text: &str,
) -> Option<Work> {
    metrics::counter!("switchboard_messages_in_total", "profile" => session.profile.name())
        .increment(1);
    let max_depth = state.config.server.max_json_depth;
    match session.profile.parse_limited(text, text_type, max_depth) {
        Ok(Inbound::Reply(reply)) => {
            session.push(Frame::Text(reply.into()));
            None
        }
        Ok(Inbound::Message { msg_type, content }) => Some(Work::Message { msg_type, content }),
        Err(e) => Some(Work::Bad {
            code: e.code(),
            message: e.to_string(),
        }),
    }
}

/// Handles what [`read_text`] returned: dispatches a message (the caller runs one at a time,
/// in order) or reports bad input, with an error envelope or a log line as the profile says.
pub(crate) async fn run(state: &AppState, session: &Arc<Session>, work: Work) {
    match work {
        Work::Message { msg_type, content } => {
            let result = state
                .dispatcher
                .dispatch(session.clone(), msg_type.clone(), content)
                .await;
            if let Err(e) = result {
                report(session, e.code(), &e.to_string(), Some(&msg_type));
            }
        }
        Work::Bad { code, message } => report(session, code, &message, None),
    }
}

/// Tells the client about a problem with its input (native profile) or logs and drops it.
pub(crate) fn report(session: &Session, code: &str, message: &str, msg_type: Option<&str>) {
    if session.profile.answers_errors() {
        session.push(Frame::Text(
            envelope::error_frame(code, message, msg_type).into(),
        ));
    } else {
        tracing::debug!(session = %session.id, code, message, ?msg_type, "dropped bad client input");
    }
}
