//! Listener plugins end to end, with components built from source: routing by type, every
//! sender target, tenant scoping and capabilities, hot reload under load, rejection of broken
//! files, and containment of faulty plugins.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_tests::{PATIENCE, client::Client, eventually, guests, host::TestHost};

#[tokio::test]
async fn demo_chat_single_and_group_within_the_tenant() {
    let host = TestHost::start(&["demo-chat", "echo"]).await;
    let mut alice = host.connect("1", 2, Some("t1")).await;
    let mut bob = host.connect("2", 2, Some("t1")).await;
    let mut member = host.connect("3", 1, Some("t1")).await; // another user type
    let mut other_tenant = host.connect("2", 2, Some("t2")).await; // same ids, other tenant

    alice
        .send(
            "demo-message-send",
            json!({"text": "hi bob", "toUserId": "2"}),
        )
        .await;
    let got = bob.expect("demo-message-receive").await;
    assert_eq!(
        got,
        json!({"fromUserId": 1, "text": "hi bob", "single": true})
    );

    alice
        .send(
            "demo-message-send",
            json!({"text": "hi all", "toUserId": ""}),
        )
        .await;
    for c in [&mut alice, &mut bob] {
        let got = c.expect("demo-message-receive").await;
        assert_eq!(
            got,
            json!({"fromUserId": 1, "text": "hi all", "single": false})
        );
    }
    // Neither the other user type nor the other tenant got anything: the next message each
    // receives is its own echo.
    for c in [&mut member, &mut other_tenant] {
        c.send("echo", json!("mark")).await;
        assert_eq!(c.expect("echo").await, json!("mark"));
    }
    // Bad content is the plugin's invalid-content error, answered as an error envelope.
    alice.send("demo-message-send", json!({"nope": 1})).await;
    assert_eq!(alice.expect("error").await["code"], "invalid_content");
}

async fn send_via_plugin(c: &mut Client, req: Value) {
    c.send("send", req).await;
}

#[tokio::test]
async fn every_sender_target_and_the_capabilities() {
    let host = TestHost::start(&["targets", "echo"]).await;
    let mut a = host.connect("a", 1, Some("t1")).await;
    let mut a2 = host.connect("a", 1, Some("t1")).await;
    let mut b = host.connect("b", 2, Some("t1")).await;
    let mut x = host.connect("a", 1, Some("t2")).await;

    send_via_plugin(
        &mut b,
        json!({"to": {"session": a2.session_id()}, "type": "t-session", "content": 1}),
    )
    .await;
    assert_eq!(a2.expect("t-session").await, json!(1));

    send_via_plugin(
        &mut b,
        json!({"to": {"user": {"user_type": 1, "user_id": "a"}}, "type": "t-user", "content": 2}),
    )
    .await;
    assert_eq!(a.expect("t-user").await, json!(2));
    assert_eq!(a2.expect("t-user").await, json!(2));

    send_via_plugin(
        &mut a,
        json!({"to": {"users": [{"user_type": 2, "user_id": "b"}, {"user_type": 1, "user_id": "a"}]}, "type": "t-users", "content": 3}),
    )
    .await;
    assert_eq!(b.expect("t-users").await, json!(3));
    assert_eq!(a.expect("t-users").await, json!(3));
    assert_eq!(a2.expect("t-users").await, json!(3));

    send_via_plugin(
        &mut b,
        json!({"to": {"user_type": 1}, "type": "t-type", "content": 4}),
    )
    .await;
    assert_eq!(a.expect("t-type").await, json!(4));
    assert_eq!(a2.expect("t-type").await, json!(4));

    // Without the broadcast capability, everyone is forbidden.
    send_via_plugin(
        &mut b,
        json!({"to": {"everyone": true}, "type": "t-all", "content": 5}),
    )
    .await;
    assert_eq!(b.expect("send-error").await["error"], "forbidden");
    // Without cross-tenant, send-to-tenant is forbidden.
    send_via_plugin(
        &mut b,
        json!({"to": {"user_type": 1}, "type": "t-x", "content": 6, "cross": true, "tenant": "t2"}),
    )
    .await;
    assert_eq!(b.expect("send-error").await["error"], "forbidden");
    // Content must be JSON; the plugin sends raw text it was given.
    send_via_plugin(
        &mut b,
        json!({"to": {"user_type": 1}, "type": "", "content": 7}),
    )
    .await;
    assert_eq!(b.expect("send-error").await["error"], "invalid-content");

    // Tenant t2's session with the same user id got nothing: its next message is its echo.
    x.send("echo", json!("mark")).await;
    assert_eq!(x.expect("echo").await, json!("mark"));
}

