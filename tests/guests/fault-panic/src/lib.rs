//! Claims `panic` and panics: the host must contain the trap and keep serving.

use switchboard_guest::{Content, Context, Listener, Result};

/// A listener that panics on every message.
struct FaultPanic;

impl Listener for FaultPanic {
    const NAME: &'static str = env!("CARGO_PKG_NAME");
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const MESSAGE_TYPES: &'static [&'static str] = &["panic"];

    fn on_message(_ctx: &Context, msg_type: &str, _content: Content) -> Result<()> {
        panic!("fault-panic: deliberate panic on `{msg_type}`");
    }
}

switchboard_guest::export_listener!(FaultPanic);
