//! Who sends and who receives: users, sessions, targets, and log levels.
//!
//! These mirror the records of the WIT `types` interface, with Rust names and
//! serde support, so plugin code never touches the generated bindings.

use serde::{Deserialize, Serialize};

use crate::bindings::switchboard::plugin::types as wit;

/// A user as the host indexes sessions: a user type (e.g. 1 = member, 2 = admin)
/// and an id unique within that type and tenant.
///
/// Serializes as `{"user_type": 2, "user_id": "1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserRef {
    /// The user type, e.g. 1 = member, 2 = admin.
    pub user_type: u32,
    /// The user id, unique within the user type and tenant.
    pub user_id: String,
}

impl UserRef {
    /// A user of `user_type` with id `user_id`.
    pub fn new(user_type: u32, user_id: impl Into<String>) -> Self {
        Self {
            user_type,
            user_id: user_id.into(),
        }
    }
}

/// One connection of a user: who sent a message, or who connected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Unique per connection for the life of the host cluster.
    pub session_id: String,
    /// The user who holds the connection.
    pub user: UserRef,
    /// The tenant the session belongs to; `None` on single-tenant hosts.
    pub tenant_id: Option<String>,
}

/// Who a message is sent to, resolved inside the tenant of the session being
/// handled (or the tenant given to
/// [`Context::send_to_tenant`](crate::Context::send_to_tenant)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// One session, by id.
    Session(String),
    /// Every session of one user.
    User(UserRef),
    /// Every session of each listed user, delivered as one message.
    Users(Vec<UserRef>),
    /// Every session of every user of one user type.
    UserType(u32),
    /// Every session in scope. Needs the `broadcast` capability.
    Everyone,
}

/// Log levels, as in `tracing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Very verbose detail.
    Trace,
    /// Detail useful when debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Something failed.
    Error,
}

impl From<wit::UserRef> for UserRef {
    fn from(u: wit::UserRef) -> Self {
        Self {
            user_type: u.user_type,
            user_id: u.user_id,
        }
    }
}

impl From<UserRef> for wit::UserRef {
    fn from(u: UserRef) -> Self {
        Self {
            user_type: u.user_type,
            user_id: u.user_id,
        }
    }
}

impl From<wit::SessionInfo> for SessionInfo {
    fn from(s: wit::SessionInfo) -> Self {
        Self {
            session_id: s.session_id,
            user: s.user.into(),
            tenant_id: s.tenant_id,
        }
    }
}

impl From<Target> for wit::Target {
    fn from(t: Target) -> Self {
        match t {
            Target::Session(id) => Self::Session(id),
            Target::User(u) => Self::User(u.into()),
            Target::Users(us) => Self::Users(us.into_iter().map(Into::into).collect()),
            Target::UserType(t) => Self::UserType(t),
            Target::Everyone => Self::Everyone,
        }
    }
}

impl From<Level> for wit::Level {
    fn from(l: Level) -> Self {
        match l {
            Level::Trace => Self::Trace,
            Level::Debug => Self::Debug,
            Level::Info => Self::Info,
            Level::Warn => Self::Warn,
            Level::Error => Self::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ref_serde_shape() {
        let u = UserRef::new(2, "1");
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(json, r#"{"user_type":2,"user_id":"1"}"#);
        assert_eq!(serde_json::from_str::<UserRef>(&json).unwrap(), u);
    }

    #[test]
    fn targets_convert_to_wit() {
        let t: wit::Target = Target::Users(vec![UserRef::new(1, "a"), UserRef::new(2, "b")]).into();
        match t {
            wit::Target::Users(us) => {
                assert_eq!(us.len(), 2);
                assert_eq!((us[1].user_type, us[1].user_id.as_str()), (2, "b"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            wit::Target::from(Target::Everyone),
            wit::Target::Everyone
        ));
        assert!(matches!(
            wit::Target::from(Target::UserType(7)),
            wit::Target::UserType(7)
        ));
    }

    #[test]
    fn session_info_from_wit() {
        let s: SessionInfo = wit::SessionInfo {
            session_id: "s1".into(),
            user: wit::UserRef {
                user_type: 1,
                user_id: "42".into(),
            },
            tenant_id: Some("t".into()),
        }
        .into();
        assert_eq!(s.user, UserRef::new(1, "42"));
        assert_eq!(s.tenant_id.as_deref(), Some("t"));
    }
}
