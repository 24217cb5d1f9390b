//! A user a targeted publication is for: what the router asks presence about.

use std::sync::Arc;

use crate::target::{Scope, UserRef};

/// A user a targeted publication is for, as presence looks it up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Wanted {
    /// The user type.
    pub user_type: u32,
    /// The user id.
    pub user_id: Arc<str>,
    /// `Some(tenant)`: in that tenant only; `None`: in every tenant (a trusted caller's scope).
    pub tenant: Option<Option<Arc<str>>>,
}

impl Wanted {
    pub(super) fn new(user: &UserRef, scope: &Scope) -> Self {
        Self {
            user_type: user.user_type,
            user_id: user.user_id.as_str().into(),
            tenant: scope.tenant_filter().cloned(),
        }
    }
}
