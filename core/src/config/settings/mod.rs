//! Configuration as data: a TOML file and the environment merged over the mode's preset, with where each setting came from.

mod apply;
mod layer;
mod sources;

pub(crate) use apply::{breaker, credentials, drain_deadline, permissions, pool, retry};
pub use sources::{ConfigSources, Origin};

#[cfg(test)]
mod tests;
