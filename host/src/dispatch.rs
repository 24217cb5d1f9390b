//! The seam between transports and listeners: a `Dispatcher` takes a parsed message from a
//! session and runs the listener that claimed its type. The plugin host implements it.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::value::RawValue;

use crate::{sessions::Session, status::PluginsStatus};

/// Why a message was not handled. `code()` is part of the public protocol.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DispatchError {
    /// No listener claims the type.
    #[error("no listener for message type {0:?}")]
    UnknownType(String),
    /// The listener refused the content.
    #[error("{0}")]
    InvalidContent(String),
    /// The listener refused the sender.
    #[error("{0}")]
    Forbidden(String),
    /// The listener returned another error.
    #[error("{0}")]
    Listener(String),
    /// The listener trapped, ran out of time or memory. The message names the plugin.
    #[error("{0}")]
    Fault(String),
    /// The listener is at its concurrency limit for longer than a call may take.
    #[error("listener is busy")]
    Busy,
}

impl DispatchError {
    /// Stable error code sent to clients.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            DispatchError::UnknownType(_) => "unknown_type",
            DispatchError::InvalidContent(_) => "invalid_content",
            DispatchError::Forbidden(_) => "forbidden",
            DispatchError::Listener(_) => "listener_error",
            DispatchError::Fault(_) => "listener_fault",
            DispatchError::Busy => "listener_busy",
        }
    }
}

/// Routes messages to listeners and tells listeners about sessions coming and going.
pub(crate) trait Dispatcher: Send + Sync + 'static {
    /// Handles one message from `from`. Messages of one session are dispatched one at a time,
    /// in order.
    fn dispatch(
        &self,
        from: Arc<Session>,
        msg_type: String,
        content: Box<RawValue>,
    ) -> BoxFuture<'static, Result<(), DispatchError>>;

    /// A session opened; runs before its first message is dispatched, for at most the
    /// lifecycle call timeouts of the plugins that listen (a call still running then is ended).
    fn connected(&self, session: Arc<Session>) -> BoxFuture<'static, ()>;

    /// A session closed.
    fn disconnected(&self, session: Arc<Session>) -> BoxFuture<'static, ()>;

    /// Listener status for `GET /api/v1/plugins`.
    fn status(&self) -> PluginsStatus;

    /// Whether the initial set of listeners has been loaded (for `/readyz`).
    fn ready(&self) -> bool;
}
