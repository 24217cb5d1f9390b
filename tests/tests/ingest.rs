//! `[[ingest]]` end to end: a Java program publishes exactly what yudao's Redis and RabbitMQ
//! senders and RuoYi-Vue-Plus's Redisson topics publish (Jackson configured as each framework
//! configures it) to a real Redis and RabbitMQ, and real clients receive it through the host.
//!
//! Each check publishes, waits until the source has taken the message
//! (`switchboard_ingest_messages_total`), then pushes a marker to everyone: what a client
//! read before the marker is everything it was sent.

use serde_json::{Value, json};
use switchboard::config::{Config, IngestConfig};
use switchboard_tests::{
    PATIENCE,
    client::Client,
    cluster::{RedisServer, require_redis},
    eventually,
    host::TestHost,
    java::{Publisher, require_java},
    metric,
    sse::SseClient,
};

fn ingest(toml: &str) -> Vec<IngestConfig> {
    Config::parse(toml, []).expect("ingest config").ingest
}

async fn metric_value(host: &TestHost, series: &str) -> Option<f64> {
    metric(&host.metrics().await, series)
}

/// Waits until `source` is subscribed.
async fn wait_up(host: &TestHost, source: &str, up: bool) {
    let series = format!("switchboard_ingest_up{{source=\"{source}\"}}");
    let want = if up { 1.0 } else { 0.0 };
    eventually(PATIENCE * 2, &format!("{series} = {want}"), async || {
        (metric_value(host, &series).await == Some(want)).then_some(())
    })
    .await;
}

/// Waits until `source` has delivered `n` messages in all.
async fn wait_taken(host: &TestHost, source: &str, n: u64) {
    let series = format!("switchboard_ingest_messages_total{{source=\"{source}\"}}");
    eventually(PATIENCE, &format!("{series} = {n}"), async || {
        (metric_value(host, &series).await == Some(n as f64)).then_some(())
    })
    .await;
}

async fn rejected(host: &TestHost, source: &str, reason: &str) -> Option<f64> {
    metric_value(
        host,
        &format!("switchboard_ingest_rejected_total{{source=\"{source}\",reason=\"{reason}\"}}"),
    )
    .await
}

/// Pushes marker `n` to every session of every tenant.
async fn marker(host: &TestHost, n: u64) {
    let (status, body) = host
        .push(json!({"to": {"everyone": true}, "type": "marker", "content": n}))
        .await;
    assert_eq!(status, 202, "{body}");
}

/// The `(type, content)` of what a native client received before marker `n`.
async fn received(client: &mut Client, n: u64) -> Vec<(String, Value)> {
    client
        .until_marker(n)
        .await
        .into_iter()
        .map(|v| {
            (
                v["type"].as_str().unwrap_or("").to_owned(),
                v["content"].clone(),
            )
        })
        .collect()
}

/// Text frames a framework-profile client received before marker `n`.
async fn received_text(client: &mut Client, until: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let text = client.next_text().await;
        if text == until {
            return got;
        }
        got.push(text);
    }
}

/// What a yudao `sendObject` call's notice looks like to a native client.
fn notice(text: &str) -> Value {
    json!({"id": "9007199254740993", "text": text})
}

