//! What a listener can do while it handles one call: send, ask about presence,
//! read its config, and log.

use serde::Serialize;

use crate::bindings::switchboard::plugin::{config, logging, presence, sender};
use crate::{Error, Level, Result, SessionInfo, Target, UserRef};

/// The session a call is about, and the host's services for this call.
///
/// For [`Listener::on_message`](crate::Listener::on_message) the session is the
/// sender; for `on_connect`/`on_disconnect` it is the session that opened or
/// closed. Every send, and every presence question, is scoped to that session's
/// tenant unless it goes through [`Context::send_to_tenant`].
///
/// Calls into the host work only inside a plugin running in the host: compiled
/// for any other target (e.g. in a native unit test) they panic.
#[derive(Debug, Clone)]
pub struct Context {
    /// The session being handled; its tenant scopes every send.
    session: SessionInfo,
}

impl Context {
    /// A context for a call about `session`. The exported glue makes these; a
    /// test may make one to call pure helpers that take a `&Context`.
    pub fn new(session: SessionInfo) -> Self {
        Self { session }
    }

    /// The session being handled: the sender of the message, or the session
    /// that connected or disconnected.
    pub fn from(&self) -> &SessionInfo {
        &self.session
    }

    /// The user of the session being handled.
    pub fn user(&self) -> &UserRef {
        &self.session.user
    }

    /// Sends `content`, serialized as JSON, as a message of type `msg_type` to `to`.
    ///
    /// # Errors
    ///
    /// [`Error::Other`] if `content` cannot be serialized; otherwise what the host
    /// returns, e.g. [`Error::Forbidden`] for [`Target::Everyone`] without the
    /// `broadcast` capability.
    pub fn send(
        &self,
        to: Target,
        msg_type: &str,
        content: &(impl Serialize + ?Sized),
    ) -> Result<()> {
        self.send_json(to, msg_type, &to_json(content)?)
    }

    /// Sends content that is already JSON text, e.g. a received
    /// [`Content::as_json`](crate::Content::as_json), without re-encoding it.
    ///
    /// # Errors
    ///
    /// What the host returns; see [`Context::send`].
    pub fn send_json(&self, to: Target, msg_type: &str, json: &str) -> Result<()> {
        sender::send(&to.into(), msg_type, json).map_err(Error::from)
    }

    /// Sends to the session being handled: the sender, or the session that connected.
    ///
    /// # Errors
    ///
    /// See [`Context::send`].
    pub fn reply(&self, msg_type: &str, content: &(impl Serialize + ?Sized)) -> Result<()> {
        self.send_to_session(&self.session.session_id, msg_type, content)
    }

    /// [`Context::reply`] with content that is already JSON text.
    ///
    /// # Errors
    ///
    /// What the host returns; see [`Context::send`].
    pub fn reply_json(&self, msg_type: &str, json: &str) -> Result<()> {
        self.send_json(
            Target::Session(self.session.session_id.clone()),
            msg_type,
            json,
        )
    }

    /// Sends to one session, by id.
    ///
    /// # Errors
    ///
    /// See [`Context::send`].
    pub fn send_to_session(
        &self,
        session_id: &str,
        msg_type: &str,
        content: &(impl Serialize + ?Sized),
    ) -> Result<()> {
        self.send(Target::Session(session_id.to_owned()), msg_type, content)
    }

    /// Sends to every session of one user.
    ///
    /// # Errors
    ///
    /// See [`Context::send`].
    pub fn send_to_user(
        &self,
        user: &UserRef,
        msg_type: &str,
        content: &(impl Serialize + ?Sized),
    ) -> Result<()> {
        self.send(Target::User(user.clone()), msg_type, content)
    }

    /// Sends to every session of each listed user, as one message.
    ///
    /// # Errors
    ///
    /// See [`Context::send`].
    pub fn send_to_users(
        &self,
        users: &[UserRef],
        msg_type: &str,
        content: &(impl Serialize + ?Sized),
    ) -> Result<()> {
        self.send(Target::Users(users.to_vec()), msg_type, content)
    }

    /// Sends to every session of every user of one user type.
    ///
    /// # Errors
    ///
    /// See [`Context::send`].
    pub fn send_to_user_type(
        &self,
        user_type: u32,
        msg_type: &str,
        content: &(impl Serialize + ?Sized),
    ) -> Result<()> {
        self.send(Target::UserType(user_type), msg_type, content)
    }

    /// Sends to every session in the tenant. Needs the `broadcast` capability.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] without the capability; see [`Context::send`].
    pub fn broadcast(&self, msg_type: &str, content: &(impl Serialize + ?Sized)) -> Result<()> {
        self.send(Target::Everyone, msg_type, content)
    }

    /// Sends within another tenant (`None`: every tenant). Needs the
    /// `cross-tenant` capability, granted by the operator in the plugin's sidecar file.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] without the capability; see [`Context::send`].
    pub fn send_to_tenant(
        &self,
        tenant_id: Option<&str>,
        to: Target,
        msg_type: &str,
        content: &(impl Serialize + ?Sized),
    ) -> Result<()> {
        self.send_json_to_tenant(tenant_id, to, msg_type, &to_json(content)?)
    }

    /// [`Context::send_to_tenant`] with content that is already JSON text.
    ///
    /// # Errors
    ///
    /// See [`Context::send_to_tenant`].
    pub fn send_json_to_tenant(
        &self,
        tenant_id: Option<&str>,
        to: Target,
        msg_type: &str,
        json: &str,
    ) -> Result<()> {
        sender::send_to_tenant(tenant_id, &to.into(), msg_type, json).map_err(Error::from)
    }

    /// Whether the user has at least one open session, anywhere in the cluster,
    /// within the tenant of the session being handled.
    pub fn is_online(&self, user: &UserRef) -> bool {
        presence::is_online(&user.clone().into())
    }

    /// The ids of the online users of one user type, within the tenant of the
    /// session being handled.
    pub fn online_users(&self, user_type: u32) -> Vec<String> {
        presence::online_users(user_type)
    }

    /// A value from the `[config]` table of the plugin's sidecar file, if set.
    pub fn config(&self, key: &str) -> Option<String> {
        config::get(key)
    }

    /// Writes to the host's log, tagged with the plugin's name. Rate limited by the host.
    pub fn log(&self, level: Level, message: &str) {
        logging::log(level.into(), message);
    }

    /// Logs at [`Level::Trace`].
    pub fn trace(&self, message: &str) {
        self.log(Level::Trace, message);
    }

    /// Logs at [`Level::Debug`].
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message);
    }

    /// Logs at [`Level::Info`].
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    /// Logs at [`Level::Warn`].
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    /// Logs at [`Level::Error`].
    pub fn error(&self, message: &str) {
        self.log(Level::Error, message);
    }
}

/// Serializes message content, mapping a failure to [`Error::Other`].
fn to_json(content: &(impl Serialize + ?Sized)) -> Result<String> {
    serde_json::to_string(content)
        .map_err(|e| Error::Other(format!("could not serialize content: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_session() {
        let ctx = Context::new(SessionInfo {
            session_id: "s".into(),
            user: UserRef::new(2, "7"),
            tenant_id: None,
        });
        assert_eq!(ctx.from().session_id, "s");
        assert_eq!(ctx.user(), &UserRef::new(2, "7"));
    }

    #[test]
    fn unserializable_content_is_other() {
        use std::collections::HashMap;
        // A map with non-string keys cannot be JSON.
        let bad: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
        assert!(matches!(to_json(&bad), Err(Error::Other(_))));
        assert_eq!(to_json("hi").unwrap(), "\"hi\"");
    }
}
