//! Exercises the host's imports on request, for the end-to-end tests.
//!
//! - `send` `{"to": T, "type": "...", "content": any, "tenant": null|"t"|absent, "cross": bool}`
//!   sends `content` as `type` to the target T, one of `{"session": "id"}`,
//!   `{"user": {"user_type": 2, "user_id": "1"}}`, `{"users": [user, ...]}`,
//!   `{"user_type": 2}` or `{"everyone": true}`; through `send-to-tenant` with
//!   `tenant` when `cross` is true. A host error is replied to the sender as
//!   `send-error` `{"error": "invalid-content"|"forbidden"|"other", "message"}`.
//! - `config-get` `{"key"}` replies `config-value` `{"key", "value": string|null}`.
//! - `presence` `{"user_type", "user_id"}` replies `presence`
//!   `{"online": bool, "users": [ids online of that user type]}`.
//! - `log` `{"lines": n}` writes n warn-level log lines (`flood <i>`) in one call and replies
//!   `logged` `{"lines": n}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_guest::{Content, Context, Error, Listener, Result, Target, UserRef};

/// A target as the tests write it.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum TargetJson {
    /// `{"session": "id"}`.
    Session(String),
    /// `{"user": {"user_type": 2, "user_id": "1"}}`.
    User(UserRef),
    /// `{"users": [...]}`.
    Users(Vec<UserRef>),
    /// `{"user_type": 2}`.
    UserType(u32),
    /// `{"everyone": true}` (the value is ignored).
    Everyone(#[expect(dead_code, reason = "only the key matters")] Value),
}

impl From<TargetJson> for Target {
    fn from(t: TargetJson) -> Self {
        match t {
            TargetJson::Session(id) => Self::Session(id),
            TargetJson::User(u) => Self::User(u),
            TargetJson::Users(us) => Self::Users(us),
            TargetJson::UserType(t) => Self::UserType(t),
            TargetJson::Everyone(_) => Self::Everyone,
        }
    }
}

/// The content of `send`.
#[derive(Deserialize)]
struct SendRequest {
    /// Whom to send to.
    to: TargetJson,
    /// The message type to send.
    #[serde(rename = "type")]
    msg_type: String,
    /// The content to send; `null` when absent.
    #[serde(default)]
    content: Value,
    /// The tenant for a cross-tenant send; `None` means every tenant.
    #[serde(default)]
    tenant: Option<String>,
    /// Whether to use `send-to-tenant`.
    #[serde(default)]
    cross: bool,
}

/// The content of `send-error`.
#[derive(Serialize)]
struct SendError<'a> {
    /// The WIT error case: `invalid-content`, `forbidden` or `other`.
    error: &'a str,
    /// The host's message.
    message: &'a str,
}

/// The content of `config-get`.
#[derive(Deserialize)]
struct ConfigGet {
    /// The config key to read.
    key: String,
}

/// The content of `config-value`.
#[derive(Serialize)]
struct ConfigValue {
    /// The key that was read.
    key: String,
    /// Its value, if set.
    value: Option<String>,
}

/// The content of the `presence` reply.
#[derive(Serialize)]
struct Presence {
    /// Whether the asked-about user is online.
    online: bool,
    /// The online users of their user type.
    users: Vec<String>,
}

/// The content of `log` and `logged`.
#[derive(Serialize, Deserialize)]
struct LogLines {
    /// How many lines to write.
    lines: u32,
    /// Written once more as it is, if given (e.g. with newlines, to try to forge host lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// The test listener.
struct Targets;

impl Targets {
    /// Performs a `send` request; a host error is replied as `send-error`.
    fn send(ctx: &Context, req: SendRequest) -> Result<()> {
        let to = req.to.into();
        let sent = if req.cross {
            ctx.send_to_tenant(req.tenant.as_deref(), to, &req.msg_type, &req.content)
        } else {
            ctx.send(to, &req.msg_type, &req.content)
        };
        match sent {
            Ok(()) => Ok(()),
            Err(e) => ctx.reply(
                "send-error",
                &SendError {
                    error: e.kind(),
                    message: e.message(),
                },
            ),
        }
    }
}

impl Listener for Targets {
    const NAME: &'static str = env!("CARGO_PKG_NAME");
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const MESSAGE_TYPES: &'static [&'static str] = &["send", "config-get", "presence", "log"];

    fn on_message(ctx: &Context, msg_type: &str, content: Content) -> Result<()> {
        match msg_type {
            "send" => Self::send(ctx, content.parse()?),
            "config-get" => {
                let ConfigGet { key } = content.parse()?;
                let value = ctx.config(&key);
                ctx.reply("config-value", &ConfigValue { key, value })
            }
            "presence" => {
                let user: UserRef = content.parse()?;
                let presence = Presence {
                    online: ctx.is_online(&user),
                    users: ctx.online_users(user.user_type),
                };
                ctx.reply("presence", &presence)
            }
            "log" => {
                let req: LogLines = content.parse()?;
                for i in 0..req.lines {
                    ctx.warn(&format!("flood {i}"));
                }
                if let Some(text) = &req.text {
                    ctx.warn(text);
                }
                ctx.reply("logged", &req)
            }
            other => Err(Error::other(format!("unclaimed type {other}"))),
        }
    }
}

switchboard_guest::export_listener!(Targets);
