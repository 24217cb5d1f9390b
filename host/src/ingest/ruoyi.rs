//! RuoYi-Vue-Plus's Redisson topics: `WebSocketUtils.publishMessage` publishes a
//! `WebSocketMessageDto{sessionKeys, message}` on `global:websocket`, and
//! `SseMessageUtils.publishMessage` an `SseMessageDto{userIds, message}` on `global:sse`
//! (each prefixed `<redisson.keyPrefix>:` when one is set).
//!
//! Both go through the codec RuoYi-Vue-Plus gives Redisson: a `TypedJsonJacksonCodec` over
//! Jackson with default typing (`NON_FINAL`, so non-final values are wrapped as
//! `["java.class.Name", value]`), fields sorted by name, nulls left out:
//!
//! ```json
//! ["org.dromara.common.websocket.dto.WebSocketMessageDto",{"message":"hi","sessionKeys":["java.util.ArrayList",[1,2]]}]
//! ```
//!
//! The ids are user ids; an empty or missing list means every session (`publishAll`), as in
//! RuoYi's topic listeners. RuoYi's user ids are unique across tenants and its listeners do
//! not filter by tenant, so neither does this. The message is text, delivered as a JSON
//! string: the `ruoyi-plus` profile sends the text alone.

use serde_json::{Value, value::RawValue};

use super::{Delivery, Reason, Reject};
use crate::{
    config::TransportKind,
    target::{Scope, Target, UserRef},
};

/// The WebSocket topic (RuoYi's `WebSocketConstants.WEB_SOCKET_TOPIC`).
const WEBSOCKET_TOPIC: &str = "global:websocket";
/// The SSE topic (RuoYi's `SseEmitterManager.SSE_TOPIC`).
const SSE_TOPIC: &str = "global:sse";

/// The two channels of one source and how their messages map.
#[derive(Debug, Clone)]
pub(super) struct Topics {
    /// `global:websocket` with the key prefix.
    websocket: String,
    /// `global:sse` with the key prefix.
    sse: String,
    /// User types whose sessions a RuoYi user id names.
    user_types: Vec<u32>,
    /// The message type deliveries carry.
    message_type: String,
}

impl Topics {
    pub(super) fn new(key_prefix: &str, user_types: &[u32], message_type: &str) -> Self {
        // Redisson's name mapper in RuoYi (`KeyPrefixHandler`): `<prefix>:<name>`.
        let name = |topic: &str| match key_prefix.trim() {
            "" => topic.to_owned(),
            prefix => format!("{prefix}:{topic}"),
        };
        Self {
            websocket: name(WEBSOCKET_TOPIC),
            sse: name(SSE_TOPIC),
            user_types: user_types.to_vec(),
            message_type: message_type.to_owned(),
        }
    }

    /// The channels to subscribe to.
    pub(super) fn channels(&self) -> Vec<String> {
        vec![self.websocket.clone(), self.sse.clone()]
    }

    /// Decodes a message published on `channel`.
    pub(super) fn decode(&self, channel: &str, body: &[u8]) -> Result<Delivery, Reject> {
        let (ids_field, transport) = if channel == self.sse {
            ("userIds", TransportKind::Sse)
        } else {
            ("sessionKeys", TransportKind::Websocket)
        };
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Reject::new(Reason::Malformed, format!("not JSON: {e}")))?;
        let Value::Object(mut dto) = untyped(value) else {
            return Err(Reject::new(
                Reason::Malformed,
                format!("a message on {channel} is not a Redisson-typed DTO object"),
            ));
        };
        let message = match dto.remove("message") {
            Some(Value::String(text)) => text,
            other => {
                return Err(Reject::new(
                    Reason::Malformed,
                    format!("`message` is {other:?}, not text"),
                ));
            }
        };
        let ids = match dto.remove(ids_field).map(untyped) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(ids)) => ids
                .into_iter()
                .map(|id| user_id(untyped(id)))
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => {
                return Err(Reject::new(
                    Reason::Malformed,
                    format!("`{ids_field}` is {other}, not a list of user ids"),
                ));
            }
        };
        let target = if ids.is_empty() {
            Target::Everyone
        } else {
            Target::Users(
                ids.iter()
                    .flat_map(|id| {
                        self.user_types.iter().map(|&user_type| UserRef {
                            user_type,
                            user_id: id.clone(),
                        })
                    })
                    .collect(),
            )
        };
        let content = serde_json::to_string(&message)
            .and_then(RawValue::from_string)
            .map_err(|e| Reject::new(Reason::Malformed, format!("message: {e}")))?;
        Ok(Delivery {
            target,
            scope: Scope::All,
            msg_type: self.message_type.clone(),
            content,
            transport: Some(transport),
        })
    }
}

/// A value without Jackson's default-typing wrapper: `["java.Type", value]` → `value`. The
/// first element must read as a Java class name, so a bare list of two text ids stays a list.
fn untyped(value: Value) -> Value {
    let is_class_name = |name: &str| {
        name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '$')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '$'))
    };
    match value {
        Value::Array(mut pair)
            if pair.len() == 2 && pair[0].as_str().is_some_and(is_class_name) =>
        {
            pair.pop().unwrap_or(Value::Null)
        }
        other => other,
    }
}

/// A RuoYi user id (a Java `Long`): a number, or its decimal text.
fn user_id(value: Value) -> Result<String, Reject> {
    match &value {
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Ok(s.clone()),
        _ => Err(Reject::new(
            Reason::Malformed,
            format!("{value} is not a user id"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(prefix: &str) -> Topics {
        Topics::new(prefix, &[1, 2], "message")
    }

    #[test]
    fn typed_dtos_map_to_users_or_everyone() {
        let t = topics("");
        let d = t
            .decode(
                "global:websocket",
                br#"["org.dromara.common.websocket.dto.WebSocketMessageDto",{"message":"hi","sessionKeys":["java.util.ArrayList",[5]]}]"#,
            )
            .unwrap();
        assert_eq!(
            d.target,
            Target::Users(vec![
                UserRef {
                    user_type: 1,
                    user_id: "5".into()
                },
                UserRef {
                    user_type: 2,
                    user_id: "5".into()
                }
            ])
        );
        assert_eq!(d.transport, Some(TransportKind::Websocket));
        assert_eq!(d.content.get(), r#""hi""#);
        let d = t
            .decode(
                "global:sse",
                br#"["org.dromara.common.sse.dto.SseMessageDto",{"message":"all"}]"#,
            )
            .unwrap();
        assert_eq!(d.target, Target::Everyone);
        assert_eq!(d.transport, Some(TransportKind::Sse));
        assert_eq!(
            topics("app").channels(),
            vec!["app:global:websocket", "app:global:sse"]
        );
    }

    #[test]
    fn bad_dtos_are_malformed() {
        let t = topics("");
        for body in [
            &b"nope"[..],
            br#"["x",{"sessionKeys":[1]}]"#,
            br#"["x",{"message":"m","sessionKeys":["java.util.ArrayList",[[1]]]}]"#,
            br#"["x",{"message":"m","sessionKeys":"1"}]"#,
            br#"[1,2]"#,
            br#"["1",{"message":"m"}]"#,
        ] {
            let r = t.decode("global:websocket", body).unwrap_err();
            assert_eq!(
                r.reason,
                Reason::Malformed,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
