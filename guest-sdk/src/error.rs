//! The error a listener returns, and the error the host returns to a listener.

use std::fmt;

use crate::bindings::switchboard::plugin::types as wit;

/// A shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error: a value the host reports to the sender and in its logs, never a fault.
///
/// A listener returns one from [`Listener::on_message`](crate::Listener::on_message)
/// to refuse a message; the host returns one from a send (e.g. [`Error::Forbidden`]
/// when the plugin lacks a capability). Panics are faults instead: they trap the
/// call, and the host contains and reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The message content is not what the plugin accepts.
    InvalidContent(String),
    /// The caller may not do this (e.g. a send without the needed capability).
    Forbidden(String),
    /// Anything else, with a message for logs and the sender.
    Other(String),
}

impl Error {
    /// An [`Error::InvalidContent`] with this message.
    pub fn invalid_content(message: impl Into<String>) -> Self {
        Self::InvalidContent(message.into())
    }

    /// An [`Error::Forbidden`] with this message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }

    /// An [`Error::Other`] with this message.
    pub fn other(message: impl Into<String>) -> Self {
        Self::Other(message.into())
    }

    /// The kind as the WIT names it: `invalid-content`, `forbidden` or `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidContent(_) => "invalid-content",
            Self::Forbidden(_) => "forbidden",
            Self::Other(_) => "other",
        }
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidContent(m) | Self::Forbidden(m) | Self::Other(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidContent(m) => write!(f, "invalid content: {m}"),
            Self::Forbidden(m) => write!(f, "forbidden: {m}"),
            Self::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::InvalidContent(m) => Self::InvalidContent(m),
            wit::Error::Forbidden(m) => Self::Forbidden(m),
            wit::Error::Other(m) => Self::Other(m),
        }
    }
}

impl From<Error> for wit::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidContent(m) => Self::InvalidContent(m),
            Error::Forbidden(m) => Self::Forbidden(m),
            Error::Other(m) => Self::Other(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_kind() {
        assert_eq!(
            Error::invalid_content("no text").to_string(),
            "invalid content: no text"
        );
        assert_eq!(Error::forbidden("no").to_string(), "forbidden: no");
        assert_eq!(Error::other("boom").to_string(), "boom");
    }

    #[test]
    fn round_trips_through_the_wit_type() {
        for e in [
            Error::invalid_content("a"),
            Error::forbidden("b"),
            Error::other("c"),
        ] {
            assert_eq!(Error::from(wit::Error::from(e.clone())), e);
        }
        assert_eq!(Error::forbidden("x").kind(), "forbidden");
        assert_eq!(Error::other("x").message(), "x");
    }
}
