//! yudao's WebSocket sender messages: `RedisWebSocketMessage` (Redis pub/sub, written by
//! `JsonUtils`) and `RabbitMQWebSocketMessage` (RabbitMQ, written by Spring AMQP's
//! `Jackson2JsonMessageConverter`). Both are one JSON object:
//!
//! ```json
//! {"headers":{"tenant-id":"1"},"userType":2,"userId":1,"messageType":"notice-push","messageContent":"{\"a\":1}"}
//! ```
//!
//! `JsonUtils` leaves out null fields, the AMQP converter writes them as `null`; `userId` is a
//! number, or a string beyond JavaScript's safe integers (yudao's `NumberSerializer`). The
//! tenant travels in `headers` on Redis and in the AMQP header `tenant-id` (a long) on RabbitMQ.
//!
//! Recipients follow yudao's `AbstractWebSocketMessageSender.send`: a non-empty `sessionId`
//! first, then `userType` with `userId` (that user's sessions), then `userType` alone (every
//! session of that user type). With a tenant, only that tenant's sessions receive it, as yudao
//! filters its user-type broadcast by the sender's tenant; without one, every tenant's.
//! `messageContent` is JSON text (`sendObject` writes it with `JsonUtils`): it is delivered as
//! that JSON, so yudao clients get the exact string back and native clients the value; text
//! that is not JSON is delivered as a JSON string.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, value::RawValue};

use super::{Delivery, Reason, Reject};
use crate::target::{Scope, Target, UserRef};

/// The header that carries the tenant (yudao's `WebFrameworkUtils.HEADER_TENANT_ID`).
pub(super) const TENANT_HEADER: &str = "tenant-id";
/// Longest message type, as for client envelopes.
const MAX_TYPE_LEN: usize = 128;

/// The fields of both message classes; others are ignored, as yudao's Jackson does.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    #[serde(default)]
    headers: Option<HashMap<String, Value>>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    user_type: Option<Number>,
    #[serde(default)]
    user_id: Option<Number>,
    #[serde(default)]
    message_type: Option<String>,
    #[serde(default)]
    message_content: Option<String>,
}

/// A Java `Integer` or `Long`: a JSON number, or its decimal text (Jackson reads both).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Text(String),
}

impl Number {
    fn value(&self) -> Option<i64> {
        match self {
            Number::Int(n) => Some(*n),
            Number::Text(s) => s.trim().parse().ok(),
        }
    }
}

/// A `RedisWebSocketMessage`: the tenant is in its `headers`.
pub(super) fn decode_redis(body: &[u8]) -> Result<Delivery, Reject> {
    let message = parse(body)?;
    let tenant = match message.headers.as_ref().and_then(|h| h.get(TENANT_HEADER)) {
        Some(value) => tenant_text(value)?,
        None => None,
    };
    map(message, tenant)
}

/// A `RabbitMQWebSocketMessage`: `tenant` from the AMQP header, already read.
pub(super) fn decode_amqp(body: &[u8], tenant: Option<String>) -> Result<Delivery, Reject> {
    map(parse(body)?, tenant)
}

fn parse(body: &[u8]) -> Result<Message, Reject> {
    serde_json::from_slice(body).map_err(|e| {
        Reject::new(
            Reason::Malformed,
            format!("not a yudao WebSocket message: {e}"),
        )
    })
}

/// A tenant header value: text or a number; empty or null means none.
pub(super) fn tenant_text(value: &Value) -> Result<Option<String>, Reject> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(Reject::new(
            Reason::BadTenant,
            format!("header {TENANT_HEADER} is {other}, not a tenant id"),
        )),
    }
}

fn map(m: Message, tenant: Option<String>) -> Result<Delivery, Reject> {
    let msg_type = match m.message_type {
        Some(t) if !t.is_empty() && t.len() <= MAX_TYPE_LEN => t,
        other => {
            return Err(Reject::new(
                Reason::BadType,
                format!("messageType {other:?} is not 1 to {MAX_TYPE_LEN} characters"),
            ));
        }
    };
    let user_type = match &m.user_type {
        None => None,
        Some(n) => Some(
            n.value()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    Reject::new(
                        Reason::NoTarget,
                        format!("userType {n:?} is not a user type"),
                    )
                })?,
        ),
    };
    let target = match (
        m.session_id.filter(|s| !s.is_empty()),
        user_type,
        &m.user_id,
    ) {
        (Some(session), _, _) => Target::Session(session),
        (None, Some(user_type), Some(id)) => {
            let id = id.value().ok_or_else(|| {
                Reject::new(Reason::NoTarget, format!("userId {id:?} is not a number"))
            })?;
            Target::User(UserRef {
                user_type,
                user_id: id.to_string(),
            })
        }
        (None, Some(user_type), None) => Target::UserType(user_type),
        (None, None, _) => {
            return Err(Reject::new(
                Reason::NoTarget,
                format!("{msg_type:?} names neither sessionId nor userType"),
            ));
        }
    };
    let content = match m.message_content {
        None => RawValue::from_string("null".into()),
        Some(text) => match RawValue::from_string(text.clone()) {
            Ok(json) => Ok(json),
            Err(_) => serde_json::to_string(&text).and_then(RawValue::from_string),
        },
    }
    .map_err(|e| Reject::new(Reason::Malformed, format!("messageContent: {e}")))?;
    Ok(Delivery {
        target,
        scope: match tenant {
            Some(t) => Scope::Tenant(Some(t.into())),
            None => Scope::All,
        },
        msg_type,
        content,
        transport: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_yudao_precedence() {
        let d = decode_redis(br#"{"headers":{"tenant-id":"1"},"sessionId":"s1","userType":2,"userId":1,"messageType":"t","messageContent":"{\"a\":1}"}"#).unwrap();
        assert_eq!(d.target, Target::Session("s1".into()));
        assert_eq!(d.scope, Scope::Tenant(Some("1".into())));
        assert_eq!(d.content.get(), r#"{"a":1}"#);
        let d = decode_redis(br#"{"headers":{},"userType":2,"userId":"9007199254740993","messageType":"t","messageContent":"x y"}"#).unwrap();
        assert_eq!(
            d.target,
            Target::User(UserRef {
                user_type: 2,
                user_id: "9007199254740993".into()
            })
        );
        assert_eq!(d.scope, Scope::All);
        assert_eq!(d.content.get(), r#""x y""#);
        let d = decode_amqp(
            br#"{"sessionId":null,"userType":1,"userId":null,"messageType":"t","messageContent":"1"}"#,
            Some("7".into()),
        )
        .unwrap();
        assert_eq!(d.target, Target::UserType(1));
        assert_eq!(d.scope, Scope::Tenant(Some("7".into())));
    }

    #[test]
    fn bad_messages_say_why() {
        for (body, reason) in [
            (&b"not json"[..], Reason::Malformed),
            (br#"[1]"#, Reason::Malformed),
            (br#"{"messageType":"t"}"#, Reason::NoTarget),
            (br#"{"userType":-1,"messageType":"t"}"#, Reason::NoTarget),
            (br#"{"userType":1}"#, Reason::BadType),
            (br#"{"userType":1,"messageType":""}"#, Reason::BadType),
            (
                br#"{"headers":{"tenant-id":[1]},"userType":1,"messageType":"t"}"#,
                Reason::BadTenant,
            ),
        ] {
            let reject = decode_redis(body).unwrap_err();
            assert_eq!(reject.reason, reason, "{}", String::from_utf8_lossy(body));
        }
    }
}
