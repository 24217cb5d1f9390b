//! Outbound HTTP from plugins (`wasi:http`), against a real back end on `127.0.0.1:0`: what
//! a sidecar's `allowed_hosts` opens, what stays closed (everything without it, loopback
//! named only by a host name), and the limits (response size, time, concurrent requests).
//! Every refusal reaches the guest as a `wasi:http` error code it handles: the call goes on
//! and replies. A session whose listener waits on a slow back end keeps its heartbeat.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard::config::Config;
use switchboard_tests::{
    PATIENCE, backend::Backend, client::Client, eventually, guests, host::TestHost,
};

/// A host serving the `http-client` test guest under `sidecar`.
async fn host_with(sidecar: &str) -> TestHost {
    host_configured(sidecar, |_| {}).await
}

/// [`host_with`], with the host's config changed by `edit`.
async fn host_configured(sidecar: &str, edit: impl FnOnce(&mut Config)) -> TestHost {
    let host = TestHost::start_with(&[], edit).await;
    std::fs::write(host.plugins_dir.join("http-client.toml"), sidecar).unwrap();
    let bytes = std::fs::read(guests::path("http-client")).unwrap();
    host.install_plugin("http-client", &bytes);
    host.wait_loaded("http-client", PATIENCE * 3).await;
    host
}

async fn ask(c: &mut Client, request: Value) -> Value {
    c.send("http", request).await;
    c.expect("http-result").await
}

/// The value of the counter `name` of `http-client` whose labels include `label`. The tests of
/// this file run side by side in one process, which has one metrics recorder: a count
/// includes the other tests' requests, so tests assert lower bounds.
fn counter(page: &str, name: &str, label: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l.contains("plugin=\"http-client\""))
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn an_allowed_host_is_reached() {
    let backend = Backend::start().await;
    let host = host_with(&format!(
        "[capabilities]\nallowed_hosts = [\"{}\"]\n",
        backend.addr
    ))
    .await;
    let mut c = host.connect("1", 2, None).await;
    let got = ask(&mut c, json!({"url": backend.url("/hello")})).await;
    assert_eq!(got, json!({"status": 200, "body": "hello"}));
    let got = ask(
        &mut c,
        json!({"url": backend.url("/echo"), "method": "POST", "body": "{\"a\":1}"}),
    )
    .await;
    assert_eq!(got, json!({"status": 200, "body": "{\"a\":1}"}));
    assert_eq!(backend.requests(), 2);
    let page = host.metrics().await;
    assert!(
        counter(
            &page,
            "switchboard_plugin_http_requests_total",
            "outcome=\"ok\""
        ) >= 2.0
    );
    assert!(
        counter(
            &page,
            "switchboard_plugin_http_bytes_total",
            "direction=\"in\""
        ) >= 12.0
    );
    assert!(
        counter(
            &page,
            "switchboard_plugin_http_bytes_total",
            "direction=\"out\""
        ) >= 7.0
    );
    let list = host.plugins().await;
    let me = &list["plugins"][0];
    assert_eq!(
        me["capabilities"]["allowed_hosts"],
        json!([backend.addr.to_string()])
    );
    assert_eq!(me["limits"]["http_timeout_ms"], 500);
}

#[tokio::test]
async fn without_allowed_hosts_every_request_is_refused() {
    let backend = Backend::start().await;
    // The component imports wasi:http and still loads; its requests are refused.
    let host = host_with("").await;
    let mut c = host.connect("1", 2, None).await;
    for url in [backend.url("/hello"), "http://example.com/".to_owned()] {
        let got = ask(&mut c, json!({ "url": url })).await;
        assert_eq!(got, json!({"error": "HttpRequestDenied"}), "{url}");
    }
    assert_eq!(
        backend.requests(),
        0,
        "a refused request reached the back end"
    );
    let page = host.metrics().await;
    assert!(
        counter(
            &page,
            "switchboard_plugin_http_requests_total",
            "outcome=\"denied\""
        ) >= 2.0
    );
    let list = host.plugins().await;
    assert_eq!(list["plugins"][0]["faults"], 0, "{list}");
}

