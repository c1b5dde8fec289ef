//! Tests for database URL parsing, normalisation and redaction: tables for every form, and proptest for the open-ended rest.

use std::net::{Ipv4Addr, Ipv6Addr};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;

use super::*;
use crate::error::ErrorKind;

/// One accepted URL and what it must parse to.
struct Accepted {
    url: &'static str,
    kind: DatabaseKind,
    user: Option<&'static str>,
    password: Option<&'static str>,
    host: Option<&'static str>,
    port: Option<u16>,
    database: Option<&'static str>,
    params: &'static [(&'static str, &'static str)],
    ssl: SslMode,
    shown: &'static str,
}

#[allow(clippy::too_many_arguments)]
const fn ok(
    url: &'static str,
    kind: DatabaseKind,
    user: Option<&'static str>,
    password: Option<&'static str>,
    host: Option<&'static str>,
    port: Option<u16>,
    database: Option<&'static str>,
    params: &'static [(&'static str, &'static str)],
    ssl: SslMode,
    shown: &'static str,
) -> Accepted {
    Accepted { url, kind, user, password, host, port, database, params, ssl, shown }
}

use DatabaseKind::{MySql, Postgres, Sqlite};
use SslMode::{Disable, Prefer, Require, VerifyFull};

#[rustfmt::skip]
const ACCEPTED: &[Accepted] = &[
    ok("postgres://app:secret@db.example.com:5433/shop", Postgres, Some("app"), Some("secret"), Some("db.example.com"), Some(5433), Some("shop"), &[], Prefer, "postgres://app:***@db.example.com:5433/shop"),
    ok("postgresql://app@localhost/shop", Postgres, Some("app"), None, Some("localhost"), Some(5432), Some("shop"), &[], Disable, "postgres://app@localhost:5432/shop"),
    ok("postgresql+asyncpg://app:pw@10.0.0.5/shop?sslmode=require", Postgres, Some("app"), Some("pw"), Some("10.0.0.5"), Some(5432), Some("shop"), &[("sslmode", "require")], Require, "postgres://app:***@10.0.0.5:5432/shop?sslmode=require"),
    ok("postgresql+psycopg://u@127.0.0.2:6000/db", Postgres, Some("u"), None, Some("127.0.0.2"), Some(6000), Some("db"), &[], Disable, "postgres://u@127.0.0.2:6000/db"),
    ok("postgresql+psycopg2://u@db/app", Postgres, Some("u"), None, Some("db"), Some(5432), Some("app"), &[], Prefer, "postgres://u@db:5432/app"),
    ok("POSTGRES://u@db/app", Postgres, Some("u"), None, Some("db"), Some(5432), Some("app"), &[], Prefer, "postgres://u@db:5432/app"),
    ok("  postgres://u@db/app\n", Postgres, Some("u"), None, Some("db"), Some(5432), Some("app"), &[], Prefer, "postgres://u@db:5432/app"),
    ok("postgres://u:pw@[::1]:5432/db", Postgres, Some("u"), Some("pw"), Some("::1"), Some(5432), Some("db"), &[], Disable, "postgres://u:***@[::1]:5432/db"),
    ok("postgres://[2001:db8::7]/db", Postgres, None, None, Some("2001:db8::7"), Some(5432), Some("db"), &[], Prefer, "postgres://[2001:db8::7]:5432/db"),
    ok("postgres://[fe80::1%25eth0]:6543", Postgres, None, None, Some("fe80::1%eth0"), Some(6543), None, &[], Prefer, "postgres://[fe80::1%25eth0]:6543"),
    ok("postgres:///app?host=/var/run/postgresql", Postgres, None, None, Some("/var/run/postgresql"), Some(5432), Some("app"), &[], Disable, "postgres://%2Fvar%2Frun%2Fpostgresql:5432/app"),
    ok("postgres://u@%2Ftmp%2Fpg:5433/app?application_name=x", Postgres, Some("u"), None, Some("/tmp/pg"), Some(5433), Some("app"), &[("application_name", "x")], Disable, "postgres://u@%2Ftmp%2Fpg:5433/app?application_name=x"),
    ok("postgres://u@db", Postgres, Some("u"), None, Some("db"), Some(5432), None, &[], Prefer, "postgres://u@db:5432"),
    ok("postgres://db:/app", Postgres, None, None, Some("db"), Some(5432), Some("app"), &[], Prefer, "postgres://db:5432/app"),
    ok("postgres://db?sslmode=VERIFY-FULL", Postgres, None, None, Some("db"), Some(5432), None, &[("sslmode", "VERIFY-FULL")], VerifyFull, "postgres://db:5432?sslmode=VERIFY-FULL"),
    ok("postgres://localhost/db?sslmode=prefer&", Postgres, None, None, Some("localhost"), Some(5432), Some("db"), &[("sslmode", "prefer")], Prefer, "postgres://localhost:5432/db?sslmode=prefer"),
    ok("mysql://root:pw@db.internal:3307/shop?ssl-mode=VERIFY_IDENTITY", MySql, Some("root"), Some("pw"), Some("db.internal"), Some(3307), Some("shop"), &[("ssl-mode", "VERIFY_IDENTITY")], VerifyFull, "mysql://root:***@db.internal:3307/shop?ssl-mode=VERIFY_IDENTITY"),
    ok("mariadb://u@localhost/shop", MySql, Some("u"), None, Some("localhost"), Some(3306), Some("shop"), &[], Disable, "mysql://u@localhost:3306/shop"),
    ok("mysql+pymysql://u:s3cr3t@db/app?charset=utf8mb4&sslmode=REQUIRED", MySql, Some("u"), Some("s3cr3t"), Some("db"), Some(3306), Some("app"), &[("charset", "utf8mb4"), ("sslmode", "REQUIRED")], Require, "mysql://u:***@db:3306/app?charset=utf8mb4&sslmode=REQUIRED"),
    ok("mysql+aiomysql://u@db/app?ssl_mode=disabled", MySql, Some("u"), None, Some("db"), Some(3306), Some("app"), &[("ssl_mode", "disabled")], Disable, "mysql://u@db:3306/app?ssl_mode=disabled"),
    ok("mysql+asyncmy://u@db/app?socket=/tmp/mysql.sock", MySql, Some("u"), None, Some("db"), Some(3306), Some("app"), &[("socket", "/tmp/mysql.sock")], Disable, "mysql://u@db:3306/app?socket=/tmp/mysql.sock"),
    ok("postgres://u:p%40ss%3Aw%2Fo%23r%3Fd%25%20x@db/app", Postgres, Some("u"), Some("p@ss:w/o#r?d% x"), Some("db"), Some(5432), Some("app"), &[], Prefer, "postgres://u:***@db:5432/app"),
    ok("postgres://u:p%C3%A4ss%E2%82%AC@db/app", Postgres, Some("u"), Some("päss€"), Some("db"), Some(5432), Some("app"), &[], Prefer, "postgres://u:***@db:5432/app"),
    ok("postgres://ü:päss@db/dä", Postgres, Some("ü"), Some("päss"), Some("db"), Some(5432), Some("dä"), &[], Prefer, "postgres://%C3%BC:***@db:5432/d%C3%A4"),
    ok("postgres://u:a:b@db/app", Postgres, Some("u"), Some("a:b"), Some("db"), Some(5432), Some("app"), &[], Prefer, "postgres://u:***@db:5432/app"),
    ok("postgres://:pw@db/app", Postgres, None, Some("pw"), Some("db"), Some(5432), Some("app"), &[], Prefer, "postgres://:***@db:5432/app"),
    ok("postgres://u:@db/app", Postgres, Some("u"), None, Some("db"), Some(5432), Some("app"), &[], Prefer, "postgres://u@db:5432/app"),
    ok("postgres://db/my%2Fdb?options=-c%20search_path%3Dx&application_name=a+b", Postgres, None, None, Some("db"), Some(5432), Some("my/db"), &[("options", "-c search_path=x"), ("application_name", "a+b")], Prefer, "postgres://db:5432/my%2Fdb?options=-c%20search_path%3Dx&application_name=a%2Bb"),
    ok("postgres://db/app?sslpassword=topsecret&password=hunter2", Postgres, None, None, Some("db"), Some(5432), Some("app"), &[("sslpassword", "topsecret"), ("password", "hunter2")], Prefer, "postgres://db:5432/app?sslpassword=***&password=***"),
    ok("sqlite://data/app.db", Sqlite, None, None, None, None, None, &[], Disable, "sqlite://data/app.db"),
    ok("sqlite:///tmp/app.db", Sqlite, None, None, None, None, None, &[], Disable, "sqlite:///tmp/app.db"),
    ok("sqlite:data/app.db", Sqlite, None, None, None, None, None, &[], Disable, "sqlite://data/app.db"),
    ok("sqlite::memory:", Sqlite, None, None, None, None, None, &[], Disable, "sqlite::memory:"),
    ok("sqlite://:memory:", Sqlite, None, None, None, None, None, &[], Disable, "sqlite::memory:"),
    ok("SQLITE::memory:?cache=shared", Sqlite, None, None, None, None, None, &[("cache", "shared")], Disable, "sqlite::memory:?cache=shared"),
    ok("sqlite://data/app.db?mode=rwc", Sqlite, None, None, None, None, None, &[("mode", "rwc")], Disable, "sqlite://data/app.db?mode=rwc"),
    ok("sqlite://my%20dir/a%23b.db", Sqlite, None, None, None, None, None, &[], Disable, "sqlite://my%20dir/a%23b.db"),
];

