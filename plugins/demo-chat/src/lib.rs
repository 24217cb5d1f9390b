//! The yudao (ruoyi-vue-pro) WebSocket demo chat.
//!
//! A client sends `demo-message-send` with `{"text", "toUserId"}`. With a
//! `toUserId`, that user (of the sender's user type) gets `demo-message-receive`
//! with `single: true`; without one, every user of the sender's user type gets
//! it with `single: false`.

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use switchboard_guest::{Content, Context, Listener, Result, UserRef};

/// The content of `demo-message-send`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DemoSend {
    /// The chat text.
    text: String,
    /// The recipient; absent, null or empty means every user of the sender's type.
    to_user_id: Option<UserId>,
}

/// A user id as yudao clients send it: a string or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum UserId {
    /// `"42"`.
    Text(String),
    /// `42`.
    Number(Number),
}

impl UserId {
    /// The id as the host indexes it, or `None` when empty.
    fn into_id(self) -> Option<String> {
        let id = match self {
            Self::Text(s) => s,
            Self::Number(n) => n.to_string(),
        };
        (!id.is_empty()).then_some(id)
    }
}

/// The content of `demo-message-receive`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DemoReceive<'a> {
    /// The sender's id: a JSON number when it is an integer, as yudao sends it.
    from_user_id: Value,
    /// The chat text.
    text: &'a str,
    /// Whether this went to one user rather than to all.
    single: bool,
}

/// The sender's id as yudao's Java side would serialize it (a `Long` when numeric).
fn yudao_user_id(id: &str) -> Value {
    match id.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(id),
    }
}

/// Parses the content, whether the host passes the object itself or the JSON
/// string that yudao clients wrap it in.
fn parse_send(content: &Content) -> Result<DemoSend> {
    match content.parse::<DemoSend>() {
        Ok(send) => Ok(send),
        Err(err) => match content.parse::<String>() {
            Ok(inner) => Content::new(inner).parse(),
            Err(_) => Err(err),
        },
    }
}

/// The demo listener.
struct DemoChat;

impl Listener for DemoChat {
    const NAME: &'static str = env!("CARGO_PKG_NAME");
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const MESSAGE_TYPES: &'static [&'static str] = &["demo-message-send"];

    fn on_message(ctx: &Context, _msg_type: &str, content: Content) -> Result<()> {
        let send = parse_send(&content)?;
        let me = ctx.user();
        let to = send.to_user_id.and_then(UserId::into_id);
        let receive = DemoReceive {
            from_user_id: yudao_user_id(&me.user_id),
            text: &send.text,
            single: to.is_some(),
        };
        match to {
            Some(id) => ctx.send_to_user(
                &UserRef::new(me.user_type, id),
                "demo-message-receive",
                &receive,
            ),
            None => ctx.send_to_user_type(me.user_type, "demo-message-receive", &receive),
        }
    }
}

switchboard_guest::export_listener!(DemoChat);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_user_id_is_a_number_when_numeric() {
        assert_eq!(yudao_user_id("42"), Value::from(42));
        assert_eq!(yudao_user_id("u-42"), Value::from("u-42"));
    }

    #[test]
    fn to_user_id_forms() {
        let id = |json: &str| {
            parse_send(&Content::new(json))
                .unwrap()
                .to_user_id
                .and_then(UserId::into_id)
        };
        assert_eq!(id(r#"{"text":"t","toUserId":7}"#).as_deref(), Some("7"));
        assert_eq!(id(r#"{"text":"t","toUserId":"7"}"#).as_deref(), Some("7"));
        assert_eq!(id(r#"{"text":"t","toUserId":""}"#), None);
        assert_eq!(id(r#"{"text":"t","toUserId":null}"#), None);
        assert_eq!(id(r#"{"text":"t"}"#), None);
        assert_eq!(
            id(r#""{\"text\":\"t\",\"toUserId\":1}""#).as_deref(),
            Some("1")
        );
        assert!(parse_send(&Content::new(r#"{"toUserId":1}"#)).is_err());
    }
}
