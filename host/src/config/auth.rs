//! `[auth]` and `[auth.providers.NAME]`: how client tokens are verified.
//!
//! `[auth]` is the default provider (what endpoints without `auth = "NAME"` use); each
//! `[auth.providers.NAME]` table has the same keys and is chosen by `[[endpoints]] auth`.
//! A provider is a `jwt` verifier, a `redis_lookup` (with an optional HTTP fallback) or an
//! `http` introspection call, optionally with a Redis liveness key; a `preset` fills in the
//! keys of a known back end (`yudao`, `ruoyi-plus`) that are left at their defaults.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

/// One auth provider: `[auth]` (the default) or `[auth.providers.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Fills the keys of a known back end that are left at their defaults.
    pub preset: Option<Preset>,
    /// `jwt`, `redis_lookup` or `http`; default `jwt` (or the preset's).
    pub kind: Option<ProviderKind>,
    /// Shared secret for HS256/384/512 tokens.
    pub jwt_secret: Option<String>,
    /// PEM public key for RS*/PS*/ES* tokens (instead of `jwt_secret`).
    pub jwt_public_key_file: Option<PathBuf>,
    /// PEM private key matching `jwt_public_key_file`, only for `switchboard token`.
    pub jwt_private_key_file: Option<PathBuf>,
    /// The secret `jwt_secret` replaces, still accepted while its tokens are in use (a key
    /// rotation's overlap); it never signs.
    pub jwt_previous_secret: Option<String>,
    /// The public key `jwt_public_key_file` replaces, still accepted during a rotation.
    pub jwt_previous_public_key_file: Option<PathBuf>,
    /// An identity provider's JWKS document (Keycloak, Auth0, ...) holding the public keys
    /// (instead of `jwt_secret` or `jwt_public_key_file`); a token's `kid` picks its key.
    pub jwks_url: Option<String>,
    /// How long a fetched key set is used before it is fetched again, in seconds (10 to
    /// 86400). A set that cannot be fetched again stays in use meanwhile.
    pub jwks_refresh_secs: u64,
    /// Fewest seconds between two fetches of the key set, however many tokens name a
    /// `kid` it does not hold: unknown `kid`s cannot make the host hammer the identity
    /// provider (1 to 3600).
    pub jwks_min_refetch_secs: u64,
    /// Accepted algorithms; all must belong to one family (HS, RS/PS or ES).
    pub algorithms: Vec<String>,
    /// Required `iss`, if set: a token without it is refused.
    pub issuer: Option<String>,
    /// Required `aud`, if set: a token without it (or with `aud: null` or a number) is refused.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// JWTs must carry `exp`. `false` is allowed only with `liveness_key`, which then says
    /// whether the token is still valid.
    pub require_exp: bool,
    /// Claim holding the user id (string or number).
    pub user_id_claim: String,
    /// Claim holding the user type (number, or a name mapped by `user_type_names`).
    pub user_type_claim: String,
    /// Claim holding the tenant id (string or number; absent or null means no tenant; any
    /// other shape, or `""`, is refused).
    pub tenant_id_claim: String,
    /// Claim of the form `"<user type name>:<user id>"` (Sa-Token's `loginId`); when set it
    /// gives the user id and, through `user_type_names`, the user type.
    pub login_id_claim: Option<String>,
    /// Claim that must equal the request's `client_id_param` (query parameter or header).
    pub client_id_claim: Option<String>,
    /// Query parameter or header holding the client id that `client_id_claim` must match.
    pub client_id_param: String,
    /// User type of tokens that lack the user type; when unset such tokens are rejected.
    pub default_user_type: Option<u32>,
    /// Maps user type names found in tokens (e.g. `sys_user`) to numbers.
    pub user_type_names: BTreeMap<String, u32>,
    /// Redis URL of `redis_lookup` and `liveness_key` (the back end's Redis, not
    /// necessarily the cluster's).
    pub redis_url: Option<String>,
    /// `redis_lookup`: the key holding the token's JSON, `{token}` standing for the token.
    pub lookup_key: Option<String>,
    /// `redis_lookup`: JSON pointer to the user id.
    pub lookup_user_id_pointer: String,
    /// `redis_lookup`: JSON pointer to the user type (number or a `user_type_names` name).
    pub lookup_user_type_pointer: String,
    /// `redis_lookup`: JSON pointer to the tenant id (absent or null: no tenant).
    pub lookup_tenant_id_pointer: String,
    /// `redis_lookup`: JSON pointer to the expiry; empty: no expiry in the value.
    pub lookup_expires_pointer: String,
    /// `redis_lookup`: how the expiry is written.
    pub lookup_expires_format: ExpiresFormat,
    /// `http`: the introspection URL (also the fallback of `redis_lookup` when set).
    pub http_url: Option<String>,
    /// `http`: `GET` or `POST`.
    pub http_method: HttpMethod,
    /// `http`: where the token goes: `query`, `form` or `header`.
    pub http_token_in: TokenPlace,
    /// `http`: the query parameter, form field or header name of the token.
    pub http_token_name: String,
    /// `http`: prefix of the token in a header (e.g. `"Bearer "`).
    pub http_token_prefix: String,
    /// `http`: HTTP Basic user (e.g. an OAuth2 client id).
    pub http_basic_user: Option<String>,
    /// `http`: HTTP Basic password (e.g. the client secret).
    pub http_basic_password: Option<String>,
    /// `http`: extra request headers.
    pub http_headers: BTreeMap<String, String>,
    /// `http`: condition on the answer's JSON for a valid token, `<pointer> == <JSON value>`
    /// (e.g. `/code == 0`); empty: any 2xx answer with the user id is valid.
    pub http_success: String,
    /// `http`: JSON pointer to the user id.
    pub http_user_id_pointer: String,
    /// `http`: JSON pointer to the user type.
    pub http_user_type_pointer: String,
    /// `http`: JSON pointer to the tenant id (absent or null: no tenant).
    pub http_tenant_id_pointer: String,
    /// `http`: JSON pointer to the expiry; empty: none in the answer.
    pub http_expires_pointer: String,
    /// `http`: how the expiry is written.
    pub http_expires_format: ExpiresFormat,
    /// `http` (and `jwks_url`): time for the whole call, in milliseconds (100 to 60000).
    pub http_timeout_ms: u64,
    /// `http`: seconds a valid answer is reused (0 to 3600).
    pub cache_ttl_secs: u64,
    /// `http`: seconds a refusal is reused, so a refused token cannot hammer the back end
    /// (0 to 3600).
    pub negative_cache_ttl_secs: u64,
    /// `http`: cached answers at most (1 to 1000000).
    pub cache_size: usize,
    /// A Redis key that must exist for the token to be valid (`{token}` stands for it), on
    /// `redis_url`; checked at connect and on every re-check.
    pub liveness_key: Option<String>,
    /// How often live sessions of this provider are re-checked (expiry, liveness key,
    /// lookup or introspection), in seconds (1 to 86400).
    pub recheck_interval_secs: u64,
    /// Named providers (only under `[auth]`).
    pub providers: BTreeMap<String, AuthConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            preset: None,
            kind: None,
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_private_key_file: None,
            jwt_previous_secret: None,
            jwt_previous_public_key_file: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
            jwks_min_refetch_secs: 30,
            algorithms: vec!["HS256".into()],
            issuer: None,
            audience: None,
            leeway_secs: 30,
            require_exp: true,
            user_id_claim: "sub".into(),
            user_type_claim: "user_type".into(),
            tenant_id_claim: "tenant_id".into(),
            login_id_claim: None,
            client_id_claim: None,
            client_id_param: "clientid".into(),
            default_user_type: None,
            user_type_names: BTreeMap::new(),
            redis_url: None,
            lookup_key: None,
            lookup_user_id_pointer: "/user_id".into(),
            lookup_user_type_pointer: "/user_type".into(),
            lookup_tenant_id_pointer: "/tenant_id".into(),
            lookup_expires_pointer: String::new(),
            lookup_expires_format: ExpiresFormat::default(),
            http_url: None,
            http_method: HttpMethod::Post,
            http_token_in: TokenPlace::Query,
            http_token_name: "token".into(),
            http_token_prefix: String::new(),
            http_basic_user: None,
            http_basic_password: None,
            http_headers: BTreeMap::new(),
            http_success: String::new(),
            http_user_id_pointer: "/user_id".into(),
            http_user_type_pointer: "/user_type".into(),
            http_tenant_id_pointer: "/tenant_id".into(),
            http_expires_pointer: String::new(),
            http_expires_format: ExpiresFormat::default(),
            http_timeout_ms: 3000,
            cache_ttl_secs: 30,
            negative_cache_ttl_secs: 10,
            cache_size: 10_000,
            liveness_key: None,
            recheck_interval_secs: 30,
            providers: BTreeMap::new(),
        }
    }
}

