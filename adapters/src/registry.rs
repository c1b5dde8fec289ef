//! The process-wide registry: one unified manager per mode and database, created once (even under concurrent first calls), installable in code, closed together at exit.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::sync::OnceCell;
use ucm_kernel::{ConnectionManagerProtocol, Error, ManagerConfig, ManagerMode, Result};

use crate::UnifiedManager;

/// A manager's identity: its mode, its primary's URL without the password, and a hash of
/// the whole URL under this process's random key (so two credentials for one database do
/// not share a manager, yet the registry holds no password).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    mode: ManagerMode,
    url: String,
    credentials: u64,
}

/// A manager being created or created; concurrent first callers wait on the same cell.
type Slot = Arc<OnceCell<Arc<UnifiedManager>>>;

#[derive(Default)]
struct Registry {
    managers: HashMap<Key, Slot>,
    /// Configurations installed in code, by mode; they win over the environment.
    installed: HashMap<ManagerMode, ManagerConfig>,
}

impl Registry {
    /// Whether `mode` already has an installed configuration, or a manager created, being
    /// created or not yet closed.
    fn is_taken(&self, mode: ManagerMode) -> bool {
        self.installed.contains_key(&mode)
            || self.managers.iter().any(|(key, slot)| key.mode == mode && !is_closed(slot))
    }
}

fn is_closed(slot: &Slot) -> bool {
    slot.get().is_some_and(|manager| manager.is_closed())
}

fn registry() -> MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    // The lock is never held across an await or user code, so a poisoned lock only means
    // a panic between two map operations; the maps are still consistent.
    REGISTRY.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner)
}

fn key(config: &ManagerConfig) -> Key {
    static HASHER: OnceLock<RandomState> = OnceLock::new();
    let primary = config.primary();
    Key {
        mode: config.mode(),
        url: primary.to_string(),
        credentials: HASHER.get_or_init(RandomState::new).hash_one(primary.expose_url()),
    }
}

/// The process-wide manager for `mode`: created on first use from the configuration
/// installed with [`install_config`], else from the environment (`DATABASE_URL`,
/// `DATABASE_REPLICA_URLS`, `UCM_*`), and shared by every later call. Concurrent first
/// calls create it once; a failed creation is not cached, so the next call tries again.
///
/// # Errors
/// As [`ManagerConfig::from_env`] and the backend's `connect`.
pub async fn get_unified_manager(mode: ManagerMode) -> Result<Arc<UnifiedManager>> {
    let installed = registry().installed.get(&mode).cloned();
    let config = match installed {
        Some(config) => config,
        None => ManagerConfig::from_env(mode)?,
    };
    unified_manager_for(config).await
}

/// The process-wide manager for `config`'s mode and primary database, created from
/// `config` on first use. Later calls for the same mode and database share it, whatever
/// the rest of their configuration: the first one wins. A manager that was closed (by
/// [`close_manager`] or its own `close()`) is replaced by a new one on the next call; a
/// failed creation is not kept, so the next call tries again.
///
/// # Errors
/// The backend's `connect` error.
pub async fn unified_manager_for(config: ManagerConfig) -> Result<Arc<UnifiedManager>> {
    let key = key(&config);
    loop {
        let slot = {
            let mut registry = registry();
            let slot = registry.managers.entry(key.clone()).or_default();
            if is_closed(slot) {
                *slot = Slot::default();
            }
            Arc::clone(slot)
        };
        let created = slot
            .get_or_try_init(|| async {
                let manager = UnifiedManager::connect(config.clone()).await.map(Arc::new)?;
                #[cfg(feature = "redis")]
                crate::cache_registry::created(&manager);
                Ok(manager)
            })
            .await;
        match created {
            // Closed between the lookup and now (a concurrent `close_manager` or
            // `shutdown_all`): look up again, which creates a new one.
            Ok(manager) if manager.is_closed() => continue,
            Ok(manager) => return Ok(Arc::clone(manager)),
            Err(e) => {
                let mut registry = registry();
                if registry
                    .managers
                    .get(&key)
                    .is_some_and(|s| Arc::ptr_eq(s, &slot) && s.get().is_none())
                {
                    registry.managers.remove(&key);
                }
                return Err(e);
            }
        }
    }
}

/// Closes one registered manager (draining its checked-out connections up to its deadline)
/// and removes it from the registry; the next lookup for its mode and database creates a
/// new one, from the installed configuration when there is one. The other managers are
/// untouched.
///
/// # Errors
/// The manager's `close` error; it is removed from the registry regardless.
pub async fn close_manager(manager: &Arc<UnifiedManager>) -> Result<()> {
    {
        let mut registry = registry();
        registry.managers.retain(|_, slot| !slot.get().is_some_and(|m| Arc::ptr_eq(m, manager)));
    }
    manager.close().await
}

/// Installs the configuration [`get_unified_manager`] uses for its mode, for applications
/// that configure in code. Install before the first call for that mode.
///
/// # Errors
/// `Configuration` when a configuration is already installed for the mode, or its manager
/// was already created: installing twice is refused, never a silent replacement.
pub fn install_config(config: ManagerConfig) -> Result<()> {
    let mode = config.mode();
    let mut registry = registry();
    if registry.is_taken(mode) {
        return Err(already(mode));
    }
    registry.installed.insert(mode, config);
    Ok(())
}

/// Installs a manager built in code as the process-wide manager for its mode (and for its
/// mode and database), and returns it shared.
///
/// # Errors
/// `Configuration` when the mode already has a configuration or a manager; the manager
/// passed in is then closed.
pub async fn install_manager(manager: UnifiedManager) -> Result<Arc<UnifiedManager>> {
    let config = manager.config().clone();
    let mode = config.mode();
    let manager = Arc::new(manager);
    {
        let mut registry = registry();
        if !registry.is_taken(mode) {
            let slot = Arc::new(OnceCell::new_with(Some(Arc::clone(&manager))));
            registry.managers.insert(key(&config), slot);
            registry.installed.insert(mode, config);
            return Ok(manager);
        }
    }
    manager.close().await?;
    Err(already(mode))
}

fn already(mode: ManagerMode) -> Error {
    Error::config(
        "registry",
        format!(
            "a unified manager (or its configuration) for mode {mode} is already installed; \
             install once, before the first get_unified_manager({mode}), or call shutdown_all() first"
        ),
    )
}

/// Closes every registered manager, creations in flight included (each drains its
/// checked-out connections up to its deadline), and empties the registry, installed
/// configurations included: the next call creates anew. For graceful exit, and between
/// test cases. With the `redis` feature, each mode's Redis is closed too and its query
/// cache forgotten.
///
/// # Errors
/// The first manager's `close` error; every manager is closed regardless.
pub async fn shutdown_all() -> Result<()> {
    let slots: Vec<Slot> = {
        let mut registry = registry();
        registry.installed.clear();
        registry.managers.drain().map(|(_, slot)| slot).collect()
    };
    let mut first_error = None;
    for slot in slots {
        // A creation in flight is awaited, then closed: its caller sees a closed manager
        // and creates a new one, in the emptied registry.
        let in_flight = slot.get_or_try_init(|| async { Err(()) }).await;
        let Ok(manager) = in_flight else { continue };
        if let Err(e) = manager.close().await {
            tracing::warn!("closing a unified manager at shutdown: {e}");
            first_error.get_or_insert(e);
        }
    }
    #[cfg(feature = "redis")]
    if let Err(e) = crate::cache_registry::close_all().await {
        first_error.get_or_insert(e);
    }
    first_error.map_or(Ok(()), Err)
}