#[tokio::test]
async fn sidecar_grants_broadcast_cross_tenant_and_config() {
    let host = TestHost::start(&["echo"]).await;
    std::fs::write(
        host.plugins_dir.join("targets.toml"),
        "[capabilities]\nbroadcast = true\ncross_tenant = true\n[config]\ncolour = \"blue\"\n",
    )
    .unwrap();
    host.install_plugin("targets", &std::fs::read(guests::path("targets")).unwrap());
    let mut a = host.connect("a", 1, Some("t1")).await;
    let mut x = host.connect("x", 1, Some("t2")).await;
    eventually(PATIENCE, "targets plugin loaded", async || {
        a.send("config-get", json!({"key": "colour"})).await;
        let v = a.next_json().await;
        (v["type"] == "config-value")
            .then(|| assert_eq!(v["content"], json!({"key": "colour", "value": "blue"})))
    })
    .await;
    a.send("config-get", json!({"key": "missing"})).await;
    assert_eq!(a.expect("config-value").await["value"], Value::Null);

    // Everyone within the sender's tenant only.
    a.send(
        "send",
        json!({"to": {"everyone": true}, "type": "t-all", "content": 1}),
    )
    .await;
    assert_eq!(a.expect("t-all").await, json!(1));
    // Across tenants with the capability.
    a.send("send", json!({"to": {"user_type": 1}, "type": "t-cross", "content": 2, "cross": true, "tenant": "t2"})).await;
    assert_eq!(x.expect("t-cross").await, json!(2));
    // x never got t-all: its next message is the echo.
    x.send("echo", json!("mark")).await;
    assert_eq!(x.expect("echo").await, json!("mark"));
}

#[tokio::test]
async fn presence_import_and_lifecycle_events() {
    let host = TestHost::start(&["presence-announcer", "targets"]).await;
    let mut a = host.connect("a", 1, Some("t1")).await;
    // Everyone of the user type hears of a connection, the newcomer included.
    let ev = a.expect("presence-changed").await;
    assert_eq!(
        (ev["userId"].as_str(), ev["online"].as_bool()),
        (Some("a"), Some(true))
    );
    let mut b = host.connect("b", 1, Some("t1")).await;
    let ev = a.expect("presence-changed").await;
    assert_eq!(
        (ev["userId"].as_str(), ev["online"].as_bool()),
        (Some("b"), Some(true))
    );
    assert_eq!(b.expect("presence-changed").await["userId"], "b");
    b.send("presence", json!({"user_type": 1, "user_id": "a"}))
        .await;
    let p = b.expect("presence").await;
    assert_eq!(p["online"], json!(true));
    let mut users: Vec<String> = serde_json::from_value(p["users"].clone()).unwrap();
    users.sort();
    assert_eq!(users, vec!["a", "b"]);
    b.close().await;
    let ev = a.expect("presence-changed").await;
    assert_eq!(
        (ev["userId"].as_str(), ev["online"].as_bool()),
        (Some("b"), Some(false))
    );
}

#[tokio::test]
async fn a_type_claimed_twice_is_rejected_for_the_second_plugin() {
    let host = TestHost::start(&["echo"]).await;
    host.install_plugin(
        "clash-echo",
        &std::fs::read(guests::path("clash-echo")).unwrap(),
    );
    let status = eventually(PATIENCE, "clash reported", async || {
        let status = host.plugins().await;
        (!status["failed"].as_array().unwrap().is_empty()).then_some(status)
    })
    .await;
    let failed = status["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{status}");
    assert_eq!(failed[0]["serving_previous_version"], json!(false));
    assert!(
        failed[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("clash-echo.wasm")
    );
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("already claimed"),
        "{status}"
    );
    let mut c = host.connect("1", 1, None).await;
    c.send("echo", json!(1)).await;
    assert_eq!(c.expect("echo").await, json!(1));
}