impl AuthConfig {
    /// The provider kind in force: `kind`, else the preset's, else `jwt`.
    pub fn effective_kind(&self) -> ProviderKind {
        self.kind.unwrap_or(match self.preset {
            Some(Preset::Yudao) if self.redis_url.is_some() => ProviderKind::RedisLookup,
            Some(Preset::Yudao) => ProviderKind::Http,
            Some(Preset::RuoyiPlus) | None => ProviderKind::Jwt,
        })
    }
}

/// Settings of a known back end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// yudao (ruoyi-vue-pro): opaque tokens in Redis `oauth2_access_token:{token}`, then its
    /// `check-token` endpoint (which also accepts refresh tokens).
    Yudao,
    /// RuoYi-Vue-Plus: Sa-Token jwt-simple tokens, `loginId` split, `clientid` binding and
    /// the `Authorization:login:token:{token}` liveness key.
    RuoyiPlus,
}

/// What verifies a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// A signed JWT.
    Jwt,
    /// A JSON value in Redis under `lookup_key`, with `http_url` as fallback when set.
    RedisLookup,
    /// An introspection call to `http_url`.
    Http,
}

/// How an expiry is written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiresFormat {
    /// Seconds since the Unix epoch.
    #[default]
    EpochS,
    /// Milliseconds since the Unix epoch.
    EpochMs,
    /// A date and time, e.g. `2025-01-31 12:00:00`: a `time` format description such as
    /// `[year]-[month]-[day] [hour]:[minute]:[second]`, read at `offset` (`+08:00`).
    DateTime {
        /// The format description.
        format: String,
        /// The UTC offset the local time is written in, `+HH:MM` or `-HH:MM`.
        #[serde(default = "utc")]
        offset: String,
    },
}