#[test]
fn every_accepted_form_parses_to_its_components() {
    for case in ACCEPTED {
        let url = DatabaseUrl::parse(case.url).unwrap_or_else(|e| panic!("{}: {e}", case.url));
        let at = case.url;
        assert_eq!(url.kind(), case.kind, "{at}");
        assert_eq!(url.user(), case.user, "{at}");
        assert_eq!(url.password().map(Secret::expose), case.password, "{at}");
        assert_eq!(url.host(), case.host, "{at}");
        assert_eq!(url.port(), case.port, "{at}");
        assert_eq!(url.database(), case.database, "{at}");
        let params: Vec<(&str, &str)> =
            url.params().iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(params, case.params, "{at}");
        assert_eq!(url.ssl_mode(), case.ssl, "{at}");
        assert_eq!(url.to_string(), case.shown, "{at}");
        assert_eq!(format!("{url:?}"), format!("DatabaseUrl({:?})", case.shown), "{at}");
        // The canonical form hands the driver the same URL back.
        let exposed = url.expose_url();
        assert_eq!(DatabaseUrl::parse(&exposed).unwrap(), url, "{at} -> {exposed}");
        if let Some(password) = case.password {
            assert!(!url.to_string().contains(password), "{at}");
            assert!(!url.label().contains(password), "{at}");
        }
    }
}

