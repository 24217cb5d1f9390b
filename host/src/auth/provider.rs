//! One configured provider: its source of truth (a JWT verifier, or a Redis lookup with an
//! optional HTTP fallback, or HTTP alone), an optional liveness key, and how it re-checks a
//! live session. [`Providers`] holds `[auth]` (index 0, `default`) and every
//! `[auth.providers.NAME]`, for endpoints to choose from.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;

use super::{
    AuthError, Authenticator, Credential, Principal, RequestInfo, Verified,
    fields::{Expiry, Fields},
    introspect::Introspect,
    link::Link,
    liveness::Liveness,
    lookup::{Found, Lookup},
    now_secs,
};
use crate::config::{AuthConfig, DEFAULT_PROVIDER, ProviderKind, effective_provider};

/// What says whether a token is valid.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per provider, built once at start and kept behind an Arc"
)]
enum Source {
    /// A signed JWT.
    Jwt(Authenticator),
    /// A Redis lookup, then (on a miss or a Redis outage) an HTTP introspection.
    Lookup {
        redis: Option<Lookup>,
        http: Option<Introspect>,
    },
}

/// The outcome of re-checking a live session's credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recheck {
    /// Still valid.
    Valid,
    /// Past its expiry.
    Expired,
    /// The back end no longer knows it (logout, kick-out, deleted key).
    Revoked,
    /// The back end could not be asked; the session stays, the next round asks again.
    Unavailable,
}

impl Recheck {
    /// Metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Recheck::Valid => "valid",
            Recheck::Expired => "expired",
            Recheck::Revoked => "revoked",
            Recheck::Unavailable => "unavailable",
        }
    }
}

/// One auth provider.
#[derive(Debug)]
pub struct Provider {
    /// `default` or the `[auth.providers.NAME]` name.
    name: Arc<str>,
    source: Source,
    liveness: Option<Liveness>,
    /// `recheck_interval_secs`.
    recheck_every: Duration,
}

fn fields(
    c: &AuthConfig,
    pointers: [&String; 4],
    format: &crate::config::ExpiresFormat,
) -> anyhow::Result<Fields> {
    Ok(Fields {
        user_id: pointers[0].clone(),
        user_type: pointers[1].clone(),
        tenant_id: pointers[2].clone(),
        expires: pointers[3].clone(),
        format: Expiry::new(format)?,
        names: c.user_type_names.clone(),
        default_user_type: c.default_user_type,
    })
}

