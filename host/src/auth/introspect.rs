//! `http`: asking the back end about a token (yudao's
//! `POST /admin-api/system/oauth2/check-token?token=<t>` with HTTP Basic client credentials,
//! which answers 200 with `CommonResult` whatever the outcome).
//!
//! A 2xx answer whose JSON meets the success condition (`/code == 0`) and has a user id is a
//! valid token; a 2xx that does not, or a 4xx, is a refusal (401). A 5xx, a timeout, an
//! unreachable back end or an answer that is not JSON makes the token uncheckable (503):
//! the client did nothing wrong, and nothing is cached, so the next request asks again.
//!
//! Requests that present the same token while the back end is being asked about it wait for
//! that one answer instead of asking too (a reconnect storm of one user costs one call).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use http::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;
use serde_json::Value;

use super::{AuthError, Verified, cache::AnswerCache, fields::Fields};
use crate::config::{AuthConfig, HttpMethod, TokenPlace};

/// Largest answer read from the back end.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One introspection endpoint.
#[derive(Debug)]
pub(super) struct Introspect {
    client: reqwest::Client,
    url: String,
    method: HttpMethod,
    place: TokenPlace,
    name: String,
    prefix: String,
    basic: Option<(String, String)>,
    headers: HeaderMap,
    /// `(pointer, value)` the answer must hold.
    success: Option<(String, Value)>,
    fields: Fields,
    timeout: Duration,
    /// Answers by token.
    cache: AnswerCache,
    /// Questions being asked, by token; at most `cache_size` (beyond that, requests ask
    /// on their own).
    asking: Mutex<HashMap<String, Arc<Asking>>>,
    max_asking: usize,
}

/// The one answer that requests for a token wait for.
type Asking = tokio::sync::OnceCell<Result<Verified, AuthError>>;