#[test]
fn kinds_spellings_labels_and_sqlite_targets() {
    let url = DatabaseUrl::parse("mariadb://u@db/app").unwrap();
    assert!(url.is_mariadb());
    assert_eq!(url, DatabaseUrl::parse("mysql://u@db:3306/app").unwrap());
    assert!(url.expose_url().starts_with("mysql://"));
    assert!(!DatabaseUrl::parse("mysql://u@db/app").unwrap().is_mariadb());

    let labels = [
        ("postgres://u:pw@db:5433/shop", "db:5433/shop"),
        ("postgres://u:pw@[::1]/shop", "[::1]:5432/shop"),
        ("mysql://u@db", "db:3306"),
        ("postgres:///app?host=/run/pg", "/run/pg:5432/app"),
        ("sqlite://data/app.db", "data/app.db"),
        ("sqlite::memory:", ":memory:"),
    ];
    for (text, label) in labels {
        assert_eq!(DatabaseUrl::parse(text).unwrap().label(), label, "{text}");
    }

    let file = DatabaseUrl::parse("sqlite:///var/lib/app.db").unwrap();
    assert_eq!((file.sqlite_path(), file.is_memory()), (Some("/var/lib/app.db"), false));
    let memory = DatabaseUrl::parse("sqlite://:memory:").unwrap();
    assert_eq!((memory.sqlite_path(), memory.is_memory()), (None, true));
    assert!(file.is_local() && memory.is_local());

    for kind in DatabaseKind::ALL {
        assert_eq!(kind.to_string(), kind.as_str());
    }
    assert_eq!(Postgres.default_port(), Some(5432));
    assert_eq!(MySql.default_port(), Some(3306));
    assert_eq!(Sqlite.default_port(), None);
    assert_eq!(Postgres.as_str(), "postgresql");
}

