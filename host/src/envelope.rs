//! The wire format: JSON envelopes `{"type", "content"}` and the compatibility profiles that
//! let the front ends of other frameworks talk to the host unchanged.
//!
//! | profile | inbound | outbound | heartbeat | bad input |
//! |---|---|---|---|---|
//! | `native` | `{"type": str, "content": any JSON}` | the same | text `ping` → `pong` | error envelope |
//! | `yudao` | `{"type": str, "content": str}` (JSON text inside) | the same | text `ping` → `pong` | logged, dropped |
//! | `ruoyi-plus` | plain text, dispatched as the endpoint's `text_type` | plain text | `{"type":"ping"}` echoed | logged, dropped |

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A wire profile: how frames map to messages for one kind of front end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Switchboard's own: `content` is any JSON value; errors are answered.
    #[default]
    Native,
    /// yudao (ruoyi-vue-pro): `content` is a JSON string both ways.
    Yudao,
    /// RuoYi-Vue-Plus: plain text frames without an envelope.
    RuoyiPlus,
}

impl Profile {
    /// Number of profiles; outbound frames cache one encoding per profile.
    pub(crate) const COUNT: usize = 3;

    /// Stable index for per-profile caches.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Name as written in the config and shown in metrics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Profile::Native => "native",
            Profile::Yudao => "yudao",
            Profile::RuoyiPlus => "ruoyi-plus",
        }
    }

    /// Whether bad input is answered with an error envelope (else logged and dropped, because
    /// the framework's front end would not understand the answer).
    pub(crate) fn answers_errors(self) -> bool {
        self == Profile::Native
    }

    /// Reads one client text frame. `text_type` is the message type of plain-text frames
    /// (RuoYi-Vue-Plus profile).
    pub fn parse(self, text: &str, text_type: &str) -> Result<Inbound, EnvelopeError> {
        match self {
            Profile::Native | Profile::Yudao if text == "ping" => Ok(Inbound::Reply("pong".into())),
            Profile::Native => parse_envelope(text, ContentForm::Any),
            Profile::Yudao => parse_envelope(text, ContentForm::JsonText),
            Profile::RuoyiPlus => parse_plain(text, text_type),
        }
    }

    /// [`Profile::parse`], refusing message content nested deeper than `max_depth` (objects and
    /// arrays), so no client can pass a structure that breaks other clients' parsers.
    pub(crate) fn parse_limited(
        self,
        text: &str,
        text_type: &str,
        max_depth: usize,
    ) -> Result<Inbound, EnvelopeError> {
        let inbound = self.parse(text, text_type)?;
        if let Inbound::Message { content, .. } = &inbound {
            check_depth(content.get(), max_depth)?;
        }
        Ok(inbound)
    }

    /// Encodes an outbound message as this profile's frame text.
    pub fn encode(self, msg_type: &str, content: &RawValue) -> String {
        match self {
            Profile::Native => encode_envelope(msg_type, content.get()),
            Profile::Yudao => {
                let as_string = json_string(content.get());
                encode_envelope(msg_type, &as_string)
            }
            Profile::RuoyiPlus => match serde_json::from_str::<String>(content.get()) {
                Ok(text) => text,
                Err(_) => content.get().to_owned(),
            },
        }
    }
}

/// What one client frame asks for.
#[derive(Debug)]
pub enum Inbound {
    /// Answer with this text and dispatch nothing (heartbeats).
    Reply(String),
    /// Dispatch a message to the listener of `msg_type`.
    Message {
        /// The message type, used for routing.
        msg_type: String,
        /// The content as JSON text.
        content: Box<RawValue>,
    },
}

/// Why a frame could not be read. `code()` is part of the public protocol.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvelopeError {
    /// Not JSON, or not an object.
    #[error("frame is not a JSON object: {0}")]
    Malformed(String),
    /// No string `type` field.
    #[error("envelope has no string \"type\"")]
    MissingType,
    /// `type` is empty or too long.
    #[error("envelope \"type\" must be 1 to 128 characters")]
    BadType,
    /// yudao profile: `content` is not a string.
    #[error("envelope \"content\" must be a string in this profile")]
    ContentNotString,
    /// Content nested deeper than the host allows.
    #[error("content is nested deeper than {0} levels")]
    TooDeep(usize),
}

