//! Where a command's database URLs come from (`--database-url`, else the environment), and the warning when a password is typed on the command line.
//!
//! Arguments are visible to every user of the machine (`ps`, `/proc/*/cmdline`) and are
//! kept in shell history; environment variables are neither. So the environment is the
//! recommended way in, and a password given on the command line is warned about, though
//! still used.

use ucm::DatabaseUrl;

/// The warning printed to standard error for a command-line URL holding a password.
pub(crate) const PASSWORD_WARNING: &str = "warning: a password on the command line is visible \
    in the process list and shell history; put it in DATABASE_URL or a .pgpass-style file instead";

/// The URL given on the command line (`flag`), warned about when it holds a password;
/// else the first of the environment variables `env` that is set and not blank.
pub(crate) fn primary(flag: Option<&str>, env: &[&str]) -> Option<String> {
    if let Some(url) = flag.filter(|url| !url.trim().is_empty()) {
        warn_if_password(url);
        return Some(url.to_owned());
    }
    env.iter().find_map(|name| std::env::var(name).ok().filter(|url| !url.trim().is_empty()))
}

/// Like [`primary`], failing with what to set when no URL is found.
pub(crate) fn required(flag: Option<&str>, env: &[&str]) -> anyhow::Result<String> {
    primary(flag, env).ok_or_else(|| {
        crate::output::Exit::new(
            crate::output::BAD_INPUT,
            format!("no database URL: set {} or pass --database-url", env.join(" or ")),
        )
        .into()
    })
}

/// Replica URLs: those given on the command line (each warned about when it holds a
/// password), else the comma-separated list in the environment variable `env`.
pub(crate) fn replicas(flag: &[String], env: &str) -> Vec<String> {
    let given: Vec<String> = if flag.is_empty() {
        std::env::var(env)
            .map(|list| list.split(',').map(str::to_owned).collect())
            .unwrap_or_default()
    } else {
        flag.iter().inspect(|url| warn_if_password(url)).cloned().collect()
    };
    given.into_iter().map(|url| url.trim().to_owned()).filter(|url| !url.is_empty()).collect()
}

/// Prints [`PASSWORD_WARNING`] to standard error when `url` (given on the command line)
/// holds a password.
pub(crate) fn warn_if_password(url: &str) {
    if has_password(url) {
        eprintln!("{PASSWORD_WARNING}");
    }
}

/// Whether `url` carries a password or another credential: in its user information, or in
/// a query parameter named like one. A URL too malformed to parse is read loosely: any
/// `user:secret@` part counts, since the password is on the command line all the same.
fn has_password(url: &str) -> bool {
    match DatabaseUrl::parse(url) {
        Ok(parsed) => {
            parsed.password().is_some()
                || parsed.params().iter().any(|(key, _)| {
                    let key = key.to_ascii_lowercase();
                    ["password", "secret", "token"].iter().any(|word| key.contains(word))
                })
        }
        Err(_) => url
            .split_once("://")
            .and_then(|(_, rest)| rest.rsplit_once('@'))
            .is_some_and(|(userinfo, _)| userinfo.contains(':')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_wherever_a_url_holds_them() {
        for url in [
            "postgres://app:secret@db/app",
            "postgres://app:p@ss@db/app",
            "mysql://root:x@127.0.0.1:3306/test",
            "postgres://app@db/app?password=secret",
            "postgres://app@db/app?sslpassword=secret",
        ] {
            assert!(has_password(url), "{url}");
        }
        for url in [
            "postgres://app@db/app",
            "postgres://db/app?sslmode=disable",
            "sqlite://data/app.db",
            "sqlite::memory:",
            "not a url",
        ] {
            assert!(!has_password(url), "{url}");
        }
    }
}
