//! Turning a token into a [`Principal`]: where tokens are found in a request, JWT
//! verification, and signing dev tokens.

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::config::AuthConfig;

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

/// Where the token of a request was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken {
    /// The token itself.
    pub token: String,
    /// When the token came in `Sec-WebSocket-Protocol`, the protocol entry to echo back
    /// (browsers fail the handshake unless the server selects one of the offered protocols).
    pub protocol: Option<String>,
}

/// Finds the token of a request: query `token`, query `Authorization=Bearer …` (RuoYi-Vue-Plus),
/// the `Authorization: Bearer` header, or an entry of `Sec-WebSocket-Protocol`. `query` is the
/// raw query string. Every place and every repetition is read: two different tokens in one
/// request are refused as ambiguous rather than letting one silently win.
pub fn find_token(query: Option<&str>, headers: &HeaderMap) -> Result<FoundToken, AuthError> {
    // A token is one word; a value with spaces after the optional scheme (`Basic …`) is not one.
    let plain = |token: &str| {
        let token = strip_bearer(token).trim();
        (!token.is_empty() && !token.contains(char::is_whitespace)).then(|| FoundToken {
            token: token.to_owned(),
            protocol: None,
        })
    };
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.unwrap_or_default()).unwrap_or_default();
    let mut found: Vec<FoundToken> = pairs
        .iter()
        .filter(|(k, _)| k == "token" || k == "Authorization")
        .filter_map(|(_, v)| plain(v))
        .collect();
    found.extend(
        headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(plain),
    );
    // A JWT is three base64url parts; other entries (e.g. "bearer") are markers.
    found.extend(
        headers
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty() && p.split('.').count() == 3)
            .map(|p| FoundToken {
                token: p.to_owned(),
                protocol: Some(p.to_owned()),
            }),
    );
    let Some(first) = found.first() else {
        return Err(AuthError::Missing);
    };
    if found.iter().any(|f| f.token != first.token) {
        return Err(AuthError::Ambiguous);
    }
    // The same token in several places: echo the protocol entry if one was offered, as
    // browsers require the server to select one.
    let chosen = found.iter().position(|f| f.protocol.is_some()).unwrap_or(0);
    Ok(found.swap_remove(chosen))
}

/// The value of `Authorization: Bearer <value>` (scheme case-insensitive, RFC 7235), if the
/// header has that form.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let rest = strip_bearer(value);
    (rest.len() < value.len())
        .then(|| rest.trim())
        .filter(|r| !r.is_empty())
}

fn strip_bearer(value: &str) -> &str {
    let value = value.trim();
    match value.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => &value[7..],
        _ => value,
    }
}

/// Why a token was rejected. The message is safe to show to the client.
#[derive(Debug, thiserror::Error)]
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
}

impl AuthError {
    /// Stable error code.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Ambiguous => "ambiguous_token",
            AuthError::Invalid(_) => "invalid_token",
            AuthError::Claim(_) => "invalid_claims",
        }
    }
}

