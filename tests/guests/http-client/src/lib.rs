//! Makes outbound HTTP requests on request, for the end-to-end tests of `wasi:http`.
//!
//! `http` `{"url", "method"?: "GET"|"POST", "body"?: text, "times"?: n}` sends the request
//! (n at once when `times` is set) and replies `http-result` with, per request,
//! `{"status": n, "body": text}` or `{"error": "<wasi:http error-code>"}`: a refused or
//! failed request is a value the guest handles, and the call goes on to reply. With `times`
//! the reply is `{"results": [...]}`, else the single result.

use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_guest::{Content, Context, Listener, Result};
use wstd::http::{Body, Client, Method, Request, error::ErrorCode};

#[derive(Clone, Deserialize)]
struct Ask {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    times: Option<usize>,
}

/// One request's outcome as JSON.
async fn fetch(ask: Ask) -> Value {
    match try_fetch(&ask).await {
        Ok((status, body)) => json!({ "status": status, "body": body }),
        Err(e) => {
            // The wasi:http error code when the host gave one, else the client's message.
            let error = match e.downcast_ref::<ErrorCode>() {
                Some(code) => {
                    let code = format!("{code:?}");
                    code.strip_prefix("ErrorCode::").unwrap_or(&code).to_owned()
                }
                None => format!("{e:#}"),
            };
            json!({ "error": error })
        }
    }
}

async fn try_fetch(ask: &Ask) -> wstd::http::Result<(u16, String)> {
    let request = match ask.method.as_deref() {
        Some("POST") => Request::builder()
            .method(Method::POST)
            .uri(&ask.url)
            .header("content-type", "application/json")
            .body(Body::from(ask.body.clone().unwrap_or_default()))?,
        _ => Request::builder().uri(&ask.url).body(Body::empty())?,
    };
    let mut response = Client::new().send(request).await?;
    let status = response.status().as_u16();
    let body = response.body_mut().str_contents().await?.to_owned();
    Ok((status, body))
}

struct HttpClient;

impl Listener for HttpClient {
    const NAME: &'static str = "http-client";
    const VERSION: &'static str = "1";
    const MESSAGE_TYPES: &'static [&'static str] = &["http"];

    fn on_message(ctx: &Context, _msg_type: &str, content: Content) -> Result<()> {
        let ask: Ask = content.parse()?;
        let answer = wstd::runtime::block_on(async {
            match ask.times {
                None => fetch(ask).await,
                Some(n) => {
                    let all = (0..n).map(|_| fetch(ask.clone()));
                    json!({ "results": join_all(all).await })
                }
            }
        });
        ctx.reply("http-result", &answer)
    }
}

/// Runs every future at once, in wstd's reactor, and collects their outputs in order.
async fn join_all<F: Future<Output = Value> + 'static>(all: impl Iterator<Item = F>) -> Vec<Value> {
    let tasks: Vec<_> = all.map(wstd::runtime::spawn).collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await);
    }
    out
}

switchboard_guest::export_listener!(HttpClient);
