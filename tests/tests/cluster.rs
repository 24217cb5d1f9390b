//! Several host processes joined through each broker (`redis`, `redis-cluster`, `nats`,
//! `rabbitmq`; every case runs on each, see [`for_each_broker`]): cross-node delivery within
//! tenants and cluster-wide presence with a killed node. Then what only one broker has: NATS
//! presence for a late node, RabbitMQ with presence in Redis and publishes it refuses, and the
//! layout of a Redis Cluster (sharded channels, presence in one slot). Brokers going away:
//! `cluster_faults.rs`; targeted routing: `routing.rs`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_tests::{
    PATIENCE,
    cluster::{Fabric, Node, Rabbit, RedisServer, require_rabbitmq, require_redis},
    eventually, for_each_broker, metric,
    redis_cluster::{MASTERS, RedisCluster},
};

for_each_broker!(
    delivery_crosses_nodes_exactly_once_within_tenants,
    presence_is_cluster_wide_and_a_killed_node_drops_out_within_the_ttl,
);

async fn delivery_crosses_nodes_exactly_once_within_tenants(broker: &str) {
    let fabric = Fabric::start(broker).await;
    let n1 = fabric.node("n1", &["demo-chat", "echo"], &[]).await;
    let n2 = fabric.node("n2", &["demo-chat", "echo"], &[]).await;
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
        "cross-node chat over {broker} delivered in {:?}",
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

async fn presence_is_cluster_wide_and_a_killed_node_drops_out_within_the_ttl(broker: &str) {
    let fabric = Fabric::start(broker).await;
    let ttl = [("SWITCHBOARD_CLUSTER__PRESENCE_TTL_SECS", "3")];
    let n1 = fabric.node("p1", &["echo"], &ttl).await;
    let mut n2 = fabric.node("p2", &["echo"], &ttl).await;
    let n3 = fabric.node("p3", &["echo"], &ttl).await;
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
        // A user's sessions on several nodes arrive separately (b's on n3 may come after
        // the user list is complete).
        for (path, sessions) in [
            ("/api/v1/presence/users/1/b?tenant_id=t", 2),
            // Without a tenant: every tenant.
            ("/api/v1/presence/users/1/b", 3),
        ] {
            eventually(PATIENCE, "every node counts b's sessions", async || {
                let (_, body) = node.get(path).await;
                (body == json!({"online": true, "sessions": sessions})).then_some(())
            })
            .await;
        }
    }
    let (_, body) = n1.get("/api/v1/presence/users?user_type=1").await;
    assert_eq!(body["users"], json!(["a", "b", "c"]));
    let (_, body) = n1
        .get("/api/v1/presence/users?user_type=1&tenant_id=u")
        .await;
    assert_eq!(body["users"], json!(["b"]));

    // A user who leaves drops out everywhere at the next write or heartbeat, not at the TTL.
    c.close().await;
    let left = Instant::now();
    eventually(PATIENCE, "c to be gone on p1", async || {
        (users_of_t(&n1).await == json!(["a", "b"])).then_some(())
    })
    .await;
    let gone = left.elapsed();
    eprintln!("a closed session left {broker} presence after {gone:?}");
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
    eprintln!("killed node left {broker} presence after {took:?} (TTL 3 s)");
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
    let fabric = Fabric::start("nats").await;
    // Full snapshots only every 20 s: a late node must not wait for one.
    let ttl = [("SWITCHBOARD_CLUSTER__PRESENCE_TTL_SECS", "60")];
    let n1 = fabric.node("l1", &["echo"], &ttl).await;
    let mut n2 = fabric.node("l2", &["echo"], &ttl).await;
    let _a = n1.connect("a", 1, Some("t")).await;
    let _b = n2.connect("b", 1, Some("t")).await;
    eventually(PATIENCE, "l1 to see b", async || {
        (users_of_t(&n1).await == json!(["a", "b"])).then_some(())
    })
    .await;
    let n3 = fabric.node("l3", &["echo"], &ttl).await;
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

/// On a Redis Cluster, each node's channel is a sharded channel on the master that owns its
/// slot (so targeted deliveries spread over the masters), every presence key of the cluster
/// shares the slot of the `{switchboard}` hash tag, and plugin state is shared by the nodes.
#[tokio::test]
async fn redis_cluster_nodes_listen_on_sharded_channels_and_presence_keeps_to_one_slot() {
    if !require_redis() {
        return;
    }
    let cluster = RedisCluster::start().await;
    let fabric_url = cluster.url();
    let ids = ["shard-a", "shard-b", "shard-c", "shard-d"];
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(Node::start(id, &fabric_url, &["kv"], &[]).await);
    }
    let _user = nodes[0].connect("u", 1, Some("t")).await;
    nodes[1].wait_sees(1, "u", Some("t"), 1).await;

    // Every node's own channel is subscribed on the master that owns it, and only there.
    let mut owners = std::collections::BTreeSet::new();
    for id in ids {
        let channel = format!("switchboard:node:{id}");
        let owner = cluster.owner_of(&channel);
        owners.insert(owner);
        for master in 0..MASTERS {
            let listed = cluster
                .cli(master, &["PUBSUB", "SHARDCHANNELS", &channel])
                .contains(&channel);
            assert_eq!(listed, master == owner, "{channel} on master {master}");
        }
    }
    eprintln!("4 node channels on {} of {MASTERS} masters", owners.len());
    assert!(owners.len() > 1, "node channels spread over the masters");
    let broadcast = cluster.owner_of("switchboard:deliveries");
    let subscribers = cluster.cli(
        broadcast,
        &["PUBSUB", "SHARDNUMSUB", "switchboard:deliveries"],
    );
    assert_eq!(
        subscribers.lines().nth(1),
        Some("4"),
        "every node reads the broadcast channel: {subscribers}"
    );

    // Presence: every key on the master of `{switchboard}`, none elsewhere.
    let home = cluster.owner_of("{switchboard}");
    let keys = cluster.cli(home, &["KEYS", "*"]);
    assert!(
        keys.contains("{switchboard}:presence:shard-a:") && keys.contains("{switchboard}:nodes"),
        "{keys}"
    );
    for master in (0..MASTERS).filter(|m| *m != home) {
        assert_eq!(cluster.cli(master, &["KEYS", "*presence*"]), "");
    }

    // Plugin state written through one node is read through another.
    let mut writer = nodes[0].connect("1", 2, Some("t1")).await;
    let mut reader = nodes[3].connect("2", 2, Some("t1")).await;
    writer
        .send("kv", json!({"op": "set", "key": "k", "value": "v"}))
        .await;
    assert_eq!(writer.expect("kv-result").await, json!({"ok": null}));
    reader.send("kv", json!({"op": "get", "key": "k"})).await;
    assert_eq!(reader.expect("kv-result").await["ok"], "v");
}