#[tokio::test]
async fn yudao_redis_session_user_and_user_type_targets_within_tenants() {
    if !require_redis() || !require_java() {
        return;
    }
    let redis = RedisServer::start().await;
    let port = redis.port.to_string();
    let source = "yudao-targets";
    let config = ingest(&format!(
        "[[ingest]]\nkind = \"yudao-redis\"\nname = \"{source}\"\nurl = \"{}\"\n",
        redis.url()
    ));
    let host = TestHost::start_with(&[], |c| c.ingest = config).await;
    wait_up(&host, source, true).await;

    let mut a1 = host.connect("1", 2, Some("1")).await;
    let mut a2 = host.connect("1", 2, Some("1")).await;
    let mut b = host.connect("2", 2, Some("1")).await;
    let mut other_type = host.connect("1", 1, Some("1")).await;
    let mut other_tenant = host.connect("1", 2, Some("2")).await;
    let mut yudao = host.connect_to("/infra/ws", "1", 2, Some("1")).await;
    let mut java = Publisher::start();

    // sendObject(2, 1L, "notice-push", notice) with tenant 1 in context.
    let published = java
        .run(&["yudao-redis", &port, "1", "user:2:1", "notice-push", "hi"])
        .await;
    assert_eq!(
        published.payload,
        r#"{"headers":{"tenant-id":"1"},"sessionId":null,"userType":2,"userId":1,"messageType":"notice-push","messageContent":"{\"id\":\"9007199254740993\",\"text\":\"hi\"}"}"#
    );
    assert_eq!(published.receivers, Some(1));
    wait_taken(&host, source, 1).await;
    marker(&host, 1).await;
    let hi = vec![("notice-push".to_owned(), notice("hi"))];
    assert_eq!(received(&mut a1, 1).await, hi);
    assert_eq!(received(&mut a2, 1).await, hi);
    assert_eq!(received(&mut b, 1).await, vec![]);
    assert_eq!(received(&mut other_type, 1).await, vec![]);
    assert_eq!(received(&mut other_tenant, 1).await, vec![]);
    // A yudao front end gets the frame yudao's own sender writes, content as the same JSON text.
    assert_eq!(
        received_text(&mut yudao, r#"{"type":"marker","content":"1"}"#).await,
        vec![r#"{"type":"notice-push","content":"{\"id\":\"9007199254740993\",\"text\":\"hi\"}"}"#]
    );

    // send(sessionId, ...): only that session, even of the same user.
    let session = b.session_id().to_owned();
    java.run(&[
        "yudao-redis",
        &port,
        "1",
        &format!("session:{session}"),
        "to-session",
        "s",
    ])
    .await;
    wait_taken(&host, source, 2).await;
    marker(&host, 2).await;
    assert_eq!(
        received(&mut b, 2).await,
        vec![("to-session".to_owned(), notice("s"))]
    );
    for c in [&mut a1, &mut a2, &mut other_type, &mut other_tenant] {
        assert_eq!(received(c, 2).await, vec![]);
    }
    received_text(&mut yudao, r#"{"type":"marker","content":"2"}"#).await;

    // send(userType, ...) in tenant 1: that user type in tenant 1 only.
    java.run(&["yudao-redis", &port, "1", "type:2", "to-type", "t"])
        .await;
    wait_taken(&host, source, 3).await;
    marker(&host, 3).await;
    let t = vec![("to-type".to_owned(), notice("t"))];
    for c in [&mut a1, &mut a2, &mut b] {
        assert_eq!(received(c, 3).await, t);
    }
    assert_eq!(received(&mut other_type, 3).await, vec![]);
    assert_eq!(received(&mut other_tenant, 3).await, vec![]);
    assert_eq!(
        received_text(&mut yudao, r#"{"type":"marker","content":"3"}"#)
            .await
            .len(),
        1
    );

    // Without a tenant in context yudao broadcasts to the user type in every tenant.
    java.run(&["yudao-redis", &port, "-", "type:2", "to-all", "u"])
        .await;
    wait_taken(&host, source, 4).await;
    marker(&host, 4).await;
    let u = vec![("to-all".to_owned(), notice("u"))];
    for c in [&mut a1, &mut a2, &mut b, &mut other_tenant] {
        assert_eq!(received(c, 4).await, u);
    }
    assert_eq!(received(&mut other_type, 4).await, vec![]);
    java.stop().await;
}

#[tokio::test]
async fn malformed_messages_are_counted_by_reason_and_skipped() {
    if !require_redis() || !require_java() {
        return;
    }
    let redis = RedisServer::start().await;
    let port = redis.port.to_string();
    let (yudao, ruoyi) = ("bad-yudao", "bad-ruoyi");
    let config = ingest(&format!(
        "[[ingest]]\nkind = \"yudao-redis\"\nname = \"{yudao}\"\nurl = \"{url}\"\n\
         max_message_bytes = 4096\n\
         [[ingest]]\nkind = \"ruoyi-plus-redis\"\nname = \"{ruoyi}\"\nurl = \"{url}\"\n",
        url = redis.url()
    ));
    let host = TestHost::start_with(&[], |c| c.ingest = config).await;
    wait_up(&host, yudao, true).await;
    wait_up(&host, ruoyi, true).await;
    assert_eq!(rejected(&host, yudao, "malformed").await, Some(0.0));
    let mut user = host.connect("1", 2, None).await;

    let huge = format!("{{\"messageContent\":\"{}\"}}", "x".repeat(5000));
    for (channel, payload) in [
        ("RedisWebSocketMessage", "not json"),
        (
            "RedisWebSocketMessage",
            r#"{"messageType":"t","messageContent":"1"}"#,
        ),
        ("RedisWebSocketMessage", r#"{"userType":2,"userId":1}"#),
        ("RedisWebSocketMessage", &huge),
        ("global:websocket", r#"["x",{"sessionKeys":[1]}]"#),
        ("global:sse", "{"),
    ] {
        assert_eq!(redis.cli(&["PUBLISH", channel, payload]), "1");
    }
    for (source, reason) in [
        (yudao, "malformed"),
        (yudao, "no_target"),
        (yudao, "bad_type"),
        (yudao, "too_large"),
    ] {
        eventually(
            PATIENCE,
            &format!("{source} {reason} counted"),
            async || (rejected(&host, source, reason).await == Some(1.0)).then_some(()),
        )
        .await;
    }
    eventually(PATIENCE, "ruoyi rejects counted", async || {
        (rejected(&host, ruoyi, "malformed").await == Some(2.0)).then_some(())
    })
    .await;

    // The consumer goes on: the next good message is delivered.
    let mut java = Publisher::start();
    java.run(&["yudao-redis", &port, "-", "user:2:1", "after", "ok"])
        .await;
    wait_taken(&host, yudao, 1).await;
    marker(&host, 1).await;
    assert_eq!(
        received(&mut user, 1).await,
        vec![("after".to_owned(), notice("ok"))]
    );
    java.stop().await;
}

fn ruoyi_url(host: &TestHost, path: &str, user: &str) -> String {
    let token = host.token(user, 1, Some("000000"));
    format!(
        "{}{path}?Authorization=Bearer%20{token}&clientid=e5cd7e4891bf95d1d19206ce24a7b32e",
        host.addr
    )
}

/// The data of SSE messages before the marker `until`.
async fn sse_received(client: &mut SseClient, until: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let data = client.next_message().await;
        if data == until {
            return got;
        }
        got.push(data);
    }
}

#[tokio::test]
async fn ruoyi_plus_topics_reach_the_listed_users() {
    if !require_redis() || !require_java() {
        return;
    }
    let redis = RedisServer::start().await;
    let port = redis.port.to_string();
    let source = "ruoyi-topics";
    let config = ingest(&format!(
        "[[ingest]]\nkind = \"ruoyi-plus-redis\"\nname = \"{source}\"\nurl = \"{}\"\n\
         key_prefix = \"app\"\n",
        redis.url()
    ));
    let host = TestHost::start_with(&[], |c| c.ingest = config).await;
    wait_up(&host, source, true).await;

    let ws = |user: &str| ruoyi_url(&host, "/resource/websocket", user);
    let mut ws5 = Client::connect_raw(&format!("ws://{}", ws("5")), &[])
        .await
        .unwrap();
    let mut ws6 = Client::connect_raw(&format!("ws://{}", ws("6")), &[])
        .await
        .unwrap();
    let sse = |user: &str| format!("http://{}", ruoyi_url(&host, "/resource/sse", user));
    let mut sse7 = SseClient::connect(&sse("7")).await.unwrap();
    let mut sse8 = SseClient::connect(&sse("8")).await.unwrap();
    // User 5 also holds an SSE stream and user 7 a WebSocket: each topic keeps to its channel.
    let mut sse5 = SseClient::connect(&sse("5")).await.unwrap();
    let mut ws7 = Client::connect_raw(&format!("ws://{}", ws("7")), &[])
        .await
        .unwrap();
    eventually(PATIENCE, "six sessions", async || {
        (host.session_count().await == 6).then_some(())
    })
    .await;
    let mut java = Publisher::start();

    // WebSocketUtils.publishMessage(sessionKeys [5]).
    let published = java.run(&["ruoyi-ws", &port, "app", "5", "hello ws"]).await;
    assert_eq!(
        published.payload,
        r#"["org.dromara.common.websocket.dto.WebSocketMessageDto",{"message":"hello ws","sessionKeys":["java.util.ArrayList",[5]]}]"#
    );
    assert_eq!(published.receivers, Some(1));
    wait_taken(&host, source, 1).await;
    marker(&host, 1).await;
    assert_eq!(received_text(&mut ws5, "1").await, vec!["hello ws"]);
    assert_eq!(received_text(&mut ws6, "1").await, Vec::<String>::new());
    assert_eq!(sse_received(&mut sse7, "1").await, Vec::<String>::new());
    assert_eq!(sse_received(&mut sse8, "1").await, Vec::<String>::new());
    assert_eq!(sse_received(&mut sse5, "1").await, Vec::<String>::new());
    assert_eq!(received_text(&mut ws7, "1").await, Vec::<String>::new());

    // SseMessageUtils.publishMessage(userIds [7]).
    let published = java
        .run(&["ruoyi-sse", &port, "app", "7", "hello sse"])
        .await;
    assert_eq!(
        published.payload,
        r#"["org.dromara.common.sse.dto.SseMessageDto",{"message":"hello sse","userIds":["java.util.ArrayList",[7]]}]"#
    );
    wait_taken(&host, source, 2).await;
    marker(&host, 2).await;
    assert_eq!(sse_received(&mut sse7, "2").await, vec!["hello sse"]);
    assert_eq!(sse_received(&mut sse8, "2").await, Vec::<String>::new());
    assert_eq!(received_text(&mut ws5, "2").await, Vec::<String>::new());
    assert_eq!(received_text(&mut ws6, "2").await, Vec::<String>::new());
    assert_eq!(received_text(&mut ws7, "2").await, Vec::<String>::new());
    assert_eq!(sse_received(&mut sse5, "2").await, Vec::<String>::new());

    // A list of several users, then WebSocketUtils.publishAll (no list): everyone.
    java.run(&["ruoyi-ws", &port, "app", "5,6", "both"]).await;
    java.run(&["ruoyi-ws", &port, "app", "-", "everyone"]).await;
    wait_taken(&host, source, 4).await;
    marker(&host, 3).await;
    for c in [&mut ws5, &mut ws6] {
        assert_eq!(received_text(c, "3").await, vec!["both", "everyone"]);
    }
    assert_eq!(received_text(&mut ws7, "3").await, vec!["everyone"]);
    for c in [&mut sse5, &mut sse7, &mut sse8] {
        assert_eq!(sse_received(c, "3").await, Vec::<String>::new());
    }
    java.stop().await;
}

#[tokio::test]
async fn yudao_redis_source_resubscribes_after_redis_restarts() {
    if !require_redis() || !require_java() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let port = redis.port.to_string();
    let source = "yudao-restart";
    let config = ingest(&format!(
        "[[ingest]]\nkind = \"yudao-redis\"\nname = \"{source}\"\nurl = \"{}\"\n",
        redis.url()
    ));
    let host = TestHost::start_with(&[], |c| c.ingest = config).await;
    wait_up(&host, source, true).await;
    let mut user = host.connect("1", 2, None).await;

    redis.kill();
    wait_up(&host, source, false).await;
    redis.restart().await;
    wait_up(&host, source, true).await;

    let mut java = Publisher::start();
    let published = java
        .run(&["yudao-redis", &port, "-", "user:2:1", "back", "again"])
        .await;
    assert_eq!(published.receivers, Some(1), "subscribed again");
    wait_taken(&host, source, 1).await;
    marker(&host, 1).await;
    assert_eq!(
        received(&mut user, 1).await,
        vec![("back".to_owned(), notice("again"))]
    );
    java.stop().await;
}

/// The local RabbitMQ (guest/guest), when it runs.
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn require_rabbitmq() -> bool {
    assert!(
        std::net::TcpStream::connect("127.0.0.1:5672").is_ok(),
        "the end-to-end tier needs RabbitMQ on 127.0.0.1:5672 (guest/guest)"
    );
    true
}

#[tokio::test]
async fn yudao_rabbitmq_targets_with_the_tenant_header() {
    if !require_java() || !require_rabbitmq() {
        return;
    }
    let source = "yudao-amqp";
    let exchange = "switchboard-test-websocket-exchange";
    let config = ingest(&format!(
        "[[ingest]]\nkind = \"yudao-rabbitmq\"\nname = \"{source}\"\nurl = \"{AMQP_URL}\"\n\
         exchange = \"{exchange}\"\n"
    ));
    let host = TestHost::start_with(&[], |c| c.ingest = config).await;
    wait_up(&host, source, true).await;
    let mut t1 = host.connect("1", 2, Some("1")).await;
    let mut t2 = host.connect("1", 2, Some("2")).await;
    let mut other = host.connect("3", 2, Some("1")).await;
    let mut java = Publisher::start();

    let published = java
        .run(&[
            "yudao-rabbitmq",
            AMQP_URL,
            exchange,
            "1",
            "user:2:1",
            "notice-push",
            "amqp",
        ])
        .await;
    assert_eq!(
        published.payload,
        r#"{"sessionId":null,"userType":2,"userId":1,"messageType":"notice-push","messageContent":"{\"id\":\"9007199254740993\",\"text\":\"amqp\"}"}"#
    );
    wait_taken(&host, source, 1).await;
    marker(&host, 1).await;
    assert_eq!(
        received(&mut t1, 1).await,
        vec![("notice-push".to_owned(), notice("amqp"))]
    );
    assert_eq!(received(&mut t2, 1).await, vec![]);
    assert_eq!(received(&mut other, 1).await, vec![]);

    // The user type in tenant 2 only.
    java.run(&[
        "yudao-rabbitmq",
        AMQP_URL,
        exchange,
        "2",
        "type:2",
        "to-type",
        "t2",
    ])
    .await;
    wait_taken(&host, source, 2).await;
    marker(&host, 2).await;
    assert_eq!(
        received(&mut t2, 2).await,
        vec![("to-type".to_owned(), notice("t2"))]
    );
    assert_eq!(received(&mut t1, 2).await, vec![]);
    assert_eq!(received(&mut other, 2).await, vec![]);

    // Java serialization (a back end without the JSON converter) and broken JSON are counted.
    java.run(&[
        "raw-rabbitmq",
        AMQP_URL,
        exchange,
        "application/x-java-serialized-object",
        "\u{ac}\u{ed}",
    ])
    .await;
    java.run(&["raw-rabbitmq", AMQP_URL, exchange, "application/json", "{"])
        .await;
    for reason in ["content_type", "malformed"] {
        eventually(PATIENCE, reason, async || {
            (rejected(&host, source, reason).await == Some(1.0)).then_some(())
        })
        .await;
    }
    java.stop().await;
}

/// The broker's process id of the AMQP connection whose client properties mention `name`.
fn amqp_connection(name: &str) -> Option<String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.contains(name))?;
    Some(line.split('\t').next()?.trim().to_owned())
}

#[tokio::test]
async fn yudao_rabbitmq_source_reconnects_when_the_broker_drops_it() {
    if !require_java() || !require_rabbitmq() {
        return;
    }
    assert!(
        std::process::Command::new("rabbitmqctl")
            .arg("help")
            .output()
            .is_ok(),
        "this test drops the source's connection with rabbitmqctl, which is missing"
    );
    let source = "yudao-amqp-drop";
    // An exchange of its own: the other RabbitMQ test publishes in parallel.
    let exchange = "switchboard-test-reconnect-exchange";
    let config = ingest(&format!(
        "[[ingest]]\nkind = \"yudao-rabbitmq\"\nname = \"{source}\"\nurl = \"{AMQP_URL}\"\n\
         exchange = \"{exchange}\"\n"
    ));
    let host = TestHost::start_with(&[], |c| c.ingest = config).await;
    wait_up(&host, source, true).await;
    let name = format!("switchboard ingest {source}");
    let first = amqp_connection(&name).expect("the source's connection is listed");
    // What a broker restart or a cut link does to the consumer: the connection is gone.
    let closed = std::process::Command::new("rabbitmqctl")
        .args(["-q", "close_connection", &first, "ingest reconnect test"])
        .status()
        .expect("rabbitmqctl runs");
    assert!(closed.success());
    // A new connection exists only after the old consumer failed, so `up` is fresh after it.
    eventually(PATIENCE * 2, "a new connection", async || {
        amqp_connection(&name).filter(|pid| *pid != first)
    })
    .await;
    wait_up(&host, source, true).await;

    let mut user = host.connect("1", 2, None).await;
    let mut java = Publisher::start();
    java.run(&[
        "yudao-rabbitmq",
        AMQP_URL,
        exchange,
        "-",
        "user:2:1",
        "back",
        "again",
    ])
    .await;
    wait_taken(&host, source, 1).await;
    marker(&host, 1).await;
    assert_eq!(
        received(&mut user, 1).await,
        vec![("back".to_owned(), notice("again"))]
    );
    java.stop().await;
}
