//! Operator input and cluster edge cases: endpoint paths the router would refuse, environment
//! values that look like numbers, token claims, session ids, presence across tenants, listed
//! users, a Redis that stops answering, and cleanup when a start fails or a node leaves.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard::config::{BrokerKind, EndpointConfig, TransportKind};
use switchboard_tests::{
    PATIENCE,
    client::Client,
    cluster::{Node, RedisServer, require_redis},
    eventually,
    host::{SECRET, TestHost, base_config},
    metric,
};

fn endpoint(path: &str, transport: TransportKind) -> EndpointConfig {
    EndpointConfig {
        path: path.into(),
        transport,
        profile: Default::default(),
        text_type: "ruoyi-text".into(),
        single_session: false,
        heartbeat_secs: None,
        auth: None,
        reply_via: None,
    }
}

/// `server::run` with `config`, which must fail to start: returns its error text.
async fn run_fails(config: switchboard::config::Config) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = tokio::spawn(switchboard::server::run(listener, config, async {}));
    let joined = tokio::time::timeout(PATIENCE * 3, run)
        .await
        .expect("run returns within its bound");
    match joined {
        Ok(Err(e)) => format!("{e:#}"),
        Ok(Ok(())) => panic!("run started with a config that cannot be served"),
        Err(e) => panic!("run panicked: {e}"),
    }
}

#[tokio::test]
async fn endpoint_paths_the_router_refuses_fail_the_start_with_an_error_not_a_panic() {
    use TransportKind::{Sse, Websocket};
    // Set on the struct, past `Config::parse`, to reach the router's own guard.
    let cases = [
        vec![endpoint("/healthz", Websocket)],
        vec![endpoint("/", Websocket)],
        vec![endpoint("/metrics", Sse)],
        vec![endpoint("/a", Sse), endpoint("/a/close", Websocket)],
        vec![endpoint("*", Websocket)],
    ];
    for endpoints in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut config = base_config(dir.path().join("plugins"));
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        // The demo page (served at `/` only with dev tokens) is one of the routes to clash with.
        config.server.dev_tokens = true;
        config.endpoints = endpoints.clone();
        let err = run_fails(config).await;
        assert!(err.contains("[[endpoints]]"), "{endpoints:?}: {err}");
    }
}

#[tokio::test]
async fn numeric_looking_node_id_and_secret_from_the_environment_stay_strings() {
    let digits_secret = "123456789012345678";
    let node = Node::start_local(
        &[],
        &[
            ("SWITCHBOARD_CLUSTER__NODE_ID", "1"),
            ("SWITCHBOARD_AUTH__JWT_SECRET", digits_secret),
        ],
    )
    .await;
    let (status, health) = node.get("/healthz").await;
    assert_eq!((status, health["node_id"].as_str()), (200, Some("1")));
    // The all-digit secret verifies tokens signed with it.
    let token = switchboard_tests::host::token(digits_secret, "7", 2, None, 60);
    let url = format!("ws://{}/ws?token={token}", node.addr);
    let client = Client::connect(&url, &[]).await.expect("token accepted");
    assert!(client.session_id().starts_with("1-"));
}

#[tokio::test]
async fn session_ids_are_random_and_do_not_repeat_after_a_restart() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2 {
        let host = TestHost::start_with(&[], |c| c.cluster.node_id = Some("n".into())).await;
        for _ in 0..3 {
            let client = host.connect("1", 2, None).await;
            let id = client.session_id().to_owned();
            let random = id.strip_prefix("n-").expect("names its node");
            assert_eq!(random.len(), 32, "{id}: 128 random bits in hex");
            assert!(random.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
            assert!(seen.insert(id.clone()), "{id} repeated");
        }
        host.shutdown().await;
    }
}