#[tokio::test]
async fn loopback_is_reached_only_when_listed_by_address() {
    let backend = Backend::start().await;
    let port = backend.addr.port();
    // `localhost` names the host, but it resolves to loopback, which is not listed.
    let host = host_with(&format!(
        "[capabilities]\nallowed_hosts = [\"localhost:{port}\"]\n"
    ))
    .await;
    let mut c = host.connect("1", 2, None).await;
    let got = ask(
        &mut c,
        json!({"url": format!("http://localhost:{port}/hello")}),
    )
    .await;
    assert_eq!(got, json!({"error": "DestinationIpProhibited"}));
    // The address itself is not listed either, nor another port.
    let got = ask(&mut c, json!({"url": backend.url("/hello")})).await;
    assert_eq!(got, json!({"error": "HttpRequestDenied"}));
    let got = ask(
        &mut c,
        json!({"url": format!("http://localhost:{}/hello", port.wrapping_add(1))}),
    )
    .await;
    assert_eq!(got, json!({"error": "HttpRequestDenied"}));
    assert_eq!(backend.requests(), 0);
    drop(c);
    host.shutdown().await;

    // Listing loopback by range opens it, for the name as well.
    let host = host_with(&format!(
        "[capabilities]\nallowed_hosts = [\"localhost:{port}\", \"127.0.0.0/8\"]\n"
    ))
    .await;
    let mut c = host.connect("1", 2, None).await;
    let got = ask(
        &mut c,
        json!({"url": format!("http://localhost:{port}/hello")}),
    )
    .await;
    // `localhost` may also resolve to ::1, which stays unlisted: then the request is refused
    // as a whole (every resolved address is checked).
    assert!(
        got == json!({"status": 200, "body": "hello"})
            || got == json!({"error": "DestinationIpProhibited"}),
        "{got}"
    );
    let got = ask(&mut c, json!({"url": backend.url("/hello")})).await;
    assert_eq!(got, json!({"status": 200, "body": "hello"}));
}