impl Provider {
    /// Builds provider `name` from its (checked) config, preset applied. Nothing connects
    /// yet: a back end that is down at start makes checks unavailable, not the host.
    pub fn new(name: &str, config: &AuthConfig) -> anyhow::Result<Self> {
        let c = effective_provider(config);
        let link = c
            .redis_url
            .as_deref()
            .map(Link::new)
            .transpose()
            .context("redis_url")?
            .map(Arc::new);
        let source = match c.effective_kind() {
            ProviderKind::Jwt => Source::Jwt(Authenticator::new(&c)?),
            kind => {
                let redis = match (&link, &c.lookup_key) {
                    (Some(link), Some(template)) if kind == ProviderKind::RedisLookup => {
                        Some(Lookup {
                            link: link.clone(),
                            template: template.clone(),
                            fields: fields(
                                &c,
                                [
                                    &c.lookup_user_id_pointer,
                                    &c.lookup_user_type_pointer,
                                    &c.lookup_tenant_id_pointer,
                                    &c.lookup_expires_pointer,
                                ],
                                &c.lookup_expires_format,
                            )?,
                        })
                    }
                    _ => None,
                };
                let http = match &c.http_url {
                    Some(_) => Some(Introspect::new(
                        &c,
                        fields(
                            &c,
                            [
                                &c.http_user_id_pointer,
                                &c.http_user_type_pointer,
                                &c.http_tenant_id_pointer,
                                &c.http_expires_pointer,
                            ],
                            &c.http_expires_format,
                        )?,
                    )?),
                    None => None,
                };
                if redis.is_none() && http.is_none() {
                    anyhow::bail!("provider {name}: needs redis_url with lookup_key, or http_url");
                }
                Source::Lookup { redis, http }
            }
        };
        let liveness = match (&link, &c.liveness_key) {
            (Some(link), Some(template)) => Some(Liveness {
                link: link.clone(),
                template: template.clone(),
            }),
            (None, Some(_)) => anyhow::bail!("provider {name}: liveness_key needs redis_url"),
            _ => None,
        };
        Ok(Self {
            name: name.into(),
            source,
            liveness,
            recheck_every: Duration::from_secs(c.recheck_interval_secs.max(1)),
        })
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How often its live sessions are re-checked.
    pub(crate) fn recheck_interval(&self) -> Duration {
        self.recheck_every
    }

    /// Whether a session of this provider can end other than by its expiry: a back end to
    /// re-ask, or a liveness key.
    pub(crate) fn can_be_revoked(&self) -> bool {
        self.liveness.is_some() || matches!(self.source, Source::Lookup { .. })
    }

    /// Verifies `token` presented with `request`; counts the outcome.
    pub async fn authenticate(
        &self,
        token: &str,
        request: &RequestInfo<'_>,
    ) -> Result<Verified, AuthError> {
        let result = self.verify(token, request).await;
        let label = match &result {
            Ok(_) => "ok",
            Err(AuthError::Unavailable) => "unavailable",
            Err(_) => "refused",
        };
        metrics::counter!("switchboard_auth_total", "result" => label).increment(1);
        result
    }

    async fn verify(&self, token: &str, request: &RequestInfo<'_>) -> Result<Verified, AuthError> {
        let now = now_secs();
        let verified = match &self.source {
            Source::Jwt(jwt) => jwt.verify_request(token, request).await?,
            Source::Lookup { redis, http } => lookup(redis, http, token, now, true).await?,
        };
        if let Some(liveness) = &self.liveness {
            liveness.check(token).await?;
        }
        Ok(verified)
    }

    /// Re-checks a live session's credential: its expiry, then the back end, asked afresh
    /// (not from the cache). A revoked token is remembered as refused, so a reconnect with it
    /// stays refused.
    pub async fn recheck(&self, credential: &Credential) -> Recheck {
        let now = now_secs();
        if credential.expires_at.is_some_and(|exp| exp <= now) {
            return Recheck::Expired;
        }
        let token = &*credential.token;
        let mut result = match &self.source {
            // The signature cannot change; the expiry was checked above.
            Source::Jwt(_) => Ok(()),
            Source::Lookup { redis, http } => {
                lookup(redis, http, token, now, false).await.map(drop)
            }
        };
        if result.is_ok()
            && let Some(liveness) = &self.liveness
        {
            result = liveness.check(token).await;
        }
        match result {
            Ok(()) => Recheck::Valid,
            Err(AuthError::Unavailable) => Recheck::Unavailable,
            Err(e) => {
                if let Source::Lookup {
                    http: Some(http), ..
                } = &self.source
                {
                    http.refuse(token, now);
                }
                match e {
                    AuthError::Invalid(why) if why == "expired" => Recheck::Expired,
                    _ => Recheck::Revoked,
                }
            }
        }
    }

    /// Signs a dev token (jwt providers with a signing key).
    pub(crate) fn issue(&self, principal: &Principal, ttl: Duration) -> anyhow::Result<String> {
        match &self.source {
            Source::Jwt(jwt) => jwt.issue(principal, ttl),
            Source::Lookup { .. } => anyhow::bail!("provider {} does not sign tokens", self.name),
        }
    }
}

/// Redis first; on a miss or an outage, HTTP when configured.
async fn lookup(
    redis: &Option<Lookup>,
    http: &Option<Introspect>,
    token: &str,
    now: u64,
    cached: bool,
) -> Result<Verified, AuthError> {
    if let Some(redis) = redis {
        match redis.find(token, now).await {
            Ok(Found::Answer(answer)) => return answer,
            Ok(Found::Missing) if http.is_none() => {
                return Err(AuthError::Invalid("unknown or revoked token".into()));
            }
            Err(e) if http.is_none() => return Err(e),
            // A miss (a refresh token, or not cached there) or an outage: ask over HTTP.
            Ok(Found::Missing) | Err(_) => {}
        }
    }
    match http {
        Some(http) => http.check(token, now, cached).await,
        None => Err(AuthError::Invalid("unknown or revoked token".into())),
    }
}

/// Every provider: `[auth]` at index 0, then `[auth.providers.NAME]` by name.
#[derive(Debug)]
pub struct Providers {
    list: Vec<Provider>,
}

impl Providers {
    /// Builds every provider of `[auth]`.
    pub fn new(auth: &AuthConfig) -> anyhow::Result<Self> {
        let mut list = vec![Provider::new(DEFAULT_PROVIDER, auth).context("[auth]")?];
        for (name, config) in &auth.providers {
            list.push(
                Provider::new(name, config).with_context(|| format!("[auth.providers.{name}]"))?,
            );
        }
        Ok(Self { list })
    }

    /// The index of provider `name` (`None` or `default`: `[auth]`). Config validation makes
    /// every endpoint's name known; an unknown one falls back to `[auth]`.
    pub fn index_of(&self, name: Option<&str>) -> usize {
        name.and_then(|n| self.list.iter().position(|p| &*p.name == n))
            .unwrap_or(0)
    }

    /// Provider `index`, or `[auth]` when out of range.
    pub fn get(&self, index: usize) -> &Provider {
        self.list.get(index).unwrap_or(&self.list[0])
    }

    /// `[auth]`.
    pub fn default_provider(&self) -> &Provider {
        &self.list[0]
    }

    /// Every provider with its index.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &Provider)> {
        self.list.iter().enumerate()
    }
}
