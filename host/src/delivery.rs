//! Delivery: resolving a `Target` within a `Scope` to local sessions and pushing one shared,
//! encode-once [`Outbound`] frame into each session's bounded queue; and the [`Hub`] that adds
//! the cluster broker so a delivery also reaches the other nodes.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::{
    cluster::{Broker, Publication, presence::ClusterPresence},
    frame::{Frame, Outbound},
    sessions::{Pushed, Registry, UserKey},
    target::{Scope, Target, UserRef},
    via::Via,
};

/// Pushes `msg` to every local session `target` names within `scope` that `via` admits;
/// returns how many sessions it was queued for.
pub(crate) fn deliver_local(
    registry: &Registry,
    target: &Target,
    scope: &Scope,
    via: &Via,
    msg: &Arc<Outbound>,
) -> usize {
    let mut queued = 0;
    let mut push = |s: &Arc<crate::sessions::Session>| {
        if via.admits(s.transport, s.endpoint())
            && s.push(Frame::Message(msg.clone())) == Pushed::Queued
        {
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
    pub(crate) broker: Arc<dyn Broker>,
    /// This node's id; session ids start with it.
    pub node_id: Arc<str>,
    /// Cluster-wide presence (any broker but `local`); `None`: this node's registry answers
    /// alone.
    pub(crate) presence: Option<Arc<ClusterPresence>>,
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
pub(crate) struct Sent {
    /// Sessions on this node the message was queued to.
    pub local: usize,
    /// The copy for the other nodes.
    pub cluster: ClusterLeg,
}

/// The cross-node part of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClusterLeg {
    /// Single node, or the target lives here: nothing to publish.
    NotNeeded,
    /// Handed to the broker (delivery is at most once: not a confirmation).
    Queued,
    /// The broker is down or its queue is full: other nodes will not get this message.
    Dropped,
}

impl Hub {
    /// A hub for one node: deliveries stay here (the local broker), presence is the registry's.
    pub fn single_node(registry: Arc<Registry>, node_id: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            registry,
            broker: Arc::new(crate::cluster::local::LocalBroker),
            node_id,
            presence: None,
        })
    }

    /// A hub joined to the other nodes by `broker`, asking `presence` who is where.
    pub(crate) fn clustered(
        registry: Arc<Registry>,
        broker: Arc<dyn Broker>,
        node_id: Arc<str>,
        presence: Arc<ClusterPresence>,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry,
            broker,
            node_id,
            presence: Some(presence),
        })
    }

    /// Delivers to matching local sessions and publishes once for other nodes when the target
    /// may have recipients there. `via` limits the channels, here and on the other nodes.
    pub(crate) fn send(
        &self,
        target: Target,
        scope: Scope,
        via: Via,
        msg_type: String,
        content: Box<RawValue>,
    ) -> Sent {
        let msg = Outbound::new(msg_type, content);
        let local = deliver_local(&self.registry, &target, &scope, &via, &msg);
        let cluster = if !self.broker.is_clustered() || !self.may_be_remote(&target, local) {
            ClusterLeg::NotNeeded
        } else if self.broker.publish(Publication {
            origin: self.node_id.to_string(),
            target,
            scope,
            msg_type: msg.msg_type.clone(),
            content: msg.content.clone(),
            via,
        }) {
            ClusterLeg::Queued
        } else {
            ClusterLeg::Dropped
        };
        Sent { local, cluster }
    }

    /// Delivers to this node's sessions that `via` admits only, never publishing to the
    /// other nodes: for messages that every node receives by itself (ingest sources), where a
    /// cluster publish would deliver them twice.
    pub(crate) fn deliver_here(
        &self,
        target: &Target,
        scope: &Scope,
        via: &Via,
        msg_type: String,
        content: Box<RawValue>,
    ) -> usize {
        let msg = Outbound::new(msg_type, content);
        deliver_local(&self.registry, target, scope, via, &msg)
    }

    /// Delivers a publication from another node to local sessions.
    pub(crate) fn deliver_publication(&self, p: Publication) -> usize {
        if *p.origin == *self.node_id {
            return 0;
        }
        let msg = Outbound::new(p.msg_type, p.content);
        deliver_local(&self.registry, &p.target, &p.scope, &p.via, &msg)
    }

    /// Number of sessions of a user in the cluster. When cluster presence cannot be asked,
    /// this node's count is the answer (and the degradation is counted).
    pub(crate) async fn user_sessions(&self, key: &UserKey) -> usize {
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
    pub(crate) async fn user_sessions_any_tenant(
        &self,
        user_type: u32,
        user_id: &Arc<str>,
    ) -> usize {
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
    pub(crate) async fn online_users(
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
