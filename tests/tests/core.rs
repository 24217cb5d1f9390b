//! Host core end to end: authentication, envelopes, delivery targets, tenant isolation,
//! slow consumers, churn, limits, and graceful shutdown. Real sockets, real echo plugin.

use serde_json::{Value, json};
use switchboard_tests::{
    PATIENCE,
    client::Client,
    eventually,
    host::{API_KEY, SECRET, TestHost, token},
};
use tokio_tungstenite::tungstenite::Message;

async fn assert_echoes(client: &mut Client) {
    client.send("echo", json!({"n": 1})).await;
    assert_eq!(client.expect("echo").await, json!({"n": 1}));
}

#[tokio::test]
async fn token_in_every_location_is_accepted() {
    let host = TestHost::start(&["echo"]).await;
    let t = host.token("1", 2, None);
    let url = host.ws_url("/ws");

    let mut c = Client::connect(&format!("{url}?token={t}"), &[])
        .await
        .unwrap();
    assert_echoes(&mut c).await;

    let mut c = Client::connect(&format!("{url}?Authorization=Bearer%20{t}"), &[])
        .await
        .unwrap();
    assert_echoes(&mut c).await;

    let bearer = format!("Bearer {t}");
    let mut c = Client::connect(&url, &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_echoes(&mut c).await;

    let protocols = format!("bearer, {t}");
    let mut c = Client::connect(&url, &[("sec-websocket-protocol", &protocols)])
        .await
        .unwrap();
    assert_eq!(
        c.protocol.as_deref(),
        Some(t.as_str()),
        "the token protocol is selected"
    );
    assert_echoes(&mut c).await;
}

#[tokio::test]
async fn bad_tokens_get_401_before_upgrade() {
    let host =
        TestHost::start_with(&["echo"], |c| c.auth.audience = Some("switchboard".into())).await;
    let url = host.ws_url("/ws");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |claims: Value, secret: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let good = json!({"sub": "1", "user_type": 2, "exp": now + 60, "aud": "switchboard"});
    let mut expired = good.clone();
    expired["exp"] = json!(now - 3600);
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("someone-else");
    let alg_none = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(good.to_string())
        )
    };
    let cases = [
        ("expired", sign(expired, SECRET), "expired"),
        (
            "wrong key",
            sign(good.clone(), "another-secret-0123456789abcdef"),
            "bad signature",
        ),
        ("alg none", alg_none, "invalid_token"),
        ("wrong audience", sign(wrong_aud, SECRET), "wrong audience"),
        ("garbage", "not.a.token".to_string(), "invalid_token"),
    ];
    for (name, t, expect) in cases {
        let refused = Client::connect(&format!("{url}?token={t}"), &[])
            .await
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        assert_eq!(refused.status, 401, "{name}");
        let body = refused.body.to_string();
        assert!(body.contains(expect), "{name}: {body}");
    }
    let refused = Client::connect(&url, &[])
        .await
        .expect_err("no token is refused");
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (401, Some("missing_token"))
    );
    // The good token works, so the refusals above were about the tokens.
    let mut c = Client::connect(&format!("{url}?token={}", sign(good, SECRET)), &[])
        .await
        .unwrap();
    assert_echoes(&mut c).await;
}

