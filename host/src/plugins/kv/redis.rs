//! The Redis backend, shared by every node of a cluster.
//!
//! A namespace is four Redis keys with one hash tag (`{NAME}:kv:{NS}:…`), so they sit on one
//! shard: `d` (hash: stored name → value), `k` (sorted set of stored names, for listing by
//! prefix), `e` (sorted set: stored name → expiry in ms) and `u` (hash: `keys`, `bytes`).
//! Every operation is one Lua script: it drops a bounded number of expired entries, treats an
//! expired entry as absent, and checks the quota before it writes, all atomically on Redis's
//! clock. Redis not answering within `state_timeout_ms` is an error, never a wait past that.

use std::time::Duration;

use redis::Script;

use crate::{cluster::redis_link::Link, config::RedisUrl};

use super::{KvError, LIST_PAGE, Page, Quota, Space};

/// Shared by every script: expiry on Redis's clock, and the quota-checked write.
const PRELUDE: &str = r"
local D, K, E, U = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function drop(f)
  local old = redis.call('HGET', D, f)
  if old then
    redis.call('HDEL', D, f)
    redis.call('ZREM', K, f)
    redis.call('HINCRBY', U, 'keys', -1)
    redis.call('HINCRBY', U, 'bytes', -(#f + #old))
  end
  redis.call('ZREM', E, f)
end
for _, f in ipairs(redis.call('ZRANGEBYSCORE', E, '-inf', now, 'LIMIT', 0, 64)) do drop(f) end
local function live(f)
  local e = redis.call('ZSCORE', E, f)
  if e and tonumber(e) <= now then drop(f) return false end
  return redis.call('HGET', D, f)
end
local function usage()
  return tonumber(redis.call('HGET', U, 'keys') or '0'), tonumber(redis.call('HGET', U, 'bytes') or '0')
end
local function put(f, v, ttl, maxk, maxb)
  local old = live(f)
  local keys, bytes = usage()
  local new, oldsize = #f + #v, 0
  if old then oldsize = #f + #old elseif keys >= maxk then return 'keys' end
  if bytes - oldsize + new > maxb and new > oldsize then return 'bytes' end
  redis.call('HSET', D, f, v)
  redis.call('ZADD', K, 0, f)
  if ttl > 0 then redis.call('ZADD', E, now + ttl, f) else redis.call('ZREM', E, f) end
  if not old then redis.call('HINCRBY', U, 'keys', 1) end
  redis.call('HINCRBY', U, 'bytes', new - oldsize)
  return 'ok'
end
";

const GET: &str = "return live(ARGV[1])";
/// ARGV: field, value, ttl ms (0: none), max keys, max bytes.
const SET: &str =
    "return put(ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))";
const DELETE: &str = "drop(ARGV[1]) return 'ok'";
/// ARGV: range start (`[field` or `(cursor-field`), scope+prefix, page + 1.
/// Returns {more, last field of the page or '', live fields...}.
const LIST: &str = r"
local raw = redis.call('ZRANGEBYLEX', K, ARGV[1], '[' .. ARGV[2] .. '\255', 'LIMIT', 0, tonumber(ARGV[3]))
local page = tonumber(ARGV[3]) - 1
local more = '0'
if #raw > page then more = '1' end
local out = {more, ''}
for i = 1, math.min(#raw, page) do
  out[2] = raw[i]
  local e = redis.call('ZSCORE', E, raw[i])
  if not (e and tonumber(e) <= now) then out[#out + 1] = raw[i] end
end
return out
";
/// ARGV: field, delta, max keys, max bytes. Returns {'ok', sum} or {reason}.
const INCREMENT: &str = r"
local f = ARGV[1]
local old = live(f)
if old and not string.match(old, '^-?%d+$') then return {'notint'} end
local keys, bytes = usage()
if not old and keys >= tonumber(ARGV[3]) then return {'keys'} end
local r = redis.pcall('HINCRBY', D, f, ARGV[2])
if type(r) == 'table' and r.err then return {'overflow'} end
local nv = redis.call('HGET', D, f)
local grow = #f + #nv
if old then grow = grow - (#f + #old) end
if bytes + grow > tonumber(ARGV[4]) and grow > 0 then
  if old then redis.call('HSET', D, f, old) else redis.call('HDEL', D, f) end
  return {'bytes'}
end
if not old then redis.call('ZADD', K, 0, f) redis.call('HINCRBY', U, 'keys', 1) end
redis.call('HINCRBY', U, 'bytes', grow)
return {'ok', nv}
";
/// ARGV: field, expected present (0/1), expected, value, max keys, max bytes.
/// Returns {'ok'}, {'conflict', present (0/1), current} or {reason}.
const SWAP: &str = r"
local cur = live(ARGV[1])
if (ARGV[2] == '1' and cur ~= ARGV[3]) or (ARGV[2] == '0' and cur) then
  if cur then return {'conflict', '1', cur} end
  return {'conflict', '0', ''}
end
return {put(ARGV[1], ARGV[4], 0, tonumber(ARGV[5]), tonumber(ARGV[6]))}
";

/// Scripts loaded once per process (Redis caches them by digest).
struct Scripts {
    get: Script,
    set: Script,
    delete: Script,
    list: Script,
    increment: Script,
    swap: Script,
}

impl Scripts {
    fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Self {
            get: script(GET),
            set: script(SET),
            delete: script(DELETE),
            list: script(LIST),
            increment: script(INCREMENT),
            swap: script(SWAP),
        }
    }
}

/// Plugin state in Redis.
pub(super) struct RedisState {
    /// One Redis or a Redis Cluster (a namespace's keys share the slot of its `{ns}` tag).
    con: Link,
    /// The cluster name: the first part of every key.
    prefix: String,
    quota: Quota,
    timeout: Duration,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisState {
    /// Connects lazily: a Redis that is down now fails operations, not the host's start.
    pub(super) fn new(
        url: &RedisUrl,
        cluster: &str,
        quota: Quota,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let con = crate::cluster::redis_link::connect(url, timeout)
            .map_err(|e| anyhow::anyhow!("cluster.redis_url for plugin state: {e}"))?;
        Ok(Self {
            con,
            prefix: cluster.to_owned(),
            quota,
            timeout,
            scripts: Scripts::new(),
        })
    }

    /// Runs `script` on `space`'s namespace keys.
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        space: &Space,
        args: &[&[u8]],
    ) -> Result<T, KvError> {
        let base = format!("{}:kv:{{{}}}", self.prefix, space.ns);
        let mut invocation = script.prepare_invoke();
        for suffix in [":d", ":k", ":e", ":u"] {
            invocation.key(format!("{base}{suffix}"));
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let mut con = self.con.clone();
        match tokio::time::timeout(self.timeout * 2, invocation.invoke_async(&mut con)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(KvError::Unavailable(e.to_string())),
            Err(_) => Err(KvError::Unavailable(format!(
                "Redis did not answer within {:?}",
                self.timeout * 2
            ))),
        }
    }

    fn limits(&self) -> (String, String) {
        (
            self.quota.max_keys.to_string(),
            self.quota.max_bytes.to_string(),
        )
    }

    fn status(&self, status: &[u8]) -> Result<(), KvError> {
        match status {
            b"ok" => Ok(()),
            b"keys" => Err(self.quota.keys_error()),
            b"bytes" => Err(self.quota.bytes_error()),
            b"notint" => Err(KvError::Invalid(
                "the value is not a decimal integer".into(),
            )),
            b"overflow" => Err(KvError::Invalid("the counter would overflow".into())),
            other => Err(KvError::Unavailable(format!(
                "unexpected answer {:?}",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    pub(super) async fn get(&self, space: &Space, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let field = space.field(key);
        self.run(&self.scripts.get, space, &[field.as_bytes()])
            .await
    }

    pub(super) async fn set(
        &self,
        space: &Space,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        let field = space.field(key);
        let ttl = ttl.map_or(0, |t| t.as_millis().max(1)).to_string();
        let (keys, bytes) = self.limits();
        let status: Vec<u8> = self
            .run(
                &self.scripts.set,
                space,
                &[
                    field.as_bytes(),
                    value,
                    ttl.as_bytes(),
                    keys.as_bytes(),
                    bytes.as_bytes(),
                ],
            )
            .await?;
        self.status(&status)
    }

    pub(super) async fn delete(&self, space: &Space, key: &str) -> Result<(), KvError> {
        let field = space.field(key);
        let status: Vec<u8> = self
            .run(&self.scripts.delete, space, &[field.as_bytes()])
            .await?;
        self.status(&status)
    }

    pub(super) async fn list(
        &self,
        space: &Space,
        prefix: &str,
        cursor: Option<&str>,
    ) -> Result<Page, KvError> {
        let start = match cursor {
            Some(after) => format!("({}", space.field(after)),
            None => format!("[{}", space.field(prefix)),
        };
        let scoped = space.field(prefix);
        let page = (LIST_PAGE + 1).to_string();
        let answer: Vec<String> = self
            .run(
                &self.scripts.list,
                space,
                &[start.as_bytes(), scoped.as_bytes(), page.as_bytes()],
            )
            .await?;
        let strip = |field: &str| {
            field
                .get(space.prefix.len()..)
                .unwrap_or_default()
                .to_owned()
        };
        let [more, last, fields @ ..] = answer.as_slice() else {
            return Err(KvError::Unavailable(
                "unexpected answer to a listing".into(),
            ));
        };
        let keys = fields.iter().map(|f| strip(f)).collect();
        let next = (more == "1").then(|| strip(last));
        Ok((keys, next))
    }

    pub(super) async fn increment(
        &self,
        space: &Space,
        key: &str,
        delta: i64,
    ) -> Result<i64, KvError> {
        let field = space.field(key);
        let delta = delta.to_string();
        let (keys, bytes) = self.limits();
        let answer: Vec<Vec<u8>> = self
            .run(
                &self.scripts.increment,
                space,
                &[
                    field.as_bytes(),
                    delta.as_bytes(),
                    keys.as_bytes(),
                    bytes.as_bytes(),
                ],
            )
            .await?;
        match answer.as_slice() {
            [status, sum] if status == b"ok" => super::parse_counter(sum),
            [status, ..] => self.status(status).map(|()| 0),
            [] => Err(KvError::Unavailable("empty answer".into())),
        }
    }

    pub(super) async fn swap(
        &self,
        space: &Space,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Result<(), Option<Vec<u8>>>, KvError> {
        let field = space.field(key);
        let (keys, bytes) = self.limits();
        let (present, expected): (&[u8], &[u8]) = match expected {
            Some(v) => (b"1", v),
            None => (b"0", b""),
        };
        let answer: Vec<Vec<u8>> = self
            .run(
                &self.scripts.swap,
                space,
                &[
                    field.as_bytes(),
                    present,
                    expected,
                    value,
                    keys.as_bytes(),
                    bytes.as_bytes(),
                ],
            )
            .await?;
        match answer.as_slice() {
            [status, present, current] if status == b"conflict" => {
                Ok(Err((present == b"1").then(|| current.clone())))
            }
            [status] => self.status(status).map(Ok),
            _ => Err(KvError::Unavailable("unexpected answer to a swap".into())),
        }
    }
}
