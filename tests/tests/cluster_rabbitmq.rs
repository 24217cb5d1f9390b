//! Several host processes joined through the machine's RabbitMQ (each test under a cluster
//! name of its own): cross-node delivery, cluster-wide presence over heartbeats or in Redis, a
//! killed node, publishes the broker refuses, and the broker going away or going silent.
//!
//! The system RabbitMQ cannot be restarted by a test, so its outages are made by a proxy in
//! front of it ([`switchboard_tests::proxy::Proxy`]): cut, every connection closes and new ones
//! are refused (what a restart looks like to a node, whose queues go with its connection
//! anyway); paused, nothing is answered. A broker that loses its state while the connections
//! stay up is not tested.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_tests::{
    PATIENCE,
    cluster::{Node, RABBITMQ, Rabbit, RedisServer, require_rabbitmq, require_redis},
    eventually, metric,
    proxy::Proxy,
};

#[tokio::test]
async fn rabbitmq_delivery_crosses_nodes_exactly_once_within_tenants() {
    if !require_rabbitmq() {
        return;
    }
    let rabbit = Rabbit::direct();
    let n1 = Node::start_rabbitmq("n1", &rabbit, &["demo-chat", "echo"], &[]).await;
    let n2 = Node::start_rabbitmq("n2", &rabbit, &["demo-chat", "echo"], &[]).await;
    let (_, health) = n1.get("/readyz").await;
    assert_eq!(health["broker"], "up", "{health}");
    let mut alice = n1.connect("1", 2, Some("t1")).await;
    let mut bob = n2.connect("2", 2, Some("t1")).await;
    let mut bob_again = n1.connect("2", 2, Some("t1")).await;
    let mut stranger = n2.connect("3", 2, Some("t2")).await;
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
    eprintln!(
        "cross-node chat over rabbitmq delivered in {:?}",
        started.elapsed()
    );

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
    let (status, _) = n2
        .push(json!({"to": {"everyone": true}, "type": "marker", "content": 1}))
        .await;
    assert_eq!(status, 202);
    for (name, c, news) in [
        ("alice", &mut alice, 1),
        ("bob", &mut bob, 1),
        ("bob again", &mut bob_again, 1),
        ("stranger", &mut stranger, 0),
    ] {
        let got = c.until_marker(1).await;
        let count = got.iter().filter(|v| v["type"] == "news").count();
        assert_eq!(count, news, "{name}: {got:?}");
    }
}

/// `users` of `GET /api/v1/presence/users?user_type=1&tenant_id=t` on `node`.
async fn users_of_t(node: &Node) -> Value {
    let (_, body) = node
        .get("/api/v1/presence/users?user_type=1&tenant_id=t")
        .await;
    body["users"].clone()
}

#[tokio::test]
async fn rabbitmq_presence_is_cluster_wide_and_a_killed_node_drops_out_within_the_ttl() {
    if !require_rabbitmq() {
        return;
    }
    let rabbit = Rabbit::direct();
    let ttl = [("SWITCHBOARD_CLUSTER__PRESENCE_TTL_SECS", "3")];
    let n1 = Node::start_rabbitmq("p1", &rabbit, &["echo"], &ttl).await;
    let mut n2 = Node::start_rabbitmq("p2", &rabbit, &["echo"], &ttl).await;
    let n3 = Node::start_rabbitmq("p3", &rabbit, &["echo"], &ttl).await;
    let _a = n1.connect("a", 1, Some("t")).await;
    let _b = n2.connect("b", 1, Some("t")).await;
    let _b2 = n3.connect("b", 1, Some("t")).await;
    let c = n3.connect("c", 1, Some("t")).await;
    for node in [&n1, &n2, &n3] {
        eventually(PATIENCE, "every node sees every user", async || {
            (users_of_t(node).await == json!(["a", "b", "c"])).then_some(())
        })
        .await;
        let (_, body) = node.get("/api/v1/presence/users/1/b?tenant_id=t").await;
        assert_eq!(body, json!({"online": true, "sessions": 2}));
    }

    // A user who leaves drops out everywhere at the next heartbeat, not at the TTL.
    c.close().await;
    let left = Instant::now();
    eventually(PATIENCE, "c to be gone on p1", async || {
        (users_of_t(&n1).await == json!(["a", "b"])).then_some(())
    })
    .await;
    let gone = left.elapsed();
    eprintln!("a closed session left rabbitmq presence after {gone:?}");
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
    eprintln!("killed node left rabbitmq presence after {took:?} (TTL 3 s)");
    assert!(
        took <= Duration::from_secs(5),
        "within the TTL plus a refresh: {took:?}"
    );
}

