//! The conformance suite on the diesel backend, against PostgreSQL, MariaDB/MySQL and SQLite, the HA scenarios against the primary/replica pair, the chaos scenarios against PostgreSQL through a fault proxy, and the secrets and injection tests.

use ucm_diesel::DieselManager;
use ucm_kernel::{DatabaseKind, ManagerConfig};
use ucm_tests::{Backend, chaos_suite, conformance_suite, ha_suite, secrets_suite, tls_suite};

struct Diesel;

impl Backend for Diesel {
    type Manager = DieselManager;
    type Core = ucm_diesel::Diesel;
    const NAME: &'static str = "diesel";

    async fn connect(config: ManagerConfig) -> ucm_kernel::Result<DieselManager> {
        DieselManager::connect(config).await
    }

    fn session(manager: &DieselManager) -> ucm_kernel::RoutingSession<'_, ucm_diesel::Diesel> {
        manager.session()
    }
}

conformance_suite!(pgbouncer, Diesel, DatabaseKind::Postgres, ucm_tests::Target::pgbouncer());
conformance_suite!(postgres, Diesel, DatabaseKind::Postgres);
conformance_suite!(mysql, Diesel, DatabaseKind::MySql);
conformance_suite!(sqlite, Diesel, DatabaseKind::Sqlite);
ha_suite!(ha, Diesel);
chaos_suite!(chaos, Diesel);
secrets_suite!(secrets, Diesel);
tls_suite!(tls_postgres, Diesel, DatabaseKind::Postgres);
tls_suite!(tls_mysql, Diesel, DatabaseKind::MySql);
