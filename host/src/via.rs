//! Which channels a delivery may use: [`Via`] limits it to sessions of some transports
//! and/or some endpoints (RuoYi-Vue-Plus keeps WebSocket and SSE apart: its WebSocket helper
//! sends only to WebSocket sessions, its SSE manager only to SSE streams). Carried by the
//! push API and by the cluster publication, so every node applies the same filter.

use serde::{Deserialize, Serialize};

use crate::config::TransportKind;

/// Longest list of endpoints or transports in one filter.
pub(crate) const MAX_VIA_ENTRIES: usize = 64;

/// A channel filter; the default (both lists empty) admits every session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Via {
    /// Only sessions of these transports; empty: any transport.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transports: Vec<TransportKind>,
    /// Only sessions connected to these endpoint paths; empty: any endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
}

impl Via {
    /// Whether this filter admits every session.
    pub(crate) fn is_any(&self) -> bool {
        self.transports.is_empty() && self.endpoints.is_empty()
    }

    /// Whether a session of `transport` on `endpoint` may receive the delivery.
    pub(crate) fn admits(&self, transport: TransportKind, endpoint: Option<&str>) -> bool {
        (self.transports.is_empty() || self.transports.contains(&transport))
            && (self.endpoints.is_empty()
                || endpoint.is_some_and(|e| self.endpoints.iter().any(|v| v == e)))
    }

    /// Only sessions of `transport`.
    pub(crate) fn transport(transport: TransportKind) -> Self {
        Self {
            transports: vec![transport],
            endpoints: Vec::new(),
        }
    }

    /// Only sessions on `endpoint`.
    pub(crate) fn endpoint(endpoint: &str) -> Self {
        Self {
            transports: Vec::new(),
            endpoints: vec![endpoint.to_owned()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_transport_and_endpoint() {
        use TransportKind::{Sse, Websocket};
        assert!(Via::default().admits(Sse, None));
        let ws = Via::transport(Websocket);
        assert!(ws.admits(Websocket, Some("/a")) && !ws.admits(Sse, Some("/a")));
        let a = Via::endpoint("/a");
        assert!(a.admits(Sse, Some("/a")) && !a.admits(Sse, Some("/b")) && !a.admits(Sse, None));
        let json: Via =
            serde_json::from_str(r#"{"transports":["sse"],"endpoints":["/resource/sse"]}"#)
                .unwrap();
        assert!(json.admits(Sse, Some("/resource/sse")));
        assert!(serde_json::from_str::<Via>(r#"{"nope":1}"#).is_err());
    }
}
