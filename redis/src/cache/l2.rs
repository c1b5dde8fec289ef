//! The cache's Redis level: entries stored beside the write counts of the tables they were read from, in Lua scripts, so an entry read before a write is never served after it and never stored over it.

use std::sync::LazyLock;

use redis::Script;
use ucm_kernel::Result;

use crate::manager::RedisManager;

/// `KEYS[1]` the entry, `KEYS[2..]` its tables' counts. Returns `{value or false, counts}`;
/// an entry stored under other counts is deleted and not returned.
static GET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local counts = {}
for i = 2, #KEYS do counts[#counts + 1] = redis.call('GET', KEYS[i]) or '0' end
local now = table.concat(counts, ',')
local stored = redis.call('HMGET', KEYS[1], 'counts', 'value')
if not stored[2] then return {false, now} end
if stored[1] ~= now then redis.call('DEL', KEYS[1]); return {false, now} end
return {stored[2], now}",
    )
});

/// `KEYS[1]` the entry, `KEYS[2..]` its tables' counts; `ARGV[1]` the counts it was read
/// under, `ARGV[2]` the value, `ARGV[3]` its time to live in milliseconds. Stores it only
/// when no table was written since, and keeps each count alive at least twice as long
/// (a count that expired would start again at 0 and make an old entry current).
static SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local counts = {}
for i = 2, #KEYS do counts[#counts + 1] = redis.call('GET', KEYS[i]) or '0' end
if table.concat(counts, ',') ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[3])
for i = 2, #KEYS do
  local left = redis.call('PTTL', KEYS[i])
  if left == -2 then redis.call('SET', KEYS[i], '0', 'PX', 2 * ttl)
  elseif left >= 0 and left < 2 * ttl then redis.call('PEXPIRE', KEYS[i], 2 * ttl) end
end
redis.call('HSET', KEYS[1], 'counts', ARGV[1], 'value', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1",
    )
});

/// `KEYS` the counts of written tables; `ARGV[1]` the time to live of a new count. Every
/// entry stored under an earlier count is stale from now on, in every process.
static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for i = 1, #KEYS do
  local left = redis.call('PTTL', KEYS[i])
  redis.call('INCR', KEYS[i])
  if left == -2 or (left >= 0 and left < tonumber(ARGV[1])) then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
  end
end
return #KEYS",
    )
});

/// The Redis level of one cache namespace.
#[derive(Debug, Clone)]
pub(super) struct L2 {
    pub(super) redis: RedisManager,
    pub(super) namespace: String,
}

impl L2 {
    fn count_key(&self, table: &str) -> String {
        format!("{}:writes:{table}", self.namespace)
    }

    fn keys(&self, entry: &str, tables: &[String]) -> Vec<String> {
        std::iter::once(entry.to_owned()).chain(tables.iter().map(|t| self.count_key(t))).collect()
    }

    /// The entry stored under `key` if still current, and the counts to store a new one under.
    pub(super) async fn get(
        &self,
        key: &str,
        tables: &[String],
    ) -> Result<(Option<Vec<u8>>, String)> {
        let keys = self.keys(key, tables);
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.redis.script(&GET, &keys, &[]).await
    }

    /// Stores `value` under `key` when none of `tables` was written since `counts` were
    /// read; whether it was stored.
    pub(super) async fn set(
        &self,
        key: &str,
        tables: &[String],
        counts: &str,
        value: &[u8],
        ttl_ms: u64,
    ) -> Result<bool> {
        let keys = self.keys(key, tables);
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut invocation = SET.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation.arg(counts).arg(value).arg(ttl_ms);
        let stored: i64 = self.redis.invoke(&invocation).await?;
        Ok(stored == 1)
    }

    /// Counts a write to each of `tables`, making their stored entries stale everywhere.
    pub(super) async fn invalidate(&self, tables: &[String], ttl_ms: u64) -> Result<()> {
        let keys: Vec<String> = tables.iter().map(|t| self.count_key(t)).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let ttl = ttl_ms.saturating_mul(2).to_string();
        self.redis.script::<i64>(&INVALIDATE, &keys, &[&ttl]).await.map(drop)
    }

    /// Deletes one entry.
    pub(super) async fn delete(&self, key: &str) -> Result<()> {
        self.redis.query::<i64>(redis::cmd("DEL").arg(key)).await.map(drop)
    }
}
