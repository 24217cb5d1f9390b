//! Sending one plugin request: the checks of the grant, the host's own name resolution and
//! connection to a checked address, HTTP/1.1 over it, and a response body held to the size
//! cap and the request's deadline.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::{
    net::TcpStream,
    sync::OwnedSemaphorePermit,
    time::{Instant, Sleep, timeout_at},
};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, io::TokioIo};

use super::{
    HttpGrant, Sent,
    allow::{Host, non_public},
};

/// How a request ended, the `outcome` label of `switchboard_plugin_http_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A response arrived (its body may still fail).
    Ok,
    /// Not in `allowed_hosts`, or a scheme the host does not send.
    Denied,
    /// Resolved to a non-public address that is not listed.
    Prohibited,
    /// Every slot of `http_max_concurrent_requests` was in use.
    Busy,
    /// Did not finish within its time.
    Timeout,
    /// The response body was larger than `http_max_response_bytes`.
    TooLarge,
    /// Anything else: resolution, connection or protocol failure.
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Prohibited => "prohibited",
            Outcome::Busy => "busy",
            Outcome::Timeout => "timeout",
            Outcome::TooLarge => "too_large",
            Outcome::Failed => "failed",
        }
    }
}

/// A refusal or failure: the error the guest receives, how it is counted and why.
struct Refusal {
    error: Error,
    outcome: Outcome,
    reason: String,
}

fn refuse(error: Error, outcome: Outcome, reason: impl Into<String>) -> Refusal {
    Refusal {
        error,
        outcome,
        reason: reason.into(),
    }
}

/// Sends `request` under `grant`, ending by `ends` at the latest. Never panics or traps: every
/// failure is an [`Error`] the guest receives as an `error-code`.
pub(super) async fn send(
    grant: Arc<HttpGrant>,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    ends: Instant,
) -> Sent {
    let target = format!(
        "{} {}",
        request.method(),
        request
            .uri()
            .authority()
            .map_or("(no host)", |a| a.as_str())
    );
    let result = attempt(&grant, request, options, ends).await;
    let outcome = match &result {
        Ok(_) => Outcome::Ok,
        Err(refusal) => refusal.outcome,
    };
    metrics::counter!(
        "switchboard_plugin_http_requests_total",
        "plugin" => grant.plugin.clone(),
        "outcome" => outcome.label()
    )
    .increment(1);
    result.map_err(|refusal| {
        // Escaped: the target and reason quote what the guest wrote.
        let target = super::super::escape::escape_control(&target).into_owned();
        let reason = super::super::escape::escape_control(&refusal.reason).into_owned();
        if grant.may_log() {
            tracing::info!(plugin = %grant.label, request = %target, outcome = outcome.label(), "outbound request failed: {reason}");
        }
        refusal.error
    })
}

