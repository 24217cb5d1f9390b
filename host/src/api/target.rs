//! The push API's target object: exactly one of `session`, `user`, `users`, `user_type`,
//! `tenant`, `everyone`.

use std::sync::Arc;

use serde::Deserialize;

use crate::http_error::ApiError;
use crate::target::{Scope, Target, UserRef};

/// `to` of `POST /api/v1/messages`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PushTarget {
    session: Option<String>,
    user: Option<UserRef>,
    users: Option<Vec<UserRef>>,
    user_type: Option<u32>,
    tenant: Option<String>,
    everyone: Option<bool>,
}

/// Most users one push may name.
const MAX_USERS: usize = 10_000;

impl PushTarget {
    /// The target and its scope. Without `tenant_id` a push reaches every tenant (the caller
    /// holds an API key); with it, only that tenant.
    pub(super) fn resolve(self, tenant_id: Option<String>) -> Result<(Target, Scope), ApiError> {
        let scope_of = |t: Option<String>| match t {
            Some(t) => Scope::Tenant(Some(Arc::from(t))),
            None => Scope::All,
        };
        let mut chosen = Vec::new();
        if let Some(id) = self.session {
            chosen.push((Target::Session(id), scope_of(tenant_id.clone())));
        }
        if let Some(user) = self.user {
            chosen.push((Target::User(user), scope_of(tenant_id.clone())));
        }
        if let Some(users) = self.users {
            if users.len() > MAX_USERS {
                return Err(ApiError::bad_request(
                    "too_many_users",
                    format!("at most {MAX_USERS} users per message"),
                ));
            }
            // A user listed twice is one recipient: publish each once.
            let mut seen = std::collections::HashSet::with_capacity(users.len());
            let users: Vec<UserRef> = users
                .into_iter()
                .filter(|u| seen.insert(u.clone()))
                .collect();
            chosen.push((Target::Users(users), scope_of(tenant_id.clone())));
        }
        if let Some(user_type) = self.user_type {
            chosen.push((Target::UserType(user_type), scope_of(tenant_id.clone())));
        }
        if let Some(tenant) = self.tenant {
            if tenant_id.as_ref().is_some_and(|t| *t != tenant) {
                return Err(ApiError::bad_request(
                    "invalid_target",
                    "\"to.tenant\" and \"tenant_id\" name different tenants",
                ));
            }
            chosen.push((Target::Everyone, scope_of(Some(tenant))));
        }
        match self.everyone {
            Some(true) => chosen.push((Target::Everyone, scope_of(tenant_id))),
            Some(false) => {
                return Err(ApiError::bad_request(
                    "invalid_target",
                    "\"everyone\" must be true",
                ));
            }
            None => {}
        }
        match (chosen.pop(), chosen.is_empty()) {
            (Some(only), true) => Ok(only),
            _ => Err(ApiError::bad_request(
                "invalid_target",
                "\"to\" needs exactly one of session, user, users, user_type, tenant, everyone",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(json: &str, tenant: Option<&str>) -> Result<(Target, Scope), ApiError> {
        serde_json::from_str::<PushTarget>(json)
            .unwrap()
            .resolve(tenant.map(Into::into))
    }

    #[test]
    fn each_form() {
        assert_eq!(
            resolve(r#"{"user_type":2}"#, None).unwrap(),
            (Target::UserType(2), Scope::All)
        );
        assert_eq!(
            resolve(r#"{"tenant":"t1"}"#, None).unwrap(),
            (Target::Everyone, Scope::Tenant(Some("t1".into())))
        );
        assert_eq!(
            resolve(r#"{"everyone":true}"#, Some("t2")).unwrap(),
            (Target::Everyone, Scope::Tenant(Some("t2".into())))
        );
        assert!(matches!(
            resolve(r#"{"users":[{"user_type":1,"user_id":"a"}]}"#, None).unwrap().0,
            Target::Users(u) if u.len() == 1
        ));
    }

    #[test]
    fn listed_users_are_deduplicated() {
        let (target, _) = resolve(
            r#"{"users":[{"user_type":1,"user_id":"a"},{"user_type":1,"user_id":"a"},{"user_type":1,"user_id":"b"},{"user_type":2,"user_id":"a"}]}"#,
            None,
        )
        .unwrap();
        let Target::Users(users) = target else {
            panic!("users target")
        };
        let ids: Vec<(u32, &str)> = users.iter().map(|u| (u.user_type, &*u.user_id)).collect();
        assert_eq!(ids, vec![(1, "a"), (1, "b"), (2, "a")]);
    }

    #[test]
    fn zero_or_two_targets_are_errors() {
        assert_eq!(resolve("{}", None).unwrap_err().code, "invalid_target");
        assert_eq!(
            resolve(r#"{"user_type":1,"everyone":true}"#, None)
                .unwrap_err()
                .code,
            "invalid_target"
        );
        assert!(serde_json::from_str::<PushTarget>(r#"{"group":1}"#).is_err());
    }
}