#[tokio::test]
async fn every_push_target_reaches_exactly_its_sessions() {
    let host = TestHost::start(&["echo"]).await;
    let mut a1 = host.connect("a", 1, Some("t1")).await; // user a, type 1, tenant t1
    let mut a1b = host.connect("a", 1, Some("t1")).await; // a second session of the same user
    let mut b1 = host.connect("b", 1, Some("t1")).await;
    let mut c2 = host.connect("c", 2, Some("t1")).await;
    let mut d1 = host.connect("d", 1, Some("t2")).await; // other tenant
    // Marker: after each push, a marker to everyone proves nothing else was queued before it.
    let mut marker = 0u64;
    let mut check = async |host: &TestHost,
                           to: Value,
                           tenant: Option<&str>,
                           expect: [bool; 5],
                           clients: &mut [&mut Client; 5]| {
        marker += 1;
        let mut body = TestHost::message(to.clone(), "note", json!({"m": marker}));
        if let Some(t) = tenant {
            body["tenant_id"] = json!(t);
        }
        let (status, resp) = host.push(body).await;
        assert_eq!(status, 202, "{resp}");
        let expected_local = expect.iter().filter(|e| **e).count() as u64;
        assert_eq!(
            (&resp["local_deliveries"], &resp["cluster"]),
            (&json!(expected_local), &json!("not_needed")),
            "push to {to} on a single node"
        );
        let (status, _) = host
            .push(TestHost::message(
                json!({"everyone": true}),
                "marker",
                json!(marker),
            ))
            .await;
        assert_eq!(status, 202);
        for (i, c) in clients.iter_mut().enumerate() {
            let got = c.until_marker(marker).await;
            let received = got
                .iter()
                .any(|v| v["type"] == "note" && v["content"]["m"] == json!(marker));
            assert_eq!(
                received, expect[i],
                "client {i} for target {to} tenant {tenant:?}: {got:?}"
            );
            assert!(got.len() <= 1, "exactly once: {got:?}");
        }
    };
    let mut clients = [&mut a1, &mut a1b, &mut b1, &mut c2, &mut d1];
    check(
        &host,
        json!({"user": {"user_type": 1, "user_id": "a"}}),
        Some("t1"),
        [true, true, false, false, false],
        &mut clients,
    )
    .await;
    check(
        &host,
        json!({"users": [{"user_type": 1, "user_id": "a"}, {"user_type": 2, "user_id": "c"}]}),
        Some("t1"),
        [true, true, false, true, false],
        &mut clients,
    )
    .await;
    check(
        &host,
        json!({"user_type": 1}),
        Some("t1"),
        [true, true, true, false, false],
        &mut clients,
    )
    .await;
    check(
        &host,
        json!({"user_type": 1}),
        None,
        [true, true, true, false, true],
        &mut clients,
    )
    .await;
    check(
        &host,
        json!({"tenant": "t2"}),
        None,
        [false, false, false, false, true],
        &mut clients,
    )
    .await;
    check(
        &host,
        json!({"everyone": true}),
        Some("t1"),
        [true, true, true, true, false],
        &mut clients,
    )
    .await;
    // A user id exists in one tenant only: the same id in another tenant is another user.
    check(
        &host,
        json!({"user": {"user_type": 1, "user_id": "d"}}),
        Some("t1"),
        [false; 5],
        &mut clients,
    )
    .await;
    let second_session = clients[1].session_id().to_owned();
    check(
        &host,
        json!({"session": second_session}),
        None,
        [false, true, false, false, false],
        &mut clients,
    )
    .await;
    // A session outside the push's tenant is not reached.
    check(
        &host,
        json!({"session": second_session}),
        Some("t2"),
        [false; 5],
        &mut clients,
    )
    .await;
    check(
        &host,
        json!({"session": "nope-1"}),
        None,
        [false; 5],
        &mut clients,
    )
    .await;
}

#[tokio::test]
async fn push_api_validates_requests() {
    let host = TestHost::start(&["echo"]).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/messages", host.addr);
    let body = json!({"to": {"everyone": true}, "type": "x", "content": 1});
    let r = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "missing_api_key");
    let r = http
        .post(&url)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_api_key");
    for (bad, code) in [
        (json!({"to": {}, "type": "x"}), "invalid_target"),
        (
            json!({"to": {"user_type": 1, "everyone": true}, "type": "x"}),
            "invalid_target",
        ),
        (json!({"to": {"everyone": true}, "type": ""}), "bad_type"),
        (json!({"to": {"group": 1}, "type": "x"}), "invalid_request"),
    ] {
        let r = http
            .post(&url)
            .bearer_auth(API_KEY)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], code, "{bad}");
    }
}

