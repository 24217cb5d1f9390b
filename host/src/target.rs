//! Who a message goes to: a [`Target`] (session, user, users, user type, everyone) within a
//! [`Scope`] of tenants. Shared by delivery, the cluster broker, the push API and plugins.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A user, as targets name one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct UserRef {
    /// The user type.
    pub user_type: u32,
    /// The user id (numbers are accepted and read as their decimal text).
    #[serde(deserialize_with = "string_or_number")]
    pub user_id: String,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(serde_json::Number),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
    })
}

/// Who a message goes to, within a [`Scope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Target {
    /// One session by id.
    Session(String),
    /// Every session of a user.
    User(UserRef),
    /// Every session of each listed user, as one delivery.
    Users(Vec<UserRef>),
    /// Every session of a user type.
    UserType(u32),
    /// Every session.
    Everyone,
}

/// Which tenants a delivery may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Scope {
    /// Only sessions of this tenant (`None`: sessions without a tenant).
    Tenant(Option<Arc<str>>),
    /// Every tenant (trusted callers: the push API without `tenant_id`, cross-tenant plugins).
    All,
}

impl Scope {
    pub(crate) fn tenant_filter(&self) -> Option<&Option<Arc<str>>> {
        match self {
            Scope::Tenant(t) => Some(t),
            Scope::All => None,
        }
    }

    pub(crate) fn admits(&self, tenant: &Option<Arc<str>>) -> bool {
        match self {
            Scope::Tenant(t) => t == tenant,
            Scope::All => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_their_json_forms() {
        let t: Target = serde_json::from_str(r#"{"user":{"user_type":2,"user_id":1}}"#).unwrap();
        assert_eq!(
            t,
            Target::User(UserRef {
                user_type: 2,
                user_id: "1".into()
            })
        );
        let t: Target = serde_json::from_str(r#"{"user_type":2}"#).unwrap();
        assert_eq!(t, Target::UserType(2));
        let t: Target = serde_json::from_str(r#""everyone""#).unwrap();
        assert_eq!(t, Target::Everyone);
    }
}
