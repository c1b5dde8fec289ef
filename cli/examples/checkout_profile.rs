//! One contender of the no-I/O checkout benchmark alone, for instruction counts: `valgrind --tool=callgrind target/release/examples/checkout_profile ucm 100000` (or `deadpool`).

use std::convert::Infallible;

use deadpool::managed::{self, Metrics, RecycleResult};
use ucm::pool::testing::MemoryConnector;
use ucm::topology::Topology;
use ucm::{ConnectionMode, ManagerConfig, ManagerMode, PoolConfiguration};

/// A deadpool manager whose objects cost nothing: raw deadpool's own overhead.
struct Nothing;

impl managed::Manager for Nothing {
    type Type = ();
    type Error = Infallible;

    async fn create(&self) -> Result<(), Infallible> {
        Ok(())
    }

    async fn recycle(&self, _: &mut (), _: &Metrics) -> RecycleResult<Infallible> {
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let contender = args.next().unwrap_or_else(|| "ucm".to_owned());
    let iterations: u64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match contender.as_str() {
            "deadpool" => {
                let pool: managed::Pool<Nothing> =
                    managed::Pool::builder(Nothing).max_size(4).build()?;
                for _ in 0..iterations {
                    drop(pool.get().await);
                }
            }
            _ => {
                let pool = PoolConfiguration::builder(ManagerMode::AsyncModern)
                    .pool_size(4)
                    .max_overflow(0)
                    .build()?;
                let config = ManagerConfig::builder(ManagerMode::AsyncModern)
                    .primary("postgres://bench@memory/bench")
                    .pool(pool)
                    .build()?;
                let topology = Topology::connect(config, |_, _| Ok(MemoryConnector::new())).await?;
                for _ in 0..iterations {
                    drop(topology.acquire(ConnectionMode::ReadWrite).await);
                }
            }
        }
        Ok(())
    })
}
