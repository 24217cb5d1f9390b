//! Write Switchboard listener plugins in Rust.
//!
//! A listener plugin is a WebAssembly component that claims message types. The
//! host hands it every message of those types, and the plugin reacts by sending
//! messages to sessions, users, user types or the whole tenant. This crate hides
//! the generated WIT bindings behind a [`Listener`] trait, a [`Context`] and one
//! macro, [`export_listener!`].
//!
//! # Example
//!
//! A chat listener: it claims `chat-send`, parses the content into its own type,
//! and sends `chat-receive` to one user, or to every user of the sender's type.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use switchboard_guest::{Content, Context, Listener, Result, UserRef};
//!
//! /// What a client sends.
//! #[derive(Deserialize)]
//! struct Send {
//!     text: String,
//!     to: Option<String>,
//! }
//!
//! /// What recipients get.
//! #[derive(Serialize)]
//! struct Receive<'a> {
//!     from: &'a str,
//!     text: &'a str,
//! }
//!
//! struct Chat;
//!
//! impl Listener for Chat {
//!     const NAME: &'static str = env!("CARGO_PKG_NAME");
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     const MESSAGE_TYPES: &'static [&'static str] = &["chat-send"];
//!
//!     fn on_message(ctx: &Context, _msg_type: &str, content: Content) -> Result<()> {
//!         let send: Send = content.parse()?; // bad content -> Error::InvalidContent
//!         let me = ctx.user();
//!         let out = Receive { from: &me.user_id, text: &send.text };
//!         match send.to {
//!             Some(id) => ctx.send_to_user(&UserRef::new(me.user_type, id), "chat-receive", &out),
//!             None => ctx.send_to_user_type(me.user_type, "chat-receive", &out),
//!         }
//!     }
//! }
//!
//! switchboard_guest::export_listener!(Chat);
//! # fn main() {}
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2`; the output `.wasm` is a component
//! the host loads directly:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! serde = { version = "1", features = ["derive"] }
//! switchboard-guest = { path = "../../guest-sdk" }
//! ```
//!
//! ```sh
//! cargo build --release --target wasm32-wasip2
//! ```
//!
//! # Errors and faults
//!
//! Returning an [`Error`] is a normal outcome: the host reports it to the sender
//! and logs it. A panic, running past the time limit or growing past the memory
//! limit traps the call instead; the host contains the fault, reports it with the
//! plugin's name and version, and keeps serving.
//!
//! # Off the wasm target
//!
//! The crate also compiles for native targets, so plugin logic can be unit
//! tested with `cargo test`; only the calls into the host ([`Context::send`],
//! [`Context::is_online`], ...) panic there.
//!
//! # Layout
//!
//! - [`Listener`] (`listener.rs`): the trait a plugin implements.
//! - [`Context`] (`context.rs`): the session being handled and the host's
//!   services: send, presence, config, logging.
//! - [`State`] (`state.rs`): key-value state that outlives calls, scoped to the
//!   plugin and the tenant by the host.
//! - [`Content`] (`content.rs`): received JSON, parsed with serde.
//! - [`Error`] (`error.rs`): errors as values, both ways.
//! - [`UserRef`], [`SessionInfo`], [`Target`], [`Level`] (`types.rs`): the WIT
//!   records in Rust shape.
//! - `export.rs`: the glue behind [`export_listener!`]; `bindings.rs`: the code
//!   `wit_bindgen::generate!` writes from `wit/0.2.0`. Neither is public API.

mod content;
mod context;
mod error;
mod export;
mod listener;
mod state;
mod types;

#[allow(
    missing_docs,
    reason = "generated code; the public API documents itself"
)]
#[doc(hidden)]
pub mod bindings;

pub use content::Content;
pub use context::Context;
pub use error::{Error, Result};
pub use listener::Listener;
pub use state::State;
pub use types::{Level, SessionInfo, Target, UserRef};

/// Not public API: used by [`export_listener!`].
#[doc(hidden)]
pub mod __private {
    pub use crate::export::Adapter;
}

/// Exports a [`Listener`] as the plugin's implementation of the WIT world
/// `switchboard:plugin/plugin`.
///
/// Invoke it once per plugin crate, at the top level, with the listener type:
///
/// ```
/// # use switchboard_guest::{Content, Context, Listener, Result};
/// struct Echo;
///
/// impl Listener for Echo {
///     const NAME: &'static str = "echo";
///     const VERSION: &'static str = "1.0.0";
///     const MESSAGE_TYPES: &'static [&'static str] = &["echo"];
///
///     fn on_message(ctx: &Context, msg_type: &str, content: Content) -> Result<()> {
///         ctx.reply_json(msg_type, content.as_json())
///     }
/// }
///
/// switchboard_guest::export_listener!(Echo);
/// # fn main() {}
/// ```
///
/// The expansion defines the component's exported functions, which needs
/// `unsafe`: a plugin crate cannot `forbid(unsafe_code)`.
#[macro_export]
macro_rules! export_listener {
    ($listener:ty) => {
        const _: () = {
            type __SwitchboardListener = $crate::__private::Adapter<$listener>;
            $crate::bindings::__export_switchboard_plugin!(
                __SwitchboardListener with_types_in $crate::bindings
            );
        };
    };
}