#[test]
fn same_endpoint_ignores_credentials_and_parameters() {
    let a = DatabaseUrl::parse("postgres://a:x@DB.example.com/app?sslmode=require").unwrap();
    let b = DatabaseUrl::parse("postgresql://b:y@db.example.com:5432/app").unwrap();
    let c = DatabaseUrl::parse("postgres://a:x@db.example.com:5433/app").unwrap();
    let d = DatabaseUrl::parse("postgres://a:x@db.example.com/other").unwrap();
    assert!(a.same_endpoint(&b));
    assert!(!a.same_endpoint(&c));
    assert!(!a.same_endpoint(&d));
    assert_ne!(a, b);
}

#[test]
fn ssl_modes_parse_in_both_vocabularies() {
    let table = [
        ("disable", SslMode::Disable),
        ("DISABLED", SslMode::Disable),
        ("allow", SslMode::Allow),
        ("prefer", SslMode::Prefer),
        ("Preferred", SslMode::Prefer),
        ("require", SslMode::Require),
        ("REQUIRED", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("VERIFY_CA", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
        ("VERIFY_IDENTITY", SslMode::VerifyFull),
    ];
    for (text, mode) in table {
        assert_eq!(text.parse::<SslMode>().unwrap(), mode, "{text}");
    }
    for mode in SslMode::ALL {
        assert_eq!(mode.as_str().parse::<SslMode>().unwrap(), mode);
        assert_eq!(
            mode.as_mysql_str().parse::<SslMode>().unwrap().requires_tls(),
            mode.requires_tls()
        );
    }
    let err = "sometimes".parse::<SslMode>().unwrap_err().to_string();
    assert!(err.contains("verify-full") && !err.contains("sometimes"), "{err}");
}

#[test]
fn secrets_never_show_themselves() {
    let secret = Secret::new("hunter2");
    assert_eq!(format!("{secret} {secret:?}"), "*** ***");
    assert_eq!(secret.expose(), "hunter2");
    assert_eq!(secret, Secret::from("hunter2".to_owned()));
}

#[test]
fn malformed_urls_name_the_problem_and_the_fix() {
    let table: &[(&str, &[&str])] = &[
        ("", &["is empty", "postgres://user@localhost:5432/app"]),
        ("   ", &["is empty"]),
        ("localhost:5432/app", &["scheme", "postgres://"]),
        ("redis://db/0", &["unknown scheme \"redis\"", "postgresql+asyncpg://", "sqlite://"]),
        ("u:p@h://x", &["not a URL scheme", "mariadb://"]),
        ("postgres://u:p@ss@db/app", &["unencoded '@'", "%40"]),
        ("postgres://u:pa/ss@db/app", &["port is not a number", "/ as %2F"]),
        ("postgres://u:pa?ss@db/app", &["port is not a number", "? as %3F"]),
        ("postgres://u:pa#ss@db/app", &["'#'", "%23"]),
        ("postgres://u:12/ss@db/app", &["'@' after the host", "/ as %2F"]),
        ("postgres://u:pass word@db/app", &["whitespace", "%20"]),
        ("postgres://u:p%zz@db/app", &["the password contains a '%'", "%25"]),
        ("postgres://u:p%@db/app", &["the password contains a '%'", "%25"]),
        ("postgres://u:p%ff@db/app", &["password is not valid UTF-8"]),
        ("postgres://db:99999/app", &["out of range", "65535"]),
        ("postgres://db:0/app", &["out of range"]),
        ("postgres://db:abc/app", &["port is not a number"]),
        ("postgres:///app", &["host is missing", "?host=/var/run/postgresql"]),
        ("postgres://u@/app", &["host is missing"]),
        ("mysql:///app", &["host is missing", "mysql://user@localhost:3306/app"]),
        ("postgres://h1,h2/app", &["several hosts", "DATABASE_REPLICA_URLS"]),
        ("postgres://::1/app", &["brackets", "[::1]:5432"]),
        ("postgres://[::1/app", &["closing ']'"]),
        ("postgres://[zz]/app", &["not a valid IPv6 address"]),
        ("postgres://[::1]x/app", &["after the ']'"]),
        ("postgres://ho!st/app", &["not allowed in a host name"]),
        ("mysql://u@%2Ftmp%2Fs/app", &["not a MySQL host", "socket="]),
        ("postgres://db/a/b", &["database name contains an unencoded '/'", "%2F"]),
        ("postgres://db/app?sslmode=sometimes", &["sslmode", "verify-full"]),
        ("postgres://db/app?flag", &["query parameter 1 has no '='"]),
        ("postgres://db/app?a=1&b!=2", &["query parameter 2 has an invalid name"]),
        ("postgres://db/app?a=%zz", &["query parameter `a`", "%25"]),
        ("sqlite://", &["SQLite database path is missing", "sqlite::memory:"]),
        ("sqlite:", &["SQLite database path is missing"]),
        ("sqlite://a%zz.db", &["SQLite path contains a '%'"]),
        // A NUL would end a startup-message string early and start another setting.
        ("postgres://u%00options@db/app", &["the user name contains a NUL byte (%00)"]),
        ("postgres://u:p%00w@db/app", &["the password contains a NUL byte"]),
        ("postgres://db/ap%00options", &["the database name contains a NUL byte"]),
        (
            "postgres://db/app?application_name=x%00options%00-c%20log_statement%3Dall",
            &["query parameter `application_name` contains a NUL byte"],
        ),
    ];
    for (text, needles) in table {
        let err = DatabaseUrl::parse(text).expect_err(text);
        assert_eq!(err.kind(), ErrorKind::Configuration, "{text}");
        let message = err.to_string();
        assert!(message.starts_with("invalid configuration: DATABASE_URL: "), "{message}");
        for needle in *needles {
            assert!(message.contains(needle), "{text:?}: {needle:?} missing from {message}");
        }
    }
}

#[test]
fn errors_name_the_callers_field() {
    let err = DatabaseUrl::parse_named("DATABASE_REPLICA_URLS[2]", "postgres://db:x").unwrap_err();
    assert!(err.to_string().contains("DATABASE_REPLICA_URLS[2]: the port"), "{err}");
}

#[test]
fn scrub_removes_the_password_and_sensitive_parameters_in_every_form() {
    let url =
        DatabaseUrl::parse("postgres://u:p%40ss%20w%2Fd@db/app?sslpassword=k3y%2Fpass").unwrap();
    let text = "auth failed for p@ss w/d (p%40ss%20w%2Fd, p%40ss+w%2fd); key k3y/pass k3y%2Fpass";
    let scrubbed = url.scrub(text);
    assert_eq!(scrubbed, "auth failed for *** (***, ***); key *** ***");
    let plain = DatabaseUrl::parse("postgres://u@db/app").unwrap();
    assert_eq!(plain.scrub(text), text);
}

/// A host as written in a URL, and as `host()` must report it.
fn host_strategy() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5}){0,2}".prop_map(|h| (h.clone(), h)),
        any::<Ipv4Addr>().prop_map(|ip| (ip.to_string(), ip.to_string())),
        any::<Ipv6Addr>().prop_map(|ip| (format!("[{ip}]"), ip.to_string())),
    ]
}

