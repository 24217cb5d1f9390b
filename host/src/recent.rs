//! The host's recent warnings and errors, for the admin page: a `tracing` layer keeps the
//! last [`KEPT`] events at WARN or ERROR in memory. The binary installs it; a host run in
//! process (tests, benchmarks) without it reports none.

use std::{collections::VecDeque, fmt::Write as _, sync::OnceLock};

use parking_lot::Mutex;
use serde::Serialize;
use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{Layer, layer::Context};

/// Events kept; older ones leave first.
pub const KEPT: usize = 100;
/// Longest message kept, in bytes; the rest is cut.
const MAX_MESSAGE_BYTES: usize = 1024;

/// One warning or error.
#[derive(Debug, Clone, Serialize)]
pub struct Warning {
    /// When, RFC 3339 in UTC.
    pub at: String,
    /// `WARN` or `ERROR`.
    pub level: &'static str,
    /// The module that logged it.
    pub target: String,
    /// The message and its fields, as `message field=value ...`.
    pub message: String,
}

fn ring() -> &'static Mutex<VecDeque<Warning>> {
    static RING: OnceLock<Mutex<VecDeque<Warning>>> = OnceLock::new();
    RING.get_or_init(|| Mutex::new(VecDeque::with_capacity(KEPT)))
}

/// The kept warnings, oldest first.
pub fn warnings() -> Vec<Warning> {
    ring().lock().iter().cloned().collect()
}

/// The layer that keeps them.
pub fn layer() -> RecentWarnings {
    RecentWarnings
}

/// Keeps WARN and ERROR events (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct RecentWarnings;

impl<S: Subscriber> Layer<S> for RecentWarnings {
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        let mut message = text.0;
        if message.len() > MAX_MESSAGE_BYTES {
            let mut end = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let warning = Warning {
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            level: if level == Level::ERROR {
                "ERROR"
            } else {
                "WARN"
            },
            target: event.metadata().target().to_owned(),
            message,
        };
        let mut ring = ring().lock();
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(warning);
    }
}

/// An event's message first, then its other fields as `name=value`.
struct Text(String);

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            if !rest.is_empty() {
                self.0.push(' ');
                self.0.push_str(&rest);
            }
        } else {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn warnings_and_errors_are_kept_with_their_fields_and_bounded() {
        let subscriber = tracing_subscriber::registry().with(super::layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(plugin = "echo", "listener trapped");
            for i in 0..super::KEPT {
                tracing::error!(i, "flood");
            }
            tracing::error!(file = "bad.wasm", "rejected");
        });
        let kept = super::warnings();
        assert_eq!(kept.len(), super::KEPT);
        assert!(kept.iter().all(|w| w.message != "not kept"));
        let last = kept.last().unwrap();
        assert_eq!(
            (last.level, last.message.as_str()),
            ("ERROR", "rejected file=\"bad.wasm\"")
        );
        assert_eq!(kept[0].message, "flood i=1", "the oldest left first");
    }
}
