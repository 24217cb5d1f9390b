//! An identity provider's JWKS: the public keys a `jwt` provider verifies with, fetched from
//! `jwks_url` and picked by the token's `kid`.
//!
//! The set is fetched on first use and again when it is older than `jwks_refresh_secs`
//! (if that fails, the old set stays in use), or when a token names a `kid` the set does not
//! hold (a key rotation), at most once per `jwks_min_refetch_secs` whatever the number of
//! such tokens. One fetch runs at a time; requests arriving meanwhile wait for its result
//! instead of fetching too. A set never fetched because the identity provider is down makes
//! tokens uncheckable (503), not refused.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, JwkSet, PublicKeyUse},
};
use parking_lot::Mutex;

use super::AuthError;
use crate::config::AuthConfig;

/// Largest JWKS document read (a set of dozens of RSA keys is a few tens of KiB).
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A signing key of the set.
struct Key {
    /// The key's `alg`, if it names one: a token must then use exactly it.
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

/// Keys by `kid` (`""` for a key without one).
type KeySet = Arc<HashMap<String, Arc<Key>>>;

#[derive(Default)]
struct Fetched {
    keys: KeySet,
    /// When `keys` was fetched; `None`: never.
    at: Option<Instant>,
    /// When a fetch last started, successful or not.
    tried: Option<Instant>,
    /// When a fetch last ended, successful or not.
    ended: Option<Instant>,
}

/// One JWKS endpoint and the keys last fetched from it.
pub(super) struct Jwks {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    refresh: Duration,
    min_refetch: Duration,
    fetched: Mutex<Fetched>,
    /// Held while fetching, so concurrent requests share one fetch.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url)
            .field("keys", &self.fetched.lock().keys.len())
            .finish_non_exhaustive()
    }
}

/// What the current set says about a `kid`.
enum Lookup {
    /// The key, from a set younger than the refresh period.
    Fresh(Arc<Key>),
    /// The key, from an older set: refetch, but keep it if that fails.
    Stale(Arc<Key>),
    /// The set does not hold it (or was never fetched).
    Missing,
}

impl Jwks {
    /// From a checked provider config with `jwks_url` set.
    pub(super) fn new(c: &AuthConfig, url: &str) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(c.http_timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Self {
            client,
            url: url.to_owned(),
            timeout,
            refresh: Duration::from_secs(c.jwks_refresh_secs),
            min_refetch: Duration::from_secs(c.jwks_min_refetch_secs),
            fetched: Mutex::new(Fetched::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The key that verifies a token with header `kid` and `alg`.
    pub(super) async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, AuthError> {
        if let Lookup::Fresh(key) = self.lookup(kid, Instant::now()) {
            return usable(&key, alg);
        }
        // Stale or missing: fetch again (or share a fetch running). A failed fetch leaves the
        // set as it was, so a stale key is still found below; a successful one that no longer
        // holds the key means it was withdrawn.
        self.refetch().await;
        match self.lookup(kid, Instant::now()) {
            Lookup::Fresh(key) | Lookup::Stale(key) => usable(&key, alg),
            Lookup::Missing if self.fetched.lock().at.is_none() => Err(AuthError::Unavailable),
            Lookup::Missing => Err(AuthError::Invalid(match kid {
                Some(_) => "unknown key id".into(),
                None => "no kid, and the key set holds several keys".into(),
            })),
        }
    }

    fn lookup(&self, kid: Option<&str>, now: Instant) -> Lookup {
        let fetched = self.fetched.lock();
        let key = match kid {
            Some(kid) => fetched.keys.get(kid).cloned(),
            // No `kid`: only a set of one key says which key is meant.
            None if fetched.keys.len() == 1 => fetched.keys.values().next().cloned(),
            None => None,
        };
        let fresh = fetched.at.is_some_and(|at| now - at <= self.refresh);
        match key {
            Some(key) if fresh => Lookup::Fresh(key),
            Some(key) => Lookup::Stale(key),
            None => Lookup::Missing,
        }
    }

    /// Fetches the set again unless one was tried less than `min_refetch` ago; waits for a
    /// fetch already running instead of starting another.
    async fn refetch(&self) {
        let asked = Instant::now();
        let _guard = self.fetching.lock().await;
        {
            let fetched = self.fetched.lock();
            // A fetch ended while this request waited (its answer is the one to use), or one
            // started very recently.
            let ended_since = fetched.ended.is_some_and(|ended| ended >= asked);
            let recent = fetched
                .tried
                .is_some_and(|tried| tried.elapsed() < self.min_refetch);
            if ended_since || recent {
                return;
            }
        }
        self.fetched.lock().tried = Some(Instant::now());
        metrics::counter!("switchboard_auth_jwks_fetches_total").increment(1);
        let result = self.fetch().await;
        self.fetched.lock().ended = Some(Instant::now());
        match result {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.len(), "fetched the JWKS");
                let mut fetched = self.fetched.lock();
                fetched.keys = Arc::new(keys);
                fetched.at = Some(Instant::now());
            }
            Err(e) => {
                metrics::counter!("switchboard_auth_jwks_fetch_errors_total").increment(1);
                tracing::warn!(url = %self.url, error = %e, "cannot fetch the JWKS");
            }
        }
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, Arc<Key>>> {
        let read = async {
            let mut response = self.client.get(&self.url).send().await?;
            anyhow::ensure!(
                response.status().is_success(),
                "answered {}",
                response.status()
            );
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                anyhow::ensure!(
                    body.len() + chunk.len() <= MAX_JWKS_BYTES,
                    "the JWKS is larger than {MAX_JWKS_BYTES} bytes"
                );
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        let body = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))??;
        let set: JwkSet = serde_json::from_slice(&body)?;
        Ok(signing_keys(&set))
    }
}

/// The set's public signing keys; encryption keys, secret (`oct`) keys and keys that do not
/// parse are left out (with a log line), not fatal: one odd key must not lock everyone out.
fn signing_keys(set: &JwkSet) -> HashMap<String, Arc<Key>> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
            || matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
        {
            continue;
        }
        let algorithm = match jwk.common.key_algorithm {
            None => None,
            Some(a) => match a.to_string().parse::<Algorithm>() {
                Ok(a) => Some(a),
                // An encryption algorithm (RSA-OAEP, ...).
                Err(_) => continue,
            },
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                keys.insert(kid, Arc::new(Key { algorithm, key }));
            }
            Err(e) => tracing::warn!(kid, error = %e, "JWKS key left out"),
        }
    }
    keys
}

