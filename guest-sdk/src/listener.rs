//! The trait a plugin implements.

use crate::{Content, Context, Result};

/// A listener plugin: what it claims, and how it handles messages and sessions.
///
/// Implement it on a unit struct and export it with
/// [`export_listener!`](crate::export_listener). Every method runs under the
/// host's time and memory limits for the plugin; a panic traps the call, which
/// the host contains and reports as a fault of this plugin.
pub trait Listener {
    /// Unique among the host's loaded plugins; shown in logs, metrics and the
    /// plugin API. Usually `env!("CARGO_PKG_NAME")`.
    const NAME: &'static str;

    /// Free-form version, shown with every fault report. Usually
    /// `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;

    /// The message types this plugin handles. The host refuses to load a plugin
    /// that claims a type another loaded plugin has claimed.
    const MESSAGE_TYPES: &'static [&'static str];

    /// Whether the host should call [`Listener::on_connect`] and
    /// [`Listener::on_disconnect`]. Off by default: they cost a call per session.
    const LIFECYCLE_EVENTS: bool = false;

    /// Handles one message of a claimed type from the session in `ctx`.
    ///
    /// # Errors
    ///
    /// An error is reported to the sender (as the host's profile allows) and
    /// logged. Return [`Error::InvalidContent`](crate::Error::InvalidContent) for
    /// content the plugin does not accept; [`Content::parse`] does this for you.
    fn on_message(ctx: &Context, msg_type: &str, content: Content) -> Result<()>;

    /// A session opened. Called only when [`Listener::LIFECYCLE_EVENTS`] is true.
    fn on_connect(_ctx: &Context) {}

    /// A session closed. Called only when [`Listener::LIFECYCLE_EVENTS`] is true.
    fn on_disconnect(_ctx: &Context) {}
}
