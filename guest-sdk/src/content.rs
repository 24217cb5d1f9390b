//! The content of a received message.

use std::fmt;

use serde::Deserialize;

use crate::{Error, Result};

/// The content of a message, as the JSON text the host passed in.
///
/// Parse it into your own serde type with [`Content::parse`]; a mismatch becomes
/// [`Error::InvalidContent`], which the host reports to the sender.
///
/// ```
/// use serde::Deserialize;
/// use switchboard_guest::{Content, Error};
///
/// #[derive(Debug, Deserialize)]
/// struct Chat {
///     text: String,
/// }
///
/// let chat: Chat = Content::new(r#"{"text":"hi"}"#).parse().unwrap();
/// assert_eq!(chat.text, "hi");
///
/// let err = Content::new(r#"{"txt":"hi"}"#).parse::<Chat>().unwrap_err();
/// assert!(matches!(err, Error::InvalidContent(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// The JSON text, exactly as the host passed it.
    json: String,
}

impl Content {
    /// Wraps JSON text. The host does this for you; tests of a listener may too.
    pub fn new(json: impl Into<String>) -> Self {
        Self { json: json.into() }
    }

    /// Deserializes the content into `T`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContent`] with serde's message when the JSON does not fit `T`.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T> {
        serde_json::from_str(&self.json).map_err(|e| Error::InvalidContent(e.to_string()))
    }

    /// The JSON text, e.g. to send it on unchanged with
    /// [`Context::send_json`](crate::Context::send_json).
    pub fn as_json(&self) -> &str {
        &self.json
    }

    /// The JSON text, owned.
    pub fn into_json(self) -> String {
        self.json
    }
}

impl fmt::Display for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.json)
    }
}

impl From<String> for Content {
    fn from(json: String) -> Self {
        Self::new(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Msg<'a> {
        text: &'a str,
        n: Option<u32>,
    }

    #[test]
    fn parses_borrowed_and_owned() {
        let c = Content::new(r#"{"text":"hi","n":3}"#);
        assert_eq!(
            c.parse::<Msg<'_>>().unwrap(),
            Msg {
                text: "hi",
                n: Some(3)
            }
        );
        let v: serde_json::Value = c.parse().unwrap();
        assert_eq!(v["n"], 3);
    }

    #[test]
    fn a_mismatch_is_invalid_content() {
        let err = Content::new(r#"{"n":3}"#).parse::<Msg<'_>>().unwrap_err();
        assert!(
            matches!(&err, Error::InvalidContent(m) if m.contains("text")),
            "{err}"
        );
        let err = Content::new("not json").parse::<String>().unwrap_err();
        assert!(matches!(err, Error::InvalidContent(_)));
    }

    #[test]
    fn keeps_the_text() {
        let c = Content::from(String::from("\"x\""));
        assert_eq!(c.as_json(), "\"x\"");
        assert_eq!(c.to_string(), "\"x\"");
        assert_eq!(c.into_json(), "\"x\"");
    }
}