impl EnvelopeError {
    /// Stable error code sent to clients.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            EnvelopeError::Malformed(_) => "malformed_json",
            EnvelopeError::MissingType => "missing_type",
            EnvelopeError::BadType => "bad_type",
            EnvelopeError::ContentNotString => "content_not_string",
            EnvelopeError::TooDeep(_) => "too_deep",
        }
    }
}

/// Refuses JSON `text` whose objects and arrays nest deeper than `max_depth`. A scan of the
/// bytes: no parse, no recursion, stops at the first level too deep.
pub(crate) fn check_depth(text: &str, max_depth: usize) -> Result<(), EnvelopeError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(EnvelopeError::TooDeep(max_depth));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Longest accepted message type.
pub(crate) const MAX_TYPE_LEN: usize = 128;

#[derive(Clone, Copy)]
enum ContentForm {
    /// Any JSON value.
    Any,
    /// A JSON string whose text is itself JSON (yudao); non-JSON text passes as a string.
    JsonText,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(rename = "type", borrow, default)]
    msg_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

fn parse_envelope(text: &str, form: ContentForm) -> Result<Inbound, EnvelopeError> {
    // serde would also read a struct from a JSON array; an envelope is an object.
    if !text.trim_start().starts_with('{') {
        return Err(EnvelopeError::Malformed("expected a JSON object".into()));
    }
    let raw: RawEnvelope<'_> =
        serde_json::from_str(text).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    let msg_type: String = raw
        .msg_type
        .and_then(|t| serde_json::from_str(t.get()).ok())
        .ok_or(EnvelopeError::MissingType)?;
    if msg_type.is_empty() || msg_type.len() > MAX_TYPE_LEN {
        return Err(EnvelopeError::BadType);
    }
    let content = match (form, raw.content) {
        (_, None) => null_json(),
        (ContentForm::Any, Some(c)) => c.to_owned(),
        (ContentForm::JsonText, Some(c)) => {
            let inner: String =
                serde_json::from_str(c.get()).map_err(|_| EnvelopeError::ContentNotString)?;
            json_text_or_string(&inner)
        }
    };
    Ok(Inbound::Message { msg_type, content })
}

fn parse_plain(text: &str, text_type: &str) -> Result<Inbound, EnvelopeError> {
    if is_json_ping(text) {
        return Ok(Inbound::Reply(text.to_owned()));
    }
    let content = json_string_value(text);
    Ok(Inbound::Message {
        msg_type: text_type.to_owned(),
        content,
    })
}

fn is_json_ping(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        msg_type: &'a str,
    }
    text.trim_start().starts_with('{')
        && serde_json::from_str::<Typed<'_>>(text).is_ok_and(|t| t.msg_type == "ping")
}

/// `inner` as JSON if it is JSON, else as a JSON string holding it.
fn json_text_or_string(inner: &str) -> Box<RawValue> {
    match serde_json::from_str::<&RawValue>(inner) {
        Ok(v) => v.to_owned(),
        Err(_) => json_string_value(inner),
    }
}

/// `text` as a JSON string literal, quoted and escaped.
#[expect(clippy::expect_used, reason = "serializing a string cannot fail")]
fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// `text` as a JSON string value.
#[expect(clippy::expect_used, reason = "a serialized string is valid JSON")]
fn json_string_value(text: &str) -> Box<RawValue> {
    RawValue::from_string(json_string(text)).expect("a JSON string literal is JSON")
}

fn null_json() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

fn encode_envelope(msg_type: &str, content_json: &str) -> String {
    let type_json = json_string(msg_type);
    let mut out = String::with_capacity(type_json.len() + content_json.len() + 24);
    out.push_str("{\"type\":");
    out.push_str(&type_json);
    out.push_str(",\"content\":");
    out.push_str(content_json);
    out.push('}');
    out
}

