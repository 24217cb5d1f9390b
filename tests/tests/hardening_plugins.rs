//! The plugin runtime against hostile plugins and bad operator files: calls that wait inside
//! host calls end at their deadline (on-message, describe, on-connect), a sidecar fuel budget
//! works without a host one, rejected files are logged once and retried only when they change,
//! bad sidecars and odd files leave the host serving, and a guest panic's message reaches the
//! operator.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use switchboard_tests::{
    PATIENCE, cluster::Node, eventually, guests, host::TestHost, metric, sse::SseClient,
};

/// Copies guest `name` into `dir` as `file.wasm`, with `sidecar` as `file.toml` if given.
fn put(dir: &Path, name: &str, file: &str, sidecar: Option<&str>) {
    std::fs::copy(guests::path(name), dir.join(format!("{file}.wasm"))).unwrap();
    if let Some(text) = sidecar {
        std::fs::write(dir.join(format!("{file}.toml")), text).unwrap();
    }
}

/// The `failed` entry of `status` whose file ends with `file`.
fn failure(status: &Value, file: &str) -> Option<Value> {
    status["failed"]
        .as_array()?
        .iter()
        .find(|f| f["file"].as_str().is_some_and(|p| p.ends_with(file)))
        .cloned()
}

/// The `plugins` entry of `status` named `name`.
fn plugin(status: &Value, name: &str) -> Option<Value> {
    status["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

#[tokio::test]
async fn a_plugin_sleeping_in_a_host_call_is_stopped_at_its_deadline() {
    let host = TestHost::start_with(&["fault-sleep", "echo"], |c| {
        c.plugins.call_timeout_ms = 1000;
    })
    .await;
    let mut c = host.connect("s", 1, None).await;
    let started = Instant::now();
    c.send("sleep", json!(60_000)).await;
    let err = c.expect("error").await;
    let took = started.elapsed();
    assert_eq!(err["code"], "listener_fault", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("exceeded its time limit of 1s"),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(2500),
        "the call ended after {took:?}, its limit is 1s"
    );
    // The plugin and the connection keep working; the fault is counted once.
    c.send("nap", json!(null)).await;
    c.expect("nap").await;
    let status = host.plugins().await;
    assert_eq!(plugin(&status, "fault-sleep").unwrap()["faults"], json!(1));
}

// Two workers, as the host binary runs on this machine's two cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleepers_never_hold_a_plugin_past_the_deadline() {
    let host = TestHost::start_with(&["fault-sleep"], |c| {
        c.plugins.call_timeout_ms = 1000;
        c.plugins.max_concurrent_calls = 64;
        c.server.handshakes_per_sec = 10_000;
        c.server.handshakes_burst = 10_000;
    })
    .await;
    // More sleepers than the plugin has slots: the first 64 take every slot.
    let mut clients = Vec::new();
    for i in 0..80 {
        clients.push(host.connect(&format!("u{i}"), 1, None).await);
    }
    let started = Instant::now();
    let mut waits = Vec::new();
    for mut c in clients {
        waits.push(tokio::spawn(async move {
            c.send("sleep", json!(60_000)).await;
            let err = c.expect("error").await;
            (err["code"].as_str().unwrap().to_owned(), Instant::now())
        }));
    }
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for w in waits {
        let (code, at) = w.await.unwrap();
        // A call waits at most one deadline for a slot and runs at most one more.
        let took = at - started;
        assert!(
            took < Duration::from_millis(3500),
            "a sleeper ended after {took:?}"
        );
        *codes.entry(code).or_default() += 1;
    }
    eprintln!("80 sleepers, 64 slots, 1 s limit: {codes:?}");
    assert!(codes["listener_fault"] >= 64, "{codes:?}");
    // Every slot was released: the next caller is served at once.
    let mut c = host.connect("after", 1, None).await;
    let asked = Instant::now();
    c.send("nap", json!(null)).await;
    c.expect("nap").await;
    assert!(asked.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn a_describe_that_waits_is_rejected_at_its_deadline_while_other_files_load() {
    let sleepy = "[config]\ndescribe_sleep_ms = \"600000\"\n[limits]\ncall_timeout_ms = 1000\n";
    let started = Instant::now();
    let host = TestHost::start_with(&[], |c| {
        put(&c.plugins.dir, "fault-sleep", "a-sleepy", Some(sleepy));
    })
    .await;
    let startup = started.elapsed();
    // The host listens although a file's describe sleeps for ten minutes: it gave up at the
    // 1 s deadline. (The bound leaves room for compiling the component on a loaded machine.)
    assert!(startup < Duration::from_secs(60), "ready after {startup:?}");
    let status = host.plugins().await;
    let failed = failure(&status, "a-sleepy.wasm").expect("rejected");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("describe exceeded its time limit of 1s"),
        "{failed}"
    );
    // A second sleepy file (5 s limit) does not hold back a file dropped in after it.
    let slower = "[config]\ndescribe_sleep_ms = \"600000\"\n[limits]\ncall_timeout_ms = 5000\n";
    put(&host.plugins_dir, "fault-sleep", "b-sleepy", Some(slower));
    let dropped = Instant::now();
    host.install_plugin("echo", &std::fs::read(guests::path("echo")).unwrap());
    let mut c = host.connect("e", 1, None).await;
    eventually(PATIENCE, "echo to load", async || {
        c.send("echo", json!(1)).await;
        let v = c.next_json().await;
        (v["type"] == "echo").then_some(())
    })
    .await;
    let echo_after = dropped.elapsed();
    // Served while the slow describe still runs: had echo waited for it, the slow file would
    // already be rejected.
    assert!(
        failure(&host.plugins().await, "b-sleepy.wasm").is_none(),
        "echo loaded {echo_after:?} after the slow file was rejected: it waited for the slow describe"
    );
    let failed = eventually(PATIENCE, "the slow file to be rejected", async || {
        failure(&host.plugins().await, "b-sleepy.wasm")
    })
    .await;
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("time limit of 5s"),
        "{failed}"
    );
    let (status, _) = host.get("/readyz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_on_connect_that_waits_does_not_hold_greetings() {
    let sidecar = "[config]\nconnect_sleep_ms = \"600000\"\n[limits]\ncall_timeout_ms = 500\n";
    let host = TestHost::start_with(&["echo"], |c| {
        put(&c.plugins.dir, "fault-sleep", "fault-sleep", Some(sidecar));
    })
    .await;
    assert!(plugin(&host.plugins().await, "fault-sleep").unwrap()["lifecycle_events"] == true);
    for i in 0..3 {
        let started = Instant::now();
        let mut c = host.connect(&format!("w{i}"), 1, None).await;
        let greeted = started.elapsed();
        assert!(
            greeted < Duration::from_millis(2000),
            "greeting after {greeted:?}"
        );
        c.send("echo", json!(i)).await;
        assert_eq!(c.expect("echo").await, json!(i));
    }
    let started = Instant::now();
    let url = format!(
        "http://{}/sse?token={}",
        host.addr,
        host.token("sse", 1, None)
    );
    let mut sse = SseClient::connect(&url).await.expect("SSE answers");
    let greeting = sse.next_json().await;
    assert_eq!(greeting["type"], "session", "{greeting}");
    let answered = started.elapsed();
    assert!(
        answered < Duration::from_millis(2000),
        "SSE greeting after {answered:?}"
    );
    // Each on-connect ended at its deadline and was reported as a fault.
    eventually(PATIENCE, "on-connect faults counted", async || {
        let p = plugin(&host.plugins().await, "fault-sleep")?;
        (p["faults"].as_u64()? >= 4).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_sidecar_fuel_budget_works_without_a_host_budget() {
    // The README's sidecar example, for `echo`; `[plugins] fuel` stays unset.
    let readme_example = "message_types = [\"echo\"]\n[limits]\ncall_timeout_ms = 500\n\
                          memory_limit_mb = 32\nfuel = 100000000\nmax_concurrent_calls = 16\n\
                          [capabilities]\nbroadcast = false\ncross_tenant = false\n\
                          [config]\ngreeting = \"hello\"\n[instances]\nreuse = false\n\
                          pool_size = 8\n";
    let host = TestHost::start_with(&[], |c| {
        assert_eq!(c.plugins.fuel, None);
        put(&c.plugins.dir, "echo", "echo", Some(readme_example));
        put(
            &c.plugins.dir,
            "fault-loop",
            "fault-loop",
            Some("[limits]\nfuel = 100000\n"),
        );
    })
    .await;
    let mut c = host.connect("f", 1, None).await;
    c.send("echo", json!("fuelled")).await;
    assert_eq!(c.expect("echo").await, json!("fuelled"));
    let started = Instant::now();
    c.send("loop", json!(null)).await;
    let err = c.expect("error").await;
    assert!(
        err["message"].as_str().unwrap().contains("ran out of fuel"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "stopped by fuel, not time"
    );
    // A fuel budget dropped in while running reloads the plugin; the host stays ready.
    std::fs::write(
        host.plugins_dir.join("fault-loop.toml"),
        "[limits]\nfuel = 200000\n",
    )
    .unwrap();
    eventually(PATIENCE, "the new budget to apply", async || {
        let p = plugin(&host.plugins().await, "fault-loop")?;
        (p["limits"]["fuel"] == json!(200_000)).then_some(())
    })
    .await;
    c.send("loop", json!(null)).await;
    assert!(
        c.expect("error").await["message"]
            .as_str()
            .unwrap()
            .contains("fuel")
    );
    assert_eq!(host.get("/readyz").await.0, 200);
}

/// Lines of `log` that contain `needle`.
fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test]
async fn a_rejected_file_is_reported_once_and_retried_when_it_changes() {
    let node = Node::start_local(&["echo"], &[]).await;
    let dir = node.plugins_dir();
    // A sidecar next to a working plugin, and a broken file.
    std::fs::write(dir.join("echo.toml"), "[config]\nk = \"v\"\n").unwrap();
    std::fs::write(dir.join("broken.wasm"), b"\0asm not a component").unwrap();
    let rejected = async || {
        metric(
            &node.metrics().await,
            "switchboard_plugin_reloads_total{result=\"rejected\"}",
        )
        .unwrap_or(0.0)
    };
    let loaded = async || {
        metric(
            &node.metrics().await,
            "switchboard_plugin_reloads_total{result=\"loaded\"}",
        )
        .unwrap_or(0.0)
    };
    // Rejected once; echo loaded at start and once more for its new sidecar.
    eventually(PATIENCE, "the broken file to be rejected", async || {
        (rejected().await == 1.0 && loaded().await == 2.0).then_some(())
    })
    .await;
    // Watch for a while: nothing changes, so nothing is read, reloaded or logged again.
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        assert_eq!(rejected().await, 1.0, "the unchanged file was retried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(loaded().await, 2.0, "the unchanged plugin was reloaded");
    assert_eq!(
        count_lines(&node.log(), "plugin rejected"),
        1,
        "{}",
        node.log()
    );
    // A changed file is retried (and rejected again, once).
    std::fs::write(dir.join("broken.wasm"), b"\0asm still not a component").unwrap();
    eventually(PATIENCE, "the changed file to be retried", async || {
        (rejected().await == 2.0).then_some(())
    })
    .await;
    // A file fixed in place loads.
    std::fs::copy(guests::path("fault-panic"), dir.join("broken.wasm")).unwrap();
    eventually(PATIENCE, "the fixed file to load", async || {
        let (_, s) = node.get("/api/v1/plugins").await;
        plugin(&s, "fault-panic").map(|_| ())
    })
    .await;
    assert_eq!(
        count_lines(&node.log(), "plugin rejected"),
        2,
        "{}",
        node.log()
    );
}

fn bad_sidecars() -> PathBuf {
    guests::repo_root().join("host/tests/bad_sidecars")
}

#[tokio::test]
async fn bad_sidecars_dropped_into_a_running_host_leave_it_serving() {
    let host = TestHost::start(&["echo"]).await;
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(bad_sidecars()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let expected = std::fs::read_to_string(path.with_extension("err")).unwrap();
            std::fs::copy(&path, host.plugins_dir.join(format!("{name}.toml"))).unwrap();
            put(&host.plugins_dir, "fault-panic", &name, None);
            cases.push((name, expected.trim_end().to_owned()));
        }
    }
    assert!(cases.len() >= 15);
    let dir = host.plugins_dir.display().to_string();
    let status = eventually(PATIENCE, "every bad sidecar to be refused", async || {
        let status = host.plugins().await;
        (status["failed"].as_array()?.len() == cases.len()).then_some(status)
    })
    .await;
    for (name, expected) in &cases {
        let f = failure(&status, &format!("/{name}.wasm")).unwrap();
        let error = f["error"].as_str().unwrap().replace(&dir, "$DIR");
        assert_eq!(&error, expected, "{name}");
    }
    let mut c = host.connect("still", 1, None).await;
    c.send("echo", json!("serving")).await;
    assert_eq!(c.expect("echo").await, json!("serving"));
    assert_eq!(host.get("/readyz").await.0, 200);
}

#[tokio::test]
async fn a_guest_panic_message_reaches_the_operator_not_the_client() {
    let host = TestHost::start(&["fault-panic"]).await;
    let mut c = host.connect("p", 1, None).await;
    c.send("panic", json!(null)).await;
    let err = c.expect("error").await;
    assert_eq!(err["code"], "listener_fault");
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("unreachable"), "{err}");
    assert!(
        !message.contains("deliberate"),
        "the client sees no guest output: {err}"
    );
    let status = host.plugins().await;
    let last_error = plugin(&status, "fault-panic").unwrap()["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        last_error.contains("fault-panic: deliberate panic on `panic`"),
        "{last_error}"
    );
}

#[tokio::test]
async fn symlinks_odd_file_names_and_plugin_log_lines_cannot_forge_host_lines() {
    let node = Node::start_local(&["echo", "targets"], &[]).await;
    let dir = node.plugins_dir();
    // A symlinked plugin is refused; the file it points to is never read as a plugin.
    std::os::unix::fs::symlink(dir.join("echo.wasm"), dir.join("linked.wasm")).unwrap();
    // A file name that tries to start a log line of its own.
    let odd = "odd\n2026-12-01T00:00:00Z ERROR forged";
    std::fs::write(dir.join(format!("{odd}.wasm")), b"not wasm").unwrap();
    let status = eventually(PATIENCE, "both refused", async || {
        let (_, s) = node.get("/api/v1/plugins").await;
        (s["failed"].as_array()?.len() == 2).then_some(s)
    })
    .await;
    let linked = failure(&status, "linked.wasm").unwrap();
    assert!(
        linked["error"].as_str().unwrap().contains("symbolic link"),
        "{linked}"
    );
    let odd_failure = failure(&status, "forged.wasm").unwrap();
    assert!(
        odd_failure["file"].as_str().unwrap().contains("odd\\n2026"),
        "{odd_failure}"
    );
    let log = node.log();
    assert!(
        log.contains("odd\\n2026-12-01T00:00:00Z ERROR forged"),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-12-01T00:00:00Z ERROR forged")),
        "{log}"
    );
    let mut c = node.connect("e", 1, None).await;
    c.send("echo", json!(1)).await;
    assert_eq!(c.expect("echo").await, json!(1));
    // A plugin's log message with a newline stays on its own line, escaped.
    let forged = "hello\n2026-12-01T00:00:00Z ERROR forged by a plugin";
    c.send("log", json!({"lines": 0, "text": forged})).await;
    c.expect("logged").await;
    let log = eventually(PATIENCE, "the plugin's line in the log", async || {
        let log = node.log();
        log.contains("forged by a plugin").then_some(log)
    })
    .await;
    assert!(
        log.contains("hello\\n2026-12-01T00:00:00Z ERROR forged by a plugin"),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-12-01T00:00:00Z ERROR forged by")),
        "{log}"
    );
}

#[tokio::test]
async fn a_file_refused_for_a_claimed_type_loads_once_the_claim_is_freed() {
    let host = TestHost::start(&["echo"]).await;
    host.install_plugin(
        "clash-echo",
        &std::fs::read(guests::path("clash-echo")).unwrap(),
    );
    eventually(PATIENCE, "the clash to be refused", async || {
        failure(&host.plugins().await, "clash-echo.wasm").map(|_| ())
    })
    .await;
    // The refused file itself does not change; freeing the type is what retries it.
    std::fs::remove_file(host.plugins_dir.join("echo.wasm")).unwrap();
    let status = eventually(PATIENCE, "clash-echo to take the type", async || {
        let status = host.plugins().await;
        plugin(&status, "clash-echo").map(|_| status)
    })
    .await;
    assert!(failure(&status, "clash-echo.wasm").is_none(), "{status}");
}
