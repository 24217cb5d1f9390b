//! Delivery: resolving a [`Target`] within a [`Scope`] to local sessions and pushing one shared,
//! encode-once [`Outbound`] frame into each session's bounded queue; and the [`Hub`] that adds
//! the cluster broker so a delivery also reaches the other nodes.

use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    cluster::{Broker, Publication, presence::ClusterPresence},
    envelope::Profile,
    sessions::{Frame, Pushed, Registry, UserKey},
};

/// A user, as targets name one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserRef {
    /// The user type.
    pub user_type: u32,
    /// The user id (numbers are accepted and read as their decimal text).
    #[serde(deserialize_with = "string_or_number")]
    pub user_id: String,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(serde_json::Number),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
    })
}

/// Who a message goes to, within a [`Scope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// One session by id.
    Session(String),
    /// Every session of a user.
    User(UserRef),
    /// Every session of each listed user, as one delivery.
    Users(Vec<UserRef>),
    /// Every session of a user type.
    UserType(u32),
    /// Every session.
    Everyone,
}

/// Which tenants a delivery may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Only sessions of this tenant (`None`: sessions without a tenant).
    Tenant(Option<Arc<str>>),
    /// Every tenant (trusted callers: the push API without `tenant_id`, cross-tenant plugins).
    All,
}

impl Scope {
    fn tenant_filter(&self) -> Option<&Option<Arc<str>>> {
        match self {
            Scope::Tenant(t) => Some(t),
            Scope::All => None,
        }
    }

    fn admits(&self, tenant: &Option<Arc<str>>) -> bool {
        match self {
            Scope::Tenant(t) => t == tenant,
            Scope::All => true,
        }
    }
}

/// One message on its way to many sessions. The frame text is encoded at most once per
/// profile and shared by every recipient of that profile.
#[derive(Debug)]
pub struct Outbound {
    /// The message type.
    pub msg_type: String,
    /// The content as JSON text.
    pub content: Box<RawValue>,
    encoded: [OnceLock<Utf8Bytes>; Profile::COUNT],
}

impl Outbound {
    /// A new message.
    pub fn new(msg_type: String, content: Box<RawValue>) -> Arc<Self> {
        Arc::new(Self {
            msg_type,
            content,
            encoded: Default::default(),
        })
    }

    /// The frame text for `profile`, encoded on first use.
    pub fn encoded(&self, profile: Profile) -> &Utf8Bytes {
        self.encoded[profile.index()]
            .get_or_init(|| profile.encode(&self.msg_type, &self.content).into())
    }
}

/// Pushes `msg` to every local session `target` names within `scope`; returns how many
/// sessions it was queued for.
pub fn deliver_local(
    registry: &Registry,
    target: &Target,
    scope: &Scope,
    msg: &Arc<Outbound>,
) -> usize {
    let mut queued = 0;
    let mut push = |s: &Arc<crate::sessions::Session>| {
        if s.push(Frame::Message(msg.clone())) == Pushed::Queued {
            queued += 1;
        }
    };
    match target {
        Target::Session(id) => {
            if let Some(s) = registry
                .get(id)
                .filter(|s| scope.admits(&s.principal.tenant_id))
            {
                push(&s);
            }
        }
        Target::User(user) => for_user(registry, user, scope, &mut push),
        Target::Users(users) => {
            // One delivery per session, however often a user is listed.
            let mut seen = std::collections::HashSet::with_capacity(users.len());
            users
                .iter()
                .filter(|user| seen.insert(*user))
                .for_each(|user| for_user(registry, user, scope, &mut push))
        }
        Target::UserType(user_type) => {
            registry.for_user_type(scope.tenant_filter(), *user_type, &mut push)
        }
        Target::Everyone => registry.for_all(scope.tenant_filter(), &mut push),
    }
    metrics::counter!("switchboard_deliveries_total").increment(queued as u64);
    queued
}

fn for_user(
    registry: &Registry,
    user: &UserRef,
    scope: &Scope,
    push: &mut impl FnMut(&Arc<crate::sessions::Session>),
) {
    let user_id: Arc<str> = user.user_id.as_str().into();
    match scope {
        Scope::Tenant(tenant) => registry.for_user(
            &UserKey {
                tenant: tenant.clone(),
                user_type: user.user_type,
                user_id,
            },
            push,
        ),
        // Trusted callers only: the user may exist in several tenants.
        Scope::All => registry.for_user_any_tenant(user.user_type, &user_id, push),
    }
}

/// Where every delivery goes through: local sessions, then the other nodes via the broker.
pub struct Hub {
    /// This node's sessions.
    pub registry: Arc<Registry>,
    /// Carries deliveries to the other nodes (a no-op for the local broker).
    pub broker: Arc<dyn Broker>,
    /// This node's id; session ids start with it.
    pub node_id: Arc<str>,
    /// Cluster-wide presence (Redis or NATS broker); `None`: this node's registry answers alone.
    pub presence: Option<Arc<ClusterPresence>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// What became of one [`Hub::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Sessions on this node the message was queued to.
    pub local: usize,
    /// The copy for the other nodes.
    pub cluster: ClusterLeg,
}

