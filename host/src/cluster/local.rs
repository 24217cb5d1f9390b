//! The in-process broker: a cluster of one node.

use super::{Broker, BrokerState, Publication};

/// Publishes nothing: every session is local.
#[derive(Debug, Default)]
pub(crate) struct LocalBroker;

impl Broker for LocalBroker {
    fn is_clustered(&self) -> bool {
        false
    }

    fn publish(&self, _publication: Publication) -> bool {
        true
    }

    fn state(&self) -> BrokerState {
        BrokerState::Local
    }

    fn name(&self) -> &'static str {
        "local"
    }
}
