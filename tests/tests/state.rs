//! Contract versions side by side, and plugin key-value state: in memory on the local
//! broker, in a real Redis on the Redis broker, scoped per tenant and per plugin, bounded by
//! quotas that answer with error values, and a Redis outage that is an error value too.

use serde_json::{Value, json};
use switchboard_tests::{
    PATIENCE,
    client::Client,
    cluster::{Node, RedisServer, require_redis},
    eventually,
    host::TestHost,
};

/// A listener built against `switchboard:plugin@0.1.0` before 0.2.0 existed (source and
/// provenance in `tests/fixtures/contract-0.1.0-echo/`).
const LEGACY: &[u8] = include_bytes!("../fixtures/contract-0.1.0-echo.wasm");

async fn kv(c: &mut Client, request: Value) -> Value {
    c.send("kv", request).await;
    c.expect("kv-result").await
}

fn plugin<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

#[tokio::test]
async fn a_0_1_0_component_serves_beside_0_2_0_ones() {
    let host = TestHost::start(&["echo", "kv"]).await;
    host.install_plugin("legacy-echo", LEGACY);
    let list = eventually(PATIENCE, "the 0.1.0 component to load", async || {
        let list = host.plugins().await;
        plugin(&list, "legacy-echo").is_some().then_some(list)
    })
    .await;
    assert_eq!(plugin(&list, "legacy-echo").unwrap()["contract"], "0.1.0");
    assert_eq!(plugin(&list, "echo").unwrap()["contract"], "0.2.0");
    assert_eq!(plugin(&list, "kv").unwrap()["contract"], "0.2.0");

    let mut c = host.connect("1", 2, Some("t1")).await;
    c.send("legacy-echo", json!({"a": [1, 2]})).await;
    assert_eq!(c.expect("legacy-echo").await, json!({"a": [1, 2]}));
    // Presence, config and logging through the 0.1.0 imports.
    c.send("legacy-info", json!({})).await;
    let info = c.expect("legacy-info").await;
    assert_eq!(info["online"], json!(["1"]), "{info}");
    assert_eq!(info["me_online"], true);
    assert_eq!(info["greeting"], Value::Null);
    // The 0.2.0 ones, in the same host.
    c.send("echo", json!({"b": 2})).await;
    assert_eq!(c.expect("echo").await, json!({"b": 2}));
    let set = kv(&mut c, json!({"op": "set", "key": "k", "value": "v"})).await;
    assert_eq!(set, json!({"ok": null}));
    assert_eq!(
        kv(&mut c, json!({"op": "get", "key": "k"})).await["ok"],
        "v"
    );
    let list = host.plugins().await;
    assert_eq!(plugin(&list, "legacy-echo").unwrap()["faults"], 0);
}

#[tokio::test]
async fn state_is_scoped_per_tenant_and_per_plugin() {
    let host = TestHost::start(&["kv", "rooms"]).await;
    let mut a = host.connect("1", 2, Some("a")).await;
    let mut b = host.connect("1", 2, Some("b")).await;
    let mut none = host.connect("1", 2, None).await;
    kv(&mut a, json!({"op": "set", "key": "k", "value": "of a"})).await;
    assert_eq!(
        kv(&mut b, json!({"op": "get", "key": "k"})).await["ok"],
        Value::Null
    );
    assert_eq!(
        kv(&mut none, json!({"op": "get", "key": "k"})).await["ok"],
        Value::Null
    );
    kv(&mut b, json!({"op": "set", "key": "k", "value": "of b"})).await;
    assert_eq!(
        kv(&mut a, json!({"op": "get", "key": "k"})).await["ok"],
        "of a"
    );
    assert_eq!(
        kv(&mut b, json!({"op": "get", "key": "k"})).await["ok"],
        "of b"
    );
    // Another plugin's bucket of the same name is not this plugin's.
    a.send("room-join", json!({"room": "r1"})).await;
    a.expect("room-joined").await;
    let rooms = kv(
        &mut a,
        json!({"op": "list", "prefix": "", "bucket": "rooms"}),
    )
    .await;
    assert_eq!(rooms["ok"], json!([]), "{rooms}");
}