/// Verifies tokens and signs dev tokens with the configured keys.
pub struct Authenticator {
    decoding: Option<DecodingKey>,
    encoding: Option<EncodingKey>,
    validation: Validation,
    sign_algorithm: Algorithm,
    config: AuthConfig,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

#[derive(PartialEq, Eq, Debug, Clone, Copy)]
enum Family {
    Hmac,
    Rsa,
    Ec,
}

fn family(alg: Algorithm) -> Family {
    use Algorithm::*;
    match alg {
        HS256 | HS384 | HS512 => Family::Hmac,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Family::Rsa,
        ES256 | ES384 => Family::Ec,
        // EdDSA keys are read like EC keys by this module (PEM), but are their own family.
        EdDSA => Family::Ec,
    }
}

impl Authenticator {
    /// Builds the verifier from config. With neither a secret nor a public key, every token is
    /// rejected (the host still serves the HTTP API with API keys).
    pub fn new(config: &AuthConfig) -> anyhow::Result<Self> {
        let algorithms = config
            .algorithms
            .iter()
            .map(|a| {
                a.parse::<Algorithm>()
                    .map_err(|_| anyhow::anyhow!("auth.algorithms: unknown algorithm {a:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let Some(&first) = algorithms.first() else {
            bail!("auth.algorithms must name at least one algorithm");
        };
        let fam = family(first);
        if algorithms.iter().any(|a| family(*a) != fam) {
            // Mixing families is how algorithm confusion attacks start (an RSA public key
            // used as an HMAC secret).
            bail!("auth.algorithms must all be of one family (HS*, RS*/PS* or ES*)");
        }
        let (decoding, encoding) = match (&config.jwt_secret, &config.jwt_public_key_file) {
            (Some(_), Some(_)) => {
                bail!("set only one of auth.jwt_secret and auth.jwt_public_key_file")
            }
            (Some(secret), None) => {
                if fam != Family::Hmac {
                    bail!("auth.jwt_secret needs HS* algorithms");
                }
                if secret.len() < 16 {
                    bail!("auth.jwt_secret must be at least 16 bytes");
                }
                (
                    Some(DecodingKey::from_secret(secret.as_bytes())),
                    Some(EncodingKey::from_secret(secret.as_bytes())),
                )
            }
            (None, Some(path)) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!("reading auth.jwt_public_key_file {}", path.display())
                })?;
                let decoding = match (fam, first) {
                    (Family::Rsa, _) => DecodingKey::from_rsa_pem(&pem)?,
                    (Family::Ec, Algorithm::EdDSA) => DecodingKey::from_ed_pem(&pem)?,
                    (Family::Ec, _) => DecodingKey::from_ec_pem(&pem)?,
                    (Family::Hmac, _) => {
                        bail!("auth.jwt_public_key_file needs RS*/PS*/ES* algorithms")
                    }
                };
                let encoding = match &config.jwt_private_key_file {
                    Some(path) => {
                        let pem = std::fs::read(path).with_context(|| {
                            format!("reading auth.jwt_private_key_file {}", path.display())
                        })?;
                        Some(match (fam, first) {
                            (Family::Ec, Algorithm::EdDSA) => EncodingKey::from_ed_pem(&pem)?,
                            (Family::Ec, _) => EncodingKey::from_ec_pem(&pem)?,
                            _ => EncodingKey::from_rsa_pem(&pem)?,
                        })
                    }
                    None => None,
                };
                (Some(decoding), encoding)
            }
            (None, None) => (None, None),
        };
        let mut validation = Validation::new(first);
        validation.algorithms = algorithms;
        validation.leeway = config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A configured issuer or audience is required, not only checked when present: a token
        // without it (or with `aud: null`, `aud: 123`) is refused as missing the claim.
        let mut required = vec!["exp"];
        required.extend(config.issuer.as_ref().map(|_| "iss"));
        required.extend(config.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        match &config.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Self {
            decoding,
            encoding,
            validation,
            sign_algorithm: first,
            config: config.clone(),
        })
    }

