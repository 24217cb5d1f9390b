//! Outbound HTTP for plugins: `wasi:http/outgoing-handler`, reaching only what the operator
//! lists in the plugin's sidecar (`[capabilities] allowed_hosts`).
//!
//! The interfaces are linked for every component, so one that imports `wasi:http` always
//! loads; without a grant each of its requests ends with the error value
//! `HTTP-request-denied` before any name is resolved. With a grant, a request:
//! 1. must name an allowed host and port ([`allow`]), over `http` (`https` is refused with
//!    `HTTP-request-denied` until the host has a TLS client);
//! 2. takes one of the plugin's `http_max_concurrent_requests` slots, or fails with
//!    `connection-limit-reached`;
//! 3. has its name resolved by the host; every address must be public or listed by address,
//!    else `destination-IP-prohibited`; the host then connects to a checked address itself,
//!    so a name that resolves differently a moment later (DNS rebinding) cannot redirect it;
//! 4. ends within `http_timeout_ms` and `call_timeout_ms / 10` before the call's own
//!    deadline, whichever is first (DNS, connect, headers and body together);
//! 5. has its response body capped at `http_max_response_bytes` (`HTTP-response-body-size`).
//!
//! Every failure is a `wasi:http` `error-code` value for the guest, never a trap; the reason
//! is logged (within the plugin's log budget) and counted in
//! `switchboard_plugin_http_requests_total{plugin, outcome}`.

pub(crate) mod allow;
mod send;

use std::{sync::Arc, time::Duration};

use tokio::sync::Semaphore;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use self::allow::AllowList;
use crate::rate::{TokenBucket, Verdict};

/// Log lines about failed requests one plugin may cause per second.
const LOG_LINES_PER_SEC: u32 = 10;

impl HttpGrant {
    /// A grant of `allow` under `limits`.
    pub(crate) fn new(
        allow: AllowList,
        limits: &super::sidecar::Limits,
        plugin: String,
        label: String,
    ) -> Self {
        Self {
            allow,
            timeout: limits.http_timeout,
            max_response_bytes: limits.http_max_response_bytes,
            slots: Arc::new(Semaphore::new(limits.http_max_concurrent_requests)),
            max_concurrent: limits.http_max_concurrent_requests,
            log_budget: parking_lot::Mutex::new(TokenBucket::new(
                LOG_LINES_PER_SEC,
                LOG_LINES_PER_SEC,
            )),
            plugin,
            label,
        }
    }

    /// Whether a line about a failed request may be logged now.
    fn may_log(&self) -> bool {
        self.log_budget.lock().take(std::time::Instant::now()) == Verdict::Allow
    }
}

/// What one plugin version may reach over HTTP, and its limits. Shared by its calls.
#[derive(Debug)]
pub(crate) struct HttpGrant {
    /// The parsed `allowed_hosts`; empty denies every request.
    pub allow: AllowList,
    /// Longest a request may take, DNS to the end of the body.
    pub timeout: Duration,
    /// Largest response body, in bytes.
    pub max_response_bytes: u64,
    /// One permit per request in flight (`http_max_concurrent_requests`).
    pub slots: Arc<Semaphore>,
    /// The number of slots.
    pub max_concurrent: usize,
    /// Rate of the log lines about failed requests, so a plugin cannot flood the log.
    pub log_budget: parking_lot::Mutex<TokenBucket>,
    /// The plugin's name: the `plugin` label of the metrics.
    pub plugin: String,
    /// `name@version`, for log lines.
    pub label: String,
}

/// The `wasi:http` hooks of one call: the plugin's grant and when the call's requests must
/// end.
pub(crate) struct CallHttp {
    /// The plugin's grant.
    pub grant: Arc<HttpGrant>,
    /// `call_timeout / 10` before the call's deadline: a request still running then fails
    /// with a timeout, so the guest has time left to handle it.
    pub requests_end: tokio::time::Instant,
}

impl CallHttp {
    /// The margin left between a request's end and its call's deadline.
    pub(crate) fn margin(call_timeout: Duration) -> Duration {
        call_timeout / 10
    }
}

/// What `send_request` gives back: the response and the future that drives its connection.
type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for CallHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _previous: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let grant = self.grant.clone();
        let ends = self.requests_end;
        Box::new(async move { send::send(grant, request, options, ends).await })
    }
}