/// Every operation of the standard interfaces and ours, on one backend.
async fn operations_work(c: &mut Client) {
    assert_eq!(
        kv(c, json!({"op": "incr", "key": "n", "delta": 5})).await["ok"],
        5
    );
    assert_eq!(
        kv(c, json!({"op": "incr", "key": "n", "delta": -7})).await["ok"],
        -2
    );
    kv(c, json!({"op": "set", "key": "word", "value": "abc"})).await;
    let refused = kv(c, json!({"op": "incr", "key": "word", "delta": 1})).await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("not a decimal integer"),
        "{refused}"
    );
    for key in ["p:1", "p:2", "q:1"] {
        kv(c, json!({"op": "set", "key": key, "value": key})).await;
    }
    assert_eq!(
        kv(c, json!({"op": "list", "prefix": "p:"})).await["ok"],
        json!(["p:1", "p:2"])
    );
    kv(c, json!({"op": "delete", "key": "p:1"})).await;
    assert_eq!(
        kv(c, json!({"op": "list", "prefix": "p:"})).await["ok"],
        json!(["p:2"])
    );
    let cas = kv(c, json!({"op": "cas", "key": "c", "to": "mine"})).await;
    assert_eq!(
        cas["ok"],
        json!({"first": "cas-failed", "second": "ok"}),
        "{cas}"
    );
    assert_eq!(kv(c, json!({"op": "get", "key": "c"})).await["ok"], "mine");
    let batch = kv(
        c,
        json!({"op": "batch", "pairs": [["b1", "x"], ["b2", "y"]]}),
    )
    .await;
    assert_eq!(batch["ok"], json!(["x", "y"]));
    // A TTL: the key is there, then gone.
    kv(
        c,
        json!({"op": "set", "key": "brief", "value": "v", "ttl_ms": 150}),
    )
    .await;
    assert_eq!(kv(c, json!({"op": "get", "key": "brief"})).await["ok"], "v");
    eventually(PATIENCE, "a key with a TTL to expire", async || {
        kv(c, json!({"op": "get", "key": "brief"})).await["ok"]
            .is_null()
            .then_some(())
    })
    .await;
    let bad = kv(
        c,
        json!({"op": "set", "key": "x".repeat(2000), "value": "v"}),
    )
    .await;
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("keys are 1 to 1024 bytes"),
        "{bad}"
    );
}

#[tokio::test]
async fn every_operation_works_in_memory() {
    let host = TestHost::start_with(&["kv"], |config| {
        config.server.messages_burst = 1000;
    })
    .await;
    let mut c = host.connect("1", 2, Some("t")).await;
    operations_work(&mut c).await;
}

#[tokio::test]
async fn quotas_answer_with_errors_not_faults() {
    let host = TestHost::start_with(&["kv"], |config| {
        config.plugins.state_max_keys = 5;
        config.plugins.state_max_bytes = 4096;
    })
    .await;
    let mut a = host.connect("1", 2, Some("a")).await;
    let mut b = host.connect("1", 2, Some("b")).await;
    let fill = kv(
        &mut a,
        json!({"op": "fill", "prefix": "k", "n": 100, "size": 10}),
    )
    .await;
    assert_eq!(fill["ok"]["set"], 5, "{fill}");
    let error = fill["ok"]["error"].as_str().unwrap();
    assert!(error.contains("state_max_keys"), "{error}");
    // The quota is the plugin's, every tenant together.
    let other = kv(&mut b, json!({"op": "set", "key": "x", "value": "v"})).await;
    assert!(
        other["error"].as_str().unwrap().contains("state_max_keys"),
        "{other}"
    );
    // Freeing a key makes room; a value past the bytes quota is refused.
    kv(&mut a, json!({"op": "delete", "key": "k0"})).await;
    let big = kv(
        &mut b,
        json!({"op": "fill", "prefix": "big", "n": 1, "size": 5000}),
    )
    .await;
    assert!(
        big["ok"]["error"]
            .as_str()
            .unwrap()
            .contains("state_max_bytes"),
        "{big}"
    );
    assert_eq!(
        kv(&mut b, json!({"op": "set", "key": "x", "value": "v"})).await["ok"],
        Value::Null
    );
    let list = host.plugins().await;
    let kv_status = plugin(&list, "kv").unwrap();
    assert_eq!(kv_status["faults"], 0, "{kv_status}");
    let metrics = host.metrics().await;
    let errors = switchboard_tests::metric(
        &metrics,
        "switchboard_plugin_kv_errors_total{plugin=\"kv\"}",
    );
    assert!(errors.is_some_and(|n| n >= 3.0), "{metrics}");
}

