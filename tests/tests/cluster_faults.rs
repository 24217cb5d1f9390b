//! Each broker (`redis`, `redis-cluster`, `nats`, `rabbitmq`; every case runs on each, see
//! [`for_each_broker`]) going away and coming back while two or three hosts use it: killed
//! and restarted (of a Redis Cluster, the master holding the cluster's presence; the
//! machine's RabbitMQ, which a test cannot restart, is cut off by a proxy), stopped so that it
//! no longer answers, and killed under load. Local delivery continues, every copy for other
//! nodes is refused and said so (`cluster: "dropped"`) and counted, and cross-node delivery
//! resumes by itself.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use switchboard_tests::{
    PATIENCE,
    cluster::{self, Fabric, Node},
    eventually, for_each_broker,
};

for_each_broker!(
    restart_local_delivery_continues_and_cross_node_resumes,
    broker_that_stops_answering_is_down_until_it_answers_again,
    killed_under_load_loses_only_what_was_in_flight_and_recovers,
);

/// Waits until `node` reports the broker down on `/readyz`.
async fn wait_down(node: &Node) {
    eventually(
        PATIENCE,
        "readiness to report the broker down",
        async || {
            let (status, body) = node.get("/readyz").await;
            (status == 503 && body["broker"] == "down").then_some(())
        },
    )
    .await;
}

