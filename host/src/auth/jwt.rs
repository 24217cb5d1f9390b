//! JWT verification (static keys or a JWKS), the claims of a principal (including Sa-Token's
//! `loginId` split and `clientid` binding), and signing dev tokens.

use std::{borrow::Cow, time::Duration};

use anyhow::{Context as _, bail};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use super::{AuthError, Principal, RequestInfo, Verified, jwks::Jwks, now_secs};
use crate::config::AuthConfig;

/// Verifies tokens and signs dev tokens with the configured keys.
pub struct Authenticator {
    keys: Keys,
    encoding: Option<EncodingKey>,
    validation: Validation,
    sign_algorithm: Algorithm,
    config: AuthConfig,
}

/// What tokens are verified with.
enum Keys {
    /// Nothing: every token is refused.
    None,
    /// `jwt_secret` or `jwt_public_key_file`, then the previous one during a rotation.
    Static(Vec<DecodingKey>),
    /// `jwks_url`, by the token's `kid`.
    Jwks(Jwks),
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
        if let Some(url) = &config.jwks_url {
            if fam == Family::Hmac {
                bail!("auth.jwks_url needs RS*/PS*/ES*/EdDSA algorithms");
            }
            return Ok(Self::with_keys(
                Keys::Jwks(Jwks::new(config, url)?),
                None,
                algorithms,
                config,
            ));
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
                let mut keys = vec![DecodingKey::from_secret(secret.as_bytes())];
                if let Some(previous) = &config.jwt_previous_secret {
                    keys.push(DecodingKey::from_secret(previous.as_bytes()));
                }
                (
                    Some(keys),
                    Some(EncodingKey::from_secret(secret.as_bytes())),
                )
            }
            (None, Some(path)) => {
                let mut decoding = vec![public_key(path, "jwt_public_key_file", fam, first)?];
                if let Some(previous) = &config.jwt_previous_public_key_file {
                    decoding.push(public_key(
                        previous,
                        "jwt_previous_public_key_file",
                        fam,
                        first,
                    )?);
                }
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
        let keys = decoding.map_or(Keys::None, Keys::Static);
        Ok(Self::with_keys(keys, encoding, algorithms, config))
    }

    /// The verifier for `keys` (checked against the configured algorithms, the first of
    /// which signs dev tokens).
    fn with_keys(
        keys: Keys,
        encoding: Option<EncodingKey>,
        algorithms: Vec<Algorithm>,
        config: &AuthConfig,
    ) -> Self {
        let first = algorithms[0];
        let mut validation = Validation::new(first);
        validation.algorithms = algorithms;
        validation.leeway = config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A configured issuer or audience is required, not only checked when present: a token
        // without it (or with `aud: null`, `aud: 123`) is refused as missing the claim.
        let mut required = Vec::new();
        // Without `exp` (Sa-Token's jwt-simple) only with a liveness check: config refuses
        // `require_exp = false` otherwise.
        if config.require_exp {
            required.push("exp");
        }
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
        Self {
            keys,
            encoding,
            validation,
            sign_algorithm: first,
            config: config.clone(),
        }
    }

