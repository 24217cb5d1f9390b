//! A broker's link health: conditions that must all hold for deliveries to cross nodes (Redis:
//! its subscriber and its publisher answer; NATS: connected, and the last probe came back).
//! Each change of the overall state moves `switchboard_broker_up` and is logged once.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use tokio::sync::mpsc;

use super::{BrokerState, Publication};

/// How long a probe, a connection attempt or a batch of publishes may take before the link
/// counts as down.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// Conditions of one broker; all start false (down until proven up).
#[derive(Debug)]
pub(crate) struct Health {
    /// Broker name for the log lines.
    broker: &'static str,
    conditions: [AtomicBool; 2],
}

impl Health {
    /// Both conditions down.
    pub(super) fn new(broker: &'static str) -> Self {
        Self {
            broker,
            conditions: Default::default(),
        }
    }

    /// Whether deliveries can cross nodes now.
    pub(crate) fn up(&self) -> bool {
        self.conditions.iter().all(|c| c.load(Ordering::Acquire))
    }

    /// Records condition `index` (a broker's named constant); updates the gauge, and logs when
    /// the broker's overall state changes.
    pub(super) fn set(&self, index: usize, up: bool, why: &str) {
        let before = self.up();
        self.conditions[index].store(up, Ordering::Release);
        let after = self.up();
        metrics::gauge!("switchboard_broker_up").set(if after { 1.0 } else { 0.0 });
        if before != after {
            if after {
                tracing::info!("{} broker: up", self.broker);
            } else {
                tracing::warn!(
                    reason = why,
                    "{} broker: down; local delivery continues, retrying",
                    self.broker
                );
            }
        }
    }

    /// The state `/readyz` and `/healthz` report.
    pub(super) fn state(&self) -> BrokerState {
        if self.up() {
            BrokerState::Up
        } else {
            BrokerState::Down
        }
    }

    /// Hands `publication` to the broker's publisher task while the broker is up; refuses and
    /// counts it when the broker is down or the queue is full (`Broker::publish`'s contract).
    pub(super) fn offer(
        &self,
        outbound: &mpsc::Sender<Publication>,
        publication: Publication,
    ) -> bool {
        if !self.up() || outbound.try_send(publication).is_err() {
            metrics::counter!("switchboard_messages_dropped_total", "reason" => "broker_down")
                .increment(1);
            return false;
        }
        true
    }
}
