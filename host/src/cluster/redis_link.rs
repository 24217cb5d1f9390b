//! The command connection to Redis that cluster presence and plugin state share the shape of:
//! one Redis (a [`ConnectionManager`] that reconnects by itself) or a Redis Cluster (a
//! [`ClusterConnection`] that follows the slot map and repairs each shard's connection), behind
//! one [`ConnectionLike`], so the code that writes keys is the same for both.
//!
//! With a Redis Cluster, a pipeline must stay within one hash slot (the client refuses one
//! that spans slots). Presence therefore wraps the cluster name in a hash tag, `{name}:...`
//! ([`key_prefix`]): every presence key of a cluster sits in one slot, so a node's rewrite
//! stays one atomic `MULTI` (no reader sees half of it) and a lookup stays two or three round
//! trips whatever the number of nodes. That puts presence on one shard; it is small (a hash
//! per node and group, rewritten after changes, debounced) next to the deliveries, which
//! spread over the shards through sharded pub/sub ([`super::redis_cluster`]). A single Redis
//! keeps the untagged names it always had.

use std::time::Duration;

use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
};

use crate::config::RedisUrl;

/// Backoff between reconnection attempts of a single Redis: doubles up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A command connection to one Redis or to a Redis Cluster; cheap to clone (clones share it).
#[derive(Clone)]
pub(crate) enum Link {
    /// A single Redis.
    One(ConnectionManager),
    /// A Redis Cluster: commands go to the shard that owns their key.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::One(_) => "Link::One",
            Self::Cluster(_) => "Link::Cluster",
        })
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::One(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::One(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::One(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects lazily to `url` (a Redis that is down now fails commands, not the caller's start);
/// each command gives up after `timeout` and is retried once at most.
pub(crate) fn connect(url: &RedisUrl, timeout: Duration) -> anyhow::Result<Link> {
    match url {
        RedisUrl::One(url) => {
            let client = redis::Client::open(url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(MAX_BACKOFF);
            Ok(Link::One(ConnectionManager::new_lazy_with_config(
                client, config,
            )?))
        }
        RedisUrl::Cluster(urls) => {
            let client = cluster_builder(urls, timeout).build()?;
            Ok(Link::Cluster(
                client.get_pending_async_connection_with_config(
                    redis::cluster::ClusterConfig::new()
                        .set_connection_timeout(timeout)
                        .set_response_timeout(timeout),
                ),
            ))
        }
    }
}

/// A Redis Cluster client for `urls` whose commands give up after `timeout` and are retried
/// once at most (a shard that is down costs a command about two timeouts, never a pile of
/// retries); shard connections are repaired in the background.
pub(crate) fn cluster_builder(urls: &[String], timeout: Duration) -> ClusterClientBuilder {
    ClusterClientBuilder::new(urls.iter().map(String::as_str))
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(1)
        .min_retry_wait(50)
        .max_retry_wait(200)
}

/// What every key and channel of cluster `name` starts with on `url`: the name itself on a
/// single Redis, the name as a hash tag (`{name}`) on a Redis Cluster (see the module docs).
pub(crate) fn key_prefix(url: &RedisUrl, name: &str) -> String {
    match url {
        RedisUrl::One(_) => name.to_owned(),
        RedisUrl::Cluster(_) => format!("{{{name}}}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_keeps_a_clusters_presence_in_one_slot() {
        let one = RedisUrl::One("redis://127.0.0.1".into());
        let cluster = RedisUrl::Cluster(vec!["redis://127.0.0.1:7000".into()]);
        assert_eq!(key_prefix(&one, "sb"), "sb");
        let prefix = key_prefix(&cluster, "sb");
        assert_eq!(prefix, "{sb}");
        let slot = |key: String| redis::cluster_routing::Slot::for_key(key);
        assert_eq!(
            slot(format!("{prefix}:nodes")),
            slot(format!("{prefix}:presence:n1:2:t=7"))
        );
    }
}
