//! What a session's outbound queue holds: a [`Frame`], either a shared [`Outbound`] message
//! encoded once per profile for all its recipients, or text already encoded for one session.

use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;

use crate::envelope::Profile;

/// One item of a session's outbound queue.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A delivered message, encoded per profile on first use.
    Message(Arc<Outbound>),
    /// A reply already encoded for this session (pong, error envelope).
    Text(Utf8Bytes),
}

/// One message on its way to many sessions. The frame text is encoded at most once per
/// profile and shared by every recipient of that profile.
#[derive(Debug)]
pub struct Outbound {
    /// The message type.
    pub msg_type: String,
    /// The content as JSON text.
    pub content: Box<RawValue>,
    encoded: [OnceLock<Utf8Bytes>; Profile::COUNT],
}

impl Outbound {
    /// A new message.
    pub(crate) fn new(msg_type: String, content: Box<RawValue>) -> Arc<Self> {
        Arc::new(Self {
            msg_type,
            content,
            encoded: Default::default(),
        })
    }

    /// The frame text for `profile`, encoded on first use.
    pub(crate) fn encoded(&self, profile: Profile) -> &Utf8Bytes {
        self.encoded[profile.index()]
            .get_or_init(|| profile.encode(&self.msg_type, &self.content).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_once_per_profile() {
        let m = Outbound::new(
            "t".into(),
            RawValue::from_string("{\"a\":1}".into()).unwrap(),
        );
        let a = m.encoded(Profile::Native).as_str().as_ptr();
        let b = m.encoded(Profile::Native).as_str().as_ptr();
        assert_eq!(a, b);
        assert_eq!(
            m.encoded(Profile::Yudao).as_str(),
            r#"{"type":"t","content":"{\"a\":1}"}"#
        );
    }
}
