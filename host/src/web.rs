//! The web pages, embedded in the binary. The demo page is served at `/` only with
//! `server.dev_tokens`: it is a development console (its default way in is a dev token), not
//! something a production host should expose. The admin page at `/admin` is always served
//! and shows nothing until the operator gives it an API key. Every answer forbids framing
//! and inline code (CSP).

use axum::{
    Router,
    http::{HeaderName, header},
    response::IntoResponse,
    routing::get,
};

/// Scripts, styles and connections only from the host itself; no framing, no plugins, no
/// inline code (the page has none).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Routes of the admin page (`/admin`, always: it shows nothing without an API key, which it
/// sends to `GET /api/v1/admin/status`) and of the demo page (`/`, only with `dev_tokens`).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(dev_tokens: bool) -> Router<S> {
    let admin = Router::new()
        .route(
            "/admin",
            get(|| async {
                asset(
                    "text/html; charset=utf-8",
                    include_str!("../static/admin.html"),
                )
            }),
        )
        .route(
            "/admin.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("../static/admin.js"),
                )
            }),
        )
        .route(
            "/admin.css",
            get(|| async {
                asset(
                    "text/css; charset=utf-8",
                    include_str!("../static/admin.css"),
                )
            }),
        );
    if !dev_tokens {
        return admin;
    }
    admin
        .route(
            "/",
            get(|| async {
                asset(
                    "text/html; charset=utf-8",
                    include_str!("../static/index.html"),
                )
            }),
        )
        .route(
            "/app.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("../static/app.js"),
                )
            }),
        )
        .route(
            "/style.css",
            get(|| async {
                asset(
                    "text/css; charset=utf-8",
                    include_str!("../static/style.css"),
                )
            }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let headers: [(HeaderName, &'static str); 6] = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    (headers, body)
}
