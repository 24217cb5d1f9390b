//! The WebSocket transport: upgrade, then one task per connection running a read loop and a
//! write loop side by side.
//!
//! The read loop owns the inbound half: it enforces the rate limit and the idle timeout,
//! answers heartbeats at once and queues messages for the dispatch loop, which hands them to
//! the listeners one at a time, in order. Reading goes on while a listener works (a listener
//! waiting seconds on a back end does not stall the session's heartbeats or trip its idle
//! timeout); the queue holds at most `server.messages_burst` messages, and when it is full the
//! read loop waits for room. The write loop owns the outbound half: it drains the session's
//! bounded queue (batching frames into one flush), sends protocol pings, and sends the close
//! frame with the session's close code.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{
        RawQuery, State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket, rejection::WebSocketUpgradeRejection},
    },
    response::{IntoResponse, Response},
};
use futures_util::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use http::HeaderMap;
use tokio::{sync::mpsc, time::Instant};
use tracing::Instrument as _;

use super::{ConnectionGauge, Work, admit, greet, read_text, report, run};
use crate::{
    accept::Conn,
    close_codes,
    config::EndpointConfig,
    frame::Frame,
    http_error::ApiError,
    rate::{Verdict, gate::Gate},
    sessions::{Registered, Session},
    state::AppState,
};

/// Frames written per flush at most, so one busy session cannot hog its task.
const WRITE_BATCH: usize = 64;
/// Messages read ahead of the dispatch loop at most, whatever `server.messages_burst` says
/// (each may be up to `server.max_frame_bytes`).
const MAX_READ_AHEAD: u32 = 1024;

/// `GET <endpoint path>` with `Upgrade: websocket`.
/// The write half of a WebSocket.
type Outgoing = SplitSink<WebSocket, Message>;
/// The read half of a WebSocket.
type Incoming = SplitStream<WebSocket>;

pub(crate) async fn upgrade(
    State(state): State<AppState>,
    axum::Extension(endpoint): axum::Extension<Arc<EndpointConfig>>,
    conn: Option<axum::Extension<Conn>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return ApiError::from(rejection).into_response(),
    };
    let conn = conn.map(|axum::Extension(c)| c);
    let admitted = match admit(&state, &endpoint, conn.as_ref(), query.as_deref(), &headers).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let max_frame = state.config.server.max_frame_bytes;
    let mut ws = ws
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        // Allocated for every connection, idle or not; client frames are small, and a larger
        // frame is read in several chunks.
        .read_buffer_size(1024)
        // Frames queued together leave in one send: the kernel's per-segment cost, not the
        // bytes, dominates on small frames. `write_batch` flushes after every batch.
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(max_frame.max(64 * 1024) * 4);
    if let Some(protocol) = admitted.token.protocol.clone() {
        ws = ws.protocols([protocol]);
    }
    let tracker = state.tracker.clone();
    let span = admitted.session().span();
    ws.on_upgrade(move |socket| {
        // Tracked so shutdown can wait for every connection to flush and close.
        let connection = async move {
            let session = admitted.session().clone();
            let halves = socket.split();
            serve(
                &state,
                &endpoint,
                &session,
                admitted.gate.gate(),
                halves,
                admitted.outbound,
                admitted.registration,
            )
            .await;
            drop(admitted.permit);
            drop(admitted.conn);
        };
        tracker.track_future(connection.instrument(span))
    })
}