/// The native profile's error envelope: `{"type":"error","content":{"code","message",...}}`.
pub(crate) fn error_frame(code: &str, message: &str, msg_type: Option<&str>) -> String {
    let content = serde_json::json!({ "code": code, "message": message, "type": msg_type });
    encode_envelope("error", &content.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(inbound: Inbound) -> (String, String) {
        match inbound {
            Inbound::Message { msg_type, content } => (msg_type, content.get().to_owned()),
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn native_round_trip() {
        let (t, c) = msg(Profile::Native
            .parse(r#"{"type":"chat","content":{"a":[1,2]}}"#, "")
            .unwrap());
        assert_eq!((t.as_str(), c.as_str()), ("chat", r#"{"a":[1,2]}"#));
        let c = RawValue::from_string(c).unwrap();
        assert_eq!(
            Profile::Native.encode("chat", &c),
            r#"{"type":"chat","content":{"a":[1,2]}}"#
        );
    }

    #[test]
    fn native_errors_have_codes() {
        let p = Profile::Native;
        assert_eq!(p.parse("nope", "").unwrap_err().code(), "malformed_json");
        assert_eq!(p.parse("[1]", "").unwrap_err().code(), "malformed_json");
        assert_eq!(
            p.parse(r#"{"content":1}"#, "").unwrap_err(),
            EnvelopeError::MissingType
        );
        assert_eq!(
            p.parse(r#"{"type":5}"#, "").unwrap_err(),
            EnvelopeError::MissingType
        );
        assert_eq!(
            p.parse(r#"{"type":""}"#, "").unwrap_err(),
            EnvelopeError::BadType
        );
        assert!(matches!(p.parse("ping", "").unwrap(), Inbound::Reply(r) if r == "pong"));
        let (_, c) = msg(p.parse(r#"{"type":"x"}"#, "").unwrap());
        assert_eq!(c, "null");
    }

    #[test]
    fn yudao_content_is_json_text_both_ways() {
        let p = Profile::Yudao;
        let (t, c) = msg(p
            .parse(
                r#"{"type":"demo-message-send","content":"{\"text\":\"hi\",\"toUserId\":\"\"}"}"#,
                "",
            )
            .unwrap());
        assert_eq!(t, "demo-message-send");
        assert_eq!(c, r#"{"text":"hi","toUserId":""}"#);
        let (_, c) = msg(p
            .parse(r#"{"type":"x","content":"plain words"}"#, "")
            .unwrap());
        assert_eq!(c, r#""plain words""#);
        assert_eq!(
            p.parse(r#"{"type":"x","content":{"a":1}}"#, "")
                .unwrap_err(),
            EnvelopeError::ContentNotString
        );
        let content = RawValue::from_string(r#"{"text":"hi"}"#.into()).unwrap();
        assert_eq!(
            p.encode("demo-message-receive", &content),
            r#"{"type":"demo-message-receive","content":"{\"text\":\"hi\"}"}"#
        );
        assert!(matches!(p.parse("ping", "").unwrap(), Inbound::Reply(r) if r == "pong"));
    }

    #[test]
    fn ruoyi_plus_is_plain_text() {
        let p = Profile::RuoyiPlus;
        let (t, c) = msg(p.parse("hello \"there\"", "ruoyi-text").unwrap());
        assert_eq!(t, "ruoyi-text");
        assert_eq!(c, r#""hello \"there\"""#);
        let ping = r#"{"type":"ping"}"#;
        assert!(matches!(p.parse(ping, "t").unwrap(), Inbound::Reply(r) if r == ping));
        let content = RawValue::from_string(r#""line""#.into()).unwrap();
        assert_eq!(p.encode("t", &content), "line");
        let content = RawValue::from_string(r#"{"a":1}"#.into()).unwrap();
        assert_eq!(p.encode("t", &content), r#"{"a":1}"#);
    }

    #[test]
    fn nesting_is_capped() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(check_depth(&deep(64), 64), Ok(()));
        assert_eq!(check_depth(&deep(65), 64), Err(EnvelopeError::TooDeep(64)));
        // Brackets inside strings do not count, escaped quotes do not end them.
        assert_eq!(check_depth(r#"{"a":"[[[[\"[[[["}"#, 1), Ok(()));
        let frame = format!(r#"{{"type":"x","content":{}}}"#, deep(30_000));
        let err = Profile::Native.parse_limited(&frame, "", 64).unwrap_err();
        assert_eq!(err.code(), "too_deep");
        // yudao: the JSON text inside the string is what is measured.
        let inner = serde_json::to_string(&deep(10)).unwrap();
        let frame = format!(r#"{{"type":"x","content":{inner}}}"#);
        assert!(Profile::Yudao.parse_limited(&frame, "", 9).is_err());
        assert!(Profile::Yudao.parse_limited(&frame, "", 10).is_ok());
    }

    #[test]
    fn error_frame_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&error_frame("unknown_type", "no listener", Some("x"))).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["content"]["code"], "unknown_type");
        assert_eq!(v["content"]["type"], "x");
    }
}
