//! The network edge under hostile clients: connection caps and timeouts before
//! authentication, credentials checked before bodies are read, handshake budgets, the rate and
//! order of `POST /api/v1/dispatch`, close codes, nesting caps, ambiguous tokens, the demo
//! page's headers and the metrics a fresh host exports. Loopback only; every loop is bounded.

use std::{net::SocketAddr, time::Duration};

use futures_util::future::join_all;
use serde_json::{Value, json};
use switchboard::{
    config::{EndpointConfig, TransportKind},
    envelope::Profile,
};
use switchboard_tests::{
    PATIENCE,
    client::Client,
    eventually,
    host::{API_KEY, TestHost},
    metric,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::tungstenite::Message;

/// Reads from `tcp` until the peer closes; `true` if it did within `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// Sends `head` (a request head, possibly unfinished) and returns the first response head the
/// host writes within the patience window.
async fn response_head(tcp: &mut TcpStream, head: &str) -> String {
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(PATIENCE, async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("a response before the body was sent");
    String::from_utf8_lossy(&got).into_owned()
}

/// The rest of a response whose head `head` was read: its JSON body (Content-Length framed).
async fn json_body(tcp: &mut TcpStream, head: &str) -> Value {
    let (headers, started) = head.split_once("\r\n\r\n").unwrap_or((head, ""));
    let len: usize = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = started.as_bytes().to_vec();
    while body.len() < len {
        let mut buf = vec![0u8; len - body.len()];
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn half_sent_handshakes_are_closed_after_the_header_timeout() {
    let host = TestHost::start_with(&["echo"], |c| c.server.header_timeout_secs = 1).await;
    let token = host.token("1", 1, None);
    let mut sockets = Vec::new();
    for i in 0..200 {
        let mut tcp = TcpStream::connect(host.addr).await.unwrap();
        // Half send a head, the other half nothing at all.
        if i % 2 == 0 {
            let head =
                format!("GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n");
            tcp.write_all(head.as_bytes()).await.unwrap();
        }
        sockets.push(tcp);
    }
    let closed = join_all(sockets.iter_mut().map(|tcp| closed_within(tcp, PATIENCE))).await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(open, 0, "{open} of 200 half-sent handshakes still open");
    assert_eq!(host.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn bodies_are_not_read_before_the_credentials() {
    let host = TestHost::start_with(&["echo"], |c| c.server.body_timeout_secs = 1).await;
    // 1.9 MB announced, none sent: the answer must come before the body.
    for (path, code) in [
        ("/api/v1/messages", "missing_api_key"),
        ("/api/v1/dispatch", "missing_token"),
    ] {
        let mut tcp = TcpStream::connect(host.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 1900000\r\n\r\n"
        );
        let got = response_head(&mut tcp, &head).await;
        assert!(got.starts_with("HTTP/1.1 401"), "{path}: {got}");
        assert_eq!(json_body(&mut tcp, &got).await["code"], code, "{path}");
    }
    // With the key: a body over the limit is refused from its length, unread...
    let mut tcp = TcpStream::connect(host.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Length: 1900000\r\n\r\n"
    );
    let got = response_head(&mut tcp, &head).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    // ...and a stalled one is cut off after the body timeout.
    let mut tcp = TcpStream::connect(host.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Length: 1000\r\n\r\n{{\"to\":"
    );
    let got = response_head(&mut tcp, &head).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert_eq!(json_body(&mut tcp, &got).await["code"], "body_timeout");
}

#[tokio::test]
async fn with_the_pending_cap_full_health_checks_and_clients_are_served() {
    let host = TestHost::start_with(&["echo"], |c| c.server.max_pending_connections = 16).await;
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(host.addr).await.unwrap());
    }
    // Making room closes the oldest idle connections.
    let closed = join_all(
        idle.iter_mut()
            .map(|tcp| closed_within(tcp, Duration::from_millis(500))),
    )
    .await;
    assert!(
        closed.iter().filter(|c| **c).count() >= 64 - 16,
        "idle connections beyond the cap stay open: {closed:?}"
    );
    let mut more = Vec::new();
    for _ in 0..32 {
        more.push(TcpStream::connect(host.addr).await.unwrap());
    }
    assert_eq!(host.get("/healthz").await.0, 200);
    let mut c = host.connect("1", 1, None).await;
    c.send("echo", json!("still served")).await;
    assert_eq!(c.expect("echo").await, json!("still served"));
}

/// A `switchboard serve` process under `ulimit -n files`; its address.
fn spawn_with_open_file_limit(
    files: u32,
    dir: &std::path::Path,
) -> (std::process::Child, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {files} && exec \"$0\" serve"))
        .arg(switchboard_tests::cluster::host_binary())
        .env("SWITCHBOARD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "SWITCHBOARD_AUTH__JWT_SECRET",
            switchboard_tests::host::SECRET,
        )
        .env("SWITCHBOARD_PLUGINS__DIR", dir)
        .env("SWITCHBOARD_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("switchboard starts");
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

#[tokio::test]
async fn idle_sockets_beyond_the_open_file_limit_never_block_health_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_with_open_file_limit(512, dir.path());
    let http = reqwest::Client::new();
    let healthz = format!("http://{addr}/healthz");
    eventually(PATIENCE * 6, "host to answer", async || {
        http.get(&healthz).send().await.ok().map(|_| ())
    })
    .await;
    // More idle sockets than the process may hold descriptors.
    let mut idle = Vec::new();
    for _ in 0..700 {
        match TcpStream::connect(addr).await {
            Ok(tcp) => idle.push(tcp),
            Err(e) => panic!("connect: {e}"),
        }
    }
    let answered = tokio::time::timeout(PATIENCE, http.get(&healthz).send()).await;
    let status = answered
        .ok()
        .and_then(|r| r.ok())
        .map(|r| r.status().as_u16());
    let token = switchboard_tests::host::token(switchboard_tests::host::SECRET, "1", 1, None, 60);
    let ws = tokio::time::timeout(
        PATIENCE,
        Client::connect(&format!("ws://{addr}/ws?token={token}"), &[]),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, Some(200), "/healthz with 700 idle sockets");
    assert!(matches!(ws, Ok(Ok(_))), "a WebSocket with 700 idle sockets");
}

#[tokio::test]
async fn token_less_floods_do_not_spend_the_node_handshake_budget() {
    let host = TestHost::start_with(&["echo"], |c| {
        c.server.handshakes_per_sec = 1;
        c.server.handshakes_burst = 8;
        c.server.handshakes_per_source_burst = 20;
        c.server.handshakes_per_source_per_sec = 1;
    })
    .await;
    let url = host.ws_url("/ws");
    for _ in 0..200 {
        let refused = Client::connect_raw(&url, &[]).await.expect_err("refused");
        assert_eq!(refused.status, 401);
    }
    // Forged tokens from another source address spend that address's budget only.
    let mut codes = Vec::new();
    for _ in 0..40 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let tcp = socket.connect(host.addr).await.unwrap();
        let request = format!("{url}?token=a.b.c");
        match tokio_tungstenite::client_async(request, tcp).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => codes.push(r.status().as_u16()),
            other => panic!("a forged token was not refused: {:?}", other.map(|_| ())),
        }
    }
    assert!(codes[..20].iter().all(|c| *c == 401), "{codes:?}");
    assert!(codes[20..].iter().all(|c| *c == 429), "{codes:?}");
    let mut clients = Vec::new();
    for i in 0..8 {
        let url = format!("{url}?token={}", host.token(&i.to_string(), 1, None));
        match Client::connect(&url, &[]).await {
            Ok(c) => clients.push(c),
            Err(r) => panic!("valid handshake {i} refused: {} {}", r.status, r.body),
        }
    }
}

/// `POST /api/v1/dispatch[?session_id=]` with `user`'s token.
async fn dispatch(
    host: &TestHost,
    token: &str,
    session: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut url = format!("http://{}/api/v1/dispatch", host.addr);
    if let Some(id) = session {
        url.push_str(&format!("?session_id={id}"));
    }
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn dispatch_bursts_over_the_message_rate_get_429() {
    let host = TestHost::start_with(&["echo"], |c| {
        c.server.messages_per_sec = 1;
        c.server.messages_burst = 5;
    })
    .await;
    // Without a session: the user's budget.
    let token = host.token("u1", 1, None);
    let mut statuses = Vec::new();
    for i in 0..20 {
        let (status, body) =
            dispatch(&host, &token, None, json!({"type": "echo", "content": i})).await;
        if status == 429 {
            assert_eq!(body["code"], "rate_limited");
        }
        statuses.push(status);
    }
    assert!(statuses[..5].iter().all(|s| *s == 202), "{statuses:?}");
    assert!(
        statuses[5..].iter().filter(|s| **s == 429).count() >= 13,
        "{statuses:?}"
    );
    // Into a WebSocket session: the session's budget, shared with its frames.
    let mut c = host.connect("u2", 1, None).await;
    let token = host.token("u2", 1, None);
    let id = c.session_id().to_owned();
    let mut limited = 0;
    for i in 0..20 {
        let (status, _) = dispatch(
            &host,
            &token,
            Some(&id),
            json!({"type": "echo", "content": i}),
        )
        .await;
        limited += usize::from(status == 429);
    }
    assert!(limited >= 13, "{limited} of 20 limited");
    c.send("echo", json!("x")).await;
    let v = c.next_json().await;
    assert!(
        v["type"] == "echo" || v["content"]["code"] == "rate_limited",
        "{v}"
    );
}

#[tokio::test]
async fn dispatches_of_one_session_run_in_order_with_its_frames() {
    let host = TestHost::start_with(&["echo", "fault-loop"], |c| {
        c.plugins.call_timeout_ms = 500;
    })
    .await;
    let mut c = host.connect("u1", 1, None).await;
    let id = c.session_id().to_owned();
    // The frame is dispatched first and runs until the time limit; the dispatch that names
    // the same session waits its turn.
    c.send("loop", json!(null)).await;
    let (status, body) = dispatch(
        &host,
        &host.token("u1", 1, None),
        Some(&id),
        json!({"type": "echo", "content": "second"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let first = c.next_json().await;
    assert_eq!(
        first["type"], "error",
        "the loop's fault comes first: {first}"
    );
    assert_eq!(first["content"]["code"], "listener_fault");
    assert_eq!(c.expect("echo").await, json!("second"));
}

#[tokio::test]
async fn a_session_on_another_node_or_of_another_user_is_unknown_here() {
    let host = TestHost::start(&["echo"]).await;
    let c = host.connect("u1", 1, None).await;
    let (status, body) = dispatch(
        &host,
        &host.token("u2", 1, None),
        Some(c.session_id()),
        json!({"type": "echo"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("unknown_session"))
    );
    let (status, body) = dispatch(
        &host,
        &host.token("u1", 1, None),
        Some("elsewhere-1"),
        json!({"type": "echo"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("unknown_session"))
    );
}

#[tokio::test]
async fn single_session_replacement_happens_only_when_the_newcomer_is_admitted() {
    let host = TestHost::start_with(&["echo"], |c| {
        c.server.max_connections_per_user = 1;
        let endpoint = |path: &str, profile, single_session| EndpointConfig {
            path: path.into(),
            transport: TransportKind::Websocket,
            profile,
            text_type: "ruoyi-text".into(),
            single_session,
            heartbeat_secs: None,
            auth: None,
            reply_via: None,
        };
        c.endpoints = vec![
            endpoint("/one", Profile::Native, true),
            endpoint("/yudao", Profile::Yudao, false),
        ];
    })
    .await;
    let token = host.token("u1", 1, None);
    let one = format!("{}?token={token}", host.ws_url("/one"));
    let mut old = Client::connect(&one, &[]).await.unwrap();
    // At the limit of one: the newcomer replaces the old session instead of being refused.
    let mut new = Client::connect(&one, &[])
        .await
        .unwrap_or_else(|r| panic!("replacement refused: {} {}", r.status, r.body));
    assert_eq!(old.closed().await, Some(4002));
    new.send("echo", json!(1)).await;
    assert_eq!(new.expect("echo").await, json!(1));
    // A session it would not replace counts: the newcomer is refused, nothing is closed.
    new.close().await;
    let other = host.token("u2", 1, None);
    let mut kept = Client::connect_raw(&format!("{}?token={other}", host.ws_url("/yudao")), &[])
        .await
        .unwrap();
    let refused = Client::connect(&format!("{}?token={other}", host.ws_url("/one")), &[])
        .await
        .expect_err("over the per-user limit");
    assert_eq!(refused.status, 429);
    kept.send_text("ping").await;
    assert_eq!(kept.next_text().await, "pong");
}

#[tokio::test]
async fn protocol_errors_close_with_1002() {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let host = TestHost::start(&["echo"]).await;
    let mut c = host.connect("1", 1, None).await;
    let mut frame = Frame::message(b"x".to_vec(), OpCode::Data(Data::Text), true);
    // A reserved bit without a negotiated extension.
    frame.header_mut().rsv2 = true;
    c.send_message(Message::Frame(frame)).await.unwrap();
    assert_eq!(c.closed().await, Some(1002));
}

#[tokio::test]
async fn pongs_and_binary_frames_count_against_the_message_rate() {
    let host = TestHost::start_with(&["echo"], |c| {
        c.server.messages_per_sec = 1;
        c.server.messages_burst = 3;
    })
    .await;
    for message in [
        Message::Pong(Default::default()),
        Message::binary(vec![1u8]),
    ] {
        let mut c = host.connect("1", 1, None).await;
        for _ in 0..20 {
            if c.send_message(message.clone()).await.is_err() {
                break;
            }
        }
        assert_eq!(c.closed().await, Some(1008), "{message:?} flood");
    }
}

#[tokio::test]
async fn json_nested_past_the_cap_is_refused() {
    let host = TestHost::start_with(&["echo"], |c| c.server.max_json_depth = 32).await;
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let mut c = host.connect("1", 1, None).await;
    c.send_text(&format!(r#"{{"type":"echo","content":{}}}"#, deep(30_000)))
        .await;
    let v = c.next_json().await;
    assert_eq!(
        (v["type"].as_str(), v["content"]["code"].as_str()),
        (Some("error"), Some("too_deep")),
        "{v}"
    );
    c.send_text(&format!(r#"{{"type":"echo","content":{}}}"#, deep(32)))
        .await;
    assert_eq!(
        c.expect("echo").await,
        serde_json::from_str::<Value>(&deep(32)).unwrap()
    );
    // As text: serde_json's own nesting limit would stop the test client.
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/dispatch", host.addr))
        .bearer_auth(host.token("1", 1, None))
        .body(format!(r#"{{"type":"echo","content":{}}}"#, deep(1000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "too_deep");
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/messages", host.addr))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"to":{{"everyone":true}},"type":"x","content":{}}}"#,
            deep(1000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "too_deep");
}

#[tokio::test]
async fn different_tokens_in_one_request_are_refused() {
    let host = TestHost::start(&["echo"]).await;
    let (a, b) = (host.token("a", 1, None), host.token("b", 1, None));
    for (query, headers) in [
        (format!("token={a}&token={b}"), vec![]),
        (
            format!("token={a}"),
            vec![("authorization", format!("Bearer {b}"))],
        ),
        (format!("token={a}&Authorization=Bearer%20{b}"), vec![]),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let refused = Client::connect(&format!("{}?{query}", host.ws_url("/ws")), &headers)
            .await
            .expect_err("ambiguous token refused");
        assert_eq!(
            (refused.status, refused.body["code"].as_str()),
            (401, Some("ambiguous_token")),
            "{query}"
        );
    }
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/dispatch?token={a}", host.addr))
        .bearer_auth(&b)
        .json(&json!({"type": "echo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "ambiguous_token");
    // The same token twice is not ambiguous.
    let url = format!("{}?token={a}&token={a}", host.ws_url("/ws"));
    assert!(Client::connect(&url, &[]).await.is_ok());
}

#[tokio::test]
async fn the_demo_page_is_served_only_with_dev_tokens_and_never_framed() {
    let off = TestHost::start(&[]).await;
    let r = reqwest::get(format!("http://{}/", off.addr)).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let on = TestHost::start_with(&[], |c| c.server.dev_tokens = true).await;
    for path in ["/", "/app.js", "/style.css"] {
        let r = reqwest::get(format!("http://{}{path}", on.addr))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let h = r.headers();
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
    }
}

#[tokio::test]
async fn sse_connections_leave_the_gauge_at_zero() {
    let host = TestHost::start_with(&["fault-loop"], |c| c.plugins.call_timeout_ms = 300).await;
    let series = r#"switchboard_connections{transport="sse",profile="ruoyi-plus"}"#;
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    for i in 0..6 {
        // Every other client leaves while its `on-connect` still runs.
        let user = if i % 2 == 0 {
            "loop-on-connect"
        } else {
            "plain"
        };
        let token = host.token(user, 1, None);
        let url = format!("http://{}/resource/sse?token={token}", host.addr);
        let _ = quick.get(url).send().await;
    }
    eventually(PATIENCE, "the SSE gauge to return to 0", async || {
        let page = host.metrics().await;
        (metric(&page, series) == Some(0.0) && host.session_count().await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_fresh_host_describes_every_metric() {
    let host = TestHost::start(&[]).await;
    let page = host.metrics().await;
    for name in [
        "switchboard_sessions",
        "switchboard_connections",
        "switchboard_connections_rejected_total",
        "switchboard_messages_in_total",
        "switchboard_messages_out_total",
        "switchboard_messages_rate_limited_total",
        "switchboard_messages_dropped_total",
        "switchboard_slow_consumers_closed_total",
        "switchboard_deliveries_total",
        "switchboard_presence_degraded_total",
        "switchboard_broker_published_total",
        "switchboard_broker_up",
        "switchboard_plugin_reloads_total",
    ] {
        assert!(
            page.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{page}"
        );
        assert!(
            page.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}:\n{page}"
        );
    }
    assert_eq!(metric(&page, "switchboard_broker_up"), Some(1.0));
}
