//! Presets of known back ends, and the checks of every auth provider as it will run (preset
//! applied). A preset only fills keys left at their defaults, so any key can still be set.

use super::{
    AuthConfig, EndpointConfig, ExpiresFormat, Invalid, Preset, ProviderKind,
    auth::parse_condition, check::in_range,
};

/// Shortest `jwt_secret`, in bytes.
const MIN_SECRET_LEN: usize = 16;
/// Longest provider name.
const MAX_PROVIDER_NAME_LEN: usize = 64;
/// The name endpoints may use for `[auth]` itself.
pub(crate) const DEFAULT_PROVIDER: &str = "default";

/// `provider` with its preset applied: every key left at its default takes the preset's
/// value.
pub fn effective(provider: &AuthConfig) -> AuthConfig {
    let mut c = provider.clone();
    let d = AuthConfig::default();
    macro_rules! fill {
        ($field:ident, $value:expr) => {
            if c.$field == d.$field {
                c.$field = $value;
            }
        };
    }
    match provider.preset {
        None => {}
        Some(Preset::Yudao) => {
            fill!(lookup_key, Some("oauth2_access_token:{token}".into()));
            fill!(lookup_user_id_pointer, "/userId".into());
            fill!(lookup_user_type_pointer, "/userType".into());
            fill!(lookup_tenant_id_pointer, "/tenantId".into());
            fill!(lookup_expires_pointer, "/expiresTime".into());
            fill!(lookup_expires_format, ExpiresFormat::EpochMs);
            fill!(http_success, "/code == 0".into());
            fill!(http_user_id_pointer, "/data/userId".into());
            fill!(http_user_type_pointer, "/data/userType".into());
            fill!(http_tenant_id_pointer, "/data/tenantId".into());
            fill!(http_expires_pointer, "/data/exp".into());
            fill!(http_expires_format, ExpiresFormat::EpochS);
        }
        Some(Preset::RuoyiPlus) => {
            fill!(require_exp, false);
            fill!(login_id_claim, Some("loginId".into()));
            fill!(tenant_id_claim, "tenantId".into());
            fill!(client_id_claim, Some("clientid".into()));
            fill!(
                user_type_names,
                [("sys_user".to_owned(), 1), ("app_user".to_owned(), 2)].into()
            );
            fill!(
                liveness_key,
                Some("Authorization:login:token:{token}".into())
            );
        }
    }
    c.kind = Some(provider.effective_kind());
    c
}

/// Checks `[auth]` and every `[auth.providers.NAME]`.
pub(super) fn check_all(auth: &AuthConfig) -> Result<(), Invalid> {
    check("auth", auth, true)?;
    for (name, provider) in &auth.providers {
        let key = format!("auth.providers.{name}");
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if name.is_empty()
            || name.len() > MAX_PROVIDER_NAME_LEN
            || !name.chars().all(allowed)
            || name == DEFAULT_PROVIDER
        {
            return Err(Invalid::new(
                key,
                format!(
                    "{name:?} is not a provider name; use 1 to {MAX_PROVIDER_NAME_LEN} \
                     characters from A-Z a-z 0-9 _ . - (\"{DEFAULT_PROVIDER}\" is [auth] itself)"
                ),
            ));
        }
        if !provider.providers.is_empty() {
            return Err(Invalid::new(
                format!("{key}.providers"),
                "providers cannot nest; declare every provider under [auth.providers]",
            ));
        }
        check(&key, provider, false)?;
    }
    Ok(())
}

