//! How the commands report: as text or as JSON (`--format`), and with `pg_isready`'s exit codes (0 accepting, 1 rejecting or degraded, 2 no response, 3 bad input).

use std::fmt;

use ucm::{ConnectFailure, Error, ErrorKind};

/// How a command prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Lines for people.
    Text,
    /// One JSON document on standard output, for scripts.
    Json,
}

/// The server answered and accepts connections (and the command did what it was asked).
pub(crate) const ACCEPTING: u8 = 0;
/// The server answered but refused (credentials, a missing database, too many
/// connections), or the topology is degraded or unhealthy, or an audit gate failed.
pub(crate) const REJECTING: u8 = 1;
/// Nothing answered: the host does not resolve, refuses the connection, or is silent.
pub(crate) const NO_RESPONSE: u8 = 2;
/// No attempt was made: a missing or malformed URL, a bad option.
pub(crate) const BAD_INPUT: u8 = 3;

/// The exit codes as `--help` lists them.
pub(crate) const EXIT_CODES: &str = "Exit codes, as pg_isready's: 0 the server accepts \
    connections (or the command succeeded), 1 it answered but refused or the topology is \
    degraded (or an audit gate failed), 2 no response, 3 bad input (no attempt was made).";

/// A command's failure with the exit code it deserves; `main` prints the message.
#[derive(Debug)]
pub(crate) struct Exit {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Exit {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// The exit code for a command's error: its own [`Exit`], else what the ucm error in its
/// chain says (see [`code_for`]), else 1.
pub(crate) fn code_of(error: &anyhow::Error) -> u8 {
    if let Some(exit) = error.downcast_ref::<Exit>() {
        return exit.code;
    }
    error.chain().find_map(|cause| cause.downcast_ref::<Error>()).map_or(REJECTING, code_for)
}

/// The exit code for a ucm error: no response for a host that does not resolve, refuses or
/// stays silent; bad input for a configuration error; rejecting for everything else the
/// server said.
pub(crate) fn code_for(error: &Error) -> u8 {
    match error {
        Error::ConnectFailed {
            reason: ConnectFailure::Dns | ConnectFailure::Refused | ConnectFailure::Timeout,
            ..
        } => NO_RESPONSE,
        _ if error.kind() == ErrorKind::Configuration => BAD_INPUT,
        _ if error.kind() == ErrorKind::Timeout => NO_RESPONSE,
        _ => REJECTING,
    }
}

/// Prints `value` as pretty JSON on standard output.
pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
