//! Turning a request's token into a [`Principal`].
//!
//! - `token`: where a request carries its token ([`find_token`]).
//! - `jwt`: signed JWTs ([`Authenticator`]), and signing dev tokens.
//! - `jwks`: an identity provider's published keys, fetched and picked by `kid`.
//! - `fields`: reading a principal and an expiry out of a JSON value by JSON pointers.
//! - `link`: a lazily connected Redis of a back end.
//! - `lookup`: a token's JSON value in Redis (yudao's `oauth2_access_token:{token}`).
//! - `introspect`: asking an HTTP back end about a token (yudao's `check-token`).
//! - `cache`: bounded, expiring answers of the back end.
//! - `liveness`: a Redis key that must exist while the token is valid (Sa-Token's).
//! - `provider`: one configured provider chaining the above, and the set of them
//!   ([`Providers`]) that endpoints choose from.

mod cache;
mod fields;
mod introspect;
mod jwks;
mod jwt;
mod link;
mod liveness;
mod lookup;
mod provider;
mod token;

use std::sync::Arc;

pub use jwt::Authenticator;
pub use provider::{Provider, Providers, Recheck};
pub(crate) use token::bearer;
pub use token::{FoundToken, find_token};

/// Who a connection or request belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The user id, unique within its user type and tenant.
    pub user_id: Arc<str>,
    /// The user type (e.g. 1 member, 2 admin in yudao).
    pub user_type: u32,
    /// The tenant; `None` on single-tenant deployments.
    pub tenant_id: Option<Arc<str>>,
}

/// A verified token: who it belongs to and until when it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Who the token belongs to.
    pub principal: Principal,
    /// End of validity (a jwt's `exp` plus the leeway), in seconds since the Unix epoch; `None`: the token carries none (a liveness
    /// check or a lookup then says whether it is still valid).
    pub expires_at: Option<u64>,
}

/// What a provider may read of the request besides the token (the client id binding).
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The raw query string.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a http::HeaderMap,
}

impl RequestInfo<'_> {
    /// The value of query parameter or header `name` (the query wins).
    pub(crate) fn param(&self, name: &str) -> Option<String> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(self.query.unwrap_or_default()).unwrap_or_default();
        pairs
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .or_else(|| {
                self.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
    }
}

/// The credential a session was admitted with, kept so it can be re-checked and so
/// `<sse path>/close` finds the streams opened with one exact token.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The token as presented.
    pub token: Arc<str>,
    /// Index of its provider in [`Providers`].
    pub provider: usize,
    /// Expiry in seconds since the Unix epoch, if the token has one.
    pub expires_at: Option<u64>,
}

/// Seconds since the Unix epoch now.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why a token was rejected. The message is safe to show to the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No token anywhere in the request.
    #[error("missing token")]
    Missing,
    /// Several different tokens in one request (query, headers, subprotocols).
    #[error("several different tokens in one request; send one")]
    Ambiguous,
    /// Signature, algorithm, expiry, issuer, audience or format problem.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Verified, but a required claim is missing or has the wrong shape.
    #[error("token claim {0}")]
    Claim(String),
    /// The back end that says whether a token is valid (its Redis, its introspection
    /// endpoint) could not be asked: down, too slow, or answering errors. Not the client's
    /// fault: answered 503, never 401.
    #[error("the token cannot be checked now; retry later")]
    Unavailable,
}

impl AuthError {
    /// Stable error code.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Ambiguous => "ambiguous_token",
            AuthError::Invalid(_) => "invalid_token",
            AuthError::Claim(_) => "invalid_claims",
            AuthError::Unavailable => "auth_unavailable",
        }
    }

    /// Whether the token was refused (401), rather than not checked (503).
    pub(crate) fn is_refusal(&self) -> bool {
        !matches!(self, AuthError::Unavailable)
    }
}
