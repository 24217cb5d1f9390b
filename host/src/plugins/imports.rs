//! The host side of the plugin's imports: sender, presence, logging, config.
//! Every send is scoped to the tenant of the session being handled unless the plugin holds
//! the `cross-tenant` capability; `everyone` needs `broadcast`.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::{
    bindings::switchboard::plugin::{config, logging, presence, sender, types},
    escape::escape_control,
    state::CallState,
};
use crate::{
    envelope::MAX_TYPE_LEN,
    rate::Verdict,
    sessions::UserKey,
    target::{Scope, Target, UserRef},
};

impl types::Host for CallState {}

fn user_ref(u: types::UserRef) -> UserRef {
    UserRef {
        user_type: u.user_type,
        user_id: u.user_id,
    }
}

impl CallState {
    fn deliver(
        &mut self,
        scope: Scope,
        to: types::Target,
        msg_type: String,
        content: String,
    ) -> Result<(), types::Error> {
        if msg_type.is_empty() || msg_type.len() > MAX_TYPE_LEN {
            return Err(types::Error::InvalidContent(format!(
                "message type must be 1 to {MAX_TYPE_LEN} characters"
            )));
        }
        let content = RawValue::from_string(content)
            .map_err(|e| types::Error::InvalidContent(format!("content is not JSON: {e}")))?;
        if self.sends >= self.env.max_sends_per_call {
            return Err(types::Error::Forbidden(format!(
                "at most {} sends per call",
                self.env.max_sends_per_call
            )));
        }
        let target = match to {
            types::Target::Session(id) => Target::Session(id),
            types::Target::User(u) => Target::User(user_ref(u)),
            types::Target::Users(us) => Target::Users(us.into_iter().map(user_ref).collect()),
            types::Target::UserType(t) => Target::UserType(t),
            types::Target::Everyone => {
                if !self.env.capabilities.broadcast {
                    return Err(types::Error::Forbidden(
                        "sending to everyone needs the broadcast capability".into(),
                    ));
                }
                Target::Everyone
            }
        };
        self.sends += 1;
        // A cross-node copy dropped while the broker is down is counted by the broker; the
        // plugin's send still succeeded for this node's sessions.
        self.env
            .hub
            .send(target, scope, self.via.clone(), msg_type, content);
        Ok(())
    }
}

impl sender::Host for CallState {
    fn send(
        &mut self,
        to: types::Target,
        msg_type: String,
        content: String,
    ) -> Result<(), types::Error> {
        let scope = Scope::Tenant(self.tenant.clone());
        self.deliver(scope, to, msg_type, content)
    }

    fn send_to_tenant(
        &mut self,
        tenant_id: Option<String>,
        to: types::Target,
        msg_type: String,
        content: String,
    ) -> Result<(), types::Error> {
        if !self.env.capabilities.cross_tenant {
            return Err(types::Error::Forbidden(
                "sending to another tenant needs the cross-tenant capability".into(),
            ));
        }
        let scope = match tenant_id {
            Some(t) => Scope::Tenant(Some(Arc::from(t))),
            None => Scope::All,
        };
        self.deliver(scope, to, msg_type, content)
    }
}

impl presence::Host for CallState {
    async fn is_online(&mut self, user: types::UserRef) -> bool {
        let key = UserKey {
            tenant: self.tenant.clone(),
            user_type: user.user_type,
            user_id: user.user_id.into(),
        };
        self.env.hub.user_sessions(&key).await > 0
    }

    async fn online_users(&mut self, user_type: u32) -> Vec<String> {
        self.env
            .hub
            .online_users(Some(&self.tenant), user_type)
            .await
    }
}

impl logging::Host for CallState {
    fn log(&mut self, level: types::Level, message: String) {
        if self.env.log_budget.lock().take(std::time::Instant::now()) != Verdict::Allow {
            self.env.log_dropped.increment(1);
            return;
        }
        let plugin = self.env.label.as_str();
        // Bounded so one call cannot flood the log with a huge line; control characters
        // escaped so it cannot forge lines of the host's own.
        let message = escape_control(truncate(&message, 4096));
        match level {
            types::Level::Trace => tracing::trace!(plugin, "{message}"),
            types::Level::Debug => tracing::debug!(plugin, "{message}"),
            types::Level::Info => tracing::info!(plugin, "{message}"),
            types::Level::Warn => tracing::warn!(plugin, "{message}"),
            types::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl config::Host for CallState {
    fn get(&mut self, key: String) -> Option<String> {
        self.env.config.get(&key).cloned()
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
