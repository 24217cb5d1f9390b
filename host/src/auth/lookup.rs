//! `redis_lookup`: the token's value is a JSON string in the back end's Redis under
//! `lookup_key` (yudao: `oauth2_access_token:{token}` holding `OAuth2AccessTokenDO`, with
//! the token's remaining life as TTL). No key: the token is unknown here (a refresh token,
//! or a cache miss on the back end's side), which the HTTP fallback can still answer.

use std::sync::Arc;

use super::{
    AuthError, Verified,
    fields::Fields,
    link::{Link, key},
};

/// What a lookup found.
#[derive(Debug)]
pub(super) enum Found {
    /// The key holds a valid token's value (or a refusal: expired, malformed).
    Answer(Result<Verified, AuthError>),
    /// No such key.
    Missing,
}

/// A token lookup in Redis.
#[derive(Debug)]
pub(super) struct Lookup {
    /// The back end's Redis.
    pub link: Arc<Link>,
    /// Key template with `{token}`.
    pub template: String,
    /// Where the principal is in the value.
    pub fields: Fields,
}

impl Lookup {
    /// Looks `token` up. Redis down: `Err(Unavailable)`.
    pub(super) async fn find(&self, token: &str, now: u64) -> Result<Found, AuthError> {
        let Some(text) = self.link.get(&key(&self.template, token)).await? else {
            return Ok(Found::Missing);
        };
        let answer = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(json) => self.fields.read(&json, now),
            Err(_) => {
                tracing::warn!(template = %self.template, "a token's Redis value is not JSON");
                Err(AuthError::Invalid("unreadable token record".into()))
            }
        };
        Ok(Found::Answer(answer))
    }
}
