//! Targeted routing on every broker (`redis`, `redis-cluster`, `nats`, `rabbitmq`): three nodes, and the per-node counters of what each
//! received from the others show that a delivery to a user reaches only the node holding the
//! user, while broadcasts reach every node.

use serde_json::json;
use switchboard_tests::{
    PATIENCE,
    cluster::{Fabric, Node},
    eventually, for_each_broker, metric,
};

for_each_broker!(per_user_deliveries_reach_only_the_node_holding_the_user);

/// (targeted, broadcast) publications `node` has received from the other nodes.
async fn received(node: &Node) -> (f64, f64) {
    let page = node.metrics().await;
    let of = |route: &str| {
        let series = format!("switchboard_cluster_received_total{{route=\"{route}\"}}");
        metric(&page, &series).unwrap_or(0.0)
    };
    (of("targeted"), of("broadcast"))
}

async fn per_user_deliveries_reach_only_the_node_holding_the_user(broker: &str) {
    let fabric = Fabric::start(broker).await;
    let sender = fabric.node("route-a", &[], &[]).await;
    let holder = fabric.node("route-b", &[], &[]).await;
    let bystander = fabric.node("route-c", &[], &[]).await;
    let mut user = holder.connect("u", 1, Some("t")).await;
    let mut other = bystander.connect("w", 1, Some("t")).await;
    sender.wait_sees(1, "u", Some("t"), 1).await;
    sender.wait_sees(1, "w", Some("t"), 1).await;

    const N: u64 = 20;
    for i in 0..N {
        let (status, body) = sender
            .push(json!({"to": {"user": {"user_type": 1, "user_id": "u"}}, "type": "direct", "content": i, "tenant_id": "t"}))
            .await;
        assert_eq!(
            (status, &body["cluster"]),
            (202, &json!("queued")),
            "{body}"
        );
        assert_eq!(user.expect("direct").await, json!(i));
    }
    // Without a tenant (a trusted caller: every tenant), the same.
    sender
        .push(json!({"to": {"user": {"user_type": 1, "user_id": "u"}}, "type": "direct", "content": N}))
        .await;
    assert_eq!(user.expect("direct").await, json!(N));
    // A list of users on two nodes: one copy to each of them.
    sender
        .push(json!({"to": {"users": [{"user_type": 1, "user_id": "u"}, {"user_type": 1, "user_id": "w"}]}, "type": "both", "content": 0, "tenant_id": "t"}))
        .await;
    assert_eq!(user.expect("both").await, json!(0));
    assert_eq!(other.expect("both").await, json!(0));
    // A user nobody holds: published nowhere.
    sender
        .push(json!({"to": {"user": {"user_type": 1, "user_id": "nobody"}}, "type": "lost", "content": 0, "tenant_id": "t"}))
        .await;
    // A broadcast reaches every node; it follows the pushes above on each node's link, so
    // once it is in, so is everything sent before it.
    sender
        .push(json!({"to": {"everyone": true}, "type": "marker", "content": 1}))
        .await;
    assert!(user.until_marker(1).await.is_empty());
    assert!(other.until_marker(1).await.is_empty());

    let (holder_targeted, holder_broadcast) = received(&holder).await;
    let (bystander_targeted, bystander_broadcast) = received(&bystander).await;
    eprintln!(
        "{broker}: holder received {holder_targeted} targeted + {holder_broadcast} broadcast, \
         bystander {bystander_targeted} targeted + {bystander_broadcast} broadcast"
    );
    assert_eq!(
        (holder_targeted, bystander_targeted),
        (N as f64 + 2.0, 1.0),
        "the user's deliveries reached only its node; the list one copy per node"
    );
    assert_eq!((holder_broadcast, bystander_broadcast), (1.0, 1.0));
    let page = sender.metrics().await;
    let routed = |route: &str| {
        metric(
            &page,
            &format!("switchboard_cluster_routed_total{{route=\"{route}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        (routed("targeted"), routed("nowhere"), routed("broadcast")),
        (N as f64 + 2.0, 1.0, 1.0)
    );
    let (sender_targeted, sender_broadcast) = received(&sender).await;
    assert_eq!((sender_targeted, sender_broadcast), (0.0, 0.0));
}

#[tokio::test]
async fn broadcast_routing_sends_every_delivery_to_every_node() {
    let fabric = Fabric::start("nats").await;
    let env = [("SWITCHBOARD_CLUSTER__ROUTING", "broadcast")];
    let sender = fabric.node("all-a", &[], &env).await;
    let holder = fabric.node("all-b", &[], &env).await;
    let bystander = fabric.node("all-c", &[], &env).await;
    let mut user = holder.connect("u", 1, None).await;
    let mut other = bystander.connect("w", 1, None).await;
    sender
        .push(json!({"to": {"user": {"user_type": 1, "user_id": "u"}}, "type": "direct", "content": 0}))
        .await;
    assert_eq!(user.expect("direct").await, json!(0));
    sender
        .push(json!({"to": {"everyone": true}, "type": "marker", "content": 1}))
        .await;
    assert!(other.until_marker(1).await.is_empty());
    assert_eq!(received(&bystander).await, (0.0, 2.0));
}

/// CPU time (user + system) the process has used so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let at = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    at(11) + at(12)
}

/// Per-user chat on 2, 4 and 6 nodes, targeted and broadcast: the cross-node receptions (the
/// traffic every node has to read) stay at one per message when targeted, and grow with the
/// nodes when broadcast. Prints the table with the nodes' CPU time.
#[tokio::test]
async fn per_user_chat_traffic_stays_flat_with_more_nodes_when_targeted() {
    const MESSAGES: usize = 300;
    let fabric = Fabric::start("nats").await;
    let mut table = Vec::new();
    for nodes in [2usize, 4, 6] {
        for routing in ["targeted", "broadcast"] {
            let env = [("SWITCHBOARD_CLUSTER__ROUTING", routing)];
            let mut cluster = Vec::new();
            for i in 0..nodes {
                cluster.push(
                    fabric
                        .node(&format!("s{nodes}{routing}{i}"), &[], &env)
                        .await,
                );
            }
            // One user per node; every node sees every user before the chat starts.
            let mut users = Vec::new();
            for (i, node) in cluster.iter().enumerate() {
                users.push(node.connect(&format!("u{i}"), 1, None).await);
            }
            for node in &cluster {
                for i in 0..nodes {
                    node.wait_sees(1, &format!("u{i}"), None, 1).await;
                }
            }
            let cpu_before: u64 = cluster.iter().map(|n| cpu_ticks(n.pid())).sum();
            // Message k goes from node k to the user on the next node.
            for k in 0..MESSAGES {
                let from = &cluster[k % nodes];
                let to = format!("u{}", (k + 1) % nodes);
                let (status, _) = from
                    .push(json!({"to": {"user": {"user_type": 1, "user_id": to}}, "type": "chat", "content": k}))
                    .await;
                assert_eq!(status, 202);
            }
            for (i, user) in users.iter_mut().enumerate() {
                for _ in (0..MESSAGES).filter(|k| (k + 1) % nodes == i) {
                    user.expect("chat").await;
                }
            }
            let expected = match routing {
                "targeted" => MESSAGES as f64,
                _ => (MESSAGES * (nodes - 1)) as f64,
            };
            // The bystanders' copies may still be on their way.
            let total = eventually(PATIENCE, "every copy to be counted", async || {
                let mut total = 0.0;
                for node in &cluster {
                    let (targeted, broadcast) = received(node).await;
                    total += targeted + broadcast;
                }
                (total >= expected).then_some(total)
            })
            .await;
            let cpu = cluster.iter().map(|n| cpu_ticks(n.pid())).sum::<u64>() - cpu_before;
            assert_eq!(total, expected, "{nodes} nodes, {routing}");
            let received = total;
            table.push(format!(
                "| {nodes} | {routing} | {received} | {:.2} | {cpu} |",
                received / MESSAGES as f64
            ));
        }
    }
    eprintln!(
        "per-user chat over nats, {MESSAGES} messages, each to a user on another node:\n\
         | nodes | routing | cross-node receptions | per message | nodes' CPU (ticks of 10 ms) |\n\
         |---|---|---|---|---|\n{}",
        table.join("\n")
    );
}
