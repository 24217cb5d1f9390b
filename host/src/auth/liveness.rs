//! A liveness check usable with any provider: a Redis key that exists while the token is
//! valid. Sa-Token keeps `Authorization:login:token:<token>` (value: the login id, TTL: the
//! token's timeout) and deletes it on logout and kick-out, so a JWT without `exp` is valid
//! exactly as long as its key exists.

use std::sync::Arc;

use super::{
    AuthError,
    link::{Link, key},
};

/// "This key must exist".
#[derive(Debug)]
pub(super) struct Liveness {
    /// The back end's Redis.
    pub link: Arc<Link>,
    /// Key template with `{token}`.
    pub template: String,
}

impl Liveness {
    /// `Ok` while the key exists; a refusal when it does not; unavailable when Redis is.
    pub(super) async fn check(&self, token: &str) -> Result<(), AuthError> {
        if self.link.exists(&key(&self.template, token)).await? {
            Ok(())
        } else {
            Err(AuthError::Invalid("logged out or expired".into()))
        }
    }
}
