//! The server under test, whichever it is: one or more Switchboard hosts, or nginx + nchan.
//! Scenarios see only addresses to connect to, a way to publish, and what the server costs.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::bail;

use crate::{
    broker::Broker,
    host::{API_KEY, Host},
    nchan::Nchan,
    procstat::Usage,
    wire,
    worker::ServerKind,
};

/// A running server.
#[derive(Debug)]
pub(crate) enum Server {
    /// Switchboard hosts; connections are spread over them.
    Switchboard {
        /// The hosts.
        hosts: Vec<Host>,
        /// The secret tokens are signed with.
        secret: String,
        /// The broker joining the hosts into a cluster (its processes counted as part of the
        /// server).
        broker: Option<Broker>,
    },
    /// nginx + nchan.
    Nchan {
        /// The nginx master and its workers.
        nchan: Nchan,
        /// One channel per connection instead of one shared channel.
        channel_per_connection: bool,
    },
}

impl Server {
    /// `switchboard` or `nchan`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Server::Switchboard { .. } => "switchboard",
            Server::Nchan { .. } => "nchan",
        }
    }

    /// Where clients connect; connection `i` goes to the `i % len`-th.
    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        match self {
            Server::Switchboard { hosts, .. } => hosts.iter().map(|h| h.addr).collect(),
            Server::Nchan { nchan, .. } => vec![nchan.addr],
        }
    }

    /// What workers need to know to connect.
    pub(crate) fn worker_kind(&self) -> ServerKind {
        match self {
            Server::Switchboard { secret, .. } => ServerKind::Switchboard {
                secret: secret.clone(),
            },
            Server::Nchan {
                channel_per_connection,
                ..
            } => ServerKind::Nchan {
                channel_per_connection: *channel_per_connection,
            },
        }
    }

    /// Memory and CPU of the server (summed over every host and broker, or nginx process).
    pub(crate) fn usage(&self) -> anyhow::Result<Usage> {
        match self {
            Server::Switchboard { hosts, broker, .. } => {
                let mut total = Usage::default();
                let broker = broker.as_ref().map(Broker::usage).transpose()?;
                for u in hosts.iter().map(Host::usage).chain(broker.map(Ok)) {
                    let u = u?;
                    total.memory_kib += u.memory_kib;
                    total.cpu_secs += u.cpu_secs;
                }
                Ok(total)
            }
            Server::Nchan { nchan, .. } => nchan.usage(),
        }
    }

    /// A publisher of fan-out messages to every connection of the benchmark (the user type for
    /// Switchboard, the shared channel for nchan), through the first host.
    pub(crate) fn publisher(&self, pad: usize) -> anyhow::Result<Publisher> {
        let (url, api_key) = match self {
            Server::Switchboard { hosts, .. } => (
                format!("http://{}/api/v1/messages", hosts[0].addr),
                Some(API_KEY),
            ),
            Server::Nchan {
                channel_per_connection: false,
                nchan,
            } => (format!("http://{}/pub/all", nchan.addr), None),
            Server::Nchan { .. } => bail!("fan-out needs nchan's shared channel"),
        };
        Ok(Publisher {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()?,
            url,
            api_key,
            pad,
            to: To::All,
        })
    }

    /// A publisher of pushes to one user each (`{"to":{"user":...}}`, no `tenant_id`), the
    /// user drawn from `1..=users` by a fixed pseudo-random sequence (the same in every run),
    /// through the first host.
    pub(crate) fn user_publisher(&self, users: u64) -> anyhow::Result<Publisher> {
        let Server::Switchboard { .. } = self else {
            bail!("per-user push runs on Switchboard");
        };
        let mut publisher = self.publisher(0)?;
        publisher.to = To::RandomUser {
            users: users.max(1),
            drawn: Arc::new(AtomicU64::new(0)),
        };
        Ok(publisher)
    }

    /// Stops every process.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        match self {
            Server::Switchboard { hosts, broker, .. } => {
                for h in hosts {
                    h.stop().await?;
                }
                match broker {
                    Some(b) => b.stop().await,
                    None => Ok(()),
                }
            }
            Server::Nchan { nchan, .. } => nchan.stop().await,
        }
    }

    /// The last lines of the server's logs, for error reports.
    pub(crate) fn log_tail(&self) -> String {
        match self {
            Server::Switchboard { hosts, .. } => hosts
                .iter()
                .map(Host::log_tail)
                .collect::<Vec<_>>()
                .join("\n"),
            Server::Nchan { nchan, .. } => nchan.log_tail(),
        }
    }
}

/// Publishes stamped fan-out messages over HTTP.
#[derive(Debug, Clone)]
pub(crate) struct Publisher {
    client: reqwest::Client,
    url: String,
    /// Switchboard's push API key; `None` for nchan.
    api_key: Option<&'static str>,
    /// Padding bytes in each message.
    pad: usize,
    /// Who each message goes to.
    to: To,
}

/// Who a [`Publisher`]'s messages go to.
#[derive(Debug, Clone)]
enum To {
    /// Every benchmark connection (the user type; nchan's shared channel).
    All,
    /// One user of `1..=users` per message, the `n`-th drawn by [`draw`]`(n)`.
    RandomUser {
        users: u64,
        /// Users drawn so far, shared by the publisher's clones.
        drawn: Arc<AtomicU64>,
    },
}

/// The `n`-th number of a fixed pseudo-random sequence (SplitMix64).
fn draw(n: u64) -> u64 {
    let mut z = n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Publisher {
    /// Whether every message goes to every connection (fan-out), rather than to one user.
    pub(crate) fn fans_out(&self) -> bool {
        matches!(self.to, To::All)
    }

    /// Publishes one message stamped now with `phase`.
    pub(crate) async fn publish(&self, phase: u8) -> anyhow::Result<()> {
        let body = match &self.to {
            To::All => wire::fanout_push(phase, self.pad),
            To::RandomUser { users, drawn } => {
                let n = drawn.fetch_add(1, Ordering::Relaxed);
                wire::user_push(phase, 1 + draw(n) % users)
            }
        };
        let request = match self.api_key {
            Some(key) => self
                .client
                .post(&self.url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body),
            None => self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .body(wire::fanout_frame(phase, self.pad)),
        };
        let response = request.send().await?;
        if !response.status().is_success() {
            bail!(
                "publish answered {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_spread_over_users() {
        let users = 100;
        let mut hit = vec![0u32; users as usize];
        for n in 0..10_000 {
            hit[(draw(n) % users) as usize] += 1;
        }
        assert!(hit.iter().all(|&h| (50..150).contains(&h)), "{hit:?}");
        assert_eq!(draw(7), draw(7));
    }
}