/// `key` for a token signed with `alg`. The allowed algorithms were checked with the header;
/// the family match is checked by the signature verification itself.
fn usable(key: &Key, alg: Algorithm) -> Result<DecodingKey, AuthError> {
    match key.algorithm {
        Some(a) if a != alg => Err(AuthError::Invalid("algorithm not allowed".into())),
        _ => Ok(key.key.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::{Router, extract::State, http::StatusCode, routing::get};
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;
    use crate::auth::RequestInfo;

    const K1: &str = include_str!("../../tests/fixtures/jwks/k1.jwks.json");
    const K1_K2: &str = include_str!("../../tests/fixtures/jwks/k1-k2.jwks.json");
    const K1_PEM: &str = include_str!("../../tests/fixtures/jwks/k1.pem");
    const K2_PEM: &str = include_str!("../../tests/fixtures/jwks/k2.pem");

    /// A JWKS endpoint on loopback whose answer the test changes, counting requests.
    #[derive(Clone)]
    struct Idp {
        answer: Arc<Mutex<(StatusCode, &'static str)>>,
        requests: Arc<AtomicUsize>,
        url: String,
    }

    impl Idp {
        async fn start(body: &'static str) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let idp = Idp {
                answer: Arc::new(Mutex::new((StatusCode::OK, body))),
                requests: Arc::default(),
                url: format!("http://{}/certs", listener.local_addr().unwrap()),
            };
            let app = Router::new()
                .route(
                    "/certs",
                    get(|State(idp): State<Idp>| async move {
                        idp.requests.fetch_add(1, Ordering::SeqCst);
                        *idp.answer.lock()
                    }),
                )
                .with_state(idp.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
            idp
        }

        fn serve(&self, status: StatusCode, body: &'static str) {
            *self.answer.lock() = (status, body);
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    fn jwks(url: &str, refresh: Duration, min_refetch: Duration) -> Jwks {
        let mut jwks = Jwks::new(&AuthConfig::default(), url).unwrap();
        jwks.refresh = refresh;
        jwks.min_refetch = min_refetch;
        jwks
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_rotated_key_is_fetched_and_a_withdrawn_one_refused() {
        let idp = Idp::start(K1).await;
        let keys = jwks(&idp.url, HOUR, Duration::ZERO);
        assert!(keys.key(Some("k1"), Algorithm::ES256).await.is_ok());
        assert!(keys.key(Some("k1"), Algorithm::ES256).await.is_ok());
        assert_eq!(idp.requests(), 1, "a fresh set is reused");
        idp.serve(StatusCode::OK, K1_K2);
        assert!(keys.key(Some("k2"), Algorithm::ES256).await.is_ok());
        assert_eq!(idp.requests(), 2, "an unknown kid fetches the set again");
        let err = keys.key(Some("k3"), Algorithm::ES256).await.err().unwrap();
        assert_eq!(err.to_string(), "invalid token: unknown key id");
        // The key's own `alg` binds it.
        let err = keys.key(Some("k1"), Algorithm::ES384).await.err().unwrap();
        assert_eq!(err.to_string(), "invalid token: algorithm not allowed");
    }

    #[tokio::test]
    async fn unknown_kids_fetch_at_most_once_per_period() {
        let idp = Idp::start(K1).await;
        let keys = jwks(&idp.url, HOUR, HOUR);
        assert!(keys.key(Some("k1"), Algorithm::ES256).await.is_ok());
        for i in 0..50 {
            let kid = format!("forged-{i}");
            let err = keys.key(Some(&kid), Algorithm::ES256).await.err().unwrap();
            assert_eq!(err.code(), "invalid_token");
        }
        assert_eq!(idp.requests(), 1);
    }

    #[tokio::test]
    async fn concurrent_first_requests_share_one_fetch() {
        let idp = Idp::start(K1).await;
        let keys = Arc::new(jwks(&idp.url, HOUR, Duration::ZERO));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let keys = keys.clone();
                tokio::spawn(async move { keys.key(Some("k1"), Algorithm::ES256).await.is_ok() })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap());
        }
        assert_eq!(idp.requests(), 1);
    }

    #[tokio::test]
    async fn an_unreachable_idp_is_unavailable_and_a_stale_set_stays_in_use() {
        let idp = Idp::start(K1).await;
        idp.serve(StatusCode::SERVICE_UNAVAILABLE, "");
        let keys = jwks(&idp.url, Duration::ZERO, Duration::ZERO);
        let err = keys.key(Some("k1"), Algorithm::ES256).await.err().unwrap();
        assert_eq!(
            err.code(),
            "auth_unavailable",
            "never fetched: 503, not 401"
        );
        idp.serve(StatusCode::OK, K1);
        assert!(keys.key(Some("k1"), Algorithm::ES256).await.is_ok());
        // Every set is stale at once (refresh 0): the failed refetch keeps the old keys.
        idp.serve(StatusCode::INTERNAL_SERVER_ERROR, "");
        let before = idp.requests();
        assert!(keys.key(Some("k1"), Algorithm::ES256).await.is_ok());
        assert_eq!(idp.requests(), before + 1, "a stale set is fetched again");
        // A document that is not a JWKS is a failed fetch too.
        idp.serve(StatusCode::OK, "{\"keys\": 7}");
        assert!(keys.key(Some("k1"), Algorithm::ES256).await.is_ok());
    }

    #[tokio::test]
    async fn a_token_without_kid_needs_a_set_of_one_key() {
        let idp = Idp::start(K1).await;
        let keys = jwks(&idp.url, HOUR, Duration::ZERO);
        assert!(keys.key(None, Algorithm::ES256).await.is_ok());
        idp.serve(StatusCode::OK, K1_K2);
        let keys = jwks(&idp.url, HOUR, Duration::ZERO);
        let err = keys.key(None, Algorithm::ES256).await.err().unwrap();
        assert_eq!(
            err.to_string(),
            "invalid token: no kid, and the key set holds several keys"
        );
    }

    fn sign(pem: &str, kid: Option<&str>, alg: Algorithm) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        let exp = jsonwebtoken::get_current_timestamp() + 60;
        let claims = serde_json::json!({"sub": "7", "user_type": 2, "exp": exp});
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    #[tokio::test]
    async fn tokens_verify_with_the_key_their_kid_names() {
        let idp = Idp::start(K1_K2).await;
        let auth = crate::auth::Authenticator::new(&AuthConfig {
            jwks_url: Some(idp.url.clone()),
            algorithms: vec!["ES256".into()],
            ..Default::default()
        })
        .unwrap();
        let headers = http::HeaderMap::new();
        let request = RequestInfo {
            query: None,
            headers: &headers,
        };
        let verified = auth
            .verify_request(&sign(K2_PEM, Some("k2"), Algorithm::ES256), &request)
            .await
            .unwrap();
        assert_eq!(&*verified.principal.user_id, "7");
        // Signed by k1 but naming k2: the signature does not match.
        let err = auth
            .verify_request(&sign(K1_PEM, Some("k2"), Algorithm::ES256), &request)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "invalid token: bad signature");
        // An algorithm not configured is refused before anything is fetched.
        let idp2 = Idp::start(K1).await;
        let auth = crate::auth::Authenticator::new(&AuthConfig {
            jwks_url: Some(idp2.url.clone()),
            algorithms: vec!["RS256".into()],
            ..Default::default()
        })
        .unwrap();
        let err = auth
            .verify_request(&sign(K1_PEM, Some("k1"), Algorithm::ES256), &request)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "invalid token: algorithm not allowed");
        assert_eq!(idp2.requests(), 0);
    }
}
