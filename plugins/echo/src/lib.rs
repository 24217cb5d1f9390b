//! Replies to the sending session with a message of type `echo` and the same content.

use switchboard_guest::{Content, Context, Listener, Result};

/// The `echo` listener.
struct Echo;

impl Listener for Echo {
    const NAME: &'static str = env!("CARGO_PKG_NAME");
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const MESSAGE_TYPES: &'static [&'static str] = &["echo"];

    fn on_message(ctx: &Context, _msg_type: &str, content: Content) -> Result<()> {
        // The content goes back as the host passed it: no parse, no re-encode.
        ctx.reply_json("echo", content.as_json())
    }
}

switchboard_guest::export_listener!(Echo);