/// Waits until every node in `nodes` reports the broker up.
async fn wait_up(nodes: &[&Node]) {
    eventually(
        Duration::from_secs(20),
        "every node's broker to be up again",
        async || {
            for node in nodes {
                let (status, body) = node.get("/readyz").await;
                if status != 200 || body["broker"] != "up" {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// Pushes `kind` from `from` to user `to` (type 1) until `client` receives it.
async fn until_received(from: &Node, to: &str, client: &mut switchboard_tests::client::Client) {
    let push =
        json!({"to": {"user": {"user_type": 1, "user_id": to}}, "type": "resumed", "content": to});
    let what = format!("a push from {} to reach user {to}", from.node_id);
    eventually(PATIENCE, &what, async || {
        from.push(push.clone()).await;
        while let Some(v) = client.next_json_within(Duration::from_millis(500)).await {
            if v["type"] == "resumed" {
                return Some(());
            }
        }
        None
    })
    .await;
}

async fn restart_local_delivery_continues_and_cross_node_resumes(broker: &str) {
    let mut fabric = Fabric::start(broker).await;
    let n1 = fabric.node("r1", &["echo"], &[]).await;
    let n2 = fabric.node("r2", &["echo"], &[]).await;
    let mut local = n1.connect("1", 1, None).await;
    let mut remote = n2.connect("2", 1, None).await;
    n1.wait_sees(1, "2", None, 1).await;
    let to_remote =
        json!({"to": {"user": {"user_type": 1, "user_id": "2"}}, "type": "x", "content": "before"});
    n1.push(to_remote.clone()).await;
    assert_eq!(remote.expect("x").await, json!("before"));

    fabric.outage();
    let killed = Instant::now();
    wait_down(&n1).await;
    eprintln!("{broker} killed: broker down after {:?}", killed.elapsed());
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

    // A node started while the broker is down starts anyway, and joins when it is back.
    let n3 = fabric.spawn_node("r3", &["echo"], &[]);
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
    if broker == "rabbitmq" {
        eventually(PATIENCE, "the late node to log why", async || {
            n3.log()
                .contains("rabbitmq broker: cannot connect")
                .then_some(())
        })
        .await;
    }

    fabric.recover().await;
    let restarted = Instant::now();
    // Cross-node delivery resumes without restarting the hosts.
    wait_up(&[&n1, &n2]).await;
    until_received(&n1, "2", &mut remote).await;
    eprintln!(
        "{broker} down for {:?}; cross-node delivery resumed {:?} after restart",
        restarted - killed,
        restarted.elapsed()
    );
    n3.wait_ready().await;
    let mut third = n3.connect("3", 1, None).await;
    n1.wait_sees(1, "3", None, 1).await;
    until_received(&n1, "3", &mut third).await;
    // Presence across nodes comes back too (a restarted server may hold nothing: the nodes
    // write or exchange their users again).
    eventually(PATIENCE, "presence across nodes again", async || {
        let (_, body) = n1.get("/api/v1/presence/users?user_type=1").await;
        (body["users"] == json!(["1", "2", "3"])).then_some(())
    })
    .await;
}

async fn broker_that_stops_answering_is_down_until_it_answers_again(broker: &str) {
    let fabric = Fabric::start(broker).await;
    let n1 = fabric.node("s1", &["echo"], &[]).await;
    let n2 = fabric.node("s2", &["echo"], &[]).await;
    let mut remote = n2.connect("2", 1, None).await;
    n1.wait_sees(1, "2", None, 1).await;

    // Stopped, not killed: connections stay open, nothing is answered.
    fabric.pause(true);
    let stopped = Instant::now();
    wait_down(&n1).await;
    let noticed = stopped.elapsed();
    eprintln!("an unanswering {broker} noticed after {noticed:?}");
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

    fabric.pause(false);
    wait_up(&[&n1, &n2]).await;
    until_received(&n1, "2", &mut remote).await;
}

async fn killed_under_load_loses_only_what_was_in_flight_and_recovers(broker: &str) {
    let mut fabric = Fabric::start(broker).await;
    let n1 = fabric.node("q1", &["echo"], &[]).await;
    let n2 = fabric.node("q2", &["echo"], &[]).await;
    let mut local = n1.connect("l", 1, None).await;
    let mut remote = n2.connect("r", 1, None).await;
    n1.wait_sees(1, "r", None, 1).await;

    // One pusher on n1 alternates a push to the local user and one to the remote user, and
    // records what n1 said of each remote push.
    #[derive(Default)]
    struct Tally {
        local: u64,
        queued: Vec<u64>,
        dropped: u64,
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(parking_lot::Mutex::new(Tally::default()));
    let load = tokio::spawn({
        let (stop, tally, base) = (stop.clone(), tally.clone(), n1.url(""));
        async move {
            let http = reqwest::Client::new();
            let push = async |to: &str, seq: u64| {
                let body = json!({"to": {"user": {"user_type": 1, "user_id": to}}, "type": "load", "content": seq});
                let (status, response) = cluster::push(&http, &base, body).await;
                assert_eq!(status, 202, "{response}");
                response
            };
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let l = push("l", seq).await;
                assert_eq!(l["local_deliveries"], json!(1));
                tally.lock().local = seq;
                let r = push("r", seq).await;
                let mut t = tally.lock();
                match r["cluster"].as_str() {
                    Some("queued") => t.queued.push(seq),
                    Some("dropped") => t.dropped += 1,
                    other => panic!("unexpected cluster leg {other:?}"),
                }
            }
        }
    });
    // The remote reader records what arrived, in order.
    let received = Arc::new(parking_lot::Mutex::new(Vec::<u64>::new()));
    let reader = tokio::spawn({
        let received = received.clone();
        async move {
            loop {
                let v = remote.next_json().await;
                let seq = v["content"].as_u64().unwrap();
                received.lock().push(seq);
            }
        }
    });
    // The local reader checks that local pushes arrive in order, none missing.
    let local_seen = Arc::new(AtomicU64::new(0));
    let local_reader = tokio::spawn({
        let seen = local_seen.clone();
        async move {
            loop {
                let v = local.next_json().await;
                let expected = seen.load(Ordering::Relaxed) + 1;
                assert_eq!(
                    v["content"].as_u64(),
                    Some(expected),
                    "local pushes in order"
                );
                seen.store(expected, Ordering::Relaxed);
            }
        }
    });
    let queued_count = || tally.lock().queued.len();
    eventually(PATIENCE, "remote load to flow", async || {
        (received.lock().len() > 50).then_some(())
    })
    .await;

    let last_before_kill = tally.lock().queued.last().copied().unwrap_or(0);
    let received_before_kill = received.lock().iter().copied().max().unwrap_or(0);
    fabric.outage();
    let killed = Instant::now();
    eventually(PATIENCE, "n1 to see the broker down", async || {
        let (status, _) = n1.get("/readyz").await;
        (status == 503).then_some(())
    })
    .await;
    let detected = killed.elapsed();
    // Down long enough for pushes to be refused while it is out.
    let dropped_before = tally.lock().dropped;
    eventually(PATIENCE, "pushes refused while down", async || {
        (tally.lock().dropped > dropped_before + 20).then_some(())
    })
    .await;
    fabric.recover().await;
    let restarted = Instant::now();
    let queued_at_restart = queued_count();
    // Recovered: a push queued after the restart has arrived.
    let recovered_seq = eventually(
        Duration::from_secs(20),
        "cross-node delivery to resume",
        async || {
            let after: Vec<u64> = tally.lock().queued[queued_at_restart..].to_vec();
            let got = received.lock();
            got.iter().find(|seq| after.contains(seq)).copied()
        },
    )
    .await;
    let recovered = restarted.elapsed();
    // Then a steady stretch with nothing lost.
    let steady_from = queued_count();
    eventually(PATIENCE, "a steady stretch after recovery", async || {
        (queued_count() > steady_from + 200).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let t = std::mem::take(&mut *tally.lock());
    let last_queued = *t.queued.last().unwrap();
    eventually(PATIENCE, "the last queued push to arrive", async || {
        received.lock().contains(&last_queued).then_some(())
    })
    .await;
    reader.abort();
    // Local delivery never stopped: every local push arrived, in order.
    eventually(PATIENCE, "every local push to arrive", async || {
        (local_seen.load(Ordering::Relaxed) == t.local).then_some(())
    })
    .await;
    assert!(!local_reader.is_finished(), "the local reader saw a gap");
    local_reader.abort();
    let got: std::collections::BTreeSet<u64> = received.lock().iter().copied().collect();
    let lost: Vec<u64> = t
        .queued
        .iter()
        .copied()
        .filter(|s| !got.contains(s))
        .collect();
    let lost_after_recovery = t.queued[steady_from..]
        .iter()
        .filter(|s| !got.contains(s))
        .count();
    eprintln!(
        "{broker} killed under load: down detected in {detected:?}; {} local pushes, 0 lost; \
         remote: {} queued, {} refused with cluster=dropped while down, {} queued but lost \
         (seq {:?}..={:?}, between the kill and n2 subscribing again); resumed {recovered:?} \
         after restart (first delivered seq {recovered_seq}); 0 lost of {} after recovery",
        t.local,
        t.queued.len(),
        t.dropped,
        lost.len(),
        lost.first(),
        lost.last(),
        t.queued.len() - steady_from,
    );
    assert_eq!(lost_after_recovery, 0, "nothing lost once recovered");
    // Nothing older than what had come through before the kill is missing: no gap.
    assert!(
        lost.iter().all(|s| *s > received_before_kill),
        "a push before the last one received was lost: {lost:?} (last received before the kill {received_before_kill})"
    );
    // In flight at the kill: the few pushes after the last one known to be queued before it.
    // RabbitMQ also loses whatever backlog sat in the node's queue unread (the queue goes
    // with the connection), however far the reader had fallen behind.
    if broker != "rabbitmq" {
        assert!(
            lost.iter().all(|s| *s + 10 > last_before_kill),
            "a push long before the kill was lost: {lost:?} (last queued before the kill {last_before_kill})"
        );
    }
}