/// Every `[[endpoints]] auth` names a provider.
pub(super) fn check_endpoints(
    auth: &AuthConfig,
    endpoints: &[EndpointConfig],
) -> Result<(), Invalid> {
    for (i, endpoint) in endpoints.iter().enumerate() {
        if let Some(name) = &endpoint.auth
            && name != DEFAULT_PROVIDER
            && !auth.providers.contains_key(name)
        {
            let known: Vec<&str> = std::iter::once(DEFAULT_PROVIDER)
                .chain(auth.providers.keys().map(String::as_str))
                .collect();
            return Err(Invalid::new(
                format!("endpoints[{i}].auth"),
                format!(
                    "no provider {name:?}; declare [auth.providers.{name}] or use one of {}",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// One provider, preset applied. `is_default`: `[auth]`, which may have no key at all (then
/// every token is refused and the host serves the API with API keys only).
fn check(prefix: &str, provider: &AuthConfig, is_default: bool) -> Result<(), Invalid> {
    let a = effective(provider);
    let key = |k: &str| format!("{prefix}.{k}");
    in_range(&key("leeway_secs"), a.leeway_secs, 0..=3600)?;
    in_range(
        &key("recheck_interval_secs"),
        a.recheck_interval_secs,
        1..=86_400,
    )?;
    in_range(&key("http_timeout_ms"), a.http_timeout_ms, 100..=60_000)?;
    in_range(&key("cache_ttl_secs"), a.cache_ttl_secs, 0..=3600)?;
    in_range(
        &key("negative_cache_ttl_secs"),
        a.negative_cache_ttl_secs,
        0..=3600,
    )?;
    in_range(&key("cache_size"), a.cache_size, 1..=1_000_000)?;
    in_range(&key("jwks_refresh_secs"), a.jwks_refresh_secs, 10..=86_400)?;
    in_range(
        &key("jwks_min_refetch_secs"),
        a.jwks_min_refetch_secs,
        1..=3600,
    )?;
    if let Some(url) = &a.redis_url
        && let Err(e) = redis::Client::open(url.as_str())
    {
        return Err(Invalid::new(
            key("redis_url"),
            format!("{url:?} is not a Redis URL ({e}); write it like redis://127.0.0.1:6379/0"),
        ));
    }
    if let Some(live) = &a.liveness_key {
        template(&key("liveness_key"), live)?;
        needs_redis(prefix, &a, "liveness_key")?;
    }
    match a.effective_kind() {
        ProviderKind::Jwt => jwt(prefix, &a, is_default)?,
        ProviderKind::RedisLookup => {
            let Some(lookup) = &a.lookup_key else {
                return Err(Invalid::new(
                    key("lookup_key"),
                    "redis_lookup needs the key of a token, e.g. \"oauth2_access_token:{token}\"",
                ));
            };
            template(&key("lookup_key"), lookup)?;
            needs_redis(prefix, &a, "kind = \"redis_lookup\"")?;
            let others = [
                a.lookup_user_type_pointer.as_str(),
                a.lookup_tenant_id_pointer.as_str(),
                a.lookup_expires_pointer.as_str(),
            ];
            fields(prefix, "lookup", &a.lookup_user_id_pointer, &others)?;
            format(&key("lookup_expires_format"), &a.lookup_expires_format)?;
            if a.http_url.is_some() {
                http(prefix, &a)?;
            }
        }
        ProviderKind::Http => {
            if a.http_url.is_none() {
                return Err(Invalid::new(
                    key("http_url"),
                    "kind = \"http\" needs the introspection URL, e.g. \
                     \"http://127.0.0.1:48080/admin-api/system/oauth2/check-token\"",
                ));
            }
            http(prefix, &a)?;
        }
    }
    Ok(())
}

fn needs_redis(prefix: &str, a: &AuthConfig, what: &str) -> Result<(), Invalid> {
    if a.redis_url.is_none() {
        return Err(Invalid::new(
            format!("{prefix}.redis_url"),
            format!("{what} needs the back end's Redis; set redis_url = \"redis://host:6379/0\""),
        ));
    }
    Ok(())
}

/// A key template: 1 to 512 characters with `{token}` in it.
fn template(key: &str, value: &str) -> Result<(), Invalid> {
    if value.len() > 512 || !value.contains("{token}") {
        return Err(Invalid::new(
            key,
            format!(
                "{value:?} must contain {{token}} (where the token goes) and be at most 512 characters"
            ),
        ));
    }
    Ok(())
}

fn pointer(key: &str, value: &str, required: bool) -> Result<(), Invalid> {
    if (value.is_empty() && !required) || value.starts_with('/') {
        return Ok(());
    }
    Err(Invalid::new(
        key,
        format!("{value:?} is not a JSON pointer; write it like \"/data/userId\""),
    ))
}

fn fields(prefix: &str, source: &str, user_id: &str, others: &[&str; 3]) -> Result<(), Invalid> {
    pointer(&format!("{prefix}.{source}_user_id_pointer"), user_id, true)?;
    for (name, value) in ["user_type", "tenant_id", "expires"].iter().zip(others) {
        pointer(&format!("{prefix}.{source}_{name}_pointer"), value, false)?;
    }
    Ok(())
}

fn format(key: &str, format: &ExpiresFormat) -> Result<(), Invalid> {
    if let ExpiresFormat::DateTime { format, offset } = format {
        if let Err(e) = time::format_description::parse_owned::<2>(format) {
            return Err(Invalid::new(
                key,
                format!(
                    "{format:?} is not a date-time format ({e}); write it like \"[year]-[month]-[day] [hour]:[minute]:[second]\""
                ),
            ));
        }
        if super::auth::parse_offset(offset).is_none() {
            return Err(Invalid::new(
                key,
                format!("offset {offset:?} is not a UTC offset; write it like \"+08:00\""),
            ));
        }
    }
    Ok(())
}

fn http(prefix: &str, a: &AuthConfig) -> Result<(), Invalid> {
    let key = |k: &str| format!("{prefix}.{k}");
    let url = a.http_url.as_deref().unwrap_or_default();
    let parsed = url.parse::<http::Uri>().ok();
    let ok = parsed.as_ref().is_some_and(|u| {
        matches!(u.scheme_str(), Some("http") | Some("https")) && u.host().is_some()
    });
    if !ok || url.len() > 2048 {
        return Err(Invalid::new(
            key("http_url"),
            format!("{url:?} is not an http:// or https:// URL"),
        ));
    }
    if a.http_token_name.is_empty() || a.http_token_name.len() > 256 {
        return Err(Invalid::new(
            key("http_token_name"),
            "must be 1 to 256 characters",
        ));
    }
    if a.http_basic_user.is_some() != a.http_basic_password.is_some() {
        return Err(Invalid::new(
            key("http_basic_user"),
            "set both http_basic_user and http_basic_password, or neither",
        ));
    }
    for (name, value) in &a.http_headers {
        let valid = http::HeaderName::from_bytes(name.as_bytes()).is_ok()
            && http::HeaderValue::from_str(value).is_ok();
        if !valid {
            return Err(Invalid::new(
                key("http_headers"),
                format!("{name:?} = {value:?} is not a valid header"),
            ));
        }
    }
    if !a.http_success.is_empty()
        && let Err(e) = parse_condition(&a.http_success)
    {
        return Err(Invalid::new(key("http_success"), e));
    }
    let others = [
        a.http_user_type_pointer.as_str(),
        a.http_tenant_id_pointer.as_str(),
        a.http_expires_pointer.as_str(),
    ];
    fields(prefix, "http", &a.http_user_id_pointer, &others)?;
    format(&key("http_expires_format"), &a.http_expires_format)
}

/// Signing keys and claim names of a `jwt` provider.
fn jwt(prefix: &str, a: &AuthConfig, is_default: bool) -> Result<(), Invalid> {
    let key = |k: &str| format!("{prefix}.{k}");
    let keys = [
        a.jwt_secret.is_some(),
        a.jwt_public_key_file.is_some(),
        a.jwks_url.is_some(),
    ];
    if keys.iter().filter(|k| **k).count() > 1 {
        return Err(Invalid::new(
            key("jwt_secret"),
            format!(
                "set only one of {prefix}.jwt_secret, {prefix}.jwt_public_key_file and \
                 {prefix}.jwks_url (a secret for HS*, a public key or a JWKS for RS*/PS*/ES*)"
            ),
        ));
    }
    if let Some(url) = &a.jwks_url {
        let parsed = reqwest::Url::parse(url);
        if !parsed.is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
            return Err(Invalid::new(
                key("jwks_url"),
                format!(
                    "{url:?} is not an http(s) URL; write it like \
                     https://sso.example.com/realms/main/protocol/openid-connect/certs"
                ),
            ));
        }
        if a.algorithms.iter().any(|alg| alg.starts_with("HS")) {
            return Err(Invalid::new(
                key("algorithms"),
                "a JWKS holds public keys: name RS*, PS*, ES* or EdDSA algorithms, e.g. [\"RS256\"]",
            ));
        }
    }
    if a.jwt_secret.is_some() && a.jwt_public_key_file.is_some() {
        return Err(Invalid::new(
            key("jwt_secret"),
            format!(
                "conflicts with {prefix}.jwt_public_key_file; set only one of them (a secret for \
                 HS*, a public key for RS*/PS*/ES*)"
            ),
        ));
    }
    if a.jwt_private_key_file.is_some() && a.jwt_public_key_file.is_none() {
        return Err(Invalid::new(
            key("jwt_private_key_file"),
            format!("needs {prefix}.jwt_public_key_file; set the matching public key too"),
        ));
    }
    if !is_default && !keys.contains(&true) {
        return Err(Invalid::new(
            key("jwt_secret"),
            "a jwt provider needs jwt_secret, jwt_public_key_file or jwks_url",
        ));
    }
    for (k, secret) in [
        ("jwt_secret", &a.jwt_secret),
        ("jwt_previous_secret", &a.jwt_previous_secret),
    ] {
        if let Some(secret) = secret
            && secret.len() < MIN_SECRET_LEN
        {
            return Err(Invalid::new(
                key(k),
                format!("is shorter than {MIN_SECRET_LEN} bytes; use a longer random secret"),
            ));
        }
    }
    if a.jwt_previous_secret.is_some() && a.jwt_secret.is_none() {
        return Err(Invalid::new(
            key("jwt_previous_secret"),
            format!(
                "needs {prefix}.jwt_secret (the new secret); a rotation keeps the old one here \
                 until its tokens have expired"
            ),
        ));
    }
    if a.jwt_previous_public_key_file.is_some() && a.jwt_public_key_file.is_none() {
        return Err(Invalid::new(
            key("jwt_previous_public_key_file"),
            format!(
                "needs {prefix}.jwt_public_key_file (the new key); a rotation keeps the old one \
                 here until its tokens have expired"
            ),
        ));
    }
    for (k, value) in [("issuer", &a.issuer), ("audience", &a.audience)] {
        if value.as_deref() == Some("") {
            return Err(Invalid::new(
                key(k),
                "is empty; remove it or name the expected value",
            ));
        }
    }
    for (k, claim) in [
        ("user_id_claim", Some(&a.user_id_claim)),
        ("user_type_claim", Some(&a.user_type_claim)),
        ("tenant_id_claim", Some(&a.tenant_id_claim)),
        ("login_id_claim", a.login_id_claim.as_ref()),
        ("client_id_claim", a.client_id_claim.as_ref()),
        ("client_id_param", Some(&a.client_id_param)),
    ] {
        if claim.is_some_and(String::is_empty) {
            return Err(Invalid::new(
                key(k),
                "is empty; name the claim, e.g. \"sub\"",
            ));
        }
    }
    if !a.require_exp && a.liveness_key.is_none() {
        return Err(Invalid::new(
            key("require_exp"),
            "false needs liveness_key: a token without exp is accepted only while its Redis \
             key exists, never forever",
        ));
    }
    Ok(())
}
