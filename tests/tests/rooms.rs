//! The `rooms` example plugin: membership in key-value state, so rooms work across cluster
//! nodes with Redis, survive a plugin reload and a host restart, and a full store is an
//! error reply, never a fault.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_tests::{
    PATIENCE,
    client::Client,
    cluster::{Node, RedisServer, require_redis},
    guests,
};

async fn join(c: &mut Client, room: &str) {
    c.send("room-join", json!({ "room": room })).await;
    assert_eq!(c.expect("room-joined").await, json!({ "room": room }));
}

fn said(room: &str, user_id: &str, text: &str) -> Value {
    json!({ "room": room, "from": { "user_type": 2, "user_id": user_id }, "text": text })
}

async fn faults(node: &Node) -> Value {
    let (_, list) = node.get("/api/v1/plugins").await;
    list["plugins"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "rooms"))
        .map(|p| p["faults"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn members_on_two_nodes_hear_the_room_and_no_one_else_does() {
    if !require_redis() {
        return;
    }
    let redis = RedisServer::start().await;
    let a = Node::start("rooms-a", &redis.url(), &["rooms"], &[]).await;
    let b = Node::start("rooms-b", &redis.url(), &["rooms"], &[]).await;
    let mut one = a.connect("1", 2, Some("t1")).await;
    let mut two = b.connect("2", 2, Some("t1")).await;
    let mut outsider = b.connect("3", 2, Some("t1")).await;
    let mut other_tenant = a.connect("2", 2, Some("t2")).await;
    // Room messages are targeted at the members' nodes, once presence has them.
    b.wait_sees(2, "1", Some("t1"), 1).await;
    join(&mut one, "r1").await;
    join(&mut two, "r1").await;
    // Same user id and room in another tenant: another room.
    join(&mut other_tenant, "r1").await;

    two.send("room-say", json!({"room": "r1", "text": "hi"}))
        .await;
    assert_eq!(one.expect("room-message").await, said("r1", "2", "hi"));
    assert_eq!(two.expect("room-message").await, said("r1", "2", "hi"));

    outsider
        .send("room-say", json!({"room": "r1", "text": "let me in"}))
        .await;
    let refused = outsider.expect("error").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert!(
        other_tenant
            .next_json_within(Duration::from_millis(300))
            .await
            .is_none()
    );

    // Leaving stops the messages; the one who left may not speak.
    one.send("room-leave", json!({"room": "r1"})).await;
    assert_eq!(one.expect("room-left").await, json!({"room": "r1"}));
    two.send("room-say", json!({"room": "r1", "text": "still here"}))
        .await;
    assert_eq!(
        two.expect("room-message").await,
        said("r1", "2", "still here")
    );
    one.send("room-say", json!({"room": "r1", "text": "back?"}))
        .await;
    assert_eq!(one.expect("error").await["code"], "forbidden");
    assert_eq!(faults(&a).await, 0);
    assert_eq!(faults(&b).await, 0);
}

/// The component with a custom section appended: other bytes, same code, so the host
/// reloads it as a new version.
fn another_version(bytes: &[u8]) -> Vec<u8> {
    let name = b"reload";
    let payload = b"1";
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    out.push((1 + name.len() + payload.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn rooms_survive_a_plugin_reload_and_a_host_restart() {
    if !require_redis() {
        return;
    }
    let redis = RedisServer::start().await;
    let mut node = Node::start("rooms-restart", &redis.url(), &["rooms"], &[]).await;
    let mut one = node.connect("1", 2, None).await;
    join(&mut one, "lobby").await;

    let (_, before) = node.get("/api/v1/plugins").await;
    let file = node.plugins_dir().join("rooms.wasm");
    let bytes = std::fs::read(guests::path("rooms")).unwrap();
    let tmp = node.plugins_dir().join(".rooms.wasm.tmp");
    std::fs::write(&tmp, another_version(&bytes)).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let hash = |list: &Value| list["plugins"][0]["hash"].clone();
    switchboard_tests::eventually(PATIENCE, "the plugin to reload", async || {
        let (_, now) = node.get("/api/v1/plugins").await;
        (hash(&now) != hash(&before) && !hash(&now).is_null()).then_some(())
    })
    .await;
    one.send("room-say", json!({"room": "lobby", "text": "after reload"}))
        .await;
    assert_eq!(one.expect("room-message").await["text"], "after reload");

    one.close().await;
    node.terminate(PATIENCE).await;
    let node = Node::start("rooms-restart", &redis.url(), &["rooms"], &[]).await;
    let mut one = node.connect("1", 2, None).await;
    one.send(
        "room-say",
        json!({"room": "lobby", "text": "after restart"}),
    )
    .await;
    assert_eq!(one.expect("room-message").await["text"], "after restart");
}

#[tokio::test]
async fn a_full_store_is_an_error_reply_not_a_fault() {
    let node = Node::start_local(&["rooms"], &[("SWITCHBOARD_PLUGINS__STATE_MAX_KEYS", "1")]).await;
    let mut one = node.connect("1", 2, None).await;
    join(&mut one, "r1").await;
    one.send("room-join", json!({"room": "r2"})).await;
    let error = one.expect("error").await;
    assert_eq!(error["code"], "listener_error", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("state_max_keys"),
        "{error}"
    );
    // Still serving: r1 works.
    one.send("room-say", json!({"room": "r1", "text": "ok"}))
        .await;
    assert_eq!(one.expect("room-message").await["text"], "ok");
    assert_eq!(faults(&node).await, 0);
}
