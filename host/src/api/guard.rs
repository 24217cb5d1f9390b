//! What runs before a handler reads a request body: authentication (API key or user token),
//! then one bounded, timed read of the body. A request without valid credentials is answered
//! before a byte of its body is read, so unauthenticated clients cannot make the host buffer
//! anything; an authenticated one can send at most the route's limit, within
//! `server.body_timeout_secs`.

use std::time::Duration;

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt as _;

use crate::http_error::ApiError;
use crate::{
    accept::Conn,
    auth::{Principal, RequestInfo, find_token},
    state::AppState,
};

/// Checks `Authorization: Bearer <api key>` against `api.keys`.
pub(crate) fn check_api_key(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = crate::auth::bearer(headers).ok_or_else(|| {
        ApiError::unauthorized("missing_api_key", "send Authorization: Bearer <api key>")
    })?;
    let known = state
        .live()
        .api
        .keys
        .iter()
        .any(|key| constant_time_eq(key.as_bytes(), given.as_bytes()));
    if known {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid_api_key", "unknown API key"))
    }
}

/// Compares without an early exit, so response time does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Marks the request's connection authenticated (it leaves the pending set).
pub(crate) fn authenticated(req: &Request) {
    if let Some(conn) = req.extensions().get::<Conn>() {
        conn.authenticated();
    }
}

/// Middleware: the API key, before anything else.
pub(crate) async fn api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Err(e) = check_api_key(&state, req.headers()) {
        return e.into_response();
    }
    authenticated(&req);
    next.run(req).await
}

/// Middleware: a valid user token; the handler finds the [`crate::auth::Principal`] in the
/// request's extensions. With `?session_id=` naming an open session of this node admitted
/// with this very token, the session's principal is used (it was verified by its endpoint's
/// provider, and is closed when its credential ends); otherwise `[auth]` verifies the token.
pub(crate) async fn user_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let verified = match find_token(req.uri().query(), req.headers()) {
        Err(e) => Err(e),
        Ok(found) => match session_principal(&state, req.uri().query(), &found.token) {
            Some(principal) => Ok(principal),
            None => {
                let request = RequestInfo {
                    query: req.uri().query(),
                    headers: req.headers(),
                };
                state
                    .auth()
                    .default_provider()
                    .authenticate(&found.token, &request)
                    .await
                    .map(|v| v.principal)
            }
        },
    };
    match verified {
        Ok(principal) => {
            authenticated(&req);
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The principal of the open session `?session_id=` names, if it was admitted with `token`.
fn session_principal(state: &AppState, query: Option<&str>, token: &str) -> Option<Principal> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    let id = pairs.into_iter().find(|(k, _)| k == "session_id")?.1;
    let session = state.hub.registry.get(&id)?;
    let same = session.credential().is_some_and(|c| *c.token == *token);
    (same && !session.is_closing()).then(|| session.principal.clone())
}

/// Middleware: only with `server.dev_tokens`; 404 otherwise, before the body is read.
pub(crate) async fn dev_only(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !state.config.server.dev_tokens {
        return ApiError::not_found("dev tokens are disabled (server.dev_tokens)").into_response();
    }
    next.run(req).await
}

/// Middleware: reads the whole body, at most `limit` bytes within `timeout`, and hands the
/// handler the bytes read. 413 with `too_large` (the route's code) past the limit (before
/// reading when `Content-Length` says so), 408 `body_timeout` when the client is too slow.
pub(crate) async fn read_body(
    limit: usize,
    too_large: &'static str,
    timeout: Duration,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return refuse_size(too_large, limit).into_response();
    }
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, limit);
    let bytes = match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return refuse_size(too_large, limit).into_response();
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "reading a request body failed");
            return ApiError::bad_request("body_unreadable", "the request body could not be read")
                .into_response();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("send the body within {}s", timeout.as_secs()),
            )
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn refuse_size(code: &'static str, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        code,
        format!("at most {limit} bytes"),
    )
}