    /// Verifies `token` with a static key (`jwt_secret`, `jwt_public_key_file`) and reads the
    /// principal from its claims. A JWKS provider needs [`Authenticator::verify_request`],
    /// which may fetch keys.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let Keys::Static(keys) = &self.keys else {
            return Err(AuthError::Invalid(
                "no verification key is configured".into(),
            ));
        };
        Ok(self.verify_claims(token, keys)?.0)
    }

    /// The key for `token`: the static one, or the JWKS key its header names.
    async fn keys_for(&self, token: &str) -> Result<Cow<'_, [DecodingKey]>, AuthError> {
        match &self.keys {
            Keys::None => Err(AuthError::Invalid(
                "no verification key is configured".into(),
            )),
            Keys::Static(keys) => Ok(Cow::Borrowed(keys)),
            Keys::Jwks(jwks) => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|e| AuthError::Invalid(describe_jwt_error(&e)))?;
                // Checked before any fetch: a token of a refused algorithm never makes the
                // host ask the identity provider.
                if !self.validation.algorithms.contains(&header.alg) {
                    return Err(AuthError::Invalid("algorithm not allowed".into()));
                }
                jwks.key(header.kid.as_deref(), header.alg)
                    .await
                    .map(|key| Cow::Owned(vec![key]))
            }
        }
    }

    /// Verifies `token`: the principal, its expiry, and the client id binding against the
    /// request.
    pub async fn verify_request(
        &self,
        token: &str,
        request: &RequestInfo<'_>,
    ) -> Result<Verified, AuthError> {
        let keys = self.keys_for(token).await?;
        let (principal, claims) = self.verify_claims(token, &keys)?;
        if let Some(claim) = &self.config.client_id_claim {
            let bound = claims.get(claim).and_then(scalar_string);
            let given = request.param(&self.config.client_id_param);
            // RuoYi-Vue-Plus refuses a token whose client id differs from the request's.
            if bound.is_none() || bound != given {
                return Err(AuthError::Claim(format!(
                    "{claim:?} does not match the request's {:?}",
                    self.config.client_id_param
                )));
            }
        }
        let expires_at = self.expires_at(&claims);
        Ok(Verified {
            principal,
            expires_at,
        })
    }

    /// Verifies `token` with the first of `keys` whose signature matches (the current key,
    /// then the previous one during a rotation).
    fn verify_claims(
        &self,
        token: &str,
        keys: &[DecodingKey],
    ) -> Result<(Principal, Map<String, Value>), AuthError> {
        let mut decoded = Err(AuthError::Invalid(
            "no verification key is configured".into(),
        ));
        for key in keys {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation) {
                Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    decoded = Err(AuthError::Invalid(describe_jwt_error(&e)));
                }
                other => {
                    decoded = other.map_err(|e| AuthError::Invalid(describe_jwt_error(&e)));
                    break;
                }
            }
        }
        let data = decoded?;
        // The library still accepts `exp + leeway` itself; the re-check closes a session at
        // that second, so a reconnect in it is refused too (one rule for both).
        if self
            .expires_at(&data.claims)
            .is_some_and(|end| end <= now_secs())
        {
            return Err(AuthError::Invalid("expired".into()));
        }
        let principal = self.principal_from(&data.claims)?;
        Ok((principal, data.claims))
    }

    /// When the credential ends: `exp` plus the leeway it is verified with.
    fn expires_at(&self, claims: &Map<String, Value>) -> Option<u64> {
        claims
            .get("exp")
            .and_then(Value::as_u64)
            .map(|exp| exp.saturating_add(self.config.leeway_secs))
    }

    /// `"<user type name>:<user id>"` of `login_id_claim`.
    fn login_id(
        &self,
        claim: &str,
        claims: &Map<String, Value>,
    ) -> Result<(u32, String), AuthError> {
        let bad = || {
            AuthError::Claim(format!(
                "{claim:?} (login id) must be \"<user type name>:<user id>\" with a configured name"
            ))
        };
        let text = claims.get(claim).and_then(scalar_string).ok_or_else(bad)?;
        let (name, id) = text.rsplit_once(':').ok_or_else(bad)?;
        let user_type = name
            .parse::<u32>()
            .ok()
            .or_else(|| self.config.user_type_names.get(name).copied())
            .ok_or_else(bad)?;
        if id.is_empty() {
            return Err(bad());
        }
        Ok((user_type, id.to_owned()))
    }

    fn principal_from(&self, claims: &Map<String, Value>) -> Result<Principal, AuthError> {
        let c = &self.config;
        if let Some(claim) = &c.login_id_claim {
            let (user_type, user_id) = self.login_id(claim, claims)?;
            let tenant_id = tenant(claims, &c.tenant_id_claim)?;
            return Ok(Principal {
                user_id: user_id.into(),
                user_type,
                tenant_id: tenant_id.map(Into::into),
            });
        }
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
        let tenant_id = tenant(claims, &c.tenant_id_claim)?;
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

/// Absent or null: no tenant. Any other shape is refused rather than read as "no tenant",
/// which would put the user outside every tenant's scope checks.
fn tenant(claims: &Map<String, Value>, claim: &str) -> Result<Option<String>, AuthError> {
    match claims.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(
            scalar_string(v).filter(|s| !s.is_empty()).ok_or_else(|| {
                AuthError::Claim(format!(
                    "{claim:?} (tenant id) must be a non-empty string or a number"
                ))
            })?,
        )),
    }
}

pub(super) fn scalar_string(v: &Value) -> Option<String> {
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

/// The PEM public key at `path` (config key `name`) for algorithm `first` of family `fam`.
fn public_key(
    path: &std::path::Path,
    name: &str,
    fam: Family,
    first: Algorithm,
) -> anyhow::Result<DecodingKey> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading auth.{name} {}", path.display()))?;
    Ok(match (fam, first) {
        (Family::Rsa, _) => DecodingKey::from_rsa_pem(&pem)?,
        (Family::Ec, Algorithm::EdDSA) => DecodingKey::from_ed_pem(&pem)?,
        (Family::Ec, _) => DecodingKey::from_ec_pem(&pem)?,
        (Family::Hmac, _) => bail!("auth.{name} needs RS*/PS*/ES* algorithms"),
    })
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
    fn during_a_rotation_the_previous_secret_still_verifies_but_never_signs() {
        const NEW: &str = "fedcba9876543210fedcba9876543210";
        let old = auth(|_| {});
        let rotating = auth(|c| {
            c.jwt_secret = Some(NEW.into());
            c.jwt_previous_secret = Some(SECRET.into());
        });
        let after = auth(|c| c.jwt_secret = Some(NEW.into()));
        let p = principal(None);
        let old_token = old.issue(&p, Duration::from_secs(60)).unwrap();
        let new_token = rotating.issue(&p, Duration::from_secs(60)).unwrap();
        assert_eq!(rotating.verify(&old_token).unwrap(), p);
        assert_eq!(rotating.verify(&new_token).unwrap(), p);
        assert_eq!(
            after.verify(&new_token).unwrap(),
            p,
            "signed with the new secret"
        );
        let refused = after.verify(&old_token).unwrap_err();
        assert_eq!(refused.to_string(), "invalid token: bad signature");
        let stranger = auth(|c| c.jwt_secret = Some("another-secret-0123456789".into()));
        let foreign = stranger.issue(&p, Duration::from_secs(60)).unwrap();
        assert_eq!(
            rotating.verify(&foreign).unwrap_err().to_string(),
            "invalid token: bad signature"
        );
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
}
