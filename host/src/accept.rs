//! The accept loop: one task per TCP connection, served by hyper's HTTP/1 server with a
//! header-read timeout and a bounded request head, under two caps:
//!
//! - every open TCP connection (upgraded WebSockets included) holds a permit of
//!   `server.max_open_connections`; without a free one the loop stops accepting until a
//!   connection closes, so the process never runs out of file descriptors (EMFILE);
//! - a connection that has not authenticated is *pending*: at most
//!   `server.max_pending_connections` of them; one more closes the oldest, so idle or
//!   half-sent connections cannot crowd out health checks and clients about to authenticate.
//!
//! A request finds its [`Conn`] in its extensions: the peer address (for per-source limits),
//! the open-connection permit (an upgraded WebSocket keeps it) and [`Conn::authenticated`].

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt as _;

use crate::config::ServerConfig;

/// Descriptors kept free for everything that is not a client connection: plugin files, the
/// compiled-code cache, Redis, logs.
const RESERVED_FDS: u64 = 256;
/// Connections above `max_connections + max_pending_connections` when the cap is derived:
/// authenticated API clients and health checks.
const HEADROOM: usize = 256;

/// The connection caps in force, derived from `[server]` and the open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Open TCP connections of every kind.
    pub open: usize,
    /// Open connections that have not authenticated.
    pub pending: usize,
    /// Sessions (WebSocket and SSE); `server.max_connections`, lowered when the open-file
    /// limit leaves less room.
    pub sessions: usize,
}

impl Limits {
    /// The caps for `server` given the process's open-file limit (`None`: unknown).
    pub(crate) fn new(server: &ServerConfig, open_files: Option<u64>) -> anyhow::Result<Self> {
        let allowed = open_files.map(|n| n.saturating_sub(RESERVED_FDS) as usize);
        let derived = server.max_open_connections == 0;
        let wanted = if derived {
            server.max_connections + server.max_pending_connections + HEADROOM
        } else {
            server.max_open_connections
        };
        let open = match allowed {
            Some(allowed) if wanted > allowed && !derived => anyhow::bail!(
                "server.max_open_connections = {wanted} is above what the open-file limit of \
                 this process allows ({allowed}: {} less {RESERVED_FDS} kept for files); lower \
                 it or raise the limit (ulimit -n)",
                open_files.unwrap_or_default()
            ),
            Some(allowed) => wanted.min(allowed),
            None => wanted,
        };
        if open < 2 {
            anyhow::bail!(
                "the open-file limit ({}) leaves no room for connections: raise it (ulimit -n)",
                open_files.unwrap_or_default()
            );
        }
        // Sessions never take the last slots: health checks and handshakes need them.
        let headroom = server.max_pending_connections.min(open / 4).max(1);
        let sessions = server.max_connections.min(open - headroom);
        if sessions < server.max_connections {
            tracing::warn!(
                max_connections = server.max_connections,
                sessions,
                open,
                "server.max_connections lowered: the open-file limit allows {open} connections"
            );
        }
        Ok(Self {
            open,
            pending: server.max_pending_connections.min(open - 1),
            sessions,
        })
    }
}

/// Raises the soft open-file limit to the hard one (as Go's runtime does), and returns it.
#[cfg(unix)]
pub(crate) fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
        }
    }
    // `None` is unlimited: no cap from the process.
    getrlimit(Resource::Nofile).current
}

/// Other systems: the limit is unknown.
#[cfg(not(unix))]
pub fn raise_open_file_limit() -> Option<u64> {
    None
}

/// What a request knows about its connection. Cheap to clone; the connection's
/// open-connection permit lives until the last clone is dropped.
#[derive(Clone, Debug)]
pub(crate) struct Conn(Arc<ConnInner>);

#[derive(Debug)]
struct ConnInner {
    /// The client's address.
    peer: SocketAddr,
    /// Key in the pending set.
    id: u64,
    pending: Arc<Pending>,
    /// One of `max_open_connections`, held for the socket's life.
    _open: OwnedSemaphorePermit,
}

impl Conn {
    /// The client's address.
    pub(crate) fn peer(&self) -> IpAddr {
        self.0.peer.ip()
    }

