//! Listener plugins written in JavaScript, Python and C, end to end next to the Rust ones in
//! one host: built from source by `scripts/build-guests.sh` before the tests run, compiled
//! once into the code cache the test hosts share, then installed into real hosts and
//! exercised over real sockets, including a hot reload of the JavaScript plugin.
//!
//! `cargo test --release -p switchboard-tests --features e2e --test polyglot -- --ignored --nocapture`
//! prints each language's component size, first-load compile time and cached load time.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use switchboard::plugins::{cache::CodeCache, loaded::content_hash, runtime::Runtime};
use switchboard_tests::{
    client::Client,
    eventually, guests,
    host::{TestHost, base_config},
};

/// One example plugin of another language.
struct Polyglot {
    /// File stem and plugin name.
    name: &'static str,
    /// Prefix of its message types.
    prefix: &'static str,
    /// `lang` in its greetings.
    lang: &'static str,
    /// Whether its sidecar asks for reused instances (as the example sidecars do for the
    /// interpreted languages).
    reuse: bool,
}

const PLUGINS: [Polyglot; 3] = [
    Polyglot {
        name: "js-greet",
        prefix: "js",
        lang: "js",
        reuse: true,
    },
    Polyglot {
        name: "python-greet",
        prefix: "py",
        lang: "python",
        reuse: true,
    },
    Polyglot {
        name: "c-greet",
        prefix: "c",
        lang: "c",
        reuse: false,
    },
];

/// How long a test waits for components to load. JS and Python components embed an
/// interpreter and take ~10 s each to compile on an idle core (they are compiled before the
/// hosts start, so a host normally takes them from the code cache in milliseconds).
const LOAD_PATIENCE: Duration = Duration::from_secs(300);

/// Compiles `bytes` into the code cache the test hosts share (see `host::base_config`) with
/// an engine configured like theirs; returns how long it took and whether it was cached.
fn precompile(bytes: &[u8]) -> (Duration, bool) {
    let config = base_config(PathBuf::new()).plugins;
    let runtime = Runtime::new(&config).expect("engine");
    let cache = CodeCache::new(config.cache_dir.expect("shared cache dir"), &runtime.engine);
    let started = Instant::now();
    let (_, cached) = cache
        .load_or_compile(&runtime.engine, &content_hash(bytes), bytes, "precompile")
        .expect("component compiles");
    (started.elapsed(), cached)
}

/// A built component's bytes (`polyglot-dist/NAME.wasm`), compiled into the shared code
/// cache the first time it is read in this process.
fn component(name: &str) -> Vec<u8> {
    prepared(&format!("polyglot-dist/{name}.wasm"))
}

/// The version of the changed `js-greet` the reload test installs: `scripts/build-guests.sh`
/// builds `js-greet` with its `VERSION` constant set to this.
const RELOADED_VERSION: &str = "0.2.0";

/// `js-greet` with `VERSION` changed to [`RELOADED_VERSION`].
fn js_greet_reloaded() -> Vec<u8> {
    prepared("polyglot-reloaded/js-greet.wasm")
}

/// The prebuilt component at `relative`, compiled into the shared code cache once per
/// process (so hosts load it in milliseconds instead of compiling an interpreter each).
fn prepared(relative: &str) -> Vec<u8> {
    static PREPARED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let bytes = guests::prebuilt(relative);
    if PREPARED.lock().unwrap().insert(relative.to_owned()) {
        let (took, cached) = precompile(&bytes);
        eprintln!(
            "{relative}: {} bytes, {} in {took:?}",
            bytes.len(),
            if cached {
                "loaded from cache"
            } else {
                "compiled"
            }
        );
    }
    bytes
}

/// Writes `name`'s sidecar (its greeting; reused instances when `reuse`) and installs its
/// component.
fn install(host: &TestHost, name: &str, greeting: &str, reuse: bool, bytes: &[u8]) {
    std::fs::write(
        host.plugins_dir.join(format!("{name}.toml")),
        format!("[config]\ngreeting = \"{greeting}\"\n[instances]\nreuse = {reuse}\n"),
    )
    .unwrap();
    host.install_plugin(name, bytes);
}

/// Waits until every `(name, version)` is serving; fails at once if one was rejected.
async fn serving(host: &TestHost, plugins: &[(&str, &str)]) {
    eventually(LOAD_PATIENCE, "plugins loaded", async || {
        let status = host.plugins().await;
        for failed in status["failed"].as_array().unwrap() {
            let file = failed["file"].as_str().unwrap();
            assert!(
                !plugins
                    .iter()
                    .any(|(name, _)| file.ends_with(&format!("/{name}.wasm"))),
                "plugin rejected: {failed}"
            );
        }
        let loaded = status["plugins"].as_array().unwrap();
        plugins
            .iter()
            .all(|(name, version)| {
                loaded
                    .iter()
                    .any(|p| p["name"] == *name && p["version"] == *version)
            })
            .then_some(())
    })
    .await;
}