/// Any printable text, reserved characters and non-ASCII included.
fn component() -> impl Strategy<Value = String> {
    "[ -~äé€中😀]{1,16}"
}

fn encode_all(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encoded_components_round_trip(
        scheme in prop::sample::select(vec!["postgres", "postgresql+asyncpg", "mysql", "mariadb"]),
        user in prop::option::of(component()),
        password in prop::option::of(component()),
        (host_text, host) in host_strategy(),
        port in prop::option::of(1u16..=65535),
        database in prop::option::of(component()),
    ) {
        let mut text = format!("{scheme}://");
        if user.is_some() || password.is_some() {
            text.push_str(&encode_all(user.as_deref().unwrap_or_default()));
            if let Some(p) = &password {
                text.push(':');
                text.push_str(&encode_all(p));
            }
            text.push('@');
        }
        text.push_str(&host_text);
        if let Some(port) = port {
            text.push_str(&format!(":{port}"));
        }
        if let Some(db) = &database {
            text.push('/');
            text.push_str(&encode_all(db));
        }
        let url = DatabaseUrl::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let kind = if scheme.starts_with("postgres") { Postgres } else { MySql };
        prop_assert_eq!(url.kind(), kind);
        prop_assert_eq!(url.user(), user.as_deref());
        prop_assert_eq!(url.password().map(Secret::expose), password.as_deref());
        prop_assert_eq!(url.host(), Some(host.as_str()));
        prop_assert_eq!(url.port(), port.or(kind.default_port()));
        prop_assert_eq!(url.database(), database.as_deref());
        prop_assert_eq!(DatabaseUrl::parse(&url.expose_url()).unwrap(), url);
    }

    #[test]
    fn the_password_never_leaks(
        scheme in prop::sample::select(vec!["postgres", "mysql"]),
        head in "[a-zA-Z0-9]{3,8}",
        reserved in prop::sample::select(vec!['@', '/', '#', '?', ':', '%', ' ', ',', '&', '=', '[', ']']),
        tail in "[a-zA-Z0-9]{0,8}",
        with_user in any::<bool>(),
        host in prop::sample::select(vec!["db.example.com", "[::1]", "10.1.2.3"]),
        suffix in prop::sample::select(vec!["", ":5432", "/shop", ":6000/shop?sslmode=require"]),
    ) {
        // The marker cannot occur in fixed error text, so a hit is a real leak.
        let prefix = format!("Qz9{head}");
        let password = format!("{prefix}{reserved}{tail}");
        let user = if with_user { "app" } else { "" };
        let leaks = |text: &str| text.contains(&password) || text.contains(&prefix);

        let encoded = format!("{scheme}://{user}:{}@{host}{suffix}", encode_all(&password));
        let url = DatabaseUrl::parse(&encoded).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(url.password().map(Secret::expose), Some(password.as_str()));
        let shown = format!("{url} {url:?} {}", url.label());
        prop_assert!(!leaks(&shown), "{}", shown);
        let driver_text = format!("password {password} rejected in {}", url.expose_url());
        prop_assert!(!leaks(&url.scrub(&driver_text)), "{}", url.scrub(&driver_text));

        let raw = format!("{scheme}://{user}:{password}@{host}{suffix}");
        match DatabaseUrl::parse(&raw) {
            Err(err) => prop_assert!(!leaks(&err.to_string()), "{}", err),
            Ok(url) => {
                let shown = format!("{url} {url:?} {}", url.label());
                prop_assert!(!leaks(&shown), "{}", shown);
            }
        }
    }
}

#[cfg(feature = "serde")]
#[test]
fn serialises_redacted_and_deserialises_through_parse() {
    let url = DatabaseUrl::parse("postgres://u:hunter2@db/app?password=hunter3").unwrap();
    let json = serde_json::to_string(&url).unwrap();
    assert_eq!(json, r#""postgres://u:***@db:5432/app?password=***""#);
    let back: DatabaseUrl = serde_json::from_str(r#""postgresql://u:hunter2@db/app""#).unwrap();
    assert_eq!(back.password().map(Secret::expose), Some("hunter2"));
    let err = serde_json::from_str::<DatabaseUrl>(r#""postgres://u:hun/ter2@db/app""#).unwrap_err();
    assert!(!err.to_string().contains("hun"), "{err}");
    let kinds = serde_json::to_string(&(DatabaseKind::MySql, SslMode::VerifyFull)).unwrap();
    assert_eq!(kinds, r#"["mysql","verify-full"]"#);
}
