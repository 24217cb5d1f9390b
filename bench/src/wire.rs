//! What goes over the sockets: tokens, the stamp every measured message carries, the frames of
//! each scenario, and opening one WebSocket from a chosen loopback source address.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config, tungstenite::protocol::WebSocketConfig,
};

/// A client WebSocket over plain TCP.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// The user type every benchmark client has (the fan-out target).
pub(crate) const USER_TYPE: u32 = 2;

/// Microseconds since the Unix epoch. Every process on the machine reads the same clock, so a
/// stamp written by one process can be compared with a reading in another.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The monotonic instant of a wall-clock time given in µs since the epoch (now, if past).
pub(crate) fn instant_at(us: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_micros(us.saturating_sub(now_us()))
}

/// An HS256 token for user `user_id` of `USER_TYPE`, valid for a day.
pub(crate) fn token(secret: &str, user_id: u64) -> anyhow::Result<String> {
    let exp = now_us() / 1_000_000 + 86_400;
    let claims = json!({ "sub": user_id.to_string(), "user_type": USER_TYPE, "exp": exp });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &key,
    )?)
}

/// The stamp inside a measured message: `ts=<send time µs> ph=<phase>`. Plain text, so it
/// reads the same whether it arrives as JSON content, inside a JSON string, or as nchan's raw
/// message body.
pub(crate) fn stamp(phase: u8) -> String {
    format!("ts={} ph={phase}", now_us())
}

/// Reads a stamp back: `(send time µs, phase)`.
pub(crate) fn read_stamp(frame: &str) -> Option<(u64, u8)> {
    let at = frame.find("ts=")? + 3;
    let digits = frame[at..].bytes().take_while(u8::is_ascii_digit).count();
    let ts = frame[at..at + digits].parse().ok()?;
    let rest = &frame[at + digits..];
    let phase = rest
        .strip_prefix(" ph=")
        .and_then(|p| p.bytes().next())
        .filter(u8::is_ascii_digit)
        .map_or(0, |d| d - b'0');
    Some((ts, phase))
}

/// The frame a fan-out subscriber receives, and the body nchan is given to publish. The
/// Switchboard push carries the same `type` and `content`, so both servers send equal frames.
pub(crate) fn fanout_frame(phase: u8, pad: usize) -> String {
    json!({ "type": "t", "content": { "text": stamp(phase), "pad": "x".repeat(pad) } }).to_string()
}

/// The push API body that makes the host send [`fanout_frame`] to every benchmark client.
pub(crate) fn fanout_push(phase: u8, pad: usize) -> String {
    json!({
        "to": { "user_type": USER_TYPE },
        "type": "t",
        "content": { "text": stamp(phase), "pad": "x".repeat(pad) },
    })
    .to_string()
}

/// The push API body that sends one stamped message to user `user` (every tenant: no
/// `tenant_id`).
pub(crate) fn user_push(phase: u8, user: u64) -> String {
    json!({
        "to": { "user": { "user_type": USER_TYPE, "user_id": user.to_string() } },
        "type": "t",
        "content": { "text": stamp(phase) },
    })
    .to_string()
}

/// A `demo-chat` message to user `to`.
pub(crate) fn chat_frame(phase: u8, to: u64) -> String {
    json!({
        "type": "demo-message-send",
        "content": { "text": stamp(phase), "toUserId": to.to_string() },
    })
    .to_string()
}

/// The `code` of an error envelope, if `frame` is one.
pub(crate) fn error_code(frame: &str) -> Option<String> {
    if !frame.starts_with(r#"{"type":"error""#) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(frame).ok()?;
    Some(
        v["content"]["code"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned(),
    )
}

/// Small buffers: a benchmark client holds thousands of sockets and reads small frames.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
}

/// Opens `url` on `server` from `source` (port chosen by the kernel), within `timeout`.
pub(crate) async fn connect(
    source: Ipv4Addr,
    server: SocketAddr,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<Ws> {
    let attempt = async {
        let socket = TcpSocket::new_v4()?;
        // Lets a port whose previous connection is in TIME_WAIT be bound again, so runs in
        // quick succession do not run out of ports.
        socket.set_reuseaddr(true)?;
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .with_context(|| format!("binding {source}"))?;
        let stream = socket.connect(server).await.context("TCP connect")?;
        stream.set_nodelay(true)?;
        let (ws, _response) = client_async_with_config(url, stream, Some(ws_config()))
            .await
            .context("WebSocket handshake")?;
        anyhow::Ok(ws)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .context("timed out")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_survive_every_envelope() {
        let pushed = fanout_frame(1, 3);
        let (ts, phase) = read_stamp(&pushed).unwrap();
        assert!(ts > 1_600_000_000_000_000);
        assert_eq!(phase, 1);
        // demo-chat forwards the text inside a JSON string.
        let relayed = json!({"type": "demo-message-receive", "content": {"text": stamp(2)}});
        assert_eq!(read_stamp(&relayed.to_string()).unwrap().1, 2);
        assert_eq!(read_stamp(r#"{"type":"session"}"#), None);
        assert_eq!(read_stamp("ts=12").unwrap(), (12, 0));
    }

    #[test]
    fn error_codes() {
        let e = r#"{"type":"error","content":{"code":"rate_limited","message":"m"}}"#;
        assert_eq!(error_code(e).as_deref(), Some("rate_limited"));
        assert_eq!(error_code(&fanout_frame(0, 0)), None);
    }
}
