//! `apply_session_statements`: the session settings a server takes only as statements (MySQL's deadlines), run once per new connection, written once for every backend.

use super::BackendConnector;
use crate::connector::Phase;
use crate::error::{Error, Result};

/// Runs each entry of `statements` on a new `connection`, trying its alternatives in order
/// until one succeeds (MariaDB and MySQL name the same limit differently).
///
/// # Errors
/// The last alternative's error when none of an entry's succeeds, mapped and scrubbed as a
/// connect failure (the connection is not handed out).
pub async fn apply_session_statements<C: BackendConnector>(
    connector: &C,
    connection: &mut C::Connection,
    statements: &[Vec<String>],
) -> Result<()> {
    for alternatives in statements {
        let mut last_error = None;
        for sql in alternatives {
            match C::execute(connection, sql, &[]).await {
                Ok(_) => {
                    last_error = None;
                    break;
                }
                Err(e) => last_error = Some(e.into_error(connector.url(), Phase::Connect)),
            }
        }
        if let Some(error) = last_error {
            return Err(match error {
                Error::ConnectFailed { endpoint, reason, attempts, message, source } => {
                    Error::ConnectFailed {
                        endpoint,
                        reason,
                        attempts,
                        message: format!(
                            "the session setting `{}` was refused: {message}",
                            alternatives.join("` or `")
                        ),
                        source,
                    }
                }
                other => other,
            });
        }
    }
    Ok(())
}
