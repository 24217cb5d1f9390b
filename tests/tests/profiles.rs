//! The compatibility profiles replayed as the front ends use them: yudao (ruoyi-vue-pro) at
//! `/infra/ws`, RuoYi-Vue-Plus at `/resource/websocket` and `/resource/sse`, and the native SSE
//! endpoint with `POST /api/v1/dispatch` upstream.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard::config::{EndpointConfig, TransportKind};
use switchboard::envelope::Profile;
use switchboard_tests::{client::Client, host::TestHost, sse::SseClient};
use tokio_tungstenite::tungstenite::Message;

fn content_of(frame: &Value) -> Value {
    serde_json::from_str(
        frame["content"]
            .as_str()
            .expect("yudao content is a string"),
    )
    .expect("the string holds JSON")
}

#[tokio::test]
async fn yudao_front_end_chat_heartbeat_and_bad_input() {
    let host = TestHost::start(&["demo-chat"]).await;
    // yudao's front end: useWebSocket(`${server}/infra/ws?token=${token}`, heartbeat 'ping').
    let mut alice = host.connect_to("/infra/ws", "1", 2, Some("1")).await;
    let mut bob = host.connect_to("/infra/ws", "2", 2, Some("1")).await;
    let mut native_bob = host.connect("2", 2, Some("1")).await;

    // vueuse heartbeat: 'ping' must be answered well within its 1 s pong timeout.
    for _ in 0..5 {
        let started = Instant::now();
        alice.send_text("ping").await;
        assert_eq!(alice.next_text().await, "pong");
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "pong took {:?}",
            started.elapsed()
        );
    }

    // Its chat page sends content as a JSON string.
    let send = json!({"text": "hello bob", "toUserId": 2}).to_string();
    alice
        .send_text(&json!({"type": "demo-message-send", "content": send}).to_string())
        .await;
    let frame = bob.next_json().await;
    assert_eq!(frame["type"], "demo-message-receive");
    assert_eq!(
        content_of(&frame),
        json!({"fromUserId": 1, "text": "hello bob", "single": true})
    );
    // The same delivery reaches the native session of bob as a JSON object.
    assert_eq!(
        native_bob.expect("demo-message-receive").await,
        json!({"fromUserId": 1, "text": "hello bob", "single": true})
    );

    // Group message: toUserId empty → every user of the type in the tenant, alice included.
    let send = json!({"text": "hello all", "toUserId": ""}).to_string();
    alice
        .send_text(&json!({"type": "demo-message-send", "content": send}).to_string())
        .await;
    for c in [&mut alice, &mut bob] {
        let frame = c.next_json().await;
        assert_eq!(content_of(&frame)["single"], json!(false));
    }

    // Malformed frames and unknown types are dropped silently; the connection stays open.
    for bad in [
        "not json",
        r#"{"content":"x"}"#,
        r#"{"type":"nope","content":"{}"}"#,
        r#"{"type":"demo-message-send","content":{"not":"a string"}}"#,
    ] {
        alice.send_text(bad).await;
    }
    // A heartbeat is answered at once, even ahead of messages still being handled, so it
    // marks nothing; a message is handled after the frames before it: its delivery, coming
    // next, proves that nothing was answered to the bad frames.
    alice.send_text("ping").await;
    assert_eq!(alice.next_text().await, "pong");
    let send = json!({"text": "after the bad ones", "toUserId": 1}).to_string();
    alice
        .send_text(&json!({"type": "demo-message-send", "content": send}).to_string())
        .await;
    let frame = alice.next_json().await;
    assert_eq!(
        content_of(&frame)["text"],
        "after the bad ones",
        "nothing was answered to the bad frames: {frame}"
    );
}

#[tokio::test]
async fn yudao_token_in_authorization_header() {
    let host = TestHost::start(&["demo-chat"]).await;
    let bearer = format!("Bearer {}", host.token("1", 2, None));
    let mut c = Client::connect_raw(&host.ws_url("/infra/ws"), &[("authorization", &bearer)])
        .await
        .unwrap();
    c.send_text("ping").await;
    assert_eq!(c.next_text().await, "pong");
}

fn ruoyi_url(host: &TestHost, path: &str, user: &str) -> String {
    let token = host.token(user, 1, Some("000000"));
    format!(
        "http://{}{path}?Authorization=Bearer%20{token}&clientid=e5cd7e4891bf95d1d19206ce24a7b32e",
        host.addr
    )
}

