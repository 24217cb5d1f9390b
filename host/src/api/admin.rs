//! Operator actions and view (API key): `POST /api/v1/admin/reload`, `POST
//! /api/v1/admin/drain` and `GET /api/v1/admin/status` (what the admin page shows).

use std::{collections::BTreeMap, sync::Arc};

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::Serialize;

use crate::{
    cluster::BrokerState, config::TransportKind, http_error::ApiError, state::AppState,
    status::PluginsStatus,
};

/// `POST /api/v1/admin/reload`: reads the config file again and applies what can change live.
pub(super) async fn reload(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let outcome = crate::reload::from_file(&state);
    crate::reload::log_outcome("admin API", &outcome);
    match outcome {
        Ok(report) => Ok(Json(report)),
        Err(e) => Err(ApiError::bad_request(
            "config_invalid",
            format!("{e:#}; nothing was changed"),
        )),
    }
}

/// `POST /api/v1/admin/drain`: starts draining this node.
pub(super) async fn drain(State(state): State<AppState>) -> impl IntoResponse {
    (StatusCode::ACCEPTED, Json(crate::drain::start(&state)))
}

/// `GET /api/v1/admin/status`: what the admin page shows of this node.
#[derive(Serialize)]
pub(super) struct NodeStatus {
    node_id: Arc<str>,
    /// Whether the node is draining.
    draining: bool,
    broker: BrokerStatus,
    /// The cluster's live nodes, this one included; `null` when the broker cannot be asked.
    nodes: Option<Vec<Arc<str>>>,
    sessions: SessionsStatus,
    plugins: PluginsStatus,
    /// The last warnings and errors logged, oldest first.
    warnings: Vec<crate::recent::Warning>,
}

#[derive(Serialize)]
struct BrokerStatus {
    kind: &'static str,
    state: BrokerState,
}

#[derive(Serialize)]
struct SessionsStatus {
    total: usize,
    /// Sessions per endpoint, in path order.
    by_endpoint: Vec<EndpointSessions>,
}

#[derive(Serialize)]
struct EndpointSessions {
    endpoint: String,
    transport: &'static str,
    profile: &'static str,
    sessions: usize,
}

pub(super) async fn status(State(state): State<AppState>) -> Json<NodeStatus> {
    let mut counts: BTreeMap<(String, &'static str, &'static str), usize> = BTreeMap::new();
    let mut total = 0;
    state.hub.registry.for_all(None, |s| {
        total += 1;
        let transport = match s.transport {
            TransportKind::Websocket => "websocket",
            TransportKind::Sse => "sse",
        };
        let key = (
            s.endpoint().unwrap_or_default().to_owned(),
            transport,
            s.profile.name(),
        );
        *counts.entry(key).or_default() += 1;
    });
    let this = state.hub.node_id.clone();
    let nodes = match &state.hub.presence {
        None => Some(vec![this.clone()]),
        Some(presence) => presence.other_nodes().await.map(|mut nodes| {
            nodes.push(this.clone());
            nodes.sort();
            nodes
        }),
    };
    Json(NodeStatus {
        node_id: this,
        nodes,
        draining: state.draining.is_cancelled(),
        broker: BrokerStatus {
            kind: state.hub.broker.name(),
            state: state.hub.broker.state(),
        },
        sessions: SessionsStatus {
            total,
            by_endpoint: counts
                .into_iter()
                .map(
                    |((endpoint, transport, profile), sessions)| EndpointSessions {
                        endpoint,
                        transport,
                        profile,
                        sessions,
                    },
                )
                .collect(),
        },
        plugins: state.dispatcher.status(),
        warnings: crate::recent::warnings(),
    })
}