/// Runs one connection to its end: greeting, read and write loops side by side, then the
/// session leaves the registry (dropping `registration`) before the close handshake, which may
/// take up to `server.close_timeout_secs` with a client that does not read.
async fn serve(
    state: &AppState,
    endpoint: &EndpointConfig,
    session: &Arc<Session>,
    gate: &Gate,
    (sink, mut stream): (Outgoing, Incoming),
    mut outbound: mpsc::Receiver<Frame>,
    registration: Registered,
) {
    let gauge = ConnectionGauge::new("websocket", session.profile);
    greet(state, session);
    state.dispatcher.connected(session.clone()).await;
    let ping_every = endpoint
        .heartbeat_secs
        .unwrap_or(state.config.server.ping_interval_secs);
    let ping_every = Duration::from_secs(ping_every.max(1));
    let read_ahead = state.config.server.messages_burst.clamp(1, MAX_READ_AHEAD) as usize;
    let (work, queued) = mpsc::channel(read_ahead);
    let inbound = async {
        let (client_closed, ()) = tokio::join!(
            read_loop(state, endpoint, session, gate, &mut stream, work),
            dispatch_loop(state, session, gate, queued),
        );
        // The client left: what it sent before has been handled; now the session closes.
        if let Some(code) = client_closed {
            session.close(code);
        }
    };
    let ((), sink) = tokio::join!(
        inbound,
        write_loop(session, sink, &mut outbound, ping_every)
    );
    // Unregistered first, so listeners see the user's remaining sessions only.
    drop(registration);
    state.dispatcher.disconnected(session.clone()).await;
    drop(gauge);
    if let Some(sink) = sink {
        let linger = Duration::from_secs(state.config.server.close_timeout_secs);
        let handshake = close_handshake(session, sink, outbound, &mut stream);
        let _ = tokio::time::timeout(linger, handshake).await;
    }
}

/// Reads frames until the session closes or the client leaves; returns the close code when the
/// client left (the session closes once the queued messages are handled), `None` when the
/// host closed the session.
async fn read_loop(
    state: &AppState,
    endpoint: &EndpointConfig,
    session: &Arc<Session>,
    gate: &Gate,
    stream: &mut Incoming,
    work: mpsc::Sender<Work>,
) -> Option<u16> {
    let idle = Duration::from_secs(state.config.server.idle_timeout_secs.max(1));
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    loop {
        let frame = tokio::select! {
            biased;
            () = session.closing() => return None,
            () = &mut deadline => {
                session.close(close_codes::IDLE_TIMEOUT);
                return None;
            }
            frame = stream.next() => frame,
        };
        deadline.as_mut().reset(Instant::now() + idle);
        let frame = match frame {
            Some(Ok(Message::Close(_))) | None => return Some(close_codes::NORMAL),
            Some(Err(e)) => return Some(close_code_for(e)),
            Some(Ok(frame)) => frame,
        };
        // Every frame counts against the message rate, pings, pongs and binary frames
        // included, so any kind of flood ends the same way.
        match gate.take() {
            Verdict::Allow => {}
            Verdict::Refuse => {
                metrics::counter!("switchboard_messages_rate_limited_total").increment(1);
                if matches!(frame, Message::Text(_) | Message::Binary(_)) {
                    report(
                        session,
                        "rate_limited",
                        "message rate exceeded; slow down",
                        None,
                    );
                }
                continue;
            }
            Verdict::Abuse => {
                session.close(close_codes::POLICY_VIOLATION);
                return None;
            }
        }
        let queued = match frame {
            Message::Text(text) => read_text(state, session, &endpoint.text_type, text.as_str()),
            Message::Binary(_) => Some(Work::Bad {
                code: "binary_not_supported",
                message: "send text frames".into(),
            }),
            // Pings are answered by the protocol layer.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => None,
        };
        let Some(queued) = queued else { continue };
        // A full queue (more than `messages_burst` messages waiting for the listeners) stops
        // reading until there is room: the client is busy, not idle.
        tokio::select! {
            biased;
            () = session.closing() => return None,
            sent = work.send(queued) => {
                if sent.is_err() {
                    return None;
                }
            }
        }
        deadline.as_mut().reset(Instant::now() + idle);
    }
}