#[tokio::test]
async fn broken_files_never_replace_a_working_version() {
    let host = TestHost::start(&["echo"]).await;
    let mut c = host.connect("1", 1, None).await;
    let bad_inputs: [(&str, Vec<u8>); 3] = [
        ("corrupt", b"\0asm this is not a component".to_vec()),
        (
            "wrong world",
            std::fs::read(guests::path("wrong-world")).unwrap(),
        ),
        (
            "truncated",
            std::fs::read(guests::path("echo")).unwrap()[..1000].to_vec(),
        ),
    ];
    for (round, (what, bytes)) in bad_inputs.into_iter().enumerate() {
        host.install_plugin("echo", &bytes);
        eventually(PATIENCE, "rejection reported", async || {
            let s = host.plugins().await;
            let failed = s["failed"].as_array().unwrap().clone();
            failed
                .iter()
                .find(|f| f["file"].as_str().unwrap().ends_with("echo.wasm"))
                .filter(|f| f["serving_previous_version"] == json!(true))
                .map(|f| f["error"].as_str().unwrap().to_owned())
        })
        .await;
        c.send("echo", json!({"round": round})).await;
        assert_eq!(
            c.expect("echo").await,
            json!({"round": round}),
            "after {what}"
        );
    }
    // A good file again clears the failure.
    host.install_plugin("echo", &std::fs::read(guests::path("echo")).unwrap());
    eventually(PATIENCE, "failure cleared", async || {
        host.plugins().await["failed"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn hot_reload_add_replace_delete_under_a_steady_stream() {
    let v1 = guests::versioned("1");
    let v2 = guests::versioned("2");
    let host = TestHost::start_with(&["echo"], |c| c.server.messages_per_sec = 100_000).await;
    let mut c = host.connect("1", 1, None).await;

    // Add.
    host.install_plugin("versioned", &v1);
    eventually(PATIENCE, "versioned plugin added", async || {
        c.send("version", json!(null)).await;
        let v = c.next_json().await;
        (v["type"] == "version").then_some(())
    })
    .await;

    // Replace 20 times while a client keeps sending; every request must be answered by one
    // version or the other, never an error.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = format!("{}?token={}", host.ws_url("/ws"), host.token("2", 1, None));
    let streamer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut s = Client::connect(&url, &[]).await.unwrap();
            let (mut sent, mut answered) = (0u64, 0u64);
            let mut worst = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                s.send("version", json!(null)).await;
                sent += 1;
                let v = s.next_json().await;
                assert_eq!(v["type"], "version", "request {sent} failed: {v}");
                answered += 1;
                worst = worst.max(t.elapsed());
            }
            (sent, answered, worst)
        }
    });
    let started = Instant::now();
    for i in 0..20 {
        let (bytes, want) = if i % 2 == 0 { (&v2, "2") } else { (&v1, "1") };
        host.install_plugin("versioned", bytes);
        eventually(PATIENCE, "new version serving", async || {
            c.send("version", json!(null)).await;
            let v = c.expect("version").await;
            (v["version"] == json!(want)).then_some(())
        })
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, answered, worst) = streamer.await.unwrap();
    assert_eq!(sent, answered);
    assert!(
        sent > 20,
        "the stream kept flowing during reloads ({sent} requests)"
    );
    eprintln!(
        "20 replacements in {:?}; {sent} requests, 0 lost, slowest {worst:?}",
        started.elapsed()
    );

    // Delete: the type is unregistered.
    std::fs::remove_file(host.plugins_dir.join("versioned.wasm")).unwrap();
    eventually(PATIENCE, "versioned plugin removed", async || {
        c.send("version", json!(null)).await;
        let v = c.next_json().await;
        (v["type"] == "error" && v["content"]["code"] == "unknown_type").then_some(())
    })
    .await;
    // Rename back in under another name: it is loaded under that name.
    std::fs::write(host.plugins_dir.join("renamed.wasm.part"), &v1).unwrap();
    std::fs::rename(
        host.plugins_dir.join("renamed.wasm.part"),
        host.plugins_dir.join("renamed.wasm"),
    )
    .unwrap();
    eventually(PATIENCE, "renamed plugin added", async || {
        c.send("version", json!(null)).await;
        let v = c.next_json().await;
        (v["type"] == "version").then_some(())
    })
    .await;
}

