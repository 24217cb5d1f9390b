//! The RuoYi-Vue-Plus WebSocket demo: the client sends plain text (which the
//! host's `ruoyi-plus` profile passes in as a JSON string of type `ruoyi-text`),
//! and every session of the same user gets the text back.

use switchboard_guest::{Content, Context, Listener, Result};

/// The `ruoyi-text` listener.
struct RuoyiEcho;

impl Listener for RuoyiEcho {
    const NAME: &'static str = env!("CARGO_PKG_NAME");
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const MESSAGE_TYPES: &'static [&'static str] = &["ruoyi-text"];

    fn on_message(ctx: &Context, msg_type: &str, content: Content) -> Result<()> {
        // Anything but a JSON string is refused as invalid content.
        let text: String = content.parse()?;
        ctx.send_to_user(ctx.user(), msg_type, &text)
    }
}

switchboard_guest::export_listener!(RuoyiEcho);
