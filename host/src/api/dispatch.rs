//! `POST /api/v1/dispatch`: the upstream half for clients that receive over SSE. The body is
//! an envelope; it runs the same plugin dispatch as a WebSocket frame from the token's user.
//! With `?session_id=<id>` (a session of the same user) the plugin sees that session, so its
//! replies reach the client's event stream; without it the message comes from a transient
//! session that receives nothing.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Query, State},
    response::IntoResponse,
};
use http::{HeaderMap, StatusCode};
use serde_json::json;

use super::error::ApiError;
use crate::{
    auth::{AuthError, find_token},
    config::TransportKind,
    dispatch::DispatchError,
    envelope::{Inbound, Profile},
    server::AppState,
    sessions::Session,
};

/// Handles one upstream message.
pub async fn dispatch(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> Result<impl IntoResponse, ApiError> {
    let token = find_token(&query, &headers).ok_or(AuthError::Missing)?;
    let principal = state.auth.verify(&token.token)?;
    let session = match query.get("session_id") {
        Some(id) => state
            .hub
            .registry
            .get(id)
            .filter(|s| s.principal == principal)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_session",
                    "no open session with that id belongs to this user",
                )
            })?,
        None => {
            let (session, _discarded) = Session::new(
                state.next_session_id(),
                principal,
                Profile::Native,
                TransportKind::Sse,
                1,
                state.shutdown.child_token(),
            );
            session
        }
    };
    if body.len() > state.config.server.max_frame_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "frame_too_large",
            format!("at most {} bytes", state.config.server.max_frame_bytes),
        ));
    }
    metrics::counter!("switchboard_messages_in_total", "profile" => "http").increment(1);
    let (msg_type, content) = match Profile::Native.parse(&body, "") {
        Ok(Inbound::Message { msg_type, content }) => (msg_type, content),
        Ok(Inbound::Reply(reply)) => return Ok((StatusCode::OK, Json(json!({ "reply": reply })))),
        Err(e) => return Err(ApiError::bad_request(e.code(), e.to_string())),
    };
    state
        .dispatcher
        .dispatch(session, msg_type, content)
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