/// The cross-node part of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterLeg {
    /// Single node, or the target lives here: nothing to publish.
    NotNeeded,
    /// Handed to the broker (delivery is at most once: not a confirmation).
    Queued,
    /// The broker is down or its queue is full: other nodes will not get this message.
    Dropped,
}

impl Hub {
    /// Delivers to matching local sessions and publishes once for other nodes when the target
    /// may have recipients there.
    pub fn send(
        &self,
        target: Target,
        scope: Scope,
        msg_type: String,
        content: Box<RawValue>,
    ) -> Sent {
        let msg = Outbound::new(msg_type, content);
        let local = deliver_local(&self.registry, &target, &scope, &msg);
        let cluster = if !self.broker.is_clustered() || !self.may_be_remote(&target, local) {
            ClusterLeg::NotNeeded
        } else if self.broker.publish(Publication {
            origin: self.node_id.to_string(),
            target,
            scope,
            msg_type: msg.msg_type.clone(),
            content: msg.content.clone(),
        }) {
            ClusterLeg::Queued
        } else {
            ClusterLeg::Dropped
        };
        Sent { local, cluster }
    }

    /// Delivers a publication from another node to local sessions.
    pub fn deliver_publication(&self, p: Publication) -> usize {
        if *p.origin == *self.node_id {
            return 0;
        }
        let msg = Outbound::new(p.msg_type, p.content);
        deliver_local(&self.registry, &p.target, &p.scope, &msg)
    }

    /// Number of sessions of a user in the cluster. When cluster presence cannot be asked,
    /// this node's count is the answer (and the degradation is counted).
    pub async fn user_sessions(&self, key: &UserKey) -> usize {
        if let Some(presence) = &self.presence {
            match presence.user_sessions(key).await {
                Some(n) => return n,
                None => metrics::counter!("switchboard_presence_degraded_total").increment(1),
            }
        }
        self.registry.user_sessions(key)
    }

    /// Number of sessions of a user in the cluster, in every tenant; falls back like
    /// [`Hub::user_sessions`].
    pub async fn user_sessions_any_tenant(&self, user_type: u32, user_id: &Arc<str>) -> usize {
        if let Some(presence) = &self.presence {
            match presence.user_sessions_any_tenant(user_type, user_id).await {
                Some(n) => return n,
                None => metrics::counter!("switchboard_presence_degraded_total").increment(1),
            }
        }
        self.registry.user_sessions_any_tenant(user_type, user_id)
    }

    /// Ids of the online users of a user type in the cluster; `tenant` as in
    /// [`Registry::for_user_type`]. Falls back to this node's users like `user_sessions`.
    pub async fn online_users(
        &self,
        tenant: Option<&Option<Arc<str>>>,
        user_type: u32,
    ) -> Vec<String> {
        if let Some(presence) = &self.presence {
            match presence.online_users(tenant, user_type).await {
                Some(users) => return users,
                None => metrics::counter!("switchboard_presence_degraded_total").increment(1),
            }
        }
        self.registry.online_users(tenant, user_type)
    }

    fn may_be_remote(&self, target: &Target, local: usize) -> bool {
        match target {
            // A session lives on the node its id names.
            Target::Session(id) => local == 0 && !self.owns_session(id),
            _ => true,
        }
    }

    /// Whether `id` names this node exactly (a prefix match would confuse `a` with `a-1`).
    fn owns_session(&self, id: &str) -> bool {
        crate::sessions::node_of(id) == Some(&*self.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_their_json_forms() {
        let t: Target = serde_json::from_str(r#"{"user":{"user_type":2,"user_id":1}}"#).unwrap();
        assert_eq!(
            t,
            Target::User(UserRef {
                user_type: 2,
                user_id: "1".into()
            })
        );
        let t: Target = serde_json::from_str(r#"{"user_type":2}"#).unwrap();
        assert_eq!(t, Target::UserType(2));
        let t: Target = serde_json::from_str(r#""everyone""#).unwrap();
        assert_eq!(t, Target::Everyone);
    }

    #[test]
    fn encodes_once_per_profile() {
        let m = Outbound::new(
            "t".into(),
            RawValue::from_string("{\"a\":1}".into()).unwrap(),
        );
        let a = m.encoded(Profile::Native).as_str().as_ptr();
        let b = m.encoded(Profile::Native).as_str().as_ptr();
        assert_eq!(a, b);
        assert_eq!(
            m.encoded(Profile::Yudao).as_str(),
            r#"{"type":"t","content":"{\"a\":1}"}"#
        );
    }
}
