//! Claims `loop` and never returns: the host's time limit must trap the call. Its
//! `on-connect` loops the same way for user id `loop-on-connect`, to hold a handshake open.

use std::hint::black_box;

use switchboard_guest::{Content, Context, Listener, Result};

/// A listener stuck in a busy loop.
struct FaultLoop;

impl Listener for FaultLoop {
    const NAME: &'static str = env!("CARGO_PKG_NAME");
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const MESSAGE_TYPES: &'static [&'static str] = &["loop"];
    const LIFECYCLE_EVENTS: bool = true;

    fn on_connect(ctx: &Context) {
        if ctx.user().user_id == "loop-on-connect" {
            spin();
        }
    }

    fn on_message(_ctx: &Context, _msg_type: &str, _content: Content) -> Result<()> {
        spin()
    }
}

fn spin() -> ! {
    // `black_box` keeps the optimiser from proving anything about the loop.
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

switchboard_guest::export_listener!(FaultLoop);
