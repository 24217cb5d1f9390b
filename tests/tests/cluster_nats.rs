//! Several host processes joined through a `nats-server` of the test's own: cross-node
//! delivery, cluster-wide presence over NATS, a killed node, and NATS going away (killed, or
//! stopped so that it no longer answers) and coming back.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_tests::{
    PATIENCE,
    cluster::{NatsServer, Node, require_nats},
    eventually,
};

#[tokio::test]
async fn nats_delivery_crosses_nodes_exactly_once_within_tenants() {
    if !require_nats() {
        return;
    }
    let nats = NatsServer::start().await;
    let n1 = Node::start_nats("n1", &nats.url(), &["demo-chat", "echo"], &[]).await;
    let n2 = Node::start_nats("n2", &nats.url(), &["demo-chat", "echo"], &[]).await;
    let (_, health) = n1.get("/readyz").await;
    assert_eq!(health["broker"], "up", "{health}");
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
    eprintln!(
        "cross-node chat over nats delivered in {:?}",
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

    // A list of users: the one on n2 gets it once.
    let (status, body) = n1
        .push(json!({"to": {"users": [{"user_type": 2, "user_id": "2"}, {"user_type": 2, "user_id": "3"}]}, "type": "list", "content": 2, "tenant_id": "t1"}))
        .await;
    assert_eq!(
        (status, &body["cluster"]),
        (202, &json!("queued")),
        "{body}"
    );
    // Once on n2 means the whole publication was delivered there (a stranger's copy too).
    for c in [&mut bob, &mut bob_again] {
        assert_eq!(c.expect("list").await, json!(2));
    }

    // A user-type broadcast in t1 reaches every t1 session on both nodes exactly once, and
    // nothing in t2; the marker (to everyone, every tenant) proves nothing else is queued: no
    // second copy of the list, nothing of it for the stranger in t2.
    let (status, _) = n2
        .push(json!({"to": {"user_type": 2}, "type": "news", "content": "t1 only", "tenant_id": "t1"}))
        .await;
    assert_eq!(status, 202);
    // The marker takes the same path as the news (published by n2), so it arrives after it.
    let (status, _) = n2
        .push(json!({"to": {"everyone": true}, "type": "marker", "content": 1}))
        .await;
    assert_eq!(status, 202);
    for (name, c, news, lists) in [
        ("alice", &mut alice, 1, 0),
        ("bob", &mut bob, 1, 0),
        ("bob again", &mut bob_again, 1, 0),
        ("stranger", &mut stranger, 0, 0),
    ] {
        let got = c.until_marker(1).await;
        let count = |t: &str| got.iter().filter(|v| v["type"] == t).count();
        assert_eq!(
            (count("news"), count("list")),
            (news, lists),
            "{name}: {got:?}"
        );
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
async fn nats_presence_is_cluster_wide_and_a_killed_node_drops_out_within_the_ttl() {
    if !require_nats() {
        return;
    }
    let nats = NatsServer::start().await;
    let ttl = [("SWITCHBOARD_CLUSTER__PRESENCE_TTL_SECS", "3")];
    let n1 = Node::start_nats("p1", &nats.url(), &["echo"], &ttl).await;
    let mut n2 = Node::start_nats("p2", &nats.url(), &["echo"], &ttl).await;
    let n3 = Node::start_nats("p3", &nats.url(), &["echo"], &ttl).await;
    let _a = n1.connect("a", 1, Some("t")).await;
    let _b = n2.connect("b", 1, Some("t")).await;
    let _other_tenant = n2.connect("b", 1, Some("u")).await;
    let _b2 = n3.connect("b", 1, Some("t")).await;
    let c = n3.connect("c", 1, Some("t")).await;

    for node in [&n1, &n2, &n3] {
        eventually(PATIENCE, "every node sees every user", async || {
            (users_of_t(node).await == json!(["a", "b", "c"])).then_some(())
        })
        .await;
        let (_, body) = node.get("/api/v1/presence/users/1/b?tenant_id=t").await;
        assert_eq!(body, json!({"online": true, "sessions": 2}));
        // Without a tenant: every tenant.
        let (_, body) = node.get("/api/v1/presence/users/1/b").await;
        assert_eq!(body, json!({"online": true, "sessions": 3}));
    }
    let (_, body) = n1.get("/api/v1/presence/users?user_type=1").await;
    assert_eq!(body["users"], json!(["a", "b", "c"]));
    let (_, body) = n1
        .get("/api/v1/presence/users?user_type=1&tenant_id=u")
        .await;
    assert_eq!(body["users"], json!(["b"]));

    // A user who leaves drops out everywhere at the next message, not at the TTL.
    c.close().await;
    let left = Instant::now();
    eventually(PATIENCE, "c to be gone on p1", async || {
        (users_of_t(&n1).await == json!(["a", "b"])).then_some(())
    })
    .await;
    let gone = left.elapsed();
    eprintln!("a closed session left nats presence after {gone:?}");
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
    eprintln!("killed node left nats presence after {took:?} (TTL 3 s)");
    assert!(
        took <= Duration::from_secs(5),
        "within the TTL plus a refresh: {took:?}"
    );
    let (_, body) = n1
        .get("/api/v1/presence/users?user_type=1&tenant_id=u")
        .await;
    assert_eq!(body["users"], json!([]), "b's other tenant went with p2");
    assert_eq!(users_of_t(&n1).await, json!(["a", "b"]), "b is still on p3");
}

#[tokio::test]
async fn nats_presence_a_node_that_joins_late_learns_the_others_at_once() {
    if !require_nats() {
        return;
    }
    let nats = NatsServer::start().await;
    // Full snapshots only every 20 s: a late node must not wait for one.
    let ttl = [("SWITCHBOARD_CLUSTER__PRESENCE_TTL_SECS", "60")];
    let n1 = Node::start_nats("l1", &nats.url(), &["echo"], &ttl).await;
    let mut n2 = Node::start_nats("l2", &nats.url(), &["echo"], &ttl).await;
    let _a = n1.connect("a", 1, Some("t")).await;
    let _b = n2.connect("b", 1, Some("t")).await;
    eventually(PATIENCE, "l1 to see b", async || {
        (users_of_t(&n1).await == json!(["a", "b"])).then_some(())
    })
    .await;
    let n3 = Node::start_nats("l3", &nats.url(), &["echo"], &ttl).await;
    let joined = Instant::now();
    eventually(PATIENCE, "the late node to see a and b", async || {
        (users_of_t(&n3).await == json!(["a", "b"])).then_some(())
    })
    .await;
    let took = joined.elapsed();
    eprintln!("a late node learned nats presence {took:?} after it was ready");
    assert!(
        took < Duration::from_secs(5),
        "asked for, not waited for (snapshots every 20 s): {took:?}"
    );

    // A node that stops leaves presence at once, not after the TTL (60 s).
    n2.terminate(Duration::from_secs(10)).await;
    let stopped = Instant::now();
    eventually(PATIENCE, "the stopped node's user to be gone", async || {
        (users_of_t(&n3).await == json!(["a"])).then_some(())
    })
    .await;
    let took = stopped.elapsed();
    eprintln!("a stopped node left nats presence {took:?} after it exited");
    assert!(
        took < Duration::from_secs(2),
        "well within the TTL: {took:?}"
    );
}

#[tokio::test]
async fn nats_restart_local_delivery_continues_and_cross_node_resumes() {
    if !require_nats() {
        return;
    }
    let mut nats = NatsServer::start().await;
    let n1 = Node::start_nats("r1", &nats.url(), &["echo"], &[]).await;
    let n2 = Node::start_nats("r2", &nats.url(), &["echo"], &[]).await;
    let mut local = n1.connect("1", 1, None).await;
    let mut remote = n2.connect("2", 1, None).await;
    n1.wait_sees(1, "2", None, 1).await;
    let to_remote =
        json!({"to": {"user": {"user_type": 1, "user_id": "2"}}, "type": "x", "content": "before"});
    n1.push(to_remote.clone()).await;
    assert_eq!(remote.expect("x").await, json!("before"));

    nats.kill();
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
    eprintln!("nats killed: broker down after {:?}", killed.elapsed());
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

    // A node started while NATS is down starts anyway, and joins when NATS is back.
    let n3 = Node::spawn_nats("r3", &nats.url(), &["echo"]);
    eventually(
        PATIENCE * 6,
        "the late node to serve, not ready",
        async || {
            // Not listening yet at first: a refused connection is tried again.
            let r = reqwest::get(n3.url("/readyz")).await.ok()?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.ok()?;
            (status == 503 && body["broker"] == "down").then_some(())
        },
    )
    .await;

    nats.restart().await;
    let restarted = Instant::now();
    // Cross-node delivery resumes without restarting the hosts.
    eventually(
        Duration::from_secs(15),
        "both brokers to reconnect",
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
        "nats down for {:?}; cross-node delivery resumed {:?} after restart",
        restarted - killed,
        restarted.elapsed()
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
    // Presence across nodes comes back too (the restarted server holds nothing: the nodes
    // exchange their users again on reconnecting).
    eventually(PATIENCE, "presence across nodes again", async || {
        let (_, body) = n1.get("/api/v1/presence/users?user_type=1").await;
        (body["users"] == json!(["1", "2", "3"])).then_some(())
    })
    .await;
}

#[tokio::test]
async fn nats_that_stops_answering_marks_the_broker_down_until_it_answers_again() {
    if !require_nats() {
        return;
    }
    let nats = NatsServer::start().await;
    let n1 = Node::start_nats("s1", &nats.url(), &["echo"], &[]).await;
    let n2 = Node::start_nats("s2", &nats.url(), &["echo"], &[]).await;
    let mut remote = n2.connect("2", 1, None).await;
    n1.wait_sees(1, "2", None, 1).await;

    // Stopped, not killed: connections stay open, nothing is answered.
    nats.signal("STOP");
    let stopped = Instant::now();
    eventually(
        PATIENCE,
        "readiness to report the broker down",
        async || {
            let (status, body) = n1.get("/readyz").await;
            (status == 503 && body["broker"] == "down").then_some(())
        },
    )
    .await;
    let noticed = stopped.elapsed();
    eprintln!("an unanswering nats noticed after {noticed:?}");
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

    nats.signal("CONT");
    eventually(
        Duration::from_secs(15),
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