impl Introspect {
    /// From a checked provider config.
    pub(super) fn new(c: &AuthConfig, fields: Fields) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(c.http_timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut headers = HeaderMap::new();
        for (name, value) in &c.http_headers {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
        let success = if c.http_success.is_empty() {
            None
        } else {
            Some(crate::config::parse_condition(&c.http_success).map_err(anyhow::Error::msg)?)
        };
        Ok(Self {
            client,
            url: c.http_url.clone().unwrap_or_default(),
            method: c.http_method,
            place: c.http_token_in,
            name: c.http_token_name.clone(),
            prefix: c.http_token_prefix.clone(),
            basic: c.http_basic_user.clone().zip(c.http_basic_password.clone()),
            headers,
            success,
            fields,
            timeout,
            cache: AnswerCache::new(
                c.cache_size,
                Duration::from_secs(c.cache_ttl_secs),
                Duration::from_secs(c.negative_cache_ttl_secs),
            ),
            asking: Mutex::new(HashMap::new()),
            max_asking: c.cache_size,
        })
    }

    /// The answer for `token`, from the cache when `cached` and fresh there.
    pub(super) async fn check(
        &self,
        token: &str,
        now: u64,
        cached: bool,
    ) -> Result<Verified, AuthError> {
        let started = Instant::now();
        if cached && let Some(answer) = self.cache.get(token, started) {
            metrics::counter!("switchboard_auth_cache_total", "result" => "hit").increment(1);
            return answer;
        }
        metrics::counter!("switchboard_auth_cache_total", "result" => "miss").increment(1);
        let asking = {
            let mut asking = self.asking.lock();
            if asking.len() < self.max_asking || asking.contains_key(token) {
                Some(asking.entry(token.to_owned()).or_default().clone())
            } else {
                None
            }
        };
        let ask = || async {
            let answer = self.ask(token, now).await;
            // Cached before the question is dropped, so no request in between asks again.
            self.cache.put(token, &answer, Instant::now(), now);
            answer
        };
        let Some(asking) = asking else {
            return ask().await;
        };
        // If the request asking is dropped (its client left), a waiting one asks instead.
        let answer = asking.get_or_init(ask).await.clone();
        let mut map = self.asking.lock();
        if map.get(token).is_some_and(|a| Arc::ptr_eq(a, &asking)) {
            map.remove(token);
        }
        answer
    }

    /// Forgets what is known of `token` and remembers it as refused (a revoked session's
    /// reconnect stays refused).
    pub(super) fn refuse(&self, token: &str, now: u64) {
        let refused = Err(AuthError::Invalid("revoked".into()));
        self.cache.put(token, &refused, Instant::now(), now);
    }

    async fn ask(&self, token: &str, now: u64) -> Result<Verified, AuthError> {
        let method = match self.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
        };
        let mut request = self
            .client
            .request(method, &self.url)
            .headers(self.headers.clone())
            .timeout(self.timeout);
        let value = format!("{}{token}", self.prefix);
        request = match self.place {
            TokenPlace::Query => request.query(&[(self.name.as_str(), value.as_str())]),
            TokenPlace::Form => request.form(&[(self.name.as_str(), value.as_str())]),
            TokenPlace::Header => request.header(self.name.as_str(), value),
        };
        if let Some((user, password)) = &self.basic {
            request = request.basic_auth(user, Some(password));
        }
        let read = async {
            let mut response = request.send().await?;
            let status = response.status();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Ok((status, None));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>((status, Some(body)))
        };
        // The client's timeout covers the whole call; this one guards a body that trickles.
        let (status, body) = match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                tracing::warn!(url = %self.url, error = %e, "introspection call failed");
                return Err(AuthError::Unavailable);
            }
            Err(_) => {
                tracing::warn!(url = %self.url, "introspection call timed out");
                return Err(AuthError::Unavailable);
            }
        };
        if status.is_client_error() && status != http::StatusCode::TOO_MANY_REQUESTS {
            return Err(AuthError::Invalid("refused by the back end".into()));
        }
        if !status.is_success() {
            tracing::warn!(url = %self.url, %status, "introspection answered an error");
            return Err(AuthError::Unavailable);
        }
        let Some(json) = body.and_then(|b| serde_json::from_slice::<Value>(&b).ok()) else {
            tracing::warn!(url = %self.url, "introspection answer is not JSON (or too large)");
            return Err(AuthError::Unavailable);
        };
        if let Some((pointer, expected)) = &self.success
            && json.pointer(pointer) != Some(expected)
        {
            return Err(AuthError::Invalid("refused by the back end".into()));
        }
        self.fields.read(&json, now)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use axum::{Json, Router, extract::State, routing::post};

    use super::*;
    use crate::auth::fields::Expiry;

    /// A back end that counts questions and answers each only once the test releases it.
    #[derive(Clone, Default)]
    struct Backend {
        asked: Arc<AtomicUsize>,
        release: Arc<tokio::sync::Notify>,
    }

    #[tokio::test(flavor = "current_thread")]
    async fn requests_for_one_token_share_one_question() {
        let backend = Backend::default();
        let app = Router::new()
            .route(
                "/check",
                post(|State(b): State<Backend>| async move {
                    b.asked.fetch_add(1, Ordering::SeqCst);
                    b.release.notified().await;
                    Json(serde_json::json!({"user_id": "1", "user_type": 2}))
                }),
            )
            .with_state(backend.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/check", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = AuthConfig {
            http_url: Some(url),
            ..Default::default()
        };
        let fields = Fields {
            user_id: "/user_id".into(),
            user_type: "/user_type".into(),
            tenant_id: String::new(),
            expires: String::new(),
            format: Expiry::Secs,
            names: BTreeMap::new(),
            default_user_type: None,
        };
        let introspect = Arc::new(Introspect::new(&config, fields).unwrap());
        let checks: Vec<_> = (0..20)
            .map(|_| {
                let introspect = introspect.clone();
                tokio::spawn(async move { introspect.check("t", 0, true).await })
            })
            .collect();
        // Every request is waiting on the one question (the map's reference plus 20).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let waiting = introspect
                .asking
                .lock()
                .get("t")
                .map_or(0, Arc::strong_count);
            if waiting == 21 && backend.asked.load(Ordering::SeqCst) == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "requests did not gather");
            tokio::task::yield_now().await;
        }
        backend.release.notify_one();
        for check in checks {
            assert_eq!(&*check.await.unwrap().unwrap().principal.user_id, "1");
        }
        assert_eq!(backend.asked.load(Ordering::SeqCst), 1);
        assert!(introspect.asking.lock().is_empty());
    }
}
