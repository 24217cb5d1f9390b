//! Checks of `[[endpoints]]` paths: each path, and the routes it adds (an SSE endpoint also
//! serves `<path>/close`), must be a plain path that clashes with no built-in route and no
//! other endpoint. The router would otherwise refuse them at start with a panic.

use std::collections::HashMap;

use super::{EndpointConfig, Invalid, TransportKind};

/// Longest endpoint path.
pub(crate) const MAX_PATH_LEN: usize = 256;

/// Routes the host serves itself: the demo page, the admin page, health, metrics. Everything
/// under `/api` is reserved as well.
pub(crate) const BUILT_IN: [&str; 9] = [
    "/",
    "/app.js",
    "/style.css",
    "/admin",
    "/admin.js",
    "/admin.css",
    "/healthz",
    "/readyz",
    "/metrics",
];

/// Every route the endpoints add, in order: `(path, index of its endpoint)`.
pub(super) fn routes(endpoints: &[EndpointConfig]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        out.push((endpoint.path.clone(), i));
        if endpoint.transport == TransportKind::Sse {
            out.push((close_path(&endpoint.path), i));
        }
    }
    out
}

/// The close route of an SSE endpoint.
pub(super) fn close_path(path: &str) -> String {
    format!("{}/close", path.trim_end_matches('/'))
}

/// Checks every configured endpoint.
pub(super) fn check(endpoints: &[EndpointConfig]) -> Result<(), Invalid> {
    for (i, endpoint) in endpoints.iter().enumerate() {
        if !is_built_in(&endpoint.path) {
            check_path(i, &endpoint.path)?;
        }
        if let Some(secs) = endpoint.heartbeat_secs
            && !(1..=3600).contains(&secs)
        {
            return Err(Invalid::new(
                format!("endpoints[{i}].heartbeat_secs"),
                format!("{secs} is out of range; set it between 1 and 3600"),
            ));
        }
        if endpoint.text_type.is_empty() || endpoint.text_type.len() > 128 {
            return Err(Invalid::new(
                format!("endpoints[{i}].text_type"),
                "must be 1 to 128 characters; name the message type of plain-text frames",
            ));
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (route, i) in routes(endpoints) {
        let key = format!("endpoints[{i}].path");
        if is_built_in(&route) {
            return Err(Invalid::new(
                key,
                format!(
                    "route {route:?} clashes with a built-in route ({}, /api/...); choose another path",
                    BUILT_IN.join(", ")
                ),
            ));
        }
        if let Some(first) = seen.insert(route.clone(), i) {
            let why = if first == i {
                "twice".to_owned()
            } else {
                format!("also by endpoints[{first}]")
            };
            return Err(Invalid::new(
                key,
                format!(
                    "route {route:?} is served {why} (an SSE endpoint also serves <path>/close); \
                     give each endpoint its own path"
                ),
            ));
        }
    }
    Ok(())
}

fn is_built_in(route: &str) -> bool {
    BUILT_IN.contains(&route) || route == "/api" || route.starts_with("/api/")
}

/// A plain absolute path: `/seg/seg`, segments of `A-Z a-z 0-9 . _ ~ -`. No captures (`{x}`),
/// wildcards (`*`), empty segments or trailing slash, which the router reads as patterns or
/// refuses.
fn check_path(i: usize, path: &str) -> Result<(), Invalid> {
    let key = format!("endpoints[{i}].path");
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-'))
    };
    let well_formed = path.len() <= MAX_PATH_LEN
        && path
            .strip_prefix('/')
            .is_some_and(|rest| rest.split('/').all(segment_ok));
    if well_formed {
        return Ok(());
    }
    Err(Invalid::new(
        key,
        format!(
            "{path:?} is not a plain path; write it like \"/ws\" or \"/chat/ws\": it starts with \
             '/', has no empty segment or trailing '/', uses only A-Z a-z 0-9 . _ ~ - and is at \
             most {MAX_PATH_LEN} characters"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(path: &str, transport: TransportKind) -> EndpointConfig {
        EndpointConfig {
            path: path.into(),
            transport,
            profile: Default::default(),
            text_type: "t".into(),
            single_session: false,
            heartbeat_secs: None,
            auth: None,
            reply_via: None,
        }
    }

    #[test]
    fn clashing_and_malformed_paths_are_refused() {
        use TransportKind::{Sse, Websocket};
        let refused = |eps: &[EndpointConfig]| check(eps).unwrap_err().to_string();
        for path in [
            "/healthz",
            "/",
            "/metrics",
            "/readyz",
            "/admin",
            "/api",
            "/api/v1/messages",
        ] {
            assert!(
                refused(&[ep(path, Websocket)]).contains("built-in"),
                "{path}"
            );
        }
        for path in [
            "/{x}", "*", "/*rest", "/a/", "//a", "ws", "/a b", "/:id", "",
        ] {
            assert!(
                refused(&[ep(path, Websocket)]).contains("plain path"),
                "{path}"
            );
        }
        assert!(refused(&[ep("/a", Sse), ep("/a/close", Websocket)]).contains("endpoints[0]"));
        assert!(refused(&[ep("/a", Websocket), ep("/a", Sse)]).contains("also by"));
        assert!(check(&[ep("/a", Sse), ep("/b", Sse), ep("/a/ws", Websocket)]).is_ok());
    }
}