#[tokio::test]
async fn malformed_frames_get_error_envelopes_and_the_connection_survives() {
    let host = TestHost::start_with(&["echo"], |c| c.server.max_frame_bytes = 1024).await;
    let mut c = host.connect("1", 1, None).await;
    c.send_text("ping").await;
    assert_eq!(c.next_text().await, "pong");
    for (frame, code) in [
        ("{not json", "malformed_json"),
        ("[1,2]", "malformed_json"),
        (r#"{"content": 1}"#, "missing_type"),
        (r#"{"type": "", "content": 1}"#, "bad_type"),
        (r#"{"type": "no-such-type", "content": 1}"#, "unknown_type"),
    ] {
        c.send_text(frame).await;
        let err = c.expect("error").await;
        assert_eq!(err["code"], code, "{frame}: {err}");
    }
    c.send_message(Message::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(c.expect("error").await["code"], "binary_not_supported");
    assert_echoes(&mut c).await;
    // An oversized frame closes with 1009.
    c.send_text(&format!(
        r#"{{"type":"echo","content":"{}"}}"#,
        "x".repeat(4096)
    ))
    .await;
    assert_eq!(c.closed().await, Some(1009));
    eventually(PATIENCE, "session removed", async || {
        (host.session_count().await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn slow_consumer_is_closed_without_delaying_a_healthy_client() {
    let host = TestHost::start_with(&["echo"], |c| c.server.outbound_queue = 16).await;
    let _slow = host.connect("slow", 1, None).await; // never reads
    let mut healthy = host.connect("healthy", 1, None).await;
    let payload = "y".repeat(60_000);
    let count = 400; // 24 MB: far more than the socket buffers of a client that does not read
    let reader = tokio::spawn(async move {
        let started = std::time::Instant::now();
        for i in 0..count {
            let content = healthy.expect("bulk").await;
            assert_eq!(content["i"], json!(i));
        }
        (healthy, started.elapsed())
    });
    let started = std::time::Instant::now();
    let mut slowest_push = std::time::Duration::ZERO;
    for i in 0..count {
        let t = std::time::Instant::now();
        let (status, _) = host
            .push(TestHost::message(
                json!({"user_type": 1}),
                "bulk",
                json!({"i": i, "p": payload}),
            ))
            .await;
        assert_eq!(status, 202);
        slowest_push = slowest_push.max(t.elapsed());
    }
    let (_healthy, healthy_took) = tokio::time::timeout(PATIENCE * 3, reader)
        .await
        .expect("healthy got all")
        .unwrap();
    eprintln!(
        "pushed {count} x 60 KB in {:?}; slowest push {slowest_push:?}; healthy client read all in {healthy_took:?}",
        started.elapsed()
    );
    // The slow consumer was closed and unregistered; the healthy one stayed.
    eventually(PATIENCE, "slow consumer closed", async || {
        let (_, body) = host.get("/api/v1/presence/users/1/slow").await;
        (body["online"] == json!(false)).then_some(())
    })
    .await;
    let (_, body) = host.get("/api/v1/presence/users/1/healthy").await;
    assert_eq!(body["online"], json!(true));
    let metrics = host.metrics().await;
    assert!(
        metrics.contains("switchboard_slow_consumers_closed_total"),
        "metric present"
    );
}

#[tokio::test]
async fn slow_consumer_sees_close_code_4001() {
    let host = TestHost::start_with(&["echo"], |c| c.server.outbound_queue = 4).await;
    let mut slow = host.connect("slow", 1, None).await;
    let payload = "z".repeat(60_000);
    // Push until the host gives up on the client (its queue overflows once socket buffers fill).
    eventually(PATIENCE * 3, "slow consumer dropped", async || {
        for _ in 0..20 {
            host.push(TestHost::message(
                json!({"user_type": 1}),
                "bulk",
                json!(payload),
            ))
            .await;
        }
        let (_, body) = host.get("/api/v1/presence/users/1/slow").await;
        (body["online"] == json!(false)).then_some(())
    })
    .await;
    assert_eq!(slow.closed().await, Some(4001));
}

#[tokio::test]
async fn churn_leaves_an_empty_registry() {
    let host = TestHost::start(&["echo"]).await;
    let total = 2000;
    let batch = 200;
    for round in 0..total / batch {
        let mut tasks = Vec::new();
        for i in 0..batch {
            let url = format!(
                "{}?token={}",
                host.ws_url("/ws"),
                host.token(&format!("u{}", i % 50), 1, Some("t"))
            );
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect(&url, &[]).await.unwrap();
                match (round + i) % 3 {
                    0 => c.close().await, // clean close
                    1 => drop(c),         // abrupt drop
                    _ => {
                        c.send_text("ping").await;
                        assert_eq!(c.next_text().await, "pong");
                        drop(c);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    eventually(PATIENCE, "registry empty after churn", async || {
        let (_, h) = host.get("/healthz").await;
        (h["sessions"] == json!(0) && h["users"] == json!(0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn connection_limits_answer_429_and_503() {
    let host = TestHost::start_with(&["echo"], |c| {
        c.server.max_connections_per_user = 2;
        c.server.max_connections = 3;
    })
    .await;
    let url = |user: &str| format!("{}?token={}", host.ws_url("/ws"), host.token(user, 1, None));
    let _a = Client::connect(&url("a"), &[]).await.unwrap();
    let _b = Client::connect(&url("a"), &[]).await.unwrap();
    let refused = Client::connect(&url("a"), &[])
        .await
        .expect_err("third session of a");
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (429, Some("too_many_user_connections"))
    );
    let _c = Client::connect(&url("b"), &[]).await.unwrap();
    let refused = Client::connect(&url("c"), &[])
        .await
        .expect_err("fourth connection");
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (503, Some("too_many_connections"))
    );
}

#[tokio::test]
async fn message_rate_is_limited_then_abuse_is_closed() {
    let host = TestHost::start_with(&["echo"], |c| {
        c.server.messages_per_sec = 1;
        c.server.messages_burst = 3;
    })
    .await;
    let mut c = host.connect("1", 1, None).await;
    for _ in 0..3 {
        assert_echoes(&mut c).await;
    }
    c.send("echo", json!(1)).await;
    assert_eq!(c.expect("error").await["code"], "rate_limited");
    for _ in 0..4 {
        c.send("echo", json!(1)).await;
    }
    assert_eq!(c.closed().await, Some(1008));
}

#[tokio::test]
async fn idle_connections_are_closed_with_4000() {
    let host = TestHost::start_with(&["echo"], |c| c.server.idle_timeout_secs = 1).await;
    let mut c = host.connect("1", 1, None).await;
    assert_eq!(c.closed().await, Some(4000));
}

#[tokio::test]
async fn graceful_shutdown_closes_every_session_with_1001() {
    let host = TestHost::start(&["echo"]).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(host.connect(&i.to_string(), 1, None).await);
    }
    assert_echoes(&mut clients[0]).await;
    let waiters: Vec<_> = clients
        .into_iter()
        .map(|mut c| tokio::spawn(async move { c.closed().await }))
        .collect();
    let took = host.shutdown().await;
    for w in waiters {
        assert_eq!(w.await.unwrap(), Some(1001));
    }
    eprintln!("shutdown with 20 sessions took {took:?}");
}

#[tokio::test]
async fn cli_token_matches_the_host() {
    let mut config = switchboard::config::Config::parse("", []).unwrap();
    config.auth.jwt_secret = Some(SECRET.into());
    let t = switchboard::cli::token(
        &config,
        "7".into(),
        2,
        Some("t9".into()),
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let host = TestHost::start(&["echo"]).await;
    let mut c = Client::connect(&format!("{}?token={t}", host.ws_url("/ws")), &[])
        .await
        .unwrap();
    assert_echoes(&mut c).await;
    let (_, body) = host.get("/api/v1/presence/users/2/7?tenant_id=t9").await;
    assert_eq!(body["online"], json!(true));
    let expired = token(SECRET, "7", 2, None, -3600);
    assert!(
        Client::connect(&format!("{}?token={expired}", host.ws_url("/ws")), &[])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn browser_origins_outside_the_allowlist_get_403() {
    let host = TestHost::start_with(&["echo"], |c| {
        c.server.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let url = format!("{}?token={}", host.ws_url("/ws"), host.token("1", 1, None));
    let refused = Client::connect(&url, &[("origin", "https://evil.example")])
        .await
        .expect_err("foreign origin refused");
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (403, Some("origin_not_allowed"))
    );
    let mut c = Client::connect(&url, &[("origin", "https://app.example")])
        .await
        .unwrap();
    assert_echoes(&mut c).await;
    // Clients that are not browsers send no Origin.
    let mut c = Client::connect(&url, &[]).await.unwrap();
    assert_echoes(&mut c).await;
}

#[tokio::test]
async fn handshake_floods_get_429() {
    let host = TestHost::start_with(&["echo"], |c| {
        c.server.handshakes_per_sec = 1;
        c.server.handshakes_burst = 2;
    })
    .await;
    let url = format!("{}?token={}", host.ws_url("/ws"), host.token("1", 1, None));
    let _a = Client::connect(&url, &[]).await.unwrap();
    let _b = Client::connect(&url, &[]).await.unwrap();
    let refused = Client::connect(&url, &[])
        .await
        .expect_err("third handshake refused");
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (429, Some("handshake_rate_limited"))
    );
}

#[tokio::test]
async fn invalid_utf8_text_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let host = TestHost::start(&["echo"]).await;
    let mut c = host.connect("1", 1, None).await;
    let frame = Frame::message(vec![0xff, 0xfe, b'a'], OpCode::Data(Data::Text), true);
    c.send_message(Message::Frame(frame)).await.unwrap();
    assert_eq!(c.closed().await, Some(1007));
}

#[tokio::test]
async fn a_message_fragmented_past_the_size_limit_is_closed_with_1009() {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let host = TestHost::start_with(&["echo"], |c| c.server.max_frame_bytes = 4096).await;
    let mut c = host.connect("1", 1, None).await;
    // A message that starts and never ends: 100-byte fragments, each under the frame limit,
    // adding up past the message limit.
    let first = Frame::message(vec![b'a'; 100], OpCode::Data(Data::Text), false);
    c.send_message(Message::Frame(first)).await.unwrap();
    for _ in 0..1000 {
        let more = Frame::message(vec![b'a'; 100], OpCode::Data(Data::Continue), false);
        if c.send_message(Message::Frame(more)).await.is_err() {
            break;
        }
    }
    assert_eq!(c.closed().await, Some(1009));
    // A fragmented message within the limit is one message, served as usual.
    let mut c = host.connect("2", 1, None).await;
    let text = r#"{"type":"echo","content":"in three parts"}"#.as_bytes();
    let parts = [&text[..10], &text[10..20], &text[20..]];
    for (i, part) in parts.iter().enumerate() {
        let opcode = if i == 0 { Data::Text } else { Data::Continue };
        let frame = Frame::message(part.to_vec(), OpCode::Data(opcode), i == parts.len() - 1);
        c.send_message(Message::Frame(frame)).await.unwrap();
    }
    assert_eq!(c.expect("echo").await, json!("in three parts"));
}

#[tokio::test]
async fn a_ping_flood_is_closed_with_1008() {
    let host = TestHost::start_with(&["echo"], |c| {
        c.server.messages_per_sec = 10;
        c.server.messages_burst = 20;
    })
    .await;
    let mut c = host.connect("1", 1, None).await;
    for _ in 0..200 {
        if c.send_message(Message::Ping(vec![1].into())).await.is_err() {
            break;
        }
    }
    assert_eq!(c.closed().await, Some(1008));
}

#[tokio::test]
async fn upgrade_requests_with_bad_headers_get_4xx() {
    let host = TestHost::start(&["echo"]).await;
    let t = host.token("1", 1, None);
    let http = reqwest::Client::new();
    let url = format!("http://{}/ws?token={t}", host.addr);
    // No upgrade at all.
    let r = http.get(&url).send().await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    // An upgrade without a key, and one with an unsupported version.
    let r = http
        .get(&url)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = http
        .get(&url)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "8")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    // The host is unharmed.
    let mut c = host.connect("1", 1, None).await;
    assert_echoes(&mut c).await;
}