/// Sends `msg_type` with `content` and returns the sender's next message (type and content).
async fn ask(c: &mut Client, msg_type: &str, content: Value) -> (String, Value) {
    c.send(msg_type, content).await;
    let v = c.next_json().await;
    (v["type"].as_str().unwrap().to_owned(), v["content"].clone())
}

#[tokio::test]
async fn js_python_and_c_listeners_serve_next_to_rust_ones() {
    let host = TestHost::start(&["echo", "demo-chat"]).await;
    for p in &PLUGINS {
        let greeting = format!("Hi from {}", p.lang);
        // The interpreters keep their instances between calls; C gets a fresh one per call.
        install(&host, p.name, &greeting, p.reuse, &component(p.name));
    }
    let names: Vec<_> = PLUGINS.iter().map(|p| (p.name, "0.1.0")).collect();
    serving(&host, &names).await;

    // Tenant t1: alice and bob (user type 2), carol (user type 1); tenant t2: mallory.
    let mut alice = host.connect("1", 2, Some("t1")).await;
    let mut bob = host.connect("2", 2, Some("t1")).await;
    let mut carol = host.connect("3", 1, Some("t1")).await;
    let mut mallory = host.connect("5", 2, Some("t2")).await;

    for p in &PLUGINS {
        let t = |suffix: &str| format!("{}-{suffix}", p.prefix);

        // Typed content, config, reply to the session.
        let (ty, greeting) = ask(&mut alice, &t("greet"), json!({"name": "Alice"})).await;
        assert_eq!(ty, t("greeting"), "{}: {greeting}", p.name);
        assert_eq!(
            greeting,
            json!({"text": format!("Hi from {}, Alice!", p.lang), "lang": p.lang, "version": "0.1.0"})
        );

        // One user (online, then offline), with presence.
        alice
            .send(&t("notify"), json!({"text": "psst", "toUserId": "2"}))
            .await;
        assert_eq!(
            bob.expect(&t("notice")).await,
            json!({"from": "1", "text": "psst"})
        );
        assert_eq!(
            alice.expect(&t("notify-ack")).await,
            json!({"to": "user", "online": true})
        );
        let (_, ack) = ask(
            &mut alice,
            &t("notify"),
            json!({"text": "anyone?", "toUserId": "9"}),
        )
        .await;
        assert_eq!(ack, json!({"to": "user", "online": false}), "{}", p.name);

        // Another user type, then the sender's own (alice included), within tenant t1.
        alice
            .send(&t("notify"), json!({"text": "members", "toUserType": 1}))
            .await;
        assert_eq!(
            carol.expect(&t("notice")).await,
            json!({"from": "1", "text": "members"})
        );
        assert_eq!(
            alice.expect(&t("notify-ack")).await,
            json!({"to": "user-type", "onlineUsers": 1})
        );
        alice.send(&t("notify"), json!({"text": "team"})).await;
        for c in [&mut alice, &mut bob] {
            assert_eq!(
                c.expect(&t("notice")).await,
                json!({"from": "1", "text": "team"})
            );
        }
        assert_eq!(
            alice.expect(&t("notify-ack")).await,
            json!({"to": "user-type", "onlineUsers": 2})
        );

        // Who is online, per user type, in the sender's tenant only.
        let (_, online) = ask(&mut carol, &t("who"), json!({"userType": 2})).await;
        assert_eq!(online, json!({"userType": 2, "users": ["1", "2"]}));
        let (_, online) = ask(&mut carol, &t("who"), json!({})).await;
        assert_eq!(online, json!({"userType": 1, "users": ["3"]}));
        let (_, online) = ask(&mut mallory, &t("who"), json!({})).await;
        assert_eq!(online, json!({"userType": 2, "users": ["5"]}));

        // Content of the wrong shape is the listener's invalid-content error.
        for bad in [
            json!({"name": 5}),
            json!({}),
            json!("Alice"),
            json!(["Alice"]),
        ] {
            let (ty, error) = ask(&mut alice, &t("greet"), bad.clone()).await;
            assert_eq!(ty, "error", "{}: {bad} answered {error}", p.name);
            assert_eq!(error["code"], "invalid_content", "{}: {error}", p.name);
        }
        let (_, error) = ask(
            &mut alice,
            &t("notify"),
            json!({"text": "x", "toUserType": "1"}),
        )
        .await;
        assert_eq!(error["code"], "invalid_content", "{}: {error}", p.name);
    }

    // The Rust plugins serve in the same host.
    let (ty, echoed) = ask(&mut alice, "echo", json!({"from": "rust"})).await;
    assert_eq!((ty.as_str(), echoed), ("echo", json!({"from": "rust"})));
    alice
        .send(
            "demo-message-send",
            json!({"text": "hi bob", "toUserId": "2"}),
        )
        .await;
    assert_eq!(
        bob.expect("demo-message-receive").await,
        json!({"fromUserId": 1, "text": "hi bob", "single": true})
    );

    // Tenant t2 got nothing from tenant t1's sends: its next message is its own echo.
    let (ty, _) = ask(&mut mallory, "echo", json!("mark")).await;
    assert_eq!(ty, "echo");

    // Every call succeeded or was an error value: no plugin faulted; the sidecars chose how
    // instances are kept.
    let status = host.plugins().await;
    for p in status["plugins"].as_array().unwrap() {
        assert_eq!(p["faults"], 0, "{p}");
        if let Some(polyglot) = PLUGINS.iter().find(|q| p["name"] == q.name) {
            let instances = if polyglot.reuse { "reused" } else { "fresh" };
            assert_eq!(p["instances"], instances, "{p}");
        }
    }
}

