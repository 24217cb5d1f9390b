//! A WebSocket test client over a real socket.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        Message,
        client::IntoClientRequest,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};

use crate::PATIENCE;

/// A connected client.
#[derive(Debug)]
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server selected, if any.
    pub protocol: Option<String>,
    /// The `session` greeting of the native profile, when read at connect.
    pub session: Option<Value>,
}

/// A refused handshake: the HTTP status and body.
#[derive(Debug)]
pub struct Refused {
    /// HTTP status.
    pub status: u16,
    /// Response body (JSON error for the host's own refusals).
    pub body: Value,
}

impl Client {
    /// Connects to a native-profile `url` with extra request headers and reads the
    /// `session` greeting.
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Self, Refused> {
        let mut client = Self::connect_raw(url, headers).await?;
        let greeting = client.expect("session").await;
        client.session = Some(greeting);
        Ok(client)
    }

    /// The session id from the greeting.
    pub fn session_id(&self) -> &str {
        self.session
            .as_ref()
            .and_then(|s| s["session_id"].as_str())
            .expect("greeting read at connect")
    }

    /// Connects to `url` with extra request headers; reads nothing.
    pub async fn connect_raw(url: &str, headers: &[(&str, &str)]) -> Result<Self, Refused> {
        let mut request = url.into_client_request().expect("valid url");
        for (k, v) in headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, response)) => Ok(Self {
                ws,
                session: None,
                protocol: response
                    .headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.to_str().unwrap().to_owned()),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                Err(Refused { status, body })
            }
            Err(e) => panic!("connecting to {url}: {e}"),
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Sends an envelope.
    pub async fn send(&mut self, msg_type: &str, content: Value) {
        let text = serde_json::json!({ "type": msg_type, "content": content }).to_string();
        self.send_text(&text).await;
    }

    /// Sends a raw frame.
    pub async fn send_message(
        &mut self,
        message: Message,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.ws.send(message).await
    }

    /// The next text frame; panics on close or after [`PATIENCE`].
    pub async fn next_text(&mut self) -> String {
        match self.next_event().await {
            Event::Text(t) => t,
            Event::Closed(frame) => {
                panic!("connection closed while waiting for a message: {frame:?}")
            }
        }
    }

    /// The next text frame parsed as JSON.
    pub async fn next_json(&mut self) -> Value {
        let text = self.next_text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// The next text frame as JSON if one arrives within `within`.
    pub async fn next_json_within(&mut self, within: std::time::Duration) -> Option<Value> {
        match tokio::time::timeout(within, self.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str(&t).ok(),
            _ => None,
        }
    }

    /// Reads until the message of type `marker` with content `n`; returns what came before it.
    /// A marker sent after a delivery, along the same path, proves nothing else was queued.
    pub async fn until_marker(&mut self, n: u64) -> Vec<Value> {
        let mut got = Vec::new();
        loop {
            let v = self.next_json().await;
            if v["type"] == "marker" && v["content"] == serde_json::json!(n) {
                return got;
            }
            got.push(v);
        }
    }

    /// The next message, asserting its type; returns its content.
    pub async fn expect(&mut self, msg_type: &str) -> Value {
        let v = self.next_json().await;
        assert_eq!(v["type"], msg_type, "unexpected message: {v}");
        v["content"].clone()
    }

    /// Reads until the server closes; returns the text frames read and the close code.
    pub async fn drain_until_close(&mut self) -> (u64, Option<u16>) {
        let mut texts = 0;
        loop {
            match self.next_event().await {
                Event::Text(_) => texts += 1,
                Event::Closed(frame) => return (texts, frame.map(|f| u16::from(f.code))),
            }
        }
    }

    /// Reads until the server closes; returns the close code (None if closed without a frame).
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.next_event().await {
                Event::Text(_) => continue,
                Event::Closed(frame) => return frame.map(|f| u16::from(f.code)),
            }
        }
    }

    async fn next_event(&mut self) -> Event {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame within the patience window");
            match next {
                Some(Ok(Message::Text(t))) => return Event::Text(t.to_string()),
                Some(Ok(Message::Close(frame))) => return Event::Closed(frame),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Event::Closed(None),
            }
        }
    }

    /// Closes normally.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
    }
}

enum Event {
    Text(String),
    Closed(Option<CloseFrame>),
}