#[tokio::test]
async fn redis_state_is_shared_by_nodes_and_an_outage_is_an_error_value() {
    if !require_redis() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let burst = [("SWITCHBOARD_SERVER__MESSAGES_BURST", "1000")];
    let a = Node::start("state-a", &url, &["kv"], &burst).await;
    let b = Node::start("state-b", &url, &["kv"], &burst).await;
    let mut on_a = a.connect("1", 2, Some("t")).await;
    let mut on_b = b.connect("2", 2, Some("t")).await;
    operations_work(&mut on_a).await;
    kv(
        &mut on_a,
        json!({"op": "set", "key": "shared", "value": "from a"}),
    )
    .await;
    assert_eq!(
        kv(&mut on_b, json!({"op": "get", "key": "shared"})).await["ok"],
        "from a"
    );
    assert_eq!(
        kv(&mut on_b, json!({"op": "incr", "key": "n", "delta": 1})).await["ok"],
        -1
    );

    redis.kill();
    let down = kv(&mut on_a, json!({"op": "get", "key": "shared"})).await;
    assert!(
        down["error"]
            .as_str()
            .unwrap()
            .contains("state store unavailable"),
        "{down}"
    );
    redis.restart().await;
    // The restarted Redis is empty (no persistence): the store answers again.
    eventually(
        PATIENCE,
        "state to answer after Redis is back",
        async || {
            let r = kv(
                &mut on_a,
                json!({"op": "set", "key": "again", "value": "v"}),
            )
            .await;
            r["error"].is_null().then_some(())
        },
    )
    .await;
    // Node B learns that Redis is back on its own next operations.
    eventually(
        PATIENCE,
        "node B to read through the restarted Redis",
        async || {
            let r = kv(&mut on_b, json!({"op": "get", "key": "again"})).await;
            (r["ok"] == "v").then_some(())
        },
    )
    .await;
    let (_, list) = a.get("/api/v1/plugins").await;
    assert_eq!(plugin(&list, "kv").unwrap()["faults"], 0, "{list}");
}

/// Median round trip of `n` sequential `kv` requests on one connection.
async fn median_round_trip(c: &mut Client, request: Value, n: usize) -> std::time::Duration {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = std::time::Instant::now();
        let answer = kv(c, request.clone()).await;
        took.push(started.elapsed());
        assert!(answer["error"].is_null(), "{answer}");
    }
    took.sort();
    took[n / 2]
}

/// What one key-value operation adds to a call: the median round trip of a `kv` request
/// doing a get or a set, minus that of one doing nothing, over a real WebSocket, on the
/// memory store and on a real Redis on loopback.
#[tokio::test]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn measure_kv_costs() {
    const N: usize = 2000;
    let value = "v".repeat(100);
    let requests = [
        ("none", json!({"op": "none"})),
        ("get", json!({"op": "get", "key": "k"})),
        ("set", json!({"op": "set", "key": "k", "value": value})),
    ];
    let fast = [
        ("SWITCHBOARD_SERVER__MESSAGES_PER_SEC", "100000"),
        ("SWITCHBOARD_SERVER__MESSAGES_BURST", "100000"),
    ];
    let redis = match require_redis() {
        true => Some(RedisServer::start().await),
        false => None,
    };
    let mut stores = vec![("memory", Node::start_local(&["kv"], &fast).await)];
    if let Some(redis) = &redis {
        let node = Node::start("measure", &redis.url(), &["kv"], &fast).await;
        stores.push(("redis", node));
    }
    println!("| store | op | median round trip | added by the operation |");
    println!("|---|---|---|---|");
    for (store, node) in &stores {
        let mut c = node.connect("1", 2, Some("t")).await;
        kv(&mut c, json!({"op": "set", "key": "k", "value": value})).await;
        let mut baseline = None;
        for (op, request) in &requests {
            median_round_trip(&mut c, request.clone(), N / 10).await; // warm up
            let median = median_round_trip(&mut c, request.clone(), N).await;
            let base = *baseline.get_or_insert(median);
            println!(
                "| {store} | {op} | {:.1} µs | {:.1} µs |",
                median.as_secs_f64() * 1e6,
                (median.as_secs_f64() - base.as_secs_f64()) * 1e6
            );
        }
    }
}