fn utc() -> String {
    "+00:00".into()
}

/// HTTP method of an introspection call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `GET`
    Get,
    /// `POST`
    Post,
}

/// Where an introspection call carries the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenPlace {
    /// A query parameter.
    Query,
    /// A field of an `application/x-www-form-urlencoded` body.
    Form,
    /// A header.
    Header,
}

/// `<JSON pointer> == <JSON value>` (e.g. `/code == 0`): the pointer and the value.
pub(crate) fn parse_condition(text: &str) -> Result<(String, serde_json::Value), String> {
    let fix = "write it like \"/code == 0\" or \"/active == true\"";
    let Some((pointer, value)) = text.split_once("==") else {
        return Err(format!("{text:?} has no \"==\"; {fix}"));
    };
    let pointer = pointer.trim();
    if !pointer.starts_with('/') {
        return Err(format!("{pointer:?} is not a JSON pointer; {fix}"));
    }
    let value = serde_json::from_str(value.trim())
        .map_err(|e| format!("{:?} is not a JSON value ({e}); {fix}", value.trim()))?;
    Ok((pointer.to_owned(), value))
}

/// `+HH:MM` or `-HH:MM` as seconds east of UTC.
pub(crate) fn parse_offset(text: &str) -> Option<i32> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=18).contains(&h) && (0..60).contains(&m)).then_some(sign * (h * 3600 + m * 60))
}
