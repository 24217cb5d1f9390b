//! The server-sent events transport: a `text/event-stream` of the session's outbound queue.
//! An SSE session is a session like any other (registry, deliveries, limits); browsers'
//! `EventSource` cannot send headers, so the query token works here too. Clients send through
//! `POST /api/v1/dispatch?session_id=<id>`.
//!
//! Each message is `event: message`, `id: <n>`, `data: <frame text of the profile>`.
//! The `ruoyi-plus` profile starts with the comment `connected`; every profile gets comment
//! heartbeats (`heartbeat`) every `heartbeat_secs` of the endpoint (default 60).

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{RawQuery, State},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::{Stream, StreamExt, stream};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;

use super::{Admitted, ConnectionGauge, admit, greet};
use crate::{
    accept::Conn,
    auth::{RequestInfo, find_token},
    close_codes,
    config::EndpointConfig,
    envelope::Profile,
    frame::Frame,
    http_error::ApiError,
    state::AppState,
};

/// Heartbeat interval of SSE endpoints that do not set `heartbeat_secs`.
pub(crate) const DEFAULT_HEARTBEAT_SECS: u64 = 60;

/// `GET <endpoint path>`: opens the event stream.
pub(crate) async fn open(
    State(state): State<AppState>,
    axum::Extension(endpoint): axum::Extension<Arc<EndpointConfig>>,
    conn: Option<axum::Extension<Conn>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let conn = conn.map(|axum::Extension(c)| c);
    let admitted = match admit(&state, &endpoint, conn.as_ref(), query.as_deref(), &headers).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let session = admitted.session().clone();
    // Counted from here: a client that leaves while `connected` runs drops this guard.
    let gauge = ConnectionGauge::new("sse", session.profile);
    greet(&state, &session);
    state.dispatcher.connected(session.clone()).await;
    let opening = match session.profile {
        Profile::RuoyiPlus => Some(Event::default().comment("connected")),
        _ => None,
    };
    let heartbeat = Duration::from_secs(
        endpoint
            .heartbeat_secs
            .unwrap_or(DEFAULT_HEARTBEAT_SECS)
            .max(1),
    );
    let events = stream::iter(opening.map(Ok)).chain(events(StreamState {
        admitted,
        state,
        next_id: 0,
        _gauge: gauge,
    }));
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
        .into_response();
    let h = response.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    // Tells nginx-style proxies not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Owns the session for the life of the stream: dropping it (client gone, shutdown, slow
/// consumer) unregisters the session and tells the listeners.
struct StreamState {
    admitted: Admitted,
    state: AppState,
    next_id: u64,
    /// Takes the connection off `switchboard_connections` when the stream ends.
    _gauge: ConnectionGauge,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        let session = self.admitted.session().clone();
        let dispatcher = self.state.dispatcher.clone();
        // The registration (a field) is dropped as soon as this returns, before the spawned
        // task runs: listeners see the user's remaining sessions only.
        self.state
            .tracker
            .spawn(async move { dispatcher.disconnected(session).await });
    }
}

fn events(state: StreamState) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(state, |mut st| async move {
        let session = st.admitted.session().clone();
        let frame = tokio::select! {
            biased;
            () = session.closing() => return None,
            frame = st.admitted.outbound.recv() => frame?,
        };
        st.next_id += 1;
        let text = match frame {
            Frame::Message(msg) => msg.encoded(session.profile).clone(),
            Frame::Text(text) => text,
        };
        let event = Event::default()
            .event("message")
            .id(st.next_id.to_string())
            .data(text.as_str());
        Some((Ok(event), st))
    })
}

/// `GET <endpoint path>/close`: closes the streams of this endpoint that were opened with the
/// caller's exact token (the RuoYi-Vue-Plus front end calls it when leaving): the same user's
/// other devices, holding other tokens, keep theirs. A token that opened nothing here is
/// still verified, so a bad one gets 401.
pub(crate) async fn close(
    State(state): State<AppState>,
    axum::Extension(endpoint): axum::Extension<Arc<EndpointConfig>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let token = find_token(query.as_deref(), &headers)?;
    let mut closed = 0;
    state.hub.registry.for_all(None, |s| {
        let same_token = s.credential().is_some_and(|c| *c.token == *token.token);
        if same_token && s.endpoint() == Some(endpoint.path.as_str()) {
            s.close(close_codes::NORMAL);
            closed += 1;
        }
    });
    if closed == 0 {
        let auth = state.auth();
        let provider = auth.get(auth.index_of(endpoint.auth.as_deref()));
        let request = RequestInfo {
            query: query.as_deref(),
            headers: &headers,
        };
        provider.authenticate(&token.token, &request).await?;
    }
    Ok((StatusCode::OK, Json(json!({ "closed": closed }))))
}