#[tokio::test]
async fn a_response_over_the_cap_is_refused() {
    let backend = Backend::start().await;
    let host = host_with(&format!(
        "[capabilities]\nallowed_hosts = [\"{}\"]\n[limits]\nhttp_max_response_bytes = 1000\n",
        backend.addr
    ))
    .await;
    let mut c = host.connect("1", 2, None).await;
    let got = ask(&mut c, json!({"url": backend.url("/bytes/1000")})).await;
    assert_eq!(got["status"], 200);
    assert_eq!(got["body"].as_str().unwrap().len(), 1000);
    // Known from content-length: refused before the body is read.
    let got = ask(&mut c, json!({"url": backend.url("/bytes/1001")})).await;
    assert_eq!(got, json!({"error": "HttpResponseBodySize(Some(1001))"}));
    // Streamed without a length: the body fails once it passes the cap.
    let got = ask(&mut c, json!({"url": backend.url("/stream/5000")})).await;
    let error = got["error"].as_str().unwrap_or_else(|| panic!("{got}"));
    // wstd reports a failed body read with the host's reason.
    assert!(
        error.contains("response body size exceeds limit: 1000 bytes"),
        "{got}"
    );
    let page = host.metrics().await;
    assert!(
        counter(
            &page,
            "switchboard_plugin_http_requests_total",
            "outcome=\"too_large\""
        ) >= 1.0
    );
    assert!(
        counter(
            &page,
            "switchboard_plugin_http_body_errors_total",
            "outcome=\"too_large\""
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_slow_back_end_times_out_and_the_call_still_replies() {
    let backend = Backend::start().await;
    let host = host_with(&format!(
        "[capabilities]\nallowed_hosts = [\"{}\"]\n[limits]\nhttp_timeout_ms = 300\ncall_timeout_ms = 3000\n",
        backend.addr
    ))
    .await;
    let mut c = host.connect("1", 2, None).await;
    let started = Instant::now();
    let got = ask(&mut c, json!({"url": backend.url("/slow/2000")})).await;
    assert_eq!(got, json!({"error": "HttpResponseTimeout"}));
    assert!(started.elapsed() < Duration::from_millis(1500));
    drop(c);
    host.shutdown().await;

    // A request also ends a tenth of the call's time limit before the call's deadline.
    let host = host_with(&format!(
        "[capabilities]\nallowed_hosts = [\"{}\"]\n[limits]\nhttp_timeout_ms = 10000\ncall_timeout_ms = 1000\n",
        backend.addr
    ))
    .await;
    let mut c = host.connect("1", 2, None).await;
    let got = ask(&mut c, json!({"url": backend.url("/slow/3000")})).await;
    assert_eq!(got, json!({"error": "HttpResponseTimeout"}));
    let list = host.plugins().await;
    assert_eq!(list["plugins"][0]["faults"], 0, "{list}");
}

#[tokio::test]
async fn concurrent_requests_are_capped() {
    let backend = Backend::start().await;
    let host = host_with(&format!(
        "[capabilities]\nallowed_hosts = [\"{}\"]\n[limits]\nhttp_max_concurrent_requests = 2\nhttp_timeout_ms = 3000\ncall_timeout_ms = 5000\n",
        backend.addr
    ))
    .await;
    let mut c = host.connect("1", 2, None).await;
    let got = ask(&mut c, json!({"url": backend.url("/slow/300"), "times": 4})).await;
    let results = got["results"].as_array().unwrap_or_else(|| panic!("{got}"));
    let ok = results.iter().filter(|r| r["status"] == 200).count();
    let busy = results
        .iter()
        .filter(|r| r["error"] == "ConnectionLimitReached")
        .count();
    assert_eq!((ok, busy), (2, 2), "{got}");
    assert_eq!(backend.most_in_flight(), 2);
    // The slots are free again once the responses are read.
    let got = ask(&mut c, json!({"url": backend.url("/hello"), "times": 2})).await;
    assert_eq!(
        got["results"],
        json!([{"status": 200, "body": "hello"}, {"status": 200, "body": "hello"}])
    );
}

#[tokio::test]
async fn a_session_waiting_on_a_slow_back_end_keeps_its_heartbeat_and_order() {
    let backend = Backend::start().await;
    let host = host_configured(
        &format!(
            "[capabilities]\nallowed_hosts = [\"{}\"]\n[limits]\nhttp_timeout_ms = 5000\ncall_timeout_ms = 6000\n",
            backend.addr
        ),
        // Idle after a second: the listener below waits twice as long.
        |c| c.server.idle_timeout_secs = 1,
    )
    .await;
    let mut c = host.connect("1", 2, None).await;
    let mut other = host.connect("2", 2, None).await;
    let started = Instant::now();
    c.send("http", json!({"url": backend.url("/slow/2000")}))
        .await;
    // Sent while the first is being handled: answered after it, in order.
    c.send("http", json!({"url": backend.url("/hello")})).await;
    // Another session is served meanwhile.
    let got = ask(&mut other, json!({"url": backend.url("/hello")})).await;
    assert_eq!(got, json!({"status": 200, "body": "hello"}));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    // The waiting session's text heartbeat is answered at once, all along, and it is not
    // closed as idle (its heartbeats are what keeps it alive).
    let mut pongs = 0;
    let mut beat = tokio::time::interval(Duration::from_millis(200));
    let first = loop {
        beat.tick().await;
        let sent = Instant::now();
        c.send_text("ping").await;
        let text = c.next_text().await;
        if text == "pong" {
            pongs += 1;
            assert!(
                sent.elapsed() < Duration::from_millis(500),
                "pong after {:?}",
                sent.elapsed()
            );
            continue;
        }
        // The replies may come before the pong of the ping sent just before them.
        break serde_json::from_str::<Value>(&text).unwrap();
    };
    assert!(pongs >= 5, "only {pongs} pongs during a 2 s call");
    assert_eq!(first["type"], "http-result", "{first}");
    assert_eq!(first["content"], json!({"status": 200, "body": "slow"}));
    let rest = [c.next_text().await, c.next_text().await];
    let second: Vec<&String> = rest.iter().filter(|t| *t != "pong").collect();
    assert_eq!(second.len(), 1, "{rest:?}");
    let second: Value = serde_json::from_str(second[0]).unwrap();
    assert_eq!(
        second,
        json!({"type": "http-result", "content": {"status": 200, "body": "hello"}})
    );
    c.send_text("ping").await;
    assert_eq!(c.next_text().await, "pong");
    // The other session, silent all along, was closed as idle: the timeout was in force.
    assert_eq!(other.closed().await, Some(4000));
}

/// The JavaScript example `plugins/js-notes` under a sidecar naming `backend_url`.
async fn js_notes(backend: &Backend, allowed: &str, path: &str) -> TestHost {
    let host = TestHost::start(&[]).await;
    write_js_notes_sidecar(&host, backend, allowed, path);
    host.install_plugin("js-notes", &guests::prebuilt("polyglot-dist/js-notes.wasm"));
    host.wait_loaded("js-notes", PATIENCE * 6).await;
    host
}

fn write_js_notes_sidecar(host: &TestHost, backend: &Backend, allowed: &str, path: &str) {
    let sidecar = format!(
        "message_types = [\"note-save\"]\n[capabilities]\nallowed_hosts = [{allowed}]\n\
         [config]\nbackend_url = \"{}\"\n[limits]\nhttp_timeout_ms = 2000\ncall_timeout_ms = 5000\n\
         [instances]\nreuse = true\n",
        backend.url(path)
    );
    let tmp = host.plugins_dir.join(".js-notes.toml.tmp");
    std::fs::write(&tmp, sidecar).unwrap();
    std::fs::rename(&tmp, host.plugins_dir.join("js-notes.toml")).unwrap();
}

#[tokio::test]
async fn a_javascript_listener_posts_a_note_and_replies_with_its_id() {
    let backend = Backend::start().await;
    let host = js_notes(&backend, &format!("\"{}\"", backend.addr), "/notes").await;
    let mut c = host.connect("7", 2, None).await;
    c.send("note-save", json!({"text": "buy milk"})).await;
    assert_eq!(c.expect("note-saved").await, json!({"id": 1}));
    c.send("note-save", json!({"text": "call home"})).await;
    assert_eq!(c.expect("note-saved").await, json!({"id": 2}));
    assert_eq!(
        backend.notes(),
        vec![
            json!({"text": "buy milk", "userId": "7"}),
            json!({"text": "call home", "userId": "7"})
        ]
    );

    // An error thrown after an `await` (the back end answers 404) is a listener_error with
    // its message, not a silence.
    write_js_notes_sidecar(
        &host,
        &backend,
        &format!("\"{}\"", backend.addr),
        "/missing",
    );
    let error = eventually(PATIENCE * 3, "the 404 to be reported", async || {
        c.send("note-save", json!({"text": "x"})).await;
        let v = c.next_json().await;
        (v["type"] == "error").then_some(v["content"].clone())
    })
    .await;
    assert_eq!(error["code"], "listener_error", "{error}");
    assert_eq!(error["message"], "the back end answered 404", "{error}");

    // A refused fetch rejects its promise: a listener_error with the runtime's message.
    write_js_notes_sidecar(&host, &backend, "", "/notes");
    let refused = json!({
        "code": "listener_error",
        "message": "NetworkError when attempting to fetch resource",
        "type": "note-save"
    });
    eventually(PATIENCE * 3, "the refusal to be reported", async || {
        c.send("note-save", json!({"text": "y"})).await;
        let v = c.next_json().await;
        (v["content"] == refused).then_some(())
    })
    .await;
    let before = backend.requests();
    c.send("note-save", json!({"text": "z"})).await;
    assert_eq!(c.expect("error").await, refused);
    assert_eq!(
        backend.requests(),
        before,
        "a refused request reached the back end"
    );
    let list = host.plugins().await;
    assert_eq!(list["plugins"][0]["faults"], 0, "{list}");
}

#[tokio::test]
async fn javascript_promises_and_timers_end_with_the_call() {
    let host = TestHost::start(&[]).await;
    host.install_plugin("js-timers", &guests::prebuilt("js-test/js-timers.wasm"));
    host.wait_loaded("js-timers", PATIENCE * 6).await;
    let mut c = host.connect("1", 2, None).await;
    // A timer awaited inside the handler fires.
    c.send("timer-await", json!({})).await;
    assert_eq!(c.expect("timer-done").await, json!({}));
    // One left behind could never fire: the call says so instead of dropping it silently.
    c.send("timer-leak", json!({})).await;
    let error = c.expect("error").await;
    assert_eq!(error["code"], "listener_error", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("1 timer(s) from setTimeout/setInterval were still pending"),
        "{error}"
    );
    // An error after an await, and a rejected promise, carry their messages.
    for (msg_type, message) in [
        ("throw-after-await", "boom after await"),
        ("reject", "rejected on purpose"),
    ] {
        c.send(msg_type, json!({})).await;
        assert_eq!(
            c.expect("error").await,
            json!({"code": "listener_error", "message": message, "type": msg_type})
        );
    }
    // The instance is still good.
    c.send("timer-await", json!({})).await;
    assert_eq!(c.expect("timer-done").await, json!({}));
    let list = host.plugins().await;
    assert_eq!(list["plugins"][0]["faults"], 0, "{list}");
}