#[tokio::test]
async fn ruoyi_plus_websocket_plain_text() {
    let host = TestHost::start(&["ruoyi-echo"]).await;
    let url = ruoyi_url(&host, "/resource/websocket", "1").replace("http://", "ws://");
    let mut c = Client::connect_raw(&url, &[]).await.unwrap();
    // Its heartbeat is {"type":"ping"}, echoed back.
    c.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(c.next_text().await, r#"{"type":"ping"}"#);
    // Plain text is dispatched as the endpoint's text type; ruoyi-echo answers the user.
    c.send_text("hello, ruoyi").await;
    assert_eq!(c.next_text().await, "hello, ruoyi");
    // Server pushes arrive as plain text.
    let (status, _) = host
        .push(json!({"to": {"user": {"user_type": 1, "user_id": "1"}}, "type": "notice", "content": "a notice", "tenant_id": "000000"}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(c.next_text().await, "a notice");
}

#[tokio::test]
async fn ruoyi_plus_single_session_replaces_the_older_connection() {
    let host = TestHost::start_with(&["ruoyi-echo"], |c| {
        c.endpoints = vec![EndpointConfig {
            path: "/resource/websocket".into(),
            transport: TransportKind::Websocket,
            profile: Profile::RuoyiPlus,
            text_type: "ruoyi-text".into(),
            single_session: true,
            heartbeat_secs: None,
            auth: None,
            reply_via: None,
        }];
    })
    .await;
    let url = ruoyi_url(&host, "/resource/websocket", "1").replace("http://", "ws://");
    let mut first = Client::connect_raw(&url, &[]).await.unwrap();
    let mut second = Client::connect_raw(&url, &[]).await.unwrap();
    assert_eq!(first.closed().await, Some(4002));
    second.send_text("still here").await;
    assert_eq!(second.next_text().await, "still here");
}

#[tokio::test]
async fn ruoyi_plus_sse_connected_heartbeat_messages_and_close() {
    let host = TestHost::start_with(&["ruoyi-echo"], |c| {
        c.endpoints = vec![EndpointConfig {
            path: "/resource/sse".into(),
            transport: TransportKind::Sse,
            profile: Profile::RuoyiPlus,
            text_type: "ruoyi-text".into(),
            single_session: false,
            heartbeat_secs: Some(1),
            auth: None,
            reply_via: None,
        }];
    })
    .await;
    let url = ruoyi_url(&host, "/resource/sse", "7");
    let mut sse = SseClient::connect(&url).await.unwrap();
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert_eq!(sse.headers["x-accel-buffering"], "no");
    let first = sse.next_block().await.unwrap();
    assert_eq!(first.comments, vec!["connected"]);
    let (status, _) = host
        .push(json!({"to": {"user": {"user_type": 1, "user_id": "7"}}, "type": "notice", "content": "line one\nline two"}))
        .await;
    assert_eq!(status, 202);
    let block = loop {
        let b = sse.next_block().await.unwrap();
        if b.event.is_some() {
            break b;
        }
    };
    assert_eq!(block.event.as_deref(), Some("message"));
    assert_eq!(block.data.as_deref(), Some("line one\nline two"));
    assert!(block.id.is_some());
    // The heartbeat comment arrives at the configured interval.
    let heartbeat = loop {
        let b = sse.next_block().await.unwrap();
        if !b.comments.is_empty() {
            break b;
        }
    };
    assert_eq!(heartbeat.comments, vec!["heartbeat"]);
    // GET /resource/sse/close ends the streams opened with the caller's token.
    let closed: Value = reqwest::get(url.replace("/resource/sse?", "/resource/sse/close?"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(closed["closed"], json!(1));
    while sse.next_block().await.is_some() {}
    switchboard_tests::eventually(switchboard_tests::PATIENCE, "session removed", async || {
        (host.session_count().await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn native_sse_with_http_upstream() {
    let host = TestHost::start(&["echo", "demo-chat"]).await;
    let token = host.token("5", 2, Some("t"));
    let mut sse = SseClient::connect(&format!("http://{}/sse?token={token}", host.addr))
        .await
        .unwrap();
    let greeting = sse.next_json().await;
    assert_eq!(greeting["type"], "session");
    let session_id = greeting["content"]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let http = reqwest::Client::new();
    let dispatch = async |query: &str, body: Value| {
        let resp = http
            .post(format!("http://{}/api/v1/dispatch{query}", host.addr))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    // A reply to the session reaches the event stream.
    let (status, _) = dispatch(
        &format!("?session_id={session_id}"),
        json!({"type": "echo", "content": {"x": 1}}),
    )
    .await;
    assert_eq!(status, 202);
    let echo = sse.next_json().await;
    assert_eq!(echo, json!({"type": "echo", "content": {"x": 1}}));
    // A chat message to the user type reaches the SSE session too.
    let (status, _) = dispatch(
        "",
        json!({"type": "demo-message-send", "content": {"text": "hi", "toUserId": ""}}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(sse.next_json().await["content"]["text"], "hi");
    // Errors are HTTP statuses with codes.
    let (status, body) = dispatch("", json!({"type": "nope", "content": 1})).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("unknown_type")));
    let (status, body) = dispatch("?session_id=someone-else", json!({"type": "echo"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("unknown_session"))
    );
    let resp = http
        .post(format!("http://{}/api/v1/dispatch", host.addr))
        .json(&json!({"type": "echo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // A user token sees the plugin names and types.
    let resp = http
        .get(format!("http://{}/api/v1/plugins", host.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let plugins: Value = resp.json().await.unwrap();
    let names: Vec<&str> = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["demo-chat", "echo"]);
    assert!(
        plugins["plugins"][0].get("file").is_none(),
        "no operator details for users"
    );
}

#[tokio::test]
async fn binary_frames_are_not_answered_in_framework_profiles() {
    let host = TestHost::start(&["demo-chat"]).await;
    let mut c = host.connect_to("/infra/ws", "1", 2, None).await;
    c.send_message(Message::binary(vec![0, 1])).await.unwrap();
    c.send_text("ping").await;
    assert_eq!(c.next_text().await, "pong");
}
