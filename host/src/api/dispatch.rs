//! `POST /api/v1/dispatch`: the upstream half for clients that receive over SSE. The body is
//! an envelope; it runs the same plugin dispatch as a WebSocket frame from the token's user
//! (verified by middleware before the body is read), under the same rules:
//!
//! - With `?session_id=<id>` (an open session of the same user on this node) the plugin sees
//!   that session, so its replies reach the client's stream. The message shares the session's
//!   message rate and order with its WebSocket frames: dispatches of one session run one at a
//!   time, in arrival order. A session on another node is not reachable here (404
//!   `unknown_session`): send to the node that holds the stream, as its events come from it.
//! - Without it the message comes from a transient session that receives nothing, under a
//!   per-user message rate.
//!
//! Over the rate: 429 `rate_limited`.

use std::collections::HashMap;

use axum::{
    Extension, Json,
    extract::{
        Query, State,
        rejection::{QueryRejection, StringRejection},
    },
    response::IntoResponse,
};
use http::StatusCode;
use serde_json::json;

use tracing::Instrument as _;

use crate::http_error::ApiError;
use crate::{
    auth::Principal,
    config::TransportKind,
    dispatch::DispatchError,
    envelope::{Inbound, Profile},
    rate::Verdict,
    sessions::{Session, UserKey},
    state::AppState,
};

/// Handles one upstream message.
pub(super) async fn dispatch(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Result<String, StringRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (Query(query), body) = (query?, body?);
    let (session, gate) = match query.get("session_id") {
        Some(id) => {
            let session = state
                .hub
                .registry
                .get(id)
                .filter(|s| s.principal == principal);
            let gate = state.gates.session(id);
            match (session, gate) {
                (Some(session), Some(gate)) => (session, gate),
                _ => {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "unknown_session",
                        "no open session with that id belongs to this user on this node",
                    ));
                }
            }
        }
        None => {
            let gate = state.gates.user(&UserKey::of(&principal));
            let (session, _discarded) = Session::new(
                state.next_session_id(),
                principal,
                Profile::Native,
                TransportKind::Sse,
                1,
                state.shutdown.child_token(),
            );
            (session, gate)
        }
    };
    if gate.take() != Verdict::Allow {
        metrics::counter!("switchboard_messages_rate_limited_total").increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "message rate exceeded; slow down",
        ));
    }
    metrics::counter!("switchboard_messages_in_total", "profile" => "http").increment(1);
    let max_depth = state.config.server.max_json_depth;
    let (msg_type, content) = match Profile::Native.parse_limited(&body, "", max_depth) {
        Ok(Inbound::Message { msg_type, content }) => (msg_type, content),
        Ok(Inbound::Reply(reply)) => return Ok((StatusCode::OK, Json(json!({ "reply": reply })))),
        Err(e) => return Err(ApiError::bad_request(e.code(), e.to_string())),
    };
    // One at a time per session, in arrival order, with the session's WebSocket frames.
    let _turn = gate.turn().await;
    let span = session.span();
    state
        .dispatcher
        .dispatch(session, msg_type, content)
        .instrument(span)
        .await
        .map_err(status_of)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "dispatched": true }))))
}

fn status_of(e: DispatchError) -> ApiError {
    let status = match &e {
        DispatchError::UnknownType(_) => StatusCode::NOT_FOUND,
        DispatchError::InvalidContent(_) => StatusCode::BAD_REQUEST,
        DispatchError::Forbidden(_) => StatusCode::FORBIDDEN,
        DispatchError::Listener(_) => StatusCode::UNPROCESSABLE_ENTITY,
        DispatchError::Fault(_) => StatusCode::BAD_GATEWAY,
        DispatchError::Busy => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, e.code(), e.to_string())
}
