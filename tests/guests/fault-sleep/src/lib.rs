//! Waits inside WASI host calls, where epoch interruption cannot reach it: `std::thread::sleep`
//! blocks on a monotonic-clock pollable. The host's wall-clock deadline must still end every
//! call on time.
//!
//! - `sleep` (content: milliseconds, default 60000) sleeps, then replies `slept`.
//! - `nap` replies `nap` at once.
//! - Sidecar `[config]` `describe_sleep_ms` makes `describe` sleep first;
//!   `connect_sleep_ms` turns on lifecycle events and makes `on-connect` sleep.
//!
//! Written against the generated bindings rather than `Listener`, because `describe` has to
//! run code here.

use std::time::Duration;

use switchboard_guest::{
    Context,
    bindings::{
        exports::switchboard::plugin::listener::Guest,
        switchboard::plugin::{config, types},
    },
};

struct FaultSleep;

fn config_ms(key: &str) -> Option<u64> {
    config::get(key)?.parse().ok()
}

impl Guest for FaultSleep {
    fn describe() -> types::PluginInfo {
        if let Some(ms) = config_ms("describe_sleep_ms") {
            std::thread::sleep(Duration::from_millis(ms));
        }
        types::PluginInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            message_types: vec!["sleep".into(), "nap".into()],
            lifecycle_events: config_ms("connect_sleep_ms").is_some(),
        }
    }

    fn on_message(
        from: types::SessionInfo,
        msg_type: String,
        content: String,
    ) -> Result<(), types::Error> {
        let ctx = Context::new(from.into());
        if msg_type == "sleep" {
            let ms = content.trim().parse().unwrap_or(60_000);
            std::thread::sleep(Duration::from_millis(ms));
            return ctx.reply("slept", &ms).map_err(Into::into);
        }
        ctx.reply("nap", &()).map_err(Into::into)
    }

    fn on_connect(_session: types::SessionInfo) {
        if let Some(ms) = config_ms("connect_sleep_ms") {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }

    fn on_disconnect(_session: types::SessionInfo) {}
}

switchboard_guest::bindings::__export_switchboard_plugin!(
    FaultSleep with_types_in switchboard_guest::bindings
);