#[tokio::test]
async fn rabbitmq_with_presence_in_redis_reaches_users_on_other_nodes() {
    if !require_rabbitmq() || !require_redis() {
        return;
    }
    let redis = RedisServer::start().await;
    let rabbit = Rabbit::direct();
    let url = redis.url();
    let env = [
        ("SWITCHBOARD_CLUSTER__PRESENCE", "redis"),
        ("SWITCHBOARD_CLUSTER__REDIS_URL", url.as_str()),
    ];
    let n1 = Node::start_rabbitmq("rp1", &rabbit, &[], &env).await;
    let n2 = Node::start_rabbitmq("rp2", &rabbit, &[], &env).await;
    let mut remote = n2.connect("2", 1, Some("t")).await;
    n1.wait_sees(1, "2", Some("t"), 1).await;
    assert!(
        redis
            .cli(&["KEYS", &format!("{}:presence:rp2:*", rabbit.name)])
            .contains("rp2"),
        "presence is kept in redis"
    );
    let (status, body) = n1
        .push(json!({"to": {"user": {"user_type": 1, "user_id": "2"}}, "type": "x", "content": 1, "tenant_id": "t"}))
        .await;
    assert_eq!((status, &body["cluster"]), (202, &json!("queued")));
    assert_eq!(remote.expect("x").await, json!(1));
}

#[tokio::test]
async fn rabbitmq_refusing_publishes_answers_dropped_until_a_probe_is_confirmed() {
    if !require_rabbitmq() {
        return;
    }
    let rabbit = Rabbit::direct();
    let env = [
        ("SWITCHBOARD_CLUSTER__AMQP_OVERFLOW", "reject-publish"),
        ("SWITCHBOARD_CLUSTER__AMQP_QUEUE_MAX_LENGTH", "5"),
    ];
    let n1 = Node::start_rabbitmq("f1", &rabbit, &["echo"], &env).await;
    let n2 = Node::start_rabbitmq("f2", &rabbit, &["echo"], &env).await;
    let mut remote = n2.connect("2", 1, None).await;
    n1.wait_sees(1, "2", None, 1).await;

    // A node that stops reading: the broker sends it what its prefetch allows, queues five
    // more, then refuses; the sender hears of it. Pushed to the user type (a broadcast): a
    // stopped node's presence expires, and targeted pushes would stop going its way.
    n2.signal("STOP");
    let to_remote = |i: u64| json!({"to": {"user_type": 1}, "type": "fill", "content": i});
    let mut pushed = 0u64;
    let refused_after = eventually(PATIENCE, "a push to be answered dropped", async || {
        // In bursts: the prefetch alone takes 256 before the queue starts to fill.
        for _ in 0..64 {
            pushed += 1;
            let (status, body) = n1.push(to_remote(pushed)).await;
            assert_eq!(status, 202);
            if body["cluster"] == "dropped" {
                return Some(pushed);
            }
        }
        None
    })
    .await;
    eprintln!("a full queue (reject-publish) refused publishes after {refused_after} pushes");
    let page = n1.metrics().await;
    let refused = metric(
        &page,
        "switchboard_messages_dropped_total{reason=\"broker_refused\"}",
    );
    assert!(refused.is_some_and(|n| n >= 1.0), "refusals are counted");

    // Reading again: the backlog arrives, then the sender's next probe clears the refusal.
    n2.signal("CONT");
    eventually(PATIENCE, "the sender to be ready again", async || {
        let (status, _) = n1.get("/readyz").await;
        (status == 200).then_some(())
    })
    .await;
    let marker =
        json!({"to": {"user": {"user_type": 1, "user_id": "2"}}, "type": "back", "content": 1});
    eventually(PATIENCE, "a push from n1 to reach n2 again", async || {
        n1.push(marker.clone()).await;
        while let Some(v) = remote.next_json_within(Duration::from_millis(500)).await {
            if v["type"] == "back" {
                return Some(());
            }
        }
        None
    })
    .await;
}

