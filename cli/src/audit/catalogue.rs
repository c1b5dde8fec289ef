//! What `ucm audit` looks for: each way a Rust codebase opens a database connection or pool without ucm, and each way it goes through ucm, as crate, type and function.

/// Whether a site goes around ucm or through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Route {
    /// A connection or pool made with a driver or pool crate directly.
    Direct,
    /// A manager, pool or session obtained from ucm.
    ThroughUcm,
}

/// One kind of site: a call to `function` on `type_name` (or a free function when `None`)
/// whose resolved path starts with `krate`.
pub(crate) struct Pattern {
    pub(crate) krate: &'static str,
    pub(crate) type_names: &'static [&'static str],
    pub(crate) functions: &'static [&'static str],
    /// What the site makes, as the report names it.
    pub(crate) kind: &'static str,
    pub(crate) route: Route,
}

/// A method called on a value whose type the audit cannot see, counted when the file
/// names `krate` (in a `use` or a path).
pub(crate) struct MethodPattern {
    pub(crate) krate: &'static str,
    pub(crate) method: &'static str,
    pub(crate) kind: &'static str,
}

const SQLX_POOLS: &[&str] = &["PgPool", "MySqlPool", "SqlitePool", "AnyPool", "Pool"];
const SQLX_CONNECTIONS: &[&str] =
    &["PgConnection", "MySqlConnection", "SqliteConnection", "AnyConnection"];
const SQLX_CONNECT: &[&str] = &["connect", "connect_with", "connect_lazy", "connect_lazy_with"];
const POOL_BUILDERS: &[&str] = &["builder", "new"];