/// Hands queued messages to the listeners one at a time, in the order they were read, until
/// the read loop ends and the queue is empty, or the host closes the session.
async fn dispatch_loop(
    state: &AppState,
    session: &Arc<Session>,
    gate: &Gate,
    mut queued: mpsc::Receiver<Work>,
) {
    loop {
        let work = tokio::select! {
            biased;
            () = session.closing() => return,
            work = queued.recv() => match work {
                Some(work) => work,
                None => return,
            },
        };
        // In turn with `POST /api/v1/dispatch` calls naming this session.
        let _turn = gate.turn().await;
        run(state, session, work).await;
    }
}

/// The close code for a read error: size and encoding violations have their own codes.
fn close_code_for(error: axum::Error) -> u16 {
    use tungstenite::error::{CapacityError, Error as WsError};
    let inner = error.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
            close_codes::MESSAGE_TOO_BIG
        }
        Some(WsError::Utf8(_)) => close_codes::INVALID_PAYLOAD,
        Some(WsError::Protocol(_)) => close_codes::PROTOCOL_ERROR,
        _ => {
            tracing::debug!(error = %inner, "websocket read error");
            close_codes::NORMAL
        }
    }
}

/// Writes queued frames and pings until the session is asked to close; returns the sink for
/// the close handshake, or `None` if the socket failed.
async fn write_loop(
    session: &Arc<Session>,
    mut sink: Outgoing,
    outbound: &mut mpsc::Receiver<Frame>,
    ping_every: Duration,
) -> Option<Outgoing> {
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    loop {
        let first = tokio::select! {
            biased;
            () = session.closing() => return Some(sink),
            frame = outbound.recv() => match frame {
                Some(frame) => Some(frame),
                None => return Some(sink),
            },
            _ = ping.tick() => None,
        };
        // A write blocked on a client that does not read must not keep the session alive
        // once it is asked to close (slow consumer, shutdown).
        let written = tokio::select! {
            biased;
            () = session.closing() => return Some(sink),
            written = async {
                match first {
                    Some(frame) => write_batch(session, &mut sink, frame, outbound).await,
                    None => sink.send(Message::Ping(Default::default())).await,
                }
            } => written,
        };
        if written.is_err() {
            session.close(close_codes::NORMAL);
            return None;
        }
    }
}

/// Sends what is still queued (unless the client is a slow consumer) and the close frame.
async fn close_handshake(
    session: &Session,
    mut sink: Outgoing,
    mut outbound: mpsc::Receiver<Frame>,
    stream: &mut Incoming,
) {
    let code = session.close_code();
    if code != close_codes::SLOW_CONSUMER {
        while let Ok(frame) = outbound.try_recv() {
            if sink.feed(to_message(session, frame)).await.is_err() {
                return;
            }
        }
    }
    let close = CloseFrame {
        code,
        reason: close_codes::reason(code).into(),
    };
    if sink.send(Message::Close(Some(close))).await.is_err() {
        return;
    }
    // Read (and drop) what the client still sends until its close frame: closing the socket
    // with unread input makes the kernel send a reset, which can destroy our close frame
    // before the client reads it.
    while let Some(Ok(frame)) = stream.next().await {
        if matches!(frame, Message::Close(_)) {
            break;
        }
    }
    let _ = sink.close().await;
}

async fn write_batch(
    session: &Session,
    sink: &mut Outgoing,
    first: Frame,
    outbound: &mut mpsc::Receiver<Frame>,
) -> Result<(), axum::Error> {
    sink.feed(to_message(session, first)).await?;
    let mut written = 1;
    while written < WRITE_BATCH {
        match outbound.try_recv() {
            Ok(frame) => sink.feed(to_message(session, frame)).await?,
            Err(_) => break,
        }
        written += 1;
    }
    sink.flush().await?;
    metrics::counter!("switchboard_messages_out_total").increment(written as u64);
    Ok(())
}

fn to_message(session: &Session, frame: Frame) -> Message {
    match frame {
        Frame::Message(msg) => Message::Text(msg.encoded(session.profile).clone()),
        Frame::Text(text) => Message::Text(text),
    }
}
