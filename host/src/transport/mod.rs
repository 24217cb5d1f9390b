//! Client connections. What every transport shares lives here: admitting a connection
//! (token, limits, registration) and handling one inbound text frame; each transport has a
//! file of its own.
//!
//! - [`ws`]: WebSocket, both directions.
//! - [`sse`]: server-sent events down; `POST /api/v1/dispatch` up.

pub mod rate;
pub mod sse;
pub mod ws;

use std::{collections::HashMap, sync::Arc};

use http::{HeaderMap, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::{
    api::error::ApiError,
    auth::{FoundToken, find_token},
    close_codes,
    config::EndpointConfig,
    envelope::{self, Inbound},
    server::AppState,
    sessions::{Frame, RegisterError, Registered, Session},
};

/// A connection that passed authentication and the limits, registered as a session.
pub struct Admitted {
    /// Keeps the session registered until dropped.
    pub registration: Registered,
    /// The session's outbound queue.
    pub outbound: mpsc::Receiver<Frame>,
    /// Holds one of `server.max_connections` until dropped.
    pub permit: OwnedSemaphorePermit,
    /// Where the token was found (for echoing a WebSocket subprotocol).
    pub token: FoundToken,
}

impl Admitted {
    /// The admitted session.
    pub fn session(&self) -> &Arc<Session> {
        self.registration.session()
    }
}

/// Authenticates a connection request and registers its session, or says why not with an
/// HTTP status (401 token, 429 per-user limit, 503 connection limit or shutting down).
pub fn admit(
    state: &AppState,
    endpoint: &EndpointConfig,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Admitted, ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "host is shutting down",
        ));
    }
    check_origin(&state.config.server.allowed_origins, headers)?;
    if state.handshakes.lock().take(std::time::Instant::now()) != rate::Verdict::Allow {
        metrics::counter!("switchboard_connections_rejected_total", "reason" => "handshake_rate")
            .increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "handshake_rate_limited",
            "too many connection attempts; retry with backoff",
        ));
    }
    let token = find_token(query, headers).ok_or(crate::auth::AuthError::Missing)?;
    let principal = state.auth.verify(&token.token)?;
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
    if endpoint.single_session {
        replace_older_sessions(state, &session);
    }
    let registration = state.hub.registry.register(session).map_err(|e| match e {
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
        registration,
        outbound,
        permit,
        token,
    })
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

fn replace_older_sessions(state: &AppState, session: &Session) {
    let key = crate::sessions::UserKey::of(&session.principal);
    state.hub.registry.for_user(&key, |old| {
        if old.profile == session.profile && old.transport == session.transport {
            old.close(close_codes::SESSION_REPLACED);
        }
    });
}

/// Queues the native profile's greeting: `{"type":"session","content":{"session_id", "user_id",
/// "user_type", "tenant_id", "node_id"}}`, so a client learns the id others can address it by.
/// Other profiles get no greeting: their front ends would not expect one.
pub fn greet(state: &AppState, session: &Session) {
    if session.profile != crate::envelope::Profile::Native {
        return;
    }
    let content = serde_json::json!({
        "session_id": &*session.id,
        "user_id": &*session.principal.user_id,
        "user_type": session.principal.user_type,
        "tenant_id": session.principal.tenant_id.as_deref(),
        "node_id": &*state.hub.node_id,
    });
    let raw = serde_json::value::RawValue::from_string(content.to_string()).expect("JSON");
    session.push(Frame::Text(session.profile.encode("session", &raw).into()));
}

/// Handles one inbound text frame of `session`: heartbeats are answered, messages dispatched
/// (in order: the caller awaits this before reading the next frame), and bad input answered
/// with an error envelope or logged, as the profile says.
pub async fn handle_text(state: &AppState, session: &Arc<Session>, text_type: &str, text: &str) {
    metrics::counter!("switchboard_messages_in_total", "profile" => session.profile.name())
        .increment(1);
    match session.profile.parse(text, text_type) {
        Ok(Inbound::Reply(reply)) => {
            session.push(Frame::Text(reply.into()));
        }
        Ok(Inbound::Message { msg_type, content }) => {
            let result = state
                .dispatcher
                .dispatch(session.clone(), msg_type.clone(), content)
                .await;
            if let Err(e) = result {
                report(session, e.code(), &e.to_string(), Some(&msg_type));
            }
        }
        Err(e) => report(session, e.code(), &e.to_string(), None),
    }
}

/// Tells the client about a problem with its input (native profile) or logs and drops it.
pub fn report(session: &Session, code: &str, message: &str, msg_type: Option<&str>) {
    if session.profile.answers_errors() {
        session.push(Frame::Text(
            envelope::error_frame(code, message, msg_type).into(),
        ));
    } else {
        tracing::debug!(session = %session.id, code, message, ?msg_type, "dropped bad client input");
    }
}
