//! Several host processes joined through a Redis of the test's own: cross-node delivery,
//! cluster-wide presence, a killed node, and Redis going away and coming back.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_tests::{
    PATIENCE,
    cluster::{Node, RedisServer, require_redis},
    eventually,
};

#[tokio::test]
async fn delivery_crosses_nodes_exactly_once_within_tenants() {
    if !require_redis() {
        return;
    }
    let redis = RedisServer::start().await;
    let n1 = Node::start("n1", &redis.url(), &["demo-chat", "echo"], &[]).await;
    let n2 = Node::start("n2", &redis.url(), &["demo-chat", "echo"], &[]).await;
    let mut alice = n1.connect("1", 2, Some("t1")).await;
    let mut bob = n2.connect("2", 2, Some("t1")).await;
    let mut bob_again = n1.connect("2", 2, Some("t1")).await;
    let mut stranger = n2.connect("3", 2, Some("t2")).await;
    // Targeted routing finds bob on n2 once n1's presence has him.
    n1.wait_sees(2, "2", Some("t1"), 2).await;

    // A plugin on n1 reaches a user on n2 (and the same user's session on n1), once each.
    let started = Instant::now();
    alice
        .send(
            "demo-message-send",
            json!({"text": "hi bob", "toUserId": "2"}),
        )
        .await;
    for c in [&mut bob, &mut bob_again] {
        assert_eq!(
            c.expect("demo-message-receive").await,
            json!({"fromUserId": 1, "text": "hi bob", "single": true})
        );
    }
    eprintln!("cross-node chat delivered in {:?}", started.elapsed());

    // The push API on n1 reaches a session on n2 by id.
    let (status, body) = n1
        .push(json!({"to": {"session": bob.session_id()}, "type": "direct", "content": 1}))
        .await;
    assert_eq!(
        (status, &body["local_deliveries"], &body["cluster"]),
        (202, &json!(0), &json!("queued"))
    );
    assert_eq!(bob.expect("direct").await, json!(1));

    // A user-type broadcast in t1 reaches every t1 session on both nodes exactly once, and
    // nothing in t2; the marker (to everyone, every tenant) proves nothing else is queued.
    let (status, _) = n2
        .push(json!({"to": {"user_type": 2}, "type": "news", "content": "t1 only", "tenant_id": "t1"}))
        .await;
    assert_eq!(status, 202);
    // The marker takes the same path as the news (published by n2), so it arrives after it.
    let (status, _) = n2
        .push(json!({"to": {"everyone": true}, "type": "marker", "content": 1}))
        .await;
    assert_eq!(status, 202);
    for (name, c, expect) in [
        ("alice", &mut alice, 1),
        ("bob", &mut bob, 1),
        ("bob again", &mut bob_again, 1),
        ("stranger", &mut stranger, 0),
    ] {
        let got = c.until_marker(1).await;
        let news = got.iter().filter(|v| v["type"] == "news").count();
        assert_eq!(news, expect, "{name}: {got:?}");
    }
}

