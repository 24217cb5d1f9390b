//! A back end's Redis (its token values and liveness keys), connected lazily and asked with
//! a deadline: a Redis that is down makes a check unavailable (503), never a hang.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::AuthError;

/// Longest a Redis command of a check may take, connecting included.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// One back end's Redis.
pub(super) struct Link {
    con: ConnectionManager,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").finish_non_exhaustive()
    }
}

impl Link {
    /// A link to `url`; nothing is connected until the first command.
    pub(super) fn new(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(Self {
            con: ConnectionManager::new_lazy_with_config(client, config)?,
        })
    }

    /// `GET key`.
    pub(super) async fn get(&self, key: &str) -> Result<Option<String>, AuthError> {
        let mut con = self.con.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        match tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async::<Option<String>>(&mut con))
            .await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "auth back end Redis failed");
                Err(AuthError::Unavailable)
            }
            Err(_) => {
                tracing::warn!("auth back end Redis timed out");
                Err(AuthError::Unavailable)
            }
        }
    }

    /// `EXISTS key`.
    pub(super) async fn exists(&self, key: &str) -> Result<bool, AuthError> {
        let mut con = self.con.clone();
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(key);
        match tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async::<u64>(&mut con)).await {
            Ok(Ok(n)) => Ok(n > 0),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "auth back end Redis failed");
                Err(AuthError::Unavailable)
            }
            Err(_) => {
                tracing::warn!("auth back end Redis timed out");
                Err(AuthError::Unavailable)
            }
        }
    }
}

/// `template` with `{token}` replaced.
pub(super) fn key(template: &str, token: &str) -> String {
    template.replace("{token}", token)
}