/// Every call the audit recognises. A pool's options or builder is the site, not the
/// `connect`/`build` at the end of its chain, so that one pool counts once.
pub(crate) const PATTERNS: &[Pattern] = &[
    // sqlx
    Pattern {
        krate: "sqlx",
        type_names: SQLX_POOLS,
        functions: SQLX_CONNECT,
        kind: "sqlx pool",
        route: Route::Direct,
    },
    Pattern {
        krate: "sqlx",
        type_names: &[
            "PgPoolOptions",
            "MySqlPoolOptions",
            "SqlitePoolOptions",
            "AnyPoolOptions",
            "PoolOptions",
        ],
        functions: &["new"],
        kind: "sqlx pool",
        route: Route::Direct,
    },
    Pattern {
        krate: "sqlx",
        type_names: SQLX_CONNECTIONS,
        functions: &["connect", "connect_with"],
        kind: "sqlx connection",
        route: Route::Direct,
    },
    // diesel and its pools
    Pattern {
        krate: "diesel",
        type_names: &["PgConnection", "MysqlConnection", "SqliteConnection"],
        functions: &["establish"],
        kind: "diesel connection",
        route: Route::Direct,
    },
    Pattern {
        krate: "diesel",
        type_names: &["Pool"],
        functions: POOL_BUILDERS,
        kind: "diesel r2d2 pool",
        route: Route::Direct,
    },
    Pattern {
        krate: "r2d2",
        type_names: &["Pool"],
        functions: POOL_BUILDERS,
        kind: "r2d2 pool",
        route: Route::Direct,
    },
    Pattern {
        krate: "diesel_async",
        type_names: &["AsyncPgConnection", "AsyncMysqlConnection", "SyncConnectionWrapper"],
        functions: &["establish"],
        kind: "diesel-async connection",
        route: Route::Direct,
    },
    Pattern {
        krate: "diesel_async",
        type_names: &["Pool"],
        functions: POOL_BUILDERS,
        kind: "diesel-async pool",
        route: Route::Direct,
    },
    Pattern {
        krate: "deadpool_diesel",
        type_names: &["Pool"],
        functions: POOL_BUILDERS,
        kind: "deadpool-diesel pool",
        route: Route::Direct,
    },
    Pattern {
        krate: "bb8",
        type_names: &["Pool"],
        functions: POOL_BUILDERS,
        kind: "bb8 pool",
        route: Route::Direct,
    },
    // deadpool-postgres, tokio-postgres, postgres
    Pattern {
        krate: "deadpool_postgres",
        type_names: &["Pool"],
        functions: POOL_BUILDERS,
        kind: "deadpool-postgres pool",
        route: Route::Direct,
    },
    Pattern {
        krate: "tokio_postgres",
        type_names: &[],
        functions: &["connect"],
        kind: "tokio-postgres connection",
        route: Route::Direct,
    },
    Pattern {
        krate: "postgres",
        type_names: &["Client"],
        functions: &["connect", "configure"],
        kind: "postgres connection",
        route: Route::Direct,
    },
    // mysql_async, rusqlite
    Pattern {
        krate: "mysql_async",
        type_names: &["Pool"],
        functions: &["new", "from_url"],
        kind: "mysql_async pool",
        route: Route::Direct,
    },
    Pattern {
        krate: "mysql_async",
        type_names: &["Conn"],
        functions: &["new", "from_url"],
        kind: "mysql_async connection",
        route: Route::Direct,
    },
    Pattern {
        krate: "rusqlite",
        type_names: &["Connection"],
        functions: &["open", "open_in_memory", "open_with_flags", "open_in_memory_with_flags"],
        kind: "rusqlite connection",
        route: Route::Direct,
    },
    // Through ucm
    Pattern {
        krate: "ucm",
        type_names: &[],
        functions: &["get_unified_manager", "unified_manager_for", "install_manager"],
        kind: "ucm manager",
        route: Route::ThroughUcm,
    },
    Pattern {
        krate: "ucm",
        type_names: &["UnifiedManager", "SqlxManager", "DieselManager", "Manager"],
        functions: &["connect"],
        kind: "ucm manager",
        route: Route::ThroughUcm,
    },
    Pattern {
        krate: "ucm",
        type_names: &["SqlxPool", "DieselPool", "DieselBlockingPool"],
        functions: &["new", "connect", "from_env"],
        kind: "ucm driver handle",
        route: Route::ThroughUcm,
    },
    Pattern {
        krate: "ucm_sqlx",
        type_names: &["SqlxManager"],
        functions: &["connect"],
        kind: "ucm manager",
        route: Route::ThroughUcm,
    },
    Pattern {
        krate: "ucm_sqlx",
        type_names: &["SqlxPool"],
        functions: &["new", "connect", "from_env"],
        kind: "ucm driver handle",
        route: Route::ThroughUcm,
    },
    Pattern {
        krate: "ucm_diesel",
        type_names: &["DieselManager"],
        functions: &["connect"],
        kind: "ucm manager",
        route: Route::ThroughUcm,
    },
    Pattern {
        krate: "ucm_diesel",
        type_names: &["DieselPool", "DieselBlockingPool"],
        functions: &["new", "connect", "from_env"],
        kind: "ucm driver handle",
        route: Route::ThroughUcm,
    },
    Pattern {
        krate: "ucm_compat",
        type_names: &[],
        functions: &["get_db_manager", "get_session_context"],
        kind: "ucm legacy adapter",
        route: Route::ThroughUcm,
    },
    Pattern {
        krate: "ucm_compat",
        type_names: &["DatabaseManager", "DatabaseSessionManager"],
        functions: &["new"],
        kind: "ucm legacy adapter",
        route: Route::ThroughUcm,
    },
];

/// Methods whose receiver's type the audit cannot see: deadpool-postgres's
/// `Config::create_pool`.
pub(crate) const METHOD_PATTERNS: &[MethodPattern] = &[MethodPattern {
    krate: "deadpool_postgres",
    method: "create_pool",
    kind: "deadpool-postgres pool",
}];

/// The pattern a call to the resolved `path` matches, if any.
pub(crate) fn find(path: &[String]) -> Option<&'static Pattern> {
    let (function, rest) = path.split_last()?;
    let krate = path.first()?;
    PATTERNS.iter().find(|p| {
        p.krate == krate
            && p.functions.contains(&function.as_str())
            && match rest.last() {
                _ if p.type_names.is_empty() => rest.len() == 1,
                Some(type_name) => rest.len() >= 2 && p.type_names.contains(&type_name.as_str()),
                None => false,
            }
    })
}
