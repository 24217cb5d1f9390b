//! Tells every user of a user type when one of them comes online or goes
//! offline, answers `presence-list` with who is online, and greets a new
//! session with the optional config value `greeting`.

use serde::Serialize;
use switchboard_guest::{Content, Context, Listener, Result};

/// Sent to every user of the user type when a user comes online or goes offline.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PresenceChanged<'a> {
    /// The user whose presence changed.
    user_id: &'a str,
    /// Their user type.
    user_type: u32,
    /// Whether they are online now.
    online: bool,
}

/// The reply to `presence-list`.
#[derive(Serialize)]
struct PresenceList {
    /// Ids of the online users of the sender's user type.
    users: Vec<String>,
}

/// Sent to a new session when the config value `greeting` is set.
#[derive(Serialize)]
struct Welcome {
    /// The configured greeting.
    text: String,
}

/// The presence listener.
struct PresenceAnnouncer;

impl PresenceAnnouncer {
    /// Sends `presence-changed` about the session's user to their user type.
    fn announce(ctx: &Context, online: bool) {
        let user = ctx.user();
        let change = PresenceChanged {
            user_id: &user.user_id,
            user_type: user.user_type,
            online,
        };
        if let Err(e) = ctx.send_to_user_type(user.user_type, "presence-changed", &change) {
            ctx.warn(&format!("could not announce presence: {e}"));
        }
    }
}

impl Listener for PresenceAnnouncer {
    const NAME: &'static str = env!("CARGO_PKG_NAME");
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const MESSAGE_TYPES: &'static [&'static str] = &["presence-list"];
    const LIFECYCLE_EVENTS: bool = true;

    fn on_message(ctx: &Context, msg_type: &str, _content: Content) -> Result<()> {
        let users = ctx.online_users(ctx.user().user_type);
        ctx.reply(msg_type, &PresenceList { users })
    }

    fn on_connect(ctx: &Context) {
        Self::announce(ctx, true);
        if let Some(text) = ctx.config("greeting")
            && let Err(e) = ctx.reply("welcome", &Welcome { text })
        {
            ctx.warn(&format!("could not send the greeting: {e}"));
        }
    }

    fn on_disconnect(ctx: &Context) {
        // A user with another session still open has not gone offline.
        if !ctx.is_online(ctx.user()) {
            Self::announce(ctx, false);
        }
    }
}

switchboard_guest::export_listener!(PresenceAnnouncer);
