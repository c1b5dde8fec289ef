//! `Lease`: a named lock across processes (`SET NX PX` with a random token; release and extend only by the holder, through Lua compare-and-delete and compare-and-expire) with a fencing token.
//!
//! The limits of such a lock (Martin Kleppmann, "How to do distributed locking"): a holder
//! paused longer than the lease (a GC pause, a frozen VM) may still act after another has
//! taken the lock. Whatever the lock protects must therefore check the fencing token, which
//! grows with every acquisition: refuse a write carrying a token lower than one already
//! seen. And a single Redis server (or a Sentinel master that fails over before a
//! replica received the lease) can lose a lease: this lock is for efficiency and mutual
//! courtesy, and with fencing for safety; it is not Redlock.

use std::time::{Duration, Instant};

use rand::Rng;
use redis::Script;
use ucm_kernel::{Error, ErrorKind, Result};

use crate::manager::RedisManager;

/// Takes the lease and the next fencing token in one step.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0";

/// Deletes the lease only if it is still this holder's.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Extends the lease only if it is still this holder's.
const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// A held lock. Dropped without [`Lease::release`], it expires after its time to live.
#[derive(Debug)]
#[must_use = "a lease not released is held until it expires"]
pub struct Lease<'m> {
    manager: &'m RedisManager,
    key: String,
    token: String,
    fencing: u64,
}

impl RedisManager {
    /// Takes the lock `name` for `ttl` if nobody holds it.
    ///
    /// # Errors
    /// As [`RedisManager::query`]; `Configuration` for a `ttl` under 1 ms.
    pub async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<Lease<'_>>> {
        let millis = ttl_millis(ttl)?;
        let key = format!("ucm:lock:{name}");
        let token = format!("{:032x}", rand::rng().random::<u128>());
        let fence_key = format!("{key}:fence");
        let fencing: u64 =
            self.script(&Script::new(ACQUIRE), &[&key, &fence_key], &[&token, &millis]).await?;
        Ok((fencing > 0).then_some(Lease { manager: self, key, token, fencing }))
    }

    /// Takes the lock `name` for `ttl`, trying again (every 10 to 50 ms) for up to `wait`.
    ///
    /// # Errors
    /// `Timeout` when another holder kept it for all of `wait`; as [`Self::try_lock`].
    pub async fn lock(&self, name: &str, ttl: Duration, wait: Duration) -> Result<Lease<'_>> {
        let started = Instant::now();
        loop {
            if let Some(lease) = self.try_lock(name, ttl).await? {
                return Ok(lease);
            }
            if started.elapsed() >= wait {
                return Err(Error::database(
                    ErrorKind::Timeout,
                    self.pool().label(),
                    None,
                    format!(
                        "lock {name:?} was held by another for all of {wait:?}; try again later"
                    ),
                ));
            }
            let pause = Duration::from_millis(rand::rng().random_range(10..=50));
            tokio::time::sleep(pause.min(wait.saturating_sub(started.elapsed()))).await;
        }
    }
}

impl Lease<'_> {
    /// The fencing token: larger for every acquisition of this lock's name, so that what
    /// the lock protects can refuse a late holder's write.
    pub fn fencing_token(&self) -> u64 {
        self.fencing
    }

    /// Extends the lease to `ttl` from now; `false` when it had already expired (and may
    /// be another's).
    ///
    /// # Errors
    /// As [`RedisManager::query`].
    pub async fn extend(&self, ttl: Duration) -> Result<bool> {
        let millis = ttl_millis(ttl)?;
        let extended: i64 = self
            .manager
            .script(&Script::new(EXTEND), &[&self.key], &[&self.token, &millis])
            .await?;
        Ok(extended == 1)
    }

    /// Releases the lock; `false` when the lease had already expired (another may hold it
    /// now, and is left alone).
    ///
    /// # Errors
    /// As [`RedisManager::query`].
    pub async fn release(self) -> Result<bool> {
        let deleted: i64 =
            self.manager.script(&Script::new(RELEASE), &[&self.key], &[&self.token]).await?;
        Ok(deleted == 1)
    }
}

fn ttl_millis(ttl: Duration) -> Result<String> {
    let millis = ttl.as_millis();
    if millis == 0 {
        return Err(Error::config("lock ttl", "must be at least 1 ms"));
    }
    Ok(millis.to_string())
}
