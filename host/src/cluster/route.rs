//! Targeted routing: which nodes a publication goes to. One decision for every broker, taken
//! in the broker's publisher task (so `Hub::send` never waits for it):
//!
//! - to a session: the node its id names;
//! - to a user or a list of users: the nodes cluster presence says hold a session of one of
//!   them (none: nothing is published);
//! - to a user type, a tenant or everyone: every node, on the broadcast channel.
//!
//! When presence cannot be asked (its store is down) a targeted publication is broadcast
//! instead: nothing is lost by routing that a broadcast would have delivered. With
//! `cluster.routing = "broadcast"` every publication is broadcast.
//!
//! A session is found by targeted routing once its node has announced it: one round trip
//! after it connects (up to 100 ms later during a burst of connects, which is written at
//! once). A delivery sent from another node in between misses it, as one sent before it
//! connected would.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use super::{Publication, presence::ClusterPresence, wanted::Wanted};
use crate::target::{Scope, Target, UserRef};

/// Where one publication goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Every node, on the broadcast channel.
    Everyone,
    /// These nodes only, each on its own channel; empty: nowhere.
    Nodes(BTreeSet<Arc<str>>),
}

/// Decides the routes of publications for one node.
#[derive(Debug)]
pub(crate) struct Router {
    /// This node: never a destination.
    node_id: Arc<str>,
    /// Who holds which user.
    presence: Arc<ClusterPresence>,
    /// False: every publication is broadcast.
    targeted: bool,
}

impl Router {
    /// Routes by `presence` when `targeted`, else broadcasts everything.
    pub(crate) fn new(node_id: Arc<str>, presence: Arc<ClusterPresence>, targeted: bool) -> Self {
        Self {
            node_id,
            presence,
            targeted,
        }
    }

    /// The route of each publication of `batch`, with one presence lookup for all of them.
    pub(crate) async fn routes(&self, batch: &[Publication]) -> Vec<Route> {
        if !self.targeted {
            return vec![Route::Everyone; batch.len()];
        }
        let mut wanted: Vec<Wanted> = Vec::new();
        let mut index: HashMap<Wanted, usize> = HashMap::new();
        let mut want = |user: &UserRef, scope: &Scope| {
            let w = Wanted::new(user, scope);
            *index.entry(w.clone()).or_insert_with(|| {
                wanted.push(w);
                wanted.len() - 1
            })
        };
        // Per publication: the indexes of its users in `wanted`.
        let users: Vec<Vec<usize>> = batch
            .iter()
            .map(|p| match &p.target {
                Target::User(u) => vec![want(u, &p.scope)],
                Target::Users(us) => us.iter().map(|u| want(u, &p.scope)).collect(),
                _ => Vec::new(),
            })
            .collect();
        let found = if wanted.is_empty() {
            Some(Vec::new())
        } else {
            self.presence.locate(&wanted).await
        };
        batch
            .iter()
            .zip(users)
            .map(|(p, users)| self.route(p, &users, found.as_deref()))
            .collect()
    }

    /// The route of `p`, whose users are `users` in `found` (`None`: presence is unknown).
    fn route(
        &self,
        p: &Publication,
        users: &[usize],
        found: Option<&[BTreeSet<Arc<str>>]>,
    ) -> Route {
        let route = match &p.target {
            Target::Session(id) => match crate::sessions::node_of(id) {
                Some(node) if *node != *self.node_id => {
                    Route::Nodes(BTreeSet::from([Arc::from(node)]))
                }
                // Here (delivered already) or no node's: nowhere else.
                _ => Route::Nodes(BTreeSet::new()),
            },
            Target::User(_) | Target::Users(_) => match found {
                Some(found) => Route::Nodes(
                    users
                        .iter()
                        .filter_map(|i| found.get(*i))
                        .flatten()
                        .filter(|n| **n != self.node_id)
                        .cloned()
                        .collect(),
                ),
                None => Route::Everyone,
            },
            Target::UserType(_) | Target::Everyone => Route::Everyone,
        };
        let label = match &route {
            Route::Everyone => "broadcast",
            Route::Nodes(nodes) if nodes.is_empty() => "nowhere",
            Route::Nodes(_) => "targeted",
        };
        metrics::counter!("switchboard_cluster_routed_total", "route" => label).increment(1);
        route
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(target: Target, scope: Scope) -> Publication {
        Publication {
            origin: "me".into(),
            target,
            scope,
            msg_type: "t".into(),
            content: serde_json::value::RawValue::from_string("1".into()).unwrap(),
            via: Default::default(),
        }
    }

    fn user(id: &str) -> UserRef {
        UserRef {
            user_type: 1,
            user_id: id.into(),
        }
    }

    fn router() -> Router {
        // The presence is not asked by `route`.
        let presence = Arc::new(ClusterPresence::Unreachable);
        Router::new("me".into(), presence, true)
    }

    fn nodes(names: &[&str]) -> Route {
        Route::Nodes(names.iter().map(|n| Arc::<str>::from(*n)).collect())
    }

    #[test]
    fn sessions_go_to_the_node_their_id_names() {
        let r = router();
        let id = format!("other-{}", "0".repeat(32));
        let p = publication(Target::Session(id), Scope::All);
        assert_eq!(r.route(&p, &[], None), nodes(&["other"]));
        let mine = format!("me-{}", "0".repeat(32));
        let p = publication(Target::Session(mine), Scope::All);
        assert_eq!(r.route(&p, &[], None), nodes(&[]));
        let p = publication(Target::Session("garbage".into()), Scope::All);
        assert_eq!(r.route(&p, &[], None), nodes(&[]));
    }

    #[test]
    fn users_go_to_the_nodes_that_hold_them_and_everywhere_when_unknown() {
        let r = router();
        let found: Vec<BTreeSet<Arc<str>>> = vec![
            ["a".into(), "me".into()].into(),
            ["b".into()].into(),
            BTreeSet::new(),
        ];
        let p = publication(Target::Users(vec![user("x"), user("y")]), Scope::All);
        assert_eq!(r.route(&p, &[0, 1], Some(&found)), nodes(&["a", "b"]));
        let p = publication(Target::User(user("z")), Scope::All);
        assert_eq!(r.route(&p, &[2], Some(&found)), nodes(&[]));
        // Presence could not be asked: broadcast.
        assert_eq!(r.route(&p, &[2], None), Route::Everyone);
        // Broadcast targets stay broadcasts.
        let p = publication(Target::UserType(1), Scope::Tenant(None));
        assert_eq!(r.route(&p, &[], Some(&found)), Route::Everyone);
        let p = publication(Target::Everyone, Scope::All);
        assert_eq!(r.route(&p, &[], Some(&found)), Route::Everyone);
    }

    #[tokio::test]
    async fn one_lookup_serves_a_batch_and_users_are_looked_up_once() {
        let r = router();
        let batch = [
            publication(Target::User(user("x")), Scope::Tenant(Some("t".into()))),
            publication(
                Target::Users(vec![user("x"), user("y")]),
                Scope::Tenant(Some("t".into())),
            ),
            publication(Target::Everyone, Scope::All),
        ];
        // The unreachable presence answers nothing: users are broadcast.
        assert_eq!(
            r.routes(&batch).await,
            vec![Route::Everyone, Route::Everyone, Route::Everyone]
        );
        let untargeted = Router::new("me".into(), Arc::new(ClusterPresence::Unreachable), false);
        let p = publication(Target::Session(format!("a-{}", "0".repeat(32))), Scope::All);
        assert_eq!(untargeted.routes(&[p]).await, vec![Route::Everyone]);
    }
}
