//! Claims `version` and replies `version` with `{"version": V}`, where V is
//! fixed at build time by the env var `SWITCHBOARD_TEST_VERSION` (default "1"),
//! so a test can build two variants and hot-swap one for the other. V is also
//! the version the plugin describes itself with.

use serde::Serialize;
use switchboard_guest::{Content, Context, Listener, Result};

/// The version this build answers with.
const BUILD_VERSION: &str = match option_env!("SWITCHBOARD_TEST_VERSION") {
    Some(v) => v,
    None => "1",
};

/// The content of the `version` reply.
#[derive(Serialize)]
struct Version {
    /// [`BUILD_VERSION`].
    version: &'static str,
}

/// A listener whose answer changes between builds.
struct Versioned;

impl Listener for Versioned {
    const NAME: &'static str = env!("CARGO_PKG_NAME");
    const VERSION: &'static str = BUILD_VERSION;
    const MESSAGE_TYPES: &'static [&'static str] = &["version"];

    fn on_message(ctx: &Context, msg_type: &str, _content: Content) -> Result<()> {
        ctx.reply(
            msg_type,
            &Version {
                version: BUILD_VERSION,
            },
        )
    }
}

switchboard_guest::export_listener!(Versioned);