async fn attempt(
    grant: &Arc<HttpGrant>,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    ends: Instant,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Refusal,
> {
    if grant.allow.is_empty() {
        return Err(refuse(
            Error::HttpRequestDenied,
            Outcome::Denied,
            "the plugin's sidecar grants no allowed_hosts",
        ));
    }
    let uri = request.uri().clone();
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err(refuse(
            Error::HttpRequestDenied,
            Outcome::Denied,
            "only http:// is sent (this host has no TLS client for plugins)",
        ));
    }
    let authority = uri.authority().ok_or_else(|| {
        refuse(
            Error::HttpRequestUriInvalid,
            Outcome::Failed,
            "the URI has no host",
        )
    })?;
    if authority.as_str().contains('@') {
        return Err(refuse(
            Error::HttpRequestUriInvalid,
            Outcome::Denied,
            "user information in the URI is not sent",
        ));
    }
    let port = authority.port_u16().unwrap_or(80);
    let host = Host::parse(authority.host()).ok_or_else(|| {
        refuse(
            Error::HttpRequestUriInvalid,
            Outcome::Failed,
            "the host is not a valid name or address",
        )
    })?;
    if !grant.allow.permits(&host, port) {
        return Err(refuse(
            Error::HttpRequestDenied,
            Outcome::Denied,
            "host and port not in the plugin's allowed_hosts",
        ));
    }
    let permit = grant.slots.clone().try_acquire_owned().map_err(|_| {
        refuse(
            Error::ConnectionLimitReached,
            Outcome::Busy,
            format!(
                "all {} request slots in use (http_max_concurrent_requests)",
                grant.max_concurrent
            ),
        )
    })?;
    let deadline = ends.min(Instant::now() + grant.timeout);
    let connect_by = options
        .and_then(|o| o.connect_timeout)
        .map_or(deadline, |t| deadline.min(Instant::now() + t));
    let addrs = resolve(&host, port, connect_by).await?;
    if let Some(bad) = addrs
        .iter()
        .find(|a| !grant.allow.may_connect(a.ip(), port))
    {
        let kind = if non_public(bad.ip()) {
            "a non-public address"
        } else {
            "an address"
        };
        return Err(refuse(
            Error::DestinationIpProhibited,
            Outcome::Prohibited,
            format!(
                "{} resolves to {kind} ({}) that allowed_hosts does not list",
                authority.host(),
                bad.ip()
            ),
        ));
    }
    let stream = connect(&addrs, connect_by).await?;
    let (mut sender, conn) = timeout_at(
        connect_by,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| timed_out(Error::ConnectionTimeout, "the HTTP handshake"))?
    .map_err(|e| refuse(Error::HttpProtocolError, Outcome::Failed, e.to_string()))?;
    // HTTP/1.1 sends the path; `Host` was set from the authority.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = path.parse().map_err(|_| {
        refuse(
            Error::HttpRequestUriInvalid,
            Outcome::Failed,
            "the path is not valid",
        )
    })?;
    let plugin = grant.plugin.clone();
    let request = request.map(|body| {
        Counted {
            inner: body,
            bytes: metrics::counter!("switchboard_plugin_http_bytes_total", "plugin" => plugin.clone(), "direction" => "out"),
        }
        .boxed_unsync()
    });
    let first_byte_by = options
        .and_then(|o| o.first_byte_timeout)
        .map_or(deadline, |t| deadline.min(Instant::now() + t));
    // The connection is driven while the response is awaited, then handed back for the
    // runtime to drive while the guest reads the body.
    let mut conn = Some(Box::pin(conn));
    let response = timeout_at(first_byte_by, async {
        let send = sender.send_request(request);
        tokio::pin!(send);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = send.as_mut().poll(cx) {
                return Poll::Ready(r.map_err(Some));
            }
            if let Some(c) = conn.as_mut()
                && let Poll::Ready(r) = c.as_mut().poll(cx)
            {
                conn = None;
                return Poll::Ready(match r {
                    Err(e) => Err(Some(e)),
                    // The connection ended before the response: poll the send once more.
                    Ok(()) => match send.as_mut().poll(cx) {
                        Poll::Ready(r) => r.map_err(Some),
                        Poll::Pending => Err(None),
                    },
                });
            }
            Poll::Pending
        })
        .await
    })
    .await
    .map_err(|_| timed_out(Error::HttpResponseTimeout, "the response headers"))?
    .map_err(|e| match e {
        Some(e) => refuse(Error::HttpProtocolError, Outcome::Failed, e.to_string()),
        None => refuse(
            Error::HttpResponseIncomplete,
            Outcome::Failed,
            "the server closed the connection without a response",
        ),
    })?;
    let cap = grant.max_response_bytes;
    if let Some(length) = response.body().size_hint().exact()
        && length > cap
    {
        return Err(refuse(
            Error::HttpResponseBodySize(Some(length)),
            Outcome::TooLarge,
            format!(
                "the response body is {length} bytes; the cap is {cap} (http_max_response_bytes)"
            ),
        ));
    }
    let bytes = metrics::counter!("switchboard_plugin_http_bytes_total", "plugin" => grant.plugin.clone(), "direction" => "in");
    let response = response.map(|incoming| {
        Capped {
            inner: incoming,
            left: cap,
            cap,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            bytes,
            grant: grant.clone(),
            _slot: permit,
        }
        .boxed_unsync()
    });
    let io = async move {
        let Some(conn) = conn else { return Ok(()) };
        match timeout_at(deadline, conn).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Hyper(e)),
            Err(_) => Err(Error::HttpResponseTimeout),
        }
    };
    Ok((response, Box::new(io)))
}