#[tokio::test]
async fn faulty_plugins_are_contained_and_others_keep_working() {
    let host = TestHost::start_with(
        &["echo", "fault-loop", "fault-memory", "fault-panic"],
        |c| {
            c.plugins.call_timeout_ms = 1000;
            c.plugins.memory_limit_mb = 32;
        },
    )
    .await;
    let mut victim = host.connect("v", 1, None).await;
    let mut bystander = host.connect("b", 1, None).await;

    // An infinite loop is stopped at the time limit, and meanwhile others are served promptly.
    let started = Instant::now();
    victim.send("loop", json!(null)).await;
    bystander.send("echo", json!("still here")).await;
    assert_eq!(bystander.expect("echo").await, json!("still here"));
    let echo_latency = started.elapsed();
    let err = victim.expect("error").await;
    let loop_took = started.elapsed();
    assert_eq!(err["code"], "listener_fault");
    assert!(
        err["message"].as_str().unwrap().contains("time limit"),
        "{err}"
    );
    assert!(
        loop_took >= Duration::from_millis(1000) && loop_took < Duration::from_secs(5),
        "{loop_took:?}"
    );
    // The bystander was answered while the loop was still running.
    assert!(
        echo_latency < loop_took,
        "bystander waited {echo_latency:?}"
    );

    // Memory: a small allocation works, one past the cap is stopped.
    victim.send("alloc", json!({"mb": 4})).await;
    victim.expect("alloc-ok").await;
    victim.send("alloc", json!({"mb": 64})).await;
    let err = victim.expect("error").await;
    assert_eq!(err["code"], "listener_fault");
    assert!(err["message"].as_str().unwrap().contains("memory"), "{err}");

    // A panic traps.
    victim.send("panic", json!(null)).await;
    let err = victim.expect("error").await;
    assert_eq!(err["code"], "listener_fault");
    assert!(
        err["message"].as_str().unwrap().contains("fault-panic"),
        "names the plugin: {err}"
    );

    // Everything else still works, on the same connection too.
    victim.send("echo", json!(1)).await;
    assert_eq!(victim.expect("echo").await, json!(1));
    let status = host.plugins().await;
    let by_name = |n: &str| {
        status["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("fault-loop")["faults"], json!(1));
    assert_eq!(by_name("fault-memory")["faults"], json!(1));
    assert!(
        by_name("fault-panic")["last_error"]
            .as_str()
            .unwrap()
            .contains("panic")
    );
    let metrics = host.metrics().await;
    assert!(
        metrics.contains("switchboard_plugin_faults_total{plugin=\"fault-loop\"}"),
        "fault metric"
    );
}

// Two workers, as the host binary runs on this machine's two cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_loops_do_not_starve_the_host() {
    let host = TestHost::start_with(&["echo", "fault-loop"], |c| {
        c.plugins.call_timeout_ms = 3000
    })
    .await;
    let mut loopers = Vec::new();
    for i in 0..8 {
        let mut c = host.connect(&format!("l{i}"), 1, None).await;
        c.send("loop", json!(null)).await;
        loopers.push(tokio::spawn(async move {
            assert_eq!(c.expect("error").await["code"], "listener_fault");
            Instant::now()
        }));
    }
    let mut b = host.connect("b", 1, None).await;
    for i in 0..5 {
        b.send("echo", json!(i)).await;
        assert_eq!(b.expect("echo").await, json!(i));
    }
    let echoes_done = Instant::now();
    for looper in loopers {
        let stopped = looper.await.unwrap();
        // Every echo was answered while all eight loops were still running.
        assert!(
            echoes_done < stopped,
            "a loop was stopped before the echoes were served"
        );
    }
}

#[tokio::test]
async fn plugin_check_reports_info_or_the_reason() {
    let config = switchboard::config::Config::parse("", []).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let echo = dir.path().join("echo.wasm");
    std::fs::copy(guests::path("echo"), &echo).unwrap();
    let report = switchboard::cli::plugin_check(&config, &echo)
        .await
        .unwrap();
    let info: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(info["name"], "echo");
    assert_eq!(info["message_types"], json!(["echo"]));

    let wrong = dir.path().join("wrong.wasm");
    std::fs::copy(guests::path("wrong-world"), &wrong).unwrap();
    let err = switchboard::cli::plugin_check(&config, &wrong)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("listener"), "{err:#}");

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"hello").unwrap();
    let err = switchboard::cli::plugin_check(&config, &garbage)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("not a valid WebAssembly component"),
        "{err:#}"
    );
}

#[tokio::test]
async fn reused_instances_serve_calls_and_trapped_ones_are_discarded() {
    let host = TestHost::start(&[]).await;
    for name in ["echo", "fault-panic", "fault-memory"] {
        std::fs::write(
            host.plugins_dir.join(format!("{name}.toml")),
            "[instances]\nreuse = true\npool_size = 2\n",
        )
        .unwrap();
        host.install_plugin(name, &std::fs::read(guests::path(name)).unwrap());
    }
    let status = eventually(PATIENCE, "three pooled plugins", async || {
        let s = host.plugins().await;
        (s["plugins"].as_array().unwrap().len() == 3).then_some(s)
    })
    .await;
    for p in status["plugins"].as_array().unwrap() {
        assert_eq!(p["instances"], "reused", "{p}");
    }
    let mut c = host.connect("1", 1, None).await;
    for i in 0..50 {
        c.send("echo", json!(i)).await;
        assert_eq!(c.expect("echo").await, json!(i));
    }
    // A trap discards the instance; the next call gets a working one.
    for _ in 0..3 {
        c.send("panic", json!(null)).await;
        assert_eq!(c.expect("error").await["code"], "listener_fault");
        c.send("alloc", json!({"mb": 1})).await;
        c.expect("alloc-ok").await;
    }
}
