//! `http`: asking the back end about a token (yudao's
//! `POST /admin-api/system/oauth2/check-token?token=<t>` with HTTP Basic client credentials,
//! which answers 200 with `CommonResult` whatever the outcome).
//!
//! A 2xx answer whose JSON meets the success condition (`/code == 0`) and has a user id is a
//! valid token; a 2xx that does not, or a 4xx, is a refusal (401). A 5xx, a timeout, an
//! unreachable back end or an answer that is not JSON makes the token uncheckable (503):
//! the client did nothing wrong, and nothing is cached, so the next request asks again.

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
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
}

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
        let answer = self.ask(token, now).await;
        self.cache.put(token, &answer, Instant::now(), now);
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
