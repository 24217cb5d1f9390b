//! A real HTTP back end for plugins to call, on `127.0.0.1:0`, stopped when dropped.
//!
//! - `GET /hello` → `hello`
//! - `POST /echo` → the request body
//! - `GET /bytes/{n}` → `n` bytes of `x` with a `content-length`
//! - `GET /stream/{n}` → `n` bytes of `x` in 1 KiB chunks, without a `content-length`
//! - `GET /slow/{ms}` → `slow` after `ms` milliseconds (a back end that takes its time)
//! - `POST /notes` with `{"text"}` → `{"id": n}`, n counting from 1; the notes are kept
//!
//! Every request is counted, so a test can prove that a refused request never arrived.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, State},
    routing::{get, post},
};
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::oneshot;

#[derive(Debug, Default)]
struct Seen {
    requests: AtomicU64,
    in_flight: AtomicU64,
    most_in_flight: AtomicU64,
    notes: Mutex<Vec<Value>>,
}

/// A running back end.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Seen>,
    _stop: oneshot::Sender<()>,
}

/// Counts a request in flight until dropped.
struct InFlight(Arc<Seen>);

impl InFlight {
    fn new(seen: &Arc<Seen>) -> Self {
        seen.requests.fetch_add(1, Ordering::SeqCst);
        let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        seen.most_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(seen.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Backend {
    /// Starts a back end on `127.0.0.1:0`.
    pub async fn start() -> Self {
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/hello", get(hello))
            .route("/echo", post(echo))
            .route("/bytes/{n}", get(bytes_of))
            .route("/stream/{n}", get(stream_of))
            .route("/slow/{ms}", get(slow))
            .route("/notes", post(note))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            seen,
            _stop: stop,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.seen.requests.load(Ordering::SeqCst)
    }

    /// The most requests it was serving at once.
    pub fn most_in_flight(&self) -> u64 {
        self.seen.most_in_flight.load(Ordering::SeqCst)
    }

    /// The notes posted to `/notes`, in order.
    pub fn notes(&self) -> Vec<Value> {
        self.seen.notes.lock().clone()
    }
}

async fn hello(State(seen): State<Arc<Seen>>) -> &'static str {
    let _counted = InFlight::new(&seen);
    "hello"
}

async fn echo(State(seen): State<Arc<Seen>>, body: Bytes) -> Bytes {
    let _counted = InFlight::new(&seen);
    body
}

async fn bytes_of(State(seen): State<Arc<Seen>>, Path(n): Path<usize>) -> Vec<u8> {
    let _counted = InFlight::new(&seen);
    vec![b'x'; n]
}

async fn stream_of(State(seen): State<Arc<Seen>>, Path(n): Path<usize>) -> Body {
    let _counted = InFlight::new(&seen);
    let chunks = (0..n.div_ceil(1024)).map(move |i| {
        let len = (n - i * 1024).min(1024);
        Ok::<_, std::convert::Infallible>(Bytes::from(vec![b'x'; len]))
    });
    Body::from_stream(futures_util::stream::iter(chunks))
}

async fn slow(State(seen): State<Arc<Seen>>, Path(ms): Path<u64>) -> &'static str {
    let _counted = InFlight::new(&seen);
    // The back end is slow on purpose: this delay is what the test is about.
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "slow"
}

async fn note(State(seen): State<Arc<Seen>>, Json(body): Json<Value>) -> Json<Value> {
    let _counted = InFlight::new(&seen);
    let mut notes = seen.notes.lock();
    notes.push(body);
    Json(json!({ "id": notes.len() }))
}