    /// The connection authenticated (a valid token or API key): it leaves the pending set
    /// and can no longer be closed to make room for newcomers.
    pub(crate) fn authenticated(&self) {
        self.0.pending.remove(self.0.id);
    }
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        self.pending.remove(self.id);
    }
}

/// Connections that have not authenticated, oldest first.
#[derive(Debug)]
struct Pending {
    cap: usize,
    /// Connection id → its closer. Ids grow, so the first entry is the oldest.
    open: parking_lot::Mutex<BTreeMap<u64, CancellationToken>>,
}

impl Pending {
    /// Adds connection `id`, closing the oldest pending ones beyond the cap.
    fn add(&self, id: u64) -> CancellationToken {
        let closer = CancellationToken::new();
        let mut open = self.open.lock();
        while open.len() >= self.cap {
            let Some((_, oldest)) = open.pop_first() else {
                break;
            };
            oldest.cancel();
            metrics::counter!("switchboard_connections_rejected_total", "reason" => "pending_evicted")
                .increment(1);
        }
        open.insert(id, closer.clone());
        closer
    }

    fn remove(&self, id: u64) {
        self.open.lock().remove(&id);
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled; then asks every connection to
/// finish its current request and waits for them (the caller bounds how long).
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    server: ServerConfig,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let open = Arc::new(Semaphore::new(limits.open));
    let pending = Arc::new(Pending {
        cap: limits.pending,
        open: Default::default(),
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(server.header_timeout_secs))
        .max_buf_size(server.max_header_bytes);
    let http = Arc::new(http);
    let connections = TaskTracker::new();
    let mut next_id = 0u64;
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = open.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Per-connection errors (reset before accept) are routine; others (out of
                    // descriptors despite the cap) get a pause so the loop does not spin.
                    if !is_connection_error(&e) {
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        // Frames are small and latency-bound: Nagle would hold one back until the client's
        // delayed ACK (40 ms on Linux) whenever an earlier frame is still unacknowledged.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        next_id += 1;
        let evicted = pending.add(next_id);
        let conn = Conn(Arc::new(ConnInner {
            peer,
            id: next_id,
            pending: pending.clone(),
            _open: permit,
        }));
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(conn.clone());
            let router = router.clone();
            async move { Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {})) }
        });
        let http = http.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let served = http
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(served);
            tokio::select! {
                result = served.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = evicted.cancelled() => {
                    tracing::debug!(%peer, "closed the oldest unauthenticated connection");
                }
                () = shutdown.cancelled() => {
                    served.as_mut().graceful_shutdown();
                    let _ = served.await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(edit: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
        let mut s = ServerConfig::default();
        edit(&mut s);
        s
    }

    #[test]
    fn derived_cap_stays_under_the_open_file_limit() {
        let s = server(|_| {});
        let l = Limits::new(&s, Some(2048)).unwrap();
        assert_eq!(l.open, 2048 - 256);
        assert!(l.sessions + l.pending.min(l.open / 4) <= l.open, "{l:?}");
        assert!(l.sessions < l.open);
        // The defaults fit this machine's usual limit without lowering `max_connections`.
        assert_eq!(Limits::new(&s, Some(20_000)).unwrap().sessions, 19_000);
        let l = Limits::new(&s, None).unwrap();
        assert_eq!(l.open, 19_000 + 512 + 256);
        assert_eq!(l.sessions, 19_000);
    }

    #[test]
    fn an_explicit_cap_above_the_limit_is_an_error() {
        let s = server(|s| s.max_open_connections = 30_000);
        let err = Limits::new(&s, Some(20_000)).unwrap_err().to_string();
        assert!(err.contains("server.max_open_connections"), "{err}");
        assert!(Limits::new(&s, Some(40_000)).is_ok());
    }

    #[test]
    fn the_oldest_pending_connection_makes_room() {
        let p = Pending {
            cap: 2,
            open: Default::default(),
        };
        let a = p.add(1);
        let b = p.add(2);
        p.remove(2);
        let c = p.add(3);
        assert!(!a.is_cancelled() && !c.is_cancelled());
        let _d = p.add(4);
        assert!(a.is_cancelled(), "the oldest is closed");
        assert!(!b.is_cancelled() && !c.is_cancelled());
    }
}
