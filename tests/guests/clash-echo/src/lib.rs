//! Claims `echo`, like the example echo plugin: the host must refuse to load
//! whichever of the two comes second.

use switchboard_guest::{Content, Context, Listener, Result};

/// A second claimant of `echo`.
struct ClashEcho;

impl Listener for ClashEcho {
    const NAME: &'static str = env!("CARGO_PKG_NAME");
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const MESSAGE_TYPES: &'static [&'static str] = &["echo"];

    fn on_message(ctx: &Context, msg_type: &str, content: Content) -> Result<()> {
        ctx.reply_json(msg_type, content.as_json())
    }
}

switchboard_guest::export_listener!(ClashEcho);