fn timed_out(error: Error, during: &str) -> Refusal {
    refuse(
        error,
        Outcome::Timeout,
        format!("timed out waiting for {during} (http_timeout_ms or the call's deadline)"),
    )
}

/// The addresses of `host`, resolved by the host (an address literal is its own).
async fn resolve(host: &Host, port: u16, by: Instant) -> Result<Vec<SocketAddr>, Refusal> {
    let name = match host {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Name(name) => name.clone(),
    };
    let found = timeout_at(by, tokio::net::lookup_host((name.as_str(), port)))
        .await
        .map_err(|_| timed_out(Error::DnsTimeout, "name resolution"))?
        .map_err(|e| {
            refuse(
                Error::DestinationNotFound,
                Outcome::Failed,
                format!("resolving {name}: {e}"),
            )
        })?;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        return Err(refuse(
            Error::DestinationNotFound,
            Outcome::Failed,
            format!("{name} has no address"),
        ));
    }
    Ok(addrs)
}

/// Connects to the first of `addrs` that answers.
async fn connect(addrs: &[SocketAddr], by: Instant) -> Result<TcpStream, Refusal> {
    let mut last = None;
    for addr in addrs {
        match timeout_at(by, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = Some((addr.ip(), e)),
            Err(_) => return Err(timed_out(Error::ConnectionTimeout, "the connection")),
        }
    }
    let reason = match last {
        Some((ip, e)) => format!("connecting to {ip}: {e}"),
        None => "no address to connect to".into(),
    };
    Err(refuse(Error::ConnectionRefused, Outcome::Failed, reason))
}

/// A request body that counts the bytes the guest sends.
struct Counted {
    inner: WasiBody,
    bytes: metrics::Counter,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes.increment(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body held to the size cap and the request's deadline; holds the request's slot
/// until the guest drops it.
struct Capped {
    inner: hyper::body::Incoming,
    /// Bytes still allowed.
    left: u64,
    cap: u64,
    deadline: Pin<Box<Sleep>>,
    bytes: metrics::Counter,
    grant: Arc<HttpGrant>,
    _slot: OwnedSemaphorePermit,
}

impl Capped {
    /// Counts and logs a body that failed after its response arrived.
    fn fail(&self, outcome: Outcome, reason: &str) {
        metrics::counter!(
            "switchboard_plugin_http_body_errors_total",
            "plugin" => self.grant.plugin.clone(),
            "outcome" => outcome.label()
        )
        .increment(1);
        if self.grant.may_log() {
            tracing::info!(plugin = %self.grant.label, outcome = outcome.label(), "outbound response body failed: {reason}");
        }
    }
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.fail(
                Outcome::Timeout,
                "timed out (http_timeout_ms or the call's deadline)",
            );
            return Poll::Ready(Some(Err(Error::HttpResponseTimeout)));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::Hyper(e)))),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.left {
                        let cap = self.cap;
                        self.fail(
                            Outcome::TooLarge,
                            &format!(
                                "longer than the cap of {cap} bytes (http_max_response_bytes)"
                            ),
                        );
                        self.left = 0;
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(cap)))));
                    }
                    self.left -= n;
                    self.bytes.increment(n);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