#[tokio::test]
async fn a_changed_js_plugin_is_hot_reloaded() {
    let v1 = component("js-greet");
    let v2 = js_greet_reloaded();
    assert_ne!(v1, v2);
    let host = TestHost::start(&["echo"]).await;
    // With reused instances: the pooled instances of the old version must not answer after
    // the swap.
    install(&host, "js-greet", "Hello", true, &v1);
    serving(&host, &[("js-greet", "0.1.0")]).await;
    let mut c = host.connect("1", 1, None).await;
    let (_, greeting) = ask(&mut c, "js-greet", json!({"name": "v1"})).await;
    assert_eq!(greeting["version"], "0.1.0", "{greeting}");

    // Replace the file: every request is answered by one version or the other until the
    // new one serves.
    host.install_plugin("js-greet", &v2);
    let mut answered = 0;
    eventually(LOAD_PATIENCE, "the new js-greet serving", async || {
        let (ty, greeting) = ask(&mut c, "js-greet", json!({"name": "reload"})).await;
        assert_eq!(ty, "js-greeting", "during the reload: {greeting}");
        answered += 1;
        match greeting["version"].as_str() {
            Some(RELOADED_VERSION) => Some(()),
            Some("0.1.0") => None,
            other => panic!("unexpected version {other:?}"),
        }
    })
    .await;
    assert!(answered >= 1);
    // Once the new version answers, the old one (and its pooled instances) never does again.
    for i in 0..5 {
        let (_, greeting) = ask(&mut c, "js-greet", json!({"name": format!("after {i}")})).await;
        assert_eq!(greeting["version"], RELOADED_VERSION, "{greeting}");
    }
    let status = host.plugins().await;
    let js = status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "js-greet")
        .cloned()
        .expect("js-greet listed");
    assert_eq!(js["version"], RELOADED_VERSION, "{js}");
    assert_eq!(
        js["message_types"],
        json!(["js-greet", "js-notify", "js-who"])
    );
    // The sidecar's config still applies to the new version.
    let (_, greeting) = ask(&mut c, "js-greet", json!({"name": "v2"})).await;
    assert_eq!(greeting["text"], "Hello, v2!");
}

/// The figures of the language table: component size, first load (read, hash, compile, write
/// the cache entry, link) and cached load (read, hash, load the cache entry, link; median of
/// 5), as the host does them, for each polyglot example and the Rust `echo`. The cache entry
/// is memory-mapped: its pages are read when the code first runs.
#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn measure_component_load_times() {
    let config = base_config(PathBuf::new()).plugins;
    let runtime = Runtime::new(&config).expect("engine");
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = CodeCache::new(cache_dir.path().to_path_buf(), &runtime.engine);
    let load = |file: &Path| {
        let started = Instant::now();
        let bytes = std::fs::read(file).unwrap();
        let (component, cached) = cache
            .load_or_compile(&runtime.engine, &content_hash(&bytes), &bytes, "polyglot")
            .unwrap();
        runtime.link(&component).expect("a plugin of the world");
        (started.elapsed(), cached, bytes.len())
    };
    let mut files: Vec<(String, PathBuf)> = PLUGINS
        .iter()
        .map(|p| {
            let file = format!("polyglot-dist/{}.wasm", p.name);
            (p.name.to_owned(), guests::guest_target_dir().join(file))
        })
        .collect();
    files.push(("echo (Rust)".into(), guests::path("echo")));
    println!("| plugin | size | first load (compile) | cached load (median of 5) |");
    println!("|---|---|---|---|");
    for (name, file) in files {
        let (first, cached, size) = load(&file);
        assert!(!cached);
        let mut loads: Vec<Duration> = (0..5)
            .map(|_| {
                let (took, cached, _) = load(&file);
                assert!(cached);
                took
            })
            .collect();
        loads.sort();
        println!(
            "| {name} | {:.1} KB | {:.2} s | {:.1} ms |",
            size as f64 / 1e3,
            first.as_secs_f64(),
            loads[2].as_secs_f64() * 1e3
        );
    }
}