#[tokio::test]
async fn presence_is_cluster_wide_and_a_killed_node_drops_out_within_the_ttl() {
    if !require_redis() {
        return;
    }
    let redis = RedisServer::start().await;
    let ttl = [("SWITCHBOARD_CLUSTER__PRESENCE_TTL_SECS", "3")];
    let n1 = Node::start("p1", &redis.url(), &["echo"], &ttl).await;
    let mut n2 = Node::start("p2", &redis.url(), &["echo"], &ttl).await;
    let n3 = Node::start("p3", &redis.url(), &["echo"], &ttl).await;
    let _a = n1.connect("a", 1, Some("t")).await;
    let _b = n2.connect("b", 1, Some("t")).await;
    let _b2 = n3.connect("b", 1, Some("t")).await;
    let c = n3.connect("c", 1, Some("t")).await;

    for node in [&n1, &n2, &n3] {
        eventually(PATIENCE, "every node sees every user", async || {
            let (_, body) = node
                .get("/api/v1/presence/users?user_type=1&tenant_id=t")
                .await;
            (body["users"] == json!(["a", "b", "c"])).then_some(())
        })
        .await;
        let (_, body) = node.get("/api/v1/presence/users/1/b?tenant_id=t").await;
        assert_eq!(body, json!({"online": true, "sessions": 2}));
    }
    // Without a tenant filter: every tenant.
    let (_, body) = n1.get("/api/v1/presence/users?user_type=1").await;
    assert_eq!(body["users"], json!(["a", "b", "c"]));

    // A user who leaves drops out everywhere at the next write, not at the TTL.
    c.close().await;
    let left = Instant::now();
    eventually(PATIENCE, "c to be gone on p1", async || {
        let (_, body) = n1
            .get("/api/v1/presence/users?user_type=1&tenant_id=t")
            .await;
        (body["users"] == json!(["a", "b"])).then_some(())
    })
    .await;
    let gone = left.elapsed();
    eprintln!("a closed session left cluster presence after {gone:?}");
    assert!(
        gone < Duration::from_secs(1),
        "well within the TTL: {gone:?}"
    );

    n2.kill();
    let killed = Instant::now();
    eventually(
        Duration::from_secs(10),
        "the killed node's session to drop out",
        async || {
            let (_, body) = n1.get("/api/v1/presence/users/1/b?tenant_id=t").await;
            (body["sessions"] == json!(1)).then_some(())
        },
    )
    .await;
    let took = killed.elapsed();
    eprintln!("killed node left presence after {took:?} (TTL 3 s)");
    assert!(
        took <= Duration::from_secs(5),
        "within the TTL plus a refresh: {took:?}"
    );
    let (_, body) = n3
        .get("/api/v1/presence/users?user_type=1&tenant_id=t")
        .await;
    assert_eq!(body["users"], json!(["a", "b"]), "b is still on p3");
}

#[tokio::test]
async fn redis_restart_local_delivery_continues_and_cross_node_resumes() {
    if !require_redis() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let n1 = Node::start("r1", &redis.url(), &["echo"], &[]).await;
    let n2 = Node::start("r2", &redis.url(), &["echo"], &[]).await;
    let mut local = n1.connect("1", 1, None).await;
    let mut remote = n2.connect("2", 1, None).await;
    n1.wait_sees(1, "2", None, 1).await;
    let to_remote =
        json!({"to": {"user": {"user_type": 1, "user_id": "2"}}, "type": "x", "content": "before"});
    n1.push(to_remote.clone()).await;
    assert_eq!(remote.expect("x").await, json!("before"));

    redis.kill();
    let killed = Instant::now();
    eventually(
        PATIENCE,
        "readiness to report the broker down",
        async || {
            let (status, body) = n1.get("/readyz").await;
            (status == 503 && body["broker"] == "down").then_some(())
        },
    )
    .await;
    // Local delivery and plugins keep working.
    for i in 0..20 {
        let (status, body) = n1
            .push(json!({"to": {"user": {"user_type": 1, "user_id": "1"}}, "type": "local", "content": i}))
            .await;
        // A user may have sessions on other nodes too: that copy is refused, and said so.
        assert_eq!(
            (status, &body["local_deliveries"], &body["cluster"]),
            (202, &json!(1), &json!("dropped"))
        );
        assert_eq!(local.expect("local").await, json!(i));
    }
    local.send("echo", json!("plugins work")).await;
    assert_eq!(local.expect("echo").await, json!("plugins work"));
    let metrics = n1.metrics().await;
    assert!(
        metrics.contains("switchboard_broker_up 0"),
        "broker state in metrics"
    );

    redis.restart().await;
    let restarted = Instant::now();
    // Cross-node delivery resumes without restarting the hosts.
    eventually(
        Duration::from_secs(15),
        "both brokers to reconnect",
        async || {
            let (_, r1) = n1.get("/readyz").await;
            let (_, r2) = n2.get("/readyz").await;
            (r1["broker"] == "up" && r2["broker"] == "up").then_some(())
        },
    )
    .await;
    let marker = json!({"to": {"user": {"user_type": 1, "user_id": "2"}}, "type": "resumed", "content": "yes"});
    eventually(PATIENCE, "a push from n1 to reach n2", async || {
        n1.push(marker.clone()).await;
        while let Some(v) = remote.next_json_within(Duration::from_millis(500)).await {
            if v["type"] == "resumed" {
                return Some(());
            }
        }
        None
    })
    .await;
    eprintln!(
        "redis down for {:?}; cross-node delivery resumed {:?} after restart",
        restarted - killed,
        restarted.elapsed()
    );
    let metrics = n1.metrics().await;
    assert!(
        metrics.contains("switchboard_messages_dropped_total{reason=\"broker_down\"}"),
        "drops while down are counted"
    );
}