#[tokio::test]
async fn rabbitmq_outage_local_delivery_continues_and_cross_node_resumes() {
    if !require_rabbitmq() {
        return;
    }
    let proxy = Proxy::start(RABBITMQ).await;
    let rabbit = Rabbit::at(&proxy.addr());
    let n1 = Node::start_rabbitmq("r1", &rabbit, &["echo"], &[]).await;
    let n2 = Node::start_rabbitmq("r2", &rabbit, &["echo"], &[]).await;
    let mut local = n1.connect("1", 1, None).await;
    let mut remote = n2.connect("2", 1, None).await;
    n1.wait_sees(1, "2", None, 1).await;
    let to_remote =
        json!({"to": {"user": {"user_type": 1, "user_id": "2"}}, "type": "x", "content": "before"});
    n1.push(to_remote.clone()).await;
    assert_eq!(remote.expect("x").await, json!("before"));

    proxy.cut();
    let cut = Instant::now();
    eventually(
        PATIENCE,
        "readiness to report the broker down",
        async || {
            let (status, body) = n1.get("/readyz").await;
            (status == 503 && body["broker"] == "down").then_some(())
        },
    )
    .await;
    eprintln!("rabbitmq cut: broker down after {:?}", cut.elapsed());
    // Local delivery and plugins keep working; the copy for other nodes is refused, and said so.
    for i in 0..20 {
        let (status, body) = n1
            .push(json!({"to": {"user": {"user_type": 1, "user_id": "1"}}, "type": "local", "content": i}))
            .await;
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
    assert!(
        metrics.contains("switchboard_messages_dropped_total{reason=\"broker_down\"}"),
        "drops while down are counted"
    );
    // Presence falls back to this node's own sessions.
    let (_, body) = n1.get("/api/v1/presence/users?user_type=1").await;
    assert_eq!(body["users"], json!(["1"]));

    // A node started while the broker is unreachable starts anyway, says why, and joins when
    // the broker is back.
    let n3 = Node::spawn_rabbitmq("r3", &rabbit, &["echo"], &[]);
    eventually(
        PATIENCE * 6,
        "the late node to serve, not ready",
        async || {
            let r = reqwest::get(n3.url("/readyz")).await.ok()?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.ok()?;
            (status == 503 && body["broker"] == "down").then_some(())
        },
    )
    .await;
    eventually(PATIENCE, "the late node to log why", async || {
        n3.log()
            .contains("rabbitmq broker: cannot connect")
            .then_some(())
    })
    .await;

    proxy.restore().await;
    let restored = Instant::now();
    eventually(
        Duration::from_secs(15),
        "both nodes to reconnect",
        async || {
            let (s1, r1) = n1.get("/readyz").await;
            let (s2, r2) = n2.get("/readyz").await;
            (s1 == 200 && s2 == 200 && r1["broker"] == "up" && r2["broker"] == "up").then_some(())
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
        "rabbitmq cut for {:?}; cross-node delivery resumed {:?} after it came back",
        restored - cut,
        restored.elapsed()
    );
    n3.wait_ready().await;
    let mut third = n3.connect("3", 1, None).await;
    let to_third =
        json!({"to": {"user": {"user_type": 1, "user_id": "3"}}, "type": "hello", "content": 3});
    eventually(
        PATIENCE,
        "a push from n1 to reach the late node",
        async || {
            n1.push(to_third.clone()).await;
            while let Some(v) = third.next_json_within(Duration::from_millis(500)).await {
                if v["type"] == "hello" {
                    return Some(());
                }
            }
            None
        },
    )
    .await;
    eventually(PATIENCE, "presence across nodes again", async || {
        let (_, body) = n1.get("/api/v1/presence/users?user_type=1").await;
        (body["users"] == json!(["1", "2", "3"])).then_some(())
    })
    .await;
}

#[tokio::test]
async fn rabbitmq_that_stops_answering_marks_the_broker_down_until_it_answers_again() {
    if !require_rabbitmq() {
        return;
    }
    let proxy = Proxy::start(RABBITMQ).await;
    let rabbit = Rabbit::at(&proxy.addr());
    let n1 = Node::start_rabbitmq("s1", &rabbit, &["echo"], &[]).await;
    let n2 = Node::start_rabbitmq("s2", &rabbit, &["echo"], &[]).await;
    let mut remote = n2.connect("2", 1, None).await;
    n1.wait_sees(1, "2", None, 1).await;

    // Paused, not cut: connections stay open, nothing is answered.
    proxy.pause(true);
    let paused = Instant::now();
    eventually(
        PATIENCE,
        "readiness to report the broker down",
        async || {
            let (status, body) = n1.get("/readyz").await;
            (status == 503 && body["broker"] == "down").then_some(())
        },
    )
    .await;
    let noticed = paused.elapsed();
    eprintln!("an unanswering rabbitmq noticed after {noticed:?}");
    assert!(
        noticed < Duration::from_secs(4),
        "within a probe interval and its timeout: {noticed:?}"
    );
    let (status, body) = n1
        .push(
            json!({"to": {"user": {"user_type": 1, "user_id": "2"}}, "type": "lost", "content": 0}),
        )
        .await;
    assert_eq!((status, &body["cluster"]), (202, &json!("dropped")));

    proxy.pause(false);
    eventually(
        Duration::from_secs(20),
        "the broker to be up again",
        async || {
            let (s1, _) = n1.get("/readyz").await;
            let (s2, _) = n2.get("/readyz").await;
            (s1 == 200 && s2 == 200).then_some(())
        },
    )
    .await;
    let marker =
        json!({"to": {"user": {"user_type": 1, "user_id": "2"}}, "type": "back", "content": 1});
    eventually(PATIENCE, "a push from n1 to reach n2", async || {
        n1.push(marker.clone()).await;
        while let Some(v) = remote.next_json_within(Duration::from_millis(500)).await {
            if v["type"] == "back" {
                return Some(());
            }
        }
        None
    })
    .await;
}