fn claims_token(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn tokens_without_the_configured_issuer_or_audience_or_with_a_malformed_tenant_get_401() {
    let host = TestHost::start_with(&[], |c| {
        c.auth.issuer = Some("sso".into());
        c.auth.audience = Some("switchboard".into());
    })
    .await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let base = json!({"sub": "1", "user_type": 2, "exp": exp, "iss": "sso", "aud": "switchboard"});
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        if v.is_null() && k != "aud" {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v;
        }
        claims_token(c)
    };
    let good = claims_token(base.clone());
    let url = |t: &str| format!("{}?token={t}", host.ws_url("/ws"));
    assert!(Client::connect(&url(&good), &[]).await.is_ok());
    for (token, code) in [
        (with("iss", Value::Null), "invalid_token"),
        (with("aud", Value::Null), "invalid_token"),
        (with("aud", json!(123)), "invalid_token"),
        (with("tenant_id", json!(["t1"])), "invalid_claims"),
        (with("tenant_id", json!(true)), "invalid_claims"),
        (with("tenant_id", json!("")), "invalid_claims"),
    ] {
        let refused = Client::connect(&url(&token), &[])
            .await
            .expect_err("refused");
        assert_eq!(
            (refused.status, refused.body["code"].as_str()),
            (401, Some(code)),
            "{}",
            refused.body
        );
    }
    host.shutdown().await;
}

#[tokio::test]
async fn presence_without_tenant_id_means_every_tenant_on_both_routes() {
    let host = TestHost::start(&[]).await;
    let _a = host.connect("1", 2, Some("t1")).await;
    let _b = host.connect("1", 2, Some("t2")).await;
    let _c = host.connect("2", 2, None).await;
    let (status, one) = host.get("/api/v1/presence/users/2/1").await;
    assert_eq!(status, 200);
    assert_eq!(one, json!({"online": true, "sessions": 2}));
    let (_, t1) = host.get("/api/v1/presence/users/2/1?tenant_id=t1").await;
    assert_eq!(t1, json!({"online": true, "sessions": 1}));
    let (_, t3) = host.get("/api/v1/presence/users/2/1?tenant_id=t3").await;
    assert_eq!(t3, json!({"online": false, "sessions": 0}));
    let (_, all) = host.get("/api/v1/presence/users?user_type=2").await;
    assert_eq!(all, json!({"users": ["1", "2"]}));
    host.shutdown().await;
}

#[tokio::test]
async fn a_user_listed_many_times_gets_one_copy_per_session() {
    let host = TestHost::start_with(&[], |c| c.server.outbound_queue = 16).await;
    let mut a = host.connect("1", 2, Some("t1")).await;
    let mut b = host.connect("1", 2, Some("t2")).await;
    let listed: Vec<Value> = (0..300)
        .map(|_| json!({"user_type": 2, "user_id": "1"}))
        .collect();
    let (status, body) = host
        .push(TestHost::message(
            json!({"users": listed}),
            "hello",
            json!(1),
        ))
        .await;
    assert_eq!(
        (status, &body["local_deliveries"]),
        (202, &json!(2)),
        "{body}"
    );
    let marker = TestHost::message(
        json!({"user": {"user_type": 2, "user_id": "1"}}),
        "marker",
        json!(1),
    );
    assert_eq!(host.push(marker).await.0, 202);
    for client in [&mut a, &mut b] {
        let before = client.until_marker(1).await;
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(before[0]["type"], "hello");
    }
    host.shutdown().await;
}

