//! The HTTP error shape: `{"code": "stable_snake_case", "message": "..."}` with a fitting status.
//! Messages are written for clients; internal details are logged, never sent. Every refusal
//! takes this shape: handlers' own, extractors' rejections, unknown paths and wrong methods.

use axum::{
    Json,
    extract::rejection,
    response::{IntoResponse, Response},
};
use http::StatusCode;

/// An error answered to an HTTP client.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable, client-safe text.
    pub message: String,
}

impl ApiError {
    /// A new error.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with `code`.
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 with `code`.
    pub(crate) fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 404 `not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        if e.is_refusal() {
            ApiError::unauthorized(e.code(), e.to_string())
        } else {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string())
        }
    }
}

/// Rejections of axum's extractors answer in the same shape: a body, query or path that does
/// not parse is 400 `invalid_request` whatever axum's own status would be (422 for a JSON body
/// of the wrong shape, say), so clients see one status for every malformed request.
macro_rules! invalid_request {
    ($($rejection:ty),* $(,)?) => {$(
        impl From<$rejection> for ApiError {
            fn from(r: $rejection) -> Self {
                ApiError::bad_request("invalid_request", r.body_text())
            }
        }
    )*};
}

invalid_request!(
    rejection::JsonRejection,
    rejection::QueryRejection,
    rejection::PathRejection,
    rejection::StringRejection,
);

/// A plain request to a WebSocket endpoint keeps axum's status (400, 405 or 426: what was
/// missing from the upgrade).
impl From<axum::extract::ws::rejection::WebSocketUpgradeRejection> for ApiError {
    fn from(r: axum::extract::ws::rejection::WebSocketUpgradeRejection) -> Self {
        ApiError::new(r.status(), "websocket_upgrade_required", r.body_text())
    }
}

/// Answer for a path no route serves.
pub(crate) async fn no_route() -> ApiError {
    ApiError::not_found("no such path")
}

/// Answer for a method the path does not take.
pub(crate) async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not take that method",
    )
}
