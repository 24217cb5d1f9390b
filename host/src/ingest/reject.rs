//! Messages a source cannot decode or route: every one is counted in
//! `switchboard_ingest_rejected_total{source,reason}`; each reason is logged at most once per
//! interval, with how many more were rejected since, so a back end that floods a channel with
//! bad messages cannot flood the log.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

/// Why a message was skipped; the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// Larger than the source's `max_message_bytes`.
    TooLarge,
    /// Not the framework's message: not JSON, or fields of the wrong shape.
    Malformed,
    /// An AMQP message that is not JSON (e.g. Java serialization: the back end lacks
    /// yudao's `Jackson2JsonMessageConverter`).
    ContentType,
    /// No recipient named (yudao: neither a session id nor a user type).
    NoTarget,
    /// A message type that is missing, empty or longer than 128 characters.
    BadType,
    /// A tenant header that is neither a string nor a number.
    BadTenant,
}

impl Reason {
    /// Every reason, registered at zero for each source.
    pub(crate) const ALL: [Reason; 6] = [
        Reason::TooLarge,
        Reason::Malformed,
        Reason::ContentType,
        Reason::NoTarget,
        Reason::BadType,
        Reason::BadTenant,
    ];

    /// The `reason` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::Malformed => "malformed",
            Reason::ContentType => "content_type",
            Reason::NoTarget => "no_target",
            Reason::BadType => "bad_type",
            Reason::BadTenant => "bad_tenant",
        }
    }
}

/// One rejected message: the reason and what exactly was wrong (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reject {
    /// The counted reason.
    pub reason: Reason,
    /// What was wrong, for the log line.
    pub detail: String,
}

impl Reject {
    pub(crate) fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// The reject counts of one source, and when each reason was last logged.
#[derive(Debug)]
pub(crate) struct Rejects {
    /// The `source` label.
    source: Arc<str>,
    /// Shortest time between two log lines of one reason.
    interval: Duration,
    /// Per reason: when it was last logged, and how many were rejected since.
    logged: HashMap<Reason, (Instant, u64)>,
}

impl Rejects {
    pub(crate) fn new(source: Arc<str>, interval: Duration) -> Self {
        for reason in Reason::ALL {
            metrics::counter!("switchboard_ingest_rejected_total", "source" => source.to_string(), "reason" => reason.as_str())
                .increment(0);
        }
        Self {
            source,
            interval,
            logged: HashMap::new(),
        }
    }

    /// Counts `reject`, and logs it unless its reason was logged within the interval.
    pub(crate) fn record(&mut self, reject: &Reject) {
        let reason = reject.reason.as_str();
        metrics::counter!("switchboard_ingest_rejected_total", "source" => self.source.to_string(), "reason" => reason)
            .increment(1);
        let now = Instant::now();
        match self.logged.get_mut(&reject.reason) {
            Some((last, suppressed)) if now.duration_since(*last) < self.interval => {
                *suppressed += 1;
            }
            entry => {
                let suppressed = entry.map_or(0, |(_, n)| *n);
                tracing::warn!(
                    source = %self.source,
                    reason,
                    detail = %reject.detail,
                    suppressed,
                    "ingest: message skipped (logged once per reason per {:?}; `suppressed` more since the last line)",
                    self.interval
                );
                self.logged.insert(reject.reason, (now, 0));
            }
        }
    }

    /// How many of `reason` were skipped without a log line since it was last logged.
    #[cfg(test)]
    fn suppressed(&self, reason: Reason) -> u64 {
        self.logged.get(&reason).map_or(0, |(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_is_logged_once_per_interval() {
        let mut rejects = Rejects::new("t".into(), Duration::from_secs(3600));
        let bad = Reject::new(Reason::Malformed, "x");
        for _ in 0..5 {
            rejects.record(&bad);
        }
        assert_eq!(rejects.suppressed(Reason::Malformed), 4);
        rejects.record(&Reject::new(Reason::NoTarget, "y"));
        assert_eq!(rejects.suppressed(Reason::NoTarget), 0);
        let mut fast = Rejects::new("t".into(), Duration::ZERO);
        fast.record(&bad);
        fast.record(&bad);
        assert_eq!(fast.suppressed(Reason::Malformed), 0);
    }
}