    /// Verifies `token` and reads the principal from its claims.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let key = self
            .decoding
            .as_ref()
            .ok_or_else(|| AuthError::Invalid("no verification key is configured".into()))?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation)
            .map_err(|e| AuthError::Invalid(describe_jwt_error(&e)))?;
        self.principal_from(&data.claims)
    }

    fn principal_from(&self, claims: &Map<String, Value>) -> Result<Principal, AuthError> {
        let c = &self.config;
        let user_id = claims
            .get(&c.user_id_claim)
            .and_then(scalar_string)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                AuthError::Claim(format!("{:?} (user id) is missing", c.user_id_claim))
            })?;
        let user_type = match claims.get(&c.user_type_claim) {
            None | Some(Value::Null) => c.default_user_type.ok_or_else(|| {
                AuthError::Claim(format!("{:?} (user type) is missing", c.user_type_claim))
            })?,
            Some(v) => {
                let text = scalar_string(v).unwrap_or_default();
                text.parse::<u32>()
                    .ok()
                    .or_else(|| c.user_type_names.get(&text).copied())
                    .ok_or_else(|| {
                        AuthError::Claim(format!(
                            "{:?} (user type) must be a number or a configured name",
                            c.user_type_claim
                        ))
                    })?
            }
        };
        // Absent or null: no tenant. Any other shape is refused rather than read as "no
        // tenant", which would put the user outside every tenant's scope checks.
        let tenant_id = match claims.get(&c.tenant_id_claim) {
            None | Some(Value::Null) => None,
            Some(v) => Some(scalar_string(v).filter(|s| !s.is_empty()).ok_or_else(|| {
                AuthError::Claim(format!(
                    "{:?} (tenant id) must be a non-empty string or a number",
                    c.tenant_id_claim
                ))
            })?),
        };
        Ok(Principal {
            user_id: user_id.into(),
            user_type,
            tenant_id: tenant_id.map(Into::into),
        })
    }

    /// Signs a token for `principal` valid for `ttl`. Needs a secret or a private key.
    pub(crate) fn issue(&self, principal: &Principal, ttl: Duration) -> anyhow::Result<String> {
        let key = self.encoding.as_ref().context(
            "signing needs auth.jwt_secret, or auth.jwt_private_key_file with a public key",
        )?;
        let now = jsonwebtoken::get_current_timestamp();
        let c = &self.config;
        let mut claims = Map::new();
        claims.insert(c.user_id_claim.clone(), Value::from(&*principal.user_id));
        claims.insert(c.user_type_claim.clone(), Value::from(principal.user_type));
        if let Some(t) = &principal.tenant_id {
            claims.insert(c.tenant_id_claim.clone(), Value::from(&**t));
        }
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(now + ttl.as_secs().max(1)));
        if let Some(iss) = &c.issuer {
            claims.insert("iss".into(), Value::from(iss.as_str()));
        }
        if let Some(aud) = &c.audience {
            claims.insert("aud".into(), Value::from(aud.as_str()));
        }
        Ok(jsonwebtoken::encode(
            &Header::new(self.sign_algorithm),
            &claims,
            key,
        )?)
    }
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A short, client-safe reason.
fn describe_jwt_error(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        ExpiredSignature => "expired".into(),
        ImmatureSignature => "not yet valid".into(),
        InvalidSignature => "bad signature".into(),
        InvalidAlgorithm => "algorithm not allowed".into(),
        InvalidIssuer => "wrong issuer".into(),
        InvalidAudience => "wrong audience".into(),
        MissingRequiredClaim(c) => format!("missing claim {c}"),
        InvalidToken | Base64(_) | Json(_) | Utf8(_) => "malformed".into(),
        _ => "rejected".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn auth(edit: impl FnOnce(&mut AuthConfig)) -> Authenticator {
        let mut c = AuthConfig {
            jwt_secret: Some(SECRET.into()),
            ..Default::default()
        };
        edit(&mut c);
        Authenticator::new(&c).unwrap()
    }

    fn principal(tenant: Option<&str>) -> Principal {
        Principal {
            user_id: "42".into(),
            user_type: 2,
            tenant_id: tenant.map(Into::into),
        }
    }

    #[test]
    fn issued_tokens_verify() {
        let a = auth(|_| {});
        let p = principal(Some("t1"));
        let token = a.issue(&p, Duration::from_secs(60)).unwrap();
        assert_eq!(a.verify(&token).unwrap(), p);
    }

    #[test]
    fn numeric_claims_and_custom_names() {
        let a = auth(|c| {
            c.user_id_claim = "userId".into();
            c.user_type_claim = "userType".into();
            c.tenant_id_claim = "tenantId".into();
            c.user_type_names.insert("sys_user".into(), 1);
        });
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let exp = jsonwebtoken::get_current_timestamp() + 60;
        let claims =
            serde_json::json!({"userId": 7, "userType": "sys_user", "tenantId": 1, "exp": exp});
        let token = jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap();
        let p = a.verify(&token).unwrap();
        assert_eq!(
            (&*p.user_id, p.user_type, p.tenant_id.as_deref()),
            ("7", 1, Some("1"))
        );
    }

    fn sign(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap()
    }

    #[test]
    fn configured_issuer_and_audience_are_required() {
        let a = auth(|c| {
            c.issuer = Some("sso".into());
            c.audience = Some("switchboard".into());
        });
        let exp = jsonwebtoken::get_current_timestamp() + 60;
        let base = serde_json::json!({"sub": "1", "user_type": 1, "exp": exp});
        let with = |extra: serde_json::Value| {
            let mut claims = base.clone();
            for (k, v) in extra.as_object().unwrap() {
                claims[k] = v.clone();
            }
            a.verify(&sign(claims))
        };
        assert!(with(serde_json::json!({"iss": "sso", "aud": "switchboard"})).is_ok());
        assert!(with(serde_json::json!({"iss": "sso", "aud": ["x", "switchboard"]})).is_ok());
        for bad in [
            serde_json::json!({"aud": "switchboard"}),
            serde_json::json!({"iss": "sso"}),
            serde_json::json!({"iss": "sso", "aud": null}),
            serde_json::json!({"iss": "sso", "aud": 123}),
            serde_json::json!({"iss": null, "aud": "switchboard"}),
            serde_json::json!({"iss": 7, "aud": "switchboard"}),
            serde_json::json!({"iss": "other", "aud": "switchboard"}),
            serde_json::json!({"iss": "sso", "aud": "other"}),
        ] {
            let err = with(bad.clone()).unwrap_err();
            assert_eq!(err.code(), "invalid_token", "{bad}: {err}");
        }
        // Without them configured, tokens need neither.
        assert!(auth(|_| {}).verify(&sign(base.clone())).is_ok());
    }

    #[test]
    fn malformed_tenant_claims_are_refused() {
        let a = auth(|_| {});
        let exp = jsonwebtoken::get_current_timestamp() + 60;
        let token = |tenant: serde_json::Value| {
            sign(serde_json::json!({"sub": "1", "user_type": 1, "exp": exp, "tenant_id": tenant}))
        };
        for bad in [
            serde_json::json!(["t1"]),
            serde_json::json!({"id": "t1"}),
            serde_json::json!(true),
            serde_json::json!(""),
        ] {
            let err = a.verify(&token(bad.clone())).unwrap_err();
            assert_eq!(err.code(), "invalid_claims", "{bad}: {err}");
        }
        assert_eq!(
            a.verify(&token(serde_json::Value::Null)).unwrap().tenant_id,
            None
        );
        assert_eq!(
            a.verify(&token(serde_json::json!(12)))
                .unwrap()
                .tenant_id
                .as_deref(),
            Some("12")
        );
    }

    #[test]
    fn rejects_alg_none_and_mixed_families() {
        let a = auth(|_| {});
        // {"alg":"none","typ":"JWT"}.{"sub":"1","user_type":1,"exp":9999999999}.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIiwidXNlcl90eXBlIjoxLCJleHAiOjk5OTk5OTk5OTl9.";
        assert!(matches!(a.verify(none), Err(AuthError::Invalid(_))));
        let mixed = AuthConfig {
            jwt_secret: Some(SECRET.into()),
            algorithms: vec!["HS256".into(), "RS256".into()],
            ..Default::default()
        };
        assert!(Authenticator::new(&mixed).is_err());
    }

    #[test]
    fn bearer_needs_the_scheme() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("authorization", v.parse().unwrap());
            bearer(&h).map(str::to_owned)
        };
        assert_eq!(with("Bearer k1").as_deref(), Some("k1"));
        assert_eq!(with("bearer k1").as_deref(), Some("k1"));
        assert_eq!(with("k1"), None);
        assert_eq!(with("Bearer "), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn finds_tokens_in_every_place() {
        let h = HeaderMap::new();
        assert!(matches!(find_token(None, &h), Err(AuthError::Missing)));
        let found = |q: &str, h: &HeaderMap| find_token(Some(q), h).map(|f| f.token);
        assert_eq!(found("Authorization=Bearer%20abc", &h).unwrap(), "abc");
        assert_eq!(found("token=def&x=1", &h).unwrap(), "def");
        let mut h = HeaderMap::new();
        h.insert("authorization", "bearer xyz".parse().unwrap());
        assert_eq!(found("", &h).unwrap(), "xyz");
        let mut h = HeaderMap::new();
        h.insert("sec-websocket-protocol", "bearer, a.b.c".parse().unwrap());
        let f = find_token(None, &h).unwrap();
        assert_eq!(
            (f.token.as_str(), f.protocol.as_deref()),
            ("a.b.c", Some("a.b.c"))
        );
        // The same token in the query too: still chosen, and its protocol echoed.
        let f = find_token(Some("token=a.b.c"), &h).unwrap();
        assert_eq!(f.protocol.as_deref(), Some("a.b.c"));
    }

    #[test]
    fn different_tokens_in_one_request_are_ambiguous() {
        let none = HeaderMap::new();
        let ambiguous =
            |q: &str, h: &HeaderMap| matches!(find_token(Some(q), h), Err(AuthError::Ambiguous));
        assert!(ambiguous("token=a&token=b", &none));
        assert!(ambiguous("token=a&Authorization=Bearer%20b", &none));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer b".parse().unwrap());
        assert!(ambiguous("token=a", &h));
        let mut h = HeaderMap::new();
        h.append("authorization", "Bearer a".parse().unwrap());
        h.append("authorization", "Bearer b".parse().unwrap());
        assert!(ambiguous("", &h));
        let mut h = HeaderMap::new();
        h.insert("sec-websocket-protocol", "a.b.c, d.e.f".parse().unwrap());
        assert!(ambiguous("", &h));
        // Repeating the same token is not ambiguous.
        assert!(find_token(Some("token=a&token=a"), &none).is_ok());
        assert_eq!(AuthError::Ambiguous.code(), "ambiguous_token");
    }
}
