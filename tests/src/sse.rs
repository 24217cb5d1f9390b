//! A server-sent events test client over a real socket.

use futures_util::StreamExt;

use crate::PATIENCE;

/// One block of the stream: an event or a comment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Block {
    /// `event:` field.
    pub event: Option<String>,
    /// `id:` field.
    pub id: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: Option<String>,
    /// Comment lines (`:text`).
    pub comments: Vec<String>,
}

/// A connected event stream.
pub struct SseClient {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
}

impl std::fmt::Debug for SseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseClient")
            .field("buffer", &self.buffer)
            .finish_non_exhaustive()
    }
}

impl SseClient {
    /// Opens `url`; panics unless the answer is a 200 event stream. Returns the status and
    /// body text instead when it is refused.
    pub async fn connect(url: &str) -> Result<Self, (u16, String)> {
        let resp = reqwest::get(url).await.expect("SSE request");
        if resp.status() != 200 {
            return Err((
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            ));
        }
        let headers = resp.headers().clone();
        Ok(Self {
            body: resp.bytes_stream().boxed(),
            buffer: String::new(),
            headers,
        })
    }

    /// The next block; `None` when the stream ended. Panics after [`PATIENCE`].
    pub async fn next_block(&mut self) -> Option<Block> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                return Some(parse_block(&raw));
            }
            let chunk = tokio::time::timeout(PATIENCE, self.body.next())
                .await
                .expect("an SSE block within the patience window");
            match chunk {
                Some(Ok(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// The data of the next `message` event, skipping comments.
    pub async fn next_message(&mut self) -> String {
        loop {
            let block = self.next_block().await.expect("stream open");
            if block.event.as_deref() == Some("message") {
                return block.data.unwrap_or_default();
            }
        }
    }

    /// The next message parsed as JSON.
    pub async fn next_json(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.next_message().await).expect("JSON data")
    }
}

fn parse_block(raw: &str) -> Block {
    let mut block = Block::default();
    for line in raw.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            block.comments.push(comment.trim().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "event" => block.event = Some(value),
            "id" => block.id = Some(value),
            "data" => {
                block.data = Some(match block.data.take() {
                    Some(prev) => format!("{prev}\n{value}"),
                    None => value,
                })
            }
            _ => {}
        }
    }
    block
}