#[tokio::test]
async fn node_ids_that_prefix_each_other_still_reach_each_others_sessions() {
    if !require_redis() {
        return;
    }
    let redis = RedisServer::start().await;
    let a = Node::start("a", &redis.url(), &[], &[]).await;
    let a1 = Node::start("a-1", &redis.url(), &[], &[]).await;
    let mut on_a1 = a1.connect("5", 2, Some("t1")).await;
    let mut on_a = a.connect("6", 2, Some("t1")).await;
    let to = |c: &Client| json!({"session": c.session_id()});
    let (status, body) = a
        .push(TestHost::message(to(&on_a1), "hi", json!("from a")))
        .await;
    assert_eq!(
        (status, &body["cluster"]),
        (202, &json!("queued")),
        "{body}"
    );
    assert_eq!(on_a1.expect("hi").await, json!("from a"));
    let (status, body) = a1
        .push(TestHost::message(to(&on_a), "hi", json!("from a-1")))
        .await;
    assert_eq!(
        (status, &body["cluster"]),
        (202, &json!("queued")),
        "{body}"
    );
    assert_eq!(on_a.expect("hi").await, json!("from a-1"));
    // Presence without a tenant finds the user of t1 on the other node too (once written).
    eventually(PATIENCE, "node a to see the user on a-1", async || {
        let (_, presence) = a.get("/api/v1/presence/users/2/5").await;
        (presence == json!({"online": true, "sessions": 1})).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_redis_that_stops_answering_makes_readyz_fail_and_recovers() {
    if !require_redis() {
        return;
    }
    let redis = RedisServer::start().await;
    let node = Node::start(
        "stall",
        &redis.url(),
        &[],
        &[("SWITCHBOARD_CLUSTER__HEALTH_INTERVAL_MS", "200")],
    )
    .await;
    let broker_up = async |node: &Node| metric(&node.metrics().await, "switchboard_broker_up");
    assert_eq!(broker_up(&node).await, Some(1.0));
    let pid = redis.pid().expect("redis runs").to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    // Stopped, Redis keeps its sockets open but answers nothing: a half-open link.
    signal("-STOP");
    let stopped = Instant::now();
    eventually(PATIENCE, "readyz to answer 503", async || {
        (node.get("/readyz").await.0 == 503).then_some(())
    })
    .await;
    let noticed = stopped.elapsed();
    assert_eq!(broker_up(&node).await, Some(0.0));
    // A push is not queued behind the silent link.
    let (_, body) = node
        .push(TestHost::message(json!({"user_type": 2}), "t", json!(1)))
        .await;
    assert_eq!(body["cluster"], "dropped", "{body}");
    signal("-CONT");
    let resumed = Instant::now();
    eventually(PATIENCE, "readyz to answer 200 again", async || {
        (node.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let recovered = resumed.elapsed();
    assert_eq!(broker_up(&node).await, Some(1.0));
    eprintln!("unanswered redis noticed after {noticed:?}; recovery seen after {recovered:?}");
    assert!(
        noticed < Duration::from_secs(3),
        "noticed after {noticed:?}"
    );
}

#[tokio::test]
async fn stale_nodes_are_trimmed_and_a_leaving_node_leaves_nothing_behind() {
    if !require_redis() {
        return;
    }
    let redis = RedisServer::start().await;
    // A node that died long ago, and one that died 1 s ago (still within the TTL).
    assert_eq!(redis.cli(&["ZADD", "switchboard:nodes", "1", "ghost"]), "1");
    let mut node = Node::start(
        "leaver",
        &redis.url(),
        &[],
        &[("SWITCHBOARD_CLUSTER__PRESENCE_TTL_SECS", "3")],
    )
    .await;
    let _client = node.connect("1", 2, Some("t1")).await;
    eventually(PATIENCE, "the ghost node to be trimmed", async || {
        redis
            .cli(&["ZSCORE", "switchboard:nodes", "ghost"])
            .is_empty()
            .then_some(())
    })
    .await;
    eventually(PATIENCE, "the user's presence to be written", async || {
        (redis.cli(&["HGET", "switchboard:presence:leaver:2:t=t1", "1"]) == "1").then_some(())
    })
    .await;
    node.terminate(PATIENCE).await;
    assert_eq!(redis.cli(&["ZSCORE", "switchboard:nodes", "leaver"]), "");
    assert_eq!(redis.cli(&["KEYS", "switchboard:presence:leaver:*"]), "");
}

#[tokio::test]
async fn a_start_that_fails_after_the_broker_started_stops_the_cluster_tasks() {
    if !require_redis() {
        return;
    }
    let redis = RedisServer::start().await;
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut config = base_config(file.path().join("plugins"));
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.cluster.broker = BrokerKind::Redis;
    config.cluster.redis_url = switchboard::config::RedisUrl::One(redis.url());
    config.cluster.node_id = Some("doomed".into());
    config.cluster.presence_ttl_secs = 3;
    config.cluster.health_interval_ms = 100;
    // The plugins folder cannot be created under a file: the plugin host fails to start
    // after the broker and presence have started.
    let err = run_fails(config).await;
    assert!(err.contains("plugin"), "{err}");
    // Left running, the tasks would subscribe within milliseconds and write the node's
    // heartbeat every second; stopped, neither shows up during a window longer than both.
    let gone = || {
        let subscribers = redis.cli(&["PUBSUB", "NUMSUB", "switchboard:deliveries"]);
        subscribers.lines().nth(1) == Some("0")
            && redis
                .cli(&["ZSCORE", "switchboard:nodes", "doomed"])
                .is_empty()
    };
    eventually(
        PATIENCE,
        "the node's subscriber and presence to be gone",
        async || gone().then_some(()),
    )
    .await;
    let window = Instant::now();
    while window.elapsed() < Duration::from_millis(2500) {
        assert!(
            gone(),
            "a cluster task of the failed start is still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
